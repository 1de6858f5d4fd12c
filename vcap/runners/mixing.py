"""Training datasets mixed by ratio (``run.train_dataset_ratios``), as LAVIS's MultiIterLoader does it: each
batch comes whole from one dataset, drawn by weight. Unlike LAVIS, the draws are a function of (run.seed,
inner epoch, step) and the same on every rank, so every rank trains on the same dataset at a step (their
batches differ) and a resumed run continues with exactly the batches an uninterrupted one would have.

Each dataset keeps its own position across inner epochs: dataset d has given ``c_d`` batches (the number
of times it was drawn so far), so it is in its own epoch ``c_d // L_d`` at batch ``c_d % L_d``, where
``L_d`` is its batches per rank per epoch. Map-style datasets are read by a resumable distributed sampler,
WebDataset streams by their own loader (equal batches per rank by construction); each sub-loader has its
own seeded generator, so opening one never draws from the global RNG that dropout uses.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader

from vcap.datasets.datasets.base import collate


def mix_choices(weights: list[float], seed: int, epoch: int, n: int) -> np.ndarray:
    """The dataset index of each of the ``n`` batches of inner epoch ``epoch``."""
    p = np.asarray(weights, dtype=np.float64)
    return np.random.default_rng([seed, 0x6D1C, epoch]).choice(len(p), size=n, p=p / p.sum())


class MixedTrainLoader:
    """Batches of ``batches_per_epoch`` steps, each from one of ``parts`` (name -> list of that dataset's
    train-split datasets) drawn by ``ratios``. ``start(epoch, skip)`` before each iteration."""

    sampler = None  # not a sampler-driven loader: the runner asks for start() instead

    def __init__(self, parts: dict[str, list], ratios: dict[str, float], batches_per_epoch: int, batch_size: int,
                 num_workers: int, rank: int, world: int, seed: int, pin_memory: bool = False):
        from vcap.runners.runner_base import ResumableSampler

        self.names = list(ratios)
        self.weights = [float(ratios[n]) for n in self.names]
        self.batches_per_epoch, self.seed = batches_per_epoch, seed
        self.epoch, self.skip = 0, 0
        self.loaders, self.datasets, self.lengths = {}, {}, {}
        for name in self.names:
            data = parts[name]
            streamed = [d for d in data if hasattr(d, "make_loader")]
            if streamed:
                if len(data) > 1:
                    raise ValueError(f"datasets.{name}: a train split streamed from shards cannot be combined with "
                                     f"its other train splits")
                loader = streamed[0].make_loader(batch_size, num_workers, rank, world, pin_memory)
            else:
                ds = data[0] if len(data) == 1 else ConcatDataset(data)
                sampler = ResumableSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
                loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=num_workers,
                                    pin_memory=pin_memory, collate_fn=collate, generator=torch.Generator())
            if loader.generator is None:  # a stream's loader: its iterator then draws its seed from here
                loader.generator = torch.Generator()
            if len(loader) == 0:
                raise ValueError(f"datasets.{name}: fewer train items than one batch of {batch_size} x {world} ranks")
            self.loaders[name], self.datasets[name], self.lengths[name] = loader, data, len(loader)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def start(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def choices(self, epoch: int) -> np.ndarray:
        return mix_choices(self.weights, self.seed, epoch, self.batches_per_epoch)

    def consumed(self, epoch: int, skip: int) -> list[int]:
        """Batches each dataset has given before batch ``skip`` of inner epoch ``epoch``."""
        counts = np.zeros(len(self.names), dtype=np.int64)
        for e in range(epoch):
            counts += np.bincount(self.choices(e), minlength=len(self.names))
        counts += np.bincount(self.choices(epoch)[:skip], minlength=len(self.names))
        return counts.tolist()

    def _open(self, d: int, consumed: int):
        """An iterator over dataset ``d``'s batches from its ``consumed``-th on (within its own epoch)."""
        name = self.names[d]
        loader, sub_epoch, pos = self.loaders[name], consumed // self.lengths[name], consumed % self.lengths[name]
        for part in self.datasets[name]:
            part.set_epoch(sub_epoch)
        loader.generator.manual_seed(zlib.crc32(f"{self.seed}-{name}-{sub_epoch}".encode()))
        if hasattr(loader.sampler, "start"):  # map-style: the resumable sampler starts at the position
            loader.sampler.set_epoch(sub_epoch)
            loader.sampler.start = pos * loader.batch_size
            return iter(loader)
        it = iter(loader)  # a stream: run through the batches already given
        for _ in range(pos):
            next(it)
        return it

    def __iter__(self):
        choices = self.choices(self.epoch)
        consumed = self.consumed(self.epoch, self.skip)
        open_ = {}
        for i in range(self.skip, self.batches_per_epoch):
            d = int(choices[i])
            if d not in open_ or consumed[d] % self.lengths[self.names[d]] == 0:
                open_[d] = self._open(d, consumed[d])
            batch = next(open_[d])
            consumed[d] += 1
            batch["dataset"] = self.names[d]
            yield batch
