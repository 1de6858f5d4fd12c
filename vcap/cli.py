"""The ``vcap`` command and the logic behind train.py and evaluate.py."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vcap.common.config import ConfigError, build_config, run_config

log = logging.getLogger("vcap")


_VIA_VCAP = False  # set by main(): usage lines then say `vcap train`, not `train.py`


def _prog(script: str, command: str) -> str:
    return f"vcap {command}" if _VIA_VCAP else script


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--cfg-path", required=True, help="project YAML, e.g. projects/demo/caption_synthetic.yaml")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. run.max_epoch=2 model.checkpoint=out/best.safetensors")
    return p


def _start(cfg):
    from vcap.runners.build import build_runner

    return build_runner(cfg)


def _launch_rank() -> int:
    """This process's rank as torchrun set it (the process group is gone once a run has finished)."""
    import os

    return int(os.environ.get("RANK", "0"))


def _load(args) -> "DictConfig":  # noqa: F821
    try:
        return build_config(args.cfg_path, args.options)
    except (ConfigError, FileNotFoundError) as e:
        print(f"vcap: invalid config: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def train_main(argv=None) -> dict:
    args = _parser(_prog("train.py", "train"), "Train a vcap project (plain python or torchrun).").parse_args(argv)
    cfg = _load(args)
    from vcap.runners.build import run_training

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


def _ids(value) -> str:
    return str(value)


def load_predictions(path: str | Path) -> dict[str, str]:
    """id -> caption from a results file: vcap's ``results/<split>.json`` rows, COCO results
    (``image_id``/``video_id`` and ``caption``), or a plain ``{id: caption}`` mapping."""
    import json

    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        return {_ids(k): str(v) for k, v in data.items()}
    preds = {}
    for i, row in enumerate(data):
        key = next((k for k in ("video_id", "image_id", "id") if k in row), None)
        text = next((row[k] for k in ("prediction", "caption") if k in row), None)
        if key is None or not isinstance(text, str):
            raise ValueError(f"{path}: row {i} needs an id (video_id, image_id or id) and a caption (caption or "
                             f"prediction); got keys {sorted(row)}")
        preds.setdefault(_ids(row[key]), text)
    return preds


def load_references(path: str | Path) -> dict[str, list[str]]:
    """id -> reference captions from COCO-style ground truth (``annotations`` of ``image_id`` and
    ``caption``), vcap annotation records (``captions``), vcap results rows (``references``), rows
    of ``video_id``/``image_id`` and ``caption``, or a plain ``{id: [captions]}`` mapping."""
    import json

    data = json.loads(Path(path).read_text())
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    if isinstance(data, dict):
        return {_ids(k): [v] if isinstance(v, str) else list(v) for k, v in data.items()}
    refs: dict[str, list[str]] = {}
    for i, row in enumerate(data):
        key = next((k for k in ("video_id", "image_id", "id") if k in row), None)
        caps = next((row[k] for k in ("references", "captions", "caption") if k in row), None)
        if key is None or caps is None:
            raise ValueError(f"{path}: row {i} needs an id (video_id, image_id or id) and references (caption, "
                             f"captions or references); got keys {sorted(row)}")
        refs.setdefault(_ids(row[key]), []).extend([caps] if isinstance(caps, str) else caps)
    return refs


def score_results(results: str, gt: str, java: bool = True) -> dict:
    from vcap.evaluation.caption import caption_scores

    preds, refs = load_predictions(results), load_references(gt)
    extra = [k for k in preds if k not in refs]
    if extra:
        log.warning("%d predictions have no references in %s and are ignored, e.g. %s", len(extra), gt, extra[:3])
    return caption_scores(refs, preds, java=java)


def evaluate_main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog=_prog("evaluate.py", "evaluate"), description=(
        "Evaluate a project's test splits (a model from model.checkpoint; plain python or torchrun), "
        "or score an existing results file against ground truth without a model (--results, --gt)."))
    p.add_argument("--cfg-path", help="project YAML, e.g. projects/demo/caption_synthetic.yaml")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. model.checkpoint=output/run/checkpoints/best.safetensors")
    p.add_argument("--results", help="predictions: vcap results/<split>.json, COCO results or {id: caption}")
    p.add_argument("--gt", help="references: COCO-style captions, vcap annotations or {id: [captions]}")
    p.add_argument("--out", help="where --results mode writes its metrics (default: <results>.metrics.json)")
    p.add_argument("--no-java", action="store_true",
                   help="--results mode without Java: BLEU, ROUGE-L, CIDEr after a Python tokenizer (non-standard)")
    args = p.parse_args(argv)
    if args.results or args.gt:
        if not (args.results and args.gt) or args.cfg_path:
            p.error("--results and --gt go together, without --cfg-path")
        import json

        metrics = score_results(args.results, args.gt, java=not args.no_java)
        out = Path(args.out or Path(args.results).with_suffix(".metrics.json"))
        out.write_text(json.dumps(metrics, indent=2))
        print(format_table(metrics))
        print(f"written to {out}")
        return metrics
    if not args.cfg_path:
        p.error("give --cfg-path (evaluate a model) or --results and --gt (score a results file)")
    cfg = _load(args)
    from vcap.runners.build import run_evaluation

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


def static_registry() -> dict:
    """vcap's own registrations read from its source with ``ast``, without importing torch or transformers:
    ``{kind: {name: (module file, class name, model cards or None)}}``. ``vcap list`` uses it; a test checks it
    against the live registry."""
    import ast

    root = Path(__file__).resolve().parent
    out: dict = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            cards = None
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and any(getattr(t, "id", "") == "PRETRAINED_MODEL_CONFIG_DICT"
                                                        for t in stmt.targets):
                    cards = ast.literal_eval(stmt.value)
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)
                        and dec.func.attr.startswith("register_") and dec.args
                        and isinstance(dec.args[0], ast.Constant)):
                    kind = dec.func.attr[len("register_"):]
                    out.setdefault(kind, {})[dec.args[0].value] = (path, node.name, cards)
    return out


def list_main(argv=None) -> None:
    from vcap.common.registry import KINDS

    plural = {k: {"lr_scheduler": "lr_schedulers"}.get(k, k + "s") for k in KINDS}
    p = argparse.ArgumentParser(prog="vcap list", description="List registered names: models with their model "
                                "types (LAVIS's model zoo), datasets, processors, tasks, runners, schedulers.")
    p.add_argument("kind", nargs="?", choices=list(plural.values()), help="one kind; all when omitted")
    p.add_argument("--cfg-path", help="a project: the modules its imports register are listed too")
    args = p.parse_args(argv)
    package = Path(__file__).resolve().parent
    table = {kind: {name: {t: package / rel for t, rel in (cards or {}).items()}
                    for name, (_, _, cards) in entries.items()} for kind, entries in static_registry().items()}
    own = {}
    if args.cfg_path:  # a project's own modules are imported (and with them torch): their classes are listed too
        from vcap.common.config import import_user_modules, load_yaml
        from vcap.common.registry import registry

        import_user_modules(load_yaml(args.cfg_path).get("imports"), args.cfg_path)
        for kind in KINDS:
            for name, cls in registry._maps[kind].items():
                if name not in table.get(kind, {}):
                    from vcap.common.config import _card_path

                    cards = getattr(cls, "PRETRAINED_MODEL_CONFIG_DICT", None) or {}
                    own.setdefault(kind, {})[name] = {t: _card_path(cls, rel) for t, rel in cards.items()}
    for kind, name in plural.items():
        if args.kind not in (None, name):
            continue
        names = {**table.get(kind, {}), **own.get(kind, {})}
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
    from vcap.common.registry import registry

    problems = 0
    for name, section in cfg.datasets.items():
        builder = registry.get_builder_class(name)(section, name)
        generated = type(builder).prepare is not registry.get_builder_class("custom_caption").prepare
        for split in builder.splits():
            if split == "train" and section.get("train_storage", "files") == "webdataset":
                shards = Path(str(section.get("train_shards")))
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
    from vcap.datasets.prepare import prepare

    try:
        return prepare(args.dataset, args.raw, args.out, args.videos)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f"vcap prepare: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _split_builder(prog: str, cfg, dataset: str | None, split: str):
    """(name, builder) of the project's dataset ``dataset`` (its only one by default), data prepared,
    after checking it has ``split``."""
    from vcap.common.registry import registry

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
    from vcap.datasets.datasets.base import load_annotations
    from vcap.datasets.shards import write_shards

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


def _signature(cfg, vis_section) -> str:
    """What cached embeddings depend on: the model config, the frame processor and the checkpoint file."""
    import hashlib

    from omegaconf import OmegaConf

    ckpt = cfg.model.get("checkpoint")
    stamp = f"{Path(ckpt).resolve()}:{Path(ckpt).stat().st_mtime_ns}" if ckpt else ""
    text = OmegaConf.to_yaml(cfg.model) + OmegaConf.to_yaml(vis_section) + stamp
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _inference_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--model", help="a vcap checkpoint (best.safetensors) or a run's checkpoints/ directory: it "
                                   "stores its model config, tokenizer and evaluation processor")
    p.add_argument("--cfg-path", help="or a project YAML (with --options model.checkpoint=...)")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE", help="override values of the project")
    return p


def _inference_setup(prog: str, args, needs: str, what: str):
    """(model in eval mode, frame processor, decoding defaults, what cached embeddings depend on) from
    ``--model`` (a checkpoint alone) or ``--cfg-path`` (a project)."""
    import hashlib
    import json

    if bool(args.model) == bool(args.cfg_path):
        print(f"{prog}: give --model <checkpoint> or --cfg-path <project> (one of them)", file=sys.stderr)
        raise SystemExit(2)
    if args.model:
        from vcap.models.load import checkpoint_file, load_from_checkpoint

        try:
            model, vis, _, stored = load_from_checkpoint(args.model)
        except (FileNotFoundError, ValueError) as e:
            print(f"{prog}: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        if not hasattr(model, needs):
            print(f"{prog}: {stored['model']['arch']} is not a {what}", file=sys.stderr)
            raise SystemExit(2)
        path = checkpoint_file(args.model)
        key = json.dumps(stored, sort_keys=True) + f"{path.resolve()}:{path.stat().st_mtime_ns}"
        return model, vis["eval"], stored["generation"], hashlib.sha256(key.encode()).hexdigest()[:16]
    cfg = _load(args)
    model, processor = _inference_model(prog, cfg, needs, what)
    r = run_config(cfg)
    gen = {"num_beams": r.num_beams, "max_new_tokens": r.max_new_tokens, "min_new_tokens": r.min_new_tokens}
    return model, processor, gen, _signature(cfg, next(iter(cfg.datasets.values())).vis_processor.eval)


def _inference_model(prog: str, cfg, needs: str, what: str):
    """(model in eval mode, the first dataset's evaluation frame processor) for a one-off command."""
    from vcap.common.registry import registry
    from vcap.processors import build_processor

    model = registry.get_task_class(cfg.run.task).setup_task(cfg).build_model(cfg, {}).eval()
    if not hasattr(model, needs):
        print(f"{prog}: {cfg.model.arch} is not a {what}", file=sys.stderr)
        raise SystemExit(2)
    return model, build_processor(next(iter(cfg.datasets.values())).vis_processor.eval)


def retrieve_main(argv=None) -> list[dict]:
    """Embed a folder of videos once (cached), then answer text queries with the top-k videos."""
    import torch

    from vcap.datasets.prepare.common import VIDEO_EXTENSIONS
    from vcap.datasets.video import IMAGE_EXTENSIONS, VideoDecodeError

    p = _inference_parser("vcap retrieve", "Text-to-video search over a folder with a retrieval model: "
                          "--model output/run/checkpoints/best.safetensors (or --cfg-path P --options model.checkpoint=...)")
    p.add_argument("--videos", required=True, help="folder of videos (searched recursively)")
    p.add_argument("--query", required=True, nargs="+", help="one or more text queries")
    p.add_argument("-k", type=int, default=5, help="videos per query")
    p.add_argument("--cache", help="where video embeddings are kept (default: <videos>/.vcap_cache)")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    model, processor, _, key = _inference_setup("vcap retrieve", args, "similarity", "retrieval model")

    root = Path(args.videos)
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS
                   and ".vcap_cache" not in f.parts)
    if not files:
        print(f"vcap retrieve: no videos under {root}", file=sys.stderr)
        raise SystemExit(2)
    cache = Path(args.cache or root / ".vcap_cache") / f"{key}.pt"
    known = torch.load(cache, weights_only=True) if cache.is_file() else {}
    rows, todo = {}, []
    for f in files:
        rel, st = str(f.relative_to(root)), f.stat()
        sig = f"{st.st_size}:{st.st_mtime_ns}"
        if rel in known and known[rel]["sig"] == sig:
            rows[rel] = known[rel]
        else:
            todo.append((rel, f, sig))
    skipped = []
    with torch.no_grad():
        for s in range(0, len(todo), args.batch_size):
            clips, masks, names = [], [], []
            for rel, f, sig in todo[s: s + args.batch_size]:
                try:
                    frames, mask = processor.load(f)
                except VideoDecodeError as e:
                    skipped.append(f"{rel}: {e.reason}")
                    continue
                video, mask = processor(frames, mask=mask)
                clips.append(video), masks.append(mask), names.append((rel, sig))
            if clips:
                emb = model.encode_video({"video": torch.stack(clips), "video_mask": torch.stack(masks)}).float().cpu()
                for (rel, sig), e in zip(names, emb):
                    rows[rel] = {"sig": sig, "emb": e}
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(rows, cache)
    if skipped:
        print(f"{len(skipped)} files could not be decoded and are left out:\n  " + "\n  ".join(skipped), file=sys.stderr)
    names = sorted(rows)
    videos = torch.stack([rows[n]["emb"] for n in names])
    print(f"{len(names)} videos ({len(todo) - len(skipped)} embedded now, the rest from {cache})")
    results = []
    with torch.no_grad():
        text = model.encode_text({"text_input": list(args.query)}).float()
        sim = model.similarity(text.to(model.device), videos.to(model.device)).float().cpu()
    for q, row in zip(args.query, sim):
        top = row.topk(min(args.k, len(names)))
        hits = [{"video": names[i], "score": float(v)} for v, i in zip(top.values.tolist(), top.indices.tolist())]
        results.append({"query": q, "results": hits})
        print(f"\n{q}")
        for n, h in enumerate(hits, 1):
            print(f"  {n}. {h['score']:.4f}  {h['video']}")
    return results


def extract_features_main(argv=None) -> dict:
    """Run a model's frozen encoder once over a split; training then reads ``datasets.<name>.features``."""
    from vcap.common.registry import registry
    from vcap.datasets.datasets.base import CaptionEvalDataset, load_annotations
    from vcap.datasets.features import extract_features
    from vcap.processors import build_processor
    from vcap.processors.tokenizer import TRAINED_TOKENIZERS

    p = _parser("vcap extract-features", "Cache frozen CLIP frame embeddings of a split (CLIPCap-style training).")
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True, help="cache directory (several splits may share it)")
    p.add_argument("--dataset", help="which of the project's datasets (default: its only one)")
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args(argv)
    cfg = _load(args)
    for section in cfg.datasets.values():
        section.features = None  # the cache is being written, not read
    name, builder = _split_builder("vcap extract-features", cfg, args.dataset, args.split)
    from vcap.runners.runner_base import set_seed

    set_seed(cfg.run.seed)  # the initial weights of rank 0 of a training run (a from-scratch frozen encoder)
    task = registry.get_task_class(cfg.run.task).setup_task(cfg)
    datasets = task.build_datasets(cfg) if cfg.model.get("tokenizer") in TRAINED_TOKENIZERS and not cfg.model.get("checkpoint") \
        else {}
    model = task.build_model(cfg, datasets)
    if not model.frozen_frame_encoder:
        print(f"vcap extract-features: {cfg.model.arch} has no frozen encoder to cache (model.freeze_clip, "
              f"model.freeze_xclip)",
              file=sys.stderr)
        raise SystemExit(2)
    vis = cfg.datasets[name].vis_processor.eval
    signature = _signature(cfg, vis)
    dataset = CaptionEvalDataset(load_annotations(builder.annotation_path(args.split)), builder.video_root(),
                                 build_processor(vis), build_processor(cfg.datasets[name].text_processor.eval))
    summary = extract_features(model, dataset, args.out, args.split, signature, args.batch_size)
    print(f"{summary['videos']} videos of {name}/{args.split} embedded into {args.out} ({len(summary['bad'])} could "
          f"not be decoded); train from them with --options datasets.{name}.features={args.out}")
    return summary


def caption_main(argv=None) -> list[dict]:
    """Caption video files with a trained captioner (the project's evaluation processor and decoding)."""
    import torch

    from vcap.datasets.video import VideoDecodeError

    p = _inference_parser("vcap caption", "Caption video (or image) files with a trained captioner: --model "
                          "output/run/checkpoints/best.safetensors (or --cfg-path P --options model.checkpoint=...). "
                          "Frames are sampled as the model's evaluation processor samples them: the shorter side "
                          "resized to its image_size, then the centre square cropped.")
    p.add_argument("--video", required=True, nargs="+", help="video (or image) files")
    p.add_argument("--num-beams", type=int, help="default: run.num_beams of the project")
    p.add_argument("--json", action="store_true", help="print one JSON list of {video, caption} or {video, error}")
    args = p.parse_args(argv)
    model, processor, gen, _ = _inference_setup("vcap caption", args, "generate", "captioner")
    gen = {**gen, "num_beams": args.num_beams or gen["num_beams"]}
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
            caption = model.generate({"video": video[None], "video_mask": mask[None]}, **gen)[0]
        out.append({"video": path, "caption": caption})
        if not args.json:
            print(f"{path}\t{caption}")
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
    from vcap.report import write_report

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
