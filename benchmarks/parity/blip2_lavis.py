"""BLIP-2 against LAVIS 1.0.2 itself: the same tiny weights, LAVIS's loss and greedy captions vs vcap's.

LAVIS pins transformers < 4.27, so it lives in its own venv and this check is not part of the test suite
(tests/test_blip2_conventions.py pins the facts it rests on). Set the venv up once:

    python -m venv /work/lavis/venv
    /work/lavis/venv/bin/pip install torch==2.14.1 torchvision==0.29.1 "numpy<2" transformers==4.26.1 \\
        tokenizers==0.13.3 timm==0.4.12 omegaconf iopath fairscale einops sentencepiece "protobuf==3.20.3" \\
        "huggingface_hub<0.20" pandas decord webdataset opencv-python-headless spacy pycocoevalcap
    /work/lavis/venv/bin/pip install --no-deps salesforce-lavis==1.0.2

then, from the repository root, with vcap installed in the current Python (``pip install -e ".[test]"``):

    python benchmarks/parity/blip2_lavis.py --lavis-python /work/lavis/venv/bin/python [--json out.json]

For OPT and Flan-T5, each with the prompt "a video of" and with an empty prompt, LAVIS's Blip2OPT / Blip2T5
are built with tiny random weights (lavis_blip2_side.py), their state dict saved as a LAVIS checkpoint, and
vcap's blip2_opt / blip2_t5 built from ``blip2_config`` of the same sizes with that file as
``lavis_checkpoint`` (``conventions: auto`` -> ``lavis``). Raw captions with capitals and punctuation go
through each toolkit's own caption processor; one frame per video (LAVIS 1.0.2 is an image model).
Reported: |loss difference| (must be <= 1e-5), whether the greedy token ids are equal, and the trainable
parameters of each (names mapped by vcap's LAVIS key map).
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
from blip2_reference import first_end  # noqa: E402  (the tests' helpers, beside the fixtures they read)

SIZES = json.loads((HERE / "blip2_sizes.json").read_text())
CAPTIONS = ["A man is playing a guitar on stage.", "Two dogs, black and white, run across the grass!"]


def write_tokenizers(work: Path) -> None:
    """OPT, Flan-T5 and BERT tokenizer directories with the real conventions (tests/tokenizer_fixtures.py):
    as raw vocabulary files for LAVIS's transformers 4.26, and as transformers 5 saves them for vcap."""
    import tokenizer_fixtures as fx

    for name in ("opt", "t5"):
        fx.SAVERS[name](work / name)
    reload = fx._reload
    fx._reload = lambda path: path  # the files as written, before transformers 5 rewrites them
    try:
        fx.save_opt_tokenizer(work / "opt_lavis")
        fx.save_t5_tokenizer(work / "t5_lavis")
        fx.save_bert_tokenizer(work / "bert")
    finally:
        fx._reload = reload


def vcap_model(lm: str, prompt: str, tok_dir: Path, checkpoint: Path, conventions: str = "auto"):
    from vcap.models.blip2.blip2_opt import Blip2OPTVideo
    from vcap.models.blip2.blip2_t5 import Blip2T5Video

    cls = Blip2OPTVideo if lm == "opt" else Blip2T5Video
    v, q = SIZES["vit"], SIZES["qformer"]
    config = {"vision_config": {**v, "qkv_bias": True, "layer_norm_eps": 1e-6, "hidden_act": "gelu"},
              "qformer_config": {**q, "cross_attention_frequency": 2},
              "text_config": {k: val for k, val in SIZES[lm].items()}}
    return cls(tokenizer=str(tok_dir), blip2_config=config, num_query_tokens=SIZES["num_query_tokens"],
               prompt=prompt, temporal_embedding=False, freeze_vit=True, freeze_llm=True, max_txt_len=32,
               lavis_checkpoint=str(checkpoint), frozen_dtype="fp32", conventions=conventions).eval()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lavis-python", required=True, help="the python of a venv with salesforce-lavis==1.0.2")
    ap.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--conventions", default="auto", choices=["auto", "lavis", "transformers"],
                    help="vcap's model.conventions (auto: lavis, as a LAVIS checkpoint is loaded); transformers "
                         "shows what the LAVIS conventions change")
    args = ap.parse_args(argv)
    from vcap.models.blip2.lavis_weights import lavis_key
    from vcap.processors.text_processors import CaptionProcessor

    work = Path(args.work or tempfile.mkdtemp(prefix="blip2_parity_"))
    work.mkdir(parents=True, exist_ok=True)
    write_tokenizers(work)
    torch.manual_seed(0)  # the same image and captions every run
    image = torch.randn(2, 3, SIZES["vit"]["image_size"], SIZES["vit"]["image_size"])
    torch.save({"image": image, "captions": CAPTIONS}, work / "inputs.pth")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": ""}
    subprocess.run([args.lavis_python, str(HERE / "lavis_blip2_side.py"), "--work", str(work)], check=True, env=env,
                   cwd=str(work))
    lavis = json.loads((work / "lavis_results.json").read_text())

    clean = CaptionProcessor()
    report = {}
    for tag, ref in lavis.items():
        lm, prompt = tag.split("_")[0], ("a video of" if tag.endswith("_prompt") else "")
        model = vcap_model(lm, prompt, work / lm, work / f"{tag}.pth", args.conventions)
        samples = {"video": image[:, None], "text_input": [clean(c) for c in CAPTIONS]}
        with torch.no_grad():
            loss = float(model(samples)["loss"])
            ids = model.generate_ids(samples, num_beams=1, max_len=10, min_len=1)  # LAVIS: max_length 10, min_length 1
        end, pad = model.end_token_id, model.tokenizer.pad_token_id
        ours = [first_end(r, end, pad) for r in ids.tolist()]
        theirs = [first_end(r, end, pad) for r in ref["greedy_ids"]]
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        mapped = sorted(filter(None, (lavis_key(n) for n in ref["trainable"])))
        qkv = [n for n in ref["trainable"] if n.endswith(("q_bias", "v_bias"))]
        report[tag] = {
            "lavis_loss": ref["loss"], "vcap_loss": loss, "abs_diff": abs(loss - ref["loss"]),
            "greedy_equal": ours == theirs, "lavis_greedy": theirs, "vcap_greedy": ours,
            "lavis_captions": ref["captions"], "vcap_captions": model.decode_ids(ids),
            "lavis_text": ref["text"], "vcap_text": samples["text_input"],
            "trainable_lavis": ref["trainable_numel"], "trainable_vcap": sum(model.get_parameter(n).numel() for n in trainable),
            "trainable_same_set": mapped == trainable and not qkv,
        }
        r = report[tag]
        print(f"{tag:12s} loss LAVIS {r['lavis_loss']:.7f} vcap {r['vcap_loss']:.7f} |diff| {r['abs_diff']:.1e}  "
              f"greedy ids equal: {r['greedy_equal']}  trainable LAVIS {r['trainable_lavis']} vcap "
              f"{r['trainable_vcap']} same set: {r['trainable_same_set']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    ok = all(r["abs_diff"] <= 1e-5 and r["greedy_equal"] and r["trainable_same_set"] for r in report.values())
    print("PARITY OK" if ok else "PARITY FAILED")
    return report


if __name__ == "__main__":
    main()
