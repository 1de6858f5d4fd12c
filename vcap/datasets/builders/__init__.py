from vcap.datasets.builders import synthetic, video_datasets  # noqa: F401  (registration)
from vcap.datasets.builders.base import BaseBuilder

__all__ = ["BaseBuilder"]
