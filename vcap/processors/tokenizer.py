"""A word-level tokenizer trained on a dataset's captions (HF ``tokenizers`` format, one JSON file).

Used by the tiny models that start from scratch; pretrained models bring their own tokenizer.
"""
from __future__ import annotations

import collections
import os
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

# CLIP's text model treats eos_token_id == 2 as "pool at the largest id" (a legacy rule), so EOS is 3.
SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows right-padded with ``pad_id`` into (B, L) ``ids`` and the ``mask`` of real tokens (long)."""
    ids = torch.full((len(rows), max(1, max(map(len, rows)))), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row, dtype=torch.long), 1
    return ids, mask


class _Padded:
    """``__call__`` (BOS + ids + EOS, right-padded) shared by the word and Hugging Face tokenizers.
    A tokenizer without a BOS token (T5's) adds none."""

    pad_token_id: int
    bos_token_id: int | None
    eos_token_id: int

    def ids(self, text: str) -> list[int]:
        raise NotImplementedError

    def __call__(self, texts: list[str], max_length: int, add_bos: bool = True, add_eos: bool = True):
        """Right-padded ``input_ids`` and ``attention_mask`` (long tensors, B x L)."""
        rows = []
        add_bos = add_bos and self.bos_token_id is not None
        for t in texts:
            ids = self.ids(t)[: max_length - int(add_bos) - int(add_eos)]
            rows.append(([self.bos_token_id] if add_bos else []) + ids + ([self.eos_token_id] if add_eos else []))
        return pad_rows(rows, self.pad_token_id)


class WordTokenizer(_Padded):
    def __init__(self, tokenizer: Tokenizer):
        self.tk = tokenizer
        self.pad_token_id, self.unk_token_id, self.bos_token_id, self.eos_token_id = (
            tokenizer.token_to_id(s) for s in SPECIALS
        )
        if None in (self.pad_token_id, self.eos_token_id, self.bos_token_id, self.unk_token_id):
            raise ValueError(f"tokenizer lacks one of the special tokens {SPECIALS}")

    @classmethod
    def train(cls, texts, min_freq: int = 1) -> "WordTokenizer":
        pre = Whitespace()  # the words it will see: punctuation split off ("left," -> "left", ",")
        counts = collections.Counter(w for t in texts for w, _ in pre.pre_tokenize_str(t))
        words = sorted(w for w, c in counts.items() if c >= min_freq)  # sorted: identical on every rank
        vocab = {s: i for i, s in enumerate(SPECIALS)}
        vocab.update({w: i + len(SPECIALS) for i, w in enumerate(words)})
        tk = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
        tk.pre_tokenizer = Whitespace()
        return cls(tk)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "WordTokenizer":
        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer file {str(path)!r} does not exist")
        return cls(Tokenizer.from_file(str(path)))

    @classmethod
    def from_str(cls, blob: str) -> "WordTokenizer":
        return cls(Tokenizer.from_str(blob))

    def to_str(self) -> str:
        return self.tk.to_str()

    def save(self, path: str | os.PathLike) -> None:
        self.tk.save(str(path))

    def __len__(self) -> int:
        return self.tk.get_vocab_size()

    def ids(self, text: str) -> list[int]:
        return self.tk.encode(text).ids

    def decode(self, ids) -> str:
        specials = {self.pad_token_id, self.bos_token_id, self.eos_token_id}
        out = []
        for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
            if i == self.eos_token_id:
                break
            if i not in specials:
                out.append(self.tk.id_to_token(i))
        return " ".join(out)


class SentencePieceTokenizer(_Padded):
    """A SentencePiece model trained on a dataset's captions: ids 0-3 are pad, unk, bos, eos."""

    def __init__(self, proto: bytes):
        import sentencepiece as spm

        self.proto = proto
        self.sp = spm.SentencePieceProcessor(model_proto=proto)
        self.pad_token_id, self.unk_token_id = self.sp.pad_id(), self.sp.unk_id()
        self.bos_token_id, self.eos_token_id = self.sp.bos_id(), self.sp.eos_id()
        if min(self.pad_token_id, self.bos_token_id, self.eos_token_id) < 0:
            raise ValueError("the SentencePiece model lacks pad, bos or eos ids; vcap's text models need them")

    @classmethod
    def train(cls, texts, vocab_size: int = 10000, model_type: str = "unigram") -> "SentencePieceTokenizer":
        """At most ``vocab_size`` pieces (fewer when the captions do not support that many). ``unigram`` is
        SentencePiece's default; on a tiny closed vocabulary it keeps little more than characters, where
        ``bpe`` merges up to whole words."""
        import io

        import sentencepiece as spm

        texts = [t for t in texts if t.strip()]
        if not texts:
            raise ValueError("no captions to train a SentencePiece tokenizer on")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sorted(texts)), model_writer=model, vocab_size=vocab_size, model_type=model_type,
            pad_id=0, unk_id=1, bos_id=2, eos_id=3, hard_vocab_limit=False, character_coverage=1.0,
            num_threads=1, minloglevel=2)
        return cls(model.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SentencePieceTokenizer":
        if not Path(path).is_file():
            raise FileNotFoundError(f"SentencePiece model {str(path)!r} does not exist")
        return cls(Path(path).read_bytes())

    @classmethod
    def from_str(cls, blob: str) -> "SentencePieceTokenizer":
        import base64

        return cls(base64.b64decode(blob))

    def to_str(self) -> str:
        import base64

        return base64.b64encode(self.proto).decode()

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_bytes(self.proto)

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def ids(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if self.eos_token_id in ids:
            ids = ids[: ids.index(self.eos_token_id)]
        return self.sp.decode([i for i in ids if i not in (self.pad_token_id, self.bos_token_id)]).strip()


class HFTokenizer(_Padded):
    """A Hugging Face tokenizer from an id in the local cache or a directory, with the special tokens its
    family ships (each as in the hub's tokenizer_config.json):

    - T5 / Flan-T5: no BOS; ``</s>`` (1) ends a sequence, ``<pad>`` (0) pads and starts the decoder;
    - OPT: ``</s>`` (2) is BOS and EOS, ``<pad>`` (1) pads;
    - GPT-2: ``<|endoftext|>`` (50256) is BOS and EOS, no pad token (EOS pads);
    - CLIP / X-CLIP: ``<|startoftext|>`` (49406) opens, ``<|endoftext|>`` (49407) closes and pads;
    - BERT: ``[CLS]`` (101) opens, ``[SEP]`` (102) closes, ``[PAD]`` (0) pads.
    """

    def __init__(self, name: str, tk=None):
        """``tk``: the tokenizer already loaded from ``name`` (a processor's), rather than loading it again."""
        from transformers import AutoTokenizer

        try:
            self.tk = tk if tk is not None else AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as e:
            raise ValueError(f"model.tokenizer {name!r}: not a word-tokenizer file and no Hugging Face tokenizer could "
                             f"be loaded from it (offline, it must be a directory or an id in the local cache): {e}") from e
        tk = self.tk
        # BERT-style tokenizers open with [CLS] and close with [SEP] where others have BOS and EOS
        self.bos_token_id = tk.bos_token_id if tk.bos_token_id is not None else tk.cls_token_id
        self.eos_token_id = tk.eos_token_id if tk.eos_token_id is not None else tk.sep_token_id
        self.pad_token_id = tk.pad_token_id if tk.pad_token_id is not None else self.eos_token_id
        self.unk_token_id = tk.unk_token_id
        if self.eos_token_id is None:
            raise ValueError(f"tokenizer {name!r} has no EOS (or SEP) token; vcap's text models end every caption "
                             f"with one")

    def __len__(self) -> int:
        return len(self.tk)

    def ids(self, text: str) -> list[int]:
        return self.tk.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        """The text up to the first EOS, special tokens left out (a leading BOS is skipped first: OPT's
        BOS is its EOS)."""
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        while ids and ids[0] == self.bos_token_id:
            ids = ids[1:]
        if self.eos_token_id in ids:
            ids = ids[: ids.index(self.eos_token_id)]
        return self.tk.decode(ids, skip_special_tokens=True).strip()


# tokenizers a task learns from the training captions (or restores from model.checkpoint): name -> (class,
# the file name it is written to in the output directory, its key in checkpoint metadata)
TRAINED_TOKENIZERS = {"word": (WordTokenizer, "tokenizer.json", "tokenizer.json"),
                      "spm": (SentencePieceTokenizer, "tokenizer.model", "tokenizer.spm")}


def load_text_tokenizer(spec: str | None):
    """A word-tokenizer file (``WordTokenizer``), a SentencePiece ``.model`` file, or a Hugging Face
    tokenizer id / directory."""
    if not spec or spec in TRAINED_TOKENIZERS:
        raise ValueError(
            f"model.tokenizer is {spec!r} but no tokenizer file was resolved; the task trains it from the "
            "training captions (or restores it from model.checkpoint) before building the model"
        )
    if Path(spec).is_file() and Path(spec).suffix == ".model":
        return SentencePieceTokenizer.load(spec)
    if Path(spec).is_file():
        return WordTokenizer.load(spec)
    return HFTokenizer(spec)
