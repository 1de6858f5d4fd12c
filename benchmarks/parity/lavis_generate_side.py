"""The reference half of the BLIP-2 decoding parity check: runs LAVIS 1.0.2's own ``Blip2OPT.generate`` /
``Blip2T5.generate`` (in LAVIS's venv, transformers 4.26.1), or seed 003's fork of them (the same venv with
transformers 4.30.0 and the seed's ``lavis`` package first on the path), never vcap. blip2_generate.py starts it.

Every parameter is set from its name alone (tests/seeded_weights.py: numpy's legacy RandomState seeded by the
name), so vcap rebuilds the same weights from the key list written here without a weight file. An optional bias on
the LM head's end token (the end LAVIS decodes to: OPT's "\\n", T5's ``</s>``) makes ``min_len`` decide where
captions end. For each case it records the new token ids each generate produced.
"""
from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent / "tests"))
from lavis_blip2_side import SIZES, patch_loaders  # noqa: E402
from seeded_weights import fill_parameters, head_bias, seeded  # noqa: E402

PROMPTS = ("a video of", "")
BIASES = {"none": 0.0, "end": 6.0}  # added to the end token's logit through an LM-head bias


def patch_seed_loaders(bert_dir: str) -> None:
    """The seed's Blip2OPT builds transformers' own OPT (4.30) and passes cache_dir, its BERT tokenizer a
    truncation side: the same tiny shims."""
    import lavis.models.blip2_models.blip2 as blip2
    import lavis.models.blip2_models.blip2_opt as blip2_opt
    from transformers import BertTokenizer, OPTConfig, OPTForCausalLM

    class Shim:
        def __init__(self, fn):
            self.from_pretrained = fn

    blip2.BertTokenizer = Shim(lambda name, truncation_side="right", cache_dir=None: BertTokenizer.from_pretrained(
        bert_dir, truncation_side=truncation_side))
    for attr in ("BertConfig", "BertLMHeadModel"):  # lavis_blip2_side's shims, without the seed's cache_dir
        inner = getattr(blip2, attr).from_pretrained
        setattr(blip2, attr, Shim(lambda *a, _inner=inner, cache_dir=None, **kw: _inner(*a, **kw)))
    blip2_opt.OPTForCausalLM = Shim(lambda name, torch_dtype=None, cache_dir=None: OPTForCausalLM(OPTConfig(
        **SIZES["opt"])))
    tokenizer_cls = blip2_opt.AutoTokenizer
    blip2_opt.AutoTokenizer = Shim(lambda name, use_fast=False, cache_dir=None: tokenizer_cls.from_pretrained(
        name, use_fast=use_fast))


def build(lm: str, prompt: str, tok_dir: str):
    from lavis.models.blip2_models.blip2_opt import Blip2OPT
    from lavis.models.blip2_models.blip2_t5 import Blip2T5

    common = dict(img_size=SIZES["vit"]["image_size"], vit_precision="fp32", freeze_vit=True,
                  num_query_token=SIZES["num_query_tokens"], prompt=prompt, max_txt_len=32)
    model = Blip2OPT(opt_model=tok_dir, **common) if lm == "opt" else Blip2T5(t5_model=tok_dir, **common)
    inner = model.opt_model if lm == "opt" else model.t5_model
    inner.float()  # LAVIS keeps the LLM in fp16 / bf16 for the GPU; on the CPU the parity runs in fp32
    fill_parameters(model)
    return model.eval(), inner


def end_bias(model, inner, lm: str, value: float) -> None:
    """An LM-head bias of ``value`` on the token LAVIS ends captions with (its generate's eos_token_id)."""
    head_bias(inner.lm_head, model.eos_token_id if lm == "opt" else inner.config.eos_token_id, value)


def key_layout(model) -> dict:
    """Every state-dict key: its shape and the parameter name its values come from (None for a buffer)."""
    owner = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        owner.setdefault(p.data_ptr(), name)
    params = {p.data_ptr() for p in model.parameters()}
    return {k: [list(v.shape), owner.get(v.data_ptr()) if v.data_ptr() in params else None]
            for k, v in model.state_dict().items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, help="directory with the tokenizer directories (blip2_generate.py)")
    ap.add_argument("--reference", choices=["lavis", "seed003"], required=True)
    ap.add_argument("--cases", required=True, help="JSON list of decoding settings (LAVIS's generate keywords)")
    args = ap.parse_args()
    work = Path(args.work)
    patch_loaders(str(work / "bert"))
    if args.reference == "seed003":
        patch_seed_loaders(str(work / "bert"))
    import transformers
    from lavis.models.blip2_models.blip2_opt import Blip2OPT

    seed_code = "inputs_embeds=inputs_embeds" in inspect.getsource(Blip2OPT.generate)
    if seed_code != (args.reference == "seed003"):
        raise SystemExit(f"--reference {args.reference}, but the lavis package on the path is "
                         f"{'seed 003' if seed_code else 'LAVIS 1.0.2'}'s")
    size = SIZES["vit"]["image_size"]
    image = seeded("inputs.image", (2, 3, size, size)) * 10  # two images of unit-scale pixels
    cases = json.loads(Path(args.cases).read_text())
    out = {"reference": args.reference, "transformers": transformers.__version__, "layouts": {}, "cases": []}
    for lm in ("opt", "t5"):
        for prompt in PROMPTS:
            model, inner = build(lm, prompt, str(work / f"{lm}_lavis"))
            out["layouts"][lm] = key_layout(model)
            # LAVIS 1.0.2 takes images (B, C, H, W); the seed takes videos (B, C, T, H, W): one frame each
            x = image if args.reference == "lavis" else image[:, :, None]
            for bias_name, value in BIASES.items():
                end_bias(model, inner, lm, value)
                for case in cases:
                    seen = []
                    generate = inner.generate
                    inner.generate = lambda *a, **kw: seen.append(generate(*a, **kw)) or seen[-1]
                    with torch.no_grad():
                        text = model.generate({"image": x}, **case)
                    inner.generate = generate
                    ids = seen[0]
                    if lm == "opt" and args.reference == "lavis":  # 1.0.2 hands OPT the prompt's ids first
                        ids = ids[:, len(model.opt_tokenizer(prompt).input_ids):]
                    else:  # T5's decoder start token, or 4.30's dummy BOS before inputs_embeds
                        ids = ids[:, 1:]
                    out["cases"].append({"lm": lm, "prompt": prompt, "bias": bias_name, "settings": case,
                                         "ids": ids.tolist(), "captions": text})
    (work / f"{args.reference}_generate.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
