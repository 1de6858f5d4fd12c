"""CLIP's ResNet towers (vcap.models.clip_resnet) against OpenAI's own ModifiedResNet (clip/model.py as the
clip-anytorch package ships it), through a TorchScript archive laid out as OpenAI's RN50x4.pt; and CLIPCap's
released transformer model (notebooks/transformer_inference.ipynb: RN50x4, prefix_size 640, the prefix
divided by its norm) in its own key layout."""
import importlib.util

import pytest
import torch

from vcap.models.clip_resnet import OPENAI_RESNETS, CLIPResNet, load_clip_resnet

TINY = dict(layers=(1, 1, 1, 1), width=8, output_dim=32, image_size=64)


def openai_model_module():
    """clip/model.py by path: the package's __init__ imports pkg_resources, which setuptools no longer ships."""
    root = importlib.util.find_spec("clip").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("openai_clip_model", f"{root}/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Visual(torch.nn.Module):
    """OpenAI's CLIP holds its image tower as ``visual``: a traced archive then has its ``visual.*`` keys."""

    def __init__(self, visual):
        super().__init__()
        self.visual = visual

    def forward(self, x):
        return self.visual(x)


@pytest.fixture(scope="module")
def openai_tower(tmp_path_factory):
    """A tiny ModifiedResNet with non-trivial batch-norm statistics, saved as a TorchScript archive."""
    torch.manual_seed(0)
    ref = openai_model_module().ModifiedResNet(layers=TINY["layers"], output_dim=TINY["output_dim"],
                                               heads=TINY["width"] * 32 // 64, input_resolution=TINY["image_size"],
                                               width=TINY["width"])
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.1), m.bias.normal_(0, 0.1)
    ref.eval()
    path = tmp_path_factory.mktemp("openai") / "RN_tiny.pt"
    torch.jit.trace(Visual(ref), torch.randn(1, 3, 64, 64)).save(str(path))
    return ref, path


def test_openai_archive_gives_openai_embeddings(openai_tower, tmp_path):
    ref, path = openai_tower
    tower = CLIPResNet(**TINY).eval()
    report = load_clip_resnet(tower, str(path))
    assert len(report.loaded) == len(tower.net.state_dict()) and report.ignored == []
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        want = ref(x)
        assert torch.allclose(tower(x), want, atol=1e-5)
    # timm's layout (timm/resnet50x4_clip.openai's model.safetensors), from a directory
    from safetensors.torch import save_file

    save_file(tower.net.state_dict(), str(tmp_path / "model.safetensors"))
    again = CLIPResNet(**TINY).eval()
    load_clip_resnet(again, str(tmp_path))
    with torch.no_grad():
        assert torch.allclose(again(x), want, atol=1e-5)
    with pytest.raises(ValueError, match="takes 64 px images"):
        again(torch.randn(1, 3, 32, 32))


def test_named_towers_are_timms_and_a_misfit_file_is_named(openai_tower):
    import timm

    names = {"RN50": "resnet50_clip", "RN101": "resnet101_clip", "RN50x4": "resnet50x4_clip"}
    with torch.device("meta"):
        for ours, theirs in names.items():
            spec = OPENAI_RESNETS[ours]
            a = CLIPResNet(**spec).net.state_dict()
            b = timm.create_model(theirs, num_classes=spec["output_dim"], img_size=spec["image_size"]).state_dict()
            assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a), ours
    assert OPENAI_RESNETS["RN50x4"]["output_dim"] == 640  # transformer_inference.ipynb's prefix_size
    with pytest.raises(ValueError, match=r"RN_tiny.pt.*shapes differ"):
        load_clip_resnet(CLIPResNet(**{**TINY, "width": 16}), str(openai_tower[1]))


def released_transformer_layout(prefix_size: int, dim: int, prefix_length: int, clip_length: int, layers: int,
                                gpt_state: dict) -> dict:
    """A file as CLIPCap's ClipCaptionPrefix(mapping_type='transformer') saves it (train.py /
    transformer_inference.ipynb: TransformerMapper.linear, prefix_const, transformer.layers.i.{norm1, attn.
    to_queries (no bias), attn.to_keys_values (no bias), attn.project, norm2, mlp.fc1, mlp.fc2}; mlp_ratio 2),
    then the GPT-2 it was trained with under gpt.*."""
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.02
    sd = {"clip_project.linear.weight": r(clip_length * dim, prefix_size), "clip_project.linear.bias": r(clip_length * dim),
          "clip_project.prefix_const": r(prefix_length, dim)}
    for i in range(layers):
        p = f"clip_project.transformer.layers.{i}."
        sd.update({p + "norm1.weight": 1 + r(dim), p + "norm1.bias": r(dim), p + "norm2.weight": 1 + r(dim),
                   p + "norm2.bias": r(dim), p + "attn.to_queries.weight": r(dim, dim),
                   p + "attn.to_keys_values.weight": r(2 * dim, dim), p + "attn.project.weight": r(dim, dim),
                   p + "attn.project.bias": r(dim), p + "mlp.fc1.weight": r(2 * dim, dim), p + "mlp.fc1.bias": r(2 * dim),
                   p + "mlp.fc2.weight": r(dim, 2 * dim), p + "mlp.fc2.bias": r(dim)})
    sd.update({f"gpt.{k}": v for k, v in gpt_state.items()})
    return sd


def test_released_transformer_model_loads_with_its_resnet_and_normalised_prefix(openai_tower, tmp_path, hf_tokenizers):
    from transformers import GPT2Config, GPT2LMHeadModel

    from vcap.models.clipcap.clipcap import CLIPCap

    lm = dict(model_type="gpt2", n_layer=1, n_embd=32, n_head=2, n_positions=128)
    gpt = GPT2LMHeadModel(GPT2Config(**{k: v for k, v in lm.items() if k != "model_type"}, vocab_size=50257))
    sd = released_transformer_layout(TINY["output_dim"], 32, 4, 4, 2, gpt.state_dict())
    torch.save(sd, tmp_path / "transformer_weights.pt")
    model = CLIPCap(tokenizer=hf_tokenizers["gpt2"], clip_resnet=TINY, clip_pretrained=str(openai_tower[1]),
                    lm_config=lm, mapper="transformer", prefix_length=4, clip_length=4, mapper_layers=2,
                    normalize_prefix=True, only_prefix=True, clipcap_weights=str(tmp_path / "transformer_weights.pt"))
    assert model.load_report.missing == [] and model.load_report.unexpected == []
    assert torch.equal(model.clip_project.prefix_const, sd["clip_project.prefix_const"])
    model.eval()
    video = torch.randn(2, 1, 3, 64, 64)
    emb, _ = model.frame_features({"video": video})
    with torch.no_grad():
        raw = openai_tower[0](video[:, 0])
    assert torch.allclose(emb[:, 0], raw / raw.norm(dim=-1, keepdim=True), atol=1e-5)  # prefix / prefix.norm()
    assert all(k.startswith("clip.") for k in model.frozen_pretrained_keys() if not k.startswith("gpt."))
    captions = model.generate({"video": video}, num_beams=1, max_len=3)
    assert len(captions) == 2
