"""Builders for the generated dataset (vcap/datasets/synthetic.py): generated on first use."""
from __future__ import annotations

from pathlib import Path

from vcap.common.registry import registry
from vcap.datasets.builders.base import BaseBuilder, RetrievalBuilderMixin
from vcap.datasets.datasets.base import CaptionEvalDataset
from vcap.datasets.synthetic import ATTRIBUTES, SyntheticSpec, attribute_accuracy, generate


class SyntheticCaptionEvalDataset(CaptionEvalDataset):
    """Adds, beside the caption metrics, how often each attribute (e.g. direction) is named right."""

    def extra_metrics(self, preds: dict[str, str]) -> dict[str, float]:
        return attribute_accuracy(preds, {r["video_id"]: r["attributes"] for r in self.records})


class _SyntheticBuilder(BaseBuilder):
    def spec(self) -> SyntheticSpec:
        return SyntheticSpec(**{k: v for k, v in self.config.build_info.items() if k != "storage"})

    def data_dir(self) -> Path:
        return Path(self.config.build_info.storage) / self.spec().key()

    def prepare(self) -> None:
        generate(self.spec(), self.data_dir())

    def annotation_path(self, split: str) -> Path:
        return self.data_dir() / "annotations" / f"{split}.json"

    def video_root(self) -> Path:
        return self.data_dir() / "videos"

    def splits(self) -> list[str]:
        return ["train", "val", "test"]


@registry.register_builder("synthetic_caption")
class SyntheticCaptionBuilder(_SyntheticBuilder):
    EXTRA_METRICS = tuple(f"attr_{a}" for a in ATTRIBUTES) + ("attr_direction_sign",)
    DATASET_CONFIG_DICT = {"default": "configs/datasets/synthetic/caption.yaml"}
    eval_dataset_cls = SyntheticCaptionEvalDataset


@registry.register_builder("synthetic_retrieval")
class SyntheticRetrievalBuilder(RetrievalBuilderMixin, _SyntheticBuilder):
    DATASET_CONFIG_DICT = {"default": "configs/datasets/synthetic/retrieval.yaml"}
