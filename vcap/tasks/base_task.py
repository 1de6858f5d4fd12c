"""Task base: builds datasets and the model, and defines a training step and an evaluation."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from vcap.common import dist
from vcap.common.checkpoint import read_metadata
from vcap.common.registry import registry
from vcap.common.schema import run_config
from vcap.processors.tokenizer import TRAINED_TOKENIZERS

log = logging.getLogger(__name__)


class BaseTask:
    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.run = run_config(cfg)

    @classmethod
    def setup_task(cls, cfg: DictConfig) -> "BaseTask":
        return cls(cfg)

    def build_datasets(self, cfg: DictConfig) -> dict[str, dict]:
        """``{dataset name: {split: Dataset}}``; data is prepared on rank 0 before the others read it."""
        out = {}
        for name, section in cfg.datasets.items():
            builder = registry.get_builder_class(name)(section, name)
            out[name] = builder.build_datasets(seed=self.run.seed)
        return out

    def build_model(self, cfg: DictConfig, datasets: dict):
        mcfg = cfg.model
        if mcfg.get("tokenizer") in TRAINED_TOKENIZERS:
            mcfg.tokenizer = self._trained_tokenizer(cfg, datasets, mcfg.tokenizer)
        return registry.get_model_class(mcfg.arch).from_config(mcfg)

    def _trained_tokenizer(self, cfg: DictConfig, datasets: dict, kind: str) -> str:
        """Restore the tokenizer stored in ``model.checkpoint``, or train one on the training captions
        (``word``: a word-level vocabulary; ``spm``: SentencePiece, ``model.spm_vocab_size`` pieces).
        It is written to the output directory, beside the checkpoints, and into every checkpoint."""
        cls, filename, meta_key = TRAINED_TOKENIZERS[kind]
        path = Path(self.run.output_dir) / filename
        if dist.is_main_process():
            ckpt = cfg.model.get("checkpoint")
            if ckpt:
                blob = read_metadata(ckpt).get(meta_key)
                if blob is None:
                    raise ValueError(f"model.tokenizer is {kind!r} but checkpoint {ckpt!r} stores no {kind} tokenizer")
                tok = cls.from_str(blob)
            else:
                texts = [c for splits in datasets.values() if "train" in splits for c in splits["train"].captions()]
                if not texts:
                    raise ValueError(f"model.tokenizer is {kind!r}, learned from the training captions, but no dataset "
                                     f"has a train split and no model.checkpoint (which stores it) is given: pass "
                                     f"model.checkpoint=<run>/checkpoints/best.safetensors, or use the checkpoint "
                                     f"alone (vcap caption --model <checkpoint>)")
                texts += [cfg.model.get("prompt") or ""]
                tok = cls.train(texts, cfg.model.spm_vocab_size, cfg.model.spm_model_type) \
                    if kind == "spm" else cls.train(texts)
            path.parent.mkdir(parents=True, exist_ok=True)
            tok.save(path)
            log.info("%s tokenizer with %d tokens at %s", kind, len(tok), path)
        dist.barrier()
        return str(path)

    def train_step(self, model, samples: dict) -> dict:
        return model(samples)

    def evaluate(self, model, loader, dataset, split: str, output_dir: Path) -> dict:
        """Metrics of ``model`` on ``dataset`` (identical on every rank)."""
        raise NotImplementedError
