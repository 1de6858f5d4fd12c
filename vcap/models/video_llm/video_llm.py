"""Today's video LLMs from transformers as vcap captioners: Qwen2.5-VL, LLaVA-OneVision and InstructBLIP-Video
through ``AutoModelForImageTextToText`` and ``AutoProcessor``. (Qwen3-VL is not among them yet: its processor's
chat template and video processor have no test fixture with its real conventions.)

Frames come from vcap's decoder and sampling (the processor card's ``num_frames``, ``sampling``, ``fps``), as
uint8 (the model asks for them raw: ``RAW_FRAMES``); the family's own processor then resizes, normalises,
patches and merges them (Qwen's 2-frame temporal patches, LLaVA-OneVision's pooling). The prompt is one user
turn, the video and ``prompt``, rendered with the family's chat template; the caption is the assistant's turn.
The loss covers the caption's tokens and the end-of-turn token only: the prompt, the video tokens and the
padding are masked. Generation is the model's own ``generate``; ``score_sequences`` gives differentiable
per-sequence log-probabilities, so ``captioning_scst`` runs unchanged.
"""
from __future__ import annotations

from typing import Literal

import torch

from vcap.common.dtypes import frozen_torch_dtype
from vcap.common.registry import registry
from vcap.common.validation import PositiveInt
from vcap.models.base_model import Captioner, add_lora, enable_checkpointing, load_transformers, pretrained_or_new
from vcap.models.generation import generate_config, hf_kwargs, token_logprobs
from vcap.processors.tokenizer import HFTokenizer, pad_rows

# per family: the vision tower's module (frozen with freeze_vision) and what of it still trains (the projector
# into the LLM), the LLM's module, LoRA's default targets, and the layers run.fsdp shards on their own
FAMILIES = {
    "qwen2_5_vl": {"vision": "model.visual", "projector": ("model.visual.merger.",), "llm": "model.language_model",
                   "lora": ("q_proj", "k_proj", "v_proj", "o_proj"),
                   "fsdp": ("Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock")},
    "llava_onevision": {"vision": "model.vision_tower", "projector": ("model.multi_modal_projector.",
                                                                      "model.image_newline"),
                        "llm": "model.language_model", "lora": ("q_proj", "k_proj", "v_proj", "o_proj"),
                        "fsdp": ("Qwen2DecoderLayer", "SiglipEncoderLayer")},
    "instructblip_video": {"vision": "vision_model", "projector": ("qformer.", "query_tokens", "language_projection."),
                           "llm": "language_model", "lora": ("q_proj", "v_proj"), "video_kwarg": "images",
                           "model_type": "instructblipvideo",
                           "fsdp": ("LlamaDecoderLayer", "InstructBlipVideoEncoderLayer", "InstructBlipVideoQFormerLayer")},
}


@registry.register_model("video_llm")
class VideoLLMCaptioner(Captioner):
    """Args:
        family: ``qwen2_5_vl``, ``llava_onevision`` or ``instructblip_video``.
        pretrained: a transformers id in the local cache or a directory (``Qwen/Qwen2.5-VL-3B-Instruct``) with its
            processor (tokenizer, chat template, image and video processors).
        config: instead of ``pretrained``, the family's config as a mapping (``text_config``, ``vision_config``,
            ...): a model from random weights, for tiny cards; ``processor`` then names the processor directory.
        processor: the processor's id or directory (default: ``pretrained``).
        prompt: the user's text after the video (e.g. "Describe this video in one sentence.").
        freeze_vision: keep the vision tower fixed (its projector into the LLM still trains).
        freeze_llm: keep the LLM fixed (with ``lora``, its adapters train).
        lora: LoRA on the LLM through peft, ``{r, alpha, dropout, target_modules}`` (default targets: the
            family's attention projections).
        max_txt_len: caption tokens (with the end-of-turn token) used for training.
        frozen_dtype: storage of the frozen weights (``auto``: bf16 on a GPU, fp32 on the CPU); what trains is fp32.
        grad_checkpointing: recompute the LLM's (and a trained vision tower's) activations in the backward pass.
    """

    PRETRAINED_MODEL_CONFIG_DICT = {"tiny_qwen2_5_vl": "configs/models/video_llm/tiny_qwen2_5_vl.yaml",
                                    "tiny_llava_onevision": "configs/models/video_llm/tiny_llava_onevision.yaml",
                                    "tiny_instructblip_video": "configs/models/video_llm/tiny_instructblip_video.yaml",
                                    "qwen2_5_vl_3b": "configs/models/video_llm/qwen2_5_vl_3b.yaml",
                                    "llava_onevision_0.5b": "configs/models/video_llm/llava_onevision_0.5b.yaml"}
    DEFAULT_MODEL_TYPE = "tiny_qwen2_5_vl"
    RAW_FRAMES = True  # the family's processor normalises: vcap's frame processors hand over uint8 frames

    def __init__(self, family: Literal["qwen2_5_vl", "llava_onevision", "instructblip_video"] = "qwen2_5_vl",
                 pretrained: str | None = None, config: dict | None = None, processor: str | None = None,
                 prompt: str = "Describe this video in one sentence.", freeze_vision: bool = True,
                 freeze_llm: bool = True, lora: dict | None = None, max_txt_len: PositiveInt = 32,
                 frozen_dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto", grad_checkpointing: bool = False):
        super().__init__()
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        spec = FAMILIES[family]
        if not (processor or pretrained):
            raise ValueError("video_llm built from model.config needs model.processor (a processor directory with "
                             "the family's tokenizer and chat template)")
        self.processor = AutoProcessor.from_pretrained(processor or pretrained)
        self.tokenizer = HFTokenizer(processor or pretrained, tk=self.processor.tokenizer)  # the processor's own
        low = frozen_torch_dtype(frozen_dtype)
        self.model = pretrained_or_new(
            pretrained, lambda p: load_transformers(AutoModelForImageTextToText, p, "video LLM", dtype=low), config,
            lambda c: AutoModelForImageTextToText.from_config(
                AutoConfig.for_model(spec.get("model_type", family), **self._complete(family, dict(c))), dtype=low),
            "video_llm needs model.pretrained (a transformers id or directory) or model.config (the family's config "
            "as a mapping)", exclusive=True)
        if self.model.config.model_type != spec.get("model_type", family):
            raise ValueError(f"model.pretrained {pretrained!r} is a {self.model.config.model_type} model; "
                             f"model.family says {family}")
        self.family, self.spec, self.prompt, self.max_txt_len = family, spec, prompt, max_txt_len
        self.pretrained, self.lora = pretrained, dict(lora) if lora else None
        self.model.requires_grad_(False)
        trains = [] if freeze_vision else [spec["vision"] + "."]
        trains += list(spec["projector"])
        if not freeze_llm:
            trains += [spec["llm"] + ".", "lm_head."]  # (InstructBLIP's head is inside its language_model)
        for name, p in self.model.named_parameters():
            if name.startswith(tuple(trains)):
                p.data = p.data.float()
                p.requires_grad_(True)
        if self.lora:
            add_lora(self.model.get_submodule(spec["llm"]), self.lora, spec["lora"])
        # frozen towers stay in eval mode (no dropout); an LLM with adapters trains them (their dropout on)
        self._frozen_modules = [f"model.{m}" for m, frozen in ((spec["vision"], freeze_vision),
                                                               (spec["llm"], freeze_llm and not self.lora)) if frozen]
        self._sourced_keys = self.sourced(pretrained, "model.")
        if grad_checkpointing:
            enable_checkpointing(self.model)
        # a chat model's prompt is a user turn in its chat template; InstructBLIP's is the instruction itself
        turn = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        self.prompt_text = self.processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False) \
            if getattr(self.processor, "chat_template", None) else prompt

    def _complete(self, family: str, config: dict) -> dict:
        """What a config from a card leaves to the processor: InstructBLIP's LLM vocabulary, pad and ``<video>`` ids
        are its tokenizer's (LAVIS adds ``[PAD]``; transformers' processor adds ``<video>``)."""
        if family != "instructblip_video":
            return config
        tk = self.processor.tokenizer
        config.setdefault("video_token_index", tk.convert_tokens_to_ids(self.processor.video_token.content))
        config["text_config"] = {"vocab_size": len(tk), "pad_token_id": tk.pad_token_id, **config.get("text_config", {})}
        return config

    @property
    def FSDP_LAYERS(self) -> tuple[str, ...]:  # noqa: N802  (the runner's name)
        return self.spec["fsdp"]

    # -- the family's processor: frames and text -> model inputs ------------------------------------------
    def _inputs(self, samples: dict, texts: list[str], repeat: int = 1) -> dict:
        """The processor's output for each video (``repeat`` times in a row) with its text."""
        video = samples["video"]
        if video.dtype != torch.uint8:
            raise ValueError("video_llm takes raw uint8 frames (its processor normalises them): the frame processors "
                             "need normalize: false, which build_config sets for this model")
        clips = [clip for clip in video.cpu() for _ in range(repeat)]
        out = self.processor(text=texts, **{self.spec.get("video_kwarg", "videos"): clips}, return_tensors="pt",
                             padding=True, padding_side="left")
        return {k: v.to(self.device) for k, v in out.items()}

    @property
    def end_token_id(self) -> int:
        """The end of the assistant's turn (Qwen's ``<|im_end|>``): trained as the caption's last target, stops
        generation."""
        return self.tokenizer.eos_token_id

    def _with_targets(self, samples: dict, targets: list[list[int]], repeat: int = 1) -> tuple[dict, torch.Tensor]:
        """Inputs of prompt + target ids per row (right-padded after the target) and the labels: -100 on the
        prompt, the video tokens and the padding."""
        prompt = self._inputs(samples, [self.prompt_text] * (len(samples["video"]) * repeat), repeat)
        ids, mask = prompt.pop("input_ids"), prompt.pop("attention_mask")
        tgt, tmask = (t.to(ids.device) for t in pad_rows(targets, self.tokenizer.pad_token_id))
        labels = torch.cat([torch.full_like(ids, -100), tgt.masked_fill(tmask == 0, -100)], dim=1)
        extra = {}
        if "mm_token_type_ids" in prompt:  # the text after the prompt is text
            extra["mm_token_type_ids"] = torch.cat([prompt.pop("mm_token_type_ids"), torch.zeros_like(tgt)], dim=1)
        return {**prompt, **extra, "input_ids": torch.cat([ids, tgt], 1),
                "attention_mask": torch.cat([mask, tmask], 1)}, labels

    def caption_targets(self, captions: list[str]) -> list[list[int]]:
        """Each caption's ids as the assistant's turn (at most ``max_txt_len - 1``), then the end-of-turn token."""
        return [self.tokenizer.ids(c)[: self.max_txt_len - 1] + [self.end_token_id] for c in captions]

    def _target_logprobs(self, inputs: dict, labels: torch.Tensor) -> torch.Tensor:
        """Per-token log-probabilities of the labels (0 where -100), from the positions before them."""
        width = labels.shape[1] - int((labels != -100).float().argmax(1).min())  # from the first target on
        # the positions before each target (a model that ignores logits_to_keep returns them all)
        logits = self.model(**inputs, logits_to_keep=width + 1).logits[:, -(width + 1):-1]
        target = labels[:, -width:]
        return token_logprobs(logits, target.clamp(min=0), target != -100)

    def forward(self, samples: dict) -> dict:
        if "score_token_ids" in samples:
            return {"logprobs": self.score_sequences(samples, samples["score_token_ids"])}
        inputs, labels = self._with_targets(samples, self.caption_targets(samples["text_input"]))
        lp = self._target_logprobs(inputs, labels)
        return {"loss": -lp.sum() / (labels != -100).sum().clamp(min=1)}

    def score_sequences(self, samples: dict, token_ids: torch.Tensor) -> torch.Tensor:
        """Differentiable summed log-probs of generated caption ids (B*K rows, K per video, padded after the end
        token), each teacher-forced after its video's prompt."""
        k = token_ids.shape[0] // len(samples["video"])
        keep = self.sequence_mask(token_ids)
        rows = [row[m.bool()].tolist() for row, m in zip(token_ids.cpu(), keep.cpu())]
        inputs, labels = self._with_targets(samples, rows, repeat=k)
        return self._target_logprobs(inputs, labels).sum(1)

    @torch.no_grad()
    def generate_ids(self, samples: dict, **settings) -> torch.Tensor:
        """The model's own ``generate`` after the prompt with ``run.generate``'s settings (``max_len`` / ``min_len``
        in new tokens); the new token ids only, padded after the end token."""
        inputs = self._inputs(samples, [self.prompt_text] * len(samples["video"]))
        out = self.model.generate(**inputs, **hf_kwargs(generate_config(**settings)), eos_token_id=self.end_token_id,
                                  pad_token_id=self.tokenizer.pad_token_id)
        return out[:, inputs["input_ids"].shape[1]:]
