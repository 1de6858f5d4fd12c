"""vcap's side of the BLIP-2 decoding comparison with LAVIS 1.0.2 and seed 003 (benchmarks/parity/blip2_generate.py
records the references' ids into tests/fixtures/blip2_generate_reference.json): the same tiny sizes
(benchmarks/parity/blip2_sizes.json), the reference's weights rebuilt from its key layout by name
(seeded_weights), loaded through ``lavis_checkpoint`` as a user's LAVIS file is."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from seeded_weights import head_bias, seeded, state_dict_from_layout

REPO = Path(__file__).resolve().parents[1]
SIZES = json.loads((REPO / "benchmarks" / "parity" / "blip2_sizes.json").read_text())
FIXTURE = REPO / "tests" / "fixtures" / "blip2_generate_reference.json"


def reference_image() -> torch.Tensor:
    """The two images the reference captioned (as lavis_generate_side.py makes them), as (B, T=1, C, H, W)."""
    size = SIZES["vit"]["image_size"]
    return (seeded("inputs.image", (2, 3, size, size)) * 10)[:, None]


def vcap_model(lm: str, prompt: str, tokenizer_dir: str, layout: dict, conventions: str, work: Path):
    """vcap's blip2_opt / blip2_t5 of the reference's sizes with its weights, through a LAVIS checkpoint file."""
    from vcap.models.blip2.blip2_opt import Blip2OPTVideo
    from vcap.models.blip2.blip2_t5 import Blip2T5Video

    path = work / f"{lm}.pth"
    if not path.is_file():
        torch.save({"model": state_dict_from_layout(layout)}, path)
    v, q = SIZES["vit"], SIZES["qformer"]
    config = {"vision_config": {**v, "qkv_bias": True, "layer_norm_eps": 1e-6, "hidden_act": "gelu"},
              "qformer_config": {**q, "cross_attention_frequency": 2}, "text_config": dict(SIZES[lm])}
    cls = Blip2OPTVideo if lm == "opt" else Blip2T5Video
    return cls(tokenizer=tokenizer_dir, blip2_config=config, num_query_tokens=SIZES["num_query_tokens"],
               prompt=prompt, temporal_embedding=False, max_txt_len=32, lavis_checkpoint=str(path),
               frozen_dtype="fp32", conventions=conventions).eval()


def end_bias(model, value: float) -> None:
    """The reference's LM-head bias: ``value`` on the token captions end with."""
    head_bias(model.language_model.lm_head, model.end_token_id, value)


def first_end(row: list[int], end: int, pad: int) -> list[int]:
    """A generated row up to and including its end token, trailing padding dropped."""
    out = []
    for i in row:
        out.append(i)
        if i == end:
            break
    while out and out[-1] == pad and pad != end:
        out.pop()
    return out
