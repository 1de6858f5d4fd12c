"""Distributed code written for NCCL: collectives only in vcap.common.dist, each on the communication
device; every rank starts from the same weights and then draws its own random numbers."""
import ast
import subprocess
import sys

import pytest

from conftest import REPO
from test_e2e import env, options, torchrun

# torch.distributed's collectives (what NCCL runs): none may be called outside vcap/common/dist.py
COLLECTIVES = {"all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor",
               "broadcast", "reduce", "gather", "scatter", "all_to_all", "all_to_all_single", "all_gather_object",
               "broadcast_object_list", "gather_object", "scatter_object_list", "barrier", "monitored_barrier",
               "send", "recv", "isend", "irecv", "batch_isend_irecv"}


def direct_collectives(path) -> list[str]:
    """``file:line name`` of each torch.distributed collective called in ``path``, however it was imported."""
    tree = ast.parse(path.read_text())
    modules, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names if a.name == "torch.distributed" and a.asname}
        elif isinstance(node, ast.ImportFrom):
            if node.module == "torch":
                modules |= {a.asname or a.name for a in node.names if a.name == "distributed"}
            elif node.module == "torch.distributed":
                names |= {a.asname or a.name for a in node.names if a.name in COLLECTIVES}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        hit = (isinstance(f, ast.Name) and f.id in names) or (
            isinstance(f, ast.Attribute) and f.attr in COLLECTIVES and (
                (isinstance(f.value, ast.Name) and f.value.id in modules)
                or ast.unparse(f.value) == "torch.distributed"))
        if hit:
            found.append(f"{path.name}:{node.lineno} {ast.unparse(f)}")
    return found


def test_no_collective_outside_the_dist_module(tmp_path):
    """The next collective on a CPU tensor would be written somewhere else: nothing but vcap.common.dist
    may call torch.distributed's collectives (it moves every tensor to the communication device)."""
    offenders = [hit for p in sorted((REPO / "vcap").rglob("*.py")) if p != REPO / "vcap/common/dist.py"
                 for hit in direct_collectives(p)]
    assert not offenders, offenders
    # the scan itself finds each import style
    probe = tmp_path / "probe.py"  # never inside the package, which other test workers read
    probe.write_text("import torch\nimport torch.distributed as td\nfrom torch.distributed import all_reduce as ar\n"
                     "from torch import distributed\ntd.broadcast(x)\nar(x)\ndistributed.barrier()\n"
                     "torch.distributed.all_gather(a, b)\n")
    assert len(direct_collectives(probe)) == 4


HELPERS = """
import torch
from vcap.common import dist

device = dist.init_distributed("gloo", "cpu")
rank, world = dist.get_rank(), dist.get_world_size()
assert dist.comm_device() == torch.device("cpu")
# On a GPU the default device (CPU) is not the communication device (CUDA). A meta default device
# reproduces that here: a helper that creates a tensor without naming comm_device() communicates a
# meta tensor, which carries no values, and the checks below fail (NCCL would refuse the CPU one).
torch.set_default_device("meta")
x = torch.full((3,), float(rank + 1), device=device)
assert dist.all_reduce_sum(x).tolist() == [3.0] * 3 and dist.all_reduce_mean(x).tolist() == [1.5] * 3
w = torch.full((2,), float(rank), device=device, requires_grad=True)
g = dist.all_gather_with_grad(w)
assert g.tolist() == [0.0, 0.0, 1.0, 1.0]
g.sum().backward()
assert w.grad.tolist() == [2.0, 2.0]
t = torch.full((4,), float(rank), device=device)
dist.broadcast_tensors_([t], src=1)
assert t.tolist() == [1.0] * 4
assert dist.all_gather_object(rank) == [0, 1] and dist.broadcast_object(rank) == 0
torch.set_default_device("cpu")
print("helpers ok", rank, flush=True)
dist.cleanup()

# a process group with NCCL's device rule (a backend for CUDA tensors only), on a machine without CUDA:
# torch refuses a CPU tensor, and vcap says it has no device to communicate on
import torch.distributed as td
td.init_process_group(backend="cuda:gloo")
try:
    td.all_reduce(torch.ones(1))
except RuntimeError as e:
    assert "No backend type associated with device type cpu" in str(e), e
else:
    raise AssertionError("a CPU tensor was reduced by a CUDA-only group")
try:
    dist.comm_device()
except RuntimeError as e:
    assert "no CUDA device is visible" in str(e), e
    print("comm device refused:", e, flush=True)
td.destroy_process_group()
"""


def test_helpers_communicate_on_the_comm_device_not_the_default_device(tmp_path):
    script = tmp_path / "helpers.py"
    script.write_text(HELPERS)
    p = subprocess.run(torchrun(str(script)), cwd=REPO, env=env(tmp_path), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count("helpers ok") == 2 and p.stdout.count("comm device refused") == 2


def test_nccl_without_cuda_is_a_clear_error(monkeypatch):
    from vcap.common import dist

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="NCCL communicates CUDA tensors only; use run.dist_backend=gloo"):
        dist.init_distributed("nccl", "cpu")


SEEDS = """
import hashlib, random, sys
import numpy as np
import torch
from vcap.cli import _load, _parser
from vcap.runners.build import build_runner
from vcap.common import dist

runner = build_runner(_load(_parser("t", "t").parse_args(sys.argv[1:])))
digest = hashlib.sha256(b"".join(v.detach().numpy().tobytes() for v in runner.model.state_dict().values())).hexdigest()
mask = torch.nn.functional.dropout(torch.ones(64), 0.5, training=True).tolist()
draws = (mask, random.random(), float(np.random.rand()))
parts = dist.all_gather_object((digest, draws))
if dist.is_main_process():
    assert parts[0][0] == parts[1][0], "ranks built different initial weights"
    assert parts[0][1][0] != parts[1][1][0], "ranks drew the same dropout mask"
    assert parts[0][1][1:] != parts[1][1][1:], "ranks drew the same python/numpy numbers"
    print("seeds ok", flush=True)
runner.close()
"""


def test_ranks_start_from_identical_weights_then_draw_their_own_numbers(tmp_path):
    script = tmp_path / "seeds.py"
    script.write_text(SEEDS)
    cmd = torchrun(str(script), "--cfg-path", "projects/demo/caption_synthetic.yaml",
                   *options("synthetic_caption", tmp_path / "out"))
    p = subprocess.run(cmd, cwd=REPO, env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "seeds ok" in p.stdout


FSDP_META = """
import hashlib, sys
import torch
from transformers import Blip2ForConditionalGeneration
from vcap.cli import _load, _parser
from vcap.runners.build import build_runner
from vcap.common import dist
from vcap.common.fsdp import full_state_dict, is_meta

runner = build_runner(_load(_parser("t", "t").parse_args(sys.argv[1:])))
assert is_meta(runner.model) == (dist.get_rank() > 0), "only rank 0 may materialise the model"
runner.setup_optimization(steps_per_epoch=1)
buffers = hashlib.sha256(b"".join(b.cpu().numpy().tobytes() for b in runner.model.buffers())).hexdigest()
assert len(set(dist.all_gather_object(buffers))) == 1, "ranks hold different buffers"
state = full_state_dict(runner.model)
if dist.is_main_process():
    want = Blip2ForConditionalGeneration.from_pretrained(sys.argv[-1].split("=", 1)[1]).state_dict()
    shared = [k for k in want if k in state]
    assert len(shared) > 50 and all(torch.equal(state[k].float(), want[k].float()) for k in shared), \\
        [k for k in shared if not torch.equal(state[k].float(), want[k].float())][:5]
    print("fsdp from rank 0 ok", len(shared), flush=True)
runner.close()
"""


def test_fsdp_builds_the_model_on_rank_0_only_and_shards_its_weights(tmp_path, hf_tokenizers):
    from test_blip2_pretrained import OPT_CONFIG, save_tiny_blip2

    hf = save_tiny_blip2(tmp_path / "blip2", hf_tokenizers["opt"], OPT_CONFIG)
    script = tmp_path / "fsdp_meta.py"
    script.write_text(FSDP_META)
    cmd = torchrun(str(script), "--cfg-path", "projects/demo/caption_synthetic.yaml",
                   *options("synthetic_caption", tmp_path / "out", "run.fsdp=true", "model.num_query_tokens=4",
                            "model.freeze_vit=true", "model.freeze_llm=true", f"model.tokenizer={hf}",
                            f"model.pretrained={hf}"))
    p = subprocess.run(cmd, cwd=REPO, env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "fsdp from rank 0 ok" in p.stdout
