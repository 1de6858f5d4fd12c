"""BLIP-2's text path and the conventions its weights' source decides (vcap/models/blip2/conventions.py),
pinned with the real-convention tokenizers (tokenizer_fixtures). Each fact is LAVIS 1.0.2's code
(lavis/models/blip2_models/blip2_opt.py, blip2_t5.py, blip2.py; lavis/processors/blip_processors.py) or
transformers' Blip2ForConditionalGeneration; benchmarks/parity/blip2_lavis.py checks the numbers against
LAVIS itself."""
import pytest
import torch
import torch.nn.functional as F
from test_blip2_pretrained import OPT_CONFIG, T5_CONFIG, save_tiny_blip2
from transformers import AutoTokenizer

from vcap.models.blip2.blip2_opt import Blip2OPTVideo
from vcap.models.blip2.blip2_t5 import Blip2T5Video

CAPTIONS = ["a man is playing a guitar", "two dogs run on the grass"]


@pytest.fixture(scope="module")
def opt_dir(tmp_path_factory, hf_tokenizers):
    return str(save_tiny_blip2(tmp_path_factory.mktemp("blip2_opt"), hf_tokenizers["opt"], OPT_CONFIG))


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory, hf_tokenizers):
    return str(save_tiny_blip2(tmp_path_factory.mktemp("blip2_t5"), hf_tokenizers["t5"], T5_CONFIG))


def video():
    torch.manual_seed(1)
    return torch.randn(2, 2, 3, 32, 32)


def opt(path, **kw):
    return Blip2OPTVideo(tokenizer=path, pretrained=path, num_query_tokens=4, **kw).eval()


def test_prompt_and_caption_are_one_string_so_the_first_word_keeps_its_space(opt_dir):
    """"a video of" + "a man": ``..., Ġof, Ġa, Ġman``, not the ids of "a video ofa man" (``..., Ġof, a, Ġman``)."""
    model, tk = opt(opt_dir), AutoTokenizer.from_pretrained(opt_dir)
    ids, mask = model._caption_targets(CAPTIONS)
    context = model._context_ids()
    assert context == tk("a video of").input_ids and context[0] == 2  # OPT's BOS </s>
    for row, m, caption in zip(ids, mask, CAPTIONS):
        whole = tk(f"a video of {caption}").input_ids
        assert row[m.bool()].tolist() == whole[len(context):] + [model.end_token_id]
    assert tk.convert_ids_to_tokens(ids[0, :3].tolist()) == ["Ġa", "Ġman", "Ġis"]
    assert tk.convert_ids_to_tokens(tk("a video of").input_ids[-1:] + tk("a man", add_special_tokens=False).input_ids[:1]) \
        == ["Ġof", "a"]  # what tokenizing the two apart gave


def test_t5_caption_is_tokenized_alone_and_keeps_its_word_start_marker(t5_dir):
    """T5 reads the prompt in its encoder and the caption in its decoder (LAVIS's text_input / text_output),
    each tokenized alone: SentencePiece starts each with "▁", so the first word loses nothing."""
    model = Blip2T5Video(tokenizer=t5_dir, pretrained=t5_dir, num_query_tokens=4).eval()
    tk = AutoTokenizer.from_pretrained(t5_dir)
    ids, mask = model._caption_targets(CAPTIONS)
    for row, m, caption in zip(ids, mask, CAPTIONS):
        assert row[m.bool()].tolist() == tk(caption).input_ids  # caption + </s> (1)
    assert tk.convert_ids_to_tokens(ids[0, :1].tolist())[0].startswith("▁")
    assert model._context_ids() == tk("a video of").input_ids and model.end_token_id == 1


def test_opt_captions_end_with_newline_under_both_sources(opt_dir):
    """LAVIS appends "\\n" and stops at it; transformers' blip2-opt-2.7b says so with text_config.eos_token_id
    50118 (OPT's "\\n"), which the tiny directory copies. A new LM ends with the tokenizer's EOS."""
    newline = AutoTokenizer.from_pretrained(opt_dir)("\n", add_special_tokens=False).input_ids
    assert len(newline) == 1
    for source in ("lavis", "transformers"):
        model = opt(opt_dir, conventions=source)
        assert model.end_token_id == newline[0]
        head = model.language_model.lm_head
        head.bias = torch.nn.Parameter(torch.zeros(head.out_features))
        with torch.no_grad():
            head.bias[newline[0]] = 100.0  # every caption ends at once, and decoding stops there
            ids = model.generate_ids({"video": video()}, num_beams=1, max_len=3, min_len=0)
        assert ids[:, 0].tolist() == newline * 2 and (ids[:, 1:] == model.tokenizer.pad_token_id).all()
    row = torch.tensor([model.tokenizer.ids(" a man") + newline + model.tokenizer.ids(" after")])
    assert model.decode_ids(row) == ["a man"]
    assert model.sequence_mask(row).tolist() == [[1, 1, 1, 0]]


def lavis_opt_loss(model, path, captions, prompt) -> float:
    """LAVIS 1.0.2's Blip2OPT.forward, line by line, on vcap's modules and the Hugging Face tokenizer: the
    caption processor's "<prompt> " + caption, then + "\\n"; padding and the prompt's own length masked."""
    tk = AutoTokenizer.from_pretrained(path)
    queries = model.encode_video({"video": video()})
    text = [(f"{prompt} " if prompt else "") + c + "\n" for c in captions]
    tokens = tk(text, return_tensors="pt", padding="longest", truncation=True, max_length=model.max_txt_len)
    targets = tokens.input_ids.masked_fill(tokens.input_ids == tk.pad_token_id, -100)
    if prompt:
        targets[:, :len(tk(prompt).input_ids)] = -100
    targets = torch.cat([torch.full(queries.shape[:2], -100), targets], dim=1)
    lm = model.language_model
    embeds = torch.cat([queries, lm.get_input_embeddings()(tokens.input_ids)], dim=1)
    mask = torch.cat([torch.ones(queries.shape[:2], dtype=torch.long), tokens.attention_mask], dim=1)
    return float(lm(inputs_embeds=embeds, attention_mask=mask, labels=targets).loss)


@pytest.mark.parametrize("prompt", ["a video of", ""])
def test_lavis_conventions_give_lavis_loss_with_and_without_a_prompt(opt_dir, prompt):
    """With an empty prompt LAVIS masks only padding, so OPT's BOS is scored from the last query: vcap does
    the same under ``conventions: lavis`` and not under ``transformers``."""
    model = opt(opt_dir, conventions="lavis", prompt=prompt)
    with torch.no_grad():
        ours = float(model({"video": video(), "text_input": CAPTIONS})["loss"])
        assert ours == pytest.approx(lavis_opt_loss(model, opt_dir, CAPTIONS, prompt), abs=1e-5)
        if not prompt:
            other = opt(opt_dir, conventions="transformers", prompt=prompt)
            assert float(other({"video": video(), "text_input": CAPTIONS})["loss"]) != pytest.approx(ours, abs=1e-4)


def test_ln_vision_eps_and_trainability_follow_the_source(opt_dir):
    """LAVIS's ln_vision is nn.LayerNorm (eps 1e-5) and freeze_vit leaves it trainable; transformers' is the
    ViT's post_layernorm (the config's 1e-6 here), frozen with the ViT."""
    lavis, hf = opt(opt_dir, conventions="lavis"), opt(opt_dir, conventions="transformers")
    assert lavis.vision_model.post_layernorm.eps == 1e-5
    assert hf.vision_model.post_layernorm.eps == hf.vision_model.config.layer_norm_eps == 1e-6
    trainable = lambda m: {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable(lavis) - trainable(hf) == {"vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias"}
    width = lavis.vision_model.config.hidden_size
    assert sum(lavis.get_parameter(n).numel() for n in trainable(lavis) - trainable(hf)) == 2 * width
    lavis.train()({"video": video(), "text_input": CAPTIONS})["loss"].backward()
    assert lavis.vision_model.post_layernorm.weight.grad is not None
    assert lavis.vision_model.encoder.layers[0].mlp.fc1.weight.grad is None


def test_flan_t5_activation_is_exact_gelu_under_lavis(t5_dir):
    """LAVIS sets ``t5_config.dense_act_fn = "gelu"``; Flan-T5's config (and transformers) say gelu_new."""
    x = torch.linspace(-4, 4, 101)
    lavis = Blip2T5Video(tokenizer=t5_dir, pretrained=t5_dir, num_query_tokens=4, conventions="lavis")
    hf = Blip2T5Video(tokenizer=t5_dir, pretrained=t5_dir, num_query_tokens=4, conventions="transformers")
    assert lavis.language_model.config.dense_act_fn == "gelu" and hf.language_model.config.dense_act_fn == "gelu_new"
    ffns = lambda m: [mod for mod in m.language_model.modules() if type(mod).__name__.startswith("T5DenseGated")]
    assert ffns(lavis) and all(torch.equal(f.act(x), F.gelu(x)) for f in ffns(lavis))
    assert all(torch.allclose(f.act(x), F.gelu(x, approximate="tanh")) for f in ffns(hf))
    assert not torch.allclose(F.gelu(x), F.gelu(x, approximate="tanh"), atol=1e-4)


def test_config_resolves_conventions_from_the_source(tmp_path):
    from vcap.common.validation import ConfigError
    from vcap.project import build_config

    assert build_config("projects/msrvtt_ft_opt2.7b.yaml").model.conventions == "seed003"  # the seed's recipe says so
    cfg = build_config("projects/msrvtt_ft_opt2.7b.yaml", ["model.conventions=auto"])
    assert cfg.model.conventions == "transformers"
    cfg = build_config("projects/msrvtt_ft_opt2.7b.yaml", ["model.conventions=auto",
                                                           "model.lavis_checkpoint=blip2_caption_opt2.7b.pth"])
    assert cfg.model.conventions == "lavis"
    cfg = build_config("projects/msrvtt_ft.yaml", ["model.conventions=lavis"])
    assert cfg.model.conventions == "lavis"
    with pytest.raises(ConfigError, match="model.conventions: got 'fairseq', expected one of 'auto', 'lavis', "
                                          "'seed003', 'transformers'"):
        build_config("projects/msrvtt_ft.yaml", ["model.conventions=fairseq"])


def test_flan_t5_head_stays_its_own_when_built_from_a_config_or_on_meta(t5_dir):
    """transformers 5 ties every config-built T5's head to its embeddings; Flan-T5's are two tensors (T5 v1.1),
    and a LAVIS checkpoint holds both: they must load as two, also where run.fsdp builds on the meta device."""
    config = {"vision_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=32, patch_size=8),
              "qformer_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
              "text_config": {k: v for k, v in T5_CONFIG.items() if k != "model_type"}}
    model = Blip2T5Video(tokenizer=t5_dir, blip2_config=config, num_query_tokens=4)
    lm = model.language_model
    assert lm.lm_head.weight is not lm.shared.weight and torch.equal(lm.lm_head.weight, lm.shared.weight)
    with torch.no_grad():
        model.load_state_dict({**model.state_dict(), "language_model.lm_head.weight": torch.ones_like(lm.lm_head.weight)})
    assert lm.lm_head.weight.eq(1).all() and not lm.shared.weight.eq(1).all()
    with torch.device("meta"):
        meta = Blip2T5Video(tokenizer=t5_dir, pretrained=t5_dir, num_query_tokens=4)
    assert meta.language_model.lm_head.weight is not meta.language_model.shared.weight
    assert set(meta.state_dict()) == set(Blip2T5Video(tokenizer=t5_dir, pretrained=t5_dir, num_query_tokens=4).state_dict())
