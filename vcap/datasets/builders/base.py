"""Dataset builders: a dataset card (YAML) + the project's overrides -> processors and split datasets."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from vcap.common import dist
from vcap.datasets.datasets.base import (CaptionEvalDataset, CaptionTrainDataset, RetrievalEvalDataset,
                                         load_annotations)
from vcap.processors import build_processor


class BaseBuilder:
    """Reads ``build_info.annotations.<split>`` (vcap annotation JSON) and ``build_info.videos``."""

    DATASET_CONFIG_DICT: dict[str, str] = {}
    train_dataset_cls = CaptionTrainDataset
    eval_dataset_cls = CaptionEvalDataset

    def __init__(self, cfg: DictConfig, name: str = ""):
        self.config, self.name = cfg, name

    def prepare(self) -> None:
        """Make the data available on disk; runs on rank 0 only, before the others read it."""

    def annotation_path(self, split: str) -> Path:
        return Path(self.config.build_info.annotations[split])

    def video_root(self) -> Path:
        return Path(self.config.build_info.videos)

    def splits(self) -> list[str]:
        return list(self.config.build_info.annotations)

    def build_datasets(self, seed: int = 0) -> dict:
        if dist.is_main_process():
            self.prepare()
        dist.barrier()
        vis = {k: build_processor(self.config.vis_processor.get(k)) for k in ("train", "eval")}
        txt = {k: build_processor(self.config.text_processor.get(k)) for k in ("train", "eval")}
        out = {}
        for split in self.splits():
            records = load_annotations(self.annotation_path(split))
            kind = "train" if split == "train" else "eval"
            cls = self.train_dataset_cls if kind == "train" else self.eval_dataset_cls
            out[split] = cls(records, self.video_root(), vis[kind], txt[kind], seed=seed,
                             cache_decoded=bool(self.config.get("cache_decoded", False)))
        return out


class RetrievalBuilderMixin:
    eval_dataset_cls = RetrievalEvalDataset
