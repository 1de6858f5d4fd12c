"""Retrieval evaluation at scale: time and peak extra memory of the blockwise metrics.

Random L2-normalised 512-d embeddings for N texts and N videos (one caption each, the right
pair nudged together so the ranks are not all chance). The similarity matrix (N x N float32:
40 GB at N = 100k) is never held: ``retrieval_metrics_blocks`` computes it in blocks of texts.
Peak extra memory is the process's peak resident size during the evaluation minus its size
before (the embeddings themselves excluded), from /proc/self/status VmHWM after a reset.

    python benchmarks/retrieval_eval.py --sizes 10000 100000 [--dual-softmax 100] [--device cuda]

On ``--device cuda`` the embeddings and blocks live on the GPU; the peak extra memory is then the
GPU's (torch.cuda.max_memory_allocated beyond the embeddings).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from vcap.evaluation.retrieval import retrieval_metrics_blocks


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current resident size
        f.write("5")


def run(n: int, dim: int, dual_softmax: float | None, seed: int = 0, device: str = "cpu") -> dict:
    g = torch.Generator().manual_seed(seed)
    videos = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1).to(device)
    texts = torch.nn.functional.normalize(videos.cpu() + 0.8 * torch.randn(n, dim, generator=g), dim=-1).to(device)
    t2v = torch.arange(n)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        _reset_peak()
        before = _rss_kb("VmRSS") * 1024
    t0 = time.perf_counter()
    metrics = retrieval_metrics_blocks(lambda rows: texts[rows] @ videos.t(), n, n, t2v, dual_softmax=dual_softmax,
                                       device=device)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if cuda else _rss_kb("VmHWM") * 1024
    peak_extra_mb = (peak - before) / 2**20
    return {"n": n, "device": device, "seconds": seconds, "peak_extra_mb": peak_extra_mb, "full_matrix_mb": n * n * 4 / 2**20,
            "t2v_R1": metrics["t2v_R1"], "v2t_R1": metrics["v2t_R1"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--dual-softmax", type=float, default=None, help="temperature; re-scoring adds a pass")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="also write the results as JSON here")
    args = p.parse_args()
    results = []
    for n in args.sizes:
        r = run(n, args.dim, args.dual_softmax, device=args.device)
        print(f"N={n}: {r['seconds']:.1f} s, peak extra memory {r['peak_extra_mb']:.0f} MB "
              f"(the full matrix would be {r['full_matrix_mb']:.0f} MB), t2v R@1 {r['t2v_R1']:.2f}", flush=True)
        results.append(r)
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
