"""Seeds: the one way a seed is derived from the run seed and the coordinates of what it seeds (an item of an epoch,
a dataset's sub-epoch, a shard order), and seeding the global generators."""
from __future__ import annotations

import random
import zlib

import numpy as np
import torch


def derive_seed(*parts: int | str) -> int:
    """A seed in [0, 2**31) for ``parts`` (the run seed first): numpy's SeedSequence over them, strings by their
    CRC-32. Independent streams for different coordinates, the same stream on every rank and on a resumed run."""
    ints = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1)[0]) % (2**31)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for (run seed, epoch, item): frame sampling and augmentation are reproducible."""
    return derive_seed(seed, epoch, index)


def set_seed(seed: int) -> None:
    """Python's, numpy's and torch's global generators (dropout, initialisation)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
