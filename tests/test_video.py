"""marlin.video: probing, streaming decode, rotation, VFR -> CFR, still images, errors."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction
from types import SimpleNamespace

import av
import numpy as np
import pytest
from media import face_photo, moving_face_frames, place, speech_like, write_video
from PIL import Image

from marlin.video import VideoError, _rotation, iter_frames, probe, read_frames

SIZE = (96, 128)  # h, w: small clips keep the suite fast


def level_frames(n: int, size=SIZE) -> list[np.ndarray]:
    """Solid frames with grey level 20 + 20 * k, so the frame index can be read back."""
    return [np.full(size + (3,), 20 + 20 * k, np.uint8) for k in range(n)]


def level_of(image: np.ndarray) -> int:
    return int(round((float(image.mean()) - 20) / 20))


def write_raw(path, frames, times_ms, codec="libx264", rotation=None):
    """Write frames with explicit presentation times (ms) and optional display rotation."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=25)
        vs.height, vs.width = frames[0].shape[:2]
        vs.pix_fmt = "yuv420p"
        vs.time_base = Fraction(1, 1000)
        vs.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            vs.set_display_rotation(rotation)
        for img, t in zip(frames, times_ms):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for packet in vs.encode(frame):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("suffix,codec,tol", [(".mp4", "libx264", 7), (".mov", "libx264", 7),
                                              (".mkv", "libx264", 7), (".webm", "libvpx-vp9", 9),
                                              (".avi", "mpeg4", 12)])
def test_formats_probe_and_decode(tmp_path, suffix, codec, tol):
    frames = moving_face_frames(7, SIZE)
    path = write_video(tmp_path / f"clip{suffix}", frames, fps=25, codec=codec)
    info = probe(path)
    assert info.fps == Fraction(25)
    assert (info.width, info.height) == (SIZE[1], SIZE[0]) == info.size
    assert info.n_frames == 7  # mkv/webm do not store it: counted from packets
    assert info.duration == pytest.approx(7 / 25, abs=0.011)
    assert info.rotation == 0 and not info.has_audio and not info.is_image
    got = list(iter_frames(path))
    assert [f.index for f in got] == list(range(7))
    assert [f.time for f in got] == pytest.approx([k / 25 for k in range(7)], abs=1e-3)
    for f, ref in zip(got, frames):
        assert f.image.dtype == np.uint8 and f.image.shape == SIZE + (3,)
        assert np.abs(f.image.astype(float) - ref).mean() < tol  # lossy codec, same picture


def test_audio_is_reported(tmp_path):
    path = write_video(tmp_path / "talk.mp4", moving_face_frames(5, SIZE), fps=25,
                       audio=speech_like(0.2))
    assert probe(path).has_audio
    assert len(read_frames(path)) == 5


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_reads_upright(tmp_path, rotation):
    upright = place(face_photo("astronaut"), (120, 96), (48, 60), 0.2)  # portrait (h=120, w=96)
    stored = np.ascontiguousarray(np.rot90(upright, k=-rotation // 90))  # what a phone sensor stores
    path = write_raw(tmp_path / "phone.mp4", [stored] * 3, [0, 40, 80], rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation
    assert (info.height, info.width) == upright.shape[:2]
    frame = next(iter_frames(path)).image
    assert frame.shape == upright.shape
    err = np.abs(frame.astype(float) - upright).mean()
    flipped = np.abs(frame.astype(float) - upright[::-1, ::-1]).mean()  # upside down
    assert err < 8 and err < flipped / 3, (err, flipped)


@pytest.mark.parametrize("size", [SIZE, (90, 128)])  # 90: a height whose colour planes end mid-row
def test_stored_planes_are_kept_only_when_asked_and_shown_as_stored(tmp_path, size):
    """``keep_planes`` gives each frame's 4:2:0 planes, which decode to exactly the RGB image
    given beside them (turned upright with it); not without the flag, not for a still image."""
    path = write_video(tmp_path / "plain.mp4", moving_face_frames(4, size), fps=25)
    frames = list(iter_frames(path, fps=25, keep_planes=True))
    assert len(frames) == 4
    for f in frames:
        assert f.planes is not None and f.planes.matrix == "bt601"
        assert f.planes.data.shape == (size[0] * 3 // 2, size[1]) and f.planes.data.dtype == np.uint8
        assert f.planes.u.shape == f.planes.v.shape == (size[0] // 2, size[1] // 2)
        again = av.VideoFrame.from_ndarray(f.planes.data, format="yuv420p").to_ndarray(format="rgb24")
        assert np.array_equal(again, f.image)
    assert all(f.planes is None for f in iter_frames(path))
    upright = place(face_photo("astronaut"), (120, 96), (48, 60), 0.2)
    stored = np.ascontiguousarray(np.rot90(upright))
    turned = write_raw(tmp_path / "phone.mp4", [stored] * 2, [0, 40], rotation=90)
    for f in iter_frames(turned, keep_planes=True):
        assert f.image.shape == upright.shape and f.planes.size == (96, 120)
        again = av.VideoFrame.from_ndarray(f.planes.data, format="yuv420p").to_ndarray(format="rgb24")
        assert np.array_equal(again, f.image)
    still = tmp_path / "still.png"
    Image.fromarray(upright).save(still)
    assert next(iter_frames(still, keep_planes=True)).planes is None


def test_legacy_rotate_tag_is_clockwise():
    assert _rotation(SimpleNamespace(metadata={"rotate": "90"}), None) == 270
    assert _rotation(SimpleNamespace(metadata={"rotate": "180"}), None) == 180
    assert _rotation(SimpleNamespace(metadata={}), SimpleNamespace(rotation=-90)) == 270


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_variable_frame_rate_resampled_to_cfr(tmp_path, suffix):
    times = [0, 40, 120, 130, 200, 330, 340, 400]  # ms, irregular
    path = write_raw(tmp_path / f"vfr{suffix}", level_frames(len(times)), times)
    native = list(iter_frames(path))
    assert [f.time for f in native] == pytest.approx([t / 1000 for t in times], abs=1e-3)
    assert [level_of(f.image) for f in native] == list(range(len(times)))
    cfr = list(iter_frames(path, fps=25))
    # at t = k / 25 the frame on display is the last one with pts <= t; the last shows until 0.44 s
    expect = [max(i for i, t in enumerate(times) if t <= 40 * k) for k in range(11)]
    assert [level_of(f.image) for f in cfr] == expect
    assert [f.time for f in cfr] == pytest.approx([k / 25 for k in range(11)])
    assert [f.index for f in cfr] == list(range(11))
    assert probe(path).n_frames == len(times)


def test_cfr_resampling_of_constant_rate_input(tmp_path):
    path = write_video(tmp_path / "c.mkv", level_frames(6), fps=25)
    assert [level_of(f.image) for f in iter_frames(path, fps=25)] == list(range(6))
    assert [level_of(f.image) for f in iter_frames(path, fps=50)] == [k // 2 for k in range(12)]
    assert [level_of(f.image) for f in iter_frames(path, fps=12.5)] == [0, 2, 4]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_still_image_is_one_frame_video(tmp_path, suffix):
    img = face_photo("grace_hopper")
    path = tmp_path / f"still{suffix}"
    Image.fromarray(img).save(path)
    info = probe(path)
    assert info.is_image and info.n_frames == 1 and info.fps == Fraction(25)
    assert (info.height, info.width) == img.shape[:2]
    for fps in (None, 25):
        frames = list(iter_frames(path, fps=fps))
        assert len(frames) == 1 and frames[0].index == 0
        assert np.abs(frames[0].image.astype(float) - img).mean() < (0.01 if suffix == ".png" else 4)


def test_streaming_keeps_memory_constant(tmp_path):
    n = 60
    path = write_video(tmp_path / "long.mp4", moving_face_frames(n, SIZE), fps=25)
    frame_bytes = SIZE[0] * SIZE[1] * 3
    tracemalloc.start()
    try:
        count = 0
        for frame in iter_frames(path, fps=30):
            count += 1
            del frame
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 72
    assert peak < 12 * frame_bytes  # a whole-clip buffer would need 60+ frames


def test_errors_name_path_and_reason(tmp_path):
    with pytest.raises(VideoError, match="no such file") as e:
        probe(tmp_path / "missing.mp4")
    assert str(tmp_path / "missing.mp4") in str(e.value) and isinstance(e.value, ValueError)
    with pytest.raises(VideoError, match="directory"):
        probe(tmp_path)
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video")
    with pytest.raises(VideoError, match="not a readable video") as e:
        list(iter_frames(bogus))
    assert e.value.path == str(bogus)
    wav = tmp_path / "voice.wav"
    with av.open(str(wav), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=16000)
        stream.layout = "mono"
        pcm = (speech_like(0.1) * 20000).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(VideoError, match="no video stream"):
        probe(wav)
    bad_image = tmp_path / "broken.png"
    bad_image.write_bytes(b"\x89PNG garbage")
    with pytest.raises(VideoError, match="not a readable image"):
        probe(bad_image)
    with pytest.raises(VideoError, match="fps must be positive"):
        list(iter_frames(write_video(tmp_path / "ok.mp4", level_frames(2), fps=25), fps=0))
