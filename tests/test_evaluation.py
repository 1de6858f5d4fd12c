import numpy as np
import pytest
import torch

from vcap.evaluation import caption_scores, retrieval_metrics

REFS = {
    "v1": ["a red circle moves left on a black background", "the red circle slides to the left"],
    "v2": ["a big blue square moves up", "a large blue square is moving upward over gray"],
    "v3": ["a small green cross goes down", "there is a tiny green cross moving downward"],
}
PREDS = {"v1": "a red circle moves left", "v2": "a blue square moves down", "v3": "a green cross goes down"}


def test_caption_scores_equal_direct_pycocoevalcap_calls():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in REFS.items()})
    res = tok.tokenize({k: [{"caption": PREDS[k]}] for k in REFS})
    expected = dict(zip(["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"], Bleu(4).compute_score(gts, res, verbose=0)[0]))
    expected["METEOR"] = Meteor().compute_score(gts, res)[0]
    expected["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    expected["CIDEr"] = Cider().compute_score(gts, res)[0]

    got = caption_scores(REFS, PREDS)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    assert isinstance(got["SPICE"], float) or (got["SPICE"] is None and got["notes"]["SPICE"].startswith("unavailable: "))
    perfect = caption_scores(REFS, {k: v[0] for k, v in REFS.items()}, spice=False)
    assert perfect["Bleu_4"] > got["Bleu_4"] and perfect["CIDEr"] > got["CIDEr"] and "SPICE" not in perfect


def test_caption_scores_need_every_prediction():
    with pytest.raises(ValueError, match="no prediction"):
        caption_scores(REFS, {"v1": "x"})


def test_retrieval_metrics_on_a_hand_made_matrix():
    # 3 videos; texts 0,1 -> video 0, text 2 -> video 1, text 3 -> video 2
    sim = np.array([
        [0.9, 0.1, 0.0],   # right video first: rank 1
        [0.2, 0.5, 0.1],   # right video second: rank 2
        [0.3, 0.3, 0.3],   # all tied: ties count against the model, rank 3
        [0.1, 0.4, 0.2],   # right video second: rank 2
    ])
    m = retrieval_metrics(sim, [0, 0, 1, 2])
    assert m["t2v_R1"] == 25.0 and m["t2v_R5"] == 100.0
    assert m["t2v_MdR"] == 2.0 and m["t2v_MnR"] == 2.0
    # video -> text ranks caption groups by their best caption (CLIP4Clip): group 0 = texts 0, 1
    # video 0: own group's best 0.9; groups 1 (0.3), 2 (0.1) below -> 1
    # video 1: own group (text 2) 0.3; group 0's best in column 1 is 0.5, group 2's 0.4 -> 3
    # video 2: own group (text 3) 0.2; group 0's best 0.1, group 1's 0.3 -> 2
    assert m["v2t_R1"] == pytest.approx(100 / 3) and m["v2t_MdR"] == 2.0 and m["v2t_MnR"] == 2.0


def test_retrieval_metrics_match_a_direct_computation_on_a_large_random_matrix():
    rng = np.random.default_rng(0)
    n_videos, per = 300, 3
    t2v = np.repeat(np.arange(n_videos), per)
    sim = rng.normal(size=(n_videos * per, n_videos)).astype(np.float32)
    sim[np.arange(len(t2v)), t2v] += 2.0
    m = retrieval_metrics(sim, t2v, chunk=64)
    order = np.argsort(-sim, axis=1, kind="stable")
    ranks = np.array([np.where(order[i] == t2v[i])[0][0] + 1 for i in range(len(t2v))])  # no ties in floats
    assert m["t2v_R1"] == pytest.approx(100 * np.mean(ranks == 1))
    assert m["t2v_R10"] == pytest.approx(100 * np.mean(ranks <= 10))
    assert m["t2v_MnR"] == pytest.approx(ranks.mean()) and m["t2v_MdR"] == np.median(ranks)
    # video -> text: the video's own caption group among all groups, each scored by its best caption
    groups = sim.reshape(n_videos, per, n_videos).max(1)  # (group, video)
    v_ranks = np.array([(groups[:, v] >= groups[v, v]).sum() for v in range(n_videos)])
    assert m["v2t_R1"] == pytest.approx(100 * np.mean(v_ranks == 1))
    assert m["v2t_MnR"] == pytest.approx(v_ranks.mean())


def test_multi_caption_metrics_equal_clip4clips_own():
    """Both directions equal CLIP4Clip's metrics.py on its multi-sentence layout (1 to 8 captions per video, MSVD's
    case), as benchmarks/parity/clip4clip_metrics.py recorded them from CLIP4Clip's code on the same seeded matrices.
    v2t ranks a video's caption group among the groups (670 for MSVD), not its best caption among every caption."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "parity"))
    from clip4clip_metrics import FIXTURE, case_matrix

    for case in json.loads(FIXTURE.read_text())["cases"]:
        sim, t2v = case_matrix(**case["case"])
        ours, theirs = retrieval_metrics(sim, t2v), case["clip4clip"]
        assert theirs["v2t_rows"] == case["case"]["videos"]  # no ties: CLIP4Clip adds a row per tie
        for key, value in ours.items():
            assert value == pytest.approx(theirs[key], abs=1e-4), key  # CLIP4Clip's t2v runs in float32


@pytest.mark.parametrize("chunk", [1, 7, 64, None])
def test_blockwise_metrics_and_dual_softmax_equal_a_full_matrix_computation(chunk):
    from vcap.evaluation.retrieval import retrieval_metrics_blocks

    rng = np.random.default_rng(3)
    n_videos = 50
    t2v = np.concatenate([np.arange(n_videos), rng.integers(0, n_videos, 70)])  # 1 to several captions per video
    sim = rng.normal(size=(len(t2v), n_videos)).astype(np.float32)
    sim[np.arange(len(t2v)), t2v] += 1.5
    full = retrieval_metrics(sim, t2v)
    calls = []

    def block(rows):
        calls.append(len(rows))
        return torch.from_numpy(sim[rows.numpy()])

    assert retrieval_metrics_blocks(block, len(t2v), n_videos, t2v, chunk=chunk) == full
    most = np.bincount(t2v).max()  # blocks hold whole caption groups: at most a group more than chunk rows
    assert max(calls) < (chunk or len(t2v)) + most
    # dual softmax: each score times the softmax over texts of its video column, on the whole matrix
    temp = 3.0
    col = np.exp(temp * sim.astype(np.float64))
    dsl = (sim * (col / col.sum(0, keepdims=True))).astype(np.float32)
    expected = retrieval_metrics(dsl, t2v)
    got = retrieval_metrics_blocks(block, len(t2v), n_videos, t2v, chunk=chunk, dual_softmax=temp)
    assert got == pytest.approx(expected)
    assert got != full


def test_retrieval_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="no text"):
        retrieval_metrics(np.zeros((2, 3)), [0, 1])


# -- CIDEr-D and caption metrics on awkward caption sets --------------------------------------------
AWKWARD_REFS = {
    "tie1": ["a dog runs", "a dog runs"],  # repeated references; two videos with identical text (ties)
    "tie2": ["a dog runs", "a dog runs"],
    "rep": ["the the the cat cat", "a cat sits on the mat"],  # repeated words
    "uni": ["un café près de la gare", "naïve façade — über cool"],  # unicode
    "punct": ["Hello, world!!! (really?)", "hello world -- really ... yes; ok"],
    "long": [" ".join(["word"] * 30), "a very long caption " * 5],
}
AWKWARD_PREDS = {"tie1": "a dog runs", "tie2": "a dog runs", "rep": "the the the the", "uni": "café près gare",
                 "punct": "", "long": "word word word"}


def _ptb(refs, preds):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": preds[k]}] for k in refs})
    return gts, res


def test_fast_cider_d_equals_pycocoevalcap_cider_scorer_on_awkward_captions():
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    from vcap.evaluation.cider import CiderD

    gts, res = _ptb(AWKWARD_REFS, AWKWARD_PREDS)
    scorer = CiderScorer(n=4, sigma=6.0)
    for k in AWKWARD_REFS:
        scorer += (res[k][0], gts[k])
    _, expected = scorer.compute_score()
    fast = CiderD(gts)
    got = fast.score([res[k][0] for k in AWKWARD_REFS], list(AWKWARD_REFS))
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert got[list(AWKWARD_REFS).index("punct")] == 0.0  # an empty prediction scores zero
    # the same scorer scores any batch later, repeated ids included, against the fixed corpus
    again = fast.score([res["rep"][0], res["tie1"][0], res["rep"][0]], ["rep", "tie1", "rep"])
    np.testing.assert_allclose(again, [got[2], got[0], got[2]], atol=1e-12)
    with pytest.raises(KeyError, match="ids without references"):
        fast.score(["x"], ["nowhere"])


def test_fast_cider_d_on_a_random_corpus_matches_cider_scorer():
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    from vcap.evaluation.cider import CiderD

    rng = np.random.default_rng(1)
    words = np.array("a the red blue circle square moves left right up down on black big small".split())
    sent = lambda: " ".join(rng.choice(words, size=rng.integers(0, 12)))  # noqa: E731
    refs = {f"v{i}": [sent() for _ in range(rng.integers(1, 8))] for i in range(60)}
    preds = {k: sent() for k in refs}
    scorer = CiderScorer(n=4, sigma=6.0)
    for k in refs:
        scorer += (preds[k], refs[k])
    np.testing.assert_allclose(CiderD(refs).score(list(preds.values()), list(refs)), scorer.compute_score()[1],
                               atol=1e-6, rtol=0)


def test_caption_scores_on_awkward_captions_equal_direct_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _ptb(AWKWARD_REFS, AWKWARD_PREDS)
    got = caption_scores(AWKWARD_REFS, AWKWARD_PREDS, spice=False)
    bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
    assert [got[f"Bleu_{n}"] for n in range(1, 5)] == pytest.approx(bleu, abs=1e-12)
    assert got["METEOR"] == pytest.approx(Meteor().compute_score(gts, res)[0], abs=1e-12)
    assert got["ROUGE_L"] == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)
    assert got["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)


def test_caption_scores_without_java_say_they_are_non_standard():
    from vcap.evaluation.caption import python_tokenize

    assert python_tokenize("A man's dog -- runs, fast!") == "a man 's dog runs fast"
    got = caption_scores(REFS, PREDS, java=False)
    assert got["notes"]["tokenizer"].startswith("non-standard") and got["METEOR"] is None
    assert got["notes"]["METEOR"] == "unavailable: needs Java"
    assert all(v is None or isinstance(v, float) for k, v in got.items() if k != "notes")  # a number or null
    standard = caption_scores(REFS, PREDS, spice=False)
    assert got["CIDEr"] == pytest.approx(standard["CIDEr"], rel=1e-9)  # plain captions tokenise alike


def test_missing_java_is_explained(monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="need Java.*apt-get install -y default-jre-headless.*--no-java"):
        caption_scores(REFS, PREDS)


@pytest.mark.parametrize("corpus_words,new_words", [(36_100, 5), (35_990, 30)], ids=["large corpus", "large batch"])
def test_fast_cider_d_beyond_the_packed_vocabulary_gives_the_same_scores(corpus_words, new_words):
    """Corpora and batches of tens of thousands of distinct words (once too many to pack an n-gram's words into one
    integer) are numbered like any other: the scores are pycocoevalcap's."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    from vcap.evaluation.cider import CiderD

    per_video = corpus_words // 100
    refs = {f"v{i}": [" ".join(f"w{i * per_video + j}" for j in range(per_video)), "a dog runs on the grass"]
                      for i in range(100)}
    extra = corpus_words - 100 * per_video
    refs["v0"].append(" ".join(f"x{j}" for j in range(extra)) or "a cat")
    preds = {k: f"a dog runs w{i * per_video} w{i * per_video + 1} " + " ".join(f"new{i}_{j}" for j in range(new_words))
             for i, k in enumerate(refs)}
    scorer = CiderScorer(n=4, sigma=6.0)
    for k in refs:
        scorer += (preds[k], refs[k])
    fast = CiderD(refs)
    assert len(fast.words) >= corpus_words
    np.testing.assert_allclose(fast.score(list(preds.values()), list(refs)), scorer.compute_score()[1], atol=1e-6)


def test_dual_softmax_results_are_flagged_in_metrics(tiny_data, word_tokenizer_path, tmp_path):
    """run.dual_softmax re-scores with the test set's own text statistics: its metrics say so (a flag and a note,
    which metrics.json and the printed table carry), and plain-similarity metrics carry neither."""
    import torch
    from conftest import TINY_SPEC
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader

    from vcap.common.registry import registry
    from vcap.datasets.datasets.base import collate
    from vcap.project import build_config

    results = {}
    for dual in (None, 100.0):
        cfg = build_config(OmegaConf.create({
            "model": {"arch": "clip4clip", "model_type": "tiny", "tokenizer": word_tokenizer_path},
            "datasets": {"synthetic_retrieval": {"build_info": {**TINY_SPEC, "storage": str(tiny_data.parent)}}},
            "run": {"task": "retrieval", "output_dir": str(tmp_path), "dual_softmax": dual}}))
        task = registry.get_task_class("retrieval").setup_task(cfg)
        test = task.build_datasets(cfg)["synthetic_retrieval"]["test"]
        torch.manual_seed(0)
        model = task.build_model(cfg, {}).eval()
        loader = DataLoader(test, batch_size=8, collate_fn=collate)
        results[dual] = task.evaluate(model, loader, test, "test", tmp_path)
    assert "dual_softmax" not in results[None] and "notes" not in results[None]
    flagged = results[100.0]
    assert flagged["dual_softmax"] == 100.0 and "test set's text statistics" in flagged["notes"]["dual_softmax"]
