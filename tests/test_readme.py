"""The README's "Your own model" section, run as written: its files are taken from the README's code blocks,
the project trains one epoch on the tiny synthetic data, and the checkpoint alone captions a video."""
import json
import re
import subprocess
import sys

from conftest import REPO, TINY_SPEC
from test_e2e import env


def readme_files(section: str) -> dict[str, str]:
    """The code blocks of a README section whose first line names a file (``# my_pkg/my_model.py``)."""
    text = (REPO / "README.md").read_text()
    body = text[text.index(f"## {section}"):]
    body = body[:body.index("\n## ", 4)]
    files = {}
    for block in re.findall(r"```(?:python|yaml)\n(.*?)```", body, re.S):
        first = block.splitlines()[0]
        if first.startswith("# ") and "/" in first or first.endswith((".py", ".yaml")):
            files[first[2:].strip()] = block
    return files


def test_your_own_model_section_trains_and_captions_as_written(tmp_path):
    files = readme_files("Your own model, without editing vcap")
    assert set(files) == {"my_pkg/my_model.py", "my_pkg/cards/base.yaml", "my_project.yaml"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    small = [f"datasets.synthetic_caption.build_info.{k}={v}" for k, v in TINY_SPEC.items()]
    p = subprocess.run([sys.executable, str(REPO / "train.py"), "--cfg-path", "my_project.yaml", "--options", *small,
                        "run.batch_size_train=8"], cwd=tmp_path, env={**env(tmp_path), "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    out = tmp_path / "output" / "mine"
    metrics = json.loads((out / "metrics.json").read_text())
    assert isinstance(metrics["test"]["CIDEr"], float) and (out / "checkpoints" / "best.safetensors").is_file()
    video = next((tmp_path / "data" / "synthetic").glob("*/videos/test00000.mp4"))
    p = subprocess.run([sys.executable, "-m", "vcap.cli", "caption", "--model", str(out / "checkpoints"), "--json",
                        "--video", str(video)], cwd=tmp_path, env={**env(tmp_path), "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert isinstance(json.loads(p.stdout)[0]["caption"], str)


def test_your_data_section_trains_as_written(tmp_path, tiny_data):
    """The README's custom-data project, its CSV layout, on the tiny synthetic videos: 224 px by the card,
    32 px by the model, which wins."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Your data"):text.index("## Metrics")]
    project = re.search(r"```yaml\n# my_data.yaml\n(.*?)```", section, re.S).group(1)
    header = re.search(r"```text\n# my/train.csv\n(.*?)\n", section, re.S).group(1)
    assert header == "video,caption"
    (tmp_path / "my" / "videos").mkdir(parents=True)
    for split in ("train", "val", "test"):
        rows = json.loads((tiny_data / "annotations" / f"{split}.json").read_text())[:8]
        lines = [header]
        for r in rows:
            (tmp_path / "my" / "videos" / r["video"]).write_bytes((tiny_data / "videos" / r["video"]).read_bytes())
            lines += [f"{r['video']},{c}" for c in r["captions"]]
        (tmp_path / "my" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "my_data.yaml").write_text(project)
    check = subprocess.run([sys.executable, "-m", "vcap.cli", "check", "--cfg-path", "my_data.yaml"], cwd=tmp_path,
                           env={**env(tmp_path), "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "custom_caption train: 8 videos, 24 captions, 0 missing" in check.stdout
    p = subprocess.run([sys.executable, str(REPO / "train.py"), "--cfg-path", "my_data.yaml", "--options",
                        "run.batch_size_train=8", "run.batch_size_eval=8"], cwd=tmp_path,
                       env={**env(tmp_path), "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    metrics = json.loads((tmp_path / "output" / "my_data" / "metrics.json").read_text())
    assert metrics["test"]["num_videos"] == 8 and isinstance(metrics["test"]["CIDEr"], float)
