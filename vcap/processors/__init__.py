from vcap.processors import reference_processors, text_processors, video_processors  # noqa: F401  (registration)
from vcap.processors.base import BaseProcessor, build_processor
from vcap.processors.tokenizer import WordTokenizer

__all__ = ["BaseProcessor", "build_processor", "WordTokenizer"]
