"""One place builds a run: process group, logging, threads, seeds, task, datasets, model and runner; and the
library's entry points ``vcap.train`` / ``vcap.evaluate``, which train.py, evaluate.py and the vcap command use,
callable from Python or a notebook without argv."""
from __future__ import annotations

import logging
from pathlib import Path

from vcap.common import dist
from vcap.common.logger import setup_logging
from vcap.common.registry import registry
from vcap.common.schema import run_config
from vcap.common.seed import set_seed
from vcap.project import build_config
from vcap.runners.runner_base import configure_threads

log = logging.getLogger("vcap")


def count_parameters(params) -> int:
    """Parameters counted, those of lazy modules (nn.LazyLinear before its first forward) as 0."""
    from torch.nn.parameter import UninitializedParameter

    return sum(0 if isinstance(p, UninitializedParameter) else p.numel() for p in params)


def build_runner(cfg):
    """Process group, logging, threads and seeds; then task, datasets, model and runner."""
    import contextlib

    import torch


    run = run_config(cfg)
    device = dist.init_distributed(run.dist_backend, run.device)
    setup_logging()
    configure_threads(run.num_threads)
    set_seed(run.seed)  # the same on every rank while the model is built: identical initial weights
    Path(run.output_dir).mkdir(parents=True, exist_ok=True)
    task = registry.get_task_class(run.task).setup_task(cfg)
    datasets = task.build_datasets(cfg)
    # run.fsdp training: only rank 0 materialises the model; the others build its shapes on the meta device
    # and receive their shards of rank 0's weights when it is sharded (torchtune's way)
    on_meta = (run.fsdp and not run.evaluate_only and dist.get_rank() > 0
               and getattr(registry.get_model_class(cfg.model.arch), "META_INIT", False))
    with torch.device("meta") if on_meta else contextlib.nullcontext():
        model = task.build_model(cfg, datasets)
    trainable = count_parameters(p for p in model.parameters() if p.requires_grad)
    log.info("model %s/%s: %.2fM parameters (%.2fM trainable) on %s", cfg.model.arch, cfg.model.model_type,
             count_parameters(model.parameters()) / 1e6, trainable / 1e6, device)
    set_seed(run.seed + dist.get_rank())  # from here each rank draws its own dropout masks and samples
    return registry.get_runner_class(run.runner)(cfg, task, model, datasets, device)


def run_training(cfg) -> dict:
    """Train the built config (``run.evaluate_only``, LAVIS's ``run.evaluate``, evaluates instead); the metrics."""
    runner = build_runner(cfg)
    try:
        return runner.evaluate_only() if cfg.run.evaluate_only else runner.train()
    finally:
        runner.close()


def run_evaluation(cfg) -> dict:
    """Evaluate the test splits of the built config under ``<output_dir>/evaluate`` (the training run's outputs
    are never overwritten); the metrics."""
    cfg.run.output_dir = str(Path(cfg.run.output_dir) / "evaluate")
    cfg.run.evaluate_only = True
    runner = build_runner(cfg)
    try:
        return runner.evaluate_only()
    finally:
        runner.close()


def train(cfg_path: str, options: list[str] | None = None) -> dict:
    """``vcap.train("projects/demo/caption_synthetic.yaml", options=["run.max_epoch=1"])``: the metrics."""
    return run_training(build_config(cfg_path, options))


def evaluate(cfg_path: str, options: list[str] | None = None) -> dict:
    """``vcap.evaluate(P, options=["model.checkpoint=.../best.safetensors"])``: the test metrics."""
    return run_evaluation(build_config(cfg_path, options))
