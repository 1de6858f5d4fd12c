"""X-CLIP + LSTM video captioner (the design of seed 002, oayk23/video-captioning-lstm).

X-CLIP (frozen) turns the clip into one video embedding (its vision tower with cross-frame
communication, projection and multi-frame integration transformer); that embedding, mapped to the
LSTM width when the widths differ, is the initial hidden and cell state of every LSTM layer. The
decoder reads a SentencePiece vocabulary trained on the training captions (``tokenizer: spm``).

Decoding carries the LSTM state one token at a time; greedy, beam search and sampling share ``generate_ids``;
evaluation uses all references of a video through the shared captioning task; the splits are the dataset's (by
video).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from transformers import XCLIPConfig, XCLIPModel

from vcap.common.registry import registry
from vcap.common.validation import Fraction, PositiveInt
from vcap.models.base_model import Captioner, load_transformers, pretrained_or_new
from vcap.models.generation import generate_config, token_logprobs
from vcap.processors.tokenizer import load_text_tokenizer, pad_rows


@registry.register_model("xclip_lstm")
class XCLIPLSTMCaptioner(Captioner):
    """Args:
        tokenizer: ``spm`` (SentencePiece trained on the training captions by the task, stored in
            every checkpoint), or a SentencePiece ``.model`` file / Hugging Face tokenizer.
        spm_vocab_size: pieces of the trained SentencePiece vocabulary (seed 002: 10000).
        spm_model_type: ``unigram`` (SentencePiece's default) or ``bpe`` (better on tiny vocabularies).
        xclip_config: an ``XCLIPConfig`` mapping for a model built from scratch (its
            ``vision_config.mit_hidden_size`` must equal ``projection_dim``).
        pretrained: a transformers X-CLIP id or directory (``microsoft/xclip-base-patch32-16-frames``).
        freeze_xclip: keep X-CLIP fixed (its video embeddings can then be cached with
            ``vcap extract-features``).
        embed_dim, hidden_dim, num_layers, dropout: the LSTM decoder (seed 002: 512, 512, 4).
        max_txt_len: caption tokens (with EOS) used for training.
    """

    VISION_CONFIG_KEY = "xclip_config"

    PRETRAINED_MODEL_CONFIG_DICT = {"tiny": "configs/models/xclip_lstm/tiny.yaml",
                                    "base16": "configs/models/xclip_lstm/base16.yaml"}

    def __init__(self, tokenizer: str = "spm", spm_vocab_size: PositiveInt = 10000,
                 spm_model_type: Literal["unigram", "bpe"] = "unigram", xclip_config: dict | None = None,
                 pretrained: str | None = None, freeze_xclip: bool = True, embed_dim: PositiveInt = 512,
                 hidden_dim: PositiveInt = 512, num_layers: PositiveInt = 4, dropout: Fraction = 0.1,
                 max_txt_len: PositiveInt = 32):
        super().__init__()
        self.tokenizer = load_text_tokenizer(tokenizer)
        xclip = pretrained_or_new(pretrained, lambda p: load_transformers(XCLIPModel, p, "X-CLIP"), xclip_config,
                                  self._new_xclip, "xclip_lstm needs model.xclip_config (text_config, vision_config, "
                                  "projection_dim) or model.pretrained")
        # the captioner needs the video side only: vision tower, projection, multi-frame integration
        self.vision_model, self.visual_projection, self.mit = xclip.vision_model, xclip.visual_projection, xclip.mit
        self.num_frames = xclip.config.vision_config.num_frames
        proj = xclip.config.projection_dim
        self.pretrained, self.freeze_xclip = pretrained, freeze_xclip
        if freeze_xclip:
            self.freeze("vision_model", "visual_projection", "mit")
        self.init_state = torch.nn.Identity() if proj == hidden_dim else torch.nn.Linear(proj, hidden_dim)
        self.embed = torch.nn.Embedding(len(self.tokenizer), embed_dim, padding_idx=self.tokenizer.pad_token_id)
        self.lstm = torch.nn.LSTM(embed_dim, hidden_dim, num_layers, batch_first=True,
                                  dropout=dropout if num_layers > 1 else 0.0)
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(hidden_dim, len(self.tokenizer))
        self.num_layers, self.max_txt_len = num_layers, max_txt_len
        self._sourced_keys = self.sourced(pretrained, "vision_model.", "visual_projection.", "mit.")

    @staticmethod
    def _new_xclip(xclip_config: dict) -> XCLIPModel:
        cfg = XCLIPConfig(**xclip_config)
        if cfg.vision_config.mit_hidden_size != cfg.projection_dim:
            raise ValueError(f"xclip_config: vision_config.mit_hidden_size ({cfg.vision_config.mit_hidden_size}) "
                             f"must equal projection_dim ({cfg.projection_dim}): the MIT reads projected frames")
        return XCLIPModel(cfg)

    # -- the one shared encoding path: video -> initial LSTM state ---------------------------------
    @property
    def frozen_frame_encoder(self) -> bool:
        return self.freeze_xclip

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """X-CLIP's video embedding (B, 1, D)."""
        if video.shape[1] != self.num_frames:
            raise ValueError(f"X-CLIP was built for {self.num_frames} frames (vision_config.num_frames) but got "
                             f"{video.shape[1]}: set the processors' num_frames to {self.num_frames}")
        b, t = video.shape[:2]
        # X-CLIP's get_video_features: the vision tower's pooled frames, projected, then the MIT
        frames = self.visual_projection(self.vision_model(pixel_values=video.flatten(0, 1)).pooler_output)
        return self.mit(frames.view(b, t, -1)).pooler_output.unsqueeze(1)

    def encode_video(self, samples: dict) -> torch.Tensor:
        """(B, hidden) initial state of every LSTM layer."""
        return self.init_state(self.frame_features(samples)[0][:, 0])

    def _state(self, visual: torch.Tensor):
        h = visual.unsqueeze(0).repeat(self.num_layers, 1, 1).contiguous()
        return h, h.clone()

    def step_logits(self, tokens: torch.Tensor, state):
        """One LSTM step: (N,) previous tokens -> ((N, V) logits, new state)."""
        out, state = self.lstm(self.embed(tokens).unsqueeze(1), state)
        return self.head(self.drop(out[:, 0])), state

    def sequence_logits(self, visual: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher forcing over whole sequences: (B, L) input ids -> (B, L, V) logits."""
        out, _ = self.lstm(self.embed(inputs), self._state(visual))
        return self.head(self.drop(out))

    def _token_logprobs(self, visual: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor):
        start = torch.full_like(target_ids[:, :1], self.tokenizer.bos_token_id)
        logits = self.sequence_logits(visual, torch.cat([start, target_ids[:, :-1]], dim=1))
        return token_logprobs(logits, target_ids, target_mask)

    @torch.no_grad()
    def generate_ids(self, samples: dict, **settings) -> torch.Tensor:
        """``run.generate``'s settings: greedy, beam search (scores divided by length, the end token counted) or
        nucleus sampling, carrying the LSTM state; ``max_len`` / ``min_len`` count new tokens."""
        gen = generate_config(**settings)
        unsupported = {k: v for k, v in (("repetition_penalty", gen.repetition_penalty),
                                         ("length_penalty", gen.length_penalty)) if v != 1.0}
        if unsupported:
            raise ValueError(f"xclip_lstm decodes without {sorted(unsupported)} (got {unsupported}); leave them at 1.0")
        if gen.min_len > gen.max_len:
            raise ValueError(f"min_len {gen.min_len} > max_len {gen.max_len}")
        visual = self.encode_video(samples)
        if gen.use_nucleus_sampling or gen.num_beams == 1:
            k = gen.num_captions if gen.use_nucleus_sampling else 1
            return self._sample(visual.repeat_interleave(k, 0), gen.max_len, gen.min_len, gen.use_nucleus_sampling,
                                gen.temperature, gen.top_p)
        return self._beam(visual, gen.num_beams, gen.max_len, gen.min_len, gen.num_captions)

    def _processors(self, min_new: int, device, temperature: float = 1.0, top_p: float = 1.0):
        """transformers' logits processors, as its generate builds them: no pad or BOS, no end before
        ``min_new`` tokens; for sampling, temperature then nucleus (top-p)."""
        from transformers import (
            LogitsProcessorList,
            MinNewTokensLengthLogitsProcessor,
            SuppressTokensLogitsProcessor,
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        tok = self.tokenizer
        out = LogitsProcessorList([
            SuppressTokensLogitsProcessor([tok.pad_token_id, tok.bos_token_id], device=device),
            MinNewTokensLengthLogitsProcessor(1, min_new, tok.eos_token_id, device=device)])
        if temperature != 1.0:
            out.append(TemperatureLogitsWarper(temperature))
        if top_p < 1.0:
            out.append(TopPLogitsWarper(top_p))
        return out

    def _next_logprobs(self, tokens, state, seqs: torch.Tensor, processors):
        """Log-probabilities of the next token after ``seqs`` (BOS first), through ``processors``."""
        logits, state = self.step_logits(tokens, state)
        return processors(seqs, F.log_softmax(logits.float(), -1)), state

    def _sample(self, visual, max_new, min_new, do_sample, temperature, top_p) -> torch.Tensor:
        n, eos, pad = visual.shape[0], self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        state = self._state(visual)
        seqs = torch.full((n, 1), self.tokenizer.bos_token_id, dtype=torch.long, device=visual.device)
        procs = self._processors(min_new, visual.device, *((temperature, top_p) if do_sample else ()))
        done = torch.zeros(n, dtype=torch.bool, device=visual.device)
        for _ in range(max_new):
            lp, state = self._next_logprobs(seqs[:, -1], state, seqs, procs)
            tokens = torch.multinomial(F.softmax(lp, -1), 1)[:, 0] if do_sample else lp.argmax(-1)
            tokens = tokens.masked_fill(done, pad)
            seqs = torch.cat([seqs, tokens[:, None]], dim=1)
            done |= tokens == eos
            if done.all():
                break
        return seqs[:, 1:]

    def _beam(self, visual, k: int, max_new: int, min_new: int, n_return: int) -> torch.Tensor:
        b, eos, pad = visual.shape[0], self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        dev = visual.device
        h, c = self._state(visual.repeat_interleave(k, 0))
        tokens = torch.full((b * k,), self.tokenizer.bos_token_id, dtype=torch.long, device=dev)
        scores = torch.full((b, k), -float("inf"), device=dev)
        scores[:, 0] = 0.0  # all beams start identical: expand from one
        seqs = torch.empty(b * k, 0, dtype=torch.long, device=dev)
        procs, bos = self._processors(min_new, dev), tokens[:, None].clone()
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
        for i in range(max_new):
            lp, (h, c) = self._next_logprobs(tokens, (h, c), torch.cat([bos, seqs], 1), procs)
            v = lp.shape[-1]
            cand = (scores.view(b * k, 1) + lp).view(b, k * v)
            top, idx = cand.topk(2 * k, dim=-1)  # room for beams that end here
            beam_of, tok_of = idx // v, idx % v
            new_scores = torch.full((b, k), -float("inf"), device=dev)
            new_src = torch.zeros(b, k, dtype=torch.long, device=dev)
            new_tok = torch.full((b, k), pad, dtype=torch.long, device=dev)
            for row in range(b):
                j = 0
                for s, src, t in zip(top[row].tolist(), beam_of[row].tolist(), tok_of[row].tolist()):
                    if s == -float("inf"):
                        break
                    if t == eos:  # a finished caption, scored by its length (EOS included)
                        finished[row].append((s / (i + 1), seqs[row * k + src].tolist() + [eos]))
                        continue
                    if j < k:
                        new_scores[row, j], new_src[row, j], new_tok[row, j] = s, src, t
                        j += 1
            flat_src = (new_src + torch.arange(b, device=dev)[:, None] * k).view(-1)
            seqs = torch.cat([seqs[flat_src], new_tok.view(-1, 1)], dim=1)
            h, c = h[:, flat_src], c[:, flat_src]
            scores, tokens = new_scores, new_tok.view(-1)
            # transformers' stopping rule (BeamHypotheses.is_done, early_stopping=False): the best open beam scored at
            # its current length. A heuristic, as there: a longer beam's mean log-probability can still rise
            best_open = (scores / (i + 1)).max(-1).values
            if all(len(f) >= k and min(x[0] for x in sorted(f, reverse=True)[:k]) >= best_open[r]
                   for r, f in enumerate(finished)):
                break
        rows = []
        for r in range(b):
            pool = finished[r] + [(float(scores[r, j]) / seqs.shape[1], seqs[r * k + j].tolist())
                                  for j in range(k) if scores[r, j] > -float("inf")]
            pool.sort(key=lambda x: -x[0])
            rows.extend(seq for _, seq in pool[:n_return])
        return pad_rows(rows, pad)[0].to(dev)
