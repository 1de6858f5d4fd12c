"""Epoch-based runner: DDP training with AMP, accumulation and clipping; validation picks the best
checkpoint by ``run.monitor``; the test split is evaluated with the best weights at the end."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from vcap.common import dist
from vcap.common.checkpoint import load_weights, save_weights, write_json
from vcap.common.dtypes import DTYPES
from vcap.common.fsdp import (full_state_dict, gathered, is_meta, is_sharded, load_optimizer_state, optimizer_state,
                              set_gradient_sync, shard_model)
from vcap.common.logger import MetricWriter
from vcap.common.optim import param_groups
from vcap.common.registry import registry
from vcap.common.schema import run_config
from vcap.common.train_state import read_state, resolve_resume, rng_state, set_rng_state, write_checkpoint
from vcap.datasets.bad_samples import BadSamples
from vcap.datasets.loaders import TrainLoader, build_train_loader, eval_loader
from vcap.inference import checkpoint_metadata
from vcap.report import write_report

log = logging.getLogger(__name__)


class PreemptedError(SystemExit):
    """SIGTERM/SIGINT: the step finished, the training state was saved, the run stops (exit status 143)."""


def config_summary(cfg) -> str:
    """One line for the console: model, datasets, schedule and where the run writes."""
    r, m = cfg.run, cfg.model
    length = f"{r.max_iters} iterations" if r.get("max_iters") else f"{r.max_epoch} epochs"
    if r.get("train_dataset_ratios"):
        length += f" (inner epochs of {r.iters_per_inner_epoch}, ratios {dict(r.train_dataset_ratios)})"
    return (f"{r.task}: {m.arch}/{m.get('model_type', '')} on {', '.join(cfg.datasets)}; {length}, batch "
            f"{r.batch_size_train} per rank, lr {r.init_lr}, {r.num_workers} workers; monitor {r.monitor}; "
            f"output {r.output_dir}")


@registry.register_runner("runner_iter")  # LAVIS's name for training in inner epochs of iters_per_inner_epoch steps
@registry.register_runner("runner_base")
class RunnerBase:
    def __init__(self, cfg, task, model, datasets: dict, device: torch.device):
        self.cfg, self.task, self.datasets, self.device = cfg, task, datasets, device
        self.run = run_config(cfg)
        self.output_dir = Path(self.run.output_dir)
        self.ckpt_dir = self.output_dir / "checkpoints"
        self.model = model if is_meta(model) else model.to(device)  # a meta model is filled when sharded
        self.ddp = None
        self.optimizer = self.scheduler = self.scaler = None
        self.step = self.epoch = 0
        self.nonfinite_in_a_row = self.nonfinite_total = 0
        self.stop_signal = None
        self.best = self.best_epoch = None
        self.metrics: dict = {}
        self.writer = MetricWriter(self.output_dir, enabled=dist.is_main_process())
        self.bad_samples = BadSamples(self.output_dir, self.run.max_bad_sample_ratio)
        self.amp_dtype = DTYPES.get(self.run.amp) \
            if device.type == "cuda" else None
        self.setup_vit_cache()

    def setup_vit_cache(self) -> None:
        """``run.cache_vit_features`` (build_config refused it where it cannot work or be reused)."""
        if self.run.cache_vit_features:
            self.model.enable_vit_cache(int(self.run.vit_cache_gb * 1e9))

    # -- set-up ----------------------------------------------------------------------------------
    def save_config(self) -> None:
        if dist.is_main_process():
            self.output_dir.mkdir(parents=True, exist_ok=True)
            text = OmegaConf.to_yaml(self.cfg, resolve=True)
            (self.output_dir / "config.yaml").write_text(text)
            log.info("%s (the whole config: %s)", config_summary(self.cfg), self.output_dir / "config.yaml")

    def split_datasets(self, split: str) -> dict:
        return {name: splits[split] for name, splits in self.datasets.items() if split in splits}

    def train_loader(self) -> TrainLoader:
        by_name = {name: [splits[s] for s in self.run.train_splits if s in splits]
                   for name, splits in self.datasets.items()}
        parts = [ds for split in self.run.train_splits for ds in self.split_datasets(split).values()]
        if not parts:
            raise ValueError(f"no dataset has the train splits {self.run.train_splits}")
        r = self.run
        return build_train_loader(parts, by_name, r.train_dataset_ratios, r.iters_per_inner_epoch, r.batch_size_train,
                                  r.accum_grad_iters, r.num_workers, r.seed, self.device.type == "cuda")

    def shard(self) -> None:
        """``run.fsdp``: the model's layers sharded over the ranks (before the optimizer, which must hold the sharded
        parameters)."""
        if self.run.fsdp and dist.is_dist():
            n = shard_model(self.model, getattr(self.model, "FSDP_LAYERS", ()), self.device)
            log.info("FSDP: %d layers sharded over %d ranks", n, dist.get_world_size())

    def wrap_ddp(self) -> None:
        """An unsharded model on several ranks trains through DDP."""
        if dist.is_dist() and not is_sharded(self.model):
            self.ddp = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def setup_optimization(self, steps_per_epoch: int) -> None:
        r = self.run
        total = r.max_iters if r.max_iters else r.max_epoch * steps_per_epoch
        lr_scales = getattr(self.model, "lr_scales", lambda: {})()
        self.optimizer = torch.optim.AdamW(param_groups(self.model, r.weight_decay, lr_scales), lr=r.init_lr,
                                           betas=(0.9, r.beta2))
        self.scheduler = registry.get_lr_scheduler_class(r.lr_sched)(
            self.optimizer, total_steps=total, init_lr=r.init_lr, min_lr=r.min_lr,
            warmup_steps=int(r.warmup_ratio * total) if r.warmup_ratio is not None else r.warmup_steps,
            warmup_lr=r.warmup_lr, steps_per_epoch=steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.total_steps = total

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    # -- training --------------------------------------------------------------------------------
    def train(self) -> dict:
        self.save_config()
        loader = self.train_loader()
        steps_per_epoch = len(loader) // self.run.accum_grad_iters
        if steps_per_epoch == 0:
            raise ValueError(f"the train split has {loader.num_items()} items: fewer than one batch of "
                             f"{self.run.batch_size_train} x {dist.get_world_size()} ranks x "
                             f"{self.run.accum_grad_iters} accumulation steps")
        self.shard()
        self.setup_optimization(steps_per_epoch)
        self.wrap_ddp()
        max_epoch = math.ceil(self.run.max_iters / steps_per_epoch) if self.run.max_iters else self.run.max_epoch
        resume = resolve_resume(self.run.resume, self.ckpt_dir)
        rng = None
        if resume is not None:
            position, rng = self.load_training_state(resume)
            loader.load_state_dict(position)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for epoch in range(loader.epoch, max_epoch):
                if self.step >= self.total_steps:
                    break
                self.epoch = epoch
                self.train_epoch(loader, rng)
                rng = None
                self.end_epoch(epoch, last=epoch == max_epoch - 1 or self.step >= self.total_steps)
                self.bad_samples.raise_pending()
                loader.set_epoch(epoch + 1)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        best_path = self.ckpt_dir / ("best.safetensors" if self.best is not None else "last.safetensors")
        log.info("testing with %s (best %s=%s at epoch %s)", best_path, self.run.monitor, self.best, self.best_epoch)
        load_weights(self.model, best_path, key="the best checkpoint")
        metrics = dict(self.metrics)
        if self.run.test_splits:
            metrics.update(self.evaluate_splits(self.run.test_splits, tag="test"))
        metrics["best_epoch"] = self.best_epoch
        metrics["steps"] = self.step
        metrics["nonfinite_skipped"] = self.nonfinite_total
        self.write_metrics(metrics)
        self.write_reports(self.run.test_splits)
        return metrics

    def end_epoch(self, epoch: int, last: bool) -> None:
        # detectron2's order: save first, so a failing evaluation can be debugged from the checkpoint
        self.save_checkpoint("last")
        if self.run.valid_splits and ((epoch + 1) % self.run.val_freq == 0 or last):
            val = self.evaluate_splits(self.run.valid_splits, tag=f"epoch{epoch}")
            score = self.monitored(val)
            improved = score is not None and (self.best is None or self.better(score, self.best))
            if improved:
                self.best, self.best_epoch = score, epoch
                self.save_checkpoint("best")
            if improved or score is None:  # without run.monitor the last evaluation is kept
                self.metrics["val"] = next(iter(val.values())) if len(val) == 1 else val
            self.writer.write(self.step, {"epoch": epoch, "best": self.best}, prefix="val/")
        self.save_training_state({"epoch": epoch + 1, "batch": 0, "seed": None})

    def _on_signal(self, signum, frame) -> None:
        if self.stop_signal is None:
            log.warning("received %s: finishing this step, then saving a checkpoint", signal.Signals(signum).name)
        self.stop_signal = signum

    def train_epoch(self, loader: TrainLoader, rng: list | None = None) -> None:
        """One epoch from the loader's position (a resumed run's, else the epoch's first batch); ``rng``: each rank's
        RNG states, restored first, where a resumed run saved them."""
        model = self.ddp or self.model
        model.train()
        epoch, skip = loader.epoch, loader.batch
        accum = self.run.accum_grad_iters
        usable = (len(loader) // accum) * accum  # never leave a half-accumulated step behind
        if rng is not None:
            set_rng_state(rng[dist.get_rank()])
        # a progress bar on a terminal; into a log file (stderr not a terminal) a line every run.log_freq steps
        # instead of tqdm's carriage-return stream
        bar = tqdm(total=usable, initial=skip, desc=f"epoch {epoch}", leave=False,
                   disable=not dist.is_main_process() or not sys.stderr.isatty())
        t0, first_step = time.time(), self.step
        trace = self.trace_file(epoch, append=skip > 0)
        window = None  # (summed loss, non-finite micro-batches) of the accumulation window, on the device
        for i, batch in enumerate(loader, start=skip):
            if i >= usable or self.step >= self.total_steps:
                break
            batch = self.bad_samples.take(batch)
            if trace:  # with mixed datasets each key after its dataset's name
                tag = f"{batch['dataset']}\t" if "dataset" in batch else ""
                trace.write("".join(f"{tag}{k}\n" for k in batch.get("key", batch["video_id"])))
            sync = (i + 1) % accum == 0
            if is_sharded(self.model):
                set_gradient_sync(self.model, sync)
            with (contextlib.nullcontext() if sync or self.ddp is None else self.ddp.no_sync()):
                with self.autocast():
                    out = self.task.train_step(model, batch)
                # a non-finite loss is back-propagated too: the whole window is skipped below, on every
                # rank together, so no host sync is needed per micro-batch
                self.scaler.scale(out["loss"] / accum).backward()
            loss = out["loss"].detach().float()
            stats = torch.stack([loss, (~torch.isfinite(loss)).float()])
            window = stats if window is None else window + stats
            bar.update(1)
            if not sync:
                continue
            # the one reduction of the step: the logged loss, the non-finite check and the stop signal
            stop = torch.tensor([float(self.stop_signal is not None)], device=window.device)
            loss_sum, bad, stop = dist.all_reduce_sum(torch.cat([window, stop])).tolist()
            window = None
            if bad:
                self.skip_nonfinite_step(i)
            else:
                self.optimizer_step(out, epoch, i, accum, t0, bar, loss_sum / (accum * dist.get_world_size()))
                if self.run.checkpoint_every_iters and self.step % self.run.checkpoint_every_iters == 0:
                    self.save_training_state(loader.state_dict())
            if stop:
                self.save_training_state(loader.state_dict())
                name = signal.Signals(self.stop_signal or signal.SIGTERM).name
                log.warning("%s: stopped after global step %d; the training state is saved in %s. Run the same "
                            "command again (run.resume: auto) to continue from the next batch", name, self.step,
                            self.ckpt_dir)
                raise PreemptedError(143)
        bar.close()
        if trace:
            trace.close()
        self.bad_samples.report(epoch, "train", defer=True)  # raised after end_epoch has saved the checkpoint
        if getattr(self.model, "vit_cache", None) is not None:
            stats = self.model.vit_cache.stats(reset=True)
            log.info("ViT feature cache (rank %d): %d clips, %.3f GB, hit rate %.1f%%", dist.get_rank(), stats["clips"],
                     stats["gb"], 100 * stats["hit_rate"])
        log.info("epoch %d: %d steps in %.1fs (global step %d)", epoch, self.step - first_step, time.time() - t0,
                 self.step)

    def skip_nonfinite_step(self, i: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        log.warning("non-finite loss at batch %d (global step %d): step skipped (%d in a row, %d in all)", i,
                    self.step, self.nonfinite_in_a_row, self.nonfinite_total)
        if self.nonfinite_in_a_row >= self.run.max_nonfinite_steps:
            raise FloatingPointError(
                f"the loss was not finite in {self.nonfinite_in_a_row} optimizer steps in a row (run.max_nonfinite_steps="
                f"{self.run.max_nonfinite_steps}), at global step {self.step}: lower run.init_lr, check the data "
                f"(bad_samples.jsonl) or use run.amp: bf16 instead of fp16")

    def optimizer_step(self, out: dict, epoch: int, i: int, accum: int, t0: float, bar, loss: float) -> None:
        """``loss``: the window's mean loss over micro-batches and ranks."""
        self.nonfinite_in_a_row = 0
        self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if self.run.max_grad_norm:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.run.max_grad_norm)
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        if self.step % self.run.log_freq == 0 or self.step == 1:
            scalars = {"loss": loss, "lr": self.optimizer.param_groups[0]["lr"], "epoch": epoch,
                       "grad_norm": grad_norm, "sec_per_step": (time.time() - t0) / max(1, i + 1) * accum}
            # a task's other scalars (e.g. SCST's reward and baseline), averaged over ranks
            scalars.update({k: float(dist.all_reduce_mean(v.detach().float())) for k, v in out.items()
                            if k != "loss" and torch.is_tensor(v) and v.dim() == 0})
            self.writer.write(self.step, scalars, prefix="train/")
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{scalars['lr']:.2e}")
            if bar.disable and dist.is_main_process():
                log.info("epoch %d step %d (batch %d of %d): loss %.4f, lr %.2e, %.3f s/step", epoch, self.step, i + 1,
                         bar.total, loss, scalars["lr"], scalars["sec_per_step"])

    # -- resumable training state ----------------------------------------------------------------
    def save_training_state(self, position: dict) -> None:
        """Everything a resumed run needs to continue exactly where the training loader is (``position``: its
        ``state_dict()``); see train_state."""
        weights = full_state_dict(self.model) if is_sharded(self.model) else None  # collectives: every rank
        optim = optimizer_state(self.model, self.optimizer)
        rngs = dist.all_gather_object(rng_state())
        if dist.is_main_process():
            meta = self.checkpoint_meta()
            state = {"step": self.step, "loader": position, "world_size": dist.get_world_size(),
                     "optimizer": optim, "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                     "rng": rngs, "best": self.best, "best_epoch": self.best_epoch, "metrics": self.metrics,
                     "nonfinite_total": self.nonfinite_total, "nonfinite_in_a_row": self.nonfinite_in_a_row,
                     "bad_samples": {"items": self.bad_samples.items}}

            def files(tmp: Path) -> None:
                save_weights(self.model, tmp / "model.safetensors", meta, state=weights)
                torch.save(state, tmp / "state.pt")

            write_checkpoint(self.ckpt_dir, self.step, files, self.run.keep_last)
        dist.barrier()

    def load_training_state(self, path: Path) -> tuple[dict, list]:
        """(the training loader's position, each rank's RNG states) of the saved state, the rest restored."""
        state = read_state(path)
        if state["world_size"] != dist.get_world_size():
            raise ValueError(f"{path} was saved by {state['world_size']} ranks, this run has {dist.get_world_size()}: "
                             f"an exact resume needs the same number (each rank's data and RNG continue)")
        load_weights(self.model, path / "model.safetensors", key="run.resume")
        load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best, self.best_epoch = state["step"], state["best"], state["best_epoch"]
        self.metrics = dict(state["metrics"])
        self.nonfinite_total, self.nonfinite_in_a_row = state["nonfinite_total"], state["nonfinite_in_a_row"]
        self.bad_samples.items = state["bad_samples"]["items"]
        # states written before the loader protocol kept the position beside the rest (their seed is drawn again)
        position = state.get("loader") or {"epoch": state["epoch"], "batch": state["batch"], "seed": None}
        log.info("resuming from %s: global step %d, epoch %d after its batch %d (best %s=%s)", path, self.step,
                 position["epoch"], position["batch"], self.run.monitor, self.best)
        return position, state["rng"]

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate_splits(self, splits, tag: str = "") -> dict:
        """``{split: metrics}`` (``dataset/split`` keys when the project has several datasets). The RNG
        states are restored afterwards: evaluating never changes what training draws next."""
        saved = rng_state()
        try:
            return self._evaluate_splits(splits, tag)
        finally:
            set_rng_state(saved)

    def _evaluate_splits(self, splits, tag: str = "") -> dict:
        model = self.model
        model.eval()
        out = {}
        for split in splits:
            found = self.split_datasets(split)
            if not found:
                raise ValueError(f"no dataset has the split {split!r} (datasets: {list(self.datasets)})")
            for name, ds in found.items():
                key = split if len(self.datasets) == 1 else f"{name}/{split}"
                t0 = time.time()
                with self.autocast(), gathered(model):
                    metrics = self.task.evaluate(model, self.bad_samples.tracked(eval_loader(ds, self.run.batch_size_eval, self.run.num_workers)), ds,
                                                 key.replace("/", "_"), self.output_dir)
                self.bad_samples.report(self.epoch, key)
                log.info("%s %s (%.1fs): %s", tag, key, time.time() - t0,
                         ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
                self.writer.write(self.step, {k: v for k, v in metrics.items() if isinstance(v, float)},
                                  prefix=f"{key}/")
                out[key] = metrics
        return out

    def trace_file(self, epoch: int, append: bool = False):
        """With ``run.trace_samples``, a file for the keys of the items this rank trains on this epoch."""
        if not self.run.trace_samples:
            return None
        path = self.output_dir / "samples" / f"epoch{epoch:03d}_rank{dist.get_rank()}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a" if append else "w")

    def monitored(self, results: dict):
        if not self.run.monitor:
            return None
        first = next(iter(results.values()))
        if self.run.monitor not in first:
            raise KeyError(f"run.monitor {self.run.monitor!r} is not among the evaluation metrics {sorted(first)}")
        return first[self.run.monitor]

    def better(self, a: float, b: float) -> bool:
        return a > b if self.run.monitor_mode == "max" else a < b

    # -- outputs ---------------------------------------------------------------------------------
    def save_checkpoint(self, name: str) -> None:
        state = full_state_dict(self.model) if is_sharded(self.model) else None  # a collective: every rank
        if dist.is_main_process():
            save_weights(self.model, self.ckpt_dir / f"{name}.safetensors", self.checkpoint_meta(), state=state)
        dist.barrier()

    def checkpoint_meta(self) -> dict:
        return checkpoint_metadata(self.cfg, self.model, self.step)

    def write_metrics(self, metrics: dict) -> None:
        if dist.is_main_process():
            path = self.output_dir / "metrics.json"
            write_json(path, metrics, indent=2)
            log.info("metrics written to %s:\n%s", path, json.dumps(metrics, indent=2))

    def evaluate_only(self) -> dict:
        self.save_config()
        metrics = self.evaluate_splits(self.run.test_splits, tag="evaluate")
        self.write_metrics(metrics)
        self.write_reports(self.run.test_splits)
        return metrics

    def write_reports(self, splits) -> None:
        """report/index.html of each evaluated split, by rank 0 while the others wait (a report that fails only
        logs why: the metrics are written, the page is a view of them)."""
        if dist.is_main_process():
            for split in splits:
                for name, ds in self.split_datasets(split).items():
                    try:
                        write_report(self.output_dir, split, name if len(self.datasets) > 1 else None,
                                     workers=self.run.num_workers or 1, data=ds)
                    except Exception as e:  # noqa: BLE001
                        log.warning("no report for %s %s: %s: %s", name, split, type(e).__name__, e)
        dist.barrier()

    def close(self) -> None:
        """Release the DDP model and optimizer before the process group goes (gloo aborts otherwise)."""
        self.writer.close()
        self.ddp = self.optimizer = self.scheduler = self.scaler = None
        self.model = None
        dist.cleanup()


def configure_threads(num_threads: int | None) -> None:
    if num_threads is None:
        num_threads = max(1, (os.cpu_count() or 1) // dist.local_world_size())
    torch.set_num_threads(num_threads)
