"""Model weights as safetensors, written atomically (temporary name, fsync, rename).

Frozen pretrained weights are not copied into checkpoints: a model lists their keys in
``frozen_pretrained_keys()``, the checkpoint's metadata records those key names (so loading does
not report them as missing), and the model rebuilds them from its own config.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vcap.common.weights import load_state


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write_fn) -> None:
    """Call ``write_fn(tmp_path)``, fsync, then rename onto ``path`` so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # the usual permissions (safetensors writes 0600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    """``obj`` as JSON at ``path`` (its folder made), atomically: a killed process leaves the old file or none."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=indent)))


def save_weights(model: torch.nn.Module, path: str | os.PathLike, metadata: dict | None = None,
                 state: dict | None = None) -> None:
    """``state`` (default: ``model.state_dict()``) is given for a sharded model, gathered beforehand."""
    skip = set(getattr(model, "frozen_pretrained_keys", lambda: [])())
    state = model.state_dict() if state is None else state
    # clone: safetensors refuses tensors that share storage (tied embeddings)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items() if k not in skip}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    meta["frozen_keys"] = json.dumps(sorted(skip))
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def read_metadata(path: str | os.PathLike) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_weights(model: torch.nn.Module, path: str | os.PathLike, key: str = "model.checkpoint"):
    """Load a vcap checkpoint into ``model`` under the one loading policy (``vcap.common.weights.load_state``:
    strict by default); keys the checkpoint deliberately left out (frozen pretrained weights) are exempt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key} {str(path)!r} does not exist")
    state = {}
    with safe_open(str(path), framework="pt") as f:
        frozen = set(json.loads((f.metadata() or {}).get("frozen_keys", "[]")))
        for k in f.keys():
            state[k] = f.get_tensor(k)
    return load_state(model, state, str(path), key, exempt=frozen)
