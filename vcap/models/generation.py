"""Caption decoding engines for the prefix captioners (BLIP-2, CLIPCap). Every captioner reads one set of settings
(``run.generate``: ``GenerateConfig``, LAVIS's names; ``generate_config`` here); xclip_lstm steps its own LSTM state
(``XCLIPLSTMCaptioner.generate_ids``) and video_llm calls its transformers model's ``generate``. The two engines:

- ``hf_generate``: transformers' own ``generate`` on a prefix of input embeddings (vcap's convention: ``max_len``
  and ``min_len`` count new tokens, as ``max_new_tokens`` / ``min_new_tokens``).
- ``reference_search``: greedy, nucleus sampling and beam search exactly as transformers 4.26 (LAVIS 1.0.2) or 4.30
  (seed 003) ran them for LAVIS's BLIP-2. Those releases count the ids already in ``input_ids`` (OPT's BOS and
  prompt; T5's decoder start token) in ``min_length`` and in the beam-search length normalisation, which today's
  ``generate`` no longer does; a reference number is only reproduced with its own counting.

Both return the new token ids only, padded after the end token.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Literal

import torch
import torch.nn.functional as F

from vcap.common.schema import GenerateConfig

GENERATE_KEYS = tuple(f.name for f in dataclasses.fields(GenerateConfig))
RENAMED = {"max_new_tokens": "max_len", "min_new_tokens": "min_len", "do_sample": "use_nucleus_sampling",
           "num_return_sequences": "num_captions"}


def generate_config(**settings) -> GenerateConfig:
    """``GenerateConfig`` from keyword settings (LAVIS's names), checked: an unknown key (or transformers' name for
    one) and an impossible combination are errors that say what to use instead."""
    problems = [f"{k}: use {RENAMED[k]!r} (run.generate uses LAVIS's names)" if k in RENAMED else
                f"{k}: not a decoding setting; expected one of {list(GENERATE_KEYS)}" for k in settings
                if k not in GENERATE_KEYS]
    if problems:
        raise TypeError("; ".join(problems))
    gen = GenerateConfig(**settings)
    if gen.max_len < 1 or gen.min_len < 0 or gen.num_beams < 1 or gen.num_captions < 1:
        raise ValueError(f"decoding needs max_len >= 1, min_len >= 0, num_beams >= 1 and num_captions >= 1; got "
                         f"{dataclasses.asdict(gen)}")
    if not gen.use_nucleus_sampling and gen.num_captions > gen.num_beams:
        raise ValueError(f"num_captions ({gen.num_captions}) > num_beams ({gen.num_beams}): beam search returns at "
                         f"most its beams (use_nucleus_sampling draws any number)")
    return gen


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L) log-probability of each token of ``ids`` under the (B, L, V) ``logits`` at its position, in fp32
    (zero where ``mask`` is 0)."""
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, ids.unsqueeze(-1)).squeeze(-1) * mask


def prefix_logprobs(lm, prefix: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-probability of each token of ``ids`` given ``prefix`` embeddings before it, for a causal LM
    (zero where ``mask`` is 0): the token at position P + i is predicted from position P + i - 1.

    Only the L positions that predict a token of ``ids`` go through the LM head (``logits_to_keep``), not
    the prefix's (32 query positions x a 50k vocabulary for BLIP-2), and the last token is not fed."""
    embeds = torch.cat([prefix, lm.get_input_embeddings()(ids[:, :-1])], dim=1)
    attn = torch.cat([torch.ones(prefix.shape[:2], dtype=mask.dtype, device=mask.device), mask[:, :-1]], dim=1)
    return token_logprobs(lm(inputs_embeds=embeds, attention_mask=attn, logits_to_keep=ids.shape[1]).logits, ids, mask)


def hf_kwargs(gen: GenerateConfig) -> dict:
    """``generate``'s arguments for ``gen`` under vcap's convention (lengths in new tokens; sampling uses one beam,
    as LAVIS's nucleus sampling does)."""
    sample = gen.use_nucleus_sampling
    beams = 1 if sample else gen.num_beams
    return {"num_beams": beams, "max_new_tokens": gen.max_len, "min_new_tokens": gen.min_len, "do_sample": sample,
            **({"top_p": gen.top_p, "temperature": gen.temperature} if sample else {}),
            "repetition_penalty": gen.repetition_penalty, "num_return_sequences": gen.num_captions,
            **({"length_penalty": gen.length_penalty, "early_stopping": True} if beams > 1 else {})}


@torch.no_grad()
def hf_generate(lm, prefix: torch.Tensor, tokenizer, gen: GenerateConfig,
                eos_token_id: int | None = None) -> torch.Tensor:
    """transformers' ``generate`` after ``prefix`` embeddings (a causal LM's, or an encoder-decoder's encoder
    input). ``eos_token_id``: where a caption ends (default the tokenizer's EOS)."""
    if gen.min_len > gen.max_len:
        raise ValueError(f"min_len {gen.min_len} > max_len {gen.max_len}")
    mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    return lm.generate(inputs_embeds=prefix, attention_mask=mask, **hf_kwargs(gen), eos_token_id=eos,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)


# -- transformers 4.26 / 4.30 decoding, as LAVIS 1.0.2 and seed 003 ran it ---------------------------------------
class CausalPrefix:
    """Next-token logits of a causal LM after a prefix of embeddings, one token at a time with its KV cache."""

    def __init__(self, lm, prefix: torch.Tensor):
        self.lm, self.prefix, self.cache = lm, prefix, None
        # transformers 5 renamed past_key_values to cache (the old name warns until 5.40)
        self._cache_arg = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"

    def _run(self, **inputs) -> torch.Tensor:
        out = self.lm(**inputs, **{self._cache_arg: self.cache}, use_cache=True)
        self.cache = out[self._cache_arg]
        return out.logits[:, -1].float()

    def start(self, k: int) -> torch.Tensor:
        """Logits after the prefix, each row repeated ``k`` times (the beams or samples of one video)."""
        emb = self.prefix.repeat_interleave(k, 0)
        self.mask = torch.ones(emb.shape[:2], dtype=torch.long, device=emb.device)
        self.cache = None
        return self._run(inputs_embeds=emb, attention_mask=self.mask)

    def next(self, tokens: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
        """Logits after feeding ``tokens`` (N,), the rows first reordered by ``order`` (beam search)."""
        if order is not None:
            self.cache.reorder_cache(order)
        return self._feed(tokens)

    def _feed(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)
        return self._run(input_ids=tokens[:, None], attention_mask=self.mask)


class Seq2SeqPrefix(CausalPrefix):
    """Next-token logits of an encoder-decoder LM whose encoder reads a prefix of embeddings; the decoder starts
    from ``start_id``."""

    def __init__(self, lm, prefix: torch.Tensor, start_id: int):
        super().__init__(lm, prefix)
        self.start_id = start_id

    def start(self, k: int) -> torch.Tensor:
        emb = self.prefix.repeat_interleave(k, 0)
        self.enc_mask = torch.ones(emb.shape[:2], dtype=torch.long, device=emb.device)
        self.encoded = self.lm.get_encoder()(inputs_embeds=emb, attention_mask=self.enc_mask)
        self.cache = None
        return self._feed(torch.full((len(emb),), self.start_id, dtype=torch.long, device=emb.device))

    def _feed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._run(encoder_outputs=self.encoded, attention_mask=self.enc_mask, decoder_input_ids=tokens[:, None])


class _Hypotheses:
    """transformers 4.26's ``BeamHypotheses``: the ``num_beams`` best finished sequences of one video."""

    def __init__(self, num_beams: int, length_penalty: float):
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.beams: list[tuple[float, torch.Tensor]] = []
        self.worst_score = 1e9

    def add(self, hyp: torch.Tensor, sum_logprobs: float) -> None:
        score = sum_logprobs / (hyp.shape[-1] ** self.length_penalty)  # the length counts the context ids
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, cur_len: int) -> bool:
        if len(self.beams) < self.num_beams:
            return False
        return self.worst_score >= best_sum_logprobs / cur_len ** self.length_penalty


def _processors(gen: GenerateConfig, eos: int, sample: bool, top_k: int | None):
    """4.26's logits processors (repetition penalty, min length over every id so far) and, for sampling, its
    warpers in its order: temperature, top-k, top-p."""
    from transformers import (
        LogitsProcessorList,
        MinLengthLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if gen.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(gen.repetition_penalty))
    if gen.min_len > 0:
        procs.append(MinLengthLogitsProcessor(gen.min_len, eos))
    warpers = LogitsProcessorList()
    if sample:
        if gen.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(gen.temperature))
        if top_k:
            warpers.append(TopKLogitsWarper(top_k))
        if gen.top_p < 1.0:
            warpers.append(TopPLogitsWarper(gen.top_p))
    return procs, warpers


@torch.no_grad()
def reference_search(stepper: CausalPrefix, context: torch.Tensor, gen: GenerateConfig, eos: int, pad: int,
                     max_new: int, release: Literal["4.26", "4.30"] = "4.26", top_k: int | None = 50) -> torch.Tensor:
    """transformers ``release``'s greedy search, sampling (``use_nucleus_sampling``) or beam search over
    ``stepper``'s logits, with ``context`` (B, C) the ids that release had in ``input_ids`` before the first new
    token: ``min_len`` and the beam length normalisation count them, as do the repetition penalty's seen tokens.
    ``max_new``: new tokens at most. 4.30 differs from 4.26 only in beam search's stopping heuristic (it judges
    the running beams one token longer). ``top_k``: the sampling cut (50, those releases' default; None: none).
    With an empty context and ``eos`` any stop token it is plain greedy search or sampling (CLIPCap's ``generate2``).
    Returns (B * num_captions, <= max_new) new ids, padded with ``pad``."""
    b, c = context.shape
    sample = gen.use_nucleus_sampling
    procs, warpers = _processors(gen, eos, sample, top_k)
    if sample or gen.num_beams == 1:
        k = gen.num_captions if sample else 1
        ids = context.repeat_interleave(k, 0)
        logits = stepper.start(k)
        unfinished = torch.ones(len(ids), dtype=torch.bool, device=ids.device)
        for step in range(max_new):
            scores = procs(ids, logits)
            if sample:
                nxt = torch.multinomial(F.softmax(warpers(ids, scores), dim=-1), 1).squeeze(1)
            else:
                nxt = scores.argmax(-1)
            nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad))
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            unfinished &= nxt != eos
            if not unfinished.any() or step == max_new - 1:
                break
            logits = stepper.next(nxt)
        return ids[:, c:]

    nb = gen.num_beams
    ids = context.repeat_interleave(nb, 0)
    beam_scores = torch.zeros(b, nb, device=ids.device)
    beam_scores[:, 1:] = -1e9  # only the first beam's tokens count at the first step
    beam_scores = beam_scores.view(-1)
    hyps = [_Hypotheses(nb, gen.length_penalty) for _ in range(b)]
    done = [False] * b
    logits = stepper.start(nb)
    done_shift = 1 if release == "4.30" else 0
    while True:
        cur_len = ids.shape[1]
        scores = procs(ids, F.log_softmax(logits, dim=-1)) + beam_scores[:, None]
        vocab = scores.shape[-1]
        top_scores, top = scores.view(b, nb * vocab).topk(2 * nb, dim=1)
        src, tok = top // vocab, top % vocab
        next_scores = torch.zeros(b, nb, device=ids.device)
        next_tokens = torch.full((b, nb), pad, dtype=torch.long, device=ids.device)
        next_rows = torch.zeros(b, nb, dtype=torch.long, device=ids.device)  # a finished video's rows read row 0
        for v in range(b):
            if done[v]:
                continue
            j = 0
            for rank in range(2 * nb):
                row = v * nb + int(src[v, rank])
                if int(tok[v, rank]) == eos:
                    if rank < nb:  # an end among the top num_beams candidates finishes a hypothesis
                        hyps[v].add(ids[row].clone(), float(top_scores[v, rank]))
                else:
                    next_scores[v, j], next_tokens[v, j], next_rows[v, j] = top_scores[v, rank], tok[v, rank], row
                    j += 1
                if j == nb:
                    break
            done[v] = done[v] or hyps[v].is_done(float(top_scores[v].max()), cur_len + done_shift)
        beam_scores, order, new = next_scores.view(-1), next_rows.view(-1), next_tokens.view(-1)
        ids = torch.cat([ids[order], new[:, None]], dim=1)
        if all(done) or ids.shape[1] >= c + max_new:
            break
        logits = stepper.next(new, order)
    for v in range(b):  # open beams compete with the finished ones
        if not done[v]:
            for i in range(nb):
                hyps[v].add(ids[v * nb + i], float(beam_scores[v * nb + i]))
    # best first; among equal scores the later hypothesis first, as 4.26's pop() from the ascending sort
    best = [h for hyp in hyps for _, h in sorted(hyp.beams, key=lambda x: x[0])[::-1][:gen.num_captions]]
    width = min(max(len(h) for h in best) + 1, c + max_new)
    out = torch.full((len(best), width), pad, dtype=torch.long, device=ids.device)
    for i, h in enumerate(best):
        out[i, :len(h)] = h
        if len(h) < width:
            out[i, len(h)] = eos
    return out[:, c:]
