"""vcap: video captioning and video-text retrieval with a LAVIS-style registry and YAML projects."""
from vcap import datasets, models, processors, runners, tasks  # noqa: F401  (registration)
from vcap.common.registry import registry

__all__ = ["registry"]
__version__ = "0.1.0"
