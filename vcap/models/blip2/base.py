"""What the BLIP-2 video captioners share, whichever LLM reads the queries (``blip2_opt``, ``blip2_t5``).

Every frame goes through the image ViT; with ``frame_fusion: concat_tokens`` the patch tokens of
all T frames are concatenated into one sequence and one Q-Former pass reads them ("Pretrained
Image-Text Models are Secretly Video Captioners"); ``concat_queries`` runs the Q-Former per frame
and hands T x Q query tokens to the LM. Sub-module names follow transformers'
``Blip2ForConditionalGeneration`` (vision_model, query_tokens, qformer, language_projection,
language_model) so its weights map one to one.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2QFormerConfig, Blip2QFormerModel,
                          Blip2VisionConfig, Blip2VisionModel)

from vcap.common.dtypes import frozen_torch_dtype
from vcap.common.validation import PositiveInt
from vcap.common.weights import known_keys, load_state, read_safetensors, resolve_pretrained
from vcap.models.base_model import Captioner, add_lora, enable_checkpointing, load_transformers
from vcap.models.blip2.conventions import TABLE, resolve_source
from vcap.models.blip2.lavis_weights import load_lavis_checkpoint
from vcap.models.vit_cache import ViTFeatureCache
from vcap.processors.base import build_processor
from vcap.processors.tokenizer import load_text_tokenizer

log = logging.getLogger(__name__)
TRAINED_ALWAYS = ("qformer.", "query_tokens", "language_projection.")


def load_blip2(pretrained: str, frozen: set[str], dtype: torch.dtype, also_trained: tuple[str, ...] = ()):
    """transformers' BLIP-2 with the frozen parts (``vision_model`` / ``language_model``) loaded straight in
    ``dtype`` (no fp32 copy on the way) and everything that trains in fp32, read again at full precision
    from the checkpoint files. Under a meta device (``run.fsdp`` on a rank > 0) only the shapes are built:
    rank 0's weights arrive when the model is sharded. ``also_trained``: key prefixes inside a frozen part that
    train all the same (``ln_vision`` under LAVIS's conventions)."""
    trained = TRAINED_ALWAYS + also_trained + tuple(
        f"{m}." for m in ("vision_model", "language_model") if m not in frozen)
    meta = torch.empty(0).is_meta
    if meta:
        hf = Blip2ForConditionalGeneration._from_config(Blip2Config.from_pretrained(pretrained), dtype=dtype)
    elif dtype == torch.float32 or not frozen:
        return load_transformers(Blip2ForConditionalGeneration, pretrained, "BLIP-2")
    else:
        hf = load_transformers(Blip2ForConditionalGeneration, pretrained, "BLIP-2", dtype=dtype)
    for name, p in hf.named_parameters():
        if name.startswith(trained):
            p.data = p.data.float()
    if meta:
        return hf
    # what trains is read again at full precision, through the one weight rule (only those keys are read)
    files = sorted(resolve_pretrained(pretrained).glob("*.safetensors"))
    load_state(hf, read_safetensors(files, lambda k: k.startswith(trained)), str(pretrained), "model.pretrained",
               filter_fn=known_keys, scope=trained)
    return hf


class Blip2Video(Captioner):
    """The BLIP-2 path from video to LLM inputs, freezing, LoRA, LAVIS loading and FSDP's layers. A subclass
    adds its LLM: ``LM_CLASS``, ``new_language_model``, its ``FSDP_LAYERS``, ``LORA_TARGETS``, its text around the
    queries (``_context_ids``, ``_caption_targets``, ``_resolve_end_token``), ``_token_logprobs`` and
    ``generate_ids``.

    Args:
        tokenizer: path of a word-level tokenizer file, or ``word`` to train one from the captions.
        blip2_config: ``vision_config``, ``qformer_config`` and ``text_config`` (OPT) mappings,
            for a model initialised from scratch.
        num_query_tokens: learned queries of the Q-Former.
        prompt: text placed before the caption; the loss ignores it. It lives here only. With OPT the prompt
            and the caption are tokenized as one string, "<prompt> <caption>", as LAVIS does.
        frame_fusion: ``concat_tokens`` (one Q-Former pass over all frames' tokens) or
            ``concat_queries`` (a pass per frame, T x Q tokens to the LM).
        temporal_embedding: add a learned per-frame embedding to the ViT tokens, so the
            Q-Former can tell frame order (without it, both fusions are order-invariant).
        max_frames: frames the temporal embedding covers.
        freeze_vit, freeze_llm: keep those weights fixed.
        max_txt_len: most tokens of the text (OPT: BOS, prompt, caption and end token, as LAVIS counts them;
            T5: the caption and its EOS) used for training.
        pretrained: a transformers BLIP-2 OPT id or directory (``Salesforce/blip2-opt-2.7b``): its
            vision model, query tokens, Q-Former, projection and OPT replace ``blip2_config``; the
            temporal embedding then starts at zero (the model starts as the image model).
        lora: LoRA on the LLM through peft, e.g. ``{r: 8, alpha: 16, dropout: 0.05, target_modules:
            [q_proj, v_proj]}`` (seed 003's SCST setting; the default targets are the LLM's
            ``LORA_TARGETS``); only the adapters of the LLM train.
        lavis_checkpoint: a LAVIS checkpoint, or a list loaded in order (``blip2_pretrained_opt2.7b.pth``,
            then a fine-tuned ``checkpoint_best.pth``), mapped key by key onto this model after ``pretrained``
            and ``lora``; see ``lavis_weights``.
        grad_checkpointing: recompute the activations of the ViT and the LLM layers in the backward pass
            (torch.utils.checkpoint, non-reentrant) where they train.
        frozen_dtype: ``bf16``, ``fp16`` or ``fp32`` storage of the frozen ViT and LLM, which are built or
            loaded directly in it; ``auto``: bf16 on a GPU, fp32 on the CPU. What trains (Q-Former,
            queries, projection, LoRA adapters, a ViT or LLM that is not frozen) stays fp32.
        conventions: ``lavis``, ``seed003`` or ``transformers``: what the weights' source decides beyond the
            weights (the OPT end-of-caption token, whether an empty prompt scores OPT's BOS, ``ln_vision``'s eps
            and whether it trains, the Flan-T5 activation, and what ``run.generate``'s ``max_len`` / ``min_len``
            count; see ``conventions.py``). ``auto`` (resolved when the config is built, so config.yaml shows
            it): ``lavis`` with a ``lavis_checkpoint``, else ``transformers``.
    """

    def __init__(self, tokenizer: str = "word", blip2_config: dict | None = None, num_query_tokens: PositiveInt = 32,
                 prompt: str = "a video of", frame_fusion: Literal["concat_tokens", "concat_queries"] = "concat_tokens",
                 temporal_embedding: bool = True, max_frames: PositiveInt = 32, freeze_vit: bool = True,
                 freeze_llm: bool = True, max_txt_len: PositiveInt = 32, pretrained: str | None = None,
                 lora: dict | None = None, lavis_checkpoint: str | list[str] | None = None,
                 grad_checkpointing: bool = False, frozen_dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto",
                 conventions: Literal["auto", "lavis", "seed003", "transformers"] = "auto"):
        super().__init__()
        self.conventions = TABLE[resolve_source(conventions, lavis_checkpoint)]
        self.tokenizer = load_text_tokenizer(tokenizer)
        tok = self.tokenizer
        low = frozen_torch_dtype(frozen_dtype)
        frozen = {n for n, f in (("vision_model", freeze_vit), ("language_model", freeze_llm)) if f}
        ln_vision = ("vision_model.post_layernorm.",) if self.conventions.train_ln_vision else ()
        if pretrained:
            hf = load_blip2(pretrained, frozen, low, also_trained=ln_vision)
            if not isinstance(hf.language_model, self.LM_CLASS):
                raise ValueError(f"model.pretrained {pretrained!r} has a {type(hf.language_model).__name__} language "
                                 f"model; {type(self).__name__} takes {self.LM_CLASS.__name__}")
            self.vision_model, self.qformer = hf.vision_model, hf.qformer
            self.query_tokens, self.language_projection = hf.query_tokens, hf.language_projection
            self.language_model = hf.language_model
            vdim, init = hf.config.vision_config.hidden_size, 0.0
        else:
            if blip2_config is None:
                raise ValueError(f"{type(self).__name__} needs blip2_config (vision_config, qformer_config, "
                                 f"text_config) or pretrained")
            vcfg = Blip2VisionConfig(**blip2_config.get("vision_config", {}))
            qcfg = Blip2QFormerConfig(**{**blip2_config.get("qformer_config", {}),
                                         "encoder_hidden_size": vcfg.hidden_size})
            self.vision_model = Blip2VisionModel._from_config(
                vcfg, dtype=low if "vision_model" in frozen else torch.float32)
            self.query_tokens = torch.nn.Parameter(
                torch.randn(1, num_query_tokens, qcfg.hidden_size) * qcfg.initializer_range)
            self.qformer = Blip2QFormerModel(qcfg)
            self.language_model = self.new_language_model(blip2_config.get("text_config", {}), tok,
                                                          low if "language_model" in frozen else torch.float32)
            self.language_projection = torch.nn.Linear(qcfg.hidden_size,
                                                       self.language_model.get_input_embeddings().embedding_dim)
            vdim, init = vcfg.hidden_size, 0.02
        if self.language_model.get_input_embeddings().num_embeddings < len(tok):
            raise ValueError(f"the tokenizer has {len(tok)} tokens but the language model only "
                             f"{self.language_model.get_input_embeddings().num_embeddings}")
        self.temporal_embedding = (torch.nn.Parameter(torch.randn(max_frames, vdim) * init)
                                   if temporal_embedding else None)
        self.pretrained = pretrained
        self.prompt, self.frame_fusion, self.max_txt_len = prompt, frame_fusion, max_txt_len
        self.max_frames = max_frames
        self._finish_language_model()
        self.freeze(*[n for n in ("vision_model", "language_model") if n in frozen])
        self._apply_conventions()
        self.lora = dict(lora) if lora else None
        if self.lora:
            add_lora(self.language_model, self.lora, self.LORA_TARGETS)
            if "language_model" in self._frozen_modules:  # the LLM trains its adapters (in train mode: their dropout)
                self._frozen_modules.remove("language_model")
        # weights that come from a source named in the config: frozen ones stay out of checkpoints
        self._sourced_keys = self.sourced(pretrained, "vision_model.", "language_model.")
        paths = [lavis_checkpoint] if isinstance(lavis_checkpoint, str) else list(lavis_checkpoint or [])
        for path in paths:
            self._sourced_keys |= set(load_lavis_checkpoint(self, path).loaded)
        self.lavis_checkpoint = paths
        self._end_token_id = self._resolve_end_token()  # a tokenizer that cannot end captions as said fails here
        if grad_checkpointing:
            for name in ("vision_model", "language_model"):
                enable_checkpointing(getattr(self, name))

    def _finish_language_model(self) -> None:
        """What the LM needs once built, however it was built (from a directory, a config, on the meta device)."""

    def _apply_conventions(self) -> None:
        """``ln_vision`` (the ViT's ``post_layernorm``): LAVIS's eps, and trainable in fp32 beside a frozen ViT."""
        ln = self.vision_model.post_layernorm
        if self.conventions.ln_vision_eps is not None:
            ln.eps = self.conventions.ln_vision_eps
        if self.conventions.train_ln_vision:
            ln.float().requires_grad_(True)

    @classmethod
    def resolve_config(cls, section) -> list[str]:
        """``conventions: auto`` becomes the source it stands for, so the saved config.yaml says which."""
        try:
            section.conventions = resolve_source(section.get("conventions", "auto"), section.get("lavis_checkpoint"))
        except ValueError as e:
            return [str(e)]
        return []

    LM_CLASS: type = None
    META_INIT = True  # buildable on the meta device (run.fsdp materialises it on rank 0 only)
    # layers run.fsdp shards on their own (ViT and Q-Former blocks here, a subclass adds its LLM's); the rest is
    # sharded at the root
    FSDP_LAYERS: tuple[str, ...] = ("Blip2EncoderLayer", "Blip2QFormerLayer")
    LORA_TARGETS: tuple[str, ...] = ()  # the LLM's attention projections LoRA adapts by default

    @staticmethod
    def new_language_model(text_config: dict, tok, dtype: torch.dtype) -> torch.nn.Module:
        raise NotImplementedError

    VISION_CONFIG_KEY = "blip2_config"

    @classmethod
    def check_run(cls, cfg, run) -> list[str]:
        """``run.cache_vit_features`` only where cached ViT outputs are right and get reused."""
        if not run.cache_vit_features:
            return []
        problems = []
        if run.fsdp:
            problems.append("run.cache_vit_features cannot be combined with run.fsdp: a sharded ViT must run its "
                            "forward on every rank together, and cache hits differ per rank")
        if cfg.model.get("freeze_vit") is False:
            problems.append("run.cache_vit_features needs a frozen ViT (model.freeze_vit: true): a ViT that trains "
                            "gives new outputs every step")
        if run.evaluate_only:
            return problems
        for name, section in cfg.datasets.items():
            proc = section.vis_processor.get("train")
            if proc is None or "train" not in run.train_splits:
                continue
            built = build_processor(proc)
            if not getattr(built, "deterministic", True):
                problems.append(
                    f"run.cache_vit_features: datasets.{name}.vis_processor.train is {proc.name} with sampling "
                    f"{built.sampling!r}{' and a random crop' if getattr(built, 'augments', False) else ''}: its clips "
                    f"change every epoch, so cached ViT outputs would never be reused. Use the video_eval processor "
                    f"with uniform (or fps) sampling for training, or turn the cache off")
        return problems

    # -- the one shared encoding path: video -> LM input embeddings ------------------------------
    vit_cache = None

    def enable_vit_cache(self, max_bytes: int) -> None:
        """Keep the frozen ViT's outputs per clip (``run.cache_vit_features``)."""
        if "vision_model" not in self._frozen_modules:
            raise ValueError("run.cache_vit_features needs a frozen ViT (model.freeze_vit: true): a ViT that trains "
                             "gives new outputs every step")
        self.vit_cache = ViTFeatureCache(max_bytes)

    def _vit(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T, P, Dv) ViT tokens before its final layer norm (``ln_vision``, which may
        train: ``encode_video`` applies it, and the ViT cache holds what is frozen)."""
        b, t = video.shape[:2]
        vm = self.vision_model
        pixels = video.flatten(0, 1).to(vm.embeddings.patch_embedding.weight.dtype)
        tokens = vm.encoder(inputs_embeds=vm.embeddings(pixels)).last_hidden_state
        return tokens.view(b, t, *tokens.shape[1:])

    def encode_video(self, samples: dict) -> torch.Tensor:
        """``samples["video"]`` (B, T, C, H, W) pixels -> (B, N, D_lm) query embeddings for the LM."""
        video = samples["video"]
        b, t = video.shape[:2]
        if t > self.max_frames and self.temporal_embedding is not None:
            raise ValueError(f"got {t} frames but the temporal embedding covers max_frames={self.max_frames}")
        if self.vit_cache is not None:
            tokens = self.vit_cache(video, self._vit, self.device)
        else:
            tokens = self._vit(video.to(self.device))
        ln = self.vision_model.post_layernorm  # ln_vision, in its own dtype (fp32 where it trains, as LAVIS's)
        tokens = ln(tokens.to(ln.weight.dtype)).to(self.query_tokens.dtype)  # fp32 into the Q-Former
        if self.temporal_embedding is not None:
            tokens = tokens + self.temporal_embedding[:t, None, :]
        if self.frame_fusion == "concat_tokens":
            tokens = tokens.flatten(1, 2)  # (B, T*P, Dv): one Q-Former pass over every frame
            queries = self.query_tokens.expand(b, -1, -1)
        else:
            tokens = tokens.flatten(0, 1)  # (B*T, P, Dv): one pass per frame
            queries = self.query_tokens.expand(b * t, -1, -1)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=tokens).last_hidden_state
        out = self.language_projection(out)
        return out.reshape(b, -1, out.shape[-1])

    # -- the text around the queries --------------------------------------------------------------
    @property
    def end_token_id(self) -> int:
        return self._end_token_id

    def _resolve_end_token(self) -> int:
        """The LM config's EOS (the tokenizer's for a new LM)."""
        eos = self.language_model.config.eos_token_id
        return self.tokenizer.eos_token_id if eos is None else eos

    _score_bos = False  # whether an empty prompt makes BOS one more target (OPT under LAVIS's conventions)

    def _prefix(self, video_embeds: torch.Tensor, context: list[int] | None = None) -> torch.Tensor:
        """LM inputs before the caption: query embeddings, then the context (default BOS and prompt)."""
        context = self._context_ids() if context is None else context
        emb = self.language_model.get_input_embeddings()
        video_embeds = video_embeds.to(emb.weight.dtype)  # into the LLM's dtype
        if not context:
            return video_embeds
        ctx = emb(torch.tensor(context, dtype=torch.long, device=video_embeds.device))
        return torch.cat([video_embeds, ctx.unsqueeze(0).expand(video_embeds.shape[0], -1, -1)], dim=1)

    def forward(self, samples: dict) -> dict:
        """The captioner's cross-entropy; under LAVIS's conventions with an empty prompt, OPT's BOS counts as
        one more target per caption, predicted from the last query."""
        if "score_token_ids" in samples:
            return super().forward(samples)
        ids, mask = self._caption_targets(samples["text_input"])
        context = self._context_ids()
        if self._score_bos:
            context = context[1:]
            ids = torch.cat([torch.full_like(ids[:, :1], self.tokenizer.bos_token_id), ids], dim=1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        lp = self._token_logprobs(self.encode_video(samples), ids, mask, context)
        return {"loss": -lp.sum() / mask.sum().clamp(min=1)}

    def checkpoint_metadata(self) -> dict[str, str]:
        meta = super().checkpoint_metadata()
        if self.lavis_checkpoint:
            meta["lavis_checkpoint"] = ",".join(map(str, self.lavis_checkpoint))
        meta["conventions"] = self.conventions.source
        return meta

