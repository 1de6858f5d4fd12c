"""Self-critical sequence training (Rennie et al. 2017) with CIDEr-D rewards.

For each video, ``run.scst.num_samples`` captions are drawn (multinomial sampling or the top
beams, with the model in eval mode and no gradients); their log-probabilities come from a
differentiable teacher-forced pass over the drawn tokens (the captioner's ``score_sequences``,
reached through ``forward`` so DDP syncs the gradients). Each caption's reward is its CIDEr-D
against *all* references of its video, with document frequencies from every training reference
(``vcap.evaluation.cider.CiderD``, built once). The baseline is the mean reward of the other
samples of the same video (so a video's advantages sum to zero), the mean of all of them (seed 003's), or the
greedy caption's reward.
"""
from __future__ import annotations

import logging

import torch

from vcap.common.fsdp import gathered
from vcap.common.registry import registry
from vcap.evaluation.cider import CiderD
from vcap.tasks.captioning import CaptioningTask

log = logging.getLogger(__name__)


def leave_one_out_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """(B, K) rewards -> each sample's baseline: the mean reward of the video's other K-1 samples."""
    k = rewards.shape[1]
    if k < 2:
        raise ValueError("the leave-one-out baseline needs run.scst.num_samples >= 2")
    return (rewards.sum(1, keepdim=True) - rewards) / (k - 1)


@registry.register_task("captioning_scst")
class SCSTTask(CaptioningTask):
    def build_datasets(self, cfg):
        datasets = super().build_datasets(cfg)
        refs = {}
        for name, splits in datasets.items():
            train = splits.get("train")
            if train is None:
                continue
            if not hasattr(train, "records"):
                raise ValueError(f"datasets.{name}: SCST rewards need every reference of each training video; a "
                                 "train split streamed from shards carries one caption per item (use train_storage: "
                                 "files)")
            for r in train.records:
                refs[r["video_id"]] = [train.text_processor(c) for c in r["captions"]]
        if not refs:
            raise ValueError("captioning_scst needs a train split: its references are the reward corpus")
        self.cider = CiderD(refs)
        log.info("CIDEr-D reward corpus: %d videos, %d references", len(refs), sum(map(len, refs.values())))
        return datasets

    def build_model(self, cfg, datasets):
        if not cfg.model.get("checkpoint"):
            log.warning("captioning_scst starts from model.checkpoint (a cross-entropy model); none is set, so SCST "
                        "starts from the initial weights")
        return super().build_model(cfg, datasets)

    def _draw(self, model, samples: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        sc, gen = self.run.scst, self.run.generate
        common = {"max_len": gen.max_len, "min_len": gen.min_len, "repetition_penalty": gen.repetition_penalty}
        was_training = model.training
        model.eval()
        # sharded (run.fsdp): generation steps differ per rank, so the full weights are held meanwhile
        try:
            with gathered(model):
                if sc.sample_method == "sample":
                    ids = model.generate_ids(samples, num_beams=1, use_nucleus_sampling=True,
                                             temperature=sc.temperature, top_p=sc.top_p, num_captions=sc.num_samples,
                                             **common)
                else:
                    ids = model.generate_ids(samples, num_beams=max(sc.num_samples, gen.num_beams),
                                             length_penalty=gen.length_penalty, num_captions=sc.num_samples, **common)
                greedy = model.generate_ids(samples, num_beams=1, **common) if sc.baseline == "greedy" else None
        finally:
            model.train(was_training)
        return ids, greedy

    def train_step(self, model, samples: dict) -> dict:
        core = getattr(model, "module", model)  # DDP wraps the model; sampling needs no gradient sync
        sc = self.run.scst
        ids, greedy = self._draw(core, samples)
        b, k = len(samples["video_id"]), sc.num_samples
        vids = [v for v in samples["video_id"] for _ in range(k)]
        rewards = torch.from_numpy(self.cider.score(core.decode_ids(ids), vids)).float().view(b, k)
        if greedy is not None:
            baseline = torch.from_numpy(self.cider.score(core.decode_ids(greedy), list(samples["video_id"])))
            baseline = baseline.float().view(b, 1).expand(b, k)
        elif sc.baseline == "mean":  # seed 003's: each sample's own reward is part of its baseline
            baseline = rewards.mean(1, keepdim=True).expand(b, k)
        else:
            baseline = leave_one_out_baseline(rewards)
        logp = model({**samples, "score_token_ids": ids})["logprobs"].view(b, k)
        if sc.length_normalize:
            logp = logp / core.sequence_mask(ids.to(logp.device)).sum(1).clamp(min=1).view(b, k)
        advantage = (rewards - baseline).to(logp.device)
        loss = -(advantage * logp).mean()
        return {"loss": loss, "reward": rewards.mean(), "baseline": baseline.mean(),
                "beat_baseline": (rewards > baseline).float().mean()}
