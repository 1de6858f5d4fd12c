"""X-CLIP + LSTM: SentencePiece trained by the task and restored from the checkpoint, state-carrying
decoding equal to re-running the whole prefix, gradients, X-CLIP weights from a transformers directory."""
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from transformers import XCLIPConfig, XCLIPModel

from vcap.common.checkpoint import read_metadata, save_weights
from vcap.common.registry import registry
from vcap.processors.tokenizer import SentencePieceTokenizer
from vcap.project import build_config

CAPTIONS = ["a small red circle moves left on a black background", "a big blue square moves up on a gray background",
            "a small green triangle moves right on a white background", "a big yellow star moves down"]


def config(tmp_path, **model):
    return build_config(OmegaConf.create({
        "model": {"arch": "xclip_lstm", "model_type": "tiny", **model}, "datasets": {"synthetic_caption": {}},
        "run": {"task": "captioning", "output_dir": str(tmp_path)}}))


class Captions:
    def captions(self):
        return CAPTIONS * 10


def build(tmp_path, **model):
    cfg = config(tmp_path, **model)
    torch.manual_seed(0)
    return registry.get_task_class("captioning").setup_task(cfg).build_model(cfg, {"d": {"train": Captions()}}), cfg


def samples():
    torch.manual_seed(1)
    return {"video": torch.randn(2, 4, 3, 32, 32), "text_input": CAPTIONS[:2]}


def test_sentencepiece_is_trained_from_captions_stored_in_checkpoint_and_reloaded(tmp_path):
    model, cfg = build(tmp_path / "a")
    tok = model.tokenizer
    assert isinstance(tok, SentencePieceTokenizer) and (tmp_path / "a" / "tokenizer.model").is_file()
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert all(tok.decode(tok.ids(c)) == c for c in CAPTIONS)
    assert tok.decode(tok.ids("a purple hexagon")) != ""  # unseen words still encode (pieces, unk)
    ckpt = tmp_path / "w.safetensors"
    save_weights(model, ckpt, model.checkpoint_metadata())
    assert "tokenizer.spm" in read_metadata(ckpt)
    # a new run that names the checkpoint restores this tokenizer (not one trained anew) and the weights
    again, _ = build(tmp_path / "b", checkpoint=str(ckpt))
    assert again.tokenizer.proto == tok.proto
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="no dataset has a train split"):
        cfg2 = config(tmp_path / "c")
        registry.get_task_class("captioning").setup_task(cfg2).build_model(cfg2, {})


def rerun_greedy(model, s, max_new):
    """The seed's decoding: re-run the LSTM over the whole prefix at every step."""
    visual = model.encode_video(s)
    seq = torch.full((visual.shape[0], 1), model.tokenizer.bos_token_id)
    for _ in range(max_new):
        lp = F.log_softmax(model.sequence_logits(visual, seq)[:, -1].float(), -1)
        lp[:, [model.tokenizer.pad_token_id, model.tokenizer.bos_token_id]] = -float("inf")
        seq = torch.cat([seq, lp.argmax(-1, keepdim=True)], 1)
    return seq[:, 1:]


def rerun_beam(model, s, k, max_new):
    """Beam search by re-running whole prefixes; finished captions scored by length, as generate_ids."""
    tok = model.tokenizer
    out = []
    for row in range(s["video"].shape[0]):
        visual = model.encode_video({"video": s["video"][row:row + 1]})
        beams, finished = [(0.0, [])], []
        for i in range(max_new):
            cand = []
            for score, seq in beams:
                inp = torch.tensor([[tok.bos_token_id] + seq])
                lp = F.log_softmax(model.sequence_logits(visual, inp)[0, -1].float(), -1)
                lp[[tok.pad_token_id, tok.bos_token_id]] = -float("inf")
                top = lp.topk(2 * k)
                cand += [(score + float(v), seq + [int(t)]) for v, t in zip(top.values, top.indices)]
            cand.sort(key=lambda x: -x[0])
            beams = []
            for score, seq in cand[:2 * k]:
                if seq[-1] == tok.eos_token_id:
                    finished.append((score / (i + 1), seq))
                elif len(beams) < k:
                    beams.append((score, seq))
            best_open = max(sc for sc, _ in beams) / (i + 1)
            if len(finished) >= k and min(sorted(x[0] for x in finished)[-k:]) >= best_open:
                break
        pool = finished + [(sc / len(seq), seq) for sc, seq in beams]
        out.append(max(pool, key=lambda x: x[0])[1])
    return out


def test_state_carrying_decoding_equals_rerunning_the_prefix(tmp_path):
    model, _ = build(tmp_path)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    s = samples()
    for _ in range(30):  # a little training so that captions end (EOS) at different lengths
        opt.zero_grad()
        model(s)["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        greedy = model.generate_ids(s, num_beams=1, max_len=12)
        ref = rerun_greedy(model, s, greedy.shape[1])
        eos = model.tokenizer.eos_token_id
        for row, want in zip(greedy.tolist(), ref.tolist()):
            n = row.index(eos) + 1 if eos in row else len(row)
            assert row[:n] == want[:n]
        assert any(eos in r for r in greedy.tolist())
        beams = model.generate_ids(s, num_beams=3, max_len=12)
        want = rerun_beam(model, s, 3, 12)
        for row, w in zip(beams.tolist(), want):
            assert row[:len(w)] == w


def test_gradients_reach_the_decoder_and_a_frozen_xclip_gets_none(tmp_path):
    model, _ = build(tmp_path, freeze_xclip=True)
    model.train()
    model(samples())["loss"].backward()
    for n, p in model.named_parameters():
        frozen = n.split(".")[0] in ("vision_model", "visual_projection", "mit")
        assert (p.grad is None) == frozen, n
    assert not model.vision_model.training  # frozen parts stay in eval mode
    with torch.no_grad():  # cached X-CLIP embeddings give the same loss as the video
        emb, _ = model.frame_features(samples())
        a = model(samples())["loss"]
        b = model({"clip_features": emb, "text_input": CAPTIONS[:2]})["loss"]
    model.eval()
    assert torch.isfinite(a) and b.shape == ()
    with torch.no_grad():
        assert torch.allclose(model(samples())["loss"], model({"clip_features": emb, "text_input": CAPTIONS[:2]})["loss"])
    with pytest.raises(ValueError, match="built for 4 frames"):
        model.frame_features({"video": torch.randn(1, 6, 3, 32, 32)})


def test_xclip_from_a_transformers_directory_gives_its_video_features(tmp_path):
    card = OmegaConf.to_container(config(tmp_path).model.xclip_config)
    torch.manual_seed(2)
    XCLIPModel(XCLIPConfig(**card)).save_pretrained(tmp_path / "xclip")
    model, _ = build(tmp_path / "run", pretrained=str(tmp_path / "xclip"), freeze_xclip=True)
    ref = XCLIPModel.from_pretrained(tmp_path / "xclip").eval()
    model.eval()
    s = samples()
    with torch.no_grad():
        assert torch.allclose(model.frame_features(s)[0][:, 0], ref.get_video_features(pixel_values=s["video"]).pooler_output,
                              atol=1e-5)
    # the frozen X-CLIP is named by the config and left out of checkpoints
    assert model.frozen_pretrained_keys() and all(k.startswith(("vision_model.", "visual_projection.", "mit."))
                                                  for k in model.frozen_pretrained_keys())
    bad = {**card, "vision_config": {**card["vision_config"], "mit_hidden_size": 32}}
    with pytest.raises(ValueError, match="mit_hidden_size"):
        build(tmp_path / "bad", xclip_config=bad)
