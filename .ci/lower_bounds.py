"""Print setup.py's lower bounds as pip constraints (``name==version``): .ci/run installs with them, so the suite runs
at the lowest versions setup.py admits."""
import ast
import pathlib
import re

tree = ast.parse((pathlib.Path(__file__).resolve().parents[1] / "setup.py").read_text())
call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
args = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("install_requires", "extras_require")}
requirements = list(args["install_requires"]) + [r for extra in args["extras_require"].values() for r in extra]
for name, version in sorted({m.groups() for r in requirements if (m := re.fullmatch(r"([\w.-]+)>=([\w.]+)", r))}):
    print(f"{name}=={version}")
