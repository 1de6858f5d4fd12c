"""BLIP-2 from a transformers directory (saved from a tiny model), LoRA on the LLM, and checkpoints
that leave the frozen pretrained weights out."""
import pytest
import torch
from transformers import Blip2Config, Blip2ForConditionalGeneration, PreTrainedTokenizerFast

from vcap.common.checkpoint import load_weights, read_metadata, save_weights
from vcap.models.blip2.blip2_opt import Blip2OPTVideo
from vcap.processors.tokenizer import WordTokenizer


def save_tiny_blip2(path, word: WordTokenizer, text_config: dict):
    """A tiny transformers BLIP-2 with its tokenizer, saved as a Hugging Face directory."""
    cfg = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        text_config=text_config, num_query_tokens=4)
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(cfg).save_pretrained(path)
    PreTrainedTokenizerFast(tokenizer_object=word.tk, bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]",
                            unk_token="[UNK]").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, word_tokenizer_path):
    word = WordTokenizer.load(word_tokenizer_path)
    return save_tiny_blip2(tmp_path_factory.mktemp("blip2"), word, dict(
        model_type="opt", hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
        word_embed_proj_dim=32, vocab_size=len(word) + 4))


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


def test_transformers_blip2_flan_t5_loads_into_blip2_t5(tmp_path, word_tokenizer_path):
    from vcap.models.blip2.blip2_t5 import Blip2T5Video

    word = WordTokenizer.load(word_tokenizer_path)
    save_tiny_blip2(tmp_path, word, dict(model_type="t5", d_model=32, d_ff=64, d_kv=16, num_layers=1, num_heads=2,
                                         vocab_size=len(word), decoder_start_token_id=0))
    model = Blip2T5Video(tokenizer=str(tmp_path), pretrained=str(tmp_path), num_query_tokens=4).eval()
    reference = Blip2ForConditionalGeneration.from_pretrained(tmp_path).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.items())
    assert model.generate_ids(samples(), num_beams=2, max_new_tokens=3).shape[1] <= 3
    with pytest.raises(ValueError, match="Blip2OPTVideo takes OPTForCausalLM"):
        Blip2OPTVideo(tokenizer=str(tmp_path), pretrained=str(tmp_path), num_query_tokens=4)
