"""Loaders: the evaluation loader (each rank a strided share, no padding) and the one resumable training loader
protocol, which map-style datasets, WebDataset streams and datasets mixed by ratio all follow.

A training loader is an iterable of collated batches with ``len()`` (batches per rank per epoch) and
``state_dict()`` / ``load_state_dict()``: ``{"epoch", "batch", "seed"}``, the position of the next batch and the
seed of the epoch's iterator. ``set_epoch(e)`` starts epoch ``e`` at its first batch. A run that saved the state
mid-epoch and loads it continues with exactly the batches an uninterrupted run would have drawn; the runner needs
no other protocol (torchdata's ``StatefulDataLoader`` would serve the map-style case, not ratio mixing of several
loaders, and its stream resume needs the dataset's own state, which a WebDataset pipeline has not).

An epoch's iterator seed is drawn from the global torch generator when the epoch starts, one int64 as
``DataLoader``'s own iterator draws it, so the global stream (dropout, sampling) is what a plain ``DataLoader``
leaves; a resumed epoch takes the saved seed and draws nothing.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler, Sampler

from vcap.common import dist
from vcap.common.seed import derive_seed
from vcap.datasets.datasets.base import collate


class ShardSampler(Sampler):
    """Evaluation sampler: rank r takes items r, r+W, ... with no padding (results are gathered by id)."""

    def __init__(self, n: int):
        self.indices = list(range(dist.get_rank(), n, dist.get_world_size()))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def eval_loader(dataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset)), num_workers=num_workers,
                      collate_fn=collate)


class ResumableSampler(DistributedSampler):
    """DistributedSampler that starts an epoch after the items a resumed run already trained on (``start``, reset by
    ``set_epoch``)."""

    start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


class TrainLoader:
    """The protocol, and what every training loader shares: the position, the seed, counting what it yields.
    A subclass gives ``__len__``, ``num_items`` and ``_batches(epoch, batch, seed)``."""

    DRAWS_SEED = True  # False: the loader seeds itself (mixing seeds its sub-loaders from the run seed)

    def __init__(self) -> None:
        self.epoch, self.batch, self.seed = 0, 0, None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch, self.seed = int(state["epoch"]), int(state["batch"]), state.get("seed")

    def set_epoch(self, epoch: int) -> None:
        self.load_state_dict({"epoch": epoch, "batch": 0, "seed": None})

    def __iter__(self):
        if self.seed is None and self.DRAWS_SEED:
            self.seed = int(torch.empty((), dtype=torch.int64).random_().item())
        for batch in self._batches(self.epoch, self.batch, self.seed):
            self.batch += 1
            yield batch

    def _batches(self, epoch: int, batch: int, seed: int | None):
        raise NotImplementedError


class MapTrainLoader(TrainLoader):
    """Map-style datasets (concatenated), shuffled per epoch by a distributed sampler; every batch full."""

    def __init__(self, parts: list, batch_size: int, num_workers: int, rank: int, world: int, seed: int,
                 pin_memory: bool = False):
        super().__init__()
        self.parts = parts
        data = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        # drop_last everywhere: every rank runs the same number of steps and every batch is full
        self.sampler = ResumableSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.loader = DataLoader(data, batch_size=batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=num_workers, pin_memory=pin_memory, collate_fn=collate,
                                 generator=torch.Generator())

    def __len__(self) -> int:
        return self.sampler.num_samples // self.loader.batch_size

    def num_items(self) -> int:
        return len(self.loader.dataset)

    def _batches(self, epoch: int, batch: int, seed: int):
        for part in self.parts:
            part.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.sampler.start = batch * self.loader.batch_size
        self.loader.generator.manual_seed(seed)
        return iter(self.loader)


class StreamTrainLoader(TrainLoader):
    """A split streamed from shards (``ShardTrainDataset``): it plans equal batches per rank itself; a resumed epoch
    runs through the batches already trained on."""

    def __init__(self, dataset, batch_size: int, num_workers: int, rank: int, world: int, pin_memory: bool = False):
        super().__init__()
        self.dataset = dataset
        self.loader = dataset.make_loader(batch_size, num_workers, rank, world, pin_memory)
        self.loader.generator = torch.Generator()

    def __len__(self) -> int:
        return len(self.loader)

    def num_items(self) -> int:
        return self.dataset.num_items()

    def _batches(self, epoch: int, batch: int, seed: int):
        self.dataset.set_epoch(epoch)
        self.loader.generator.manual_seed(seed)
        it = iter(self.loader)
        for _ in range(batch):
            next(it)
        return it


def part_loader(parts: list, batch_size: int, num_workers: int, rank: int, world: int, seed: int,
                pin_memory: bool, what: str) -> TrainLoader:
    """One dataset's train splits: streamed from shards (alone), or map-style."""
    streamed = [p for p in parts if hasattr(p, "make_loader")]
    if not streamed:
        return MapTrainLoader(parts, batch_size, num_workers, rank, world, seed, pin_memory)
    if len(parts) > 1:
        raise ValueError(f"{what}: a train split streamed from shards cannot be combined with other train splits")
    return StreamTrainLoader(streamed[0], batch_size, num_workers, rank, world, pin_memory)


def mix_choices(weights: list[float], seed: int, epoch: int, n: int) -> np.ndarray:
    """The dataset index of each of the ``n`` batches of inner epoch ``epoch``."""
    p = np.asarray(weights, dtype=np.float64)
    return np.random.default_rng(derive_seed(seed, "mix", epoch)).choice(len(p), size=n, p=p / p.sum())


class MixedTrainLoader(TrainLoader):
    """Training datasets mixed by ratio (``run.train_dataset_ratios``), as LAVIS's MultiIterLoader does it: each
    batch comes whole from one dataset, drawn by weight. Unlike LAVIS, the draws are a function of (run.seed, inner
    epoch, step) and the same on every rank, so every rank trains on the same dataset at a step (their batches
    differ) and a resumed run continues with exactly the batches an uninterrupted one would have.

    Each dataset keeps its own position across inner epochs: dataset d has given ``c_d`` batches (the number of
    times it was drawn so far), so it is in its own epoch ``c_d // L_d`` at batch ``c_d % L_d``, where ``L_d`` is
    its batches per rank per epoch. Each is a ``TrainLoader`` whose seed derives from (run seed, dataset, its
    epoch), so opening one never draws from the global generator that dropout uses."""

    DRAWS_SEED = False

    def __init__(self, parts: dict[str, list], ratios: dict[str, float], batches_per_epoch: int, batch_size: int,
                 num_workers: int, rank: int, world: int, seed: int, pin_memory: bool = False):
        super().__init__()
        self.names = list(ratios)
        self.weights = [float(ratios[n]) for n in self.names]
        self.batches_per_epoch, self.run_seed = batches_per_epoch, seed
        self.loaders = {name: part_loader(parts[name], batch_size, num_workers, rank, world, seed, pin_memory,
                                          f"datasets.{name}") for name in self.names}
        for name, loader in self.loaders.items():
            if len(loader) == 0:
                raise ValueError(f"datasets.{name}: fewer train items than one batch of {batch_size} x {world} ranks")

    def __len__(self) -> int:
        return self.batches_per_epoch

    def num_items(self) -> int:
        return sum(loader.num_items() for loader in self.loaders.values())

    def choices(self, epoch: int) -> np.ndarray:
        return mix_choices(self.weights, self.run_seed, epoch, self.batches_per_epoch)

    def consumed(self, epoch: int, skip: int) -> list[int]:
        """Batches each dataset has given before batch ``skip`` of inner epoch ``epoch``."""
        counts = np.zeros(len(self.names), dtype=np.int64)
        for e in range(epoch):
            counts += np.bincount(self.choices(e), minlength=len(self.names))
        counts += np.bincount(self.choices(epoch)[:skip], minlength=len(self.names))
        return counts.tolist()

    def _open(self, d: int, consumed: int):
        """Dataset ``d``'s batches from its ``consumed``-th on (within its own epoch)."""
        name = self.names[d]
        loader = self.loaders[name]
        sub_epoch, pos = divmod(consumed, len(loader))
        loader.load_state_dict({"epoch": sub_epoch, "batch": pos, "seed": derive_seed(self.run_seed, name, sub_epoch)})
        return iter(loader)

    def _batches(self, epoch: int, batch: int, seed: None):
        choices = self.choices(epoch)
        consumed = self.consumed(epoch, batch)
        open_ = {}
        for i in range(batch, self.batches_per_epoch):
            d = int(choices[i])
            if d not in open_ or consumed[d] % len(self.loaders[self.names[d]]) == 0:
                open_[d] = self._open(d, consumed[d])
            out = next(open_[d])
            consumed[d] += 1
            out["dataset"] = self.names[d]
            yield out


def build_train_loader(parts: list, by_name: dict[str, list], ratios: dict | None,
                       iters_per_inner_epoch: int | None, batch_size: int, accum: int, num_workers: int, seed: int,
                       pin_memory: bool) -> TrainLoader:
    """The training loader of a run over ``parts`` (every train-split dataset, concatenated in this order); with
    ``ratios`` (LAVIS's MultiIterLoader) each batch comes from one dataset of ``by_name`` (name -> its train-split
    datasets), by weight, in inner epochs of ``iters_per_inner_epoch`` optimizer steps."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if ratios:
        return MixedTrainLoader(by_name, dict(ratios), iters_per_inner_epoch * accum, batch_size, num_workers, rank,
                                world, seed, pin_memory)
    if any(hasattr(p, "make_loader") for p in parts) and len(parts) > 1:
        raise ValueError("a train split streamed from shards cannot be combined with other train datasets")
    return part_loader(parts, batch_size, num_workers, rank, world, seed, pin_memory, "the train splits")
