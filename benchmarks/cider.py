"""CIDEr-D speed: vcap's vectorised ``CiderD`` against pycocoevalcap's ``CiderScorer``.

Two sizes: an SCST batch (64 videos x 5 sampled captions = 320 candidates, 20 references each)
and an evaluation-size set (3000 candidates x 20 references). Captions are synthetic (a
Zipf-distributed 3000-word vocabulary, 8-15 words). Both scorers see the same tokenised text;
the scores are checked equal (vcap's corpus is the same references, as the check needs).
``build`` is vcap's one-off corpus set-up (done once per training run in SCST). A third case scores one SCST batch
against a training-set-sized corpus (6000 videos x 20 references), as each SCST step does.

    python benchmarks/cider.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from vcap.evaluation.cider import CiderD


def captions(rng: np.random.Generator, n: int, vocab: list[str]) -> list[str]:
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    return [" ".join(rng.choice(vocab, size=rng.integers(8, 16), p=p)) for _ in range(n)]


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def case(num_videos: int, samples: int, num_refs: int, repeats: int, seed: int = 0) -> dict:
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(3000)]
    refs = {f"v{i}": captions(rng, num_refs, vocab) for i in range(num_videos)}
    ids = [v for v in refs for _ in range(samples)]
    cands = captions(rng, len(ids), vocab)

    def coco():
        scorer = CiderScorer(n=4, sigma=6.0)
        for c, v in zip(cands, ids):
            scorer += (c, refs[v])
        return np.array(scorer.compute_score()[1])

    t_coco, expected = timed(coco, max(1, repeats // 2))
    t_build, scorer = timed(lambda: CiderD(refs), 1)
    # pycocoevalcap counts each (candidate, references) pair as a document, so K samples of a
    # video count its references K times; the same corpus for vcap is the references repeated
    dup = {f"{v}#{k}": refs[v] for v in refs for k in range(samples)}
    same_corpus = CiderD(dup) if samples > 1 else scorer
    dup_ids = [f"{v}#{k}" for v in refs for k in range(samples)] if samples > 1 else ids
    t_vcap, got = timed(lambda: same_corpus.score(cands, dup_ids), repeats)
    t_vcap_scst, _ = timed(lambda: scorer.score(cands, ids), repeats)
    return {"candidates": len(cands), "references_each": num_refs, "pycocoevalcap_s": t_coco,
            "vcap_s": t_vcap, "vcap_corpus_of_videos_s": t_vcap_scst, "vcap_build_s": t_build,
            "speedup": t_coco / t_vcap, "max_abs_diff": float(np.abs(expected - got).max())}


def scst_against_a_training_corpus(repeats: int, num_videos: int = 6000, seed: int = 0) -> dict:
    """SCST as it runs: the corpus is the whole training set (``num_videos`` x 20 references), each step scores
    one batch of 64 videos x 5 samples against it."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(3000)]
    refs = {f"v{i}": captions(rng, 20, vocab) for i in range(num_videos)}
    t_build, scorer = timed(lambda: CiderD(refs), 1)
    ids = [f"v{i}" for i in range(64) for _ in range(5)]
    cands = captions(rng, len(ids), vocab)
    t_step, _ = timed(lambda: scorer.score(cands, ids), repeats)
    return {"corpus_videos": num_videos, "corpus_ngrams": len(scorer.weight), "vcap_build_s": t_build,
            "vcap_step_s": t_step}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    results = {"scst_320x20": case(64, 5, 20, args.repeats), "eval_3000x20": case(3000, 1, 20, args.repeats)}
    for name, r in results.items():
        print(f"{name}: pycocoevalcap {r['pycocoevalcap_s'] * 1000:.1f} ms, vcap {r['vcap_s'] * 1000:.2f} ms "
              f"({r['speedup']:.0f}x; corpus set-up once {r['vcap_build_s'] * 1000:.0f} ms), "
              f"max |diff| {r['max_abs_diff']:.1e}")
    results["scst_step_vs_6000x20_corpus"] = big = scst_against_a_training_corpus(args.repeats)
    print(f"SCST step against a {big['corpus_videos']}-video corpus ({big['corpus_ngrams']} n-grams): "
          f"{big['vcap_step_s'] * 1000:.1f} ms (corpus set-up once {big['vcap_build_s']:.1f} s)")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
