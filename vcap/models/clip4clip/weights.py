"""CLIP and CLIP4Clip weights for ``clip4clip``: Hugging Face CLIP, OpenAI CLIP files, CLIP4Clip checkpoints.

Every source is read without running pickled code: safetensors, ``torch.load(weights_only=True)``
for state dicts, and for OpenAI's TorchScript archives (``ViT-B-32.pt``) a restricted unpickler
that rebuilds only tensors (``read_torchscript_tensors``). Keys are mapped explicitly; what a
source lacks or carries beyond the model is reported or refused by the one loading policy
(``vcap.common.weights.load_state``), never silently dropped.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from vcap.common.weights import LoadReport, load_state, read_state_dict

log = logging.getLogger(__name__)
# buffers OpenAI's TorchScript models carry that are not weights
OPENAI_NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size")


# ------------------------------------------------------------------------------------------------
# Key maps
# ------------------------------------------------------------------------------------------------
def resblock_to_hf(sd: dict, src: str, dst: str, out: dict) -> set[str]:
    """OpenAI/CLIP4Clip ``resblocks.i`` (fused in_proj) -> transformers ``CLIPEncoderLayer`` keys."""
    used = set()
    pattern = re.compile(re.escape(src) + r"(\d+)\.(.+)")
    for key, value in sd.items():
        m = pattern.fullmatch(key)
        if not m:
            continue
        i, rest = m.group(1), m.group(2)
        base = f"{dst}{i}."
        if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{base}self_attn.{name}.{kind}"] = part
        else:
            simple = {"attn.out_proj.weight": "self_attn.out_proj.weight", "attn.out_proj.bias": "self_attn.out_proj.bias",
                      "ln_1.weight": "layer_norm1.weight", "ln_1.bias": "layer_norm1.bias",
                      "ln_2.weight": "layer_norm2.weight", "ln_2.bias": "layer_norm2.bias",
                      "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
                      "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias"}
            if rest not in simple:
                continue
            out[base + simple[rest]] = value
        used.add(key)
    return used


OPENAI_TOP = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight", "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight", "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
OPENAI_TRANSPOSED = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}


def openai_to_hf(sd: dict) -> tuple[dict, list[str]]:
    """(transformers CLIPModel state dict, source keys that were not used)."""
    out, used = {}, set()
    for src, dst in OPENAI_TOP.items():
        if src in sd:
            out[dst], _ = sd[src], used.add(src)
    for src, dst in OPENAI_TRANSPOSED.items():
        if src in sd:
            out[dst], _ = sd[src].t().contiguous(), used.add(src)
    used |= resblock_to_hf(sd, "visual.transformer.resblocks.", "vision_model.encoder.layers.", out)
    used |= resblock_to_hf(sd, "transformer.resblocks.", "text_model.encoder.layers.", out)
    unused = [k for k in sd if k not in used and k not in OPENAI_NON_WEIGHTS]
    return out, unused


def openai_config(sd: dict) -> CLIPConfig:
    """The CLIP architecture an OpenAI state dict implies (as OpenAI's ``build_model`` reads it)."""
    if "visual.proj" not in sd:
        raise ValueError("only ViT CLIP models are supported (the state dict has no visual.proj: a ResNet CLIP?)")
    v_width, _, patch, _ = sd["visual.conv1.weight"].shape
    v_layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    t_width = sd["ln_final.weight"].shape[0]
    t_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    return CLIPConfig(
        projection_dim=sd["text_projection"].shape[1],
        text_config={"hidden_size": t_width, "intermediate_size": 4 * t_width, "num_hidden_layers": t_layers,
                     "num_attention_heads": t_width // 64, "max_position_embeddings": sd["positional_embedding"].shape[0],
                     "vocab_size": sd["token_embedding.weight"].shape[0]},
        vision_config={"hidden_size": v_width, "intermediate_size": 4 * v_width, "num_hidden_layers": v_layers,
                       "num_attention_heads": v_width // 64, "image_size": grid * patch, "patch_size": patch})


def clip4clip_to_vcap(sd: dict) -> tuple[dict, dict, list[str]]:
    """CLIP4Clip checkpoint -> (CLIPModel state dict, vcap header state dict, unused source keys)."""
    clip_sd = {k[len("clip."):]: v for k, v in sd.items() if k.startswith("clip.")}
    hf, unused_clip = openai_to_hf(clip_sd)
    header, used = {}, {f"clip.{k}" for k in clip_sd if k not in unused_clip}
    if "clip.visual.conv2.weight" in sd:  # the 3d patch
        header["clip.vision_model.embeddings.patch_embedding.conv3d.weight"] = sd["clip.visual.conv2.weight"]
        used.add("clip.visual.conv2.weight")
    renames = {"frame_position_embeddings.weight": "frame_position_embeddings.weight",
               "cross.embeddings.position_embeddings.weight": "cross_position_embeddings.weight",
               "cross.pooler.ln_pool.weight": "cross_pool_norm.weight", "cross.pooler.ln_pool.bias": "cross_pool_norm.bias",
               "cross.pooler.dense.weight": "cross_pool_dense.weight", "cross.pooler.dense.bias": "cross_pool_dense.bias",
               "similarity_dense.weight": "similarity_dense.weight"}  # its bias shifts every score alike: unused
    for src, dst in renames.items():
        if src in sd:
            header[dst], _ = sd[src], used.add(src)
    for key, value in sd.items():
        if key.startswith("lstm_visual."):
            header[key], _ = value, used.add(key)
    used |= resblock_to_hf(sd, "transformerClip.resblocks.", "transformer_clip.encoder.layers.", header)
    used |= resblock_to_hf(sd, "cross.transformer.resblocks.", "cross.encoder.layers.", header)
    unused = [k for k in sd if k not in used and k[len("clip."):] not in OPENAI_NON_WEIGHTS]
    return hf, header, unused


# ------------------------------------------------------------------------------------------------
# A pretrained source, applied to a model
# ------------------------------------------------------------------------------------------------
@dataclass
class PretrainedSource:
    origin: str
    clip: CLIPModel
    report: LoadReport  # of the CLIP part, already in place
    header: dict = field(default_factory=dict)  # vcap keys outside ``clip`` (CLIP4Clip checkpoints)

    def apply(self, model: torch.nn.Module) -> LoadReport:
        """Load the header weights into ``model`` (CLIP is in place) under the one loading policy; one report
        for the whole source."""
        header = load_state(model, self.header, self.origin, "model.pretrained", filter_fn=_header_filter,
                            scope=("",) if self.header else ("(nothing)",), exempt={
                                k for k in model.state_dict() if k.startswith("clip.")})
        r = self.report
        return LoadReport(self.origin, [f"clip.{k}" for k in r.loaded] + header.loaded,
                          [f"clip.{k}" for k in r.missing] + header.missing, header.unexpected,
                          r.ignored + header.ignored)


# vcap's names of every similarity header's weights (clip4clip_to_vcap writes them)
HEADER_KEYS = ("frame_position_embeddings.", "transformer_clip.", "lstm_visual.", "cross_position_embeddings.",
               "cross_pool_", "cross.", "similarity_dense.", "clip.vision_model.embeddings.patch_embedding.conv3d.")


def _header_filter(sd: dict, model: torch.nn.Module) -> tuple[dict, list[str]]:
    """A position table of another length gives its overlap (CLIP4Clip's ``max_frames`` against the model's);
    weights of a similarity header the model does not use (a seqTransf checkpoint's in a tightTransf model)
    are ignored, as is ``similarity_dense.bias`` (it shifts every score alike)."""
    own, out, ignored = model.state_dict(), {}, []
    for key, value in sd.items():
        if key == "similarity_dense.bias" or (key not in own and key.startswith(HEADER_KEYS)):
            ignored.append(key)
            continue
        target = own[key]
        if target.shape != value.shape and target.dim() == 2 == value.dim() and target.shape[1] == value.shape[1]:
            n = min(target.shape[0], value.shape[0])
            log.info("%s has %d rows, the model %d: the first %d are copied", key, value.shape[0], target.shape[0], n)
            value = torch.cat([value[:n], target[n:].detach().to(value.dtype)])
        out[key] = value
    return out, ignored


def read_pretrained(spec: str) -> PretrainedSource:
    """CLIP weights from a Hugging Face id / directory, an OpenAI CLIP file or a CLIP4Clip checkpoint."""
    path = Path(spec)
    if not path.is_file():  # a transformers CLIP (directory, or an id in the local cache)
        from vcap.models.base_model import load_transformers

        clip, info = load_transformers(CLIPModel, spec, "CLIP (and not a file)", output_loading_info=True)
        # transformers loaded it by its own rules: what it left out is reported, what it dropped ignored
        return PretrainedSource(str(spec), clip, LoadReport(str(spec), missing=list(info["missing_keys"]),
                                                            ignored=list(info["unexpected_keys"])))
    sd = read_state_dict(path)
    header: dict = {}
    if "clip.visual.conv1.weight" in sd:  # CLIP4Clip's pytorch_model.bin.N
        openai_sd = {k[len("clip."):]: v for k, v in sd.items() if k.startswith("clip.")}
        hf, header, unused = clip4clip_to_vcap(sd)
    elif "visual.conv1.weight" in sd:  # OpenAI CLIP (ViT-B-32.pt)
        openai_sd = sd
        hf, unused = openai_to_hf(sd)
    elif any(k.startswith("vision_model.") for k in sd):  # a transformers CLIP state dict file
        raise ValueError(f"{path}: a transformers CLIP state dict; give its directory (with config.json) instead")
    else:
        raise ValueError(f"{path}: neither OpenAI CLIP keys (visual.conv1.weight ...) nor CLIP4Clip keys "
                         f"(clip.visual.conv1.weight ...); first keys: {list(sd)[:5]}")
    clip = CLIPModel(openai_config(openai_sd))
    # keys the map does not know keep their names, so the loader finds no place for them
    (header if header else hf).update({k: sd[k] for k in unused})
    report = load_state(clip, {k: v.float() for k, v in hf.items()}, str(path), "model.pretrained")
    return PretrainedSource(str(path), clip, report, header)
