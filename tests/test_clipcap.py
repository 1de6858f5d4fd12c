"""CLIPCap: CLIPCap's key layout, the mappers' gradients, cached features, and the shared generation path."""
import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel

from vcap.common.registry import registry
from vcap.project import build_config

CAPTIONS = ["a small red circle moves left on a black background", "a big blue square moves up on a gray background"]


def build(tokenizer, **overrides):
    cfg = build_config(OmegaConf.create({
        "model": {"arch": "clipcap", "model_type": "tiny", "tokenizer": tokenizer, **overrides},
        "datasets": {"synthetic_caption": {}}, "run": {"task": "captioning", "output_dir": "o"}}))
    torch.manual_seed(0)
    return registry.get_model_class("clipcap").from_config(cfg.model)


def samples():
    torch.manual_seed(1)
    return {"video": torch.randn(2, 4, 3, 32, 32), "text_input": CAPTIONS,
            "video_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])}


@pytest.mark.parametrize("mapper", ["mlp", "transformer", "cross", "cross_self"])
@pytest.mark.parametrize("only_prefix", [False, True])
def test_every_trainable_parameter_gets_a_gradient_and_frozen_parts_none(word_tokenizer_path, mapper, only_prefix):
    model = build(word_tokenizer_path, mapper=mapper, only_prefix=only_prefix).train()
    assert not model.clip.training and (model.gpt.training != only_prefix)
    out = model(samples())
    out["loss"].backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert all(not n.startswith("clip.") for n, _ in trainable)
    assert any(n.startswith("gpt.") for n, _ in trainable) != only_prefix
    dead = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead


def test_clipcap_key_layout_gives_the_logits_of_gpt2_fed_the_prefix(word_tokenizer_path, tmp_path):
    """A state dict in CLIPCap's layout (``clip_project.model.*``, ``gpt.*``, GPT-2's old attention buffers)
    loads, and the model's next-token logits equal GPT-2's on the same prefix, computed by hand."""
    torch.manual_seed(3)
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=60, n_embd=64, n_layer=2, n_head=4, n_positions=64)).eval()
    prefix_length, clip_dim, dim = 4, 64, 64
    w0, b0 = torch.randn(dim * prefix_length // 2, clip_dim) * 0.1, torch.randn(dim * prefix_length // 2) * 0.1
    w2, b2 = torch.randn(dim * prefix_length, dim * prefix_length // 2) * 0.1, torch.randn(dim * prefix_length) * 0.1
    sd = {f"gpt.{k}": v for k, v in gpt.state_dict().items()}
    sd.update({"clip_project.model.0.weight": w0, "clip_project.model.0.bias": b0,
               "clip_project.model.2.weight": w2, "clip_project.model.2.bias": b2,
               "gpt.transformer.h.0.attn.masked_bias": torch.tensor(-1e4)})
    path = tmp_path / "coco_prefix-009.pt"
    torch.save(sd, path)
    model = build(word_tokenizer_path, mapper="mlp", lm_config={"model_type": "gpt2", "vocab_size": 60, "n_embd": 64,
                                                                "n_layer": 2, "n_head": 4, "n_positions": 64},
                  clipcap_weights=str(path)).eval()
    assert model.load_report.missing == [] and model.load_report.unexpected == []
    assert model.load_report.ignored == ["gpt.transformer.h.0.attn.masked_bias"]  # GPT-2's old buffer

    emb = torch.randn(2, 1, clip_dim)  # one CLIP image embedding each (an image is a one-frame video)
    tokens = torch.tensor([[5, 6, 7], [8, 9, 10]])
    with torch.no_grad():
        prefix = model.encode_video({"clip_features": emb})
        by_hand = (torch.tanh(emb[:, 0] @ w0.t() + b0) @ w2.t() + b2).view(2, prefix_length, dim)
        assert torch.allclose(prefix, by_hand, atol=1e-5)
        embeds = torch.cat([by_hand, gpt.transformer.wte(tokens)], 1)
        expected = gpt(inputs_embeds=embeds).logits
        got = model.gpt(inputs_embeds=torch.cat([prefix, model.gpt.get_input_embeddings()(tokens)], 1)).logits
    assert torch.allclose(got, expected, atol=1e-5)
    # the scored log-probabilities are those next-token logits, read at the caption positions
    lp = model._token_logprobs(prefix, tokens, torch.ones_like(tokens))
    ref = torch.log_softmax(expected[:, prefix_length - 1: -1], -1).gather(2, tokens[..., None]).squeeze(-1)
    assert torch.allclose(lp, ref, atol=1e-5)


def test_transformer_mapper_layout_loads_every_key(word_tokenizer_path, tmp_path):
    model = build(word_tokenizer_path, mapper="transformer")
    names = [k for k in model.state_dict() if k.startswith("clip_project.")]
    assert "clip_project.prefix_const" in names and "clip_project.linear.weight" in names
    assert "clip_project.transformer.layers.1.attn.to_keys_values.weight" in names
    assert "clip_project.transformer.layers.0.attn.to_queries.bias" not in names  # CLIPCap's layers have no q/kv bias
    sd = {k: torch.randn_like(v) for k, v in model.state_dict().items() if k.startswith(("clip_project.", "gpt."))}
    sd["gpt.lm_head.weight"] = sd["gpt.transformer.wte.weight"]  # GPT-2 ties them, as in CLIPCap's files
    torch.save(sd, tmp_path / "transformer_weights.pt")
    again = build(word_tokenizer_path, mapper="transformer", clipcap_weights=str(tmp_path / "transformer_weights.pt"))
    assert (again.load_report.missing, again.load_report.unexpected, again.load_report.ignored) == ([], [], [])
    assert all(torch.equal(again.state_dict()[k], v) for k, v in sd.items())


def test_cached_clip_features_give_the_same_loss(word_tokenizer_path):
    model = build(word_tokenizer_path, mapper="cross").eval()
    s = samples()
    with torch.no_grad():
        feats = model.clip(pixel_values=s["video"].flatten(0, 1)).image_embeds.view(2, 4, -1)
        a = model(s)["loss"]
        b = model({**{k: v for k, v in s.items() if k != "video"}, "clip_features": feats})["loss"]
    assert torch.allclose(a, b)


@pytest.mark.parametrize("mapper", ["mlp", "cross"])
def test_generation_is_deterministic_and_respects_length_limits(word_tokenizer_path, mapper):
    model = build(word_tokenizer_path, mapper=mapper).eval()
    s = samples()
    for beams in (1, 3):
        a = model.generate_ids(s, num_beams=beams, max_len=6, min_len=1)
        assert torch.equal(a, model.generate_ids(s, num_beams=beams, max_len=6, min_len=1))
        assert a.shape[1] <= 6
    ids = model.generate_ids(s, num_beams=1, max_len=8, min_len=5)
    eos = model.tokenizer.eos_token_id
    assert not (ids[:, :5] == eos).any()  # no end before min_new_tokens
    torch.manual_seed(0)
    x = model.generate_ids(s, num_beams=1, use_nucleus_sampling=True, top_p=0.9, max_len=4)
    torch.manual_seed(0)
    assert torch.equal(x, model.generate_ids(s, num_beams=1, use_nucleus_sampling=True, top_p=0.9, max_len=4))
    with pytest.raises(ValueError, match="min_len"):
        model.generate_ids(s, max_len=2, min_len=3)


@pytest.mark.parametrize("freeze_clip", [True, False])
def test_checkpoints_leave_out_exactly_the_frozen_pretrained_weights(word_tokenizer_path, tmp_path, freeze_clip):
    """BaseModel's one rule: weights from clip_pretrained / lm_pretrained stay out of checkpoints while frozen; a
    pretrained CLIP that trains is saved like the rest."""
    tiny = build(word_tokenizer_path)
    tiny.clip.save_pretrained(tmp_path / "clip")
    tiny.gpt.save_pretrained(tmp_path / "gpt")
    model = build(word_tokenizer_path, clip_pretrained=str(tmp_path / "clip"), lm_pretrained=str(tmp_path / "gpt"),
                  only_prefix=True, freeze_clip=freeze_clip)
    frozen = set(model.frozen_pretrained_keys())
    keys = set(model.state_dict())
    assert {k for k in keys if k.startswith("gpt.")} <= frozen
    assert ({k for k in keys if k.startswith("clip.")} <= frozen) == freeze_clip
    assert not any(k.startswith("clip.") for k in frozen) or freeze_clip
    assert not any(k.startswith("clip_project.") for k in frozen)


def test_decoding_with_a_stop_token_is_clipcaps_predict_py(hf_tokenizers):
    """With ``stop_token: "."`` CLIPCap decodes as its predict.py: beam 5 as ``generate_beam`` and one beam as
    ``generate2``, ``max_len`` as its ``entry_length``, token for token. The ids were recorded by
    benchmarks/parity/clipcap_decode.py from predict.py's own functions on the same tiny GPT-2 (weights from
    parameter names), with and without a bias on "." that makes beams stop at different lengths."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "parity"))
    from clipcap_decode import FIXTURE, features, stop_bias, tiny_clipcap, until_stop

    ref = json.loads(FIXTURE.read_text())
    model = tiny_clipcap(hf_tokenizers["gpt2"])
    assert model.end_token_id == 13  # GPT-2's "." (predict.py: tokenizer.encode(stop_token)[0])
    stopped = 0
    for case in ref["cases"]:
        stop_bias(model, ref["bias"][case["bias"]])
        with torch.no_grad():
            ids = model.generate_ids({"clip_features": features()}, **case["settings"])
        ours = [until_stop(row, 13) for row in ids.tolist()]
        assert ours == case["ids"], case["settings"]
        stopped += sum(row[-1] == 13 and len(row) < case["settings"]["max_len"] for row in ours)
    assert stopped >= 3  # the cases include captions that stop early


def test_a_stop_token_ends_training_targets_and_captions(hf_tokenizers):
    """The released models' convention both ways: targets end with "." (no EOS), and a caption is what precedes it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "parity"))
    from clipcap_decode import tiny_clipcap

    model = tiny_clipcap(hf_tokenizers["gpt2"])
    ids, mask = model._caption_targets(["a dog runs"])
    assert ids[0, mask[0].bool()].tolist() == model.tokenizer.ids("a dog runs") + [13]
    assert model.decode_ids(torch.tensor([model.tokenizer.ids(" a dog runs") + [13, 0, 0]])) == ["a dog runs"]


def seed000_cross_mapper(dim_clip: int, dim_embedding: int, prefix_length: int, clip_length: int, num_layers: int):
    """Seed 000's ``CrossTransformerMapper`` rebuilt from its source (juexZZ/NYUFall22-CVProject-CLIPVideoCap
    @ 8e51f7b, train_vtt.py, read with the search tool's fetch): ``Transformer(dim_embedding, 8, num_layers)``
    without ``enc_dec``, so every layer is ``TransformerLayer(dim_self, dim_ref=dim_self, num_heads=8, mlp_ratio=2.,
    bias=False)`` called as ``layer(prefix, frames, mask=None)``; attention by einsum with scale head_dim ** -0.5,
    softmax over the keys; ``MlpTransformer`` fc1 -> relu -> fc2; pre-norm residuals. The frames go through
    ``linear`` (dim_clip -> dim_embedding) first. Module names as there, so state dicts are interchangeable."""
    from torch import nn
    from torch.nn import functional as nnf

    class MlpTransformer(nn.Module):
        def __init__(self, in_dim, h_dim):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(in_dim, h_dim), nn.Linear(h_dim, in_dim)

        def forward(self, x):
            return self.fc2(nnf.relu(self.fc1(x)))

    class MultiHeadAttention(nn.Module):
        def __init__(self, dim_self, dim_ref, num_heads):
            super().__init__()
            self.num_heads, self.scale = num_heads, (dim_self // num_heads) ** -0.5
            self.to_queries = nn.Linear(dim_self, dim_self, bias=False)
            self.to_keys_values = nn.Linear(dim_ref, dim_self * 2, bias=False)
            self.project = nn.Linear(dim_self, dim_self)

        def forward(self, x, y):
            b, n, c = x.shape
            _, m, _ = y.shape
            queries = self.to_queries(x).reshape(b, n, self.num_heads, c // self.num_heads)
            keys_values = self.to_keys_values(y).reshape(b, m, 2, self.num_heads, c // self.num_heads)
            keys, values = keys_values[:, :, 0], keys_values[:, :, 1]
            attention = (torch.einsum("bnhd,bmhd->bnmh", queries, keys) * self.scale).softmax(dim=2)
            return self.project(torch.einsum("bnmh,bmhd->bnhd", attention, values).reshape(b, n, c))

    class TransformerLayer(nn.Module):
        def __init__(self, dim_self, dim_ref, num_heads):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(dim_self), nn.LayerNorm(dim_self)
            self.attn = MultiHeadAttention(dim_self, dim_ref, num_heads)
            self.mlp = MlpTransformer(dim_self, int(dim_self * 2.0))

        def forward(self, x, y):
            x = x + self.attn(self.norm1(x), y)
            return x + self.mlp(self.norm2(x))

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(TransformerLayer(dim_embedding, dim_embedding, 8) for _ in range(num_layers))

    class CrossTransformerMapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.clip_length = clip_length
            self.transformer = Transformer()
            self.linear = nn.Linear(dim_clip, dim_embedding)
            self.prefix_const = nn.Parameter(torch.randn(prefix_length, dim_embedding))

        def forward(self, x):
            x = self.linear(x.reshape(-1, x.shape[2])).view(x.shape[0], self.clip_length, -1)
            out = self.prefix_const.unsqueeze(0).expand(x.shape[0], *self.prefix_const.shape)
            for layer in self.transformer.layers:
                out = layer(out, x)
            return out

    return CrossTransformerMapper()


def test_cross_mapper_is_seed_000s_and_loads_its_key_layout(word_tokenizer_path, tmp_path):
    """``mapper: cross`` is seed 000's --cross mapper: the same prefix on identical random weights (every parameter
    randomised from its name), and a file in seed 000's layout (``clip_project.*`` beside GPT-2's ``gpt.*``) loads
    with 0 missing and 0 unexpected keys. Seed 000: 28 frames of 512-d CLIP ViT-B/32, 8 layers, 8 heads."""
    from seeded_weights import fill_parameters

    from vcap.common.weights import load_state

    theirs = seed000_cross_mapper(dim_clip=64, dim_embedding=64, prefix_length=5, clip_length=6, num_layers=3)
    fill_parameters(theirs, seed=7)
    model = build(word_tokenizer_path, mapper="cross", prefix_length=5, mapper_layers=3, mapper_heads=8).eval()
    assert sorted(k for k in model.state_dict() if k.startswith("clip_project.")) == \
        sorted(f"clip_project.{k}" for k in theirs.state_dict())
    sd = {**{k: v for k, v in model.state_dict().items() if not k.startswith("clip_project.")},
          **{f"clip_project.{k}": v for k, v in theirs.state_dict().items()}}
    torch.save(sd, tmp_path / "seed000.pt")
    report = load_state(model, torch.load(tmp_path / "seed000.pt"), "seed000.pt", "model.checkpoint")
    assert not report.missing and not report.unexpected
    frames = torch.randn(2, 6, 64)
    with torch.no_grad():
        ours = model.prefix_from_embeddings(frames, torch.ones(2, 6))
        assert torch.allclose(ours, theirs(frames), atol=1e-5)
    assert ours.shape == (2, 5, 64)
