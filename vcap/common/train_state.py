"""Resumable training checkpoints under ``<output_dir>/checkpoints/``.

    step_00000120/model.safetensors   trainable weights (frozen pretrained ones are named, not copied)
    step_00000120/state.pt            optimizer, LR scheduler, AMP scaler, the RNG states of every rank,
                                      the training loader's position (``loader``: epoch, batches done in it,
                                      the epoch's loader seed), global step, best metric and step
    latest                            the name of the newest complete step directory

A checkpoint is written into a temporary directory, every file fsynced, then the directory renamed
into place and only then ``latest`` rewritten (itself through a temporary file and a rename): a kill
at any moment leaves the previous checkpoint complete and ``latest`` naming it. ``state.pt`` holds
tensors and plain containers only and is read with ``torch.load(weights_only=True)``: a file that
needs code to unpickle is refused.
"""
from __future__ import annotations

import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from vcap.common.checkpoint import atomic_write

LATEST = "latest"


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as tensors and plain containers (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(path)


def write_checkpoint(ckpt_dir: Path, step: int, write_files, keep_last: int | None = None) -> Path:
    """``write_files(tmp_dir)`` writes the files; the directory becomes ``step_<step>`` atomically and
    ``latest`` names it. Older step directories beyond ``keep_last`` are removed afterwards."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    tmp = ckpt_dir / f".tmp_{name}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write_files(tmp)
    _fsync_tree(tmp)
    final = ckpt_dir / name
    if final.exists():  # the same step written again (e.g. epoch end right after an interval save)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_dir)
    atomic_write(ckpt_dir / LATEST, lambda tmp: tmp.write_text(name + "\n"))
    _fsync_dir(ckpt_dir)
    if keep_last:
        steps = sorted(p for p in ckpt_dir.glob("step_*") if p.is_dir())
        for old in steps[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_dir.glob(".tmp_step_*"):  # left by a run killed mid-write
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete step directory, or None."""
    pointer = Path(ckpt_dir) / LATEST
    if not pointer.is_file():
        return None
    path = Path(ckpt_dir) / pointer.read_text().strip()
    if not (path / "state.pt").is_file() or not (path / "model.safetensors").is_file():
        raise ValueError(f"{pointer} names {path}, which is not a complete checkpoint (model.safetensors and "
                         f"state.pt); remove {pointer} to start afresh")
    return path


def resolve_resume(resume: str | None, ckpt_dir: Path) -> Path | None:
    """``run.resume``: None (start afresh), ``auto`` (the output directory's latest checkpoint, if any),
    or a step directory."""
    if not resume:
        return None
    if resume == "auto":
        return latest_checkpoint(ckpt_dir)
    path = Path(resume)
    if path.name == "state.pt":
        path = path.parent
    if not (path / "state.pt").is_file():
        raise FileNotFoundError(f"run.resume {resume!r}: expected a checkpoint directory with state.pt and "
                                f"model.safetensors (e.g. {ckpt_dir}/step_00000100), or 'auto'")
    return path


def read_state(path: Path) -> dict:
    """``state.pt`` of a checkpoint directory, without running any pickled code."""
    file = Path(path) / "state.pt"
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{file}: refused to load; a training state holds tensors and plain containers only, and "
                         f"this file needs code to unpickle (weights_only=True): {e}") from e
