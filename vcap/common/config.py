"""Project configs: layering (model card < dataset card < project YAML < --options) and validation.

Every problem in a project (unknown keys, wrong types, unknown registry names) is collected and
raised at once as a ``ConfigError`` before any data, model or process group is touched.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import inspect
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

from vcap.common.registry import qualified_name, registry

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("imports", "model", "datasets", "run")
# Keys every model section may carry besides its constructor arguments.
# keys of the model section that are not constructor arguments; strict_weights: {source key: bool}, see
# vcap.common.weights.STRICT_DEFAULTS
MODEL_RESERVED_KEYS = ("arch", "model_type", "checkpoint", "strict_weights")


class ConfigError(ValueError):
    """One or more problems in a project config; the message lists all of them."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s){where}:\n{lines}")


def did_you_mean(name: str, valid) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


# ------------------------------------------------------------------------------------------------
# The run section schema
# ------------------------------------------------------------------------------------------------
@dataclass
class SCSTConfig:
    """``run.scst``: self-critical sequence training (task ``captioning_scst``)."""

    num_samples: int = 5  # captions drawn per video
    sample_method: Literal["sample", "beam"] = "sample"  # multinomial sampling, or the top beams
    temperature: float = 1.0
    top_p: float = 1.0
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

    num_beams: int = 3
    max_len: int = 20
    min_len: int = 1
    use_nucleus_sampling: bool = False  # sample from the top-p nucleus (one beam) instead of searching
    top_p: float = 0.9
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0  # beam scores are divided by length ** length_penalty
    num_captions: int = 1  # captions returned per video (the best beams, or independent samples)


@dataclass
class RunConfig:
    """Typed schema of the ``run`` section. Defaults live here and nowhere else."""

    task: str
    output_dir: str
    runner: str = "runner_base"
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"
    num_threads: Optional[int] = None  # torch intra-op threads per process; default: cores / local world size
    # schedule
    max_epoch: int = 1
    max_iters: Optional[int] = None  # stop after this many optimizer steps (overrides max_epoch)
    batch_size_train: int = 16
    batch_size_eval: int = 32
    num_workers: int = 0
    max_bad_sample_ratio: float = 0.01  # stop once this share of loaded samples failed to decode
    trace_samples: bool = False  # write the keys of the training items each rank saw, per epoch
    lr_sched: str = "linear_warmup_cosine"
    init_lr: float = 1e-4
    min_lr: float = 0.0
    warmup_lr: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: Optional[float] = None  # warm up for this share of all steps (replaces warmup_steps)
    weight_decay: float = 0.05
    beta2: float = 0.999
    accum_grad_iters: int = 1
    # several training datasets mixed by ratio (LAVIS's MultiIterLoader): each batch from one dataset drawn by
    # weight, e.g. {msrvtt_caption: 1, webvid_caption: 7}; an epoch is then iters_per_inner_epoch optimizer steps
    train_dataset_ratios: Optional[Dict[str, float]] = None
    iters_per_inner_epoch: Optional[int] = None
    max_grad_norm: Optional[float] = 1.0
    amp: Literal["bf16", "fp16", "none"] = "bf16"  # used on GPU only
    cache_vit_features: bool = False  # keep a frozen ViT's outputs per clip (deterministic processors only)
    vit_cache_gb: float = 16.0  # per process; clips beyond it are encoded every time
    fsdp: bool = False  # shard parameters, gradients and optimizer state over the ranks (torch FSDP2) instead of DDP
    # evaluation
    train_splits: list = field(default_factory=lambda: ["train"])
    valid_splits: list = field(default_factory=lambda: ["val"])
    test_splits: list = field(default_factory=lambda: ["test"])
    val_freq: int = 1
    monitor: Optional[str] = None  # e.g. CIDEr, t2v_R1; None: keep the last epoch
    monitor_mode: Literal["max", "min"] = "max"
    evaluate_only: bool = False
    # caption decoding: evaluation, SCST's draws, the checkpoint's inference settings
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    # retrieval evaluation: dual-softmax re-scoring temperature (None: plain similarities)
    dual_softmax: Optional[float] = None
    # self-critical sequence training (task captioning_scst)
    scst: SCSTConfig = field(default_factory=SCSTConfig)
    # checkpoints and resuming (see vcap/common/train_state.py)
    resume: Optional[str] = "auto"  # auto: continue from output_dir's latest checkpoint if any; null; or a step dir
    checkpoint_every_iters: Optional[int] = None  # also save the training state every N optimizer steps
    keep_last: Optional[int] = 2  # training-state checkpoints kept (null: all)
    max_nonfinite_steps: int = 5  # non-finite losses are skipped; this many steps in a row stop the run
    # logging
    log_freq: int = 10

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


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    return getattr(tp, "__name__", str(tp))


@functools.lru_cache(maxsize=None)
def _adapter(tp):
    from pydantic import TypeAdapter

    return TypeAdapter(tp)


def _check_type(value: Any, tp) -> bool:
    """``value`` is a ``tp`` as pydantic's strict mode sees it (no coercion: "8" is no int, 1 no bool)."""
    from pydantic import PydanticSchemaGenerationError, ValidationError

    try:
        _adapter(tp).validate_python(value, strict=True)
    except ValidationError:
        return False
    except PydanticSchemaGenerationError:  # a type pydantic does not know (a class of the user's): not checked
        pass
    return True


def validate_section(run: dict, schema=RunConfig, prefix: str = "run") -> list[str]:
    """Problems in a resolved section (``run``, a nested section of it, a dataset) against its dataclass, all
    of them."""
    problems = []
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key, value in run.items():
        if key not in fields and key in getattr(schema, "MOVED", {}):
            problems.append(f"{prefix}.{key}: moved to {prefix}.{schema.MOVED[key]} (value {value!r})")
        elif key not in fields:
            problems.append(f"{prefix}.{key}: unknown key (value {value!r}){did_you_mean(key, fields)}")
        elif dataclasses.is_dataclass(hints[key]):
            if isinstance(value, dict):
                problems.extend(validate_section(value, hints[key], f"{prefix}.{key}"))
            elif not isinstance(value, hints[key]):
                problems.append(f"{prefix}.{key}: got {value!r}, expected a mapping of {hints[key].__name__} keys")
        elif not _check_type(value, hints[key]):
            problems.append(f"{prefix}.{key}: got {value!r} ({type(value).__name__}), expected {_type_name(hints[key])}")
    for name, f in fields.items():
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in run:
            problems.append(f"{prefix}.{name}: required key is missing (expected {_type_name(hints[name])})")
    return problems


def _from_dict(schema, values: dict):
    hints = typing.get_type_hints(schema)
    return schema(**{k: _from_dict(hints[k], v) if dataclasses.is_dataclass(hints[k]) and isinstance(v, dict) else v
                     for k, v in values.items()})


def run_config(cfg: DictConfig) -> RunConfig:
    """The run section as a typed object with schema defaults filled in."""
    return _from_dict(RunConfig, OmegaConf.to_container(cfg.run, resolve=True))


# ------------------------------------------------------------------------------------------------
# Loading and layering
# ------------------------------------------------------------------------------------------------
def load_yaml(path: str | os.PathLike) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ConfigError([f"the top level must be a mapping, got {type(cfg).__name__}"], str(path))
    return cfg


def import_user_modules(modules, project: str | os.PathLike | None = None) -> None:
    """Import the modules a project lists under ``imports`` so their registrations take effect. They are
    looked for on sys.path, then in the current directory and the project file's folder (``train.py`` run
    by its path, or the ``vcap`` command, does not put either on sys.path)."""
    import sys

    for folder in (os.getcwd(), *([str(Path(project).resolve().parent)] if project else [])):
        if modules and folder not in sys.path:
            sys.path.append(folder)
    for name in modules or []:
        try:
            importlib.import_module(name)
        except ImportError as e:
            hint = ""
            if isinstance(e, ModuleNotFoundError) and e.name and name.split(".")[0] == e.name.split(".")[0]:
                hint = (f"; it is looked for on sys.path, in the current directory ({os.getcwd()}) and beside the "
                        f"project file: run from the folder that holds {name.split('.')[0]!r} or add that folder to "
                        f"PYTHONPATH")
            raise ConfigError([f"imports: cannot import module {name!r}: {e}{hint}"]) from e


def parse_options(options: list[str] | None) -> DictConfig:
    """``key=value`` overrides (LAVIS's --options). Values are parsed as YAML."""
    options = list(options or [])
    bad = [o for o in options if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError([f"--options {o!r}: expected key=value, e.g. run.max_epoch=2" for o in bad])
    return OmegaConf.from_dotlist(options)


def _card_path(cls, rel: str) -> Path:
    """A card path is relative to the vcap package, or to the file that defines ``cls`` (user models)."""
    for base in (PACKAGE_ROOT, Path(inspect.getfile(cls)).parent):
        if (base / rel).is_file():
            return base / rel
    raise ConfigError([f"{qualified_name(cls)} names the card {rel!r}, which is neither under {PACKAGE_ROOT} "
                       f"nor beside {inspect.getfile(cls)}"])


def _model_card(cls, arch: str, model_type: str | None) -> tuple[str, DictConfig]:
    """(model type in effect, its card). A model without cards needs no type: its constructor is its config."""
    cards = getattr(cls, "PRETRAINED_MODEL_CONFIG_DICT", {})
    if model_type is None and not cards:
        return "default", OmegaConf.create({})
    model_type = model_type or getattr(cls, "DEFAULT_MODEL_TYPE", "default")
    if model_type not in cards:
        if not cards:
            raise ConfigError([f"model.model_type: {model_type!r}, but {arch!r} has no model-type cards "
                               f"(PRETRAINED_MODEL_CONFIG_DICT is empty): drop model_type and give the constructor's "
                               f"arguments in the model section"])
        raise ConfigError(
            [f"model.model_type: {model_type!r} is not a model type of {arch!r}; "
             f"expected one of {sorted(cards)}{did_you_mean(model_type, cards)}"]
        )
    card = load_yaml(_card_path(cls, cards[model_type]))
    return model_type, card.get("model", card)


def _dataset_card(name: str, card_type: str) -> DictConfig:
    cls = registry.get_builder_class(name)
    cards = getattr(cls, "DATASET_CONFIG_DICT", {})
    if card_type not in cards:
        raise ConfigError(
            [f"datasets.{name}.type: {card_type!r} is not a card of {name!r}; expected one of {sorted(cards)}"]
        )
    return load_yaml(_card_path(cls, cards[card_type]))


def _unknown_keys(section: DictConfig, valid: DictConfig, prefix: str) -> list[str]:
    """Keys present in ``section`` but absent in ``valid`` (recursively over mappings)."""
    problems = []
    for key in section:
        if key not in valid:
            problems.append(f"{prefix}.{key}: unknown key{did_you_mean(key, list(valid))}")
        elif isinstance(section[key], DictConfig) and isinstance(valid[key], DictConfig) and len(valid[key]) > 0:
            problems.extend(_unknown_keys(section[key], valid[key], f"{prefix}.{key}"))
    return problems


PROCESSOR_KEYS = ("vis_processor", "text_processor")


def _check_dataset(section: DictConfig, card: DictConfig, merged: DictConfig, prefix: str) -> list[str]:
    """The merged section against ``DatasetConfig``; ``build_info`` against the card's keys; processor sections
    against their processor's arguments."""
    from vcap.processors.base import check_processor_section  # processors import this module

    try:
        problems = validate_section(OmegaConf.to_container(merged, resolve=True), DatasetConfig, prefix)
    except Exception as e:  # an interpolation that does not resolve
        return [f"{prefix}: cannot resolve interpolations: {e}"]
    if isinstance(section.get("build_info"), DictConfig) and isinstance(card.get("build_info"), DictConfig):
        problems += _unknown_keys(section.build_info, card.build_info, f"{prefix}.build_info")
    for key in PROCESSOR_KEYS:
        for split, proc in (merged.get(key) or {}).items():
            if split not in ("train", "eval"):
                problems.append(f"{prefix}.{key}.{split}: expected 'train' or 'eval'"
                                f"{did_you_mean(split, ['train', 'eval'])}")
            else:
                problems.extend(check_processor_section(proc, f"{prefix}.{key}.{split}"))
    return problems


def _drop_replaced_processors(card: DictConfig, section: DictConfig) -> DictConfig:
    """A project that names another processor class replaces the card's processor instead of merging
    into it (the card's keys belong to the class it named)."""
    card = card.copy()
    for kind in ("vis_processor", "text_processor"):
        for split, proc in (section.get(kind) or {}).items():
            old = (card.get(kind) or {}).get(split)
            if old is not None and proc is not None and "name" in proc and proc.name != old.get("name"):
                del card[kind][split]
    return card


def build_config(project: DictConfig | str | os.PathLike, options: list[str] | None = None) -> DictConfig:
    """Merge cards, project and overrides into one validated config.

    Layering: model card < dataset card < project YAML < ``options``. Raises ``ConfigError``
    listing every problem found.
    """
    source = None
    if not isinstance(project, DictConfig):
        source = str(project)
        project = load_yaml(project)
    user = OmegaConf.merge(project, parse_options(options))
    problems = [f"{k}: unknown top-level section{did_you_mean(k, SECTIONS)}" for k in user if k not in SECTIONS]

    import_user_modules(user.get("imports"), source)
    import vcap  # noqa: F401  (registers the built-in classes)

    merged = OmegaConf.create({"imports": list(user.get("imports") or [])})

    # model: the model-type card under the project's section
    model = user.get("model")
    if model is None or "arch" not in model:
        problems.append("model.arch: required key is missing (e.g. blip2_opt, clip4clip)")
    else:
        try:
            model_cls = registry.get_model_class(model.arch)
            model_type, card = _model_card(model_cls, model.arch, model.get("model_type"))
            # constructor defaults are filled in, so the saved config shows every value in effect
            defaults = signature_defaults(model_cls.__init__)
            merged.model = OmegaConf.merge(defaults, card, model, {"model_type": model_type})
            valid = set(MODEL_RESERVED_KEYS) | set(model_cls.config_keys())
            for key in merged.model:
                if key not in valid:
                    problems.append(f"model.{key}: unknown key for {model.arch!r} (value {merged.model[key]!r})"
                                    f"{did_you_mean(key, valid)}")
            problems.extend(check_arguments(model_cls.__init__, OmegaConf.to_container(merged.model, resolve=True),
                                            "model", skip=MODEL_RESERVED_KEYS))
            resolve = getattr(model_cls, "resolve_config", None)
            if resolve is not None and not problems:  # values the model decides from others (shown as resolved)
                problems.extend(resolve(merged.model))
        except (KeyError, ConfigError) as e:
            problems.extend(e.problems if isinstance(e, ConfigError) else [f"model.arch: {e.args[0]}"])

    # datasets: each builder's card under the project's section
    merged.datasets = {}
    datasets = user.get("datasets")
    if not datasets:
        problems.append("datasets: at least one dataset is required")
    else:
        for name, section in datasets.items():
            section = section or OmegaConf.create({})
            try:
                card = _dataset_card(name, section.get("type", "default"))
                card = _drop_replaced_processors(card, section)
                merged.datasets[name] = OmegaConf.merge(DATASET_DEFAULTS, card, section)
                problems.extend(_check_dataset(section, card, merged.datasets[name], f"datasets.{name}"))
            except (KeyError, ConfigError) as e:
                problems.extend(e.problems if isinstance(e, ConfigError) else [f"datasets.{name}: {e.args[0]}"])

    if "model" in merged and not problems:
        problems.extend(_fit_image_sizes(merged, user))
        problems.extend(_raw_frames(merged))

    # run: typed schema
    merged.run = user.get("run") or {}
    try:
        run = OmegaConf.to_container(merged.run, resolve=True)
    except Exception as e:  # an interpolation that does not resolve
        problems.append(f"run: cannot resolve interpolations: {e}")
        run = None
    if run is not None:
        problems.extend(validate_section(run))
        if not problems:
            for key in ("task", "runner", "lr_sched"):
                kind = {"lr_sched": "lr_scheduler"}.get(key, key)
                try:
                    registry.get(kind, run.get(key, getattr(RunConfig, key, None)))
                except KeyError as e:
                    problems.append(f"run.{key}: {e.args[0]}")
        if not problems and "monitor" not in run:  # the task's own metric selects the best checkpoint
            run["monitor"] = getattr(registry.get_task_class(run["task"]), "DEFAULT_MONITOR", None)
            merged.run.monitor = run["monitor"]
        if not problems and run.get("iters_per_inner_epoch") is not None and run.get("train_dataset_ratios") is None:
            # LAVIS's runner_iter over one dataset: inner epochs of that dataset alone, as a mix of one
            splits = run.get("train_splits", ["train"])
            training = [n for n, d in merged.datasets.items() if _has_train_split(n, d, splits)]
            if len(training) == 1:
                run["train_dataset_ratios"] = {training[0]: 1}
                merged.run.train_dataset_ratios = {training[0]: 1}
        if not problems:
            problems.extend(_check_mixing(run, merged.datasets))
            problems.extend(_check_before_work(run, merged))
        if not problems:
            merged.run = OmegaConf.merge(OmegaConf.structured(_from_dict(RunConfig, run)), merged.run)

    if problems:
        raise ConfigError(problems, source)
    return merged


def model_image_size(model: DictConfig) -> tuple[int | None, str]:
    """(the frame size the model's vision tower takes, the key that says so), or (None, "") when only its weights
    know (a hub id). Read from the vision config in the model section (transformers' default 224 when it names
    none), a CLIP ResNet's spec, or the config.json of a pretrained directory, as timm's pretrained cfg."""
    import json

    for key in ("blip2_config", "clip_config", "xclip_config"):
        section = model.get(key)
        if section is not None:
            if "vision_config" in section:  # a BLIP-2 / CLIP / X-CLIP config
                return int((section.vision_config or {}).get("image_size", 224)), f"model.{key}.vision_config.image_size"
            return int(section.get("image_size", 224)), f"model.{key}.image_size"  # a vision config (CLIPCap)
    resnet = model.get("clip_resnet")
    if resnet is not None:
        from vcap.models.clip_resnet import OPENAI_RESNETS

        size = OPENAI_RESNETS.get(resnet, {}).get("image_size") if isinstance(resnet, str) else resnet.get("image_size")
        return (int(size), "model.clip_resnet") if size else (None, "")
    for key in ("pretrained", "clip_pretrained"):
        spec = model.get(key)
        path = Path(str(spec)) / "config.json" if spec else None
        if path is not None and path.is_file():
            cfg = json.loads(path.read_text())
            size = (cfg.get("vision_config") or {}).get("image_size", cfg.get("image_size"))
            if size:
                return int(size), f"model.{key} ({path})"
    return None, ""


def _raw_frames(merged: DictConfig) -> list[str]:
    """A model whose own processor normalises (``RAW_FRAMES``) gets uint8 frames: the processors' ``normalize``
    is turned off, and a project that turns it on is told why it cannot."""
    if not getattr(registry.get_model_class(merged.model.arch), "RAW_FRAMES", False):
        return []
    problems = []
    for name, section in merged.datasets.items():
        for split, proc in (section.get("vis_processor") or {}).items():
            if proc is not None and proc.get("normalize") is True:
                problems.append(f"datasets.{name}.vis_processor.{split}.normalize: true, but {merged.model.arch} "
                                f"normalises frames with its own processor; expected false (or unset)")
            elif proc is not None:
                proc.normalize = False
    return problems


def _fit_image_sizes(merged: DictConfig, user: DictConfig) -> list[str]:
    """Each dataset's processors take the model's frame size unless the project sets one; a size the project
    sets that the model cannot take is an error naming both keys."""
    size, source = model_image_size(merged.model)
    if size is None:
        return []
    problems = []
    for name, section in merged.datasets.items():
        given = ((user.get("datasets") or {}).get(name) or {}).get("vis_processor") or {}
        for split, proc in (section.get("vis_processor") or {}).items():
            if proc is None or "image_size" not in proc:
                continue
            if "image_size" not in (given.get(split) or {}):
                proc.image_size = size  # as timm's pretrained cfg: the model's input size unless overridden
            elif proc.image_size != size:
                problems.append(f"datasets.{name}.vis_processor.{split}.image_size: {proc.image_size}, but the model "
                                f"takes {size} px frames ({source}); set it to {size} or leave it out to follow "
                                f"the model")
    return problems


def _has_train_split(name: str, section: DictConfig, splits: list) -> bool:
    """Whether the dataset's builder has one of ``splits`` (the builder decides, as it will when the run builds it)."""
    return bool(set(splits) & set(registry.get_builder_class(name)(section, name).splits()))


def _check_before_work(run: dict, cfg: DictConfig) -> list[str]:
    """What the runner would otherwise find only once it runs: a monitor no evaluation reports, shards without
    their index, a ViT feature cache that cannot work."""
    problems = []
    task = registry.get_task_class(run["task"])
    if run.get("monitor") and hasattr(task, "METRICS"):
        known = list(task.METRICS) + [m for name in cfg.datasets for m in registry.get_builder_class(name).EXTRA_METRICS]
        if run["monitor"] not in known:
            problems.append(f"run.monitor: {run['monitor']!r} is not a metric the {run['task']} task reports; expected "
                            f"one of {known} (or null: keep the last epoch){did_you_mean(run['monitor'], known)}")
    for name, section in cfg.datasets.items():
        if section.train_storage == "webdataset" and not section.train_shards:
            problems.append(f"datasets.{name}.train_shards: not set, but train_storage is 'webdataset'; expected the "
                            f"index.json `vcap shard` wrote or video2dataset's folder")
    if run.get("cache_vit_features"):
        problems.extend(_check_vit_cache(run, cfg))
    return problems


def _check_vit_cache(run: dict, cfg: DictConfig) -> list[str]:
    """``run.cache_vit_features`` only where cached ViT outputs are right and get reused."""
    from vcap.processors import build_processor

    model_cls = registry.get_model_class(cfg.model.arch)
    if not hasattr(model_cls, "enable_vit_cache"):
        return [f"run.cache_vit_features: model.arch {cfg.model.arch!r} has no ViT feature cache (BLIP-2 captioners "
                f"have one; CLIP-feature models use `vcap extract-features` instead)"]
    problems = []
    if run.get("fsdp"):
        problems.append("run.cache_vit_features cannot be combined with run.fsdp: a sharded ViT must run its forward "
                        "on every rank together, and cache hits differ per rank")
    if cfg.model.get("freeze_vit") is False:
        problems.append("run.cache_vit_features needs a frozen ViT (model.freeze_vit: true): a ViT that trains gives "
                        "new outputs every step")
    if run.get("evaluate_only"):
        return problems
    for name, section in cfg.datasets.items():
        proc = section.vis_processor.get("train")
        if proc is None or "train" not in run.get("train_splits", ["train"]):
            continue
        built = build_processor(proc)
        if not getattr(built, "deterministic", True):
            problems.append(
                f"run.cache_vit_features: datasets.{name}.vis_processor.train is {proc.name} with sampling "
                f"{built.sampling!r}{' and a random crop' if getattr(built, 'augments', False) else ''}: its clips "
                f"change every epoch, so cached ViT outputs would never be reused. Use the video_eval processor with "
                f"uniform (or fps) sampling for training, or turn the cache off")
    return problems


def _check_mixing(run: dict, datasets: DictConfig) -> list[str]:
    """run.train_dataset_ratios against the datasets: every weight names a dataset with a train split and is
    positive, every dataset with a train split has one, and an inner epoch length is given."""
    ratios, iters = run.get("train_dataset_ratios"), run.get("iters_per_inner_epoch")
    if ratios is None:
        return ["run.iters_per_inner_epoch: set without run.train_dataset_ratios, and several datasets train (an "
                "inner epoch is a stretch of steps over datasets mixed by ratio: give each a weight)"] if iters else []
    splits = run.get("train_splits", ["train"])
    training = [n for n, d in datasets.items() if _has_train_split(n, d, splits)]
    problems = [] if ratios else ["run.train_dataset_ratios: empty; give each training dataset a weight"]
    for name, weight in ratios.items():
        if name not in datasets:
            problems.append(f"run.train_dataset_ratios.{name}: no such dataset in this project (datasets: "
                            f"{sorted(datasets)}){did_you_mean(name, list(datasets))}")
        elif name not in training:
            problems.append(f"run.train_dataset_ratios.{name}: datasets.{name} has no train split ({splits}) to draw from")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            problems.append(f"run.train_dataset_ratios.{name}: got {weight!r}, expected a positive number")
    problems += [f"run.train_dataset_ratios: datasets.{n} has a train split but no weight" for n in training
                 if n not in ratios]
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 1:
        problems.append(f"run.iters_per_inner_epoch: got {iters!r}; with run.train_dataset_ratios an epoch is this many "
                        f"optimizer steps (LAVIS's runner_iter), a positive integer")
    return problems


_ABS = re.compile(r"^(/|[A-Za-z]:\\)")


def absolute_paths(cfg: DictConfig | ListConfig, prefix: str = "") -> list[str]:
    """Keys whose literal (unresolved) value is an absolute path."""
    found = []
    items = cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else enumerate(cfg)
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (DictConfig, ListConfig)):
            found.extend(absolute_paths(value, path))
        elif isinstance(value, str) and _ABS.match(value):
            found.append(f"{path}={value!r}")
    return found


def check_arguments(fn, values: dict, prefix: str, skip=()) -> list[str]:
    """Problems of ``values`` against ``fn``'s annotated keyword parameters (``Literal`` choices, numbers,
    strings, lists, mappings, unions of them, checked by pydantic): the same all-at-once report as the run
    section's."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001  (an annotation that does not evaluate: names are still checked)
        return []
    problems = []
    for key, value in values.items():
        if key in skip or key not in hints or key == "return":
            continue
        if not _check_type(value, hints[key]):
            problems.append(f"{prefix}.{key}: got {value!r}, expected {_type_name(hints[key])}")
    return problems


def signature_keys(fn) -> list[str]:
    """Names of the keyword parameters of ``fn`` (for validating a model section)."""
    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def signature_defaults(fn) -> dict:
    """Keyword defaults of ``fn`` that a YAML config can hold (for showing the effective config)."""
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name != "self" and p.default is not p.empty:
            if p.default is None or isinstance(p.default, (bool, int, float, str, list, tuple, dict)):
                out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out
