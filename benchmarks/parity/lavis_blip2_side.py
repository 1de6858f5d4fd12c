"""The LAVIS half of the BLIP-2 parity check: runs in LAVIS 1.0.2's own venv (transformers 4.26), never
imports vcap. benchmarks/parity/blip2_lavis.py starts it; see there.

LAVIS's own Blip2OPT / Blip2T5 are built offline with their hub loaders replaced by tiny local ones
(the BERT tokenizer from a vocabulary directory, a tiny BertConfig and BertLMHeadModel for the Q-Former,
a tiny EVA VisionTransformer for create_eva_vit_g, tiny OPT / T5 configs), everything else is LAVIS's
code as installed. For each case it writes the model's state dict as a LAVIS checkpoint
(``{"model": ...}``), and LAVIS's loss, greedy token ids and captions for the captions after LAVIS's
own caption processor.
"""
from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

SIZES = json.loads(Path(__file__).with_name("blip2_sizes.json").read_text())


def patch_loaders(bert_dir: str):
    import lavis.models.blip2_models.blip2 as blip2
    import lavis.models.blip2_models.blip2_opt as blip2_opt
    import lavis.models.blip2_models.blip2_t5 as blip2_t5
    from lavis.models.blip2_models.modeling_opt import OPTConfig, OPTForCausalLM
    from lavis.models.blip2_models.modeling_t5 import T5Config, T5ForConditionalGeneration
    from lavis.models.blip2_models.Qformer import BertConfig, BertLMHeadModel
    from lavis.models.eva_vit import VisionTransformer
    from transformers import BertTokenizer

    v, q = SIZES["vit"], SIZES["qformer"]

    class Shim:
        def __init__(self, fn):
            self.from_pretrained = fn

    blip2.BertTokenizer = Shim(lambda name: BertTokenizer.from_pretrained(bert_dir))
    blip2.BertConfig = Shim(lambda name: BertConfig(
        vocab_size=30522, hidden_size=q["hidden_size"], num_hidden_layers=q["num_hidden_layers"],
        num_attention_heads=q["num_attention_heads"], intermediate_size=q["intermediate_size"]))
    blip2.BertLMHeadModel = Shim(lambda name, config: BertLMHeadModel(config))
    blip2.create_eva_vit_g = lambda img_size, drop_path_rate, use_grad_checkpoint, precision: VisionTransformer(
        img_size=v["image_size"], patch_size=v["patch_size"], use_mean_pooling=False, embed_dim=v["hidden_size"],
        depth=v["num_hidden_layers"], num_heads=v["num_attention_heads"],
        mlp_ratio=v["intermediate_size"] / v["hidden_size"], qkv_bias=True, drop_path_rate=drop_path_rate,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), use_checkpoint=use_grad_checkpoint)
    blip2_opt.OPTForCausalLM = Shim(lambda name, torch_dtype=None: OPTForCausalLM(OPTConfig(**SIZES["opt"])))
    blip2_t5.T5Config = Shim(lambda name: T5Config(**SIZES["t5"]))
    blip2_t5.T5ForConditionalGeneration = Shim(lambda name, config: T5ForConditionalGeneration(config))


def run_case(lm: str, prompt: str, tok_dir: str, inputs: dict, out: Path, tag: str) -> dict:
    from lavis.models.blip2_models.blip2_opt import Blip2OPT
    from lavis.models.blip2_models.blip2_t5 import Blip2T5
    from lavis.processors.blip_processors import BlipCaptionProcessor

    torch.manual_seed(0)
    common = dict(img_size=SIZES["vit"]["image_size"], vit_precision="fp32", freeze_vit=True,
                  num_query_token=SIZES["num_query_tokens"], prompt=prompt, max_txt_len=32)
    if lm == "opt":
        model = Blip2OPT(opt_model=tok_dir, **common)
    else:
        model = Blip2T5(t5_model=tok_dir, **common)
        model.t5_model.float()  # LAVIS keeps Flan-T5 in bf16 under GPU autocast; on the CPU it runs in fp32
    with torch.no_grad():  # LAVIS initialises ln_vision and the queries plainly; move them off 1/0 so they count
        model.ln_vision.weight.add_(torch.randn_like(model.ln_vision.weight) * 0.1)
        model.ln_vision.bias.add_(torch.randn_like(model.ln_vision.bias) * 0.1)
    model.eval()
    image, captions = inputs["image"], inputs["captions"]
    if lm == "opt":  # LAVIS's caption processor puts its prompt ("a photo of ") before the caption
        samples = {"image": image, "text_input": [BlipCaptionProcessor(prompt=f"{prompt} " if prompt else "")(c)
                                                  for c in captions]}
    else:  # the encoder reads the prompt (text_input), the decoder the caption (text_output)
        samples = {"image": image, "text_input": [prompt] * len(captions),
                   "text_output": [BlipCaptionProcessor()(c) for c in captions]}
    with torch.no_grad():
        loss = float(model(samples)["loss"])
    seen = []
    inner = model.opt_model if lm == "opt" else model.t5_model
    generate = inner.generate
    inner.generate = lambda *a, **kw: seen.append(generate(*a, **kw)) or seen[-1]
    with torch.no_grad():
        text = model.generate({"image": image}, num_beams=1, max_length=10, min_length=1)
    ids = seen[0]
    if lm == "opt":  # LAVIS 1.0.2 hands OPT the prompt's ids: the new tokens follow them
        ids = ids[:, len(model.opt_tokenizer(prompt).input_ids):]
    else:
        ids = ids[:, 1:]  # the decoder start token
    torch.save({"model": model.state_dict()}, out / f"{tag}.pth")
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    return {"loss": loss, "greedy_ids": ids.tolist(), "captions": text, "text": samples.get("text_output", samples["text_input"]),
            "trainable": trainable, "trainable_numel": sum(model.get_parameter(n).numel() for n in trainable)}


def use_medium_sizes() -> None:
    SIZES.update(num_query_tokens=32,
                 vit=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                          image_size=224, patch_size=14),
                 qformer=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=6))
    SIZES["opt"].update(hidden_size=512, ffn_dim=2048, num_hidden_layers=4, num_attention_heads=8,
                        word_embed_proj_dim=512, max_position_embeddings=512)


def time_step(work: Path, steps: int = 8) -> None:
    """LAVIS's Blip2OPT training step (forward, backward, AdamW on what trains) at benchmarks/blip2_step.py's
    ``medium_opt`` size, one 224 px image per sample, batch 8, 16-token captions: the LAVIS side of the
    speed comparison (``python benchmarks/blip2_step.py --size medium_opt --frames 1 --batch 8 --no-flops
    --frozen-dtype fp32 --dtype fp32 --no-lora`` is vcap's)."""
    import time

    from lavis.models.blip2_models.blip2_opt import Blip2OPT

    torch.manual_seed(0)
    model = Blip2OPT(opt_model=str(work / "opt_lavis"), img_size=224, vit_precision="fp32", freeze_vit=True,
                     num_query_token=32, prompt="a video of", max_txt_len=32).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    words = " ".join(["word"] * 12)
    samples = {"image": torch.randn(8, 3, 224, 224), "text_input": [f"a video of {words}"] * 8}
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        model(samples)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
    print(json.dumps({"lavis_step_s": sum(times) / len(times), "trainable": sum(
        p.numel() for p in model.parameters() if p.requires_grad), "threads": torch.get_num_threads()}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, help="directory with inputs.pth and the tokenizer directories")
    ap.add_argument("--time-step", action="store_true", help="time LAVIS's training step instead (see time_step)")
    args = ap.parse_args()
    work = Path(args.work)
    if args.time_step:
        use_medium_sizes()
    patch_loaders(str(work / "bert"))
    if args.time_step:
        return time_step(work)
    inputs = torch.load(work / "inputs.pth")
    results = {}
    for lm in ("opt", "t5"):
        for prompt in ("a video of", ""):
            tag = f"{lm}_{'prompt' if prompt else 'empty'}"
            results[tag] = run_case(lm, prompt, str(work / f"{lm}_lavis"), inputs, work, tag)
    (work / "lavis_results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
