"""Caption metrics computed by pycocoevalcap itself (PTB tokenizer, BLEU, METEOR, ROUGE-L, CIDEr).

SPICE needs Stanford CoreNLP, which pycocoevalcap downloads on first use; when it is not on disk
``SPICE`` is null (never dropped) and ``notes["SPICE"]`` says why.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
METRIC_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def _require_java() -> None:
    if shutil.which("java") is None:
        raise RuntimeError(
            "caption metrics need Java for pycocoevalcap's PTB tokenizer and METEOR, and `java` is not on "
            "PATH; install a JRE (e.g. `apt-get install -y default-jre-headless`), or score without Java "
            "(caption_scores(..., java=False), evaluate.py --no-java): non-standard BLEU, ROUGE-L and CIDEr"
        )


def spice_status() -> str | None:
    """None when SPICE can run, else the reason it cannot."""
    import pycocoevalcap

    lib = Path(list(pycocoevalcap.__path__)[0]) / "spice" / "lib"
    jars = list(lib.glob("stanford-corenlp-3.6.0*.jar")) if lib.is_dir() else []
    if len(jars) < 2:
        return (f"unavailable: SPICE needs the Stanford CoreNLP 3.6.0 jars in {lib}, which pycocoevalcap "
                "downloads on first use (run pycocoevalcap/spice/get_stanford_models.py with network access)")
    return None


_PTB_PUNCTUATION = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                    "...", ";"}
_WORD = re.compile(r"'[^\W_]+|[^\W_]+|[^\w\s]+|_+")  # "man's" -> "man 's", as PTB does
NON_STANDARD = ("non-standard: Python tokenizer instead of the Stanford PTB tokenizer, no METEOR or SPICE; "
                "not comparable with published numbers")


def python_tokenize(text: str) -> str:
    """A Java-free approximation of pycocoevalcap's PTB tokenisation (lower case, punctuation dropped)."""
    return " ".join(t for t in _WORD.findall(text.lower()) if t not in _PTB_PUNCTUATION and not
                    all(not ch.isalnum() for ch in t))


@contextlib.contextmanager
def _java_stderr_captured():
    """What the Java tools write to the process's stderr (fd 2) is kept out of the console; it is shown only
    if the block fails."""
    import os
    import tempfile

    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except Exception as e:
            os.dup2(saved, 2)
            sink.seek(0)
            raise RuntimeError(f"{type(e).__name__}: {e}; the Java tool said: "
                               f"{sink.read().decode(errors='replace')[-2000:]}") from e
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def caption_scores(refs: dict, preds: dict, spice: bool = True, java: bool = True) -> dict:
    """Standard caption metrics of ``preds`` (id -> caption) against ``refs`` (id -> list of captions).

    Every id of ``refs`` needs a prediction; values are pycocoevalcap's (CIDEr 1.0 = 100 in papers).
    ``java=False`` computes BLEU, ROUGE-L and CIDEr after ``python_tokenize`` and says, under
    ``tokenizer``, that the numbers are non-standard.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    missing = [k for k in refs if k not in preds]
    if missing:
        raise ValueError(f"{len(missing)} ids have references but no prediction, e.g. {missing[:3]}")
    ids = list(refs)
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        _require_java()
        tok = PTBTokenizer()
        with _java_stderr_captured():  # the tokenizer's "PTBTokenizer tokenized N tokens at ..." lines
            gts = tok.tokenize({i: [{"caption": c} for c in refs[i]] for i in ids})
            res = tok.tokenize({i: [{"caption": preds[i]}] for i in ids})
    else:
        gts = {i: [python_tokenize(c) for c in refs[i]] for i in ids}
        res = {i: [python_tokenize(preds[i])] for i in ids}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its n-gram counts
        bleu, _ = Bleu(4).compute_score(gts, res)
    out: dict = {f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}
    if java:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()
        out["METEOR"] = float(meteor.compute_score(gts, res)[0])
        del meteor  # its __del__ stops the Java process
    out["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if not java:
        out["METEOR"] = out["SPICE"] = None
        out["notes"] = {"METEOR": "unavailable: needs Java", "SPICE": "unavailable: needs Java",
                        "tokenizer": NON_STANDARD}
    elif spice:
        reason = spice_status()
        if reason is None:
            from pycocoevalcap.spice.spice import Spice

            out["SPICE"] = float(Spice().compute_score(gts, res)[0])
        else:  # every metric is a number or null; why it is null is in notes
            out["SPICE"] = None
            out["notes"] = {"SPICE": reason}
    return out


# ------------------------------------------------------------------------------------------------
# Results files in the layouts in circulation (evaluate.py --results / --gt)
# ------------------------------------------------------------------------------------------------
def load_predictions(path: str | Path) -> dict[str, str]:
    """id -> caption from a results file: vcap's ``results/<split>.json`` rows, COCO results
    (``image_id``/``video_id`` and ``caption``), or a plain ``{id: caption}`` mapping."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        return {str(k): str(v) for k, v in data.items()}
    preds = {}
    for i, row in enumerate(data):
        key = next((k for k in ("video_id", "image_id", "id") if k in row), None)
        text = next((row[k] for k in ("prediction", "caption") if k in row), None)
        if key is None or not isinstance(text, str):
            raise ValueError(f"{path}: row {i} needs an id (video_id, image_id or id) and a caption (caption or "
                             f"prediction); got keys {sorted(row)}")
        preds.setdefault(str(row[key]), text)
    return preds


def load_references(path: str | Path) -> dict[str, list[str]]:
    """id -> reference captions from COCO-style ground truth (``annotations`` of ``image_id`` and
    ``caption``), vcap annotation records (``captions``), vcap results rows (``references``), rows
    of ``video_id``/``image_id`` and ``caption``, or a plain ``{id: [captions]}`` mapping."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict) and "annotations" in data:
        data = data["annotations"]
    if isinstance(data, dict):
        return {str(k): [v] if isinstance(v, str) else list(v) for k, v in data.items()}
    refs: dict[str, list[str]] = {}
    for i, row in enumerate(data):
        key = next((k for k in ("video_id", "image_id", "id") if k in row), None)
        caps = next((row[k] for k in ("references", "captions", "caption") if k in row), None)
        if key is None or caps is None:
            raise ValueError(f"{path}: row {i} needs an id (video_id, image_id or id) and references (caption, "
                             f"captions or references); got keys {sorted(row)}")
        refs.setdefault(str(row[key]), []).extend([caps] if isinstance(caps, str) else caps)
    return refs


def score_results(results: str, gt: str, java: bool = True) -> dict:
    preds, refs = load_predictions(results), load_references(gt)
    extra = [k for k in preds if k not in refs]
    if extra:
        log.warning("%d predictions have no references in %s and are ignored, e.g. %s", len(extra), gt, extra[:3])
    return caption_scores(refs, preds, java=java)
