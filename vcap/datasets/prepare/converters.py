"""One converter per dataset family, each from the files its authors publish."""
from __future__ import annotations

import io
import json
import os
import pickle
import re
from pathlib import Path

from vcap.datasets.datasets.base import load_annotations, read_rows, require_columns
from vcap.datasets.prepare.common import Output, find_file


def _record(video_id: str, video: str | None, captions: list[str], **span) -> dict:
    rec = {"video_id": video_id, "video": video, "captions": [c.strip() for c in captions if c and c.strip()]}
    rec.update({k: v for k, v in span.items() if v is not None})
    return rec


# ------------------------------------------------------------------------------------------------
def _msrvtt_info(raw: Path) -> list[Path]:
    """MSR-VTT's official pair (``train_val_videodatainfo.json`` + ``test_videodatainfo.json``), or CLIP4Clip's
    ``MSRVTT_data.json`` (its ``msrvtt_data.zip``: the same schema, all 10,000 videos in one file)."""
    pair = [find_file(raw, n, required=False) for n in ("train_val_videodatainfo.json", "test_videodatainfo.json")]
    if all(pair):
        return pair
    single = find_file(raw, "MSRVTT_data.json", required=False)
    if single:
        return [single]
    raise FileNotFoundError(f"neither train_val_videodatainfo.json + test_videodatainfo.json (MSR-VTT's release) nor "
                            f"MSRVTT_data.json (CLIP4Clip's msrvtt_data.zip) found under {str(raw)!r}")


def msrvtt(raw: Path, out: Output) -> None:
    """MSR-VTT: ``train_val_videodatainfo.json`` + ``test_videodatainfo.json``, or CLIP4Clip's ``MSRVTT_data.json``
    (captioning, 6513/497/2990 by each video's ``split`` field); with CLIP4Clip's ``MSRVTT_train.9k.csv`` /
    ``MSRVTT_train.7k.csv`` and JSFusion's ``MSRVTT_JSFUSION_test.csv`` (comma- or, as Excel re-saves it,
    semicolon-separated) also the retrieval splits (train 9k / 7k with all 20 captions per video, test 1k-A
    with its one sentence each). Every annotation file is found before the video folder is scanned."""
    info = _msrvtt_info(raw)
    lists = {size: find_file(raw, f"MSRVTT_train.{size}.csv", required=False) for size in ("9k", "7k")}
    jsfusion = find_file(raw, "MSRVTT_JSFUSION_test.csv", required=False)
    videos, captions = {}, {}
    for path in info:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not {"videos", "sentences"} <= set(data):
            raise ValueError(f"{path}: expected MSR-VTT's {{'videos': [...], 'sentences': [...]}}")
        for v in data["videos"]:
            videos[v["video_id"]] = v["split"]
        for s in data["sentences"]:
            captions.setdefault(s["video_id"], []).append(s["caption"])
    splits = {"train": "train", "validate": "val", "val": "val", "test": "test"}
    by_split: dict[str, list] = {"train": [], "val": [], "test": []}
    for vid in sorted(videos, key=lambda v: int(re.sub(r"\D", "", v) or 0)):
        if videos[vid] not in splits:
            raise ValueError(f"MSR-VTT video {vid}: unknown split {videos[vid]!r}; expected train, validate or test")
        by_split[splits[videos[vid]]].append(_record(vid, out.videos.find(vid), captions.get(vid, [])))
    for split, records in by_split.items():
        out.write(f"caption_{split}", [r for r in records if r["captions"]])

    for size, path in lists.items():
        if path:
            ids = [row["video_id"] for row in require_columns(read_rows(path), path, "video_id")]
            out.write(f"retrieval_train_{size}", [_record(v, out.videos.find(v), captions.get(v, [])) for v in ids])
    if jsfusion:
        rows = require_columns(read_rows(jsfusion), jsfusion, "video_id", "sentence")
        out.write("retrieval_test_1ka", [_record(r["video_id"], out.videos.find(r["video_id"]), [r["sentence"]])
                                         for r in rows])


# ------------------------------------------------------------------------------------------------
class _PlainUnpickler(pickle.Unpickler):
    """Captions only: plain containers and strings. Any class or function in the file is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: caption files hold only lists and strings")


def msvd(raw: Path, out: Output) -> None:
    """MSVD: ``raw-captions.pkl`` (video id -> list of token lists) with ``train_list.txt``,
    ``val_list.txt`` and ``test_list.txt`` (1200/100/670 videos, about 41 captions each)."""
    path = find_file(raw, "raw-captions.pkl")
    captions = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    if not isinstance(captions, dict):
        raise ValueError(f"{path}: expected a dict of video id -> captions, got {type(captions).__name__}")
    lists = {split: find_file(raw, f"{split}_list.txt") for split in ("train", "val", "test")}
    for split, list_path in lists.items():
        ids = [line.strip() for line in list_path.read_text().splitlines() if line.strip()]
        unknown = [v for v in ids if v not in captions]
        if unknown:
            raise ValueError(f"{split}_list.txt names {len(unknown)} videos without captions in {path.name}, "
                             f"e.g. {unknown[0]!r}")
        out.write(f"caption_{split}", [
            _record(v, out.videos.find(v), [c if isinstance(c, str) else " ".join(c) for c in captions[v]])
            for v in ids])


# ------------------------------------------------------------------------------------------------
def _vatex_video(out: Output, video_id: str) -> tuple[str | None, float | None, float | None]:
    """A clip file ``<ytid>_<start>_<end>.mp4``, or the full YouTube video ``<ytid>.mp4`` with the span."""
    clip = out.videos.find(video_id)
    if clip:
        return clip, None, None
    m = re.fullmatch(r"(.+)_(\d+)_(\d+)", video_id)
    if m and out.videos.find(m.group(1)):
        return out.videos.find(m.group(1)), float(int(m.group(2))), float(int(m.group(3)))
    return None, None, None


VATEX_TEST_FILES = ("vatex_public_test_english_v1.1.json", "cap_private_test.json", "cap_test.json")


def vatex(raw: Path, out: Output) -> None:
    """VATEX: ``vatex_training_v1.0.json`` and ``vatex_validation_v1.0.json`` (``videoID`` is
    ``<youtube id>_<start>_<end>``; the ten English captions ``enCap``). Clips are found as
    ``<videoID>.*`` or cut from ``<youtube id>.*`` by start and end.

    The test split is, the first found: VATEX's ``vatex_public_test_english_v1.1.json`` (6,000 clips with English
    captions, the same schema), or LAVIS's ``cap_private_test.json`` (its vatex card's test file, which it stores as
    ``cap_test.json``; rows of ``video`` and ``caption``), which seed 003's VATEX numbers were computed on. Without
    either, the test split is the validation set, as in the papers that report on it."""
    files = {split: find_file(raw, name) for split, name in (("train", "vatex_training_v1.0.json"),
                                                              ("val", "vatex_validation_v1.0.json"))}
    test = next((f for f in (find_file(raw, n, required=False) for n in VATEX_TEST_FILES) if f), None)
    if test is not None and test.name == VATEX_TEST_FILES[0]:
        files["test"] = test
    splits = {}
    for split, path in files.items():
        records = []
        for item in json.loads(path.read_text()):
            video, start, end = _vatex_video(out, item["videoID"])
            records.append(_record(item["videoID"], video, item["enCap"], start=start, end=end))
        splits[split] = records
    if test is not None and "test" not in splits:  # LAVIS's rows: the clip id is the file's name
        splits["test"] = [{**r, **dict(zip(("video", "start", "end"), _vatex_video(out, Path(r["video"]).stem)))}
                          for r in load_annotations(test)]
    splits.setdefault("test", splits["val"])
    out.notes["caption_test"] = (f"from {test.name}" if test is not None else
                                 "the validation set (no vatex_public_test_english_v1.1.json or cap_private_test.json)")
    for split, records in splits.items():
        out.write(f"caption_{split}", [{k: v for k, v in r.items() if v is not None or k == "video"} for r in records])


# ------------------------------------------------------------------------------------------------
def coco(raw: Path, out: Output) -> None:
    """COCO Karpathy split: ``dataset_coco.json`` (``restval`` joins train). Images are
    one-frame videos at ``<filepath>/<filename>`` under the image folder."""
    data = json.loads(find_file(raw, "dataset_coco.json").read_text())
    by_split: dict[str, list] = {"train": [], "val": [], "test": []}
    for image in data["images"]:
        split = {"restval": "train"}.get(image["split"], image["split"])
        rel = f"{image['filepath']}/{image['filename']}" if image.get("filepath") else image["filename"]
        by_split[split].append(_record(str(image.get("cocoid", image.get("imgid"))), out.videos.locate(rel),
                                       [s["raw"] for s in image["sentences"]]))
    for split, records in by_split.items():
        out.write(f"caption_{split}", records)


def _write_row_files(out: Output, files: list[tuple[str, Path]]) -> None:
    """Each (name, file of rows grouped by video) written as ``name``, its videos located by path or by name;
    every file is read before any is written, and two files for one name are refused."""
    first: dict[str, Path] = {}
    for name, path in files:
        if name in first:
            raise ValueError(f"{path} and {first[name]} would both be written as {name}.json; give --raw a folder "
                             f"with one file per split")
        first[name] = path
    loaded = [(name, load_annotations(path)) for name, path in files]
    for name, records in loaded:
        for r in records:
            r["video"] = out.videos.locate(r["video"])
        out.write(name, records)


# ------------------------------------------------------------------------------------------------
# LAVIS's file names (its configs/datasets/msrvtt|msvd/defaults_*.yaml) and the Hugging Face MSR-VTT's, and the
# names vcap's cards read
LAVIS_NAMES = {"cap_train": "caption_train", "cap_val": "caption_val", "cap_test": "caption_test",
               "retrieval_train": "retrieval_train_9k", "retrieval_test": "retrieval_test_1ka",
               "test_1k": "retrieval_test_1ka", "msrvtt_test_1k": "retrieval_test_1ka",
               "train_9k": "retrieval_train_9k", "msrvtt_train_9k": "retrieval_train_9k",
               "train_7k": "retrieval_train_7k", "msrvtt_train_7k": "retrieval_train_7k"}


def lavis(raw: Path, out: Output) -> None:
    """Annotation files as LAVIS (``cap_train.json``, ``retrieval_test.json`` ...) or the Hugging Face MSR-VTT
    (``test_1k.json``: rows of ``video_id``, ``video``, ``caption``, ...) ship them: rows of ``video`` (or
    ``image``) and ``caption`` (a string or a list), grouped by video. Each is written under the name vcap's
    cards read (``cap_train`` -> ``caption_train``, ``retrieval_train`` -> ``retrieval_train_9k``,
    ``retrieval_test`` and ``test_1k`` -> ``retrieval_test_1ka``); other names are kept."""
    files = sorted(p for p in raw.rglob("*.json") if re.search(r"(train|val|test)", p.stem))
    if not files:
        raise FileNotFoundError(f"no LAVIS annotation files (*train*.json, *val*.json, *test*.json) under {raw}")
    _write_row_files(out, [(LAVIS_NAMES.get(p.stem, p.stem), p) for p in files])


# ------------------------------------------------------------------------------------------------
def webvid(raw: Path, out: Output) -> None:
    """WebVid: its CSVs (``results_2M_train.csv``, ``results_2M_val.csv``, or the 10M ones: ``videoid``,
    ``contentUrl``, ``duration``, ``page_dir``, ``name``; each video at ``<page_dir>/<videoid>.mp4``, else found
    by its id), or a LAVIS JSON of ``video`` and ``caption`` rows (seed 003's ``webvid2m_synthetic_msrvtt.json``:
    WebVid-2M with re-written captions; a file whose name says no split is the train split)."""
    csvs = sorted(raw.rglob("results_*.csv"))
    jsons = sorted(raw.rglob("*.json"))
    if not csvs and not jsons:
        raise FileNotFoundError(f"no WebVid CSV (results_2M_train.csv, ...) or LAVIS JSON under {str(raw)!r}")
    _write_row_files(out, [(f"caption_{next((s for s in ('train', 'val', 'test') if s in p.stem), 'train')}", p)
                           for p in csvs + jsons])


CONVERTERS = {"msrvtt": msrvtt, "msvd": msvd, "vatex": vatex, "coco": coco, "lavis": lavis, "webvid": webvid}


def prepare(name: str, raw: str | os.PathLike, out: str | os.PathLike, videos: str | os.PathLike | None = None) -> dict:
    """Run converter ``name`` on the official files under ``raw``; returns the summary."""
    if name not in CONVERTERS:
        raise KeyError(f"no converter {name!r}; expected one of {sorted(CONVERTERS)}")
    raw = Path(raw)
    if not raw.is_dir():
        raise FileNotFoundError(f"--raw {str(raw)!r} is not a directory")
    output = Output(Path(out), Path(videos) if videos else raw)
    CONVERTERS[name](raw, output)
    return output.finish()
