"""vcap: video captioning and video-text retrieval with a LAVIS-style registry and YAML projects.

Importing vcap is cheap: the built-in models, datasets, processors, tasks and runners register themselves on
the registry's first lookup (the modules named below), and ``load_model`` / ``load_model_and_preprocess`` /
``train`` / ``evaluate`` import their code when first used.
"""
from importlib.metadata import PackageNotFoundError, version

from vcap.common.registry import registry

__all__ = ["registry", "load_model", "load_model_and_preprocess", "train", "evaluate"]
try:
    __version__ = version("vcap")  # the one version: setup.py's
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

registry.add_builtins("vcap.datasets.builders", "vcap.models", "vcap.processors", "vcap.tasks", "vcap.runners",
                      "vcap.common.optim")


def __getattr__(name: str):
    # the API's entry points are imported on first use, so that `import vcap` (and `vcap --help`) loads no torch
    if name in ("load_model", "load_model_and_preprocess"):
        from vcap import inference  # imported on use: see above

        return getattr(inference, name)
    if name in ("train", "evaluate"):  # vcap.train(cfg_path, options=[...]) -> metrics
        from vcap.runners import build  # imported on use: see above

        return getattr(build, name)
    raise AttributeError(f"module 'vcap' has no attribute {name!r}")
