"""Decode failures met while loading batches: counted per epoch and split over every rank, written to
``bad_samples.jsonl``, and the run stopped once their share passes ``run.max_bad_sample_ratio``."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from vcap.common import dist

log = logging.getLogger(__name__)


class BadSampleError(RuntimeError):
    """Too many samples failed to decode: the data, not the model, needs attention."""


class BadSamples:
    """Decode failures met while loading batches; reported per epoch and split."""

    def __init__(self, output_dir: Path, max_ratio: float):
        self.path, self.max_ratio = Path(output_dir) / "bad_samples.jsonl", max_ratio
        self.items, self.bad, self.videos = 0, [], set()
        self.pending: BadSampleError | None = None

    def take(self, batch: dict) -> dict:
        """Record ``batch``'s failures and size; return the batch without them."""
        self.bad.extend(batch.pop("bad_samples", []))
        self.items += len(batch["index"])
        self.videos.update(map(str, batch.get("video_id", [])))
        return batch

    def tracked(self, loader):
        for batch in loader:
            yield self.take(batch)

    def report(self, epoch: int, split: str, defer: bool = False) -> None:
        """Write this period's failures of every rank, and stop if their share is too high: the share of
        videos (a bad video counts once, however many caption rows use it). ``defer``: keep the error for
        ``raise_pending`` (training raises it after the epoch's checkpoint is saved)."""
        parts = dist.all_gather_object((self.items, self.bad, sorted(self.videos)))
        self.items, self.bad, self.videos = 0, [], set()
        items = sum(n for n, _, _ in parts)
        bad = [b for _, part, _ in parts for b in part]
        if not bad:
            return
        if dist.is_main_process():
            with open(self.path, "a") as f:
                for b in bad:
                    f.write(json.dumps({"epoch": epoch, "split": split, **b}) + "\n")
        bad_videos = {b["path"]: b for b in bad}
        videos = len({v for _, _, part in parts for v in part} | {str(b.get("video_id")) for b in bad}) or items
        missing = sum(b["reason"] == "file does not exist" for b in bad_videos.values())
        what = " and ".join(x for x in (f"{missing} do not exist" if missing else "",
                                        f"{len(bad_videos) - missing} failed to decode"
                                        if len(bad_videos) > missing else "") if x)
        ratio = len(bad_videos) / max(1, videos)
        log.warning("%s (epoch %d): %d of %d videos could not be loaded (%s); listed in %s", split, epoch,
                    len(bad_videos), videos, what, self.path)
        if ratio > self.max_ratio:
            first = next(iter(bad_videos.values()))
            error = BadSampleError(
                f"{split} (epoch {epoch}): {len(bad_videos)} of {videos} videos ({ratio:.1%}) could not be loaded "
                f"({what}), more than run.max_bad_sample_ratio={self.max_ratio}; first: {first['path']}: "
                f"{first['reason']}. All are listed in {self.path}")
            if not defer:
                raise error
            self.pending = error

    def raise_pending(self) -> None:
        if self.pending is not None:
            error, self.pending = self.pending, None
            raise error
