"""vcap: video captioning and video-text retrieval with a LAVIS-style registry and YAML projects.

Importing vcap is cheap: the built-in models, datasets, processors, tasks and runners register themselves on
the registry's first lookup (``registry.ensure_builtins``), and ``load_model`` / ``load_model_and_preprocess``
import the model code when first used.
"""
from vcap.common.registry import registry

__all__ = ["registry", "load_model", "load_model_and_preprocess", "train", "evaluate"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("load_model", "load_model_and_preprocess"):
        from vcap.models import load

        return getattr(load, name)
    if name in ("train", "evaluate"):  # vcap.train(cfg_path, options=[...]) -> metrics
        from vcap.runners import build

        return getattr(build, name)
    raise AttributeError(f"module 'vcap' has no attribute {name!r}")
