"""Reading weight files without running pickled code: safetensors, ``torch.load(weights_only=True)``,
and TorchScript archives (OpenAI's CLIP ``.pt``) through a restricted unpickler that builds tensors only.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import torch

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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat state dict from safetensors, a TorchScript archive or a ``torch.save`` file, safely."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if _is_torchscript(path):
        return read_torchscript_tensors(path)
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refused to load; it holds more than tensors (weights_only=True): {e}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(sd).__name__}")
    return sd
