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


class WordTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self.tk = tokenizer
        self.pad_token_id, self.unk_token_id, self.bos_token_id, self.eos_token_id = (
            tokenizer.token_to_id(s) for s in SPECIALS
        )
        if None in (self.pad_token_id, self.eos_token_id, self.bos_token_id, self.unk_token_id):
            raise ValueError(f"tokenizer lacks one of the special tokens {SPECIALS}")

    @classmethod
    def train(cls, texts, min_freq: int = 1) -> "WordTokenizer":
        counts = collections.Counter(w for t in texts for w in t.split())
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

    def __call__(self, texts: list[str], max_length: int, add_bos: bool = True, add_eos: bool = True):
        """Right-padded ``input_ids`` and ``attention_mask`` (long tensors, B x L)."""
        rows = []
        for t in texts:
            ids = self.ids(t)[: max_length - int(add_bos) - int(add_eos)]
            rows.append(([self.bos_token_id] if add_bos else []) + ids + ([self.eos_token_id] if add_eos else []))
        width = max(1, max(len(r) for r in rows))
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return input_ids, mask

    def decode(self, ids) -> str:
        specials = {self.pad_token_id, self.bos_token_id, self.eos_token_id}
        out = []
        for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
            if i == self.eos_token_id:
                break
            if i not in specials:
                out.append(self.tk.id_to_token(i))
        return " ".join(out)
