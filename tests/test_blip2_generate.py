"""BLIP-2 decoding equals LAVIS 1.0.2's and seed 003's own ``generate``, token for token, for ``max_len`` /
``min_len`` / ``num_beams`` as their yamls give them: the ids in tests/fixtures/blip2_generate_reference.json were
recorded by benchmarks/parity/blip2_generate.py from the references' code in their own venvs (transformers 4.26.1 and
4.30.0), on weights set from parameter names (seeded_weights), greedy and beam search, with and without an LM-head
bias on the end token."""
import json

import pytest
import torch

from blip2_reference import FIXTURE, end_bias, first_end, reference_image, vcap_model

REF = json.loads(FIXTURE.read_text())


def cases(reference: str) -> list[dict]:
    return next(r for r in REF["references"] if r["reference"] == reference)["cases"]


def find(reference: str, lm: str, prompt: str, bias: str, **settings) -> list[list[int]]:
    for c in cases(reference):
        if (c["lm"], c["prompt"], c["bias"]) == (lm, prompt, bias) and c["settings"] == settings:
            return c["ids"]
    raise KeyError(settings)


def test_what_the_references_min_len_counts():
    """The recorded facts the conventions table states (greedy, the end token favoured so min_len decides; OPT's end
    is "\\n", 202 in the fixture tokenizer; T5's </s> 1): LAVIS 1.0.2's OPT counts BOS and "a video of" (4 ids), so
    min_len 8 allows 4 new tokens and min_len 5 one; seed 003's OPT counts one BOS whatever the prompt; T5 counts its
    decoder start token in both; min_len 1 allows an empty caption."""
    greedy = dict(num_beams=1, max_len=12)
    assert [len(r) for r in find("lavis", "opt", "a video of", "end", **greedy, min_len=8)] == [5, 5]
    assert find("lavis", "opt", "a video of", "end", **greedy, min_len=5)[0][:2] == [5659, 202]
    assert [len(r) for r in find("seed003", "opt", "a video of", "end", **greedy, min_len=8)] == [8, 8]
    for ref in ("lavis", "seed003"):
        assert [len(first_end(r, 1, 0)) for r in find(ref, "t5", "a video of", "end", **greedy, min_len=8)] == [8, 8]
        assert find(ref, "t5", "a video of", "end", **greedy, min_len=1) == [[1], [1]]
    # seed 003 hands OPT inputs_embeds with max_length=max_len: 4.30 counts its dummy BOS, so 11 new tokens of 12
    assert {len(r) for r in find("seed003", "opt", "", "none", **greedy, min_len=1)} == {11}
    assert {len(r) for r in find("lavis", "opt", "", "none", **greedy, min_len=1)} == {12}


@pytest.mark.parametrize("reference", ["lavis", "seed003"])
def test_vcap_decodes_as_the_reference(reference, hf_tokenizers, tmp_path):
    image, models, differ = reference_image(), {}, []
    for case in cases(reference):
        key = (case["lm"], case["prompt"])
        if key not in models:
            models[key] = vcap_model(case["lm"], case["prompt"], hf_tokenizers[case["lm"]], REF["layouts"][case["lm"]],
                                     reference, tmp_path)
            unloaded = {n for n, _ in models[key].named_parameters()} - models[key]._sourced_keys
            assert not unloaded, f"parameters the reference's layout did not fill: {sorted(unloaded)[:5]}"
        model = models[key]
        end_bias(model, REF["bias"][case["bias"]])
        with torch.no_grad():
            ids = model.generate_ids({"video": image}, **case["settings"])
        end, pad = model.end_token_id, model.tokenizer.pad_token_id
        ours = [first_end(r, end, pad) for r in ids.tolist()]
        theirs = [first_end(r, end, pad) for r in case["ids"]]
        if ours != theirs:
            differ.append(f"{case['lm']} prompt={case['prompt']!r} bias={case['bias']} {case['settings']}: "
                          f"{reference} {theirs}, vcap {ours}")
    assert not differ, f"{len(differ)} of {len(cases(reference))} cases differ:\n" + "\n".join(differ)


def test_prompt_ids_are_the_references(hf_tokenizers, tmp_path):
    """The fixture tokenizers encode the prompt as the recording did (else every OPT case above would shift)."""
    model = vcap_model("opt", "a video of", hf_tokenizers["opt"], REF["layouts"]["opt"], "lavis", tmp_path)
    assert model._context_ids()[0] == 2 and len(model._context_ids()) == 4 and model.end_token_id == 202
