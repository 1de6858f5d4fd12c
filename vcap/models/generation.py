"""One generation path for every captioner: an LM continues from a prefix of input embeddings.

Greedy (``num_beams=1``), beam search (length-normalised: scores divided by length, as
CLIPCap's beam search), and nucleus sampling (``do_sample=True, top_p``); ``max_new_tokens``,
``min_new_tokens`` and stopping at the tokenizer's end-of-sequence token. Returns the new token
ids only, padded after the end token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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


@torch.no_grad()
def generate_from_prefix(lm, prefix: torch.Tensor, tokenizer, num_beams: int = 3, max_new_tokens: int = 20,
                         min_new_tokens: int = 1, do_sample: bool = False, temperature: float = 1.0,
                         top_p: float = 1.0, num_return_sequences: int = 1,
                         eos_token_id: int | None = None) -> torch.Tensor:
    """``eos_token_id``: where a caption ends (default the tokenizer's EOS; BLIP-2 OPT's is "\\n")."""
    if max_new_tokens < 1 or min_new_tokens < 0 or min_new_tokens > max_new_tokens:
        raise ValueError(f"need 0 <= min_new_tokens <= max_new_tokens and max_new_tokens >= 1, got "
                         f"{min_new_tokens} and {max_new_tokens}")
    mask = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    return lm.generate(
        inputs_embeds=prefix, attention_mask=mask, num_beams=num_beams, max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens, do_sample=do_sample, temperature=temperature, top_p=top_p,
        num_return_sequences=num_return_sequences,
        **({"length_penalty": 1.0, "early_stopping": True} if num_beams > 1 else {}),  # beam-only flags
        eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )
