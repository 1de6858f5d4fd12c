"""vcap: video captioning and video-text retrieval with a LAVIS-style registry and YAML projects."""
from vcap import datasets, models, processors, runners, tasks  # noqa: F401  (registration)
from vcap.common.registry import registry
from vcap.models.load import load_model, load_model_and_preprocess

__all__ = ["registry", "load_model", "load_model_and_preprocess"]
__version__ = "0.1.0"
