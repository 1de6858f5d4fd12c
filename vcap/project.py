"""A project's one config: cards, project YAML and ``--options`` merged (model card < dataset card < project <
options) and checked before any data, model or process group is touched. Every problem is collected and raised at
once as a ``ConfigError``. The checks that involve a component are the component's own, asked here: a model's
``input_size`` / ``check_processors`` / ``check_run``, a builder's ``check_config``, splits and metrics, a task's
``METRICS`` and ``DEFAULT_MONITOR``, a processor's arguments."""
from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from vcap.common.config import card_path, import_user_modules, load_yaml, parse_options
from vcap.common.registry import registry
from vcap.common.schema import DATASET_DEFAULTS, MODEL_RESERVED_KEYS, DatasetConfig, RunConfig, from_dict
from vcap.common.validation import ConfigError, check_arguments, did_you_mean, signature_defaults, validate_section
from vcap.processors.base import check_processor_section

SECTIONS = ("imports", "model", "datasets", "run")
PROCESSOR_KEYS = ("vis_processor", "text_processor")


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
    card = load_yaml(card_path(cls, cards[model_type]))
    return model_type, card.get("model", card)


def _dataset_card(name: str, card_type: str) -> DictConfig:
    cls = registry.get_builder_class(name)
    cards = getattr(cls, "DATASET_CONFIG_DICT", {})
    if card_type not in cards:
        raise ConfigError(
            [f"datasets.{name}.type: {card_type!r} is not a card of {name!r}; expected one of {sorted(cards)}"]
        )
    return load_yaml(card_path(cls, cards[card_type]))


def _unknown_keys(section: DictConfig, valid: DictConfig, prefix: str) -> list[str]:
    """Keys present in ``section`` but absent in ``valid`` (recursively over mappings)."""
    problems = []
    for key in section:
        if key not in valid:
            problems.append(f"{prefix}.{key}: unknown key{did_you_mean(key, list(valid))}")
        elif isinstance(section[key], DictConfig) and isinstance(valid[key], DictConfig) and len(valid[key]) > 0:
            problems.extend(_unknown_keys(section[key], valid[key], f"{prefix}.{key}"))
    return problems


def _check_dataset(section: DictConfig, card: DictConfig, merged: DictConfig, prefix: str) -> list[str]:
    """The merged section against ``DatasetConfig``; ``build_info`` against the card's keys; processor sections
    against their processor's arguments."""
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
        problems.extend(registry.get_model_class(merged.model.arch).check_processors(merged))

    # run: typed schema
    merged.run = user.get("run") or {}
    try:
        run = OmegaConf.to_container(merged.run, resolve=True)
    except Exception as e:  # an interpolation that does not resolve
        problems.append(f"run: cannot resolve interpolations: {e}")
        run = None
    if run is not None:
        problems.extend(validate_section(run, RunConfig, "run"))
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
            splits = from_dict(RunConfig, run).train_splits
            training = [n for n, d in merged.datasets.items() if _has_train_split(n, d, splits)]
            if len(training) == 1:
                run["train_dataset_ratios"] = {training[0]: 1}
                merged.run.train_dataset_ratios = {training[0]: 1}
        if not problems:
            problems.extend(_check_mixing(run, merged.datasets))
            problems.extend(_check_before_work(run, merged))
        if not problems:
            merged.run = OmegaConf.merge(OmegaConf.structured(from_dict(RunConfig, run)), merged.run)

    if problems:
        raise ConfigError(problems, source)
    return merged


def _fit_image_sizes(merged: DictConfig, user: DictConfig) -> list[str]:
    """Each dataset's processors take the model's frame size unless the project sets one; a size the project
    sets that the model cannot take is an error naming both keys."""
    size, source = registry.get_model_class(merged.model.arch).input_size(merged.model)
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
    typed = from_dict(RunConfig, run)
    for name, section in cfg.datasets.items():
        problems.extend(registry.get_builder_class(name).check_config(section, f"datasets.{name}"))
    problems.extend(registry.get_model_class(cfg.model.arch).check_run(cfg, typed))
    return problems


def _check_mixing(run: dict, datasets: DictConfig) -> list[str]:
    """run.train_dataset_ratios against the datasets: every weight names a dataset with a train split and is
    positive, every dataset with a train split has one, and an inner epoch length is given."""
    ratios, iters = run.get("train_dataset_ratios"), run.get("iters_per_inner_epoch")
    if ratios is None:
        return ["run.iters_per_inner_epoch: set without run.train_dataset_ratios, and several datasets train (an "
                "inner epoch is a stretch of steps over datasets mixed by ratio: give each a weight)"] if iters else []
    splits = from_dict(RunConfig, run).train_splits
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


