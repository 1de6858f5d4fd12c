import numpy as np
import pytest

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
    assert isinstance(got["SPICE"], float) or got["SPICE"].startswith("unavailable: ")
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
    # video 0: best own caption text 0 (0.9), beaten by none -> 1
    # video 1: own text 2 (0.3); others >= 0.3 in column 1: text 1 (0.5), text 3 (0.4) -> 3
    # video 2: own text 3 (0.2); others >= 0.2 in column 2: text 2 (0.3) -> 2
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
    # video -> text: the position of the video's first (best-ranked) own caption in the sorted column
    v_ranks = np.array([np.where(t2v[np.argsort(-sim[:, v], kind="stable")] == v)[0][0] + 1
                        for v in range(n_videos)])
    assert m["v2t_R1"] == pytest.approx(100 * np.mean(v_ranks == 1))
    assert m["v2t_MnR"] == pytest.approx(v_ranks.mean())


def test_retrieval_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="shape"):
        retrieval_metrics(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="no text"):
        retrieval_metrics(np.zeros((2, 3)), [0, 1])
