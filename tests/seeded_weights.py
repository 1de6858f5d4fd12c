"""Weights from parameter names alone, so a reference model in another venv and vcap's model hold the same numbers
without a weight file between them: each tensor comes from numpy's legacy ``RandomState`` (a stream NumPy keeps
unchanged across releases) seeded by the CRC-32 of its name. Used by the parity scripts under benchmarks/parity/
(run with the reference's own Python) and by the tests that compare with what those scripts recorded.

Only numpy and torch are imported: this file runs in LAVIS's venv too.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch


def seeded(name: str, shape, seed: int = 0) -> torch.Tensor:
    """Standard normal values for ``name`` scaled as a parameter of that kind: a vector named ``*weight`` (a norm's
    gain) is 1 + 0.1 z, another vector (a bias) 0.1 z, everything else 0.2 z."""
    shape = tuple(int(s) for s in shape)
    z = np.random.RandomState((zlib.crc32(name.encode()) + seed) % 2**32).standard_normal(int(np.prod(shape)))
    z = torch.from_numpy(z.astype(np.float32).reshape(shape))
    if len(shape) == 1:
        return 1.0 + 0.1 * z if name.endswith("weight") else 0.1 * z
    return 0.2 * z


@torch.no_grad()
def fill_parameters(model: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter of ``model`` set from its name (tied parameters from their first name)."""
    for name, p in model.named_parameters():
        p.copy_(seeded(name, p.shape, seed).to(p.dtype))


def state_dict_from_layout(layout: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A reference model's parameters from its key layout (``{key: [shape, parameter name or None]}``, as the parity
    scripts record it): each key from the name of the parameter it is; buffers (None) are left out."""
    return {key: seeded(owner, shape, seed) for key, (shape, owner) in layout.items() if owner is not None}


def head_bias(head: torch.nn.Linear, token: int, value: float) -> None:
    """A bias of ``value`` on one token's logit of an LM head (which has none): the parity checks' end-favouring
    head, set the same way on the reference's model and on vcap's."""
    bias = torch.zeros(head.out_features)
    bias[token] = value
    head.bias = torch.nn.Parameter(bias)
