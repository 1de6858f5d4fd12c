"""Every project that claims one of seed 003's recipes carries that recipe's numbers. The table below was written
from the seed's yaml files (chunhuizng/mllm-video-captioner @ e69ce92, lavis/projects/blip2/{train,eval}/*.yaml,
read with the search tool's fetch), under the seed's own key names; ``translate`` says where each lives in vcap."""
import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from vcap.project import build_config

# lavis/projects/blip2/train/caption_msrvtt_flant5xl_ft.yaml, lines as written (model / datasets / run)
FLANT5_LORA = {"arch": "blip2_t5", "prompt": "a video of", "num_query_token": 32, "freeze_vit": True, "lora": True,
               "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05}
OPT = {"arch": "blip2_opt", "prompt": "", "num_query_token": 32, "freeze_vit": True}
SEED = {
    "msrvtt_ft.yaml": ("train/caption_msrvtt_flant5xl_ft.yaml", FLANT5_LORA, {
        "msrvtt_caption": (8, 8), "webvid_caption": (8, None)}, {
        "train_dataset_ratios": {"msrvtt_caption": 1, "webvid_caption": 7}, "runner": "runner_iter",
        "max_iters": 15000, "iters_per_inner_epoch": 500, "task": "captioning", "lr_sched": "linear_warmup_cosine_lr",
        "init_lr": 5e-5, "min_lr": 1e-5, "warmup_lr": 1e-8, "warmup_steps": 1000, "weight_decay": 0.05, "max_epoch": 20,
        "batch_size_train": 64, "batch_size_eval": 32, "num_workers": 4, "accum_grad_iters": 1, "max_len": 32,
        "min_len": 5, "num_beams": 5, "seed": 42}),
    "msrvtt_scst.yaml": ("train/caption_msrvtt_flant5xl_scst.yaml", {**FLANT5_LORA, "scst": True}, {
        "msrvtt_caption": (16, 16)}, {
        "runner": "runner_iter", "max_iters": 20000, "iters_per_inner_epoch": 1000, "task": "captioning",
        "lr_sched": "linear_warmup_cosine_lr", "init_lr": 1e-5, "min_lr": 1e-6, "warmup_lr": 1e-8, "warmup_steps": 1000,
        "weight_decay": 0.05, "max_epoch": 10, "batch_size_train": 2, "batch_size_eval": 2, "num_workers": 4,
        "accum_grad_iters": 1, "max_len": 32, "min_len": 5, "num_beams": 5, "seed": 42}),
    "msrvtt_ft_opt2.7b.yaml": ("train/caption_msrvtt_opt2.7b_ft.yaml", OPT, {"msrvtt_caption": (8, 8)}, {
        "task": "captioning", "lr_sched": "linear_warmup_cosine_lr", "init_lr": 1e-6, "min_lr": 0, "warmup_lr": 1e-8,
        "warmup_steps": 1000, "weight_decay": 0.05, "max_epoch": 30, "batch_size_train": 64, "batch_size_eval": 32,
        "num_workers": 4, "accum_grad_iters": 1, "max_len": 32, "min_len": 5, "num_beams": 5, "seed": 42}),
    "msrvtt_scst_opt2.7b.yaml": ("train/caption_msrvtt_opt2.7b_scst.yaml", {**OPT, "scst": True},
                                 {"msrvtt_caption": (4, 4)}, {
        "task": "captioning", "lr_sched": "linear_warmup_cosine_lr", "init_lr": 1e-6, "min_lr": 0, "warmup_lr": 1e-8,
        "warmup_steps": 1000, "weight_decay": 0.05, "max_epoch": 20, "batch_size_train": 16, "batch_size_eval": 16,
        "num_workers": 4, "accum_grad_iters": 1, "max_len": 32, "min_len": 5, "num_beams": 5, "seed": 42}),
    "msvd_ft.yaml": ("train/caption_msvd_flant5xl_ft.yaml", FLANT5_LORA, {"msvd_caption": (16, 16)}, {
        "runner": "runner_iter", "max_iters": 15000, "iters_per_inner_epoch": 1000, "task": "captioning",
        "lr_sched": "linear_warmup_cosine_lr", "init_lr": 5e-5, "min_lr": 1e-5, "warmup_lr": 1e-8, "warmup_steps": 1000,
        "weight_decay": 0.05, "max_epoch": 50, "batch_size_train": 64, "batch_size_eval": 32, "num_workers": 4,
        "accum_grad_iters": 1, "max_len": 32, "min_len": 5, "num_beams": 5, "seed": 42}),
    "msvd_scst.yaml": ("train/caption_msvd_flant5xl_scst.yaml", {**FLANT5_LORA, "scst": True}, {
        "msvd_caption": (16, 16)}, {
        "runner": "runner_iter", "max_iters": 15000, "iters_per_inner_epoch": 1000, "task": "captioning",
        "lr_sched": "linear_warmup_cosine_lr", "init_lr": 1e-6, "min_lr": 1e-7, "warmup_lr": 1e-8, "warmup_steps": 1000,
        "weight_decay": 0.05, "max_epoch": 50, "batch_size_train": 2, "batch_size_eval": 2, "num_workers": 4,
        "accum_grad_iters": 1, "max_len": 32, "min_len": 5, "num_beams": 5, "seed": 42}),
    "vatex_ft.yaml": ("train/caption_vatex_flant5xl_ft.yaml", FLANT5_LORA, {"vatex_caption": (8, 8)}, {
        "task": "captioning", "lr_sched": "linear_warmup_cosine_lr", "init_lr": 5e-5, "min_lr": 1e-5, "warmup_lr": 1e-8,
        "warmup_steps": 1000, "weight_decay": 0.05, "max_epoch": 20, "batch_size_train": 64, "batch_size_eval": 32,
        "num_workers": 4, "accum_grad_iters": 1, "max_len": 32, "min_len": 5, "num_beams": 5, "seed": 42}),
    "msrvtt_eval.yaml": ("eval/caption_msrvtt_flant5xl_eval.yaml", FLANT5_LORA, {"msrvtt_caption": (None, 16)}, {
        "task": "captioning", "batch_size_eval": 32, "num_workers": 4, "max_len": 32, "min_len": 5, "num_beams": 5,
        "seed": 42, "test_splits": ["test"]}),
    "msvd_eval.yaml": ("eval/caption_msvd_flant5xl_eval.yaml", FLANT5_LORA, {"msvd_caption": (None, 16)}, {
        "task": "captioning", "batch_size_eval": 32, "num_workers": 4, "max_len": 32, "min_len": 5, "num_beams": 5,
        "seed": 42, "test_splits": ["test"]}),
    "msrvtt_eval_opt2.7b.yaml": ("eval/caption_msrvtt_opt2.7b_eval.yaml", OPT, {"msrvtt_caption": (None, 8)}, {
        "task": "captioning", "batch_size_eval": 32, "num_workers": 4, "max_len": 32, "min_len": 5, "num_beams": 5,
        "seed": 42, "test_splits": ["val"]}),
}
RUN_MOVED = {"max_len": "generate.max_len", "min_len": "generate.min_len", "num_beams": "generate.num_beams"}


def lookup(section, dotted: str):
    for part in dotted.split("."):
        section = section[part]
    return OmegaConf.to_container(section) if isinstance(section, (DictConfig, ListConfig)) else section


def same(ours, theirs) -> bool:
    if isinstance(theirs, (int, float)) and not isinstance(theirs, bool):
        return isinstance(ours, (int, float)) and ours == pytest.approx(theirs)
    return ours == theirs


def translate(model: dict, datasets: dict, run: dict) -> dict:
    """The seed's keys -> vcap's (``{vcap key: value}``): LAVIS's run-level max_len / min_len / num_beams live in
    run.generate, num_query_token is num_query_tokens, the lora flags one mapping, scst the task."""
    out = {"model.arch": model["arch"], "model.prompt": model["prompt"], "model.freeze_vit": model["freeze_vit"],
           "model.num_query_tokens": model["num_query_token"], "model.conventions": "seed003"}
    out["model.lora"] = ({"r": model["lora_r"], "alpha": model["lora_alpha"], "dropout": model["lora_dropout"],
                          "target_modules": ["q", "v"]} if model.get("lora") else None)  # blip2_t5.py: ['q', 'v']
    for name, (train_frames, eval_frames) in datasets.items():
        for split, frames in (("train", train_frames), ("eval", eval_frames)):
            if frames is not None:
                proc = f"datasets.{name}.vis_processor.{split}"
                out.update({f"{proc}.name": f"alpro_video_{split}", f"{proc}.n_frms": frames,
                            f"{proc}.image_size": 224, f"datasets.{name}.text_processor.{split}.name": "blip_caption"})
    for key, value in run.items():
        if key == "task":
            value = "captioning_scst" if model.get("scst") else value
        out[f"run.{RUN_MOVED.get(key, key)}"] = value
    return out


@pytest.mark.parametrize("project", sorted(SEED))
def test_seed_project_carries_the_seeds_numbers(project):
    source, model, datasets, run = SEED[project]
    path = f"projects/{project}"
    header = open(path).read().split("\nmodel:")[0]
    assert source.split("/")[-1] in header and "e69ce92" in header  # the header names the yaml and the commit
    cfg = build_config(path)
    wrong = {key: (lookup(cfg, key), want) for key, want in translate(model, datasets, run).items()
             if not same(lookup(cfg, key), want)}
    assert not wrong, f"{project} differs from {source}: {wrong} (vcap's value, the seed's)"
    # what seed 003's fork does in code rather than yaml: no RandAugment, length-normalised SCST with the mean baseline
    for name in datasets:
        train = cfg.datasets[name].vis_processor.get("train")
        if train is not None and train.name == "alpro_video_train":
            assert train.randaugment is False
    if model.get("scst"):
        assert cfg.run.scst.length_normalize and cfg.run.scst.sample_method == "beam" and cfg.run.scst.baseline == "mean"
        assert cfg.run.scst.num_samples == 5  # Blip2T5 / Blip2OPT beam_size=5
