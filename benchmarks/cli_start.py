"""Wall time of `vcap --help`, `vcap prepare --help`, `vcap train --help` and `vcap list` (best of N runs). The help
commands import neither torch nor transformers; `vcap list` reads the live registry, which imports the built-in
models."""
from __future__ import annotations

import json
import subprocess
import sys
import time

COMMANDS = (["--help"], ["prepare", "--help"], ["train", "--help"], ["list"])


def main(runs: int = 3) -> dict:
    out = {}
    for args in COMMANDS:
        best = float("inf")
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "vcap.cli", *args], capture_output=True, check=False)
            best = min(best, time.perf_counter() - t)
        out["vcap " + " ".join(args)] = round(best, 2)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
