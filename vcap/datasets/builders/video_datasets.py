"""Builders of the public datasets (MSR-VTT, MSVD, VATEX, COCO) and of the user's own data.

Each reads vcap annotations (written by ``vcap prepare <dataset>``) named in its card; the
custom builders read a CSV, JSON or JSONL of ``{video, caption or captions, [start, end]}``
directly. See vcap/configs/datasets/<name>/ for the cards.
"""
from __future__ import annotations

from vcap.common.registry import registry
from vcap.datasets.builders.base import BaseBuilder, RetrievalBuilderMixin


@registry.register_builder("msrvtt_caption")
class MSRVTTCaptionBuilder(BaseBuilder):
    CONVERTER = "msrvtt"  # `vcap prepare msrvtt` writes its annotation files
    DATASET_CONFIG_DICT = {"default": "configs/datasets/msrvtt/caption.yaml"}


@registry.register_builder("msrvtt_retrieval")
class MSRVTTRetrievalBuilder(RetrievalBuilderMixin, BaseBuilder):
    CONVERTER = "msrvtt"  # `vcap prepare msrvtt` writes its annotation files
    DATASET_CONFIG_DICT = {"default": "configs/datasets/msrvtt/retrieval_9k.yaml",
                           "7k": "configs/datasets/msrvtt/retrieval_7k.yaml"}


@registry.register_builder("msvd_caption")
class MSVDCaptionBuilder(BaseBuilder):
    CONVERTER = "msvd"  # `vcap prepare msvd` writes its annotation files
    DATASET_CONFIG_DICT = {"default": "configs/datasets/msvd/caption.yaml"}


@registry.register_builder("msvd_retrieval")
class MSVDRetrievalBuilder(RetrievalBuilderMixin, BaseBuilder):
    CONVERTER = "msvd"  # `vcap prepare msvd` writes its annotation files
    DATASET_CONFIG_DICT = {"default": "configs/datasets/msvd/retrieval.yaml"}


@registry.register_builder("vatex_caption")
class VATEXCaptionBuilder(BaseBuilder):
    CONVERTER = "vatex"  # `vcap prepare vatex` writes its annotation files
    DATASET_CONFIG_DICT = {"default": "configs/datasets/vatex/caption.yaml"}


@registry.register_builder("coco_caption")
class COCOCaptionBuilder(BaseBuilder):
    """Images as one-frame videos (Karpathy split), so every video model runs on them."""

    CONVERTER = "coco"  # `vcap prepare coco` writes its annotation files
    DATASET_CONFIG_DICT = {"default": "configs/datasets/coco/caption.yaml"}


@registry.register_builder("custom_caption")
class CustomCaptionBuilder(BaseBuilder):
    DATASET_CONFIG_DICT = {"default": "configs/datasets/custom/caption.yaml"}


@registry.register_builder("custom_retrieval")
class CustomRetrievalBuilder(RetrievalBuilderMixin, BaseBuilder):
    DATASET_CONFIG_DICT = {"default": "configs/datasets/custom/retrieval.yaml"}


@registry.register_builder("webvid_caption")
class WebVidCaptionBuilder(BaseBuilder):
    """WebVid-2M / 10M and other web video sets: video2dataset's WebDataset shards (``train_storage: webdataset``,
    ``train_shards``: their folder), or vcap annotations that `vcap prepare webvid` wrote from WebVid's CSV or
    a LAVIS JSON (seed 003's webvid2m_synthetic_msrvtt.json), or such a CSV / JSON named directly."""

    CONVERTER = "webvid"  # `vcap prepare webvid` writes its annotation files
    DATASET_CONFIG_DICT = {"default": "configs/datasets/webvid/caption.yaml"}
