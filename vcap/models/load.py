"""``load_model_and_preprocess``: a model and its frame and caption processors in one call, as LAVIS
users know it (``from vcap import load_model_and_preprocess``)."""
from __future__ import annotations

import tempfile

from omegaconf import OmegaConf


def checkpoint_file(path) -> "Path":  # noqa: F821
    """A checkpoint file, or a run's checkpoint directory (its best.safetensors, else last.safetensors)."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: no best.safetensors or last.safetensors in it")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    return path


def checkpoint_config(path) -> dict:
    """What a vcap checkpoint stores to rebuild its model: ``{"model", "task", "vis_processor",
    "text_processor", "generation"}``."""
    import json

    from vcap.common.checkpoint import read_metadata

    meta = read_metadata(path)
    if "vcap_config" not in meta:
        raise ValueError(f"{path} stores no model config (it was written before vcap kept one in its checkpoints): "
                         f"give the project too (--cfg-path P --options model.checkpoint={path})")
    return json.loads(meta["vcap_config"])


def load_from_checkpoint(path, device: str = "cpu", is_eval: bool = True):
    """``(model, {"eval": frame processor}, {"eval": caption processor}, stored config)`` from a checkpoint alone,
    as ``from_pretrained`` does: frozen pretrained weights are reloaded from the source the config names."""
    from vcap.common.registry import registry
    from vcap.processors import build_processor

    from vcap.common.config import import_user_modules

    path = checkpoint_file(path)
    stored = checkpoint_config(path)
    import_user_modules(stored.get("imports"))  # a user's model registers itself when its module is imported
    with tempfile.TemporaryDirectory() as out:  # a stored word tokenizer is written here, then loaded
        cfg = OmegaConf.create({"model": {**stored["model"], "checkpoint": str(path)}, "datasets": {},
                                "run": {"task": stored["task"], "output_dir": out}})
        model = registry.get_task_class(stored["task"]).setup_task(cfg).build_model(cfg, {})
    model = model.to(device)
    model.eval() if is_eval else model.train()
    vis = {"eval": build_processor(OmegaConf.create(stored["vis_processor"]))}
    txt = {"eval": build_processor(OmegaConf.create(stored["text_processor"]))}
    return model, vis, txt, stored


def load_model_and_preprocess(name: str | None = None, model_type: str = "tiny", is_eval: bool = True,
                              device: str = "cpu", checkpoint: str | None = None, dataset: str | None = None,
                              **model_options):
    """Returns ``(model, vis_processors, txt_processors)``; the processors are ``{"train": ..., "eval": ...}``.

    Args:
        name: a registered model (``blip2_t5``, ``clip4clip``, ...); model_type: its card (``flant5xl``, ``tiny``).
            Without a name, ``checkpoint`` alone rebuilds the model it was trained as, with its evaluation
            processors (``processors["eval"]`` only).
        checkpoint: a vcap checkpoint (``best.safetensors``); a word tokenizer stored in it is restored.
        dataset: the registered dataset whose card gives the processors (frames, size, sampling); default
            MSR-VTT's, or the synthetic data's for ``tiny`` models.
        model_options: any key of the model section, e.g. ``pretrained="/path/to/blip2-flan-t5-xl"``.

    Example::

        model, vis, txt = load_model_and_preprocess("blip2_t5", "flant5xl", checkpoint="best.safetensors")
        frames = vis["eval"](read_frames(...)[0]) ...
    """
    from vcap.common.config import build_config
    from vcap.common.registry import registry
    from vcap.processors import build_processor
    from vcap.processors.tokenizer import TRAINED_TOKENIZERS

    if name is None:
        if checkpoint is None:
            raise ValueError("give a model name (and model_type), or checkpoint= a vcap checkpoint")
        return load_from_checkpoint(checkpoint, device, is_eval)[:3]
    cls = registry.get_model_class(name)
    captioner = hasattr(cls, "generate")
    if dataset is None:
        family = "synthetic" if model_type == "tiny" else "msrvtt"
        dataset = f"{family}_{'caption' if captioner else 'retrieval'}"
    with tempfile.TemporaryDirectory() as out:  # a trained word tokenizer is written here, then loaded
        cfg = build_config(OmegaConf.create({
            "model": {"arch": name, "model_type": model_type, **({"checkpoint": checkpoint} if checkpoint else {}),
                      **model_options},
            "datasets": {dataset: {}},
            "run": {"task": "captioning" if captioner else "retrieval", "output_dir": out}}))
        task = registry.get_task_class(cfg.run.task).setup_task(cfg)
        if cfg.model.get("tokenizer") in TRAINED_TOKENIZERS and not checkpoint:
            raise ValueError(f"{name} {model_type!r} uses a tokenizer learned from training captions: pass "
                             f"checkpoint= (it stores the tokenizer) or tokenizer= a tokenizer file or directory")
        model = task.build_model(cfg, {})
    model = model.to(device)
    model.eval() if is_eval else model.train()
    section = cfg.datasets[dataset]
    vis = {k: build_processor(section.vis_processor[k]) for k in ("train", "eval")}
    txt = {k: build_processor(section.text_processor[k]) for k in ("train", "eval")}
    return model, vis, txt


def load_model(name: str, model_type: str = "tiny", is_eval: bool = True, device: str = "cpu",
               checkpoint: str | None = None, **model_options):
    return load_model_and_preprocess(name, model_type, is_eval, device, checkpoint, **model_options)[0]
