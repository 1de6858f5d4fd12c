"""CLIP4Clip: CLIP text and frame encoders, a temporal similarity header, symmetric InfoNCE."""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from vcap.common.dist import all_gather_with_grad
from vcap.common.registry import registry
from vcap.models.base_model import BaseModel, load_word_tokenizer


@registry.register_model("clip4clip")
class CLIP4Clip(BaseModel):
    """Video-text retrieval on CLIP.

    Args:
        tokenizer: path of a word-level tokenizer file, or ``word`` to train one from the captions.
        clip_config: a ``CLIPConfig`` as a dict, for a model initialised from scratch.
        sim_header: how frame features become a video feature. ``meanP``: a masked mean of the
            L2-normalised frame features (blind to frame order). ``seqLSTM``: a 1-layer LSTM over
            the frame features, added back to them (residual), then the same masked mean.
        max_txt_len: text tokens including BOS and EOS.
        max_logit_scale: the learned temperature is clamped to this (CLIP: ln 100).
    """

    PRETRAINED_MODEL_CONFIG_DICT = {"tiny": "configs/models/clip4clip/tiny.yaml"}

    def __init__(self, tokenizer: str = "word", clip_config: dict | None = None,
                 sim_header: Literal["meanP", "seqLSTM"] = "meanP", max_txt_len: int = 32,
                 max_logit_scale: float = math.log(100.0)):
        super().__init__()
        if sim_header not in ("meanP", "seqLSTM"):
            raise ValueError(f"sim_header {sim_header!r}: expected 'meanP' or 'seqLSTM'")
        if clip_config is None:
            raise ValueError("clip4clip needs clip_config (a CLIPConfig as a mapping)")
        self.tokenizer = load_word_tokenizer(tokenizer)
        cfg = CLIPConfig(**clip_config)
        tc = cfg.text_config
        tc.vocab_size = len(self.tokenizer)
        tc.pad_token_id, tc.bos_token_id, tc.eos_token_id = (
            self.tokenizer.pad_token_id, self.tokenizer.bos_token_id, self.tokenizer.eos_token_id)
        self.clip = CLIPModel(cfg)
        dim = cfg.projection_dim
        self.lstm_visual = torch.nn.LSTM(dim, dim, batch_first=True) if sim_header == "seqLSTM" else None
        self.sim_header, self.max_txt_len, self.max_logit_scale = sim_header, max_txt_len, max_logit_scale

    # -- encoders (shared by forward and evaluation) ----------------------------------------------
    def encode_text(self, samples: dict) -> torch.Tensor:
        ids, mask = self.tokenizer(samples["text_input"], self.max_txt_len)
        ids, mask = ids.to(self.device), mask.to(self.device)
        pooled = self.clip.text_model(input_ids=ids, attention_mask=mask).pooler_output
        return F.normalize(self.clip.text_projection(pooled), dim=-1)

    def encode_video(self, samples: dict) -> torch.Tensor:
        video = samples["video"].to(self.device)  # (B, T, C, H, W)
        b, t = video.shape[:2]
        pooled = self.clip.vision_model(pixel_values=video.flatten(0, 1)).pooler_output
        frames = self.clip.visual_projection(pooled).view(b, t, -1)
        mask = samples.get("video_mask")
        mask = torch.ones(b, t, device=frames.device) if mask is None else mask.to(frames.device).float()
        if self.lstm_visual is not None:
            frames = frames + self._lstm(frames, mask)
        frames = F.normalize(frames, dim=-1)
        pooled = (frames * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return F.normalize(pooled, dim=-1)

    def _lstm(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """LSTM over the real (unmasked, leading) frames; padded steps give zeros."""
        lengths = mask.sum(1).clamp(min=1).long().cpu()
        packed = torch.nn.utils.rnn.pack_padded_sequence(frames, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm_visual(packed)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=frames.shape[1])
        return out

    def similarity(self, text_emb: torch.Tensor, video_emb: torch.Tensor) -> torch.Tensor:
        return text_emb @ video_emb.t()

    def forward(self, samples: dict) -> dict:
        text = all_gather_with_grad(self.encode_text(samples))
        video = all_gather_with_grad(self.encode_video(samples))
        scale = self.clip.logit_scale.clamp(max=self.max_logit_scale).exp()
        logits = scale * self.similarity(text, video)
        labels = torch.arange(logits.shape[0], device=logits.device)
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
        return {"loss": loss, "logit_scale": scale.detach()}
