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
