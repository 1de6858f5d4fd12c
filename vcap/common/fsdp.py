"""Fully sharded data parallel (torch's FSDP2, ``fully_shard``) for LLM-size captioners.

Training keeps every parameter, gradient and optimizer state sharded over the ranks: each layer
named by the model's ``FSDP_LAYERS`` is gathered for its forward and backward and freed after.
Evaluation generates a different number of tokens on each rank, which per-layer gathers cannot
follow (the collectives would no longer pair up), so ``gathered`` holds the full weights on every
rank for its duration and frees them after. Checkpoints are written from a full state dict
gathered to rank 0, so a sharded run's checkpoint loads into an unsharded model and back.
"""
from __future__ import annotations

import contextlib

import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.fsdp import FSDPModule, fully_shard

from vcap.common import dist


def shard_model(model: torch.nn.Module, layer_classes: tuple[str, ...], device: torch.device) -> int:
    """Shard each module whose class is named in ``layer_classes``, then the rest at the root.
    Returns the number of layers sharded on their own.

    Rank 0's weights are what every rank trains from, as with DDP: the other ranks may have built the
    model on the meta device (``run.fsdp`` never materialises it on more than one rank, as torchtune does),
    or may hold weights of their own; either way each receives its slice of rank 0's weights here."""
    full = dict(model.state_dict()) if dist.get_rank() == 0 else {}  # rank 0's full weights, kept to send
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    for m in reversed(layers):  # inner modules first, as fully_shard requires
        fully_shard(m)
    fully_shard(model)
    if is_meta(model):
        model.to_empty(device=device)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del full
    with torch.no_grad():  # buffers left out of the state dict (position ids and the like)
        dist.broadcast_tensors_(list(model.buffers()), src=0)
    return len(layers)


def is_meta(model: torch.nn.Module) -> bool:
    """Built on the meta device (shapes only), to be filled by ``shard_model``."""
    return any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def _fsdp_modules(model: torch.nn.Module) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def gathered(model: torch.nn.Module):
    """Full weights on every rank inside the block (for generation, whose steps differ per rank)."""
    if not is_sharded(model):
        yield
        return
    # FSDP sets itself up on the root's first forward; generation may come first (SCST samples before
    # its forward), and a layer set up on its own would then refuse the root
    model._get_fsdp_state()._lazy_init()
    modules = _fsdp_modules(model)
    for m in modules:
        m.set_reshard_after_forward(False)
        m.unshard()
    try:
        yield
    finally:
        for m in modules:
            m.reshard()
            m.set_reshard_after_forward(True)


def set_gradient_sync(model: torch.nn.Module, sync: bool) -> None:
    """FSDP's counterpart of DDP's ``no_sync``: skip the reduce-scatter on accumulation micro-steps."""
    model.set_requires_gradient_sync(sync)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on rank 0 (CPU tensors), empty on the other ranks; every rank must call it."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]):
    """Load a full (unsharded) state dict into a sharded model; every rank passes the same dict."""
    return set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state, gathered in full (keyed by parameter name) when the model is sharded."""
    if not is_sharded(model):
        return optimizer.state_dict()
    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))
