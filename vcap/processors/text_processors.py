"""Caption cleaning (as LAVIS's blip_caption, without the prompt: the prompt belongs to the model)."""
from __future__ import annotations

import re

from vcap.common.registry import registry
from vcap.processors.base import BaseProcessor

_PUNCT = re.compile(r"([.!\"()*#:;~,?'`])")


@registry.register_processor("caption")
class CaptionProcessor(BaseProcessor):
    def __init__(self, max_words: int = 50):
        self.max_words = max_words

    def __call__(self, caption: str) -> str:
        caption = _PUNCT.sub(" ", caption.lower()).replace("-", " ").replace("/", " ")
        words = caption.split()
        return " ".join(words[: self.max_words])
