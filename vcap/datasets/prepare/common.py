"""Shared parts of the converters: finding files and videos, writing annotations and a summary."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import OmegaConf

from vcap.common.checkpoint import write_json
from vcap.common.config import card_path, load_yaml
from vcap.common.registry import registry
from vcap.processors.video_io import MEDIA_EXTENSIONS

log = logging.getLogger(__name__)


def find_file(raw: Path, *names: str, required: bool = True) -> Path | None:
    """The first file under ``raw`` (searched recursively) named one of ``names``."""
    for name in names:
        direct = raw / name
        if direct.is_file():
            return direct
        found = sorted(raw.rglob(name))
        if found:
            return found[0]
    if required:
        raise FileNotFoundError(f"none of {list(names)} found under {str(raw)!r}; expected the official "
                                "annotation files there (see `vcap prepare --help`)")
    return None


class VideoIndex:
    """Every video (or image) file under ``root``, by relative path and by name without extension."""

    def __init__(self, root: Path, extensions=MEDIA_EXTENSIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"video folder {str(self.root)!r} does not exist")
        self.by_stem: dict[str, str] = {}
        self.paths: set[str] = set()
        for dirpath, _, files in os.walk(self.root, followlinks=True):
            for name in sorted(files):
                if name.lower().endswith(extensions):
                    rel = os.path.relpath(os.path.join(dirpath, name), self.root)
                    self.paths.add(rel)
                    self.by_stem.setdefault(os.path.splitext(name)[0], rel)

    def find(self, stem: str) -> str | None:
        return self.by_stem.get(stem)

    def locate(self, rel: str) -> str | None:
        """``rel`` itself when that file is under the root, else the file named like it (any folder or extension)."""
        return rel if rel in self.paths else self.find(Path(rel).stem)


class Output:
    """Collects annotation files, drops records whose video is missing, writes the summary.

    The video folder is scanned when a converter first asks for a video, after it has found its annotation
    files: a missing file is reported at once, not after minutes of listing a network drive."""

    def __init__(self, out: Path, video_root: Path):
        if not Path(video_root).is_dir():
            raise FileNotFoundError(f"video folder {str(video_root)!r} does not exist")
        self.out, self.video_root = Path(out), Path(video_root)
        self._videos: VideoIndex | None = None
        self.summary: dict[str, dict] = {}
        self.notes: dict[str, str] = {}  # what a converter chose, e.g. which file the test split is
        self.missing: list[str] = []

    @property
    def videos(self) -> VideoIndex:
        if self._videos is None:
            self._videos = VideoIndex(self.video_root)
        return self._videos

    def write(self, name: str, records: list[dict]) -> None:
        """Records with ``video`` None (not found) are listed as missing and left out."""
        kept = [r for r in records if r["video"] is not None]
        gone = [r["video_id"] for r in records if r["video"] is None]
        self.missing.extend(f"{name}\t{v}" for v in gone)
        write_json(self.out / "annotations" / f"{name}.json", kept, indent=1)
        self.summary[name] = {"videos": len(kept), "captions": sum(len(r["captions"]) for r in kept),
                              "missing_videos": len(gone)}

    def finish(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "missing_videos.txt").write_text("".join(f"{m}\n" for m in self.missing))
        link = self.out / "videos"
        root = self.video_root.resolve()
        if not link.exists() and not link.is_symlink() and root != link.resolve():
            link.symlink_to(root, target_is_directory=True)
        summary = {"splits": self.summary, "videos": str(root), "missing_videos": len(self.missing),
                   **({"notes": self.notes} if self.notes else {})}
        write_json(self.out / "summary.json", summary, indent=1)
        for name, counts in self.summary.items():
            print(f"{name}: {counts['videos']} videos, {counts['captions']} captions, "
                  f"{counts['missing_videos']} missing")
        for key, note in self.notes.items():
            print(f"{key}: {note}")
        if self.missing:
            print(f"{len(self.missing)} referenced videos were not found under {root}; "
                  f"listed in {self.out / 'missing_videos.txt'}")
        print(f"annotations in {self.out / 'annotations'}; summary in {self.out / 'summary.json'}")
        readers = card_readers(self.out, list(self.summary))
        for name in self.summary:
            where = "; ".join(readers.get(name, [])) or "no dataset card (name it in build_info.annotations)"
            print(f"  {name}.json <- {where}")
        if readers:
            print(f"the cards read them with VCAP_DATA_ROOT={self.out.resolve().parent} (or build_info.annotations)")
        return summary


def card_readers(out: Path, names: list[str]) -> dict[str, list[str]]:
    """Which dataset card settings read ``<out>/annotations/<name>.json`` when VCAP_DATA_ROOT is ``out``'s parent:
    ``name -> ["datasets.msrvtt_caption.build_info.annotations.train", ...]``."""
    found: dict[str, list[str]] = {}
    for builder in registry.list("builder"):
        cls = registry.get_builder_class(builder)
        for card_type, rel in getattr(cls, "DATASET_CONFIG_DICT", {}).items():
            card = load_yaml(card_path(cls, rel))
            annotations = OmegaConf.to_container(card.get("build_info", {}), resolve=False).get("annotations") or {}
            for split, value in annotations.items():
                for name in names:
                    if isinstance(value, str) and value.endswith(f"/{out.name}/annotations/{name}.json"):
                        kind = "" if card_type == "default" else f" (type: {card_type})"
                        found.setdefault(name, []).append(f"datasets.{builder}.build_info.annotations.{split}{kind}")
    return found
