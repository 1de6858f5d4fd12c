"""Multi-caption retrieval metrics against CLIP4Clip's own ``metrics.py`` (ArrowLuo/CLIP4Clip @ 508ffa3): its
multi-sentence evaluation (main_task_retrieval.py ``eval_epoch``: the text x video matrix cut into one block per
video's captions, padded with -inf, then ``tensor_text_to_video_metrics`` and
``compute_metrics(tensor_video_to_text_sim(...))``) on seeded matrices with 1 to 8 captions per video, the layout
of MSVD's test set (CLIP4Clip's dataloader lists each video's captions together).

The matrices come from numpy's legacy RandomState, so tests/test_evaluation.py rebuilds them from the seeds and
compares vcap's ``retrieval_metrics`` with the numbers written here. CLIP4Clip's metrics.py needs numpy and torch
only; it is read from a checkout (the search tool's ``fetch``), never copied:

    python benchmarks/parity/clip4clip_metrics.py --clip4clip <CLIP4Clip checkout> [--write-fixture]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "clip4clip_metrics.json"
CASES = [{"seed": 0, "videos": 40, "max_captions": 8, "signal": 1.0},
         {"seed": 1, "videos": 120, "max_captions": 8, "signal": 2.0},
         {"seed": 2, "videos": 60, "max_captions": 1, "signal": 1.0}]


def case_matrix(seed: int, videos: int, max_captions: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    """(texts x videos similarities, each text's video): 1..max_captions captions per video, listed by video."""
    rs = np.random.RandomState(seed)
    counts = rs.randint(1, max_captions + 1, size=videos)
    t2v = np.repeat(np.arange(videos), counts)
    sim = rs.standard_normal((len(t2v), videos)).astype(np.float32)
    sim[np.arange(len(t2v)), t2v] += signal
    return sim, t2v


def clip4clip_eval(metrics, sim: np.ndarray, t2v: np.ndarray) -> dict:
    """main_task_retrieval.py's multi-sentence branch, as written there."""
    cut_off_points_ = [int(i) - 1 for i in np.cumsum(np.bincount(t2v))]
    cut_off_points2len_ = [itm + 1 for itm in cut_off_points_]
    max_length = max([e_ - s_ for s_, e_ in zip([0] + cut_off_points2len_[:-1], cut_off_points2len_)])
    sim_matrix_new = []
    for s_, e_ in zip([0] + cut_off_points2len_[:-1], cut_off_points2len_):
        sim_matrix_new.append(np.concatenate((sim[s_:e_], np.full((max_length - e_ + s_, sim.shape[1]), -np.inf)),
                                             axis=0))
    sim_matrix = np.stack(tuple(sim_matrix_new), axis=0)
    tv = metrics.tensor_text_to_video_metrics(sim_matrix)
    vt = metrics.compute_metrics(metrics.tensor_video_to_text_sim(sim_matrix).numpy())
    return {"t2v_R1": tv["R1"], "t2v_R5": tv["R5"], "t2v_R10": tv["R10"], "t2v_MdR": tv["MR"], "t2v_MnR": tv["MeanR"],
            "v2t_R1": vt["R1"], "v2t_R5": vt["R5"], "v2t_R10": vt["R10"], "v2t_MdR": float(vt["MR"]),
            "v2t_MnR": float(vt["MeanR"]), "v2t_rows": len(vt["cols"])}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip4clip", required=True, help="a CLIP4Clip checkout (its metrics.py is imported)")
    ap.add_argument("--write-fixture", action="store_true", help=f"write the numbers to {FIXTURE}")
    args = ap.parse_args(argv)
    spec = importlib.util.spec_from_file_location("clip4clip_metrics", Path(args.clip4clip) / "metrics.py")
    metrics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(metrics)
    from vcap.evaluation.retrieval import retrieval_metrics

    out = []
    for case in CASES:
        sim, t2v = case_matrix(**case)
        theirs, ours = clip4clip_eval(metrics, sim, t2v), retrieval_metrics(sim, t2v)
        # CLIP4Clip counts t2v in float32
        diff = {k: (theirs[k], ours[k]) for k in ours if abs(theirs[k] - ours[k]) > 1e-4}
        print(f"{case}: {len(t2v)} texts; CLIP4Clip v2t R@1 {theirs['v2t_R1']:.2f} R@10 {theirs['v2t_R10']:.2f} MnR "
              f"{theirs['v2t_MnR']:.2f}; vcap {'equal' if not diff else f'differs: {diff}'}")
        out.append({"case": case, "clip4clip": theirs})
    if args.write_fixture:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps({"source": "benchmarks/parity/clip4clip_metrics.py: CLIP4Clip 508ffa3 "
                                                 "metrics.py on its main_task_retrieval.py multi-sentence layout",
                                       "cases": out}, indent=1))
        print(f"wrote {FIXTURE}")
    return out


if __name__ == "__main__":
    main()
