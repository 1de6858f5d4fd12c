"""HFTokenizer takes each family's special tokens from the tokenizer, as the real checkpoints ship them
(the fixtures copy the hub's tokenizer_config.json conventions; see tokenizer_fixtures)."""
import json
from pathlib import Path

import pytest

from vcap.processors.tokenizer import HFTokenizer

# family: (len, bos, eos, pad, what the tokenizer itself adds around "a video of a man")
REAL = {
    "t5": (None, None, 1, 0, "ids then </s>"),
    "opt": (50260, 2, 2, 1, "</s> then ids"),
    "gpt2": (50257, 50256, 50256, 50256, "ids"),
    "clip": (49408, 49406, 49407, 49407, "<|startoftext|> ids <|endoftext|>"),
    "bert": (30522, 101, 102, 0, "[CLS] ids [SEP]"),
}


@pytest.mark.parametrize("family", sorted(REAL))
def test_special_tokens_are_the_families_own(family, hf_tokenizers):
    size, bos, eos, pad, _ = REAL[family]
    tok = HFTokenizer(hf_tokenizers[family])
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (bos, eos, pad)
    if size is not None:
        assert len(tok) == size
    ids = tok.ids("a video of a man")
    own = tok.tk("a video of a man")["input_ids"]  # the tokenizer's own special tokens
    expected = {"t5": ids + [eos], "opt": [bos] + ids, "gpt2": ids, "clip": [bos] + ids + [eos],
                "bert": [bos] + ids + [eos]}[family]
    assert own == expected
    # vcap's padding adds the same tokens the family does: no BOS for T5, BOS first elsewhere
    batch, mask = tok(["a video of a man", "a man"], max_length=16)
    row = batch[0][: int(mask[0].sum())].tolist()
    assert row == ([] if bos is None else [bos]) + ids + [eos]
    assert batch[1, int(mask[1].sum()):].eq(pad).all()
    assert tok.decode(row) == "a video of a man"
    assert tok.decode(ids + [eos, pad, pad]) == "a video of a man"


def test_t5_layout_is_flan_t5s(hf_tokenizers):
    """Flan-T5: <pad> 0, </s> 1, <unk> 2, then SentencePiece pieces, then <extra_id_99> ... <extra_id_0>."""
    tok = HFTokenizer(hf_tokenizers["t5"])
    tk = tok.tk
    assert (tk.pad_token, tk.eos_token, tk.unk_token, tk.bos_token) == ("<pad>", "</s>", "<unk>", None)
    assert tk.convert_tokens_to_ids(["<pad>", "</s>", "<unk>"]) == [0, 1, 2]
    assert tk.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1
    assert tk.convert_tokens_to_ids("<extra_id_99>") == len(tok) - 100
    config = json.loads((Path(hf_tokenizers["t5"]) / "tokenizer_config.json").read_text())
    assert config["extra_ids"] == 100 and "bos_token" not in config


def test_opt_layout_is_opts(hf_tokenizers):
    tk = HFTokenizer(hf_tokenizers["opt"]).tk
    assert tk.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    assert (tk.bos_token, tk.eos_token, tk.unk_token, tk.pad_token) == ("</s>", "</s>", "</s>", "<pad>")
    # byte-level BPE: a word after a space is its own "Ġ" token, as in GPT-2 (ids shifted by OPT's 4 specials)
    gpt2 = HFTokenizer(hf_tokenizers["gpt2"])
    assert [i - 4 for i in tk.encode(" a man", add_special_tokens=False)] == gpt2.ids(" a man")


def test_a_tokenizer_without_an_end_token_is_refused(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(WordLevel({"[UNK]": 0, "a": 1, "man": 2}, unk_token="[UNK]"))
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has no EOS"):
        HFTokenizer(str(tmp_path))
