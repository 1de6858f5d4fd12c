"""Every shipped model card at its real shapes: each pretrained source is saved locally with the real
widths, heads, head dims, vocabulary, image and patch size (only 1 layer per stack), next to a tokenizer
with the real checkpoint's conventions; the card's project then builds the model from those directories,
runs one training step on clips of the project's frame count and captions of its max_txt_len, and one
beam-2 generation of 5 tokens (captioners) or one encode-and-similarity (retrieval).

Shapes (config.json of each hub checkpoint): EVA ViT-g/14 in BLIP-2 (1408 wide, 16 heads, MLP 6144,
224 px, patch 14); the BLIP-2 Q-Former (768, 12 heads, MLP 3072, cross-attention every 2nd layer, 32
queries); Flan-T5-XL (d_model 2048, 32 heads of 64, gated-GELU 5120, vocabulary 32128, untied head);
OPT-2.7B (2560, 32 heads, FFN 10240, vocabulary 50272); CLIP ViT-B/32 and B/16 (vision 768 / 12 heads /
3072, text 512 / 8 heads / 2048, vocabulary 49408, 77 positions, projection 512); GPT-2 (768, 12 heads,
vocabulary 50257, 1024 positions); X-CLIP B/32 for 16 frames (CLIP B/32 plus the MIT, 512 wide, 8 heads).
"""
import pytest
import torch
from transformers import AutoTokenizer

from vcap.common.registry import registry
from vcap.processors import build_processor
from vcap.project import build_config

EVA_VIT_G = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=1, num_attention_heads=16,
                 image_size=224, patch_size=14, qkv_bias=True, layer_norm_eps=1e-6)
QFORMER = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=12,
               cross_attention_frequency=2, encoder_hidden_size=1408)
FLAN_T5_XL = dict(model_type="t5", d_model=2048, d_ff=5120, d_kv=64, num_layers=1, num_decoder_layers=1,
                  num_heads=32, feed_forward_proj="gated-gelu", vocab_size=32128, tie_word_embeddings=False,
                  pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
OPT_2_7B = dict(model_type="opt", hidden_size=2560, ffn_dim=10240, num_hidden_layers=1, num_attention_heads=32,
                word_embed_proj_dim=2560, max_position_embeddings=2048, vocab_size=50272, pad_token_id=1,
                bos_token_id=2, eos_token_id=2)
CLIP_TEXT = dict(num_hidden_layers=1)  # CLIPTextConfig's defaults are ViT-B's text tower
LONG = ("a man in a red shirt is standing in a kitchen and talking about how to cook a large pot of pasta with "
        "tomatoes garlic and fresh basil while a woman watches him from the door and laughs at his jokes")


def save_blip2(path, tokenizer_dir, text_config):
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if text_config["model_type"] == "opt":  # Salesforce/blip2-opt-2.7b's text_config: eos_token_id 50118, OPT's "\n"
        text_config = {**text_config, "eos_token_id": tok("\n", add_special_tokens=False).input_ids[0]}
    cfg = Blip2Config(vision_config=EVA_VIT_G, qformer_config=QFORMER, text_config=text_config,
                      num_query_tokens=32, image_token_index=len(tok))
    Blip2ForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return [f"model.pretrained={path}", f"model.tokenizer={path}"]


def save_clip(path, tokenizer_dir, patch):
    from transformers import CLIPConfig, CLIPModel

    CLIPModel(CLIPConfig(text_config=CLIP_TEXT, vision_config=dict(num_hidden_layers=1, patch_size=patch),
                         projection_dim=512)).save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return [f"model.pretrained={path}", f"model.tokenizer={path}"]


def save_clipcap(path, tokenizer_dir):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, GPT2Config, GPT2LMHeadModel

    CLIPVisionModelWithProjection(CLIPVisionConfig(num_hidden_layers=1, projection_dim=512)).save_pretrained(path / "clip")
    GPT2LMHeadModel(GPT2Config(n_layer=1)).save_pretrained(path / "gpt2")
    return [f"model.clip_pretrained={path / 'clip'}", f"model.lm_pretrained={path / 'gpt2'}",
            f"model.tokenizer={tokenizer_dir}"]


def save_clipcap_rn50x4(path, tokenizer_dir):
    """CLIPCap's released transformer model: RN50x4's widths (stem 80, 640-d output, 288 px), one block per stage,
    in timm's layout, and GPT-2."""
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    from vcap.models.clip_resnet import CLIPResNet

    spec = dict(layers=[1, 1, 1, 1], width=80, output_dim=640, image_size=288)
    (path / "rn50x4").mkdir()
    save_file(CLIPResNet(**spec).net.state_dict(), str(path / "rn50x4" / "model.safetensors"))
    GPT2LMHeadModel(GPT2Config(n_layer=1)).save_pretrained(path / "gpt2")
    return ["model.clip_resnet={layers: [1, 1, 1, 1], width: 80, output_dim: 640, image_size: 288}",
            f"model.clip_pretrained={path / 'rn50x4'}", f"model.lm_pretrained={path / 'gpt2'}",
            f"model.tokenizer={tokenizer_dir}", "model.mapper_layers=1"]


def save_xclip(path, tokenizer_dir):
    from tokenizer_fixtures import CORPUS
    from transformers import XCLIPConfig, XCLIPModel

    from vcap.processors.tokenizer import SentencePieceTokenizer

    XCLIPModel(XCLIPConfig(text_config=dict(num_hidden_layers=1),
                           vision_config=dict(num_hidden_layers=1, num_frames=16, mit_num_hidden_layers=1),
                           prompt_layers=1)).save_pretrained(path)
    SentencePieceTokenizer.train(CORPUS, vocab_size=10000).save(path / "spm.model")  # as the task trains it
    return [f"model.pretrained={path}", f"model.tokenizer={path / 'spm.model'}", "model.num_layers=1"]


CARDS = {  # card: (project, what it is built from)
    "blip2_t5/flant5xl": ("projects/msrvtt_ft.yaml", lambda p, t: save_blip2(p, t["t5"], FLAN_T5_XL)),
    "blip2_opt/opt2.7b": ("projects/msrvtt_ft_opt2.7b.yaml", lambda p, t: save_blip2(p, t["opt"], OPT_2_7B)),
    "clip4clip/vit_b32": ("projects/clip4clip_msrvtt_meanP.yaml", lambda p, t: save_clip(p, t["clip"], 32)),
    "clip4clip/vit_b16": ("projects/clip4clip_msrvtt_meanP.yaml", lambda p, t: save_clip(p, t["clip"], 16)
                          + ["model.model_type=vit_b16"]),
    "clipcap/coco_mlp": ("projects/clipcap_coco_mlp.yaml", lambda p, t: save_clipcap(p, t["gpt2"])),
    "clipcap/coco_transformer": ("projects/clipcap_coco_transformer.yaml",
                                 lambda p, t: save_clipcap_rn50x4(p, t["gpt2"])),
    "clipcap/video_cross": ("projects/clipcap_msrvtt.yaml",
                            lambda p, t: save_clipcap(p, t["gpt2"]) + ["model.mapper_layers=1"]),
    "xclip_lstm/base16": ("projects/xclip_lstm_msrvtt.yaml", lambda p, t: save_xclip(p, t)),
}


@pytest.mark.parametrize("card", sorted(CARDS))
def test_card_builds_trains_and_runs_at_real_shapes(card, tmp_path, hf_tokenizers):
    project, save = CARDS[card]
    options = save(tmp_path, hf_tokenizers)
    cfg = build_config(project, options + ["model.checkpoint=null"])
    assert f"{cfg.model.arch}/{cfg.model.model_type}" == card
    torch.manual_seed(0)
    model = registry.get_model_class(cfg.model.arch).from_config(cfg.model).train()
    vis = build_processor(next(iter(cfg.datasets.values())).vis_processor.train)  # the frames the project feeds
    video = torch.randn(2, vis.num_frames, 3, vis.image_size, vis.image_size)
    batch = {"video": video, "text_input": [LONG, "a dog runs"]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    loss = model(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    before = [p.detach().clone() for p in trainable[:3]]
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, trainable[:3]))
    model.eval()
    with torch.no_grad():
        if hasattr(model, "generate"):
            captions = model.generate(batch, num_beams=2, max_len=5, min_len=1)
            assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
            specials = getattr(getattr(model.tokenizer, "tk", None), "all_special_tokens", [])
            assert not any(s in c for c in captions for s in specials if s.startswith("<"))
        else:
            sim = model.similarity(model.encode_text(batch), model.encode_video(batch))
            assert sim.shape == (2, 2) and torch.isfinite(sim).all()
