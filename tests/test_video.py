"""Decoding: real files in several containers and codecs, both backends, every sampling strategy,
and real broken files."""
import av
import numpy as np
import pytest
import torch

import vcap.processors.video_io as video
from vcap.processors.sampling import frame_indices, sample_indices
from vcap.processors.video_io import VideoDecodeError, decode_all, read_frames, sample_clip, write_video

GOP = 6  # short groups of pictures, so sparse sampling really seeks


def moving_clip(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Frames that all differ: a bright column walks across a textured background."""
    rng = np.random.default_rng(seed)
    frames = (rng.random((n, h, w, 3)) * 60).astype(np.uint8)
    for i in range(n):
        frames[i, :, (3 * i) % w] = 255
        frames[i, : h // 4, : w // 4] = (i * 5) % 256
    return frames


def reference_decode(path) -> np.ndarray:
    """An independent full decode with plain PyAV, turned upright by the display matrix."""
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            a = f.to_ndarray(format="rgb24")
            out.append(np.rot90(a, round((f.rotation or 0) / 90) % 4))
    return np.stack(out)


VFR_MS = np.concatenate([[0], np.cumsum(np.random.default_rng(1).integers(20, 200, 39))]).tolist()
FILES = {  # name: (file name, write_video keyword arguments)
    "h264_mp4": ("h264.mp4", {}),
    "mpeg4_avi": ("mpeg4.avi", {"codec": "mpeg4"}),
    "vp9_webm": ("vp9.webm", {"codec": "libvpx-vp9"}),
    "h264_mkv": ("h264.mkv", {}),
    "rotated": ("rotated.mp4", {"rotation": 90}),
    "vfr": ("vfr.mp4", {"pts_ms": VFR_MS}),
    "odd_size": ("odd.mp4", {"pix_fmt": "yuv444p", "size": (33, 63)}),
    "one_frame": ("one.mp4", {"n": 1}),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    out = {}
    for name, (fname, kw) in FILES.items():
        kw = dict(kw)
        h, w = kw.pop("size", (48, 64))
        write_video(root / fname, moving_clip(kw.pop("n", 40), h, w), 10, gop=GOP, **kw)
        out[name] = root / fname
    return out


def _hwc(clip: torch.Tensor) -> np.ndarray:
    return clip.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", list(FILES))
@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_uniform_sampling_returns_exactly_the_full_decode_frames(videos, name, backend):
    if backend == "decord":
        pytest.importorskip("decord")
    full = reference_decode(videos[name])
    for t in (4, 8):
        clip, mask = read_frames(videos[name], t, "uniform", backend=backend, return_mask=True)
        assert clip.dtype == torch.uint8 and clip.shape[:2] == (t, 3)
        idx, expected_mask = frame_indices(np.arange(len(full), dtype=float), t)
        assert np.array_equal(_hwc(clip), full[idx]), f"{name} {backend} {t} frames"
        assert mask.tolist() == expected_mask
    if name == "rotated":
        assert clip.shape[2:] == (64, 48)  # upright: the display matrix turns 64x48 by 90 degrees


def test_seeking_is_used_and_decord_really_decodes(videos, monkeypatch):
    pytest.importorskip("decord")

    def no(*args, **kwargs):
        raise AssertionError("this path must not run")

    full = reference_decode(videos["h264_mp4"])
    with monkeypatch.context() as m:  # seeking alone gives the frames (no sequential fallback)
        m.setattr(video, "_decode_sequential", no)
        for name in ("h264_mp4", "mpeg4_avi", "vp9_webm", "h264_mkv", "vfr"):
            read_frames(videos[name], 4, "uniform")
        clip = read_frames(videos["h264_mp4"], 5, "rand", seed=3)
    assert np.array_equal(_hwc(clip), full[frame_indices(np.arange(40.0), 5, "rand", seed=3)[0]])
    with monkeypatch.context() as m:  # decord alone gives them (no PyAV fallback)
        m.setattr(video, "_read_pyav", no)
        assert np.array_equal(_hwc(read_frames(videos["h264_mp4"], 5, "rand", seed=3, backend="decord")),
                              _hwc(clip))


def test_sequential_fallback_gives_the_same_frames(videos):
    for name in ("h264_mp4", "vfr", "rotated"):
        assert torch.equal(read_frames(videos[name], 6, "rand", seed=2, seek=False),
                           read_frames(videos[name], 6, "rand", seed=2))


def test_random_strategies_are_seeded_and_stay_in_their_ranges():
    a = sample_indices(16, 4, "rand", seed=5)
    assert a == sample_indices(16, 4, "rand", seed=5)
    assert all(4 * i <= j < 4 * (i + 1) for i, j in enumerate(a))
    assert len({tuple(sample_indices(16, 4, "rand", seed=s)) for s in range(20)}) > 1
    h = sample_indices(20, 6, "headtail", seed=1)
    assert h == sample_indices(20, 6, "headtail", seed=1) and h == sorted(h) and len(set(h)) == 6
    assert all(i < 10 for i in h[:3]) and all(i >= 10 for i in h[3:])
    assert sample_indices(16, 4, "uniform") == [2, 6, 10, 14]
    with pytest.raises(ValueError, match="sampling must be one of"):
        sample_indices(16, 4, "middle")


def test_short_clips_repeat_their_last_frame_with_a_mask():
    idx, mask = frame_indices(np.arange(3) / 10, 5, "rand", seed=0)
    assert idx == [0, 1, 2, 2, 2] and mask == [True, True, True, False, False]


def test_fps_sampling_and_segments():
    ts = np.arange(300) / 30.0  # 10 s at 30 fps
    idx, mask = frame_indices(ts, 20, "fps", sample_fps=1.0)
    assert idx[:10] == list(range(0, 300, 30)) and mask == [True] * 10 + [False] * 10
    assert frame_indices(ts, 4, "fps", fps_slice="head")[0] == [0, 30, 60, 90]
    assert frame_indices(ts, 4, "fps", fps_slice="tail")[0] == [180, 210, 240, 270]
    assert frame_indices(ts, 4, "fps", fps_slice="uniform")[0] == [0, 90, 180, 270]
    assert frame_indices(ts, 4, "fps", sample_fps=2.0, start=2.0, end=4.0, fps_slice="head")[0] == [60, 75, 90, 105]
    idx, _ = frame_indices(ts, 4, "uniform", start=2.0, end=4.0)
    assert all(60 <= i <= 120 for i in idx)
    with pytest.raises(ValueError, match="no frame between start=20.0 and end=30.0"):
        frame_indices(ts, 4, start=20.0, end=30.0)


def test_fps_sampling_on_a_variable_frame_rate_file_matches_decord(videos):
    pytest.importorskip("decord")
    a = read_frames(videos["vfr"], 4, "fps", sample_fps=2.0, start=0.5, end=3.5)
    b = read_frames(videos["vfr"], 4, "fps", sample_fps=2.0, start=0.5, end=3.5, backend="decord")
    assert torch.equal(a, b)
    ts = np.array(VFR_MS) / 1000
    idx, _ = frame_indices(ts, 4, "fps", sample_fps=2.0, start=0.5, end=3.5)
    assert np.array_equal(_hwc(a), reference_decode(videos["vfr"])[idx])


def test_decoded_cache_samples_the_same_frames_as_reading(videos):
    decoded = decode_all(videos["vfr"])
    for kw in ({"sampling": "uniform"}, {"sampling": "rand", "seed": 4}, {"sampling": "fps", "start": 1.0}):
        assert torch.equal(sample_clip(decoded, 6, **kw), read_frames(videos["vfr"], 6, **kw))


def test_large_frames_are_downscaled_while_decoding(tmp_path):
    path = tmp_path / "big.mp4"
    write_video(path, moving_clip(6, 360, 640), 10)
    clip = read_frames(path, 2, short_side=64)
    assert clip.shape == (2, 3, 64, 114)


def test_an_image_is_a_one_frame_video(tmp_path):
    from PIL import Image

    array = moving_clip(1, 24, 40)[0]
    Image.fromarray(array).save(tmp_path / "x.png")
    image = torch.from_numpy(array).permute(2, 0, 1)
    clip, mask = read_frames(tmp_path / "x.png", 3, return_mask=True)
    assert torch.equal(clip[0], image) and torch.equal(clip[2], image) and mask.tolist() == [True, False, False]


def _audio_only(path):
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for _ in range(8):
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.mark.parametrize("backend", ["pyav", "decord"])
def test_broken_files_raise_decode_errors_naming_file_and_reason(tmp_path, videos, backend):
    if backend == "decord":
        pytest.importorskip("decord")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    truncated = tmp_path / "truncated.mp4"  # PyAV writes the index (moov) last: half a file has none
    data = videos["h264_mp4"].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    audio = tmp_path / "audio.m4a"
    _audio_only(audio)
    cases = [(empty, "0 bytes"), (text, "Error"), (truncated, "Error"), (audio, "no video stream"),
             (tmp_path / "missing.mp4", "does not exist")]
    for path, reason in cases:
        with pytest.raises(VideoDecodeError) as e:
            read_frames(path, 4, backend=backend)
        assert e.value.path == str(path) and reason in e.value.reason, (path, e.value.reason)
    with pytest.raises(VideoDecodeError, match="no frame between start=100"):
        read_frames(videos["h264_mp4"], 4, start=100, end=110, backend=backend)


def test_bytes_in_memory_decode_like_their_file(videos, tmp_path):
    """Shard samples are decoded from io.BytesIO (no temporary file): the same frames as the file, seeking and
    the sequential fallback included; an image by its name's extension; an empty sample is a decode error."""
    from PIL import Image

    from vcap.processors.video_io import VideoBytes

    for name in ("h264_mp4", "vfr", "rotated"):
        sample = VideoBytes(f"shard::{videos[name].name}", videos[name].read_bytes())
        for seek in (True, False):
            assert torch.equal(read_frames(sample, 6, "rand", seed=2, seek=seek),
                               read_frames(videos[name], 6, "rand", seed=2))
    Image.fromarray(moving_clip(1, 24, 40)[0]).save(tmp_path / "x.png")
    image = VideoBytes("shard::x.png", (tmp_path / "x.png").read_bytes())
    assert torch.equal(read_frames(image, 2), read_frames(tmp_path / "x.png", 2))
    with pytest.raises(VideoDecodeError, match=r"'shard::empty.mp4': the sample is empty"):
        read_frames(VideoBytes("shard::empty.mp4", b""), 4)
