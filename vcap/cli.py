"""The ``vcap`` command and the logic behind train.py and evaluate.py."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vcap.common.config import ConfigError, build_config, run_config

log = logging.getLogger("vcap")


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--cfg-path", required=True, help="project YAML, e.g. projects/demo/caption_synthetic.yaml")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. run.max_epoch=2 model.checkpoint=out/best.safetensors")
    return p


def _start(cfg):
    """Process group, logging, threads and seeds; then task, datasets, model and runner."""
    import torch

    from vcap.common import dist
    from vcap.common.logger import setup_logging
    from vcap.common.registry import registry
    from vcap.runners.runner_base import configure_threads, set_seed

    run = run_config(cfg)
    device = dist.init_distributed(run.dist_backend, run.device)
    setup_logging()
    configure_threads(run.num_threads)
    set_seed(run.seed + dist.get_rank())
    Path(run.output_dir).mkdir(parents=True, exist_ok=True)
    task = registry.get_task_class(run.task).setup_task(cfg)
    datasets = task.build_datasets(cfg)
    model = task.build_model(cfg, datasets)
    log.info("model %s/%s: %.2fM parameters (%.2fM trainable) on %s", cfg.model.arch, cfg.model.model_type,
             sum(p.numel() for p in model.parameters()) / 1e6,
             sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, device)
    torch.manual_seed(run.seed)  # identical initial weights on every rank
    return registry.get_runner_class(run.runner)(cfg, task, model, datasets, device)


def _load(args) -> "DictConfig":  # noqa: F821
    try:
        return build_config(args.cfg_path, args.options)
    except (ConfigError, FileNotFoundError) as e:
        print(f"vcap: invalid config: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def train_main(argv=None) -> dict:
    args = _parser("train.py", "Train a vcap project (plain python or torchrun).").parse_args(argv)
    cfg = _load(args)
    runner = _start(cfg)
    try:
        # run.evaluate_only (LAVIS's run.evaluate) turns train.py into an evaluation of the test splits
        return runner.evaluate_only() if cfg.run.evaluate_only else runner.train()
    finally:
        runner.close()


def evaluate_main(argv=None) -> dict:
    args = _parser("evaluate.py", "Evaluate a vcap project's test splits, e.g. with "
                   "--options model.checkpoint=output/run/checkpoints/best.safetensors").parse_args(argv)
    cfg = _load(args)
    # never overwrite the training run's outputs
    cfg.run.output_dir = str(Path(cfg.run.output_dir) / "evaluate")
    cfg.run.evaluate_only = True
    runner = _start(cfg)
    try:
        return runner.evaluate_only()
    finally:
        runner.close()


def list_main(argv=None) -> None:
    from vcap.common.registry import KINDS, registry
    import vcap  # noqa: F401

    plural = {k: {"lr_scheduler": "lr_schedulers"}.get(k, k + "s") for k in KINDS}
    p = argparse.ArgumentParser(prog="vcap list", description="List registered names.")
    p.add_argument("kind", nargs="?", choices=list(plural.values()), help="one kind; all when omitted")
    args = p.parse_args(argv)
    for kind, name in plural.items():
        if args.kind in (None, name):
            print(f"{name}: {', '.join(registry.list(kind)) or '(none)'}")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"train": train_main, "evaluate": evaluate_main, "list": list_main}
    if not argv or argv[0] not in commands:
        print(f"usage: vcap {{{','.join(commands)}}} ...", file=sys.stderr)
        raise SystemExit(2)
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
