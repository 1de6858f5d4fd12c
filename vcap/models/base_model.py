"""Model base: construction from a config section whose keys are the constructor's arguments."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from vcap.common.checkpoint import load_weights
from vcap.common.schema import MODEL_RESERVED_KEYS
from vcap.common.validation import signature_keys
from vcap.common.weights import strict_weights
from vcap.processors.tokenizer import TRAINED_TOKENIZERS, pad_rows


def load_transformers(model_cls, spec: str, what: str, key: str = "model.pretrained", **kwargs):
    """``model_cls.from_pretrained(spec, **kwargs)``, with an error naming the config key when nothing loads offline."""
    try:
        return model_cls.from_pretrained(spec, **kwargs)
    except OSError as e:
        raise ValueError(f"{key} {spec!r}: no transformers {what} could be loaded (offline, it must be a directory "
                         f"or an id in the local cache): {e}") from e


def pretrained_or_new(pretrained, load, config, build, what: str, exclusive: bool = False):
    """The one way a model's part is made: ``load(pretrained)`` when the config names a source, else ``build(config)``
    from its config mapping (random weights); ``what`` names both keys for the error when neither is given
    (``exclusive``: or both)."""
    if exclusive and pretrained is not None and config is not None:
        raise ValueError(f"{what}: give one of them, not both")
    if pretrained:
        return load(pretrained)
    if config is None:
        raise ValueError(f"{what}: neither is given")
    return build(config)


class BaseModel(torch.nn.Module):
    """``PRETRAINED_MODEL_CONFIG_DICT`` maps a model type to its card under vcap/configs.

    Defaults live in the constructor signature; a card only sets what its model type changes.
    """

    PRETRAINED_MODEL_CONFIG_DICT: dict[str, str] = {}
    DEFAULT_MODEL_TYPE = "tiny"
    # where the model section says the frame size (``input_size``): the key of its vision config (a BLIP-2 / CLIP /
    # X-CLIP config with ``vision_config``, or a vision config itself), and the key of a pretrained directory whose
    # config.json says it
    VISION_CONFIG_KEY: str | None = None
    PRETRAINED_KEY: str | None = "pretrained"
    RAW_FRAMES = False  # True: the model's own processor normalises, so it takes uint8 frames

    # -- what the model needs from a project (asked by vcap.project.build_config) ----------------
    @classmethod
    def input_size(cls, section: DictConfig) -> tuple[int | None, str]:
        """(the frame size the vision tower takes, the key that says so), or (None, "") when only its weights
        know (a hub id): read from the vision config (transformers' default 224 when it names none) or the
        config.json of a pretrained directory, as timm keeps input size as pretrained-cfg data."""
        config = section.get(cls.VISION_CONFIG_KEY) if cls.VISION_CONFIG_KEY else None
        if config is not None:
            key = cls.VISION_CONFIG_KEY
            if "vision_config" in config:
                return int((config.vision_config or {}).get("image_size", 224)), f"model.{key}.vision_config.image_size"
            return int(config.get("image_size", 224)), f"model.{key}.image_size"
        return cls._pretrained_input_size(section, cls.PRETRAINED_KEY)

    @staticmethod
    def _pretrained_input_size(section: DictConfig, key: str | None) -> tuple[int | None, str]:
        spec = section.get(key) if key else None
        path = Path(str(spec)) / "config.json" if spec else None
        if path is not None and path.is_file():
            cfg = json.loads(path.read_text())
            size = (cfg.get("vision_config") or {}).get("image_size", cfg.get("image_size"))
            if size:
                return int(size), f"model.{key} ({path})"
        return None, ""

    @classmethod
    def check_processors(cls, cfg: DictConfig) -> list[str]:
        """The datasets' frame processors against what the model takes. A ``RAW_FRAMES`` model gets uint8 frames:
        the processors' ``normalize`` is turned off, and a project that turns it on is told why it cannot."""
        if not cls.RAW_FRAMES:
            return []
        problems = []
        for name, section in cfg.datasets.items():
            for split, proc in (section.get("vis_processor") or {}).items():
                if proc is not None and proc.get("normalize") is True:
                    problems.append(f"datasets.{name}.vis_processor.{split}.normalize: true, but {cfg.model.arch} "
                                    f"normalises frames with its own processor; expected false (or unset)")
                elif proc is not None:
                    proc.normalize = False
        return problems

    @classmethod
    def check_run(cls, cfg: DictConfig, run) -> list[str]:
        """The run section (a ``RunConfig``) against the model: what the runner would otherwise find only once it
        runs."""
        if run.cache_vit_features:
            return [f"run.cache_vit_features: model.arch {cfg.model.arch!r} has no ViT feature cache (BLIP-2 "
                    f"captioners have one; CLIP-feature models use `vcap extract-features` instead)"]
        return []

    @classmethod
    def config_keys(cls) -> list[str]:
        return signature_keys(cls.__init__)

    @classmethod
    def from_config(cls, cfg: DictConfig | dict):
        kwargs = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)  # plain dicts all the way down
        checkpoint, strict = kwargs.get("checkpoint"), kwargs.get("strict_weights")
        for key in MODEL_RESERVED_KEYS:
            kwargs.pop(key, None)
        with strict_weights(strict):  # every source the constructor loads follows the one policy
            model = cls(**kwargs)
            if checkpoint:
                load_weights(model, checkpoint)
        return model

    def freeze(self, *names: str) -> None:
        """Sub-modules (dotted names) that do not train: no gradients, and eval mode while the model trains."""
        self._frozen_modules = list(getattr(self, "_frozen_modules", [])) + list(names)
        for name in names:
            self.get_submodule(name).requires_grad_(False)

    def sourced(self, pretrained, *prefixes: str) -> set:
        """The state-dict keys under ``prefixes`` that come from the pretrained source the config names (none when
        it names none): frozen ones are left out of checkpoints (``frozen_pretrained_keys``); LoRA's adapters
        never are."""
        if not pretrained:
            return set()
        return {k for k in self.state_dict() if k.startswith(prefixes) and "lora_" not in k}

    def train(self, mode: bool = True):
        """Frozen sub-modules (names, dotted or not, in ``self._frozen_modules``) stay in eval mode (no dropout)."""
        super().train(mode)
        for name in getattr(self, "_frozen_modules", ()):
            self.get_submodule(name).eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_video(self, samples: dict) -> torch.Tensor:
        """The one meaning of ``encode_video`` across vcap: a batch (``video`` (B, T, C, H, W), ``video_mask``, or
        cached ``clip_features``) -> one row per video of what the model works from: a captioner's conditioning
        (BLIP-2's LM query embeddings, CLIPCap's prefix, the LSTM's initial state), a retrieval model's video
        embedding."""
        raise NotImplementedError

    frozen_frame_encoder = False  # True where frame_features come from a frozen encoder (they can be cached)

    def frame_features(self, samples: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, T', D) features, (B, T') mask) of the model's frame encoder (``encode_frames``), the part before
        ``encode_video``'s trained head: what ``vcap extract-features`` caches and a dataset with ``features:``
        gives back as ``samples["clip_features"]``, used here instead of the video."""
        mask = samples.get("video_mask")
        if "clip_features" in samples:
            emb = samples["clip_features"].to(self.device).float()
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_frame_encoder):
                emb = self.encode_frames(samples["video"].to(self.device))
            mask = None if emb.shape[1] != samples["video"].shape[1] else mask  # one embedding per clip
        return emb, torch.ones(emb.shape[:2], device=emb.device) if mask is None else mask.to(emb.device).float()

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T', D) frame-encoder features."""
        raise NotImplementedError(f"{type(self).__name__} has no frame encoder whose features can be cached")

    _sourced_keys: set = frozenset()  # keys whose weights come from a source the config names (``pretrained``)

    def frozen_pretrained_keys(self) -> list[str]:
        """State-dict keys of frozen weights loaded from a pretrained source (``_sourced_keys`` that do not train):
        not written into checkpoints, since the config names their source and rebuilding the model reloads them."""
        trainable = {k for k, p in self.named_parameters() if p.requires_grad}
        return sorted(k for k in self._sourced_keys if k not in trainable)

    def checkpoint_metadata(self) -> dict[str, str]:
        """Strings stored in the checkpoint header beside the weights: a trained tokenizer, and ``pretrained``
        (where the frozen weights left out come from)."""
        tok, meta = getattr(self, "tokenizer", None), {}
        if getattr(self, "pretrained", None):
            meta["pretrained"] = str(self.pretrained)
        for cls, _, key in TRAINED_TOKENIZERS.values():
            if isinstance(tok, cls):
                meta[key] = tok.to_str()
        return meta


def enable_checkpointing(module: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing of a transformers model's layers: transformers 5's
    ``activation_checkpointing_enable``, or ``gradient_checkpointing_enable`` where that is all there is (it is
    deprecated in 5 and goes in 6)."""
    kwargs = {"use_reentrant": False}
    if hasattr(module, "activation_checkpointing_enable"):
        module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def add_lora(model: torch.nn.Module, lora: dict, default_targets) -> None:
    """LoRA adapters (peft) on ``model``: ``{r, alpha, dropout, target_modules}`` (vcap's defaults r 8, alpha 16,
    dropout 0.05 and ``default_targets``; peft's own are 8 / 8 / 0); the adapters train in fp32 beside frozen low-precision weights, nothing else of
    ``model`` trains."""
    from peft import LoraConfig, inject_adapter_in_model

    unknown = set(lora) - {"r", "alpha", "dropout", "target_modules"}
    if unknown:
        raise ValueError(f"model.lora: unknown keys {sorted(unknown)}; expected r, alpha, dropout, target_modules")
    inject_adapter_in_model(LoraConfig(r=lora.get("r", 8), lora_alpha=lora.get("alpha", 16),
                                       lora_dropout=lora.get("dropout", 0.05),
                                       target_modules=list(lora.get("target_modules", default_targets))), model)
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.data = p.data.float()
        p.requires_grad_("lora_" in n)


class Captioner(BaseModel):
    """What every captioner shares: the cross-entropy loss, ``score_sequences`` (SCST), decoding.

    A subclass provides ``encode_video(samples)`` (one row of conditioning per video),
    ``_token_logprobs(visual, ids, mask)`` (per-token log-probabilities of caption ids) and
    ``generate_ids(samples, **gen_cfg)``; it has ``tokenizer`` and ``max_txt_len``.
    """

    @property
    def end_token_id(self) -> int:
        """The token that ends a caption (trained as its last target, stops generation)."""
        return self.tokenizer.eos_token_id

    def _caption_targets(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each caption's ids, cut to leave room for the end token, then the end token (``end_token_id``)."""
        rows = [self.tokenizer.ids(c)[: self.max_txt_len - 1] + [self.end_token_id] for c in captions]
        ids, mask = pad_rows(rows, self.tokenizer.pad_token_id)
        return ids.to(self.device), mask.to(self.device)

    def forward(self, samples: dict) -> dict:
        """Cross-entropy ``{"loss"}`` over each caption and its end token (padding masked by the attention
        mask); with ``samples["score_token_ids"]`` the ``{"logprobs"}`` of those sequences instead (SCST
        goes through forward so that DDP sees and syncs the gradients)."""
        if "score_token_ids" in samples:
            return {"logprobs": self.score_sequences(samples, samples["score_token_ids"])}
        ids, mask = self._caption_targets(samples["text_input"])
        lp = self._token_logprobs(self.encode_video(samples), ids, mask)
        return {"loss": -lp.sum() / mask.sum().clamp(min=1)}

    def score_sequences(self, samples: dict, token_ids: torch.Tensor) -> torch.Tensor:
        """Differentiable summed log-probs of caption token ids (N = B*K rows, K per video, padded after EOS)."""
        visual = self.encode_video(samples)
        k = token_ids.shape[0] // visual.shape[0]
        ids = token_ids.to(self.device)
        return self._token_logprobs(visual.repeat_interleave(k, 0), ids, self.sequence_mask(ids)).sum(1)

    def sequence_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """1 up to and including the first end token, 0 after (whatever pads it: GPT-2 pads with EOS itself)."""
        is_eos = (ids == self.end_token_id).long()
        return ((is_eos.cumsum(1) - is_eos) == 0).long()

    def decode_ids(self, ids: torch.Tensor) -> list[str]:
        """Each row's text before its end token."""
        keep = self.sequence_mask(ids) * (ids != self.end_token_id).long()
        return [self.tokenizer.decode(row[m.bool()]) for row, m in zip(ids, keep)]

    def generate(self, samples: dict, **settings) -> list[str]:
        """Captions decoded with ``settings`` (``run.generate``'s keys, LAVIS's names: ``num_beams``, ``max_len``,
        ``min_len``, ``use_nucleus_sampling``, ``top_p``, ``temperature``, ``repetition_penalty``,
        ``length_penalty``, ``num_captions``); ``num_captions`` per video, a video's captions together."""
        return self.decode_ids(self.generate_ids(samples, **settings))
