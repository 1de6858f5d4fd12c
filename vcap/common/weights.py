"""Weights in: reading files without running pickled code (safetensors, ``torch.load(weights_only=True)``,
TorchScript archives such as OpenAI's CLIP ``.pt`` through a restricted unpickler that builds tensors only),
and the one policy by which every source (vcap checkpoints, LAVIS, CLIPCap, CLIP4Clip and OpenAI files) is
loaded into a model: ``load_state`` with a per-source filter function, a ``LoadReport``, one rule.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import io
import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from huggingface_hub import snapshot_download
from safetensors import safe_open
from safetensors.torch import load_file

from vcap.common.fsdp import is_sharded, load_full_state_dict

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# Reading files safely
# ------------------------------------------------------------------------------------------------
class _ScriptObject:
    """Stands in for any TorchScript class: keeps the attributes, runs nothing."""

    def __setstate__(self, state):
        self.__dict__.update(state if isinstance(state, dict) else {"_state": state})


_STORAGE_DTYPES = {f"{n}Storage": d for n, d in (
    ("Float", torch.float32), ("Double", torch.float64), ("Half", torch.float16), ("BFloat16", torch.bfloat16),
    ("Long", torch.int64), ("Int", torch.int32), ("Short", torch.int16), ("Char", torch.int8),
    ("Byte", torch.uint8), ("Bool", torch.bool))}


class _TensorsOnly(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if module.startswith("__torch__"):
            return _ScriptObject
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only tensors are read from TorchScript archives")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        dtype = _STORAGE_DTYPES[storage_type]
        raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript archive by attribute path, without loading any of its code."""
    with zipfile.ZipFile(path) as archive:
        data_pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1)
        root = _TensorsOnly(archive.read(data_pkl), archive, data_pkl[: -len("data.pkl")]).load()
    out: dict[str, torch.Tensor] = {}

    def walk(obj, prefix):
        for name, value in vars(obj).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
            elif isinstance(value, _ScriptObject):
                walk(value, prefix + name + ".")

    walk(root, "")
    return out


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/code/__torch__.py") or "/code/" in n for n in z.namelist())


def read_state_dict(path: str | Path, key: str = "weights file", unwrap: str = "state_dict") -> dict[str, torch.Tensor]:
    """A flat state dict from safetensors, a TorchScript archive or a ``torch.save`` file, safely. A ``torch.save``
    file may hold it under ``unwrap`` (``state_dict``; LAVIS's ``model``, beside its optimizer and config).
    ``key``: the config key that names the file, for the errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key} {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if _is_torchscript(path):
        return read_torchscript_tensors(path)
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{key} {str(path)!r}: refused to load; it holds more than tensors and plain containers "
                         f"(read with weights_only=True): {e}") from e
    if isinstance(sd, dict) and isinstance(sd.get(unwrap), dict):
        sd = sd[unwrap]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{key} {str(path)!r}: expected a state dict (a dict of tensors, or one under {unwrap!r}), "
                         f"got {type(sd).__name__}")
    return sd


def read_safetensors(files: list[Path], keep: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """The tensors of ``files`` whose key ``keep`` accepts, each read alone (a sharded LLM is never read whole)."""
    out = {}
    for f in files:
        with safe_open(str(f), "pt") as st:
            out.update({k: st.get_tensor(k) for k in st.keys() if keep(k)})
    return out


def resolve_pretrained(spec: str | Path, key: str = "model.pretrained") -> Path:
    """A pretrained source as a local path: a file or directory as given, else a hub id's snapshot in the local
    cache (never downloaded here: transformers' ``from_pretrained`` fetches, this finds what it fetched)."""
    path = Path(spec)
    if path.exists():
        return path
    try:
        return Path(snapshot_download(str(spec), local_files_only=True))
    except Exception as e:  # noqa: BLE001  (offline and not cached: say what was looked for)
        raise ValueError(f"{key} {str(spec)!r}: not a file, a directory or a hub id in the local cache ({e})") from e


# ------------------------------------------------------------------------------------------------
# One loading policy for every weight source (timm's: a per-source filter function, one report, one rule)
# ------------------------------------------------------------------------------------------------
# Whether a source's missing keys are an error, by the config key that names the source. A model section's
# ``strict_weights`` (in a card or a project) overrides these while the model is built.
STRICT_DEFAULTS = {"checkpoint": True, "clipcap_weights": True, "clip_pretrained": True,
                   "lavis_checkpoint": False,  # a stage-1 file holds no LLM, a LAVIS fine-tune only what trained
                   "pretrained": False}  # CLIP4Clip: an OpenAI CLIP file has no similarity header
_STRICT: contextvars.ContextVar[dict] = contextvars.ContextVar("vcap_strict_weights", default={})


@contextlib.contextmanager
def strict_weights(overrides: dict | None):
    """``model.strict_weights`` while a model is built: ``{source key: bool}`` over ``STRICT_DEFAULTS``."""
    unknown = set(overrides or {}) - set(STRICT_DEFAULTS)
    if unknown:
        raise ValueError(f"model.strict_weights: unknown sources {sorted(unknown)}; expected some of "
                         f"{sorted(STRICT_DEFAULTS)}")
    token = _STRICT.set({**STRICT_DEFAULTS, **(overrides or {})})
    try:
        yield
    finally:
        _STRICT.reset(token)


@dataclass
class LoadReport:
    """What one source did to a model. ``ignored``: source keys its filter drops on purpose (LAVIS's stage-1
    heads, GPT-2's attention-mask buffers, another CLIP4Clip header's weights); ``mismatched``: ``"key: file
    shape vs model shape"``."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        groups: dict[str, int] = {}
        for k in self.missing:
            groups[k.split(".")[0]] = groups.get(k.split(".")[0], 0) + 1
        where = ", ".join(f"{g}: {n}" for g, n in groups.items())
        return (f"{self.source}: {len(self.loaded)} tensors loaded, {len(self.missing)} model keys not in it"
                f"{f' ({where})' if where else ''}, {len(self.ignored)} ignored")


FilterFn = Callable[[dict, torch.nn.Module], "tuple[dict, list[str]]"]


def known_keys(sd: dict, module: torch.nn.Module) -> tuple[dict, list[str]]:
    """``load_state``'s filter for a source that holds more than the module: the keys the module has, the rest
    ignored (and reported as such)."""
    own = module.state_dict()
    return {k: v for k, v in sd.items() if k in own}, sorted(k for k in sd if k not in own)


def load_state(module: torch.nn.Module, sd: dict[str, torch.Tensor], source: str, key: str, *,
               filter_fn: FilterFn | None = None, scope: tuple[str, ...] = (), exempt: set[str] = frozenset(),
               strict: bool | None = None) -> LoadReport:
    """Load ``sd`` into ``module`` under vcap's one rule. ``filter_fn(sd, module) -> (sd in the module's names,
    ignored keys)`` maps a source's layout (timm's ``checkpoint_filter_fn``). Then a key with no place in the
    module or with another shape is always an error: the source does not describe this model. A module key the
    source lacks is an error when the source is strict (``STRICT_DEFAULTS``, ``model.strict_weights``), else
    reported. ``scope``: the key prefixes the source is meant to fill (default all); ``exempt``: keys the
    source left out on purpose (a vcap checkpoint's frozen pretrained weights). ``key``: the config key
    naming the source, for the error and the strict setting."""
    ignored: list[str] = []
    if filter_fn is not None:
        sd, ignored = filter_fn(sd, module)
    own = module.state_dict()
    sd = {_peft_base(k, own): v for k, v in sd.items()}
    report = LoadReport(source, ignored=list(ignored))
    report.unexpected = [k for k in sd if k not in own]
    report.mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in sd.items()
                         if k in own and tuple(v.shape) != tuple(own[k].shape)]
    report.missing = sorted(k for k in own if k not in sd and k not in exempt and k.startswith(scope or ("",))
                            and not k.endswith("position_ids"))
    strict = _STRICT.get().get(key.split(".")[-1], STRICT_DEFAULTS.get(key.split(".")[-1], True)) \
        if strict is None else strict
    problems = []
    if report.unexpected:
        problems.append(f"{len(report.unexpected)} keys have no place in {type(module).__name__}: "
                        f"{report.unexpected[:8]}")
    if report.mismatched:
        problems.append(f"shapes differ for {len(report.mismatched)} keys: {report.mismatched[:5]}")
    if report.missing and strict:
        problems.append(f"{len(report.missing)} model keys are not in it: {report.missing[:8]} (model.strict_weights."
                        f"{key.split('.')[-1]}: false loads it all the same)")
    if problems:
        raise ValueError(f"{key} {source!r} does not match the model: " + "; ".join(problems))

    with torch.no_grad():
        if is_sharded(module):
            load_full_state_dict(module, sd)
        else:
            for k, v in sd.items():
                own[k].copy_(v)
    report.loaded = sorted(sd)
    (log.warning if report.missing else log.info)("%s %s", key, report)
    return report


def _peft_base(key: str, own: dict) -> str:
    """With LoRA injected, a wrapped layer's own weight lives under ``<layer>.base_layer.``."""
    if key in own:
        return key
    head, _, leaf = key.rpartition(".")
    wrapped = f"{head}.base_layer.{leaf}"
    return wrapped if wrapped in own else key
