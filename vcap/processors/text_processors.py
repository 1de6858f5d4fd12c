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


@registry.register_processor("blip_caption")
class BlipCaptionProcessor(CaptionProcessor):
    """LAVIS's ``blip_caption`` under its name and arguments, so a LAVIS yaml's text_processor section works: the same
    cleaning (``max_words`` default 50, as LAVIS's). Its ``prompt`` must stay empty: a captioner's prompt lives in
    ``model.prompt`` (BLIP-2 joins it to the caption itself), not also in the text."""

    def __init__(self, prompt: str = "", max_words: int = 50):
        if prompt:
            raise ValueError(f"blip_caption's prompt {prompt!r}: vcap keeps the prompt in model.prompt only (set "
                             f"model.prompt: {prompt.strip()!r} instead); leave it empty here")
        super().__init__(max_words=max_words)
