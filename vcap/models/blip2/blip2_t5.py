"""BLIP-2 video captioner with a Flan-T5 language model: the query embeddings and the prompt go
through the T5 encoder, the caption is the decoder's. Video encoding is ``Blip2Video``'s."""
from __future__ import annotations

import torch
from transformers import T5Config, T5ForConditionalGeneration

from vcap.common.registry import registry
from vcap.models.blip2.base import Blip2Video
from vcap.models.generation import Seq2SeqPrefix, generate_config, hf_generate, reference_search, token_logprobs


@registry.register_model("blip2_t5")
class Blip2T5Video(Blip2Video):
    """Arguments: see ``Blip2Video``; ``blip2_config.text_config`` is a ``T5Config`` and ``pretrained`` a
    transformers BLIP-2 Flan-T5 (``Salesforce/blip2-flan-t5-xl``)."""

    PRETRAINED_MODEL_CONFIG_DICT = {"tiny": "configs/models/blip2_t5/tiny.yaml",
                                    "flant5xl": "configs/models/blip2_t5/flant5xl.yaml"}
    LM_CLASS = T5ForConditionalGeneration
    FSDP_LAYERS = Blip2Video.FSDP_LAYERS + ("T5Block",)
    LORA_TARGETS = ("q", "v")  # T5Attention's query and value projections

    @staticmethod
    def new_language_model(text_config: dict, tok, dtype: torch.dtype) -> torch.nn.Module:
        return T5ForConditionalGeneration._from_config(T5Config(**{
            **text_config, "vocab_size": text_config.get("vocab_size", len(tok)), "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id, "decoder_start_token_id": tok.pad_token_id}), dtype=dtype)

    def _finish_language_model(self) -> None:
        """Flan-T5 (T5 v1.1) has an LM head of its own, not the input embeddings. transformers 5 ties the two in
        every T5 built from a config (``tie_word_embeddings`` is forced to True, and v1.1 is told apart by
        ``scale_decoder_outputs: false``); only ``from_pretrained`` unties them, when the file's differ. So a
        model built from ``blip2_config``, or on the meta device under ``run.fsdp``, would copy a LAVIS
        checkpoint's ``lm_head`` and ``shared`` into one tensor: the head gets its own here."""
        lm = self.language_model
        if not getattr(lm.config, "scale_decoder_outputs", True) and lm.lm_head.weight is lm.shared.weight:
            lm.lm_head.weight = torch.nn.Parameter(lm.shared.weight.detach().clone(),
                                                   requires_grad=lm.shared.weight.requires_grad)

    def _apply_conventions(self) -> None:
        """Also the FFN activation: LAVIS builds Flan-T5 with ``dense_act_fn = "gelu"`` (exact), where its
        config (and transformers) says ``gelu_new`` (the tanh approximation)."""
        super()._apply_conventions()
        act = self.conventions.t5_activation
        if act and act != self.language_model.config.dense_act_fn:
            from transformers.activations import ACT2FN

            self.language_model.config.dense_act_fn = act
            for module in self.language_model.modules():
                if hasattr(module, "act") and hasattr(module, "wo"):  # T5DenseActDense / T5DenseGatedActDense
                    module.act = ACT2FN[act]

    # T5's </s> ends captions under either convention (LAVIS's T5 captioner has no "\\n"), and T5 has no BOS
    # to score. The caption alone is the decoder's text (LAVIS's text_output), as Captioner tokenizes it.

    def _context_ids(self) -> list[int]:
        """The encoder's text after the queries: the prompt tokenized alone, ending with EOS as T5's tokenizer
        ends every input (LAVIS's ``t5_tokenizer(prompt)``)."""
        return self.tokenizer.ids(self.prompt) + [self.tokenizer.eos_token_id]

    def _token_logprobs(self, video_embeds: torch.Tensor, target_ids: torch.Tensor, target_mask: torch.Tensor,
                        context: list[int] | None = None) -> torch.Tensor:
        """Log-probability of each caption token from the decoder, the encoder reading [queries; prompt]."""
        prefix = self._prefix(video_embeds, context)
        start = torch.full_like(target_ids[:, :1], self.language_model.config.decoder_start_token_id)
        decoder_in = torch.cat([start, target_ids[:, :-1]], dim=1)
        decoder_mask = torch.cat([torch.ones_like(target_mask[:, :1]), target_mask[:, :-1]], dim=1)
        logits = self.language_model(inputs_embeds=prefix,
                                     attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device),
                                     decoder_input_ids=decoder_in, decoder_attention_mask=decoder_mask).logits
        return token_logprobs(logits, target_ids, target_mask)

    @torch.no_grad()
    def generate_ids(self, samples: dict, **settings) -> torch.Tensor:
        """``run.generate``'s settings. Under LAVIS's (and seed 003's) conventions ``max_len`` is new tokens and
        ``min_len`` counts the decoder start token too (``min_len`` 8 allows a 7-token caption, 1 an empty one)."""
        gen = generate_config(**settings)
        prefix = self._prefix(self.encode_video(samples))
        start = self.language_model.config.decoder_start_token_id
        if self.conventions.search is None:
            ids = hf_generate(self.language_model, prefix, self.tokenizer, gen, eos_token_id=self.end_token_id)
            return ids[:, 1:]  # the decoder's start token is not part of the caption
        context = torch.full((len(prefix), 1), start, dtype=torch.long, device=prefix.device)
        return reference_search(Seq2SeqPrefix(self.language_model, prefix, start), context, gen, self.end_token_id,
                                self.tokenizer.pad_token_id, gen.max_len, self.conventions.search)
