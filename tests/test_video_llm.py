"""video_llm against transformers' own Qwen2.5-VL and LLaVA-OneVision: per family a tiny model from its tiny
card's config, saved with save_pretrained beside a processor with the family's real special tokens, chat template
and patching (tokenizer_fixtures), loaded back by path as a hub checkpoint is."""
import os

import pytest
import torch
from omegaconf import OmegaConf

from vcap.project import build_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CAPTIONS = ["a small red circle moves left", "a big blue square moves up on a gray background"]


FAMILIES = {  # family: (tiny card, processor saver, its prompt, video placeholders for 4 frames, projector prefixes)
    "qwen2_5_vl": ("tiny_qwen2_5_vl", "save_qwen2_5_vl_processor",
                   "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
                   "<|video_pad|><|vision_end|>Describe this video in one sentence.<|im_end|>\n<|im_start|>assistant\n",
                   8, ("model.model.visual.merger.",)),  # 2 temporal patches x 2 x 2 merged
    "llava_onevision": ("tiny_llava_onevision", "save_llava_onevision_processor",
                        "<|im_start|>user <video>\nDescribe this video in one sentence.<|im_end|><|im_start|>assistant\n",
                        5, ("model.model.multi_modal_projector.", "model.model.image_newline")),  # 1 per frame + newline
    "instructblip_video": ("tiny_instructblip_video", "save_instructblip_video_processor",
                           "Describe this video in one sentence.",  # an instruction, no chat template
                           16, ("model.qformer.", "model.query_tokens", "model.language_projection.")),  # 4 x 4 queries
}


_BUILT: dict = {}


def family_dir(family: str, tmp_path_factory) -> str:
    """A checkpoint directory of ``family`` (built once per session): weights from the family's tiny card config,
    saved with save_pretrained beside its processor."""
    if family not in _BUILT:
        import tokenizer_fixtures

        from vcap.models.video_llm.video_llm import VideoLLMCaptioner

        card_name, saver = FAMILIES[family][:2]
        path = getattr(tokenizer_fixtures, saver)(tmp_path_factory.mktemp(family))
        card = OmegaConf.to_container(OmegaConf.load(f"vcap/configs/models/video_llm/{card_name}.yaml"))["model"]
        torch.manual_seed(0)
        model = VideoLLMCaptioner(family=family, processor=str(path), config=card["config"]).model  # vocab completed
        for p in model.parameters():  # a sharper random model, so that greedy decoding is not one token repeated
            p.data.normal_(0, 0.3) if p.ndim > 1 else None
        model.save_pretrained(path)
        _BUILT[family] = str(path)
    return _BUILT[family]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def vlm(request, tmp_path_factory):
    """(family, checkpoint directory)."""
    return request.param, family_dir(request.param, tmp_path_factory)


def video(b=2, t=4, size=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, generator=g)


def captioner(vlm, **kw):
    from vcap.models.video_llm.video_llm import VideoLLMCaptioner

    return VideoLLMCaptioner(family=vlm[0], pretrained=vlm[1], frozen_dtype="fp32", **kw)


def test_prompt_is_the_familys_chat_turn_and_the_loss_is_transformers_own(vlm):
    """vcap's loss equals the transformers model's own (labels on the caption and <|im_end|>), on the family
    processor's tokenization of the whole turn as one string."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    family, vlm_dir = vlm
    model = captioner(vlm).eval()
    assert model.prompt_text == FAMILIES[family][2]
    # the end of the assistant's turn (Qwen2's <|im_end|>), or LLaMA's </s> (InstructBLIP)
    assert model.end_token_id == {"instructblip_video": 2}.get(family, 151645)
    clips = video()
    with torch.no_grad():
        ours = model({"video": clips, "text_input": CAPTIONS})["loss"].item()
    proc = AutoProcessor.from_pretrained(vlm_dir)
    ref = AutoModelForImageTextToText.from_pretrained(vlm_dir).eval()
    video_id = getattr(ref.config, "video_token_id", None) or ref.config.video_token_index
    losses, counts = [], []
    for clip, caption in zip(clips, CAPTIONS):
        video_kw = {"images" if family == "instructblip_video" else "videos": [clip]}
        prompt = proc(text=[model.prompt_text], **video_kw, return_tensors="pt")
        sep = " " if family == "instructblip_video" else ""  # LAVIS joins instruction and caption with a space
        full = proc(text=[model.prompt_text + sep + caption + proc.tokenizer.eos_token], **video_kw, return_tensors="pt")
        if "qformer_input_ids" in prompt:  # InstructBLIP's Q-Former reads the instruction only (LAVIS's text_input)
            full["qformer_input_ids"], full["qformer_attention_mask"] = prompt["qformer_input_ids"], prompt["qformer_attention_mask"]
        n = prompt["input_ids"].shape[1]
        assert torch.equal(full["input_ids"][0, :n], prompt["input_ids"][0])
        assert (full["input_ids"][0, :n] == video_id).sum() == FAMILIES[family][3]
        labels = full["input_ids"].clone()
        labels[:, :n] = -100
        assert labels[0, -1] == model.end_token_id  # the end of the caption (the assistant's turn) is a target
        with torch.no_grad():
            losses.append(ref(**full, labels=labels).loss.item())
        counts.append(int((labels != -100).sum()) - 0)
    # transformers averages per video; vcap over every target token of the batch: compare token-weighted
    expected = sum(l * c for l, c in zip(losses, counts)) / sum(counts)
    print(f"vcap {ours:.7f} transformers {expected:.7f}")
    assert abs(ours - expected) < 1e-5, (ours, expected)


def test_generation_is_transformers_own(vlm):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    vlm_dir = vlm[1]
    model = captioner(vlm).eval()
    clips = video(b=1, seed=3)
    ours = model.generate_ids({"video": clips}, num_beams=1, max_len=8, min_len=8)
    proc = AutoProcessor.from_pretrained(vlm_dir)
    ref = AutoModelForImageTextToText.from_pretrained(vlm_dir).eval()
    kw = {"images" if vlm[0] == "instructblip_video" else "videos": [clips[0]]}
    inputs = proc(text=[model.prompt_text], **kw, return_tensors="pt")
    theirs = ref.generate(**inputs, do_sample=False, max_new_tokens=8, min_new_tokens=8)[:, inputs["input_ids"].shape[1]:]
    assert torch.equal(ours, theirs) and len(set(ours[0].tolist())) > 1
    beams = model.generate_ids({"video": clips}, num_beams=3, max_len=6, num_captions=2)
    assert beams.shape[0] == 2 and model.decode_ids(beams)[0] == model.tokenizer.decode(
        [t for t in beams[0].tolist() if t not in (model.end_token_id, model.tokenizer.pad_token_id)])


def test_lora_trains_its_adapters_and_the_projector_and_nothing_frozen(vlm):
    model = captioner(vlm, lora={"r": 2}, freeze_llm=True).train()
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.1)  # peft starts B at zero, which gives A no gradient at the first step
    model({"video": video(), "text_input": CAPTIONS})["loss"].backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lora = {n for n in trainable if "lora_" in n}
    from vcap.models.video_llm.video_llm import FAMILIES as SPECS

    assert lora and {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in lora} == set(SPECS[vlm[0]]["lora"])
    assert trainable - lora == {n for n, _ in model.named_parameters() if n.startswith(FAMILIES[vlm[0]][4])}
    for n, p in model.named_parameters():
        if n in lora:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        elif n in trainable:  # InstructBLIP's last Q-Former layer's text FFN feeds nothing: a zero gradient
            last = f"model.qformer.encoder.layer.{len(getattr(model.model, 'qformer', [None]).encoder.layer) - 1}." \
                if vlm[0] == "instructblip_video" else "-"
            assert p.grad is not None and (p.grad.abs().sum() > 0 or n.startswith((last + "intermediate.",
                                                                                   last + "output."))), n
        else:
            assert p.grad is None, n
    ids = model.generate_ids({"video": video(b=1)}, num_beams=1, use_nucleus_sampling=True, num_captions=3,
                             max_len=4)
    logp = model({"video": video(b=1), "text_input": [""], "score_token_ids": ids})["logprobs"]
    assert logp.shape == (3,) and logp.requires_grad


def test_activation_checkpointing_recomputes_the_llm_layers_to_the_same_gradients(vlm):
    """grad_checkpointing on a LoRA model: each LLM layer runs forward again in backward, and the loss and
    the adapters' gradients stay what they were."""
    runs = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = captioner(vlm, lora={"r": 2, "dropout": 0.0}, freeze_llm=True, grad_checkpointing=ckpt).train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.data.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
        layer = next(m for m in model.model.modules() if type(m).__name__.endswith("DecoderLayer"))
        calls = []
        inner = next(m for m in layer.modules() if isinstance(m, torch.nn.Linear))  # the layer's own hooks stay outside
        inner.register_forward_pre_hook(lambda m, i: calls.append(1))
        loss = model({"video": video(), "text_input": CAPTIONS})["loss"]
        loss.backward()
        assert len(calls) == (2 if ckpt else 1)
        runs.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}))
    (loss_a, a), (loss_b, b) = runs
    assert loss_a == pytest.approx(loss_b, abs=1e-6) and a.keys() == b.keys()
    assert all(torch.allclose(a[n], b[n], atol=1e-5) for n in a)


def test_frames_reach_the_model_raw_and_checkpoints_hold_what_trains(vlm, tmp_path):
    vlm_dir = vlm[1]
    cfg = build_config(OmegaConf.create({
        "model": {"arch": "video_llm", "family": vlm[0], "pretrained": vlm_dir, "config": None, "lora": {"r": 2},
                  "freeze_llm": True},
        "datasets": {"synthetic_caption": {}}, "run": {"task": "captioning", "output_dir": "o"}}))
    assert cfg.datasets.synthetic_caption.vis_processor.train.normalize is False
    from vcap.common.checkpoint import read_metadata, save_weights
    from vcap.common.registry import registry

    model = registry.get_model_class("video_llm").from_config(cfg.model)
    save_weights(model, tmp_path / "w.safetensors", model.checkpoint_metadata())
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        saved = set(f.keys())
    assert saved == {n for n, p in model.named_parameters() if p.requires_grad}
    assert read_metadata(tmp_path / "w.safetensors")["pretrained"] == vlm_dir
    again = registry.get_model_class("video_llm").from_config({**cfg.model, "checkpoint": str(tmp_path / "w.safetensors")})
    assert all(torch.equal(p, again.state_dict()[n]) for n, p in model.state_dict().items())


def test_torchrun_trains_the_tiny_qwen_card_then_scst_on_top(tmp_path, tmp_path_factory):
    """2 gloo processes: cross-entropy on a few generated videos with model_type tiny_qwen2_5_vl (the tiny card's
    random weights, the processor directory of Qwen's conventions), sharded with run.fsdp over its decoder layers
    and vision blocks; then SCST from its checkpoint (DDP)."""
    import json

    from test_e2e import options, run, torchrun

    vlm_dir = family_dir("qwen2_5_vl", tmp_path_factory)  # the processor; the weights come from the tiny card
    ce, scst = tmp_path / "ce", tmp_path / "scst"
    common = [f"model.processor={vlm_dir}", "run.max_iters=3", "run.valid_splits=[]", "run.batch_size_train=4",
              "run.batch_size_eval=8", "run.generate.num_beams=1", "run.generate.max_len=6"]
    p = run(torchrun("train.py", "--cfg-path", "projects/demo/caption_synthetic_video_llm.yaml",
                     *options("synthetic_caption", ce, *common, "run.fsdp=true")), tmp_path, timeout=600)
    assert "FSDP: 4 layers sharded over 2 ranks" in p.stderr + p.stdout  # 2 decoder layers, 2 vision blocks
    run(torchrun("train.py", "--cfg-path", "projects/demo/caption_synthetic_video_llm_scst.yaml",
                 *options("synthetic_caption", scst, *common, "run.scst.num_samples=2",
                          f"model.checkpoint={ce / 'checkpoints' / 'last.safetensors'}")), tmp_path, timeout=600)
    for out in (ce, scst):
        metrics = json.loads((out / "metrics.json").read_text())
        assert isinstance(metrics["test"]["CIDEr"], float) and "attr_direction_sign" in metrics["test"]
    from vcap import load_model_and_preprocess

    model, vis, _ = load_model_and_preprocess(checkpoint=str(scst / "checkpoints"))  # a run's directory will do
    frames, mask = vis["eval"].load(next((tmp_path / "data").rglob("*.mp4")))
    clip, mask = vis["eval"](frames, mask=mask)
    assert clip.dtype == torch.uint8 and len(model.generate({"video": clip[None], "video_mask": mask[None]},
                                                            num_beams=1, max_len=4)) == 1
    steps = [json.loads(line) for line in (scst / "log.jsonl").read_text().splitlines()]
    rewards = [r for r in steps if "train/reward" in r]  # SCST drew captions, scored them with CIDEr-D, stepped
    assert rewards and all(0.0 <= r["train/reward"] and "train/baseline" in r for r in rewards), steps


@pytest.mark.parametrize("arch", ["video_llm", "blip2_opt"])
def test_a_broken_video_in_evaluation_is_left_out_and_counted(arch, tmp_path, tmp_path_factory):
    """evaluate.py on 3 good files and a text file named .mp4: exit 0, the metrics over the 3, num_bad_videos 1. The
    broken video's stand-in clip has the processor's dtype (uint8 for video_llm), so it batches with the others."""
    import json
    import subprocess
    import sys

    import numpy as np
    from test_e2e import REPO, env

    from vcap.processors.video_io import write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_video(videos / f"good{i}.mp4", rng.integers(0, 255, (8, 64, 64, 3), dtype=np.uint8))
    (videos / "broken.mp4").write_text("not a video")
    rows = [{"video": f"good{i}.mp4", "captions": [CAPTIONS[i % 2]]} for i in range(3)] + \
        [{"video": "broken.mp4", "captions": ["a broken video"]}]
    (tmp_path / "ann.json").write_text(json.dumps(rows))
    sizes = {"train": {"image_size": 56, "num_frames": 4}, "eval": {"image_size": 56, "num_frames": 4}}
    if arch == "video_llm":
        model = {"arch": "video_llm", "model_type": "tiny_qwen2_5_vl",
                 "processor": family_dir("qwen2_5_vl", tmp_path_factory)}
    else:
        model = {"arch": "blip2_opt", "model_type": "tiny"}
        sizes = {"train": {"image_size": 32, "num_frames": 4}, "eval": {"image_size": 32, "num_frames": 4}}
    project = {"model": model, "datasets": {"custom_caption": {
        "build_info": {"annotations": {"train": str(tmp_path / "ann.json"), "val": None,
                                       "test": str(tmp_path / "ann.json")}, "videos": str(videos)},
        "vis_processor": sizes}},
        "run": {"task": "captioning", "output_dir": str(tmp_path / "out"), "batch_size_eval": 4,
                "max_bad_sample_ratio": 0.5,  # 1 of 4: the default (1%) would stop the run, saying why
                "generate": {"num_beams": 1, "max_len": 4}}}
    OmegaConf.save(OmegaConf.create(project), tmp_path / "p.yaml")
    p = subprocess.run([sys.executable, "evaluate.py", "--cfg-path", str(tmp_path / "p.yaml")], cwd=REPO,
                       env=env(tmp_path), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "evaluate" / "metrics.json").read_text())
    assert metrics["test"]["num_bad_videos"] == 1 and metrics["test"]["num_videos"] == 3, metrics
