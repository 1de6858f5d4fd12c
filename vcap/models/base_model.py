"""Model base: construction from a config section whose keys are the constructor's arguments."""
from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf

from vcap.common.checkpoint import load_weights
from vcap.common.config import MODEL_RESERVED_KEYS, signature_keys
from vcap.processors.tokenizer import WordTokenizer

log = logging.getLogger(__name__)


class BaseModel(torch.nn.Module):
    """``PRETRAINED_MODEL_CONFIG_DICT`` maps a model type to its card under vcap/configs.

    Defaults live in the constructor signature; a card only sets what its model type changes.
    """

    PRETRAINED_MODEL_CONFIG_DICT: dict[str, str] = {}
    DEFAULT_MODEL_TYPE = "tiny"

    @classmethod
    def config_keys(cls) -> list[str]:
        return signature_keys(cls.__init__)

    @classmethod
    def from_config(cls, cfg: DictConfig | dict):
        kwargs = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)  # plain dicts all the way down
        checkpoint = kwargs.get("checkpoint")
        for key in MODEL_RESERVED_KEYS:
            kwargs.pop(key, None)
        model = cls(**kwargs)
        if checkpoint:
            report = load_weights(model, checkpoint)
            log.info("loaded %s (%d missing, %d unexpected keys)", checkpoint, len(report["missing"]),
                     len(report["unexpected"]))
        return model

    def train(self, mode: bool = True):
        """Frozen sub-modules (names in ``self._frozen_modules``) stay in eval mode (no dropout)."""
        super().train(mode)
        for name in getattr(self, "_frozen_modules", ()):
            getattr(self, name).eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def frozen_pretrained_keys(self) -> list[str]:
        """State-dict keys of frozen weights loaded from a pretrained source (not saved in checkpoints)."""
        return []

    def checkpoint_metadata(self) -> dict[str, str]:
        """Strings stored in the checkpoint header beside the weights (e.g. a trained tokenizer)."""
        tok = getattr(self, "tokenizer", None)
        return {"tokenizer.json": tok.to_str()} if isinstance(tok, WordTokenizer) else {}
