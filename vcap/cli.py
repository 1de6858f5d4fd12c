"""The ``vcap`` command and the logic behind train.py and evaluate.py."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from vcap.common.config import card_path, import_user_modules, load_yaml
from vcap.common.registry import KINDS, registry
from vcap.common.schema import GenerateConfig
from vcap.common.validation import ConfigError

# Each command imports the code it runs when it runs (the lines marked "on use"): `vcap --help` and
# `vcap prepare --help` load neither torch nor transformers.

log = logging.getLogger("vcap")


_VIA_VCAP = False  # set by main(): usage lines then say `vcap train`, not `train.py`


def _prog(script: str, command: str) -> str:
    return f"vcap {command}" if _VIA_VCAP else script


def _parser(prog: str, description: str, required: bool = True) -> argparse.ArgumentParser:
    """``--cfg-path`` (a project) and ``--options`` (its overrides), as every command that reads a project takes them."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--cfg-path", required=required, help="project YAML, e.g. projects/demo/caption_synthetic.yaml")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. run.max_epoch=2 model.checkpoint=out/best.safetensors")
    return p


def _launch_rank() -> int:
    """This process's rank as torchrun set it (the process group is gone once a run has finished)."""
    import os

    return int(os.environ.get("RANK", "0"))


def _load(args):
    try:
        from vcap.project import build_config  # on use

        return build_config(args.cfg_path, args.options)
    except (ConfigError, FileNotFoundError) as e:
        print(f"vcap: invalid config: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def train_main(argv=None) -> dict:
    args = _parser(_prog("train.py", "train"), "Train a vcap project (plain python or torchrun).").parse_args(argv)
    cfg = _load(args)
    from vcap.runners.build import run_training  # on use

    metrics = run_training(cfg)
    if _launch_rank() == 0:  # the same table evaluate.py prints
        print(format_table({k: v for k, v in metrics.items() if isinstance(v, dict)}))
    return metrics


def format_table(metrics: dict) -> str:
    """``split | metric | value`` rows of a metrics dict (nested by split or flat)."""
    rows, notes = [], []
    for split, values in metrics.items():
        if isinstance(values, dict):
            rows.extend((split, k, v) for k, v in values.items() if k != "notes")
            notes.extend(f"{split} {k}: {v}" for k, v in (values.get("notes") or {}).items())
        elif split == "notes" and isinstance(values, dict):
            notes.extend(f"{k}: {v}" for k, v in values.items())
        else:
            rows.append(("", split, values))
    width = max([len(r[0]) for r in rows] + [5]), max([len(r[1]) for r in rows] + [6])
    lines = [f"{'split':<{width[0]}}  {'metric':<{width[1]}}  value"]
    for split, key, value in rows:
        shown = f"{value:.4f}" if isinstance(value, float) else ("null" if value is None else str(value))
        lines.append(f"{split:<{width[0]}}  {key:<{width[1]}}  {shown}")
    return "\n".join(lines + [f"note: {n}" for n in dict.fromkeys(notes)])


def evaluate_main(argv=None) -> dict:
    p = _parser(_prog("evaluate.py", "evaluate"), "Evaluate a project's test splits (a model from model.checkpoint; "
                "plain python or torchrun), or score an existing results file against ground truth without a model "
                "(--results, --gt).", required=False)
    p.add_argument("--results", help="predictions: vcap results/<split>.json, COCO results or {id: caption}")
    p.add_argument("--gt", help="references: COCO-style captions, vcap annotations or {id: [captions]}")
    p.add_argument("--out", help="where --results mode writes its metrics (default: <results>.metrics.json)")
    p.add_argument("--no-java", action="store_true",
                   help="--results mode without Java: BLEU, ROUGE-L, CIDEr after a Python tokenizer (non-standard)")
    args = p.parse_args(argv)
    if args.results or args.gt:
        if not (args.results and args.gt) or args.cfg_path:
            p.error("--results and --gt go together, without --cfg-path")
        from vcap.common.checkpoint import write_json  # on use
        from vcap.evaluation.caption import score_results  # on use

        metrics = score_results(args.results, args.gt, java=not args.no_java)
        out = Path(args.out or Path(args.results).with_suffix(".metrics.json"))
        write_json(out, metrics, indent=2)
        print(format_table(metrics))
        print(f"written to {out}")
        return metrics
    if not args.cfg_path:
        p.error("give --cfg-path (evaluate a model) or --results and --gt (score a results file)")
    cfg = _load(args)
    from vcap.runners.build import run_evaluation  # on use

    metrics = run_evaluation(cfg)
    if _launch_rank() == 0:
        print(format_table(metrics))
    return metrics


def _card_line(path: Path) -> str:
    """The first sentence of a card's leading comment."""
    text = " ".join(line.lstrip("# ").strip() for line in path.read_text().splitlines()
                    if line.startswith("#")).strip()
    end = text.find(". ")
    return (text[:end + 1] if end > 0 else text)[:140]


def list_main(argv=None) -> None:

    plural = {k: {"lr_scheduler": "lr_schedulers"}.get(k, k + "s") for k in KINDS}
    p = argparse.ArgumentParser(prog="vcap list", description="List registered names: models with their model "
                                "types (LAVIS's model zoo), datasets, processors, tasks, runners, schedulers.")
    p.add_argument("kind", nargs="?", choices=list(plural.values()), help="one kind; all when omitted")
    p.add_argument("--cfg-path", help="a project: the modules its imports register are listed too")
    args = p.parse_args(argv)

    if args.cfg_path:  # a project's own modules register their classes too
        import_user_modules(load_yaml(args.cfg_path).get("imports"), args.cfg_path)
    table = {kind: {name: {t: card_path(cls, rel) for t, rel in
                           (getattr(cls, "PRETRAINED_MODEL_CONFIG_DICT", None) or {}).items()}
                    for name, cls in registry.items(kind).items()} for kind in KINDS}
    for kind, name in plural.items():
        if args.kind not in (None, name):
            continue
        names = table.get(kind, {})
        if kind != "model":
            print(f"{name}: {', '.join(sorted(names)) or '(none)'}")
            continue
        print("models (arch / model_type: what the card is):")
        for arch in sorted(names):
            cards = names[arch]
            if not cards:
                print(f"  {arch}  (no cards: the model section gives its constructor's arguments)")
            for model_type, path in cards.items():
                print(f"  {arch} / {model_type}: {_card_line(path)}")


def check_main(argv=None) -> int:
    """Everything that can be checked without training: config, annotation files, videos, frame sizes."""
    p = _parser(_prog("check", "check"), "Check a project without training: the config schema, every "
                "annotation file and every video it names, the processors' frame size against the model's. "
                "Exit status 0 when all is well, 2 otherwise.")
    args = p.parse_args(argv)
    cfg = _load(args)  # the schema and the frame sizes; exits 2 naming every problem

    problems = 0
    for name, section in cfg.datasets.items():
        builder = registry.get_builder_class(name)(section, name)
        generated = type(builder).prepare is not registry.get_builder_class("custom_caption").prepare
        for split in builder.splits():
            if split == "train" and section.train_storage == "webdataset":
                shards = Path(str(section.train_shards))
                ok = shards.exists()
                problems += not ok
                print(f"{name} {split}: shards {shards} {'found' if ok else 'DO NOT EXIST'}")
                continue
            path = builder.annotation_path(split)
            if not path.is_file():
                if generated:
                    print(f"{name} {split}: generated on the first run ({path})")
                    continue
                problems += 1
                print(f"{name} {split}: {path} DOES NOT EXIST (datasets.{name}.build_info.annotations.{split})")
                continue
            try:
                records = builder.load_split(split)
            except (ValueError, FileNotFoundError) as e:
                problems += 1
                print(f"{name} {split}: {e}")
                continue
            missing = [r["video"] for r in builder.missing_videos(records)]
            problems += bool(missing)
            print(f"{name} {split}: {len(records)} videos, {sum(len(r['captions']) for r in records)} captions, "
                  f"{len(missing)} missing under {builder.video_root()}" + (f": {', '.join(missing[:5])}" if missing else ""))
    print("ok" if not problems else f"{problems} problem(s)")
    if problems:
        raise SystemExit(2)
    return 0


CONVERTER_NAMES = ("coco", "lavis", "msrvtt", "msvd", "vatex", "webvid")  # vcap.datasets.prepare.CONVERTERS


def prepare_main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="vcap prepare", description=(
        "Convert a dataset's official annotation files into vcap annotations, checking every video. "
        "msrvtt: train_val_videodatainfo.json + test_videodatainfo.json (+ MSRVTT_train.9k.csv / 7k.csv, "
        "MSRVTT_JSFUSION_test.csv for retrieval); msvd: raw-captions.pkl + train/val/test_list.txt; "
        "vatex: vatex_training_v1.0.json + vatex_validation_v1.0.json; coco: dataset_coco.json (Karpathy); "
        "lavis: LAVIS's or the Hugging Face MSR-VTT's annotation files; webvid: WebVid's CSV or a LAVIS JSON."))
    p.add_argument("dataset", choices=CONVERTER_NAMES)
    p.add_argument("--raw", required=True, help="folder holding the official files (searched recursively)")
    p.add_argument("--out", required=True, help="output folder, e.g. data/msrvtt (the cards' default)")
    p.add_argument("--videos", help="video (or image) folder, searched recursively; default: --raw")
    args = p.parse_args(argv)
    from vcap.datasets.prepare import prepare  # on use

    try:
        return prepare(args.dataset, args.raw, args.out, args.videos)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"vcap prepare: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _split_builder(prog: str, cfg, dataset: str | None, split: str):
    """(name, builder) of the project's dataset ``dataset`` (its only one by default), data prepared,
    after checking it has ``split``."""

    names = list(cfg.datasets)
    name = dataset or (names[0] if len(names) == 1 else None)
    if name not in names:
        print(f"{prog}: --dataset must be one of {names}", file=sys.stderr)
        raise SystemExit(2)
    builder = registry.get_builder_class(name)(cfg.datasets[name], name)
    builder.prepare()
    if split not in builder.splits():
        print(f"{prog}: {name} has no split {split!r}; expected one of {builder.splits()}", file=sys.stderr)
        raise SystemExit(2)
    return name, builder


def shard_main(argv=None) -> Path:
    from vcap.datasets.datasets.base import load_annotations  # on use
    from vcap.datasets.shards import write_shards  # on use

    p = _parser("vcap shard", "Write a dataset split as WebDataset tar shards (video bytes + captions).")
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True, help="folder for the shards and their index.json")
    p.add_argument("--shard-size", type=int, default=1000, help="videos per shard")
    p.add_argument("--dataset", help="which of the project's datasets (default: its only one)")
    args = p.parse_args(argv)
    cfg = _load(args)
    name, builder = _split_builder("vcap shard", cfg, args.dataset, args.split)
    records = load_annotations(builder.annotation_path(args.split))
    index = write_shards(records, builder.video_root(), args.out, args.shard_size, args.split)
    print(f"{len(records)} videos of {name}/{args.split} in {index.parent}; train from them with "
          f"--options datasets.{name}.train_storage=webdataset datasets.{name}.train_shards={index}")
    return index


def _generate_flags(p: argparse.ArgumentParser) -> None:
    """A flag per ``run.generate`` key (``--max-len``, ``--use-nucleus-sampling`` ...); unset ones keep the
    checkpoint's or project's decoding."""
    group = p.add_argument_group("decoding (run.generate; default: the checkpoint's or project's)")
    for f in dataclasses.fields(GenerateConfig):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            group.add_argument(flag, type=type(f.default), default=None, metavar=f.name.upper())


def _inference_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = _parser(prog, description, required=False)
    p.add_argument("--model", help="a vcap checkpoint (best.safetensors) or a run's checkpoints/ directory: it "
                                   "stores its model config, tokenizer and evaluation processor; or --cfg-path with "
                                   "--options model.checkpoint=...")
    return p


def _inference(prog: str, needs: str, what: str, args=None, cfg=None, dataset: str | None = None):
    """``build_inference`` from ``args.model`` (a checkpoint alone), ``args.cfg_path`` or a built ``cfg``,
    exiting 2 with the reason when it cannot be built or the model is not a ``what``."""
    from vcap.inference import build_inference  # on use

    if cfg is None and bool(args.model) == bool(args.cfg_path):
        print(f"{prog}: give --model <checkpoint> or --cfg-path <project> (one of them)", file=sys.stderr)
        raise SystemExit(2)
    try:
        inf = build_inference(checkpoint=args.model) if cfg is None and args.model else \
            build_inference(_load(args) if cfg is None else cfg, dataset=dataset)
    except (FileNotFoundError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if not getattr(inf.model, needs, False):
        print(f"{prog}: {type(inf.model).__name__} is not a {what}", file=sys.stderr)
        raise SystemExit(2)
    return inf


def retrieve_main(argv=None) -> list[dict]:
    """Embed a folder of videos once (cached), then answer text queries with the top-k videos."""
    from vcap.tasks.retrieval import embed_folder, rank_videos  # on use

    p = _inference_parser("vcap retrieve", "Text-to-video search over a folder with a retrieval model: "
                          "--model output/run/checkpoints/best.safetensors (or --cfg-path P --options model.checkpoint=...)")
    p.add_argument("--videos", required=True, help="folder of videos (searched recursively)")
    p.add_argument("--query", required=True, nargs="+", help="one or more text queries")
    p.add_argument("-k", type=int, default=5, help="videos per query")
    p.add_argument("--cache", help="where video embeddings are kept (default: <videos>/.vcap_cache)")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    inf = _inference("vcap retrieve", "similarity", "retrieval model", args)
    root = Path(args.videos)
    cache = Path(args.cache or root / ".vcap_cache")
    try:
        names, videos, skipped, new = embed_folder(inf.model, inf.vis["eval"], root, cache, inf.signature,
                                                   args.batch_size)
    except FileNotFoundError as e:
        print(f"vcap retrieve: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if skipped:
        print(f"{len(skipped)} files could not be decoded and are left out:\n  " + "\n  ".join(skipped), file=sys.stderr)
    print(f"{len(names)} videos ({new} embedded now, the rest from {cache / inf.signature}.pt)")
    results = rank_videos(inf.model, args.query, names, videos, args.k)
    for r in results:
        print(f"\n{r['query']}")
        for n, h in enumerate(r["results"], 1):
            print(f"  {n}. {h['score']:.4f}  {h['video']}")
    return results


def extract_features_main(argv=None) -> dict:
    """Run a model's frozen encoder once over a split; training then reads ``datasets.<name>.features``."""
    from vcap.datasets.datasets.base import CaptionEvalDataset, load_annotations  # on use
    from vcap.datasets.features import extract_features  # on use

    p = _parser("vcap extract-features", "Cache a model's frozen encoder features of a split (CLIPCap-style "
                "training without video).")
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True, help="cache directory (several splits may share it)")
    p.add_argument("--dataset", help="which of the project's datasets (default: its only one)")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    cfg = _load(args)
    for section in cfg.datasets.values():
        section.features = None  # the cache is being written, not read
    name, builder = _split_builder("vcap extract-features", cfg, args.dataset, args.split)
    inf = _inference("vcap extract-features", "frozen_frame_encoder",
                     "model with a frozen encoder to cache (model.freeze_clip, model.freeze_xclip)", cfg=cfg, dataset=name)
    dataset = CaptionEvalDataset(load_annotations(builder.annotation_path(args.split)), builder.video_root(),
                                 inf.vis["eval"], inf.txt["eval"])
    summary = extract_features(inf.model, dataset, args.out, args.split, inf.signature, args.batch_size)
    print(f"{summary['videos']} videos of {name}/{args.split} embedded into {args.out} ({len(summary['bad'])} could "
          f"not be decoded); train from them with --options datasets.{name}.features={args.out}")
    return summary


def caption_main(argv=None) -> list[dict]:
    """Caption video files with a trained captioner (the project's evaluation processor and decoding)."""
    import torch

    from vcap.processors.video_io import VideoDecodeError  # on use

    p = _inference_parser("vcap caption", "Caption video (or image) files with a trained captioner: --model "
                          "output/run/checkpoints/best.safetensors (or --cfg-path P --options model.checkpoint=...). "
                          "Frames are sampled as the model's evaluation processor samples them: the shorter side "
                          "resized to its image_size, then the centre square cropped.")
    p.add_argument("--video", required=True, nargs="+", help="video (or image) files")
    _generate_flags(p)
    p.add_argument("--json", action="store_true", help="print one JSON list of {video, caption(s)} or {video, error}")
    args = p.parse_args(argv)
    inf = _inference("vcap caption", "generate", "captioner", args)
    keys = {f.name for f in dataclasses.fields(GenerateConfig)}
    gen = {**inf.generation, **{k: v for k, v in vars(args).items() if k in keys and v is not None}}
    processor = inf.vis["eval"]
    out = []
    for path in args.video:
        try:
            frames, mask = processor.load(path)
        except VideoDecodeError as e:
            out.append({"video": path, "error": e.reason})
            if not args.json:
                print(f"{path}\t(skipped: {e.reason})", file=sys.stderr)
            continue
        video, mask = processor(frames, mask=mask)
        with torch.no_grad():
            try:
                captions = inf.model.generate({"video": video[None], "video_mask": mask[None]}, **gen)
            except (TypeError, ValueError) as e:  # decoding settings the model cannot take
                print(f"vcap caption: {e}", file=sys.stderr)
                raise SystemExit(2) from None
        out.append({"video": path, **({"caption": captions[0]} if len(captions) == 1 else {"captions": captions})})
        if not args.json:
            print("\n".join(f"{path}\t{c}" for c in captions))
    if args.json:
        import json

        print(json.dumps(out, indent=1))
    failed = sum("error" in o for o in out)
    if failed:  # every input that could be read is captioned first; the status says some were not
        print(f"vcap caption: {failed} of {len(out)} inputs could not be read", file=sys.stderr)
        raise SystemExit(1)
    return out


def report_main(argv=None) -> Path:
    p = argparse.ArgumentParser(prog="vcap report", description=(
        "Write OUTPUT_DIR/report/index.html: the metrics, and per video its sampled frames, references, prediction "
        "and CIDEr-D (captioning) or per query its top-5 videos and the right one's rank (retrieval), with the "
        "training curves. Training and evaluate.py write it too."))
    p.add_argument("output_dir", help="a run's output directory (config.yaml, results/<split>.json)")
    p.add_argument("--split", default="test", help="the split whose results to show (default: test)")
    p.add_argument("--dataset", help="in a run of several datasets, which one's split")
    p.add_argument("--workers", type=int, default=None, help="processes decoding thumbnails (default: the cores)")
    args = p.parse_args(argv)
    from vcap.report import write_report  # on use

    try:
        path = write_report(args.output_dir, args.split, args.dataset, args.workers)
    except (FileNotFoundError, ValueError) as e:
        print(f"vcap report: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(path)
    return path


COMMANDS = {  # name: (function, one line)
    "train": ("train_main", "train a project (also: torchrun ... vcap train / train.py)"),
    "evaluate": ("evaluate_main", "evaluate a checkpoint on a project's test splits, or score a results file"),
    "caption": ("caption_main", "caption video or image files with a trained captioner"),
    "retrieve": ("retrieve_main", "rank videos for a text query with a trained retrieval model"),
    "report": ("report_main", "write the HTML report of a run's evaluation (frames, predictions, scores, curves)"),
    "prepare": ("prepare_main", "convert a dataset's official annotation files into vcap's (msrvtt, webvid, ...)"),
    "shard": ("shard_main", "write a dataset split as WebDataset tar shards"),
    "extract-features": ("extract_features_main", "cache a frozen encoder's features for training without video"),
    "list": ("list_main", "list the registered models, datasets, processors, tasks and runners"),
    "check": ("check_main", "check a project without training: config, annotation files, videos, frame sizes"),
}


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        print("usage: vcap <command> [options]   (vcap <command> --help for its options)\n\ncommands:")
        for name, (_, line) in COMMANDS.items():
            print(f"  {name:<{width}}  {line}")
        raise SystemExit(0)
    if argv[0] not in COMMANDS:
        print(f"vcap: unknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)} (vcap --help)", file=sys.stderr)
        raise SystemExit(2)
    global _VIA_VCAP
    _VIA_VCAP = True
    globals()[COMMANDS[argv[0]][0]](argv[1:])


if __name__ == "__main__":
    main()
