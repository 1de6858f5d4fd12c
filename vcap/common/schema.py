"""The typed schema of a project's ``run`` and ``datasets.<name>`` sections. Defaults live here and nowhere else."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Dict, Literal, Optional

from omegaconf import DictConfig, OmegaConf

from vcap.common.validation import Fraction, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability

# keys of the model section that are not constructor arguments; strict_weights: {source key: bool}, see
# vcap.common.weights.STRICT_DEFAULTS
MODEL_RESERVED_KEYS = ("arch", "model_type", "checkpoint", "strict_weights")


@dataclass
class SCSTConfig:
    """``run.scst``: self-critical sequence training (task ``captioning_scst``)."""

    num_samples: PositiveInt = 5  # captions drawn per video
    sample_method: Literal["sample", "beam"] = "sample"  # multinomial sampling, or the top beams
    temperature: PositiveFloat = 1.0
    top_p: Probability = 1.0
    # leave-one-out mean, the mean of all K (seed 003's: the same gradient scaled by (K-1)/K), or the greedy reward
    baseline: Literal["mean_others", "mean", "greedy"] = "mean_others"
    length_normalize: bool = False  # divide each caption's log-probability by its length


@dataclass
class GenerateConfig:
    """``run.generate``: how captions are decoded, under LAVIS's names; the one home of decoding settings (evaluation,
    SCST's draws, checkpoints, ``vcap caption``). What ``max_len`` and ``min_len`` count is the model's convention:
    by default the new tokens (transformers' ``max_new_tokens`` / ``min_new_tokens``: ``max_len`` includes the end
    token, ``min_len`` tokens come before it); a BLIP-2 captioner under ``conventions: lavis`` counts as LAVIS did
    (see vcap/models/blip2/conventions.py); CLIPCap with a ``stop_token`` stops at that token after at most
    ``max_len`` tokens (its ``entry_length``)."""

    num_beams: PositiveInt = 3
    max_len: PositiveInt = 20
    min_len: NonNegativeInt = 1
    use_nucleus_sampling: bool = False  # sample from the top-p nucleus (one beam) instead of searching
    top_p: Probability = 0.9
    temperature: PositiveFloat = 1.0
    repetition_penalty: PositiveFloat = 1.0
    length_penalty: float = 1.0  # beam scores are divided by length ** length_penalty
    num_captions: PositiveInt = 1  # captions returned per video (the best beams, or independent samples)


@dataclass
class RunConfig:
    """Typed schema of the ``run`` section. Defaults live here and nowhere else."""

    task: str
    output_dir: str
    runner: str = "runner_base"
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"
    num_threads: Optional[PositiveInt] = None  # torch intra-op threads per process; default: cores / local world size
    # schedule
    max_epoch: PositiveInt = 1
    max_iters: Optional[PositiveInt] = None  # stop after this many optimizer steps (overrides max_epoch)
    batch_size_train: PositiveInt = 16
    batch_size_eval: PositiveInt = 32
    num_workers: NonNegativeInt = 0
    max_bad_sample_ratio: Fraction = 0.01  # stop once this share of loaded samples failed to decode
    trace_samples: bool = False  # write the keys of the training items each rank saw, per epoch
    lr_sched: str = "linear_warmup_cosine"
    init_lr: PositiveFloat = 1e-4
    min_lr: NonNegativeFloat = 0.0
    warmup_lr: NonNegativeFloat = 0.0
    warmup_steps: NonNegativeInt = 0
    warmup_ratio: Optional[Fraction] = None  # warm up for this share of all steps (replaces warmup_steps)
    weight_decay: NonNegativeFloat = 0.05
    beta2: Fraction = 0.999
    accum_grad_iters: PositiveInt = 1
    # several training datasets mixed by ratio (LAVIS's MultiIterLoader): each batch from one dataset drawn by
    # weight, e.g. {msrvtt_caption: 1, webvid_caption: 7}; an epoch is then iters_per_inner_epoch optimizer steps
    train_dataset_ratios: Optional[Dict[str, float]] = None
    iters_per_inner_epoch: Optional[PositiveInt] = None
    max_grad_norm: Optional[PositiveFloat] = 1.0
    amp: Literal["bf16", "fp16", "none"] = "bf16"  # used on GPU only
    cache_vit_features: bool = False  # keep a frozen ViT's outputs per clip (deterministic processors only)
    vit_cache_gb: PositiveFloat = 16.0  # per process; clips beyond it are encoded every time
    fsdp: bool = False  # shard parameters, gradients and optimizer state over the ranks (torch FSDP2) instead of DDP
    # evaluation
    train_splits: list = field(default_factory=lambda: ["train"])
    valid_splits: list = field(default_factory=lambda: ["val"])
    test_splits: list = field(default_factory=lambda: ["test"])
    val_freq: PositiveInt = 1
    monitor: Optional[str] = None  # e.g. CIDEr, t2v_R1; None: keep the last epoch
    monitor_mode: Literal["max", "min"] = "max"
    evaluate_only: bool = False
    # caption decoding: evaluation, SCST's draws, the checkpoint's inference settings
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    # retrieval evaluation: dual-softmax re-scoring temperature (None: plain similarities)
    dual_softmax: Optional[PositiveFloat] = None
    # self-critical sequence training (task captioning_scst)
    scst: SCSTConfig = field(default_factory=SCSTConfig)
    # checkpoints and resuming (see vcap/common/train_state.py)
    resume: Optional[str] = "auto"  # auto: continue from output_dir's latest checkpoint if any; null; or a step dir
    checkpoint_every_iters: Optional[PositiveInt] = None  # also save the training state every N optimizer steps
    keep_last: Optional[PositiveInt] = 2  # training-state checkpoints kept (null: all)
    max_nonfinite_steps: PositiveInt = 5  # non-finite losses are skipped; this many steps in a row stop the run
    # logging
    log_freq: PositiveInt = 10

    # keys that moved, with where they live now (LAVIS's run section has max_len, min_len and num_beams at the top)
    MOVED = {"num_beams": "generate.num_beams", "max_len": "generate.max_len", "min_len": "generate.min_len",
             "max_new_tokens": "generate.max_len", "min_new_tokens": "generate.min_len"}


@dataclass
class DatasetConfig:
    """Typed schema of a ``datasets.<name>`` section. Defaults live here and nowhere else: a dataset card gives
    ``build_info`` and the processors, and one of these only where its data need another value."""

    build_info: dict  # the builder's: annotations ({split: file or null}) and videos, or a generator's settings
    vis_processor: dict  # {train: ..., eval: ...}, each checked against its processor's arguments
    text_processor: dict
    type: str = "default"  # which of the builder's cards
    # all: one training item per caption; one: one item per video, its caption drawn each epoch
    train_captions: Literal["all", "one"] = "all"
    # files reads build_info.videos; webdataset streams the train split from the shards `vcap shard` or
    # video2dataset wrote (train_shards: their index.json or folder), for several nodes on shared storage
    train_storage: Literal["files", "webdataset"] = "files"
    train_shards: Optional[str] = None
    cache_decoded: bool = False  # keep decoded clips in memory: only for datasets that fit
    features: Optional[str] = None  # frozen-encoder features `vcap extract-features` wrote: used instead of video


DATASET_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DatasetConfig) if f.default is not dataclasses.MISSING}


def from_dict(schema, values: dict):
    hints = typing.get_type_hints(schema)
    return schema(**{k: from_dict(hints[k], v) if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict) else v
                     for k, v in values.items()})


def run_config(cfg: DictConfig) -> RunConfig:
    """The run section as a typed object with schema defaults filled in."""
    return from_dict(RunConfig, OmegaConf.to_container(cfg.run, resolve=True))
