"""Logging set-up and the metric writers (JSONL + TensorBoard) used on rank 0."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from vcap.common.dist import get_rank


def setup_logging() -> None:
    level = logging.INFO if get_rank() == 0 else logging.WARNING
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s [rank{get_rank()}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
        force=True,
    )


class MetricWriter:
    """Appends scalars to ``<output_dir>/log.jsonl`` and TensorBoard; a no-op off rank 0."""

    def __init__(self, output_dir: str | Path, enabled: bool = True):
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.path = Path(output_dir) / "log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        except ImportError:  # an optional extra: log.jsonl has every scalar regardless
            logging.getLogger(__name__).warning("tensorboard is not installed (pip install -e \".[tensorboard]\"); "
                                                "logging to log.jsonl only")

    def write(self, step: int, scalars: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        row = {"step": step, **{f"{prefix}{k}": v for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{prefix}{k}", v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
