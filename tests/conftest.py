import os
import sys
from pathlib import Path

import pytest

# Set before transformers is imported anywhere: a hub miss otherwise costs ~90 s of retries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# pytest-xdist (the README's -n): the workers share the cores instead of each taking all of them
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))

def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long end-to-end test; the README's command leaves it out, .ci/run "
                            "runs it after the default suite")


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY_SPEC = dict(seed=3, num_train=40, num_val=12, num_test=16, num_frames=8, size=32, fps=8, captions_per_video=3)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A small generated dataset (real H.264 files) shared by the tests of a session."""
    from vcap.datasets.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(**TINY_SPEC)
    return generate(spec, tmp_path_factory.mktemp("synthetic") / spec.key())


@pytest.fixture(scope="session")
def word_tokenizer_path(tiny_data, tmp_path_factory):
    import json

    from vcap.processors.tokenizer import WordTokenizer

    records = json.loads((tiny_data / "annotations" / "train.json").read_text())
    texts = [c for r in records for c in r["captions"]] + ["a video of"]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    WordTokenizer.train(texts).save(path)
    return str(path)


@pytest.fixture(scope="session")
def hf_tokenizers(tmp_path_factory):
    """family -> a tokenizer directory with that family's real special tokens and ids (tokenizer_fixtures)."""
    from tokenizer_fixtures import SAVERS

    root = tmp_path_factory.mktemp("hf_tokenizers")
    return {name: str(save(root / name)) for name, save in SAVERS.items()}
