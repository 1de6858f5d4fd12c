"""CLIPCap decoding against CLIPCap's own predict.py (rmokady/CLIP_prefix_caption @ its HEAD, read from a checkout):
``generate_beam`` (beam 5) and ``generate2`` with ``stop_token`` ".", on a tiny GPT-2 (real GPT-2 vocabulary, 2 layers
of 32) whose weights come from parameter names (tests/seeded_weights.py), with and without an LM-head bias on "."
(so beams stop at different lengths). Both are handed the same prefix embeddings (vcap's CLIPCap mapper on seeded
CLIP features), so only decoding is compared.

predict.py imports cog, clip and skimage at its top, which decoding does not use: its two functions are taken from
the file's syntax tree and run with torch, numpy and torch.nn.functional, unchanged. The tokenizer handed to them
decodes to the id list itself, so ids are compared, not text. Their ids go to tests/fixtures/clipcap_decode.json,
which tests/test_clipcap.py compares vcap's ``generate_ids`` with.

    python benchmarks/parity/clipcap_decode.py --clipcap <CLIP_prefix_caption checkout> [--write-fixture]
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
FIXTURE = HERE.parent.parent / "tests" / "fixtures" / "clipcap_decode.json"
CASES = [{"fn": "generate_beam", "entry_length": 67}, {"fn": "generate_beam", "entry_length": 8},
         {"fn": "generate2", "entry_length": 67}, {"fn": "generate2", "entry_length": 8}]
BIAS = {"none": 0.0, "stop": 4.0}  # on "." through an LM-head bias
N_VIDEOS = 3


def tiny_clipcap(tokenizer_dir: str):
    """vcap's CLIPCap with a GPT-2 of 2 layers x 32 over GPT-2's vocabulary and CLIPCap's MLP mapper, every
    parameter from its name."""
    from seeded_weights import fill_parameters

    from vcap.models.clipcap.clipcap import CLIPCap

    clip = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                patch_size=8, projection_dim=16)
    model = CLIPCap(tokenizer=tokenizer_dir, clip_config=clip,
                    lm_config=dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=2, n_positions=128),
                    mapper="mlp", prefix_length=4, stop_token=".")
    fill_parameters(model)
    return model.eval()


def stop_bias(model, value: float) -> None:
    """An LM-head bias of ``value`` on the stop token."""
    from seeded_weights import head_bias

    head_bias(model.gpt.lm_head, model.end_token_id, value)


def features() -> torch.Tensor:
    """Seeded CLIP features of the videos: (N, 1 frame, 16), scaled as CLIP embeddings are (unit-ish)."""
    from seeded_weights import seeded

    return seeded("inputs.clip_features", (N_VIDEOS, 1, 16)) * 4


def until_stop(row: list[int], stop: int) -> list[int]:
    """A generated row up to and including its stop token (what follows is padding); a row that never stopped whole."""
    return row[: row.index(stop) + 1] if stop in row else row


def reference_functions(predict_py: Path) -> dict:
    """predict.py's generate_beam and generate2, compiled from its source with the names they use."""
    tree = ast.parse(predict_py.read_text())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("generate_beam", "generate2")]
    namespace = {"torch": torch, "np": np, "nnf": nnf}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(predict_py), "exec"), namespace)
    return {f.name: namespace[f.name] for f in funcs}


class IdsTokenizer:
    """The GPT-2 tokenizer for encode; decode hands back the ids themselves."""

    def __init__(self, tk):
        self.tk = tk

    def encode(self, text):
        return self.tk.encode(text)

    def decode(self, ids):
        return [int(i) for i in ids]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clipcap", required=True, help="a CLIP_prefix_caption checkout (its predict.py is read)")
    ap.add_argument("--write-fixture", action="store_true", help=f"write the ids to {FIXTURE}")
    args = ap.parse_args(argv)
    from tokenizer_fixtures import save_gpt2_tokenizer
    from transformers import AutoTokenizer

    ref = reference_functions(Path(args.clipcap) / "predict.py")
    tok_dir = save_gpt2_tokenizer(Path(tempfile.mkdtemp()) / "gpt2")
    model = tiny_clipcap(str(tok_dir))
    tokenizer = IdsTokenizer(AutoTokenizer.from_pretrained(tok_dir))
    feats = features()
    with torch.no_grad():
        prefix = model.encode_video({"clip_features": feats})
    out, same = [], 0
    for bias_name, value in BIAS.items():
        stop_bias(model, value)
        for case in CASES:
            theirs = []
            for i in range(N_VIDEOS):
                got = ref[case["fn"]](model, tokenizer, embed=prefix[i:i + 1], entry_length=case["entry_length"])
                theirs.append(got[0] if case["fn"] == "generate_beam" else got)  # the best beam
            settings = {"num_beams": 5 if case["fn"] == "generate_beam" else 1, "max_len": case["entry_length"],
                        "min_len": 0}
            with torch.no_grad():
                ids = model.generate_ids({"clip_features": feats}, **settings)
            ours = [until_stop(row, model.end_token_id) for row in ids.tolist()]
            same += ours == theirs
            print(f"{case['fn']} entry_length {case['entry_length']} bias {bias_name}: lengths "
                  f"{[len(t) for t in theirs]}, vcap {'equal' if ours == theirs else f'differs: {ours} vs {theirs}'}")
            out.append({"bias": bias_name, "settings": settings, "ids": theirs})
    print(f"{same} of {len(out)} cases equal")
    if args.write_fixture:
        FIXTURE.write_text(json.dumps({"source": "benchmarks/parity/clipcap_decode.py: CLIPCap predict.py's "
                                                 "generate_beam / generate2 (stop_token '.')", "bias": BIAS,
                                       "cases": out}))
        print(f"wrote {FIXTURE}")
    return {"equal": same, "cases": len(out)}


if __name__ == "__main__":
    main()
