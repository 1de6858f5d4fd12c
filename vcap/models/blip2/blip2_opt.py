"""BLIP-2 video captioner with an OPT language model: the queries, BOS and the prompt precede the caption in
one decoder sequence, as LAVIS's ``Blip2OPT``."""
from __future__ import annotations

import torch
from transformers import OPTConfig, OPTForCausalLM

from vcap.common.registry import registry
from vcap.models.blip2.base import Blip2Video
from vcap.models.blip2.conventions import join_prompt
from vcap.models.generation import CausalPrefix, generate_config, hf_generate, prefix_logprobs, reference_search
from vcap.processors.tokenizer import pad_rows


@registry.register_model("blip2_opt")
class Blip2OPTVideo(Blip2Video):
    """Arguments: see ``Blip2Video``; ``blip2_config.text_config`` is an ``OPTConfig`` and ``pretrained`` a
    transformers BLIP-2 OPT (``Salesforce/blip2-opt-2.7b``)."""

    PRETRAINED_MODEL_CONFIG_DICT = {"tiny": "configs/models/blip2_opt/tiny.yaml",
                                    "opt2.7b": "configs/models/blip2_opt/opt2.7b.yaml"}
    LM_CLASS = OPTForCausalLM
    FSDP_LAYERS = Blip2Video.FSDP_LAYERS + ("OPTDecoderLayer",)
    LORA_TARGETS = ("q_proj", "v_proj")

    @staticmethod
    def new_language_model(text_config: dict, tok, dtype: torch.dtype) -> torch.nn.Module:
        return OPTForCausalLM._from_config(OPTConfig(**{
            **text_config, "vocab_size": text_config.get("vocab_size", len(tok)), "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}), dtype=dtype)

    def _resolve_end_token(self) -> int:
        """What ends a caption: "\\n" under LAVIS's conventions (``Blip2OPT.eos_token_id``), else the LM
        config's EOS (50118, "\\n", in transformers' blip2-opt-2.7b; the tokenizer's for a new LM)."""
        if self.conventions.newline_ends_opt_captions:
            newline = self.tokenizer.ids("\n")
            if len(newline) != 1:
                raise ValueError(f"model.conventions lavis ends OPT captions with '\\n', which model.tokenizer "
                                 f"encodes as {newline} instead of one token (OPT's byte-level BPE has 50118)")
            return newline[0]
        return super()._resolve_end_token()

    @property
    def _score_bos(self) -> bool:
        """LAVIS with an empty prompt masks only padding: OPT's BOS is a target, predicted from the queries."""
        return (self.conventions.score_bos_without_prompt and not self.prompt.strip()
                and self.tokenizer.bos_token_id is not None)

    def _context_ids(self) -> list[int]:
        """The LM's input between the queries and the caption: BOS, then the prompt."""
        bos = [] if self.tokenizer.bos_token_id is None else [self.tokenizer.bos_token_id]
        return bos + (self.tokenizer.ids(self.prompt.rstrip()) if self.prompt.strip() else [])

    def _caption_targets(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The caption's ids as they fall in "<prompt> <caption>" tokenized as one string (LAVIS's way: the
        first word keeps its leading space), after the prompt's own length (LAVIS's ``prompt_length``), then
        the end token. BOS, prompt, caption and end token together are at most ``max_txt_len`` tokens, as
        LAVIS counts them; a longer caption is cut, but unlike LAVIS it keeps its end token."""
        tok, context = self.tokenizer, self._context_ids()
        room = self.max_txt_len - len(context) - 1
        if room < 1:
            raise ValueError(f"model.max_txt_len {self.max_txt_len} leaves no room for a caption after the "
                             f"{len(context)} tokens of BOS and prompt {self.prompt!r}")
        bos = context[:1] if tok.bos_token_id is not None else []
        rows = [(bos + tok.ids(join_prompt(self.prompt, c)))[len(context):][:room] + [self.end_token_id]
                for c in captions]
        ids, mask = pad_rows(rows, tok.pad_token_id)
        return ids.to(self.device), mask.to(self.device)

    def _token_logprobs(self, video_embeds: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor,
                        context: list[int] | None = None) -> torch.Tensor:
        """Log-probability of each target token after [queries; context] (zero where masked)."""
        return prefix_logprobs(self.language_model, self._prefix(video_embeds, context), target_ids, target_mask)

    @torch.no_grad()
    def generate_ids(self, samples: dict, **settings) -> torch.Tensor:
        """``run.generate``'s settings. Under LAVIS's conventions ``max_len`` is new tokens and ``min_len`` counts
        BOS and the prompt's ids as well (LAVIS 1.0.2 hands OPT the prompt as ``input_ids``): with "a video of",
        ``min_len`` 8 allows a 4-token caption and ``min_len`` 1 an empty one; under seed 003's, both count one BOS
        (``max_len`` 32 allows 31 new tokens)."""
        gen = generate_config(**settings)
        prefix = self._prefix(self.encode_video(samples))
        conv = self.conventions
        if conv.search is None:
            return hf_generate(self.language_model, prefix, self.tokenizer, gen, eos_token_id=self.end_token_id)
        context = self._context_ids() if conv.opt_counted == "context" else [self.tokenizer.bos_token_id]
        context = torch.tensor([context] * len(prefix), device=prefix.device)
        max_new = gen.max_len - context.shape[1] if conv.opt_max_counts_bos else gen.max_len
        return reference_search(CausalPrefix(self.language_model, prefix), context, gen, self.end_token_id,
                                self.tokenizer.pad_token_id, max_new, conv.search)

