"""One inference builder: a model with its processors and decoding, from a checkpoint alone or from a project.
``vcap caption``, ``vcap retrieve``, ``vcap extract-features`` and ``load_model_and_preprocess`` (LAVIS's
entry point: ``from vcap import load_model_and_preprocess``) all go through ``build_inference``."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from vcap.common.checkpoint import read_metadata
from vcap.common.config import import_user_modules
from vcap.common.registry import registry
from vcap.common.schema import run_config
from vcap.common.seed import set_seed
from vcap.processors import build_processor
from vcap.processors.tokenizer import TRAINED_TOKENIZERS
from vcap.project import build_config

# checkpoints written before run.generate kept transformers' names (their max_new_tokens / min_new_tokens meant what
# max_len / min_len mean under vcap's own conventions, which every model had then)
OLD_GENERATION_KEYS = {"max_new_tokens": "max_len", "min_new_tokens": "min_len"}

def checkpoint_file(path) -> Path:
    """A checkpoint file, or a run's checkpoint directory (its best.safetensors, else last.safetensors)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: no best.safetensors or last.safetensors in it")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    return path


def checkpoint_metadata(cfg, model, step: int) -> dict:
    """Strings stored beside a run's weights: what the model is, the step, the model's own metadata, and
    ``vcap_config``: what rebuilds it without the project (the merged model section, the evaluation processors of
    the first dataset, the task and its decoding), as a transformers directory does. ``checkpoint_config`` reads
    it back."""
    first = next(iter(cfg.datasets.values()))
    section = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k != "checkpoint"}
    config = {"model": section, "task": cfg.run.task, "imports": list(cfg.get("imports") or []),
              "vis_processor": OmegaConf.to_container(first.vis_processor.eval, resolve=True),
              "text_processor": OmegaConf.to_container(first.text_processor.eval, resolve=True),
              "generation": dataclasses.asdict(run_config(cfg).generate)}
    return {"arch": cfg.model.arch, "model_type": cfg.model.model_type, "step": str(step),
            **model.checkpoint_metadata(), "vcap_config": json.dumps(config)}


def checkpoint_config(path) -> dict:
    """What a vcap checkpoint stores to rebuild its model (``checkpoint_metadata``'s ``vcap_config``): ``{"model",
    "task", "vis_processor", "text_processor", "generation", "imports"}``."""
    meta = read_metadata(path)
    if "vcap_config" not in meta:
        raise ValueError(f"{path} stores no model config (it was written before vcap kept one in its checkpoints): "
                         f"give the project too (--cfg-path P --options model.checkpoint={path})")
    return json.loads(meta["vcap_config"])


@dataclass
class Inference:
    """A model ready for inference. ``vis`` / ``txt``: the frame and caption processors by split (a checkpoint
    alone stores the evaluation ones only); ``generation``: the run's decoding settings; ``signature``: what
    embeddings computed by it depend on (model config, frame processor, checkpoint file), for caches."""

    model: object
    vis: dict
    txt: dict
    generation: dict
    signature: str


def _stamp(path) -> str:
    path = Path(path)
    return f"{path.resolve()}:{path.stat().st_mtime_ns}"


def build_inference(cfg=None, checkpoint=None, dataset: str | None = None, device: str = "cpu",
                    is_eval: bool = True) -> Inference:
    """From ``checkpoint`` alone (its stored config; frozen pretrained weights are reloaded from the source the
    config names, as ``from_pretrained`` does) or from a built project ``cfg`` (``build_config``), whose
    ``dataset`` (default its first) gives the processors. The model is built as rank 0 of a training run
    builds it: seeded with ``run.seed``, and a tokenizer learned from captions is learned from the project's
    data when no checkpoint stores one."""
    if (cfg is None) == (checkpoint is None):
        raise ValueError("give a checkpoint or a project config (one of them)")
    with tempfile.TemporaryDirectory() as out:  # a stored or learned word tokenizer is written here, then loaded
        if checkpoint is not None:
            path = checkpoint_file(checkpoint)
            stored = checkpoint_config(path)
            import_user_modules(stored.get("imports"))  # a user's model registers itself when imported
            cfg = OmegaConf.create({"model": {**stored["model"], "checkpoint": str(path)}, "datasets": {},
                                    "run": {"task": stored["task"], "output_dir": out}})
            processors = {"vis": {"eval": stored["vis_processor"]}, "txt": {"eval": stored["text_processor"]}}
            generation = {OLD_GENERATION_KEYS.get(k, k): v for k, v in stored["generation"].items()}
            signature = json.dumps(stored, sort_keys=True) + _stamp(path)
        else:
            name = dataset or next(iter(cfg.datasets))
            if name not in cfg.datasets:
                raise ValueError(f"dataset {name!r} is not in the project; expected one of {list(cfg.datasets)}")
            section = cfg.datasets[name]
            processors = {"vis": dict(section.vis_processor), "txt": dict(section.text_processor)}
            r = run_config(cfg)
            generation = dataclasses.asdict(r.generate)
            ckpt = cfg.model.get("checkpoint")
            signature = (OmegaConf.to_yaml(cfg.model) + OmegaConf.to_yaml(section.vis_processor.eval)
                         + (_stamp(ckpt) if ckpt else ""))
            cfg = copy.deepcopy(cfg)  # the caller's config keeps its output_dir
            cfg.run.output_dir = out
        set_seed(run_config(cfg).seed)
        task = registry.get_task_class(cfg.run.task).setup_task(cfg)
        learns = cfg.model.get("tokenizer") in TRAINED_TOKENIZERS and not cfg.model.get("checkpoint")
        model = task.build_model(cfg, task.build_datasets(cfg) if learns else {})
    model = model.to(device)
    model.eval() if is_eval else model.train()
    build = {kind: {split: build_processor(OmegaConf.create(c)) for split, c in p.items()}
             for kind, p in processors.items()}
    return Inference(model, build["vis"], build["txt"], generation,
                     hashlib.sha256(signature.encode()).hexdigest()[:16])


def load_from_checkpoint(path, device: str = "cpu", is_eval: bool = True):
    """``(model, {"eval": frame processor}, {"eval": caption processor})`` from a checkpoint alone."""
    inf = build_inference(checkpoint=path, device=device, is_eval=is_eval)
    return inf.model, inf.vis, inf.txt


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
    if name is None:
        if checkpoint is None:
            raise ValueError("give a model name (and model_type), or checkpoint= a vcap checkpoint")
        return load_from_checkpoint(checkpoint, device, is_eval)
    captioner = hasattr(registry.get_model_class(name), "generate")
    if dataset is None:
        dataset = f"{'synthetic' if model_type == 'tiny' else 'msrvtt'}_{'caption' if captioner else 'retrieval'}"
    cfg = build_config(OmegaConf.create({
        "model": {"arch": name, "model_type": model_type, **({"checkpoint": checkpoint} if checkpoint else {}),
                  **model_options},
        "datasets": {dataset: {}}, "run": {"task": "captioning" if captioner else "retrieval", "output_dir": "."}}))
    if cfg.model.get("tokenizer") in TRAINED_TOKENIZERS and not checkpoint:
        raise ValueError(f"{name} {model_type!r} uses a tokenizer learned from training captions: pass "
                         f"checkpoint= (it stores the tokenizer) or tokenizer= a tokenizer file or directory")
    inf = build_inference(cfg, device=device, is_eval=is_eval)
    return inf.model, inf.vis, inf.txt


def load_model(name: str, model_type: str = "tiny", is_eval: bool = True, device: str = "cpu",
               checkpoint: str | None = None, **model_options):
    return load_model_and_preprocess(name, model_type, is_eval, device, checkpoint, **model_options)[0]
