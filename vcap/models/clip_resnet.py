"""CLIP's ResNet image towers (OpenAI's ``ModifiedResNet``: RN50, RN101, RN50x4): a three-convolution stem with
average pooling, bottlenecks that downsample by average pooling, and attention pooling over the final
feature map, projected to the joint embedding. Built as timm's ByobNet (``resnet50_clip``,
``resnet101_clip``, ``resnet50x4_clip``), which implements them; loaded from OpenAI's own files
(``RN50x4.pt``, a TorchScript archive read tensors-only, keys ``visual.*``) through timm's key conversion,
or from timm's layout (``timm/resnet50x4_clip.openai``'s ``model.safetensors``).

Sizes are OpenAI's ``ModifiedResNet`` arguments (clip/model.py ``build_model``): blocks per stage, stem
width, output dim, input resolution; the attention pool has ``width * 32 // 64`` heads of 64.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vcap.common.weights import known_keys, load_state, read_state_dict, resolve_pretrained

# OpenAI's released towers (clip/model.py build_model, read off each checkpoint's visual.* shapes)
OPENAI_RESNETS = {
    "RN50": dict(layers=(3, 4, 6, 3), width=64, output_dim=1024, image_size=224),
    "RN101": dict(layers=(3, 4, 23, 3), width=64, output_dim=512, image_size=224),
    "RN50x4": dict(layers=(4, 6, 10, 6), width=80, output_dim=640, image_size=288),
}
WEIGHT_FILES = ("model.safetensors", "open_clip_model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")


def resnet_spec(spec: str | dict) -> dict:
    """``RN50`` / ``RN101`` / ``RN50x4``, or a mapping of ``layers``, ``width``, ``output_dim``, ``image_size``."""
    if isinstance(spec, str):
        if spec not in OPENAI_RESNETS:
            raise ValueError(f"model.clip_resnet {spec!r}: expected one of {', '.join(OPENAI_RESNETS)} or a mapping "
                             f"of layers, width, output_dim, image_size")
        return dict(OPENAI_RESNETS[spec])
    spec = dict(spec)
    need = {"layers", "width", "output_dim", "image_size"}
    if set(spec) != need:
        raise ValueError(f"model.clip_resnet: expected the keys {sorted(need)}, got {sorted(spec)}")
    if len(spec["layers"]) != 4:
        raise ValueError(f"model.clip_resnet.layers {list(spec['layers'])}: expected four stages")
    return spec


class CLIPResNet(nn.Module):
    """pixels (N, 3, S, S) -> CLIP image embeddings (N, output_dim), before any normalisation."""

    def __init__(self, layers, width: int, output_dim: int, image_size: int):
        super().__init__()
        from timm.models.byobnet import ByoBlockCfg, ByobNet, ByoModelCfg

        cfg = ByoModelCfg(  # timm's resnet50_clip with OpenAI's ModifiedResNet arguments
            blocks=tuple(ByoBlockCfg(type="bottle", d=d, c=width * 4 * 2 ** i, s=1 if i == 0 else 2, br=0.25)
                         for i, d in enumerate(layers)),
            stem_chs=(width // 2, width // 2, width), stem_type="", stem_pool="avg2", downsample="avg",
            aa_layer="avg", head_type="attn_abs")
        self.net = ByobNet(cfg, num_classes=output_dim, img_size=image_size)
        self.output_dim, self.image_size = output_dim, image_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[-1] != self.image_size or pixel_values.shape[-2] != self.image_size:
            raise ValueError(f"the CLIP ResNet takes {self.image_size} px images (its attention pool's positions), "
                             f"got {tuple(pixel_values.shape[-2:])}: set the video processor's image_size")
        return self.net(pixel_values)


def _weights_file(source: str) -> Path:
    path = resolve_pretrained(source, "model.clip_pretrained")
    if path.is_file():
        return path
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise ValueError(f"model.clip_pretrained {source!r}: no CLIP ResNet weights in it (looked for {WEIGHT_FILES})")


def load_clip_resnet(tower: CLIPResNet, source: str):
    """Weights in OpenAI's layout (``visual.conv1.weight`` ...: ``RN50x4.pt``, open_clip files) or timm's
    (``stem.conv1.conv.weight`` ...) into ``tower``; every tower weight must be there, with its shape."""
    path = _weights_file(source)
    return load_state(tower.net, read_state_dict(path), str(path), "model.clip_pretrained", filter_fn=_resnet_filter)


def _resnet_filter(sd: dict, net: torch.nn.Module) -> tuple[dict, list[str]]:
    """OpenAI's keys through timm's own map (``byobnet.checkpoint_filter_fn``); what is left outside the tower
    (an OpenAI or open_clip file's text transformer) is ignored."""
    from timm.models.byobnet import checkpoint_filter_fn

    if "visual.conv1.weight" in sd:
        sd = checkpoint_filter_fn(sd, net)
    return known_keys(sd, net)
