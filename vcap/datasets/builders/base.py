"""Dataset builders: a dataset card (YAML) + the project's overrides -> processors and split datasets."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from vcap.common import dist
from vcap.datasets.datasets.base import CaptionEvalDataset, CaptionTrainDataset, RetrievalEvalDataset, load_annotations
from vcap.datasets.features import FeatureStore
from vcap.datasets.shards import ShardTrainDataset
from vcap.processors import build_processor

log = logging.getLogger(__name__)


class BaseBuilder:
    """Reads ``build_info.annotations.<split>`` (vcap annotation JSON) and ``build_info.videos``."""

    DATASET_CONFIG_DICT: dict[str, str] = {}
    CONVERTER: str | None = None  # the `vcap prepare` converter that writes this builder's annotation files
    EXTRA_METRICS: tuple[str, ...] = ()  # metrics its evaluation datasets add (``extra_metrics``)
    train_dataset_cls = CaptionTrainDataset
    eval_dataset_cls = CaptionEvalDataset

    def __init__(self, cfg: DictConfig, name: str = ""):
        self.config, self.name = cfg, name

    @classmethod
    def check_config(cls, section: DictConfig, prefix: str) -> list[str]:
        """The merged dataset section's problems that only this builder knows (asked by build_config)."""
        if section.train_storage == "webdataset" and not section.train_shards:
            return [f"{prefix}.train_shards: not set, but train_storage is 'webdataset'; expected the index.json "
                    f"`vcap shard` wrote or video2dataset's folder"]
        return []

    def prepare(self) -> None:
        """Make the data available on disk; runs on rank 0 only, before the others read it."""

    def annotation_path(self, split: str) -> Path:
        return Path(self.config.build_info.annotations[split])

    def video_root(self) -> Path:
        return Path(self.config.build_info.videos)

    def splits(self) -> list[str]:
        """The splits with an annotation file (null turns a split of the card off); train also when it is
        streamed from shards."""
        out = [k for k, v in self.config.build_info.annotations.items() if v]
        streamed = self.config.train_storage == "webdataset" and self.config.train_shards
        return out + ["train"] if streamed and "train" not in out else out

    def build_datasets(self, seed: int = 0) -> dict:
        if dist.is_main_process():
            self.prepare()
        dist.barrier()
        vis = {k: build_processor(self.config.vis_processor.get(k)) for k in ("train", "eval")}
        txt = {k: build_processor(self.config.text_processor.get(k)) for k in ("train", "eval")}
        out = {}
        cache = self.config.cache_decoded
        features = None
        if self.config.features:
            features = FeatureStore(self.config.features)
        for split in self.splits():
            if split == "train" and self.config.train_storage == "webdataset":
                out[split] = self.shard_dataset(vis["train"], txt["train"], seed)
                continue
            records = self.load_split(split)
            if features is None:
                records = self.check_videos(split, records)
            if split == "train":
                out[split] = self.train_dataset_cls(records, self.video_root(), vis["train"], txt["train"], seed=seed,
                                                    cache_decoded=cache, features=features,
                                                    captions=self.config.train_captions)
            else:
                out[split] = self.eval_dataset_cls(records, self.video_root(), vis["eval"], txt["eval"], seed=seed,
                                                   cache_decoded=cache, features=features)
        return out

    def missing_videos(self, records: list[dict]) -> list[dict]:
        """The records whose video file is not under the video root."""
        root = self.video_root()
        return [r for r in records if not (root / r["video"]).is_file()]

    def check_videos(self, split: str, records: list[dict]) -> list[dict]:
        """Videos that do not exist are found here, when the dataset is built, not an epoch later: left out of
        training; kept in evaluation, where they are reported and left out of the metrics."""
        root = self.video_root()
        missing = self.missing_videos(records)
        if not missing:
            return records
        shown = ", ".join(str(root / r["video"]) for r in missing[:3])
        if split == "train":
            log.warning("datasets.%s %s: %d of %d videos do not exist and are left out (e.g. %s)", self.name, split,
                        len(missing), len(records), shown)
            gone = {id(r) for r in missing}
            kept = [r for r in records if id(r) not in gone]
            if not kept:
                raise FileNotFoundError(f"datasets.{self.name} {split}: none of its {len(records)} videos exists under "
                                        f"{root} (build_info.videos), e.g. {shown}")
            return kept
        log.warning("datasets.%s %s: %d of %d videos do not exist (e.g. %s); evaluation reports them and leaves "
                    "them out of the metrics", self.name, split, len(missing), len(records), shown)
        return records

    def load_split(self, split: str) -> list[dict]:
        """The split's records; a missing file is named with the key that sets it."""
        path = self.annotation_path(split)
        if not path.is_file():
            key = f"datasets.{self.name}.build_info.annotations.{split}"
            how = (f"`vcap prepare {self.CONVERTER}` writes it, or set {key}" if self.CONVERTER else
                   "set it to your CSV / JSON / JSONL of video, caption (or captions) rows, or to null to leave the "
                   "split out")
            raise FileNotFoundError(f"{key}: {path} does not exist; {how}")
        return load_annotations(path)

    def shard_dataset(self, vis, txt, seed: int):
        return ShardTrainDataset(self.config.train_shards, vis, txt, seed=seed, captions=self.config.train_captions)


class RetrievalBuilderMixin:
    eval_dataset_cls = RetrievalEvalDataset
