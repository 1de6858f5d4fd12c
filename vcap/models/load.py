"""``load_model_and_preprocess``: a model and its frame and caption processors in one call, as LAVIS
users know it (``from vcap import load_model_and_preprocess``)."""
from __future__ import annotations

import tempfile

from omegaconf import OmegaConf


def load_model_and_preprocess(name: str, model_type: str = "tiny", is_eval: bool = True, device: str = "cpu",
                              checkpoint: str | None = None, dataset: str | None = None, **model_options):
    """Returns ``(model, vis_processors, txt_processors)``; the processors are ``{"train": ..., "eval": ...}``.

    Args:
        name: a registered model (``blip2_t5``, ``clip4clip``, ...); model_type: its card (``flant5xl``, ``tiny``).
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
