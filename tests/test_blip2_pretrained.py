"""BLIP-2 from a transformers directory (saved from a tiny model), LoRA on the LLM, and checkpoints
that leave the frozen pretrained weights out."""
import pytest
import torch
from transformers import AutoTokenizer, Blip2Config, Blip2ForConditionalGeneration

from vcap.common.checkpoint import load_weights, read_metadata, save_weights
from vcap.models.blip2.blip2_opt import Blip2OPTVideo


def save_tiny_blip2(path, tokenizer_dir: str, text_config: dict):
    """A tiny transformers BLIP-2 with a real-convention tokenizer (tokenizer_fixtures), saved as a Hugging
    Face directory. As in Salesforce/blip2-*, the image placeholder token comes after the tokenizer's ids."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if text_config["model_type"] == "opt":  # Salesforce/blip2-opt-2.7b's text_config: eos_token_id 50118, OPT's "\n"
        text_config = {**text_config, "eos_token_id": tok("\n", add_special_tokens=False).input_ids[0]}
    cfg = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        text_config={**text_config, "vocab_size": len(tok) + 8}, num_query_tokens=4, image_token_index=len(tok))
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


# OPT's and Flan-T5's special ids and Flan-T5's gated GELU FFN with untied head (facebook/opt-2.7b,
# google/flan-t5-xl config.json)
OPT_CONFIG = dict(model_type="opt", hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
                  word_embed_proj_dim=32, pad_token_id=1, bos_token_id=2, eos_token_id=2)
T5_CONFIG = dict(model_type="t5", d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2, pad_token_id=0,
                 eos_token_id=1, decoder_start_token_id=0, feed_forward_proj="gated-gelu", tie_word_embeddings=False)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, hf_tokenizers):
    return save_tiny_blip2(tmp_path_factory.mktemp("blip2"), hf_tokenizers["opt"], OPT_CONFIG)


def samples():
    torch.manual_seed(1)
    return {"video": torch.randn(2, 3, 3, 32, 32), "text_input": ["a red circle moves left", "a blue square"]}


def test_transformers_blip2_loads_and_frozen_weights_stay_out_of_checkpoints(hf_dir, tmp_path):
    model = Blip2OPTVideo(tokenizer=str(hf_dir), pretrained=str(hf_dir), num_query_tokens=4)
    reference = Blip2ForConditionalGeneration.from_pretrained(hf_dir).state_dict()
    mine = model.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in reference.items())
    assert not model.temporal_embedding.any()  # starts as the image model
    out = model(samples())
    out["loss"].backward()
    assert model.query_tokens.grad is not None and model.vision_model.embeddings.patch_embedding.weight.grad is None
    path = tmp_path / "w.safetensors"
    save_weights(model, path, model.checkpoint_metadata())
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert not any(k.startswith(("vision_model.", "language_model.")) for k in keys) and "query_tokens" in keys
    assert read_metadata(path)["pretrained"] == str(hf_dir)
    again = Blip2OPTVideo(tokenizer=str(hf_dir), pretrained=str(hf_dir), num_query_tokens=4)
    load_weights(again, path)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


def test_lora_trains_only_adapters_in_the_llm(hf_dir):
    model = Blip2OPTVideo(tokenizer=str(hf_dir), pretrained=str(hf_dir), num_query_tokens=4,
                          lora={"r": 4, "alpha": 8, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}).train()
    llm = {n: p for n, p in model.language_model.named_parameters() if p.requires_grad}
    assert llm and all("lora_" in n for n in llm)
    assert any(".q_proj.lora_A" in n for n in llm) and any(".v_proj.lora_B" in n for n in llm)
    assert not any(".k_proj." in n for n in llm)
    model(samples())["loss"].backward()
    assert all(p.grad is not None for n, p in llm.items() if "lora_A" in n)  # lora_B starts at zero: A's grad is 0
    assert any(float(p.grad.abs().sum()) > 0 for n, p in llm.items() if "lora_B" in n)
    with pytest.raises(ValueError, match="unknown keys"):
        Blip2OPTVideo(tokenizer=str(hf_dir), pretrained=str(hf_dir), num_query_tokens=4, lora={"rank": 4})


def test_transformers_blip2_flan_t5_loads_into_blip2_t5(tmp_path, hf_tokenizers):
    """Flan-T5's tokenizer has no BOS: the model builds, generation starts from the decoder start token
    (<pad>) and the captions hold no <pad> or </s> text."""
    from vcap.models.blip2.blip2_t5 import Blip2T5Video

    save_tiny_blip2(tmp_path, hf_tokenizers["t5"], T5_CONFIG)
    model = Blip2T5Video(tokenizer=str(tmp_path), pretrained=str(tmp_path), num_query_tokens=4).eval()
    assert model.tokenizer.bos_token_id is None and model.tokenizer.pad_token_id == 0
    reference = Blip2ForConditionalGeneration.from_pretrained(tmp_path).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())
    seen = []
    generate = model.language_model.generate
    model.language_model.generate = lambda **kw: seen.append(out := generate(**kw)) or out
    ids = model.generate_ids(samples(), num_beams=2, max_len=3)
    assert ids.shape[1] <= 3 and (seen[0][:, 0] == model.language_model.config.decoder_start_token_id).all()
    with torch.no_grad():  # a decoder biased towards </s> and <pad> must still give clean text
        model.language_model.lm_head.bias = torch.nn.Parameter(torch.zeros(model.language_model.lm_head.out_features))
        model.language_model.lm_head.bias[[0, 1]] = 5.0
    for caption in model.generate(samples(), num_beams=2, max_len=5) + \
            model.generate(samples(), num_beams=1, max_len=5, min_len=3):
        assert "<pad>" not in caption and "</s>" not in caption
    with pytest.raises(ValueError, match="Blip2OPTVideo takes OPTForCausalLM"):
        Blip2OPTVideo(tokenizer=str(tmp_path), pretrained=str(tmp_path), num_query_tokens=4)


def transformers_loss(path, model, captions, pixels) -> float:
    """The loss of transformers' own Blip2ForConditionalGeneration on the same image, prompt and captions, with
    the text built as a transformers user builds it, by the Hugging Face tokenizer itself: image placeholder
    tokens, then (OPT) ``tokenizer(prompt + " " + caption)`` (BOS included) and the LM config's EOS, the
    prompt's own tokens masked; or (T5) the encoder reading queries + ``tokenizer(prompt)`` and the decoder
    ``tokenizer(caption)``."""
    hf = Blip2ForConditionalGeneration.from_pretrained(path).eval()
    img = [hf.config.image_token_index] * hf.config.num_query_tokens
    tk, prompt = AutoTokenizer.from_pretrained(path), model.prompt
    if hf.config.use_decoder_only_language_model:
        n_prompt = len(tk(prompt).input_ids)
        rows = [img + tk(f"{prompt} {c}").input_ids + [hf.config.text_config.eos_token_id] for c in captions]
        labels = [[-100] * (len(img) + n_prompt) + r[len(img) + n_prompt:] for r in rows]
        width = max(map(len, rows))
        pad = lambda r, v: r + [v] * (width - len(r))
        out = hf(pixel_values=pixels, input_ids=torch.tensor([pad(r, tk.pad_token_id) for r in rows]),
                 attention_mask=torch.tensor([pad([1] * len(r), 0) for r in rows]),
                 labels=torch.tensor([pad(r, -100) for r in labels]))
    else:
        caps = [tk(c).input_ids for c in captions]
        width = max(map(len, caps))
        enc = torch.tensor([img + tk(prompt).input_ids] * len(caps))
        labels = torch.tensor([c + [-100] * (width - len(c)) for c in caps])
        out = hf(pixel_values=pixels, input_ids=enc, labels=labels,
                 decoder_attention_mask=(labels != -100).long())
    return float(out.loss.detach())


@pytest.mark.parametrize("lm", ["opt", "t5"])
def test_one_frame_loss_equals_transformers_blip2(lm, tmp_path, hf_tokenizers):
    """T = 1, same weights, same prompt handling: vcap's captioners are transformers' BLIP-2."""
    from vcap.models.blip2.blip2_t5 import Blip2T5Video

    save_tiny_blip2(tmp_path, hf_tokenizers[lm], T5_CONFIG if lm == "t5" else OPT_CONFIG)
    cls = Blip2T5Video if lm == "t5" else Blip2OPTVideo
    for fusion in ("concat_tokens", "concat_queries"):  # one frame: both fusions are the image model
        model = cls(tokenizer=str(tmp_path), pretrained=str(tmp_path), num_query_tokens=4, frame_fusion=fusion,
                    prompt="a video of").eval()
        captions = ["a red circle moves left", "a blue square"]
        torch.manual_seed(3)
        pixels = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            ours = float(model({"video": pixels[:, None], "text_input": captions})["loss"])
        assert ours == pytest.approx(transformers_loss(tmp_path, model, captions, pixels), rel=1e-5, abs=1e-6)


# -- LAVIS checkpoints ---------------------------------------------------------------------------
def lavis_layout(hf: Blip2ForConditionalGeneration, lm: str = "opt") -> dict:
    """``hf``'s image side, Q-Former and projection written under LAVIS's own key names (as
    blip2_pretrained_*.pth holds them), plus the stage-1 parts a captioner does not use."""
    sd = hf.state_dict()
    out = {"query_tokens": sd["query_tokens"], "ln_vision.weight": sd["vision_model.post_layernorm.weight"],
           "ln_vision.bias": sd["vision_model.post_layernorm.bias"],
           "visual_encoder.cls_token": sd["vision_model.embeddings.class_embedding"],
           "visual_encoder.pos_embed": sd["vision_model.embeddings.position_embedding"],
           "visual_encoder.patch_embed.proj.weight": sd["vision_model.embeddings.patch_embedding.weight"],
           "visual_encoder.patch_embed.proj.bias": sd["vision_model.embeddings.patch_embedding.bias"],
           "Qformer.bert.embeddings.LayerNorm.weight": sd["qformer.layernorm.weight"],
           "Qformer.bert.embeddings.LayerNorm.bias": sd["qformer.layernorm.bias"],
           f"{lm}_proj.weight": sd["language_projection.weight"], f"{lm}_proj.bias": sd["language_projection.bias"]}
    d = hf.config.vision_config.hidden_size
    for i in range(hf.config.vision_config.num_hidden_layers):
        v, b = f"vision_model.encoder.layers.{i}.", f"visual_encoder.blocks.{i}."
        for lavis, ours in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"), ("attn.proj", "self_attn.projection"),
                            ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out[f"{b}{lavis}.weight"], out[f"{b}{lavis}.bias"] = sd[f"{v}{ours}.weight"], sd[f"{v}{ours}.bias"]
        out[f"{b}attn.qkv.weight"] = sd[f"{v}self_attn.qkv.weight"]
        qkv_bias = sd[f"{v}self_attn.qkv.bias"].clone()
        qkv_bias[d:2 * d] = 0  # EVA's attention has no key bias
        sd[f"{v}self_attn.qkv.bias"].copy_(qkv_bias)
        out[f"{b}attn.q_bias"], out[f"{b}attn.v_bias"] = qkv_bias[:d], qkv_bias[2 * d:]
    for k, t in sd.items():
        if k.startswith("qformer.encoder."):
            lavis = k.replace("qformer.", "Qformer.bert.", 1).replace(".attention.attention.", ".attention.self.") \
                .replace(".crossattention.attention.", ".crossattention.self.")
            out[lavis] = t
    h = hf.config.qformer_config.hidden_size
    out.update({  # stage-1 only: the text side of the Q-Former and the ITC/ITM heads
        "Qformer.bert.embeddings.word_embeddings.weight": torch.randn(30, h),
        "Qformer.bert.embeddings.position_embeddings.weight": torch.randn(16, h),
        "Qformer.bert.embeddings.position_ids": torch.arange(16)[None],
        "Qformer.bert.encoder.layer.0.intermediate.dense.weight": torch.randn(64, h),
        "Qformer.bert.encoder.layer.0.output.dense.weight": torch.randn(h, 64),
        "Qformer.cls.predictions.bias": torch.randn(30), "vision_proj.weight": torch.randn(8, h),
        "text_proj.weight": torch.randn(8, h), "itm_head.weight": torch.randn(2, h), "temp": torch.tensor(0.07)})
    return out


def test_lavis_pretrained_and_finetuned_checkpoints_load_by_key_map(hf_dir, tmp_path):
    from vcap.models.blip2.lavis_weights import load_lavis_checkpoint

    source = Blip2ForConditionalGeneration.from_pretrained(hf_dir)
    torch.manual_seed(5)
    for p in source.parameters():  # weights unlike hf_dir's, so loading visibly changes the model
        p.data.add_(torch.randn_like(p) * 0.1)
    pretrained = lavis_layout(source)
    torch.save({"model": pretrained}, tmp_path / "blip2_pretrained_opt.pth")
    model = Blip2OPTVideo(tokenizer=str(hf_dir), pretrained=str(hf_dir), num_query_tokens=4,
                          lavis_checkpoint=str(tmp_path / "blip2_pretrained_opt.pth")).eval()
    want = source.state_dict()
    for k, v in model.state_dict().items():
        if not k.startswith(("language_model.", "temporal_embedding")):
            assert torch.equal(v, want[k]), k
    report = load_lavis_checkpoint(model, tmp_path / "blip2_pretrained_opt.pth")
    assert all(k.startswith(("language_model.", "temporal_embedding")) for k in report.missing)
    assert len(report.ignored) == 10
    # a LAVIS checkpoint's vision weights are a named source too: frozen, they stay out of vcap checkpoints;
    # ln_vision trains under LAVIS's conventions (freeze_vit freezes visual_encoder only), so it is saved
    assert model.conventions.source == "lavis" and model.checkpoint_metadata()["conventions"] == "lavis"
    assert "vision_model.encoder.layers.0.mlp.fc1.weight" in model.frozen_pretrained_keys()
    assert "vision_model.post_layernorm.weight" not in model.frozen_pretrained_keys()
    assert model.vision_model.post_layernorm.weight.requires_grad
    assert model.checkpoint_metadata()["lavis_checkpoint"].endswith("blip2_pretrained_opt.pth")

    # seed 003's checkpoint_best.pth: only what trained (Q-Former, queries, projection, peft LoRA), with
    # the optimizer and config LAVIS saves beside it
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    peft_prefix = "opt_model.base_model.model.model.decoder.layers.0.self_attn"
    finetuned = {k: v + 1 for k, v in pretrained.items() if k.startswith(("Qformer.bert.encoder", "query_tokens", "opt_proj"))}
    finetuned[f"{peft_prefix}.q_proj.lora_A.default.weight"] = torch.full((4, 32), 0.5)
    finetuned[f"{peft_prefix}.v_proj.lora_B.default.weight"] = torch.full((32, 4), 0.25)
    torch.save({"model": finetuned, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5}]},
                "config": {"model": {"arch": "blip2_opt"}}, "scaler": None, "epoch": 4}, tmp_path / "checkpoint_best.pth")
    tuned = Blip2OPTVideo(tokenizer=str(hf_dir), pretrained=str(hf_dir), num_query_tokens=4, lora=lora,
                          lavis_checkpoint=[str(tmp_path / "blip2_pretrained_opt.pth"),
                                            str(tmp_path / "checkpoint_best.pth")])
    sd = tuned.state_dict()
    assert torch.equal(sd["query_tokens"], want["query_tokens"] + 1)
    assert torch.equal(sd["vision_model.post_layernorm.weight"], want["vision_model.post_layernorm.weight"])
    assert torch.equal(sd["language_model.model.decoder.layers.0.self_attn.q_proj.lora_A.default.weight"],
                       torch.full((4, 32), 0.5))


def test_lavis_checkpoint_errors_name_keys_and_code_is_refused(hf_dir, tmp_path):
    source = Blip2ForConditionalGeneration.from_pretrained(hf_dir)
    bad = lavis_layout(source)
    bad["Qformer.bert.encoder.layer.0.attention.self.query.weight"] = torch.zeros(8, 8)
    bad["visual_encoder.fc_norm.weight"] = torch.zeros(32)
    torch.save(bad, tmp_path / "unknown.pth")
    with pytest.raises(ValueError, match="visual_encoder.fc_norm.weight"):
        Blip2OPTVideo(tokenizer=str(hf_dir), pretrained=str(hf_dir), num_query_tokens=4,
                      lavis_checkpoint=str(tmp_path / "unknown.pth"))
    del bad["visual_encoder.fc_norm.weight"]
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"attention.attention.query.weight: file \(8, 8\) vs model \(32, 32\)"):
        Blip2OPTVideo(tokenizer=str(hf_dir), pretrained=str(hf_dir), num_query_tokens=4,
                      lavis_checkpoint=str(tmp_path / "shape.pth"))

    class Payload:
        def __reduce__(self):
            return (print, ("this ran on load",))

    torch.save({"model": {"query_tokens": torch.zeros(1)}, "hook": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused"):
        Blip2OPTVideo(tokenizer=str(hf_dir), pretrained=str(hf_dir), num_query_tokens=4,
                      lavis_checkpoint=str(tmp_path / "evil.pth"))


@pytest.mark.parametrize("project,lm", [("projects/msrvtt_ft.yaml", "t5"), ("projects/msrvtt_scst.yaml", "t5"),
                                        ("projects/msrvtt_ft_opt2.7b.yaml", "opt")])
def test_seed003_projects_build_their_model_from_a_local_blip2(project, lm, tmp_path, hf_tokenizers):
    """The headline projects with a tiny transformers BLIP-2 standing in for the hub weights: LoRA lands on
    the LLM's q/v, the ViT and LLM stay frozen, the model trains and captions."""
    from omegaconf import OmegaConf

    from vcap.common.registry import registry
    from vcap.project import build_config

    save_tiny_blip2(tmp_path, hf_tokenizers[lm], T5_CONFIG if lm == "t5" else OPT_CONFIG)
    # the seed's processor sections say 224 px; the tiny stand-in reads 32 px frames
    sizes = [f"datasets.{name}.vis_processor.{split}.image_size=32"
             for name, section in OmegaConf.load(project).datasets.items()
             for split in (section.get("vis_processor") or {})]
    cfg = build_config(project, [f"model.pretrained={tmp_path}", f"model.tokenizer={tmp_path}",
                                 "model.num_query_tokens=4", "model.checkpoint=null", *sizes])
    model = registry.get_model_class(cfg.model.arch).from_config(cfg.model).train()
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    trainable = {n.split(".")[0] for n in names}
    assert cfg.model.conventions == "seed003"  # LAVIS's: ln_vision (the ViT's post_layernorm) trains beside it
    assert {n for n in names if n.startswith("vision_model.")} == {"vision_model.post_layernorm.weight",
                                                                  "vision_model.post_layernorm.bias"}
    assert trainable == ({"query_tokens", "qformer", "language_projection", "vision_model"} |
                         ({"language_model"} if cfg.model.lora else set()))
    if cfg.model.lora:
        assert any(".q.lora_A" in n or ".q_proj.lora_A" in n for n, _ in model.named_parameters())
    model(samples())["loss"].backward()
    model.eval()
    assert len(model.generate(samples(), num_beams=2, max_len=4, min_len=1)) == 2


@pytest.mark.parametrize("lm", ["opt", "t5"])
def test_frozen_parts_load_in_bf16_and_trained_parts_stay_exact_fp32(lm, tmp_path, hf_tokenizers):
    """model.frozen_dtype: the frozen ViT and LLM are loaded straight in bf16; the Q-Former, queries,
    projection and LoRA train in fp32, with the checkpoint's values bit for bit."""
    from vcap.models.blip2.blip2_t5 import Blip2T5Video

    save_tiny_blip2(tmp_path, hf_tokenizers[lm], T5_CONFIG if lm == "t5" else OPT_CONFIG)
    cls = Blip2T5Video if lm == "t5" else Blip2OPTVideo
    lora = {"r": 4, "alpha": 8, "target_modules": ["q", "v"] if lm == "t5" else ["q_proj", "v_proj"]}
    model = cls(tokenizer=str(tmp_path), pretrained=str(tmp_path), num_query_tokens=4, lora=lora, frozen_dtype="bf16")
    reference = Blip2ForConditionalGeneration.from_pretrained(tmp_path).state_dict()
    for name, p in model.named_parameters():
        if name.startswith(("vision_model.", "language_model.")) and "lora_" not in name:
            assert p.dtype == torch.bfloat16 and not p.requires_grad, name
            assert torch.equal(p, reference[name.replace(".base_layer", "")].bfloat16()), name
        else:
            assert p.dtype == torch.float32 and p.requires_grad, name
            if name in reference:
                assert torch.equal(p, reference[name]), name
    out = model.train()(samples())
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.query_tokens.grad is not None and all(
        p.grad is not None for n, p in model.named_parameters() if "lora_A" in n)
    assert len(model.eval().generate(samples(), num_beams=2, max_len=3)) == 2


def test_a_from_scratch_frozen_llm_is_built_in_bf16(hf_tokenizers):
    from vcap.models.blip2.blip2_t5 import Blip2T5Video

    cfg = dict(vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  image_size=32, patch_size=8),
               qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
               text_config=dict(d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2))
    model = Blip2T5Video(tokenizer=hf_tokenizers["t5"], blip2_config=cfg, num_query_tokens=4, freeze_vit=True,
                         freeze_llm=True, frozen_dtype="bf16")
    assert {p.dtype for p in model.vision_model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.language_model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.qformer.parameters()} == {torch.float32}
    model.train()(samples())["loss"].backward()
    assert model.language_projection.weight.grad is not None
