"""CLIP4Clip (Luo et al. 2021): CLIP text and frame encoders, a similarity header, symmetric InfoNCE.

Sub-modules follow transformers' ``CLIPModel`` under ``clip`` so Hugging Face CLIP weights load
one to one; OpenAI CLIP files and CLIP4Clip's own checkpoints load through the explicit key maps
in ``weights.py``.
"""
from __future__ import annotations

import logging
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig
from transformers.models.clip.modeling_clip import CLIPEncoder

from vcap.common.dist import all_gather_with_grad
from vcap.common.registry import registry
from vcap.common.validation import PositiveInt
from vcap.models.base_model import BaseModel
from vcap.models.clip4clip import weights as W
from vcap.processors.tokenizer import load_text_tokenizer

log = logging.getLogger(__name__)


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) with 1 for real tokens -> (B, 1, 1, L) additive attention mask (no causal part)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class SequenceTransformer(nn.Module):
    """CLIP text-encoder layers over frame (or text + frame) tokens, attending to real tokens only."""

    def __init__(self, text_config: CLIPTextConfig, layers: int):
        super().__init__()
        cfg = CLIPTextConfig(**{**text_config.to_dict(), "num_hidden_layers": layers})
        cfg._attn_implementation = "sdpa"
        self.encoder = CLIPEncoder(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(inputs_embeds=x, attention_mask=_additive_mask(mask, x.dtype)).last_hidden_state


class Patch3d(nn.Module):
    """CLIP4Clip's 3d linear patch: a Conv3d with kernel (3, p, p) over (frames, H, W), the centre
    slice initialised from the 2d patch weights and the others zero (so it starts as the 2d patch).
    It replaces the vision embeddings' patch projection; ``frames`` is set per call."""

    def __init__(self, conv2d: nn.Conv2d):
        super().__init__()
        out_ch, in_ch, p, _ = conv2d.weight.shape
        self.conv2d = conv2d  # kept for loading 2d weights; frozen (unused in the 3d forward)
        self.conv2d.weight.requires_grad_(False)
        self.conv3d = nn.Conv3d(in_ch, out_ch, (3, p, p), stride=(1, p, p), padding=(1, 0, 0), bias=False)
        self.init_from_2d()
        self.frames = 1

    @property
    def weight(self) -> torch.Tensor:  # transformers reads the patch projection's dtype from here
        return self.conv3d.weight

    @torch.no_grad()
    def init_from_2d(self) -> None:
        self.conv3d.weight.zero_()
        self.conv3d.weight[:, :, 1] = self.conv2d.weight

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # (B*T, C, H, W) -> (B*T, width, g, g)
        bt, c, h, w = pixel_values.shape
        x = pixel_values.view(bt // self.frames, self.frames, c, h, w).transpose(1, 2)
        x = self.conv3d(x.to(self.conv3d.weight.dtype)).transpose(1, 2)
        return x.reshape(bt, *x.shape[2:])


@registry.register_model("clip4clip")
class CLIP4Clip(BaseModel):
    """Video-text retrieval on CLIP.

    Args:
        tokenizer: ``word`` (trained from the captions), a word-tokenizer file, or a Hugging Face
            tokenizer id / directory (CLIP's BPE for pretrained weights).
        clip_config: a ``CLIPConfig`` as a mapping, for a model initialised from scratch.
        pretrained: CLIP or CLIP4Clip weights: a Hugging Face id or directory (``openai/clip-vit-
            base-patch32``), an OpenAI CLIP ``.pt`` (TorchScript archive or state dict), or a
            CLIP4Clip ``pytorch_model.bin.N``; its architecture replaces ``clip_config``.
        sim_header: ``meanP`` (masked mean of L2-normalised frame features), ``seqLSTM`` (LSTM
            over frames, residual), ``seqTransf`` (frame position embeddings + transformer, both
            initialised from CLIP's text encoder, residual), ``tightTransf`` (the text feature and
            the frame features through a cross transformer, a linear head per pair; trained on the
            local batch's pairs, as CLIP4Clip, since every pair costs a cross-transformer pass, together
            with the meanP contrastive loss of the first stage that picks its candidates).
        linear_patch: ``2d`` (CLIP's) or ``3d`` (a Conv3d over 3 frames, see ``Patch3d``).
        temporal_layers, cross_layers: transformer depth of seqTransf / tightTransf (CLIP4Clip: 4).
        max_frames: frame positions of seqTransf / tightTransf.
        tight_top_k: tightTransf at evaluation re-scores each text's top-k videos of a meanP pass.
        coef_lr: learning-rate multiplier of the CLIP parameters (CLIP4Clip: 1e-3 with pretrained CLIP).
        max_txt_len: text tokens including BOS and EOS.
        max_logit_scale: the learned temperature is clamped to this (CLIP: ln 100).
    """

    VISION_CONFIG_KEY = "clip_config"

    PRETRAINED_MODEL_CONFIG_DICT = {"tiny": "configs/models/clip4clip/tiny.yaml",
                                    "vit_b32": "configs/models/clip4clip/vit_b32.yaml",
                                    "vit_b16": "configs/models/clip4clip/vit_b16.yaml"}

    def __init__(self, tokenizer: str = "word", clip_config: dict | None = None, pretrained: str | None = None,
                 sim_header: Literal["meanP", "seqLSTM", "seqTransf", "tightTransf"] = "meanP",
                 linear_patch: Literal["2d", "3d"] = "2d", temporal_layers: int = 4, cross_layers: int = 4,
                 max_frames: PositiveInt = 32, tight_top_k: PositiveInt = 16, coef_lr: float = 1.0,
                 max_txt_len: PositiveInt = 32,
                 max_logit_scale: float = math.log(100.0)):
        super().__init__()
        self.tokenizer = load_text_tokenizer(tokenizer)
        source = W.read_pretrained(pretrained) if pretrained else None
        if source is not None:
            self.clip = source.clip
        else:
            if clip_config is None:
                raise ValueError("clip4clip needs clip_config (a CLIPConfig as a mapping) or pretrained weights")
            cfg = CLIPConfig(**clip_config)
            tc = cfg.text_config
            tc.vocab_size = len(self.tokenizer)
            tc.pad_token_id, tc.bos_token_id, tc.eos_token_id = (
                self.tokenizer.pad_token_id, self.tokenizer.bos_token_id, self.tokenizer.eos_token_id)
            self.clip = CLIPModel(cfg)
        if self.clip.config.text_config.vocab_size < len(self.tokenizer):
            raise ValueError(f"the tokenizer has {len(self.tokenizer)} tokens but the CLIP text model only "
                             f"{self.clip.config.text_config.vocab_size}; use the tokenizer the weights were trained "
                             "with (model.tokenizer)")
        tc, dim = self.clip.config.text_config, self.clip.config.projection_dim
        self.sim_header, self.linear_patch = sim_header, linear_patch
        self.max_txt_len, self.max_logit_scale, self.coef_lr = max_txt_len, max_logit_scale, coef_lr
        self.tight_top_k = tight_top_k
        if sim_header in ("seqTransf", "tightTransf") and tc.hidden_size != dim:
            raise ValueError(f"{sim_header} runs CLIP text layers over projected features: the text width "
                             f"({tc.hidden_size}) must equal projection_dim ({dim})")
        if linear_patch == "3d":
            emb = self.clip.vision_model.embeddings
            emb.patch_embedding = Patch3d(emb.patch_embedding)
        if sim_header == "seqLSTM":
            self.lstm_visual = nn.LSTM(dim, dim, batch_first=True)
        if sim_header == "seqTransf":
            self.frame_position_embeddings = nn.Embedding(max_frames, dim)
            self.transformer_clip = SequenceTransformer(tc, temporal_layers)
        if sim_header == "tightTransf":
            self.cross_position_embeddings = nn.Embedding(max_frames + 1, dim)
            self.cross_type_embeddings = nn.Embedding(2, dim)  # text 0, frames 1; zero at start (CLIP4Clip has none)
            nn.init.zeros_(self.cross_type_embeddings.weight)
            self.cross = SequenceTransformer(tc, cross_layers)
            self.cross_pool_norm = nn.LayerNorm(dim, eps=tc.layer_norm_eps)
            self.cross_pool_dense = nn.Linear(dim, dim)
            # no bias: a constant shift of every pair's score changes neither ranking nor loss (zero gradient)
            self.similarity_dense = nn.Linear(dim, 1, bias=False)
        self.init_headers_from_clip_text()
        self.load_report = source.apply(self) if source is not None else None

    @torch.no_grad()
    def init_headers_from_clip_text(self) -> None:
        """CLIP4Clip's initialisation: frame (and cross) position embeddings from CLIP's text
        position embeddings, the header transformer from the first CLIP text layers."""
        text = self.clip.text_model
        pos = text.embeddings.position_embedding.weight
        for name, layers in (("frame_position_embeddings", "transformer_clip"), ("cross_position_embeddings", "cross")):
            if hasattr(self, name):
                emb = getattr(self, name).weight
                n = min(emb.shape[0], pos.shape[0])
                emb[:n] = pos[:n]
                for layer, source in zip(getattr(self, layers).encoder.layers, text.encoder.layers):
                    layer.load_state_dict(source.state_dict())

    def lr_scales(self) -> dict[str, float]:
        return {"clip.": self.coef_lr} if self.coef_lr != 1.0 else {}

    # -- encoders (shared by forward and evaluation) ----------------------------------------------
    def text_features(self, samples: dict) -> torch.Tensor:
        ids, mask = self.tokenizer(samples["text_input"], self.max_txt_len)
        ids, mask = ids.to(self.device), mask.to(self.device)
        pooled = self.clip.text_model(input_ids=ids, attention_mask=mask).pooler_output
        return self.clip.text_projection(pooled)

    def frame_features(self, samples: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected frame features (B, T, D), frame mask (B, T))."""
        video = samples["video"].to(self.device)  # (B, T, C, H, W)
        b, t = video.shape[:2]
        if self.linear_patch == "3d":
            self.clip.vision_model.embeddings.patch_embedding.frames = t
        pooled = self.clip.vision_model(pixel_values=video.flatten(0, 1)).pooler_output
        frames = self.clip.visual_projection(pooled).view(b, t, -1)
        mask = samples.get("video_mask")
        mask = torch.ones(b, t, device=frames.device) if mask is None else mask.to(frames.device).float()
        return frames, mask

    def temporal(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The loose headers' frame features after the temporal module (residual)."""
        if self.sim_header == "seqLSTM":
            lengths = mask.sum(1).clamp(min=1).long().cpu()
            packed = nn.utils.rnn.pack_padded_sequence(frames, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm_visual(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=frames.shape[1])
            return frames + out
        if self.sim_header == "seqTransf":
            pos = self.frame_position_embeddings(torch.arange(frames.shape[1], device=frames.device))
            return frames + self.transformer_clip(frames + pos, mask)
        return frames

    @staticmethod
    def mean_pool(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        frames = F.normalize(frames, dim=-1)
        pooled = (frames * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return F.normalize(pooled, dim=-1)

    def encode_text(self, samples: dict) -> torch.Tensor:
        text = self.text_features(samples)
        return text if self.sim_header == "tightTransf" else F.normalize(text, dim=-1)

    def encode_video(self, samples: dict) -> torch.Tensor:
        """One row per video: the pooled feature, or for tightTransf the frame features and mask packed."""
        frames, mask = self.frame_features(samples)
        if self.sim_header == "tightTransf":
            return torch.cat([frames.flatten(1), mask], dim=1)
        return self.mean_pool(self.temporal(frames, mask), mask)

    def _unpack(self, video_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.clip.config.projection_dim
        t = video_emb.shape[1] // (d + 1)
        return video_emb[:, : t * d].view(-1, t, d), video_emb[:, t * d:]

    def cross_scores(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tightTransf: one score per (text feature, frames) pair, rows aligned."""
        tokens = torch.cat([text.unsqueeze(1), frames], dim=1)
        n, length = tokens.shape[:2]
        types = torch.ones(length, dtype=torch.long, device=tokens.device)
        types[0] = 0
        tokens = tokens + self.cross_position_embeddings(torch.arange(length, device=tokens.device)) \
            + self.cross_type_embeddings(types)
        full_mask = torch.cat([torch.ones(n, 1, device=mask.device), mask], dim=1)
        out = self.cross(tokens, full_mask)
        pooled = self.cross_pool_dense(self.cross_pool_norm(out)[:, 0])
        pooled = pooled * torch.sigmoid(1.702 * pooled)  # QuickGELU, as CLIP4Clip's pooler
        return self.similarity_dense(pooled).squeeze(-1)

    def _pair_scores(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N texts, M videos) cross scores of every pair."""
        n, m = text.shape[0], frames.shape[0]
        scores = self.cross_scores(text.repeat_interleave(m, 0), frames.repeat(n, 1, 1), mask.repeat(n, 1))
        return scores.view(n, m)

    def similarity(self, text_emb: torch.Tensor, video_emb: torch.Tensor) -> torch.Tensor:
        """(texts x videos) scores for ranking. tightTransf ranks each text's top ``tight_top_k``
        videos of a meanP pass by the cross transformer, above all others (kept in meanP order)."""
        if self.sim_header != "tightTransf":
            return text_emb @ video_emb.t()
        frames, mask = self._unpack(video_emb)
        loose = F.normalize(text_emb, dim=-1) @ self.mean_pool(frames, mask).t()
        k = min(self.tight_top_k, loose.shape[1])
        top = loose.topk(k, dim=1).indices  # (N, k)
        n = text_emb.shape[0]
        cross = self.cross_scores(text_emb.repeat_interleave(k, 0), frames[top.flatten()], mask[top.flatten()])
        out = loose - 1e6  # below every cross score, still in meanP order
        return out.scatter(1, top, cross.view(n, k).to(out.dtype))

    @staticmethod
    def _symmetric_ce(logits: torch.Tensor) -> torch.Tensor:
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2

    def forward(self, samples: dict) -> dict:
        scale = self.clip.logit_scale.clamp(max=self.max_logit_scale).exp()
        if self.sim_header == "tightTransf":
            text = self.text_features(samples)
            frames, mask = self.frame_features(samples)
            # every pair goes through the cross transformer: as CLIP4Clip, its negatives are the local batch
            # (all-gathering would multiply the cross passes per rank by the world size squared)
            cross = self._symmetric_ce(self._pair_scores(text, frames, mask))
            # the meanP pass that picks each text's top-k for the cross head at evaluation is trained too: an
            # untrained first stage hides the right video (cross head alone on the demo: R@1 34.7 over all
            # videos, 3.3 behind a random top-8)
            t = all_gather_with_grad(F.normalize(text, dim=-1))
            v = all_gather_with_grad(self.mean_pool(frames, mask))
            loose = self._symmetric_ce(scale * (t @ v.t()))
            return {"loss": (cross + loose) / 2, "cross_loss": cross.detach(), "loose_loss": loose.detach(),
                    "logit_scale": scale.detach()}
        text = all_gather_with_grad(self.encode_text(samples))
        video = all_gather_with_grad(self.encode_video(samples))
        loss = self._symmetric_ce(scale * (text @ video.t()))
        return {"loss": loss, "logit_scale": scale.detach()}
