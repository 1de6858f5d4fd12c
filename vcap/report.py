"""``vcap report OUTPUT_DIR``: one static HTML page of what a model did on a split, beside a folder of small
JPEG thumbnails and PNG curves (``OUTPUT_DIR/report/``).

- Captioning: the metrics table; per video a strip of the frames the evaluation processor samples, the
  references, the prediction and that video's CIDEr-D (vcap's implementation over whitespace-and-punctuation
  tokens; the table's corpus CIDEr is pycocoevalcap's); on synthetic data each attribute right or wrong.
  Rows sort by any column (worst CIDEr first) and filter by text.
- Retrieval: the R@k table; per query its top-5 videos (the right one marked) and the right video's rank; a
  histogram of that rank.
- Both: loss, learning-rate and validation-metric curves from ``log.jsonl``.

Everything the page needs is in the page or the folder beside it: no network, no server.
"""
from __future__ import annotations

import html
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf

from vcap.common.registry import registry
from vcap.common.schema import run_config
from vcap.datasets.synthetic import attribute_accuracy
from vcap.evaluation.caption import python_tokenize
from vcap.evaluation.cider import CiderD

log = logging.getLogger(__name__)
THUMB_HEIGHT = 72


# -- data ------------------------------------------------------------------------------------------
def _split_records(cfg, split: str, dataset: str | None = None) -> tuple[dict, object, Path, str]:
    """(records by video id, the eval processor, the video root, the dataset's name) of the project's
    dataset that has ``split`` (``dataset``, or the first that has it)."""
    for name, section in cfg.datasets.items():
        if dataset is not None and name != dataset:
            continue
        builder = registry.get_builder_class(name)(section, name)
        if split not in builder.splits():
            continue
        datasets = builder.build_datasets(seed=run_config(cfg).seed)
        ds = datasets[split]
        return {r["video_id"]: r for r in ds.records}, ds.vis_processor, ds.video_root, name
    raise ValueError(f"no dataset of this run has a {split!r} split")


def _thumb_job(args) -> tuple[str, str | None]:
    """Decode the sampled frames of one video and write them side by side as one JPEG strip."""
    vid, path, start, end, processor, out = args
    try:
        import numpy as np
        from PIL import Image

        frames, mask = processor.load(path, seed=0, start=start, end=end)
        frames = frames[mask.bool()] if mask is not None else frames
        images = []
        for f in frames.permute(0, 2, 3, 1).numpy():
            im = Image.fromarray(np.ascontiguousarray(f))
            w = max(1, round(im.width * THUMB_HEIGHT / im.height))
            images.append(im.resize((w, THUMB_HEIGHT), Image.BILINEAR))
        strip = Image.new("RGB", (sum(i.width for i in images) + 2 * (len(images) - 1), THUMB_HEIGHT), "white")
        x = 0
        for im in images:
            strip.paste(im, (x, 0))
            x += im.width + 2
        strip.save(out, "JPEG", quality=80)
        return vid, None
    except Exception as e:  # noqa: BLE001  (a bad video gets no thumbnail; the page says why)
        return vid, f"{type(e).__name__}: {e}"


def write_thumbnails(records: dict, processor, video_root: Path, folder: Path, workers: int | None = None) -> dict:
    """video id -> thumbnail file name (relative to the report) or the reason it has none."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for i, (vid, r) in enumerate(records.items()):
        jobs.append((vid, str(Path(video_root) / r["video"]), r.get("start"), r.get("end"), processor,
                     str(folder / f"{i:06d}.jpg")))
    workers = workers or min(8, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 32:
        with ProcessPoolExecutor(workers) as pool:
            done = dict(pool.map(_thumb_job, jobs, chunksize=16))
    else:
        done = dict(map(_thumb_job, jobs))
    return {vid: (f"{folder.name}/{Path(job[-1]).name}" if done[vid] is None else {"error": done[vid]})
            for vid, job in zip(records, jobs)}


def pyplot():
    """matplotlib's pyplot on the Agg backend: the report's plots are an optional extra (``pip install vcap[report]``)."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("the report's plots need matplotlib: pip install -e \".[report]\" (or pip install "
                          "matplotlib)") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(output_dir: Path, folder: Path, monitor: str | None) -> list[str]:
    """PNG plots of the training loss, the learning rate and the validation metrics from log.jsonl."""
    path = output_dir / "log.jsonl"
    if not path.is_file():
        return []
    try:
        plt = pyplot()
    except ImportError as e:
        log.warning("report without curves: %s", e)
        return []

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    series: dict[str, list] = {}
    for row in rows:
        step = row.get("step")
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(key, []).append((step, value))
    wanted = ["train/loss", "train/lr"] + sorted(k for k in series if k.startswith("val/") and k not in
                                                 ("val/epoch", "val/best"))
    if monitor:
        wanted.sort(key=lambda k: k != f"val/{monitor}" and k.startswith("val/"))
    out = []
    for key in [k for k in wanted if k in series][:8]:
        steps, values = zip(*series[key])
        fig, ax = plt.subplots(figsize=(4.2, 2.6), dpi=90)
        ax.plot(steps, values, marker="o" if key.startswith("val/") else None, markersize=3, linewidth=1.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"curve_{key.replace('/', '_')}.png"
        fig.savefig(folder / name)
        plt.close(fig)
        out.append(name)
    return out


def _metrics_for(output_dir: Path, split: str, dataset: str) -> dict:
    path = output_dir / "metrics.json"
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())
    for key in (split, f"{dataset}/{split}"):
        if isinstance(metrics.get(key), dict):
            return metrics[key]
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


# -- the page --------------------------------------------------------------------------------------
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }}
th.sortable {{ cursor: pointer; background: #f4f4f4; }} th.sortable:hover {{ background: #e8e8e8; }}
.metrics td {{ font-variant-numeric: tabular-nums; }} .num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.strip {{ height: {thumb}px; }} .right {{ outline: 3px solid #1a7f37; }} .cand {{ height: {thumb}px; margin: 0 4px 4px 0; }}
.refs {{ color: #555; font-size: 12px; margin: 0; padding-left: 16px; }} .ok {{ color: #1a7f37; }} .bad {{ color: #b42318; }}
.curves img {{ margin: 0 8px 8px 0; border: 1px solid #eee; }} #filter {{ width: 320px; padding: 4px; }}
</style></head><body>
<h1>{title}</h1>
<p>{subtitle}</p>
<h2>Metrics</h2>
{metrics}
{extra}
<div class="curves">{curves}</div>
<h2>{rows_title}</h2>
<p><input id="filter" placeholder="filter: any text in the row"> <span id="count"></span></p>
<table id="rows"><thead><tr>{head}</tr></thead><tbody></tbody></table>
<script id="data" type="application/json">{data}</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const COLUMNS = DATA.columns, ROWS = DATA.rows;
let sortKey = DATA.sort_key, ascending = DATA.ascending;
const body = document.querySelector("#rows tbody");
function esc(s) {{ return String(s).replace(/[&<>"]/g, c => ({{"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}})[c]); }}
function cell(row, col) {{
  const v = row[col.key];
  if (col.kind === "thumb") return v && !v.error ? `<img class="strip" src="${{esc(v)}}" alt="frames of ${{esc(row.video_id)}}">` : `<span class="bad">${{esc(v ? v.error : "no video")}}</span>`;
  if (col.kind === "refs") return `<ul class="refs">${{v.map(r => `<li>${{esc(r)}}</li>`).join("")}}</ul>`;
  if (col.kind === "attrs") return Object.entries(v || {{}}).map(([a, ok]) => `<span class="${{ok ? "ok" : "bad"}}">${{ok ? "✓" : "✗"}} ${{esc(a)}}</span>`).join("<br>");
  if (col.kind === "top") return v.map(c => c.thumb && !c.thumb.error ? `<img class="cand${{c.right ? " right" : ""}}" src="${{esc(c.thumb)}}" title="${{esc(c.video_id)}}" alt="${{esc(c.video_id)}}">` : `<span>${{esc(c.video_id)}}</span>`).join("");
  if (col.kind === "num") return typeof v === "number" ? v.toFixed(col.digits) : "";
  return esc(v);
}}
function render() {{
  const q = document.getElementById("filter").value.toLowerCase();
  const rows = ROWS.filter(r => !q || r.search.includes(q));
  rows.sort((a, b) => {{ const x = a[sortKey], y = b[sortKey]; const c = x < y ? -1 : x > y ? 1 : 0; return ascending ? c : -c; }});
  body.innerHTML = rows.map(r => "<tr>" + COLUMNS.map(c => `<td class="${{c.kind === "num" ? "num" : ""}}">${{cell(r, c)}}</td>`).join("") + "</tr>").join("");
  document.getElementById("count").textContent = `${{rows.length}} of ${{ROWS.length}}`;
}}
document.querySelectorAll("th.sortable").forEach(th => th.addEventListener("click", () => {{
  const key = th.dataset.key; ascending = key === sortKey ? !ascending : true; sortKey = key; render();
}}));
document.getElementById("filter").addEventListener("input", render);
render();
</script>
</body></html>
"""


def _metrics_table(metrics: dict) -> str:
    rows = []
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, type(None), str)):
            continue
        shown = f"{v:.4f}" if isinstance(v, float) else ("null" if v is None else html.escape(str(v)))
        rows.append(f"<tr><td>{html.escape(k)}</td><td>{shown}</td></tr>")
    return f'<table class="metrics">{"".join(rows)}</table>' if rows else "<p>no metrics.json</p>"


def _head(columns: list[dict]) -> str:
    return "".join(f'<th class="sortable" data-key="{c["key"]}">{html.escape(c["label"])}</th>' if c.get("sort")
                   else f"<th>{html.escape(c['label'])}</th>" for c in columns)


def _page(title, subtitle, metrics, extra, curves, rows_title, columns, rows, sort_key, ascending) -> str:
    data = json.dumps({"columns": columns, "rows": rows, "sort_key": sort_key, "ascending": ascending})
    return PAGE.format(title=html.escape(title), subtitle=subtitle, metrics=_metrics_table(metrics), extra=extra,
                       curves="".join(f'<img src="{c}" alt="{c}">' for c in curves), rows_title=rows_title,
                       head=_head(columns), data=data.replace("</", "<\\/"), thumb=THUMB_HEIGHT)


def _caption_rows(results: list, records: dict, thumbs: dict) -> list[dict]:
    refs = {r["video_id"]: [python_tokenize(c) for c in r["references"]] for r in results}
    scores = CiderD(refs).score([python_tokenize(r["prediction"]) for r in results], [r["video_id"] for r in results])
    attrs = None
    if all("attributes" in records.get(r["video_id"], {}) for r in results):
        attrs = {r["video_id"]: {a[5:]: v == 100.0 for a, v in attribute_accuracy(
            {r["video_id"]: r["prediction"]}, {r["video_id"]: records[r["video_id"]]["attributes"]}).items()
            if a != "attr_direction_sign"} for r in results}
    rows = []
    for r, s in zip(results, scores):
        row = {"video_id": r["video_id"], "thumb": thumbs.get(r["video_id"]), "references": r["references"],
               "prediction": r["prediction"], "cider": float(s)}
        if attrs is not None:
            row["attributes"] = attrs[r["video_id"]]
        row["search"] = " ".join([r["video_id"], r["prediction"], *r["references"]]).lower()
        rows.append(row)
    return rows


def write_report(output_dir: str | os.PathLike, split: str = "test", dataset: str | None = None,
                 workers: int | None = None, data=None) -> Path:
    """Write ``output_dir/report/index.html`` (and ``report/<split>/`` thumbnails) for ``split``; in a run of
    several datasets, ``report/<dataset>_<split>.html`` for ``dataset``'s split, and an index.html of links.
    ``data``: the split's dataset when the caller has it (a run: building it again would be a collective)."""
    output_dir = Path(output_dir)
    several = dataset is not None
    tag = f"{dataset}_{split}" if several else split
    cfg_path, results_path = output_dir / "config.yaml", output_dir / "results" / f"{tag}.json"
    for path, what in ((cfg_path, "the run's config.yaml"), (results_path, f"the {split} results")):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: {what} (written by train.py / evaluate.py) is needed")
    cfg = OmegaConf.load(cfg_path)
    results = json.loads(results_path.read_text())
    if data is not None:
        records, processor, video_root = {r["video_id"]: r for r in data.records}, data.vis_processor, data.video_root
        dataset = dataset or next(iter(cfg.datasets))
    else:
        records, processor, video_root, dataset = _split_records(cfg, split, dataset)
    report = output_dir / "report"
    report.mkdir(parents=True, exist_ok=True)
    retrieval = cfg.run.task == "retrieval"
    wanted = {r["video_id"] for r in results} | ({c for r in results for c in r.get("top5", [])} if retrieval else set())
    thumbs = write_thumbnails({v: records[v] for v in records if v in wanted}, processor, video_root,
                              report / tag, workers)
    curves = _curves(output_dir, report, cfg.run.get("monitor"))
    metrics = _metrics_for(output_dir, split, dataset if several else "")
    title = f"{cfg.model.arch}/{cfg.model.get('model_type', '')} on {dataset} {split}"
    subtitle = html.escape(f"{output_dir.resolve()} · {len(results)} {'queries' if retrieval else 'videos'}")
    if retrieval:
        page = _retrieval_page(title, subtitle, metrics, curves, results, thumbs, report)
    else:
        columns = [{"key": "thumb", "label": "frames", "kind": "thumb"},
                   {"key": "video_id", "label": "video", "kind": "text", "sort": True},
                   {"key": "prediction", "label": "prediction", "kind": "text", "sort": True},
                   {"key": "references", "label": "references", "kind": "refs"},
                   {"key": "cider", "label": "CIDEr-D", "kind": "num", "digits": 3, "sort": True}]
        rows = _caption_rows(results, records, thumbs)
        if rows and "attributes" in rows[0]:
            columns.append({"key": "attributes", "label": "attributes", "kind": "attrs"})
        page = _page(title, subtitle, metrics, "", curves, "Videos (worst CIDEr-D first)", columns, rows, "cider", True)
    path = report / (f"{tag}.html" if several else "index.html")
    path.write_text(page)
    if several:
        pages = sorted(p.name for p in report.glob("*.html") if p.name != "index.html")
        (report / "index.html").write_text("<!doctype html><html><head><meta charset='utf-8'><title>reports</title>"
                                           "</head><body><h1>reports</h1><ul>" + "".join(
            f'<li><a href="{html.escape(p)}">{html.escape(p[:-5])}</a></li>' for p in pages) + "</ul></body></html>")
    log.info("report: %s", path)
    return path


def _retrieval_page(title, subtitle, metrics, curves, results, thumbs, report: Path) -> str:
    plt = pyplot()

    ranks = [r["rank"] for r in results if "rank" in r]
    extra = ""
    if ranks:
        fig, ax = plt.subplots(figsize=(4.2, 2.6), dpi=90)
        top = max(ranks)
        ax.hist(ranks, bins=range(1, min(top, 50) + 2), color="#4c72b0")
        ax.set_title(f"rank of the right video (>{min(top, 50)} in the last bin)" if top > 50 else
                     "rank of the right video", fontsize=9)
        ax.tick_params(labelsize=7)
        fig.tight_layout()
        fig.savefig(report / "rank_histogram.png")
        plt.close(fig)
        extra = '<div class="curves"><img src="rank_histogram.png" alt="rank histogram"></div>'
    rows = []
    for r in results:
        top5 = [{"video_id": v, "thumb": thumbs.get(v), "right": v == r["video_id"]} for v in r.get("top5", [])]
        rows.append({"text": r["text"], "video_id": r["video_id"], "rank": r.get("rank", 0), "top": top5,
                     "thumb": thumbs.get(r["video_id"]), "search": f"{r['text']} {r['video_id']}".lower()})
    columns = [{"key": "text", "label": "query", "kind": "text", "sort": True},
               {"key": "rank", "label": "rank of the right video", "kind": "num", "digits": 0, "sort": True},
               {"key": "top", "label": "top 5 (the right one outlined)", "kind": "top"},
               {"key": "thumb", "label": "the right video", "kind": "thumb"},
               {"key": "video_id", "label": "video", "kind": "text", "sort": True}]
    return _page(title, subtitle, metrics, extra, curves, "Queries (worst rank first)", columns, rows, "rank", False)
