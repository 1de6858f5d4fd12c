import pytest
import torch
from omegaconf import OmegaConf

from vcap.common.checkpoint import load_weights, read_metadata, save_weights
from vcap.common.registry import registry
from vcap.project import build_config

CAPTIONS = ["a small red circle moves left on a black background", "a big blue square moves up on a gray background"]


def build(arch, tokenizer, **overrides):
    task = "retrieval" if arch == "clip4clip" else "captioning"
    ds = "synthetic_retrieval" if arch == "clip4clip" else "synthetic_caption"
    cfg = build_config(OmegaConf.create({
        "model": {"arch": arch, "model_type": "tiny", "tokenizer": tokenizer, **overrides},
        "datasets": {ds: {}}, "run": {"task": task, "output_dir": "o"}}))
    torch.manual_seed(0)
    return registry.get_model_class(arch).from_config(cfg.model)


def samples(t=4):
    torch.manual_seed(1)
    return {"video": torch.randn(2, t, 3, 32, 32), "text_input": CAPTIONS}


MODELS = [("blip2_opt", {}), ("blip2_opt", {"frame_fusion": "concat_queries"}),
          ("blip2_opt", {"temporal_embedding": False}), ("blip2_t5", {}), ("xclip_lstm", {})] + [
    ("clip4clip", {"sim_header": h, "linear_patch": p})
    for h in ("meanP", "seqLSTM", "seqTransf", "tightTransf") for p in ("2d", "3d")]


@pytest.mark.parametrize("arch,overrides", MODELS, ids=lambda x: str(x))
def test_every_trainable_parameter_gets_a_gradient(arch, overrides, word_tokenizer_path):
    model = build(arch, word_tokenizer_path, **overrides)
    model.train()
    out = model(samples())
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert params
    dead = [n for n, p in params if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead


def test_frozen_parts_get_no_gradient_and_stay_in_eval_mode(word_tokenizer_path):
    model = build("blip2_opt", word_tokenizer_path, freeze_vit=True, freeze_llm=True)
    model.train()
    assert not model.vision_model.training and not model.language_model.training and model.qformer.training
    model(samples())["loss"].backward()
    assert all(p.grad is None for p in model.vision_model.parameters())
    assert all(p.grad is None for p in model.language_model.parameters())
    assert model.query_tokens.grad is not None


def test_concat_tokens_is_order_invariant_without_temporal_embedding(word_tokenizer_path):
    s = samples()
    rev = {**s, "video": s["video"].flip(1)}
    plain = build("blip2_opt", word_tokenizer_path, temporal_embedding=False).eval()
    temporal = build("blip2_opt", word_tokenizer_path).eval()
    # at initialisation cross-attention is nearly uniform (an order-free mean); sharpen it so that the
    # test probes the structure, not the initial scale
    for m in (plain, temporal):
        for p in m.qformer.parameters():
            p.data.normal_(0, 0.3)
    temporal.temporal_embedding.data.normal_(0, 1)
    with torch.no_grad():
        assert torch.allclose(plain.encode_video(s), plain.encode_video(rev), atol=1e-5)
        diff = (temporal.encode_video(s) - temporal.encode_video(rev)).abs().max()
    assert diff > 1e-3


def test_concat_queries_hands_t_times_q_tokens_to_the_lm(word_tokenizer_path):
    model = build("blip2_opt", word_tokenizer_path, frame_fusion="concat_queries").eval()
    with torch.no_grad():
        assert model.encode_video(samples(t=3)).shape == (2, 3 * 8, 64)
        assert build("blip2_opt", word_tokenizer_path).eval().encode_video(samples(t=3)).shape == (2, 8, 64)


@pytest.mark.parametrize("arch", ["blip2_opt", "blip2_t5", "xclip_lstm"])
def test_score_sequences_matches_the_training_loss(word_tokenizer_path, arch):
    model = build(arch, word_tokenizer_path).eval()
    s = samples()
    ids, mask = model._caption_targets(s["text_input"])
    with torch.no_grad():
        loss = model(s)["loss"]
        scores = model.score_sequences(s, ids)
    assert scores.shape == (2,)
    assert torch.allclose(-scores.sum() / mask.sum(), loss, atol=1e-5)
    # K sequences per video: rows are matched to videos in blocks of K
    ids2 = ids.repeat_interleave(3, 0)
    with torch.no_grad():
        assert torch.allclose(model.score_sequences(s, ids2), scores.repeat_interleave(3), atol=1e-5)


@pytest.mark.parametrize("arch", ["blip2_opt", "blip2_t5", "xclip_lstm"])
def test_generate_respects_length_limits_and_is_deterministic(word_tokenizer_path, arch):
    model = build(arch, word_tokenizer_path).eval()
    s = samples()
    for beams in (1, 3):
        ids = model.generate_ids(s, num_beams=beams, max_len=4, min_len=4)
        assert ids.shape[1] <= 4
        caps = model.generate(s, num_beams=beams, max_len=4)
        assert caps == model.generate(s, num_beams=beams, max_len=4)
        assert all(isinstance(c, str) and len(c.split()) <= 4 for c in caps)


@pytest.mark.parametrize("header", ["meanP", "seqLSTM", "seqTransf"])
def test_clip4clip_encoders_and_similarity(header, word_tokenizer_path):
    model = build("clip4clip", word_tokenizer_path, sim_header=header).eval()
    with torch.no_grad():
        v = model.encode_video(samples())
        t = model.encode_text({"text_input": CAPTIONS + ["a purple cross"]})
        sim = model.similarity(t, v)
    assert v.shape == (2, 64) and t.shape == (3, 64) and sim.shape == (3, 2)
    assert torch.allclose(v.norm(dim=-1), torch.ones(2), atol=1e-5)
    # a masked-out trailing frame does not change the video feature
    s = samples()
    s2 = {**s, "video": torch.cat([s["video"], torch.randn(2, 1, 3, 32, 32)], 1),
          "video_mask": torch.tensor([[1, 1, 1, 1, 0]] * 2)}
    with torch.no_grad():
        assert torch.allclose(model.encode_video(s2), v, atol=1e-5)


@pytest.mark.parametrize("arch", ["blip2_opt", "clip4clip"])
def test_checkpoint_round_trip_is_exact(arch, word_tokenizer_path, tmp_path):
    model = build(arch, word_tokenizer_path).eval()
    path = tmp_path / "w.safetensors"
    save_weights(model, path, {"arch": arch, **model.checkpoint_metadata()})
    assert read_metadata(path)["tokenizer.json"] == model.tokenizer.to_str()
    torch.manual_seed(123)
    card = build_config(OmegaConf.create({"model": {"arch": arch, "model_type": "tiny"},
                                          "datasets": {"synthetic_caption": {}},
                                          "run": {"task": "captioning", "output_dir": "o"}})).model
    other = registry.get_model_class(arch).from_config(
        {**card, "tokenizer": word_tokenizer_path, "checkpoint": str(path)}).eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    wrong = build("clip4clip" if arch == "blip2_opt" else "blip2_opt", word_tokenizer_path)
    with pytest.raises(ValueError, match="does not match the model"):
        load_weights(wrong, path)


def test_meanp_is_blind_to_frame_order_and_seqlstm_is_not(word_tokenizer_path):
    s = samples()
    rev = {**s, "video": s["video"].flip(1)}
    with torch.no_grad():
        meanp = build("clip4clip", word_tokenizer_path, sim_header="meanP").eval()
        assert torch.allclose(meanp.encode_video(s), meanp.encode_video(rev), atol=1e-6)
        for header in ("seqLSTM", "seqTransf"):
            seq = build("clip4clip", word_tokenizer_path, sim_header=header).eval()
            # at initialisation seqTransf sees order only through small position embeddings: > float noise
            assert (seq.encode_video(s) - seq.encode_video(rev)).abs().max() > 1e-5, header


@pytest.mark.parametrize("arch", ["blip2_opt", "blip2_t5"])
def test_gradient_checkpointing_recomputes_to_the_same_gradients(arch, word_tokenizer_path):
    """Activations of the ViT and LLM layers are recomputed in backward (torch.utils.checkpoint); the
    loss and every gradient stay what they were. Dropout off so both passes see the same network."""
    grads = []
    for ckpt in (False, True):
        model = build(arch, word_tokenizer_path, grad_checkpointing=ckpt, freeze_vit=False, freeze_llm=False)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        model.train()
        calls = []
        lm_layer = next(m for m in model.language_model.modules() if type(m).__name__ in ("OPTDecoderLayer", "T5Block"))
        for layer in (model.vision_model.encoder.layers[0], lm_layer):  # hooks on a Linear inside the layer: the
            inner = next(m for m in layer.modules() if isinstance(m, torch.nn.Linear))  # layer's own stay outside
            inner.register_forward_pre_hook(lambda m, i: calls.append(type(m).__name__))
        loss = model(samples())["loss"]
        loss.backward()
        assert len(calls) == (4 if ckpt else 2)  # recomputed in backward: each layer ran forward twice
        grads.append((float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, a), (loss_b, b) = grads
    assert loss_a == pytest.approx(loss_b, abs=1e-6) and a.keys() == b.keys()
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)


def test_vit_cache_reuses_frozen_vit_outputs_by_clip_content(word_tokenizer_path):
    model = build("blip2_opt", word_tokenizer_path, freeze_vit=True).eval()
    batch = samples()
    with torch.no_grad():
        plain = model.encode_video(batch)
        model.enable_vit_cache(10**9)
        calls = []
        model.vision_model.encoder.register_forward_pre_hook(lambda m, i: calls.append(None))
        first = model.encode_video(batch)
        again = model.encode_video(batch)
        other = batch["video"].clone()
        other[1, 0, 0, 0, 0] += 1  # one pixel of one clip: only that clip is encoded again
        model.encode_video({"video": other})
    assert torch.allclose(first, plain, atol=1e-6) and torch.equal(first, again)
    assert len(calls) == 2 and model.vit_cache.stats()["clips"] == 3
    assert model.vit_cache.hits == 3 and model.vit_cache.misses == 3
    trainable_vit = build("blip2_opt", word_tokenizer_path, freeze_vit=False)
    with pytest.raises(ValueError, match="needs a frozen ViT"):
        trainable_vit.enable_vit_cache(10**9)


@pytest.mark.parametrize("arch,targets,layer", [("blip2_opt", {"q_proj", "v_proj"}, "OPTDecoderLayer"),
                                                ("blip2_t5", {"q", "v"}, "T5Block")])
def test_each_blip2_llm_brings_its_own_lora_targets_and_fsdp_layers(arch, targets, layer, word_tokenizer_path):
    """The shared BLIP-2 base holds the ViT and Q-Former layers; LoRA's default targets and the LLM's blocks
    are each LLM's own (OPT's q_proj / v_proj would find nothing in T5)."""
    model = build(arch, word_tokenizer_path, lora={"r": 2})
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if "lora_" in n}
    assert adapted == targets
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.language_model.named_parameters())
    assert model.FSDP_LAYERS == ("Blip2EncoderLayer", "Blip2QFormerLayer", layer)


def test_one_loading_policy_missing_keys_follow_the_sources_strict_setting(word_tokenizer_path, tmp_path):
    """A key with no place or another shape always fails; a key the file lacks fails where the source is strict
    (a vcap checkpoint by default) and is reported where model.strict_weights says false."""
    from safetensors.torch import load_file, save_file

    model = build("xclip_lstm", word_tokenizer_path)
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    sd = load_file(str(path))
    del sd["head.bias"]
    save_file(sd, str(tmp_path / "lacks.safetensors"))
    with pytest.raises(ValueError, match=r"model.checkpoint .*lacks.safetensors.* 1 model keys are not in it: "
                                         r"\['head.bias'\].*model.strict_weights.checkpoint: false"):
        build("xclip_lstm", word_tokenizer_path, checkpoint=str(tmp_path / "lacks.safetensors"))
    loaded = build("xclip_lstm", word_tokenizer_path, checkpoint=str(tmp_path / "lacks.safetensors"),
                   strict_weights={"checkpoint": False})
    assert torch.equal(loaded.head.weight, model.head.weight)
    save_file({**sd, "head.bias": torch.zeros(3)}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ValueError, match=r"shapes differ for 1 keys: \['head.bias: file \(3,\) vs model"):
        build("xclip_lstm", word_tokenizer_path, checkpoint=str(tmp_path / "shape.safetensors"),
              strict_weights={"checkpoint": False})
    with pytest.raises(ValueError, match="model.strict_weights: unknown sources \\['chekpoint'\\]"):
        build("xclip_lstm", word_tokenizer_path, strict_weights={"chekpoint": False})
