"""CLIP4Clip weights in each external layout: transformers directories, OpenAI CLIP files (state dict and
TorchScript archive) and CLIP4Clip checkpoints, written here by hand in those layouts."""
import pickle
import zipfile

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from vcap.models.clip4clip.clip4clip import CLIP4Clip
from vcap.common.weights import read_state_dict

# OpenAI's build_model infers heads as width // 64: a 64-wide tiny CLIP has one head
TINY = {"projection_dim": 64,
        "text_config": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 1,
                        "max_position_embeddings": 16, "vocab_size": 120},
        "vision_config": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 1,
                          "image_size": 32, "patch_size": 8}}


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(**TINY)).eval()
    with torch.no_grad():
        for p in clip.parameters():  # no zero or one initialisations: every copied value is recognisable
            p.add_(torch.randn_like(p) * 0.01)
    return clip


def openai_layout(clip: CLIPModel) -> dict:
    """The OpenAI CLIP state dict of ``clip``, written out by hand (fused in_proj, transposed projections)."""
    sd = clip.state_dict()
    out = {"visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
           "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
           "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
           "visual.ln_pre.weight": sd["vision_model.pre_layrnorm.weight"],
           "visual.ln_pre.bias": sd["vision_model.pre_layrnorm.bias"],
           "visual.ln_post.weight": sd["vision_model.post_layernorm.weight"],
           "visual.ln_post.bias": sd["vision_model.post_layernorm.bias"],
           "visual.proj": sd["visual_projection.weight"].t(),
           "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
           "ln_final.weight": sd["text_model.final_layer_norm.weight"],
           "ln_final.bias": sd["text_model.final_layer_norm.bias"],
           "text_projection": sd["text_projection.weight"].t(), "logit_scale": sd["logit_scale"],
           "input_resolution": torch.tensor(32), "context_length": torch.tensor(16), "vocab_size": torch.tensor(120)}
    for tower, src in (("visual.transformer", "vision_model.encoder"), ("transformer", "text_model.encoder")):
        for i in range(2):
            a, b = f"{tower}.resblocks.{i}.", f"{src}.layers.{i}."
            for kind in ("weight", "bias"):
                out[a + f"attn.in_proj_{kind}"] = torch.cat([sd[b + f"self_attn.{n}_proj.{kind}"] for n in "qkv"])
                out[a + f"attn.out_proj.{kind}"] = sd[b + f"self_attn.out_proj.{kind}"]
                out[a + f"ln_1.{kind}"] = sd[b + f"layer_norm1.{kind}"]
                out[a + f"ln_2.{kind}"] = sd[b + f"layer_norm2.{kind}"]
                out[a + f"mlp.c_fc.{kind}"] = sd[b + f"mlp.fc1.{kind}"]
                out[a + f"mlp.c_proj.{kind}"] = sd[b + f"mlp.fc2.{kind}"]
    return {k: v.clone() for k, v in out.items()}


def assert_same_clip(model: CLIP4Clip, clip: CLIPModel):
    mine = model.clip.state_dict()
    for key, value in clip.state_dict().items():
        if key.endswith("position_ids"):
            continue
        target = mine.get(key, mine.get(key.replace("patch_embedding.weight", "patch_embedding.conv2d.weight")))
        assert target is not None and torch.equal(target, value), key


def _tree(sd: dict) -> torch.nn.Module:
    """A module tree whose parameters and buffers carry exactly the names of ``sd`` (for tracing)."""
    class Root(torch.nn.Module):
        def forward(self, x):
            return x * 1

    root = Root()
    for key, value in sd.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, torch.nn.Module())
            node = getattr(node, part)
        if value.is_floating_point():
            node.register_parameter(leaf, torch.nn.Parameter(value))
        else:
            node.register_buffer(leaf, value)
    return root


def test_transformers_directory_with_its_tokenizer(tmp_path, hf_tokenizers):
    """openai/clip-vit-base-patch32's conventions: the tokenizer opens with <|startoftext|> (49406), closes
    and pads with <|endoftext|> (49407), and the text tower pools at the first <|endoftext|>, so padding
    never changes a caption's embedding."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(**{**TINY, "text_config": {**TINY["text_config"], "vocab_size": 49408}})).eval()
    clip.save_pretrained(tmp_path / "clip")
    AutoTokenizer.from_pretrained(hf_tokenizers["clip"]).save_pretrained(tmp_path / "clip")
    model = CLIP4Clip(tokenizer=str(tmp_path / "clip"), pretrained=str(tmp_path / "clip"), sim_header="meanP").eval()
    assert_same_clip(model, clip)
    assert model.load_report.missing == [] and model.load_report.unexpected == []
    ids, mask = model.tokenizer(["a red circle", "a large blue square moves left on a white background"], 16)
    n = int(mask[0].sum())
    assert ids[0, 0] == 49406 and ids[0, n - 1] == 49407 and ids[0, n:].eq(49407).all() and n < ids.shape[1]
    with torch.no_grad():
        alone = model.encode_text({"text_input": ["a red circle"]})
        padded = model.encode_text({"text_input": ["a red circle", "a large blue square moves left on a white background"]})
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript"])
def test_openai_clip_file(reference, tmp_path, word_tokenizer_path, fmt):
    sd = openai_layout(reference)
    path = tmp_path / "ViT-tiny.pt"
    if fmt == "state_dict":
        torch.save(sd, path)
    else:
        torch.jit.trace(_tree(sd), torch.zeros(1)).save(str(path))
        assert zipfile.is_zipfile(path)
    assert set(read_state_dict(path)) == set(sd)
    model = CLIP4Clip(tokenizer=word_tokenizer_path, pretrained=str(path), sim_header="seqTransf", temporal_layers=2,
                      linear_patch="3d")
    assert_same_clip(model, reference)
    assert model.load_report.missing == [] and model.load_report.unexpected == []
    # CLIP4Clip's initialisation: the temporal transformer copies the first text layers, positions the text's
    text_layer = model.clip.text_model.encoder.layers[1].state_dict()
    for k, v in model.transformer_clip.encoder.layers[1].state_dict().items():
        assert torch.equal(v, text_layer[k]), k
    assert torch.equal(model.frame_position_embeddings.weight[:16],
                       reference.text_model.embeddings.position_embedding.weight[:16])
    # the 3d patch starts as the 2d one: centre slice copied, the others zero
    conv3d = model.clip.vision_model.embeddings.patch_embedding.conv3d.weight
    assert torch.equal(conv3d[:, :, 1], sd["visual.conv1.weight"]) and not conv3d[:, :, [0, 2]].any()


def test_clip4clip_checkpoint_with_every_header_weight(reference, tmp_path, word_tokenizer_path):
    torch.manual_seed(5)
    sd = {f"clip.{k}": v for k, v in openai_layout(reference).items()}
    sd["clip.visual.conv2.weight"] = torch.randn(64, 3, 3, 8, 8)
    sd["frame_position_embeddings.weight"] = torch.randn(128, 64)  # CLIP4Clip's cross config: 128 positions
    sd["cross.embeddings.position_embeddings.weight"] = torch.randn(128, 64)
    for prefix in ("transformerClip.resblocks.0.", "cross.transformer.resblocks.0."):
        sd[prefix + "attn.in_proj_weight"] = torch.randn(192, 64)
        sd[prefix + "attn.in_proj_bias"] = torch.randn(192)
        for name, shape in (("attn.out_proj", (64, 64)), ("mlp.c_fc", (256, 64)), ("mlp.c_proj", (64, 256))):
            sd[prefix + name + ".weight"], sd[prefix + name + ".bias"] = torch.randn(*shape), torch.randn(shape[0])
        for name in ("ln_1", "ln_2"):
            sd[prefix + name + ".weight"], sd[prefix + name + ".bias"] = torch.randn(64), torch.randn(64)
    sd["cross.pooler.ln_pool.weight"], sd["cross.pooler.ln_pool.bias"] = torch.randn(64), torch.randn(64)
    sd["cross.pooler.dense.weight"], sd["cross.pooler.dense.bias"] = torch.randn(64, 64), torch.randn(64)
    sd["similarity_dense.weight"], sd["similarity_dense.bias"] = torch.randn(1, 64), torch.randn(1)
    path = tmp_path / "pytorch_model.bin.4"
    torch.save(sd, path)

    tight = CLIP4Clip(tokenizer=word_tokenizer_path, pretrained=str(path), sim_header="tightTransf", cross_layers=1,
                      max_frames=8, linear_patch="3d")
    assert_same_clip(tight, reference)
    assert torch.equal(tight.clip.vision_model.embeddings.patch_embedding.conv3d.weight, sd["clip.visual.conv2.weight"])
    assert torch.equal(tight.cross_position_embeddings.weight, sd["cross.embeddings.position_embeddings.weight"][:9])
    q = tight.cross.encoder.layers[0].self_attn
    assert torch.equal(q.k_proj.weight, sd["cross.transformer.resblocks.0.attn.in_proj_weight"][64:128])
    assert torch.equal(q.v_proj.bias, sd["cross.transformer.resblocks.0.attn.in_proj_bias"][128:])
    assert torch.equal(tight.similarity_dense.weight, sd["similarity_dense.weight"])
    report = tight.load_report
    assert "similarity_dense.bias" in report.ignored and "frame_position_embeddings.weight" in report.ignored
    assert report.missing == ["cross_type_embeddings.weight"]  # CLIP4Clip has no type embeddings (zero here)

    seq = CLIP4Clip(tokenizer=word_tokenizer_path, pretrained=str(path), sim_header="seqTransf", temporal_layers=1)
    assert torch.equal(seq.transformer_clip.encoder.layers[0].mlp.fc1.bias, sd["transformerClip.resblocks.0.mlp.c_fc.bias"])
    assert torch.equal(seq.frame_position_embeddings.weight, sd["frame_position_embeddings.weight"][:32])


def test_files_that_would_run_code_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.bin"
    torch.save({"visual.conv1.weight": torch.zeros(1), "x": Evil()}, bad)
    with pytest.raises(ValueError, match="refused to load"):
        read_state_dict(bad)
    # a TorchScript-shaped archive whose data.pkl calls a function
    archive = tmp_path / "evil.pt"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(Evil()))
        z.writestr("evil/code/__torch__.py", "")
    with pytest.raises(pickle.UnpicklingError, match="refusing builtins.print"):
        read_state_dict(archive)


def test_a_tokenizer_larger_than_the_text_vocabulary_is_rejected(reference, tmp_path):
    from vcap.processors.tokenizer import WordTokenizer

    path = tmp_path / "big.json"
    WordTokenizer.train([f"w{i}" for i in range(300)]).save(path)
    torch.save(openai_layout(reference), tmp_path / "clip.pt")
    with pytest.raises(ValueError, match="the tokenizer has 304 tokens but the CLIP text model only 120"):
        CLIP4Clip(tokenizer=str(path), pretrained=str(tmp_path / "clip.pt"))
