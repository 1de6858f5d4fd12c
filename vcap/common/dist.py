"""torch.distributed helpers: start from torchrun's environment (or run single-process), gather, clean up.

Every collective vcap makes goes through this module, and every tensor it communicates is first moved
to the communication device (``comm_device``): NCCL serves CUDA tensors only, so a CPU tensor handed
to it fails with "No backend type associated with device type cpu". Objects (``all_gather_object``)
are pickled into tensors by torch itself, on the device the backend asks for.
"""
from __future__ import annotations

import datetime
import gc
import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def init_distributed(backend: str = "auto", device: str = "auto") -> torch.device:
    """Join the process group torchrun describes in the environment, or stay single-process.

    Returns the device this process should use.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device is 'cuda' but no CUDA device is visible; use run.device=cpu or auto")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if backend == "auto":
            backend = "nccl" if use_cuda else "gloo"
        if "nccl" in backend and not use_cuda:
            raise RuntimeError(f"run.dist_backend is {backend!r} but this process runs on the CPU "
                               f"({'no CUDA device is visible' if not torch.cuda.is_available() else 'run.device=cpu'}): "
                               f"NCCL communicates CUDA tensors only; use run.dist_backend=gloo (or auto) on CPU")
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def _backend_devices() -> set[str]:
    """Device types the default process group has a backend for, e.g. {"cuda"} for NCCL, {"cpu", "cuda"}
    for gloo, {"cuda"} for a ``cuda:gloo`` group (which imitates NCCL's rule on a CPU machine)."""
    config = str(dist.get_backend_config())  # "cuda:nccl", "cpu:gloo,cuda:gloo", ...
    return {part.split(":")[0] for part in config.split(",") if ":" in part}


def comm_device() -> torch.device:
    """The device vcap's collectives communicate on: the current CUDA device when the process group
    serves CUDA (NCCL, or gloo on a GPU machine), else the CPU."""
    if not is_dist():
        return torch.device("cpu")
    served = _backend_devices()
    if "cuda" in served and (torch.cuda.is_available() or "cpu" not in served):
        if not torch.cuda.is_available():
            raise RuntimeError(f"the process group serves only {sorted(served)} tensors (backend "
                               f"{dist.get_backend_config()!r}) but no CUDA device is visible to communicate on")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_gather_object(obj) -> list:
    if not is_dist():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0; gradients flow back to the local part, summed over ranks
    (``torch.distributed.nn.all_gather``, as open_clip gathers its features), communicated on ``comm_device``."""
    if not is_dist() or get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous().to(comm_device())), dim=0).to(x.device)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over ranks, returned on ``x``'s device (communicated on ``comm_device``)."""
    if not is_dist():
        return x
    y = x.detach().to(comm_device(), copy=True)
    dist.all_reduce(y)
    return y.to(x.device)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(x) / get_world_size()


def broadcast_tensors_(tensors, src: int = 0) -> None:
    """Overwrite each tensor in place with rank ``src``'s values (e.g. the initial weights)."""
    if not is_dist():
        return
    for t in tensors:
        if t.device == comm_device():
            dist.broadcast(t, src=src)
        else:
            buf = t.to(comm_device())
            dist.broadcast(buf, src=src)
            t.copy_(buf)


def cleanup() -> None:
    """Destroy the process group after the caller has dropped its DDP model and optimizer.

    With gloo on CPU, destroying the group while a DDP reducer is still alive aborts at exit
    about one run in three; collecting the garbage first avoids it.
    """
    gc.collect()
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()
