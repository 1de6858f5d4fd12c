"""The vcap command explains itself and starts without torch for help."""
import subprocess
import sys

from conftest import REPO


def vcap(*args):
    return subprocess.run([sys.executable, "-m", "vcap.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_help_lists_every_command_and_exits_0():
    from vcap.cli import COMMANDS

    for args in ([], ["-h"], ["--help"], ["help"]):
        p = vcap(*args)
        assert p.returncode == 0, (args, p.stderr)
        assert all(f"  {name} " in p.stdout for name in COMMANDS), p.stdout
    p = vcap("frobnicate")
    assert p.returncode == 2 and "unknown command 'frobnicate'" in p.stderr
    assert vcap("train", "--help").stdout.startswith("usage: vcap train")
    assert vcap("evaluate", "--help").stdout.startswith("usage: vcap evaluate")


def test_help_and_prepare_help_import_neither_torch_nor_transformers():
    """What makes them start in a fraction of a second (benchmarks/cli_start.py times them)."""
    code = ("import sys, vcap.cli\n"
            "for argv in (['--help'], ['prepare', '--help'], ['train', '--help']):\n"
            "    try:\n"
            "        vcap.cli.main(argv)\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'torchvision') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.stdout.strip().splitlines()[-1] == "[]", p.stdout + p.stderr


def test_converter_names_are_the_converters():
    from vcap.cli import CONVERTER_NAMES
    from vcap.datasets.prepare import CONVERTERS

    assert sorted(CONVERTER_NAMES) == sorted(CONVERTERS)


def test_list_shows_model_types_and_a_projects_own_models(tmp_path):
    p = vcap("list", "models")
    assert p.returncode == 0
    assert "  blip2_t5 / flant5xl: BLIP-2 Flan-T5-XL video captioner as seed 003" in p.stdout
    assert "  clipcap / coco_transformer: CLIPCap's released transformer model" in p.stdout
    (tmp_path / "mine_for_list.py").write_text(
        "from vcap.common.registry import registry\n"
        "from vcap.models.base_model import BaseModel\n"
        "@registry.register_model('my_listed_model')\n"
        "class Mine(BaseModel):\n    pass\n")
    (tmp_path / "p.yaml").write_text("imports: [mine_for_list]\nmodel: {arch: my_listed_model}\n"
                                     "datasets: {synthetic_caption: {}}\nrun: {task: captioning, output_dir: x}\n")
    p = subprocess.run([sys.executable, "-m", "vcap.cli", "list", "models", "--cfg-path", str(tmp_path / "p.yaml")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert "  my_listed_model  (no cards" in p.stdout, p.stderr


def test_check_counts_annotations_and_missing_videos_without_training(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"x")  # check looks for files, it does not decode
    (tmp_path / "ann.csv").write_text("video,caption\na.mp4,a cat\nb.mp4,a dog\n")
    project = tmp_path / "p.yaml"
    project.write_text(
        "model: {arch: blip2_opt, model_type: tiny}\n"
        f"datasets: {{custom_caption: {{build_info: {{annotations: {{train: {tmp_path / 'ann.csv'}, val: null, "
        f"test: {tmp_path / 'nowhere.csv'}}}, videos: {videos}}}}}}}\n"
        "run: {task: captioning, output_dir: x}\n")
    p = vcap("check", "--cfg-path", str(project))
    assert p.returncode == 2
    assert "custom_caption train: 2 videos, 2 captions, 1 missing under" in p.stdout and "b.mp4" in p.stdout
    assert "custom_caption test:" in p.stdout and "DOES NOT EXIST" in p.stdout and "2 problem(s)" in p.stdout
    (videos / "b.mp4").write_bytes(b"x")
    p = vcap("check", "--cfg-path", str(project), "--options", "datasets.custom_caption.build_info.annotations.test=null")
    assert p.returncode == 0 and p.stdout.strip().endswith("ok")
    bad = vcap("check", "--cfg-path", str(project), "--options",
               "datasets.custom_caption.vis_processor.eval.image_size=224")
    assert bad.returncode == 2 and "image_size: 224, but the model takes 32 px" in bad.stderr


def test_vcap_list_shows_the_live_registry():
    """vcap list prints every registered name of every kind, and each model type of each model with its card."""
    from vcap.common.registry import KINDS, registry

    p = vcap("list")
    assert p.returncode == 0, p.stderr
    for kind in KINDS:
        for name in registry.list(kind):
            assert name in p.stdout, (kind, name)
    for arch in registry.list("model"):
        for model_type in getattr(registry.get_model_class(arch), "PRETRAINED_MODEL_CONFIG_DICT", {}):
            assert f"  {arch} / {model_type}: " in p.stdout, (arch, model_type)


def test_a_wrong_choice_is_refused_before_any_data_is_generated(tmp_path):
    """Model and processor arguments are checked against their annotations (Literal choices, numbers) with
    the run section's: one report, exit 2, before the synthetic videos are written."""
    p = subprocess.run([sys.executable, "train.py", "--cfg-path", "projects/demo/caption_synthetic.yaml", "--options",
                        "model.frame_fusion=concat", "datasets.synthetic_caption.vis_processor.train.sampling=random",
                        "model.num_query_tokens=many"], cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "VCAP_DATA_ROOT": str(tmp_path / "data")})
    assert p.returncode == 2 and p.stderr.startswith("vcap: invalid config: 3 problem(s)")
    assert "model.frame_fusion: got 'concat', expected one of 'concat_tokens', 'concat_queries'" in p.stderr
    assert "vis_processor.train.sampling: got 'random', expected one of 'uniform', 'starts', 'rand', 'headtail', 'fps', 'fps_frames'" in p.stderr
    assert "model.num_query_tokens: got 'many', expected int" in p.stderr
    assert not (tmp_path / "data").exists()


def test_vcap_train_from_python_returns_the_metrics(tmp_path):
    from conftest import TINY_SPEC

    small = [f"datasets.synthetic_caption.build_info.{k}={v}" for k, v in TINY_SPEC.items()]
    code = ("import json, vcap\n"
            f"m = vcap.train('projects/demo/caption_synthetic.yaml', options={small + ['run.max_epoch=1', 'run.batch_size_train=8', 'run.output_dir=' + str(tmp_path / 'out')]!r})\n"
            "print(json.dumps({'steps': m['steps'], 'cider': m['test']['CIDEr']}))")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "VCAP_DATA_ROOT": str(tmp_path / "data")})
    assert p.returncode == 0, p.stderr[-3000:]
    got = __import__("json").loads(p.stdout.strip().splitlines()[-1])
    assert got["steps"] == TINY_SPEC["num_train"] * TINY_SPEC["captions_per_video"] // 8 and got["cider"] >= 0
