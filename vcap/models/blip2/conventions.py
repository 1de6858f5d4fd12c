"""What the source of BLIP-2's weights decides beyond the weights: how captions are tokenized and ended,
whether OPT's BOS is a target, the ``ln_vision`` norm and the Flan-T5 activation. One table, read by
``blip2_opt`` and ``blip2_t5``; ``model.conventions`` picks the row and the saved config.yaml shows it.

=============================  =================================  ===================================
                               ``lavis`` (LAVIS 1.0.2 code)        ``transformers`` (Blip2ForCond...)
=============================  =================================  ===================================
OPT end of caption             "\\n" appended, generation stops    the LM config's ``eos_token_id``
                               there (``Blip2OPT.eos_token_id``)   (50118, "\\n", in blip2-opt-2.7b)
empty prompt (OPT)             BOS is scored from the queries      BOS is context, not a target
                               (only padding is masked)            (labels are shifted past it)
``ln_vision`` eps              1e-5 (``nn.LayerNorm`` default)     the vision config's
                                                                   ``layer_norm_eps``
``ln_vision`` with freeze_vit  trains (``freeze_vit`` freezes      frozen with the ViT (it is the
                               ``visual_encoder`` only)            ViT's ``post_layernorm``)
Flan-T5 FFN activation         exact GELU (``dense_act_fn =        the config's (``gelu_new``, tanh
                               "gelu"``)                           approximation, for Flan-T5)
decoding (``run.generate``)    transformers 4.26's search, as      today's ``generate``: ``max_len`` /
                               LAVIS 1.0.2's ``generate`` ran it:  ``min_len`` are ``max_new_tokens`` /
                               ``max_len`` new tokens; OPT's BOS   ``min_new_tokens``, beams normalised
                               and prompt ids (T5's decoder start) by their new tokens
                               count in ``min_len`` and in the
                               beam length normalisation
=============================  =================================  ===================================

``seed003`` is ``lavis`` as seed 003's fork of LAVIS ran it (chunhuizng/mllm-video-captioner, transformers 4.30.0
pinned in its requirements.txt): its ``Blip2OPT.generate`` hands OPT ``inputs_embeds`` with ``max_length=max_len``,
so 4.30 starts ``input_ids`` from one dummy BOS that ``max_len`` and ``min_len`` both count (whatever the prompt),
and 4.30's beam search judges whether the running beams can still win one token longer than 4.26 did (both LMs).
Everything but the decoding is ``lavis``'s.

Either way (not a convention but what both codes do): the prompt and the caption are tokenized as one
string, "<prompt> <caption>", so the caption's first word keeps its leading space in byte-level BPE
("a video of a man" -> ``... of, Ġa, Ġman``, not ``... of, a, Ġman``), and the prompt is masked out of
the loss by the length of its own tokenization (LAVIS's ``prompt_length``). T5 reads the prompt in
its encoder and the caption in its decoder, each tokenized alone; SentencePiece starts each with the
word-start marker, so nothing is lost there.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Blip2Conventions:
    source: str
    newline_ends_opt_captions: bool
    score_bos_without_prompt: bool
    ln_vision_eps: float | None  # None: the vision config's layer_norm_eps
    train_ln_vision: bool
    t5_activation: str | None  # None: the T5 config's dense_act_fn
    # decoding: None is today's generate; else the transformers release whose search the reference ran
    search: str | None = None
    opt_counted: str = "context"  # OPT's ids that release counted before the caption: BOS and prompt, or "bos" alone
    opt_max_counts_bos: bool = False  # whether max_len counts that BOS too (max_length instead of max_new_tokens)


_LAVIS = dict(newline_ends_opt_captions=True, score_bos_without_prompt=True, ln_vision_eps=1e-5, train_ln_vision=True,
              t5_activation="gelu")
TABLE = {
    "lavis": Blip2Conventions("lavis", **_LAVIS, search="4.26"),
    "seed003": Blip2Conventions("seed003", **_LAVIS, search="4.30", opt_counted="bos", opt_max_counts_bos=True),
    "transformers": Blip2Conventions("transformers", newline_ends_opt_captions=False, score_bos_without_prompt=False,
                                     ln_vision_eps=None, train_ln_vision=False, t5_activation=None),
}


def resolve_source(conventions: str, lavis_checkpoint) -> str:
    """``auto``: ``lavis`` when a LAVIS checkpoint is loaded, else ``transformers`` (also for a model built
    from ``blip2_config``, whose parts are transformers modules)."""
    if conventions == "auto":
        return "lavis" if lavis_checkpoint else "transformers"
    return conventions


def join_prompt(prompt: str, caption: str) -> str:
    """The one string LAVIS tokenizes: its caption processor prepends "a photo of " to the caption."""
    prompt = prompt.rstrip()
    return f"{prompt} {caption}" if prompt else caption
