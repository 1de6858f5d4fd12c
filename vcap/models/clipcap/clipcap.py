"""CLIPCap (Mokady et al. 2021): frozen CLIP embeddings -> mapping network -> prefix of a causal LM.

Mapper modules keep CLIPCap's names (``clip_project.model.*`` for the MLP, ``clip_project.linear``,
``prefix_const`` and ``transformer.layers.*`` for the transformer mapper) and the LM is a
transformers causal LM under ``gpt``, so CLIPCap's released files load by a plain key map
(``load_clipcap_checkpoint``). Improvements over the seeds: every reference caption trains (not
the first only), an end-of-sequence token ends every target, padding is masked by the attention
mask (CLIPCap ignored token id 0, which in GPT-2 is "!").
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModelWithProjection

from vcap.common.registry import registry
from vcap.common.validation import PositiveInt
from vcap.common.weights import load_state, read_state_dict
from vcap.models.base_model import Captioner, load_transformers, pretrained_or_new
from vcap.models.clip_resnet import OPENAI_RESNETS, CLIPResNet, load_clip_resnet, resnet_spec
from vcap.models.generation import CausalPrefix, generate_config, hf_generate, prefix_logprobs, reference_search
from vcap.processors.tokenizer import load_text_tokenizer, pad_rows

log = logging.getLogger(__name__)


# -- CLIPCap's mapping networks (the same module names, so its weights load one to one) ----------------
class MLP(nn.Module):
    def __init__(self, sizes: tuple[int, ...]):
        super().__init__()
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class MultiHeadAttention(nn.Module):
    def __init__(self, dim_self: int, dim_ref: int, num_heads: int, bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim_self // num_heads) ** -0.5
        self.to_queries = nn.Linear(dim_self, dim_self, bias=bias)
        self.to_keys_values = nn.Linear(dim_ref, dim_self * 2, bias=bias)
        self.project = nn.Linear(dim_self, dim_self)

    def forward(self, x, y, key_mask=None):
        b, n, c = x.shape
        m, h = y.shape[1], self.num_heads
        q = self.to_queries(x).view(b, n, h, c // h).transpose(1, 2)
        kv = self.to_keys_values(y).view(b, m, 2, h, c // h)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        mask = None if key_mask is None else key_mask[:, None, None, :].bool()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.project(out.transpose(1, 2).reshape(b, n, c))


class MlpTransformer(nn.Module):
    def __init__(self, in_dim: int, h_dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(in_dim, h_dim), nn.Linear(h_dim, in_dim)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class TransformerLayer(nn.Module):
    def __init__(self, dim_self: int, dim_ref: int, num_heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim_self)
        self.attn = MultiHeadAttention(dim_self, dim_ref, num_heads)
        self.norm2 = nn.LayerNorm(dim_self)
        self.mlp = MlpTransformer(dim_self, int(dim_self * mlp_ratio))

    def forward(self, x, y=None, key_mask=None):
        h = self.norm1(x)
        x = x + self.attn(h, h if y is None else y, key_mask)
        return x + self.mlp(self.norm2(x))


class TransformerMapper(nn.Module):
    """CLIPCap's transformer mapper: each frame embedding -> ``clip_length`` tokens, followed by the
    learned prefix constants, through self-attention layers; the prefix positions' outputs. An
    image (one frame) is exactly CLIPCap's mapper."""

    def __init__(self, dim_clip: int, dim_embedding: int, prefix_length: int, clip_length: int, num_layers: int,
                 num_heads: int):
        super().__init__()
        self.clip_length = clip_length
        self.linear = nn.Linear(dim_clip, clip_length * dim_embedding)
        self.prefix_const = nn.Parameter(torch.randn(prefix_length, dim_embedding))
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList(
            TransformerLayer(dim_embedding, dim_embedding, num_heads) for _ in range(num_layers))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = frames.shape
        tokens = self.linear(frames).view(b, t * self.clip_length, -1)
        prefix = self.prefix_const.unsqueeze(0).expand(b, -1, -1)
        x = torch.cat([tokens, prefix], dim=1)
        key_mask = torch.cat([mask.repeat_interleave(self.clip_length, 1),
                              torch.ones(b, prefix.shape[1], device=mask.device)], 1)
        for layer in self.transformer.layers:
            x = layer(x, key_mask=key_mask)
        return x[:, tokens.shape[1]:]


class CrossMapper(nn.Module):
    """Seed 000's ``--cross`` mapper as written (juexZZ/NYUFall22-CVProject-CLIPVideoCap, train_vtt.py,
    ``CrossTransformerMapper``): each frame embedding projected to the LM width by ``linear``, then learned prefix
    tokens that cross-attend to the projected frames in every one of ``num_layers`` layers (its ``Transformer``
    without ``enc_dec``: the prefix tokens never attend to each other). Seed 000's key layout, so its checkpoints
    load one to one. Padded frames are masked out (seed 000 always had 28 real frames)."""

    def __init__(self, dim_clip: int, dim_embedding: int, prefix_length: int, num_layers: int, num_heads: int):
        super().__init__()
        self.linear = nn.Linear(dim_clip, dim_embedding)
        self.prefix_const = nn.Parameter(torch.randn(prefix_length, dim_embedding))
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList(
            TransformerLayer(dim_embedding, dim_embedding, num_heads) for _ in range(num_layers))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        frames = self.linear(frames)
        x = self.prefix_const.unsqueeze(0).expand(frames.shape[0], -1, -1)
        for layer in self.transformer.layers:
            x = layer(x, frames, mask)
        return x


class CrossSelfMapper(nn.Module):
    """Learned prefix tokens that alternately cross-attend to the raw frame embeddings and attend to each other
    (2 x ``num_layers`` layers, CLIPCap's encoder-decoder ``Transformer`` layout): vcap's variant, mapper
    ``cross_self``; seed 000's is ``cross``."""

    def __init__(self, dim_clip: int, dim_embedding: int, prefix_length: int, num_layers: int, num_heads: int):
        super().__init__()
        self.prefix_const = nn.Parameter(torch.randn(prefix_length, dim_embedding))
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList(
            TransformerLayer(dim_embedding, dim_clip if i % 2 == 0 else dim_embedding, num_heads)
            for i in range(2 * num_layers))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.prefix_const.unsqueeze(0).expand(frames.shape[0], -1, -1)
        for i, layer in enumerate(self.transformer.layers):
            x = layer(x, frames, mask) if i % 2 == 0 else layer(x)
        return x


@torch.no_grad()
def clipcap_beam_search(stepper: CausalPrefix, n: int, beam: int, max_len: int, stop: int, min_len: int = 0,
                        temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIPCap's ``generate_beam`` (predict.py) for ``n`` prefixes at once: ``beam`` beams from the first token's
    top ``beam``; each step ranks beam x vocabulary candidates by their summed log-probability divided by their
    length; a beam that has produced ``stop`` keeps its score and length and is extended with token 0 at no cost;
    at most ``max_len`` tokens (its ``entry_length``). ``min_len``: tokens before ``stop`` may end a caption
    (predict.py has none: 0). Returns ((n, beam, L) token ids, (n, beam) lengths), each video's beams best first
    by average log-probability."""
    def logprobs(logits, step):
        lp = (logits / (temperature if temperature > 0 else 1.0)).softmax(-1).log()
        if step < min_len:
            lp[:, stop] = -float("inf")
        return lp

    lp = logprobs(stepper.start(beam)[::beam], 0)  # every beam's copy of the prefix is the same at first
    scores, tokens = lp.topk(beam, -1)  # (n, beam)
    scores, tokens = scores.reshape(-1), tokens.reshape(-1, 1)
    lengths = torch.ones(n * beam, device=scores.device)
    stopped = tokens[:, 0] == stop
    order = None
    base = torch.arange(n, device=scores.device)[:, None] * beam
    for step in range(1, max_len):
        if stopped.all():
            break
        lp = logprobs(stepper.next(tokens[:, -1], order), step)
        lp[stopped] = -float("inf")
        lp[stopped, 0] = 0.0
        sums = scores[:, None] + lp
        lengths[~stopped] += 1
        average = (sums / lengths[:, None]).view(n, -1)
        top, idx = average.topk(beam, -1)
        vocab = sums.shape[1]
        order = (base + idx // vocab).view(-1)
        lengths, stopped = lengths[order], stopped[order]
        nxt = (idx % vocab).view(-1)
        tokens = torch.cat([tokens[order], nxt[:, None]], dim=1)
        scores = top.view(-1) * lengths
        stopped = stopped | (nxt == stop)
    rank = (scores / lengths).view(n, beam).argsort(dim=1, descending=True)
    pick = (base + rank).view(-1)
    return tokens[pick].view(n, beam, -1), lengths[pick].view(n, beam).long()


def clipcap_filter(sd: dict, model: nn.Module) -> tuple[dict, list[str]]:
    """CLIPCap's own files map one to one (``clip_project.*``, ``gpt.*``); GPT-2's old attention-mask buffers
    (``attn.bias``, ``attn.masked_bias``), which transformers no longer keeps, are ignored."""
    own = model.state_dict()
    old_buffers = [k for k in sd if k not in own and k.startswith("gpt.") and k.endswith((".attn.bias", ".attn.masked_bias"))]
    return {k: v for k, v in sd.items() if k not in old_buffers}, old_buffers


def load_clipcap_weights(model: nn.Module, path: str):
    """CLIPCap's released files into ``model`` under the one loading policy; they fill the mapper and the LM
    (CLIP comes from ``clip_pretrained``)."""
    return load_state(model, read_state_dict(path), str(path), "model.clipcap_weights", filter_fn=clipcap_filter,
                      scope=("clip_project.", "gpt."))


@registry.register_model("clipcap")
class CLIPCap(Captioner):
    """Captioner: frozen CLIP image embeddings of each frame -> mapper -> prefix -> causal LM.

    Args:
        tokenizer: ``word`` (trained from the captions), a word-tokenizer file, or a Hugging Face
            tokenizer id / directory (``gpt2``).
        clip_config / clip_pretrained: the CLIP vision tower with its projection, from a config
            mapping (from scratch) or a transformers id / directory (``openai/clip-vit-base-patch32``).
        clip_resnet: a CLIP ResNet tower instead of the ViT (``RN50``, ``RN101``, ``RN50x4``, or a mapping of
            OpenAI's ``layers``, ``width``, ``output_dim``, ``image_size``; see ``vcap.models.clip_resnet``);
            ``clip_pretrained`` is then OpenAI's file (``RN50x4.pt``), a timm-layout file or directory, or
            a hub id in the local cache (``timm/resnet50x4_clip.openai``).
        lm_config / lm_pretrained: the causal LM, from a config mapping (``model_type`` included,
            e.g. gpt2) or an id / directory.
        mapper: ``mlp`` (mean of the frame embeddings -> hidden -> prefix, Tanh), ``transformer``
            (CLIPCap's, over ``clip_length`` tokens per frame), ``cross`` (seed 000's: the frame embeddings
            projected to the LM width, then prefix tokens that cross-attend to them in every layer),
            ``cross_self`` (prefix tokens alternately cross-attend to the raw frame embeddings and to each other).
        prefix_length, clip_length, mapper_layers, mapper_heads: mapper sizes (CLIPCap: 10 or 40, 10
            or 40, 8, 8).
        only_prefix: keep the LM frozen (CLIPCap's ``--only_prefix``); otherwise it is fine-tuned.
        normalize_prefix: L2-normalise each CLIP embedding first.
        max_txt_len: caption tokens including the end-of-sequence token.
        freeze_clip: CLIPCap keeps CLIP frozen (and features can be cached); off only for a CLIP trained
            from scratch, such as the offline demo's.
        clipcap_weights: one of CLIPCap's released files (``coco_prefix-*.pt``, ``conceptual_weights.pt``,
            ``transformer_weights.pt``: keys ``clip_project.*`` and ``gpt.*``), loaded safely with a report.
        stop_token: the text that ends a caption, CLIPCap's way: its released models were trained on captions
            ending in "." with no end-of-sequence token, and predict.py stops at the first "." (the cards of the
            released models set it). Captions then train with it as their last token, and decoding is predict.py's:
            beam search as its ``generate_beam`` (see ``clipcap_beam_search``), one beam greedily as its
            ``generate2`` (whose top-p filter before an argmax leaves it greedy), ``run.generate.max_len`` as its
            ``entry_length``; ``use_nucleus_sampling`` samples for real. None: the tokenizer's end-of-sequence
            token and transformers' ``generate``.
    """

    VISION_CONFIG_KEY, PRETRAINED_KEY = "clip_config", "clip_pretrained"

    @classmethod
    def input_size(cls, section) -> tuple[int | None, str]:
        """A ResNet tower's size is its spec's (OpenAI's for RN50 / RN101 / RN50x4)."""
        resnet = section.get("clip_resnet")
        if section.get("clip_config") is None and resnet is not None:
            size = OPENAI_RESNETS.get(resnet, {}).get("image_size") if isinstance(resnet, str) \
                else resnet.get("image_size")
            return (int(size), "model.clip_resnet") if size else (None, "")
        return super().input_size(section)

    PRETRAINED_MODEL_CONFIG_DICT = {"tiny": "configs/models/clipcap/tiny.yaml",
                                    "coco_mlp": "configs/models/clipcap/coco_mlp.yaml",
                                    "coco_transformer": "configs/models/clipcap/coco_transformer.yaml",
                                    "video_cross": "configs/models/clipcap/video_cross.yaml"}

    def __init__(self, tokenizer: str = "word", clip_config: dict | None = None, clip_pretrained: str | None = None,
                 lm_config: dict | None = None, lm_pretrained: str | None = None,
                 mapper: Literal["mlp", "transformer", "cross", "cross_self"] = "mlp",
                 prefix_length: PositiveInt = 10, clip_length: PositiveInt = 10, mapper_layers: PositiveInt = 8,
                 mapper_heads: PositiveInt = 8, only_prefix: bool = False,
                 normalize_prefix: bool = False, max_txt_len: PositiveInt = 32, clipcap_weights: str | None = None,
                 freeze_clip: bool = True, clip_resnet: str | dict | None = None, stop_token: str | None = None):
        super().__init__()
        self.tokenizer = load_text_tokenizer(tokenizer)
        self.stop_token = stop_token
        if stop_token is not None:
            ids = self.tokenizer.ids(stop_token)
            if not ids:
                raise ValueError(f"model.stop_token {stop_token!r}: the tokenizer encodes it as no token")
            self._stop_id = ids[0]  # predict.py's tokenizer.encode(stop_token)[0]
        self.clip_report = None
        if clip_resnet is not None:
            self.clip = CLIPResNet(**resnet_spec(clip_resnet))
            if clip_pretrained:
                self.clip_report = load_clip_resnet(self.clip, clip_pretrained)
        elif clip_pretrained:
            self.clip = load_transformers(CLIPVisionModelWithProjection, clip_pretrained, "CLIP",
                                          "model.clip_pretrained")
        elif clip_config is not None:
            self.clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_config))
        else:
            raise ValueError("clipcap needs clip_config or clip_pretrained")
        self.gpt = pretrained_or_new(
            lm_pretrained, lambda p: load_transformers(AutoModelForCausalLM, p, "causal LM", "model.lm_pretrained"),
            lm_config, self._new_lm, "clipcap needs model.lm_config or model.lm_pretrained")
        if self.gpt.get_input_embeddings().num_embeddings < len(self.tokenizer):
            raise ValueError(f"the tokenizer has {len(self.tokenizer)} tokens but the LM's embedding only "
                             f"{self.gpt.get_input_embeddings().num_embeddings}")
        self.freeze_clip = freeze_clip
        self.freeze(*[name for name, frozen in (("clip", freeze_clip), ("gpt", only_prefix)) if frozen])
        dim = self.gpt.get_input_embeddings().embedding_dim
        dim_clip = self.clip.output_dim if clip_resnet is not None else self.clip.config.projection_dim
        if mapper == "mlp":
            self.clip_project = MLP((dim_clip, (dim * prefix_length) // 2, dim * prefix_length))
        elif mapper == "transformer":
            self.clip_project = TransformerMapper(dim_clip, dim, prefix_length, clip_length, mapper_layers, mapper_heads)
        else:
            mapper_cls = CrossMapper if mapper == "cross" else CrossSelfMapper
            self.clip_project = mapper_cls(dim_clip, dim, prefix_length, mapper_layers, mapper_heads)
        self.mapper, self.prefix_length, self.dim = mapper, prefix_length, dim
        self.normalize_prefix, self.max_txt_len, self.only_prefix = normalize_prefix, max_txt_len, only_prefix
        self._sourced_keys = self.sourced(clip_pretrained, "clip.") | self.sourced(lm_pretrained, "gpt.")
        self.load_report = load_clipcap_weights(self, clipcap_weights) if clipcap_weights else None

    def _new_lm(self, lm_config: dict) -> torch.nn.Module:
        """A causal LM from its config mapping, with the tokenizer's vocabulary size and special ids unless given."""
        cfg = dict(lm_config)
        cfg.setdefault("vocab_size", len(self.tokenizer))
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            cfg.setdefault(key, getattr(self.tokenizer, key))
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))

    # -- shared encoding: video -> LM prefix (forward, generate and score_sequences all use it) ----------
    @property
    def frozen_frame_encoder(self) -> bool:
        return self.freeze_clip

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """CLIP's embedding of every frame (B, T, D)."""
        out = self.clip(pixel_values=video.flatten(0, 1))
        return getattr(out, "image_embeds", out).view(*video.shape[:2], -1)  # a ResNet tower gives a tensor

    def frame_features(self, samples: dict) -> tuple[torch.Tensor, torch.Tensor]:
        emb, mask = super().frame_features(samples)
        return (F.normalize(emb, dim=-1) if self.normalize_prefix else emb), mask

    def prefix_from_embeddings(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mapper == "mlp":
            pooled = (emb * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            return self.clip_project(pooled).view(emb.shape[0], self.prefix_length, self.dim)
        return self.clip_project(emb, mask)

    def encode_video(self, samples: dict) -> torch.Tensor:
        return self.prefix_from_embeddings(*self.frame_features(samples))

    def _token_logprobs(self, prefix: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return prefix_logprobs(self.gpt, prefix, ids, mask)

    @property
    def end_token_id(self) -> int:
        """``stop_token``'s id where one is set, else the tokenizer's end-of-sequence token."""
        return self._stop_id if self.stop_token is not None else self.tokenizer.eos_token_id

    @torch.no_grad()
    def generate_ids(self, samples: dict, **settings) -> torch.Tensor:
        """``run.generate``'s settings; with a ``stop_token``, CLIPCap's own decoding (see the class)."""
        gen = generate_config(**settings)
        prefix = self.encode_video(samples)
        if self.stop_token is None:
            return hf_generate(self.gpt, prefix, self.tokenizer, gen)
        if gen.use_nucleus_sampling or gen.num_beams == 1:  # generate2's greedy loop, or nucleus sampling (no top-k)
            no_context = torch.empty(len(prefix), 0, dtype=torch.long, device=prefix.device)
            return reference_search(CausalPrefix(self.gpt, prefix), no_context, gen, self._stop_id,
                                    self.tokenizer.pad_token_id, gen.max_len, top_k=None)
        if gen.repetition_penalty != 1.0 or gen.length_penalty != 1.0:
            raise ValueError("CLIPCap's beam search (stop_token) averages log-probabilities over length and has no "
                             "repetition_penalty or length_penalty; leave them at 1.0")
        tokens, lengths = clipcap_beam_search(CausalPrefix(self.gpt, prefix), len(prefix), gen.num_beams, gen.max_len,
                                              self._stop_id, gen.min_len, gen.temperature)
        rows = [row[:n].tolist() for seqs, lens in zip(tokens, lengths)
                for row, n in zip(seqs[:gen.num_captions], lens[:gen.num_captions])]
        return pad_rows(rows, self.tokenizer.pad_token_id)[0].to(prefix.device)
