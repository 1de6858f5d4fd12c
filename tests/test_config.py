import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vcap.common.registry import registry
from vcap.common.schema import run_config
from vcap.common.validation import ConfigError, absolute_paths
from vcap.project import build_config

REPO = Path(__file__).resolve().parents[1]
PROJECTS = sorted((REPO / "projects").rglob("*.yaml"))
CARDS = sorted((REPO / "vcap" / "configs").rglob("*.yaml"))


def project(**sections):
    base = {"model": {"arch": "blip2_opt", "model_type": "tiny"}, "datasets": {"synthetic_caption": {}},
            "run": {"task": "captioning", "output_dir": "output/x"}}
    base.update(sections)
    return OmegaConf.create(base)


def problems(cfg, options=None) -> list[str]:
    with pytest.raises(ConfigError) as e:
        build_config(cfg, options)
    return e.value.problems


def test_layering_card_then_project_then_options():
    cfg = build_config(project())
    assert cfg.model.num_query_tokens == 8  # model card
    assert cfg.model.prompt == "a video of"  # constructor default, filled in (the card does not repeat it)
    assert cfg.datasets.synthetic_caption.build_info.num_train == 1200  # dataset card

    cfg = build_config(project(model={"arch": "blip2_opt", "model_type": "tiny", "num_query_tokens": 4},
                               datasets={"synthetic_caption": {"build_info": {"num_train": 10}}}))
    assert cfg.model.num_query_tokens == 4 and cfg.datasets.synthetic_caption.build_info.num_train == 10
    assert cfg.model.blip2_config.vision_config.hidden_size == 64  # untouched card values survive the merge

    cfg = build_config(project(model={"arch": "blip2_opt", "num_query_tokens": 4}),
                       ["model.num_query_tokens=2", "datasets.synthetic_caption.build_info.seed=7",
                        "run.max_epoch=3"])
    assert cfg.model.num_query_tokens == 2 and cfg.datasets.synthetic_caption.build_info.seed == 7
    assert run_config(cfg).max_epoch == 3
    assert cfg.model.model_type == "tiny"  # the default model type is filled in


def test_run_defaults_come_from_the_schema():
    run = run_config(build_config(project()))
    assert run.runner == "runner_base" and run.accum_grad_iters == 1 and run.monitor_mode == "max"


def test_run_errors_are_all_reported_with_key_value_expected_and_closest():
    found = problems(project(run={"task": "captioning", "output_dir": "o", "max_epcoh": 3,
                                  "batch_size_train": "big", "monitor_mode": "maximum"}))
    assert len(found) == 3, found
    text = "\n".join(found)
    assert "run.max_epcoh: unknown key (value 3); did you mean 'max_epoch'?" in text
    assert "run.batch_size_train: got 'big' (str), expected int" in text
    assert "run.monitor_mode: got 'maximum' (str), expected one of 'max', 'min'" in text


def test_missing_required_run_keys():
    found = problems(project(run={"output_dir": "o"}))
    assert found == ["run.task: required key is missing (expected str)"]


def test_unknown_task_and_runner_names_are_config_errors():
    text = "\n".join(problems(project(run={"task": "captionin", "output_dir": "o", "runner": "nope"})))
    assert "run.task: no task named 'captionin'" in text and "'captioning'" in text
    assert "run.runner: no runner named 'nope'" in text


def test_model_and_dataset_key_errors_name_the_closest_key():
    found = problems(project(model={"arch": "blip2_opt", "num_query_token": 4},
                             datasets={"synthetic_caption": {"build_info": {"num_trian": 5},
                                                             "vis_processor": {"eval": {"name": "video_eval",
                                                                                        "num_frame": 2}}}}))
    text = "\n".join(found)
    assert "model.num_query_token: unknown key for 'blip2_opt' (value 4); did you mean 'num_query_tokens'?" in text
    assert "datasets.synthetic_caption.build_info.num_trian: unknown key; did you mean 'num_train'?" in text
    assert ("datasets.synthetic_caption.vis_processor.eval.num_frame: unknown key for processor 'video_eval'; "
            "did you mean 'num_frames'?") in text
    assert len(found) == 3


def test_unknown_arch_builder_model_type_and_section():
    cfg = project(model={"arch": "clip4clp"}, datasets={"synthetic_captions": {}})
    cfg.extra = 1
    text = "\n".join(problems(cfg))
    assert "extra: unknown top-level section" in text
    assert "model.arch: no model named 'clip4clp'" in text and "'clip4clip'" in text
    assert "no builder named 'synthetic_captions'" in text
    text = "\n".join(problems(project(model={"arch": "clip4clip", "model_type": "base"})))
    assert "'base' is not a model type of 'clip4clip'; expected one of ['tiny', 'vit_b16', 'vit_b32']" in text


def test_bad_options():
    with pytest.raises(ConfigError, match="expected key=value"):
        build_config(project(), ["run.max_epoch"])


def test_data_root_from_environment(monkeypatch):
    monkeypatch.setenv("VCAP_DATA_ROOT", "somewhere/else")
    cfg = build_config(project())
    assert cfg.datasets.synthetic_caption.build_info.storage == "somewhere/else/synthetic"


def test_imports_register_a_user_model_without_editing_vcap(tmp_path, monkeypatch):
    pkg = tmp_path / "my_pkg"
    (pkg / "cards").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cards" / "small.yaml").write_text("model:\n  width: 4\n")
    (pkg / "my_model.py").write_text(textwrap.dedent("""
        import torch
        from vcap.common.registry import registry
        from vcap.models.base_model import BaseModel

        @registry.register_model("my_model")
        class MyModel(BaseModel):
            PRETRAINED_MODEL_CONFIG_DICT = {"small": "cards/small.yaml"}  # beside this file

            def __init__(self, width: int = 8, depth: int = 1):
                super().__init__()
                self.proj = torch.nn.Linear(width, width)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = OmegaConf.create({"imports": ["my_pkg.my_model"], "model": {"arch": "my_model", "model_type": "small"},
                            "datasets": {"synthetic_caption": {}}, "run": {"task": "captioning", "output_dir": "o"}})
    try:
        built = build_config(cfg, ["model.depth=3"])
        assert (built.model.width, built.model.depth) == (4, 3)  # card, then options, over the signature
        model = registry.get_model_class("my_model").from_config(built.model)
        assert model.proj.in_features == 4

        cfg.model.widht = 5
        assert "model.widht: unknown key for 'my_model' (value 5); did you mean 'width'?" in problems(cfg)
        del cfg.model["widht"]
        # a model without cards needs no model_type: its constructor defaults are its config
        registry.get_model_class("my_model").PRETRAINED_MODEL_CONFIG_DICT = {}
        del cfg.model["model_type"]
        assert build_config(cfg).model.width == 8
    finally:
        registry.unregister("model", "my_model")

    cfg.imports = ["no_such_module_xyz"]
    assert any("imports: cannot import module 'no_such_module_xyz'" in p for p in problems(cfg))


@pytest.mark.parametrize("path", PROJECTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_project_loads_and_validates(path):
    cfg = build_config(path)
    assert run_config(cfg).output_dir
    assert not absolute_paths(OmegaConf.load(path)), "absolute path in a shipped project"


@pytest.mark.parametrize("path", CARDS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_card_loads_without_absolute_paths(path):
    cfg = OmegaConf.load(path)
    assert len(cfg) > 0
    assert not absolute_paths(cfg)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_every_card_is_reachable_from_a_registered_class():
    import vcap  # noqa: F401

    used = set()
    for kind, attr in (("model", "PRETRAINED_MODEL_CONFIG_DICT"), ("builder", "DATASET_CONFIG_DICT")):
        for name in registry.list(kind):
            used.update(getattr(registry.get(kind, name), attr).values())
    assert {str(p.relative_to(REPO / "vcap")) for p in CARDS} == used


def test_absolute_paths_are_detected():
    assert absolute_paths(OmegaConf.create({"a": {"b": "/export/data", "c": "${oc.env:X,data}"}})) == \
        ["a.b='/export/data'"]


def test_every_dataset_card_validates_in_a_project():
    """Each builder's cards pass the full config validation (processor arguments included)."""
    import vcap  # noqa: F401

    for name in registry.list("builder"):
        for card_type in registry.get("builder", name).DATASET_CONFIG_DICT:
            cfg = build_config(project(datasets={name: {"type": card_type}}))
            section = cfg.datasets[name]
            assert section.train_storage == "files" and section.vis_processor.eval.name == "video_eval", name


def test_own_model_mistakes_are_explained():
    """The README's own-model path: an import that is not on sys.path, a model type for a model without cards,
    parameters of lazy modules at start-up."""
    import torch

    from vcap.common.registry import registry
    from vcap.common.validation import ConfigError
    from vcap.models.base_model import BaseModel
    from vcap.project import build_config
    from vcap.runners.build import count_parameters as _count

    project = {"model": {"arch": "blip2_opt", "model_type": "tiny"}, "datasets": {"synthetic_caption": {}},
               "run": {"task": "captioning", "output_dir": "x"}}
    with pytest.raises(ConfigError, match=r"cannot import module .nowhere_pkg.my_model.*add that folder to PYTHONPATH"):
        build_config(OmegaConf.create({**project, "imports": ["nowhere_pkg.my_model"]}))

    @registry.register_model("cardless_for_test")
    class Cardless(BaseModel):
        def __init__(self, width: int = 8):
            super().__init__()
            self.head = torch.nn.LazyLinear(width)

    try:
        with pytest.raises(ConfigError, match=r"model_type: 'base', but 'cardless_for_test' has no model-type cards"):
            build_config(OmegaConf.create({**project, "model": {"arch": "cardless_for_test", "model_type": "base"}}))
        cfg = build_config(OmegaConf.create({**project, "model": {"arch": "cardless_for_test", "width": 4}}))
        model = Cardless.from_config(cfg.model)
        assert _count(model.parameters()) == 0  # uninitialised until the first forward, not an error
    finally:
        registry.unregister("model", "cardless_for_test")


def test_processor_frame_size_follows_the_model_unless_the_project_sets_it():
    """custom_caption's card says 224 px, the tiny BLIP-2 takes 32: the processors follow the model (as timm's
    pretrained cfg); a size the project sets that the model cannot take is refused, naming both keys."""
    base = {"model": {"arch": "blip2_opt", "model_type": "tiny"},
            "datasets": {"custom_caption": {"build_info": {"annotations": {"train": "a.csv"}, "videos": "v"}}},
            "run": {"task": "captioning", "output_dir": "x"}}
    cfg = build_config(OmegaConf.create(base))
    assert cfg.datasets.custom_caption.vis_processor.train.image_size == 32
    assert cfg.datasets.custom_caption.vis_processor.eval.image_size == 32
    base["datasets"]["custom_caption"]["vis_processor"] = {"train": {"image_size": 224}}
    with pytest.raises(ConfigError, match=r"datasets.custom_caption.vis_processor.train.image_size: 224, but the "
                                          r"model takes 32 px frames \(model.blip2_config.vision_config.image_size\)"):
        build_config(OmegaConf.create(base))
    cfg = build_config("projects/clipcap_coco_transformer.yaml")  # RN50x4: 288 px
    assert cfg.datasets.coco_caption.vis_processor.eval.image_size == 288


def test_dataset_sections_have_one_schema_with_its_defaults_written_once():
    """DatasetConfig holds what every dataset card shares; no card repeats a default."""
    import dataclasses

    from vcap.common.schema import DATASET_DEFAULTS, DatasetConfig

    cfg = build_config(project(datasets={"synthetic_caption": {}, "msrvtt_caption": {}}))
    assert cfg.datasets.msrvtt_caption.train_storage == "files" and cfg.datasets.msrvtt_caption.features is None
    assert cfg.datasets.synthetic_caption.cache_decoded is True  # the one card that changes a default
    shared = [f.name for f in dataclasses.fields(DatasetConfig) if f.name in DATASET_DEFAULTS]
    for card in (REPO / "vcap" / "configs" / "datasets").rglob("*.yaml"):
        values = OmegaConf.load(card)
        assert not [k for k in shared if k in values and values[k] == DATASET_DEFAULTS[k]], card
    found = problems(project(datasets={"synthetic_caption": {"train_captions": "each", "cache_decoded": "yes",
                                                             "train_storag": "files"}}))
    assert "datasets.synthetic_caption.train_captions: got 'each' (str), expected one of 'all', 'one'" in found
    assert "datasets.synthetic_caption.cache_decoded: got 'yes' (str), expected bool" in found
    assert any(p.startswith("datasets.synthetic_caption.train_storag: unknown key") and "'train_storage'" in p
               for p in found) and len(found) == 3, found


def test_checks_that_used_to_wait_for_the_runner_happen_in_build_config():
    """A monitor no evaluation reports (found after the first epoch before), shards without their index, and a
    ViT cache with FSDP or a random-sampling training processor (found in the runner before)."""
    text = "\n".join(problems(project(run={"task": "captioning", "output_dir": "o", "monitor": "CIDer"})))
    assert "run.monitor: 'CIDer' is not a metric the captioning task reports" in text and "did you mean 'CIDEr'" in text
    build_config(project(run={"task": "captioning", "output_dir": "o", "monitor": "attr_direction_sign"}))
    text = "\n".join(problems(project(datasets={"synthetic_caption": {"train_storage": "webdataset"}})))
    assert "datasets.synthetic_caption.train_shards: not set, but train_storage is 'webdataset'" in text
    text = "\n".join(problems(project(run={"task": "captioning", "output_dir": "o", "cache_vit_features": True,
                                           "fsdp": True})))
    assert "run.cache_vit_features cannot be combined with run.fsdp" in text
    assert "datasets.synthetic_caption.vis_processor.train is video_train with sampling 'rand'" in text
    text = "\n".join(problems(project(model={"arch": "clipcap"}, run={"task": "captioning", "output_dir": "o",
                                                                       "cache_vit_features": True})))
    assert "model.arch 'clipcap' has no ViT feature cache" in text


@pytest.mark.parametrize("arch, key, value, choices", [
    ("clip4clip", "sim_header", "meanp", "'meanP', 'seqLSTM', 'seqTransf', 'tightTransf'"),
    ("clip4clip", "linear_patch", "3D", "'2d', '3d'"),
    ("clipcap", "mapper", "mlp2", "'mlp', 'transformer', 'cross', 'cross_self'"),
    ("xclip_lstm", "spm_model_type", "word", "'unigram', 'bpe'"),
    ("blip2_opt", "frozen_dtype", "bf17", "'auto', 'bf16', 'fp16', 'fp32'"),
    ("blip2_t5", "conventions", "fairseq", "'auto', 'lavis', 'seed003', 'transformers'"),
    ("video_llm", "frozen_dtype", "half", "'auto', 'bf16', 'fp16', 'fp32'"),
])
def test_each_choice_a_constructor_checked_by_hand_is_its_annotations_now(arch, key, value, choices):
    """The constructors no longer repeat these checks: build_config's one report names key, value and choices."""
    task = "retrieval" if arch == "clip4clip" else "captioning"
    dataset = "synthetic_retrieval" if arch == "clip4clip" else "synthetic_caption"
    model_type = "tiny_qwen2_5_vl" if arch == "video_llm" else "tiny"
    found = problems(project(model={"arch": arch, "model_type": model_type, key: value},
                             datasets={dataset: {"vis_processor": {"eval": {"frame_order": "backwards"}}}},
                             run={"task": task, "output_dir": "output/x"}))
    assert f"model.{key}: got {value!r}, expected one of {choices}" in found
    assert any(p.startswith(f"datasets.{dataset}.vis_processor.eval.frame_order: got 'backwards'") for p in found), found


OUT_OF_RANGE = [  # (option, what the report says of it)
    ("run.batch_size_train=-1", "run.batch_size_train: got -1 (int), expected int > 0"),
    ("run.batch_size_eval=0", "run.batch_size_eval: got 0 (int), expected int > 0"),
    ("run.max_epoch=-1", "run.max_epoch: got -1 (int), expected int > 0"),
    ("run.init_lr=-0.001", "run.init_lr: got -0.001 (float), expected float > 0"),
    ("run.accum_grad_iters=0", "run.accum_grad_iters: got 0 (int), expected int > 0"),
    ("run.num_workers=-2", "run.num_workers: got -2 (int), expected int >= 0"),
    ("run.generate.num_beams=0", "run.generate.num_beams: got 0 (int), expected int > 0"),
    ("run.num_beams=0", "run.num_beams: moved to run.generate.num_beams"),
    ("run.generate.top_p=1.5", "run.generate.top_p: got 1.5 (float), expected float > 0 and <= 1"),
    ("run.warmup_ratio=2.0", "run.warmup_ratio: got 2.0 (float), expected float >= 0 and <= 1 or null"),
    ("datasets.synthetic_caption.vis_processor.eval.num_frames=0",
     "datasets.synthetic_caption.vis_processor.eval.num_frames: got 0, expected int > 0"),
    ("datasets.synthetic_caption.vis_processor.train.image_size=0",
     "datasets.synthetic_caption.vis_processor.train.image_size: got 0, expected int > 0"),
    ("model.num_query_tokens=0", "model.num_query_tokens: got 0, expected int > 0"),
]


@pytest.mark.parametrize("option,said", OUT_OF_RANGE, ids=[o for o, _ in OUT_OF_RANGE])
def test_out_of_range_values_are_refused_naming_key_value_and_range(option, said):
    with pytest.raises(ConfigError) as e:
        build_config(REPO / "projects/demo/caption_synthetic.yaml", [option])
    assert said in str(e.value)


def test_out_of_range_values_exit_2_before_any_data_is_generated(tmp_path):
    """All at once, from train.py: one report naming each key, exit 2, nothing written."""
    import os
    import subprocess
    import sys

    options = [o for o, _ in OUT_OF_RANGE if "num_query_tokens" not in o and not o.startswith("run.num_beams")]
    p = subprocess.run([sys.executable, "train.py", "--cfg-path", "projects/demo/caption_synthetic.yaml", "--options",
                        *options, f"run.output_dir={tmp_path / 'out'}"], cwd=REPO, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "VCAP_DATA_ROOT": str(tmp_path / "data")})
    assert p.returncode == 2 and "invalid config" in p.stderr, p.stderr[-2000:]
    for option, said in OUT_OF_RANGE:
        if option in options:
            assert said in p.stderr, said
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()
