"""Caption cleaning: LAVIS's ``blip_caption`` (``BlipCaptionProcessor.pre_caption``), without the prompt: the
prompt belongs to the model (BLIP-2 puts it before the caption itself)."""
from __future__ import annotations

import re

from vcap.common.registry import registry
from vcap.processors.base import BaseProcessor

_PUNCT = re.compile(r"([.!\"()*#:;~])")  # what LAVIS replaces by a space; commas, ? and ' stay, as LAVIS keeps them
_SPACES = re.compile(r"\s{2,}")


@registry.register_processor("caption")
class CaptionProcessor(BaseProcessor):
    def __init__(self, max_words: int = 50):
        self.max_words = max_words

    def __call__(self, caption: str) -> str:
        """Lower-cased, LAVIS's punctuation replaced by spaces, runs of white space made one, at most
        ``max_words`` words: the same string LAVIS trains BLIP-2 on (after its prompt)."""
        caption = _SPACES.sub(" ", _PUNCT.sub(" ", caption.lower())).rstrip("\n").strip(" ")
        words = caption.split(" ")
        return " ".join(words[: self.max_words]) if len(words) > self.max_words else caption
