"""Project files in: YAML loading, ``--options`` overrides, a project's ``imports`` and the card files components name.
Merging and checking a project is ``vcap.project.build_config``'s."""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vcap.common.registry import qualified_name
from vcap.common.validation import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def load_yaml(path: str | os.PathLike) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ConfigError([f"the top level must be a mapping, got {type(cfg).__name__}"], str(path))
    return cfg


def import_user_modules(modules, project: str | os.PathLike | None = None) -> None:
    """Import the modules a project lists under ``imports`` so their registrations take effect. They are
    looked for on sys.path, then in the current directory and the project file's folder (``train.py`` run
    by its path, or the ``vcap`` command, does not put either on sys.path)."""
    for folder in (os.getcwd(), *([str(Path(project).resolve().parent)] if project else [])):
        if modules and folder not in sys.path:
            sys.path.append(folder)
    for name in modules or []:
        try:
            importlib.import_module(name)
        except ImportError as e:
            hint = ""
            if isinstance(e, ModuleNotFoundError) and e.name and name.split(".")[0] == e.name.split(".")[0]:
                hint = (f"; it is looked for on sys.path, in the current directory ({os.getcwd()}) and beside the "
                        f"project file: run from the folder that holds {name.split('.')[0]!r} or add that folder to "
                        f"PYTHONPATH")
            raise ConfigError([f"imports: cannot import module {name!r}: {e}{hint}"]) from e


def parse_options(options: list[str] | None) -> DictConfig:
    """``key=value`` overrides (LAVIS's --options). Values are parsed as YAML."""
    options = list(options or [])
    bad = [o for o in options if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError([f"--options {o!r}: expected key=value, e.g. run.max_epoch=2" for o in bad])
    return OmegaConf.from_dotlist(options)


def card_path(cls, rel: str) -> Path:
    """A card path is relative to the vcap package, or to the file that defines ``cls`` (user models)."""
    for base in (PACKAGE_ROOT, Path(inspect.getfile(cls)).parent):
        if (base / rel).is_file():
            return base / rel
    raise ConfigError([f"{qualified_name(cls)} names the card {rel!r}, which is neither under {PACKAGE_ROOT} "
                       f"nor beside {inspect.getfile(cls)}"])


