"""LAVIS BLIP-2 checkpoints (``blip2_pretrained_*.pth``, fine-tuned ``checkpoint_*.pth`` such as seed
003's) into vcap's transformers layout, by an explicit key map.

LAVIS names (left) and vcap's (right), as transformers' own BLIP-2 conversion maps them:

    visual_encoder.cls_token / pos_embed        vision_model.embeddings.class_embedding / position_embedding
    visual_encoder.patch_embed.proj.*           vision_model.embeddings.patch_embedding.*
    visual_encoder.blocks.i.norm1 / norm2       vision_model.encoder.layers.i.layer_norm1 / layer_norm2
    visual_encoder.blocks.i.attn.qkv.weight     ....self_attn.qkv.weight
    visual_encoder.blocks.i.attn.q_bias, v_bias ....self_attn.qkv.bias = [q_bias, 0, v_bias] (EVA has no k bias)
    visual_encoder.blocks.i.attn.proj           ....self_attn.projection
    visual_encoder.blocks.i.mlp.fc1 / fc2       ....mlp.fc1 / fc2
    ln_vision                                   vision_model.post_layernorm
    Qformer.bert.embeddings.LayerNorm           qformer.layernorm
    Qformer.bert.encoder.*.attention.self.*     qformer.encoder.*.attention.attention.* (crossattention alike)
    query_tokens                                query_tokens
    opt_proj / t5_proj                          language_projection
    opt_model.* / t5_model.*                    language_model.* (peft's ``base_model.model.`` dropped)

Stage-1 (Q-Former pre-training) weights the captioner has no place for are listed as ``ignored``: the
Q-Former's text side (word/position embeddings, the text FFN ``intermediate``/``output``, the LM head
``Qformer.cls``) and the contrastive/matching heads (vision_proj, text_proj, itm_head, temp).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from vcap.common.weights import load_state, read_state_dict

_VIT_BLOCK = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
              "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_FIXED = {
    "visual_encoder.cls_token": "vision_model.embeddings.class_embedding",
    "visual_encoder.pos_embed": "vision_model.embeddings.position_embedding",
    "visual_encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual_encoder.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
    "ln_vision.weight": "vision_model.post_layernorm.weight",
    "ln_vision.bias": "vision_model.post_layernorm.bias",
    "Qformer.bert.embeddings.LayerNorm.weight": "qformer.layernorm.weight",
    "Qformer.bert.embeddings.LayerNorm.bias": "qformer.layernorm.bias",
    "query_tokens": "query_tokens",
}
_STAGE1_ONLY = re.compile(
    r"^(Qformer\.cls\.|Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings|position_ids)"
    r"|Qformer\.bert\.encoder\.layer\.\d+\.(intermediate|output)\.|vision_proj\.|text_proj\.|itm_head\.|temp$)")


def lavis_key(key: str) -> str | None:
    """vcap's name for one LAVIS key, or None if the captioner has no place for it."""
    if key in _FIXED:
        return _FIXED[key]
    m = re.match(r"visual_encoder\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$", key)
    if m:
        return f"vision_model.encoder.layers.{m[1]}.{_VIT_BLOCK[m[2]]}.{m[3]}"
    if key.startswith("Qformer.bert.encoder.") and not _STAGE1_ONLY.match(key):
        return "qformer." + key[len("Qformer.bert."):].replace(".attention.self.", ".attention.attention.") \
            .replace(".crossattention.self.", ".crossattention.attention.")
    for lavis, ours in (("opt_proj.", "language_projection."), ("t5_proj.", "language_projection.")):
        if key.startswith(lavis):
            return ours + key[len(lavis):]
    for lm in ("opt_model.", "t5_model."):
        if key.startswith(lm):
            rest = key[len(lm):]
            rest = rest[len("base_model.model."):] if rest.startswith("base_model.model.") else rest  # peft wrapper
            return "language_model." + rest
    return None


def convert_lavis_state_dict(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """(vcap state dict, ignored stage-1 keys, unmapped keys)."""
    out, ignored, unmapped = {}, [], []
    q_bias, v_bias = {}, {}
    for key, value in sd.items():
        m = re.match(r"visual_encoder\.blocks\.(\d+)\.attn\.(q|v)_bias$", key)
        if m:
            (q_bias if m[2] == "q" else v_bias)[int(m[1])] = value
            continue
        if _STAGE1_ONLY.match(key):
            ignored.append(key)
            continue
        ours = lavis_key(key)
        if ours is None:
            unmapped.append(key)
        else:
            out[ours] = value
    for i in sorted(set(q_bias) | set(v_bias)):
        if i not in q_bias or i not in v_bias:
            unmapped.append(f"visual_encoder.blocks.{i}.attn.{'q' if i in q_bias else 'v'}_bias (its pair is missing)")
            continue
        out[f"vision_model.encoder.layers.{i}.self_attn.qkv.bias"] = torch.cat(
            [q_bias[i], torch.zeros_like(q_bias[i]), v_bias[i]])
    return out, ignored, unmapped


def read_lavis_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of a LAVIS ``.pth`` (``{"model": ..., "optimizer": ..., "config": ...}`` or bare),
    read with ``weights_only=True``: a file that needs arbitrary code to unpickle is refused."""
    return read_state_dict(path, "model.lavis_checkpoint", unwrap="model")


def lavis_filter(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[dict, list[str]]:
    """``load_state``'s filter for LAVIS's layout: vcap's names, stage-1 keys ignored; a key with no mapping
    keeps its LAVIS name, so the loader reports it as having no place in the model."""
    out, ignored, unmapped = convert_lavis_state_dict(sd)
    out.update({k: torch.empty(0) for k in unmapped})
    return out, ignored


def load_lavis_checkpoint(model: torch.nn.Module, path: str | Path):
    """Copy a LAVIS checkpoint's weights into ``model`` (``vcap.common.weights.load_state``); model weights the
    file does not hold (the LLM of a ``blip2_pretrained_*.pth``) are reported, as ``strict_weights`` allows."""
    return load_state(model, read_lavis_checkpoint(path), str(path), "model.lavis_checkpoint", filter_fn=lavis_filter)
