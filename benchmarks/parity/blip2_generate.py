"""BLIP-2 decoding against LAVIS 1.0.2 and seed 003 themselves: what ``max_len`` / ``min_len`` / ``num_beams`` from a
LAVIS yaml produce, token for token, and vcap's ids for the same settings under ``conventions: lavis`` / ``seed003``.

The references run in their own Python (lavis_generate_side.py) on tiny weights set from parameter names
(tests/seeded_weights.py), greedy and beam search, with and without an LM-head bias on the end token (so that
``min_len`` decides where a caption ends), for OPT and Flan-T5 with the prompt "a video of" and with none. Their ids
are written to tests/fixtures/blip2_generate_reference.json, which tests/test_blip2_generate.py compares vcap with.

Set the references up once (offline; the seed's repository from the search tool's ``fetch``):

    python -m venv /work/lavis/venv         # LAVIS 1.0.2, as benchmarks/parity/blip2_lavis.py describes
    /work/lavis/venv/bin/pip install torch==2.14.1 torchvision==0.29.1 "numpy<2" transformers==4.26.1 \\
        tokenizers==0.13.3 timm==0.4.12 omegaconf iopath fairscale einops sentencepiece "protobuf==3.20.3" \\
        "huggingface_hub<0.20" pandas decord webdataset opencv-python-headless spacy pycocoevalcap
    /work/lavis/venv/bin/pip install --no-deps salesforce-lavis==1.0.2
    # seed 003 (chunhuizng/mllm-video-captioner @ e69ce92, whose requirements.txt pins transformers==4.30.0):
    # its lavis/ copied over LAVIS 1.0.2's package (it ships only the parts it changed), the imports of
    # models it does not ship (lines marked "### added", and VideoLLAMA, PandaGPT, SimVLG) removed from
    # lavis/models/__init__.py, and its pins beside it:
    mkdir -p /work/seed003/overlay && cp -r /work/lavis/venv/lib/python3.11/site-packages/lavis /work/seed003/overlay/
    git -C <seed repo> archive HEAD lavis | tar -x -C /work/seed003/overlay
    /work/lavis/venv/bin/pip install --no-deps --target /work/seed003/site transformers==4.30.0 peft==0.3.0 \\
        safetensors==0.3.3 accelerate==0.20.3 "setuptools<70"

then, from the repository root (vcap installed in the current Python):

    python benchmarks/parity/blip2_generate.py --lavis-python /work/lavis/venv/bin/python \\
        --seed-path /work/seed003/site:/work/seed003/overlay [--write-fixture]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
from blip2_reference import FIXTURE, end_bias, first_end, reference_image, vcap_model  # noqa: E402

from blip2_lavis import write_tokenizers  # noqa: E402

# LAVIS's generate keywords are max_length / min_length; vcap's run.generate says max_len / min_len as LAVIS's yaml
CASES = ([{"num_beams": nb, "max_len": 12, "min_len": m} for nb in (1, 3) for m in (1, 5, 8)]
         + [{"num_beams": 3, "max_len": 6, "min_len": 1, "num_captions": 2},
            {"num_beams": 3, "max_len": 12, "min_len": 3, "length_penalty": 0.0},
            {"num_beams": 1, "max_len": 12, "min_len": 1, "repetition_penalty": 1.5}])
BIAS = {"none": 0.0, "end": 6.0}  # lavis_generate_side.BIASES
CASE_KEYS = ("lm", "prompt", "bias", "settings", "ids")


def lavis_kwargs(case: dict) -> dict:
    return {{"max_len": "max_length", "min_len": "min_length"}.get(k, k): v for k, v in case.items()}


def run_reference(python: str, reference: str, work: Path, pythonpath: str = "") -> dict:
    cases = work / "cases.json"
    cases.write_text(json.dumps([lavis_kwargs(c) for c in CASES]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": pythonpath}
    subprocess.run([python, str(HERE / "lavis_generate_side.py"), "--work", str(work), "--reference", reference,
                    "--cases", str(cases)], check=True, env=env, cwd=str(work))
    out = json.loads((work / f"{reference}_generate.json").read_text())
    for ref_case in out["cases"]:  # back to vcap's names
        ref_case["settings"] = {{"max_length": "max_len", "min_length": "min_len"}.get(k, k): v
                                for k, v in ref_case["settings"].items()}
    return out


def compare(ref: dict, work: Path) -> list[dict]:
    """vcap's ids for each of the reference's cases, under the reference's conventions."""
    rows, models = [], {}
    image = reference_image()
    for case in ref["cases"]:
        key = (case["lm"], case["prompt"])
        if key not in models:
            models[key] = vcap_model(case["lm"], case["prompt"], str(work / case["lm"]), ref["layouts"][case["lm"]],
                                     ref["reference"], work)
        model = models[key]
        end_bias(model, BIAS[case["bias"]])
        with torch.no_grad():
            ids = model.generate_ids({"video": image}, **case["settings"])
        end, pad = model.end_token_id, model.tokenizer.pad_token_id
        ours = [first_end(r, end, pad) for r in ids.tolist()]
        theirs = [first_end(r, end, pad) for r in case["ids"]]
        rows.append({**{k: case[k] for k in ("lm", "prompt", "bias", "settings")}, "equal": ours == theirs,
                     "reference": theirs, "vcap": ours})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lavis-python", required=True, help="the python of a venv with salesforce-lavis==1.0.2")
    ap.add_argument("--seed-path", help="PYTHONPATH that puts seed 003's lavis and transformers 4.30 first (above)")
    ap.add_argument("--work", help="working directory (default: a temporary one)")
    ap.add_argument("--write-fixture", action="store_true", help=f"write the references' ids to {FIXTURE}")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="blip2_generate_"))
    work.mkdir(parents=True, exist_ok=True)
    write_tokenizers(work)
    refs = [run_reference(args.lavis_python, "lavis", work)]
    if args.seed_path:
        refs.append(run_reference(args.lavis_python, "seed003", work, args.seed_path))
    report = {}
    for ref in refs:
        rows = compare(ref, work)
        same = sum(r["equal"] for r in rows)
        report[ref["reference"]] = {"transformers": ref["transformers"], "cases": len(rows), "equal": same,
                                    "differ": [r for r in rows if not r["equal"]]}
        print(f"{ref['reference']} (transformers {ref['transformers']}): {same} of {len(rows)} cases give the same ids")
        for r in rows:
            if not r["equal"]:
                print(f"  {r['lm']} prompt={r['prompt']!r} bias={r['bias']} {r['settings']}: reference "
                      f"{r['reference']} vcap {r['vcap']}")
    if args.write_fixture:
        if any(ref["layouts"] != refs[0]["layouts"] for ref in refs):
            raise SystemExit("the references' key layouts differ; the fixture keeps one")
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps({
            "source": "benchmarks/parity/blip2_generate.py: LAVIS 1.0.2 (transformers 4.26.1) and seed 003's fork "
                      "(chunhuizng/mllm-video-captioner e69ce92, transformers 4.30.0), run in their own venv",
            "bias": BIAS, "layouts": refs[0]["layouts"],
            "references": [{"reference": ref["reference"], "transformers": ref["transformers"],
                            "cases": [{k: c[k] for k in CASE_KEYS} for c in ref["cases"]]} for ref in refs]},
            separators=(",", ":")))
        print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size // 1024} KB)")
    return report


if __name__ == "__main__":
    main()
