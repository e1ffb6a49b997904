"""End-to-end dubbing on short clips made from real face photos, plus the engine's pure parts.

The generator is a random-init tiny MARLIN-conditioned model saved with
``lipsync.checkpoints.save``: its faces are noise, which is what lets the tests see exactly
which pixels the engine touched.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from media import moving_face_frames, speech_like, write_video

from lipsync.inference.options import DubError, DubOptions, FaceSelect
from lipsync.inference.plan import output_frame_count, replay_runs, resolve_device, source_index
from marlin.video import iter_frames

N_FRAMES = 30  # 1.2 s at 25 fps
GAP = range(12, 20)  # blank frames: longer than the tracker bridges, so they must pass through
SIZE = (240, 320)
N_LONG = 38  # frames of the 1.5 s audio at 25 fps: 8 more than the video has


def _decode(path: Path) -> list[np.ndarray]:
    return [f.image for f in iter_frames(path)]


def _streams(path: Path) -> dict:
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        info = {"fps": Fraction(v.average_rate), "width": v.width, "height": v.height,
                "vcodec": v.codec_context.name, "acodec": a.codec_context.name,
                "audio_seconds": float(a.duration * a.time_base),  # the edit list's, priming excluded
                "frames": sum(1 for _ in c.decode(v))}
    return info


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("infer_media")
    frames = moving_face_frames(N_FRAMES, SIZE)
    for i in GAP:
        frames[i] = np.full_like(frames[i], 40)
    paths = {"video": write_video(d / "face.mp4", frames, fps=25)}
    for name, seconds in (("long", 1.5), ("short", 0.8), ("tiny", 0.5)):
        paths[name] = d / f"{name}.wav"
        sf.write(paths[name], speech_like(seconds, seed=len(name)), 16000)
    paths["image"] = d / "face.png"
    from PIL import Image

    Image.fromarray(moving_face_frames(1, SIZE)[0]).save(paths["image"])
    return paths


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from lipsync.checkpoints import save
    from lipsync.models import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save(path, create_model("marlin_lip_tiny"), {"trained_on": "nothing (test)"})
    return path


@pytest.fixture(scope="module")
def lipsync(checkpoint):
    from lipsync import LipSync

    return LipSync.from_checkpoint(checkpoint, device="cpu")


# ----------------------------------------------------------------------------- pure parts
def test_output_frame_count_matches_audio_within_half_a_frame():
    for seconds, fps in ((2.0, 25), (1.234, Fraction(30000, 1001)), (0.2, 24), (10.01, 50)):
        n = output_frame_count(seconds, fps)
        assert abs(n / float(fps) - seconds) <= 0.5 / float(fps) + 1e-9


def test_loop_orders():
    assert [source_index(i, 4, "pingpong") for i in range(10)] == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert [source_index(i, 4, "loop") for i in range(10)] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert [source_index(i, 4, "freeze") for i in range(6)] == [0, 1, 2, 3, 3, 3]
    assert [source_index(i, 1, "pingpong") for i in range(3)] == [0, 0, 0]
    for mode in ("pingpong", "loop", "freeze"):
        for n_src, n_out in ((5, 23), (2, 9), (7, 8), (1, 4)):
            flat = [s + k * step for s, count, step in replay_runs(n_src, n_out, mode) for k in range(count)]
            assert flat == [source_index(i, n_src, mode) for i in range(n_src, n_out)]


def test_options_validate_and_parse():
    assert FaceSelect.parse("largest") == FaceSelect()
    assert FaceSelect.parse("index:2") == FaceSelect("index", 2)
    assert FaceSelect.parse("point:10,20.5") == FaceSelect("point", point=(10.0, 20.5))
    with pytest.raises(DubError, match="face selection"):
        FaceSelect.parse("biggest")
    with pytest.raises(DubError, match="loop mode"):
        DubOptions(loop="bounce")
    with pytest.raises(DubError, match="unknown option"):
        DubOptions().replace(colour="red")
    assert DubOptions().replace(face="index:1", pads=[1, 2, 3, 4]).pads == (1, 2, 3, 4)


def test_face_options_reach_the_tracker():
    from lipsync.inference.faces import track_config

    assert track_config(DubOptions()).target == "largest"
    assert track_config(DubOptions(face=FaceSelect.parse("index:1"))).target == 1
    opts = DubOptions(face=FaceSelect.parse("point:100,50"), resize=2, smooth_window=4, max_gap=2)
    cfg = track_config(opts)
    assert cfg.target == (50, 25)  # detection runs on frames shrunk by --resize
    assert cfg.box_window == 5 and cfg.max_gap == 2  # the tracker needs odd windows


def test_device_auto_and_unavailable():
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(DubError, match="not available"):
            resolve_device("cuda")


def test_replay_reads_the_same_frames_as_the_forward_pass(tmp_path):
    """Backward (ping-pong) blocks come from seeking; they must equal the forward decode."""
    from lipsync.inference.source import FrameSource

    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(8 * i % 200, 30, (48, 64, 3)), 0, 255).astype(np.uint8) for i in range(45)]
    path = tmp_path / "gop.mp4"
    with av.open(str(path), "w") as c:  # short GOP with B-frames: seeks land on real keyframes
        s = c.add_stream("libx264", rate=Fraction(30000, 1001))
        s.width, s.height, s.pix_fmt, s.options = 64, 48, "yuv420p", {"g": "8", "bf": "2"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    src = FrameSource(path)
    forward = [img for _, img in src.forward()]
    assert len(forward) == 45
    src.block_size = lambda: 7  # several blocks per backward run
    for mode in ("pingpong", "loop"):
        got = list(src.replay(45, 140, mode))
        assert [i for i, _ in got] == [source_index(i, 45, mode) for i in range(45, 140)]
        assert all(np.array_equal(img, forward[i]) for i, img in got)


def test_writer_abort_leaves_nothing(tmp_path, media):
    from lipsync.inference.writer import DubWriter

    out = tmp_path / "x.mp4"
    with pytest.raises(RuntimeError), DubWriter(out, (64, 48), Fraction(25), str(media["long"]), 2.0) as w:
        w.write(np.zeros((48, 64, 3), np.uint8))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("colorspace", "h"), [(2, 96), (1, 96), (2, 90)])  # untagged (BT.601), BT.709
def test_writer_stores_unchanged_pixels_as_the_input_stored_them(tmp_path, media, colorspace, h):
    """With the input's planes, pixels the dub left alone are encoded exactly as stored (crf 0),
    the changed ones decode to the new RGB, and the stream keeps the input's colour tags."""
    from lipsync.inference.writer import DubWriter
    from marlin.video import decode_rgb

    w = 128
    picture = moving_face_frames(1, (h, w))[0]
    stored = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(
        format="yuv420p", dst_colorspace="ITU709" if colorspace == 1 else "ITU601", dst_color_range="MPEG")
    stored.colorspace, stored.color_range = colorspace, 1
    before, planes = decode_rgb(stored, keep_planes=True)
    assert planes is not None and planes.matrix == ("bt709" if colorspace == 1 else "bt601")
    after = before.copy()
    box = (37, 41, 90, 80)  # odd corners: the writer widens to whole 2 x 2 colour blocks
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1]
    after[y0:y1, x0:x1] = np.clip(before[y0:y1, x0:x1] + np.stack(
        [40 + 0 * xx, (xx - x0) - 20, (yy - y0) - 20], -1), 0, 255).astype(np.uint8)
    out = tmp_path / "planes.mp4"
    with DubWriter(out, (w, h), Fraction(25), str(media["tiny"]), 3 / 25, crf=0) as wr:
        wr.write(before, planes=planes)
        wr.write(after, before, planes, box)
        wr.write(after, before, planes)  # no region: the whole frame is compared
        wr.close()
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.colorspace == colorspace
        got = [(f.to_ndarray(format="yuv420p"), decode_rgb(f)[0]) for f in c.decode(video=0)]
    assert np.array_equal(got[0][0], planes.data)
    outside = np.ones((h, w), bool)
    outside[y0 - 2:y1 + 2, x0 - 2:x1 + 2] = False  # and the colour samples those rows and columns share
    # the same change written through RGB, as a writer without planes does, for comparison
    through_rgb = av.VideoFrame.from_ndarray(after, format="rgb24").reformat(
        format="yuv420p", dst_colorspace="ITU709" if colorspace == 1 else "ITU601", dst_color_range="MPEG")
    through_rgb.colorspace, through_rgb.color_range = colorspace, 1

    def box_error(rgb):
        return np.abs(rgb[y0:y1, x0:x1].astype(int) - after[y0:y1, x0:x1]).mean()

    assert box_error(before) > 15  # what the change moved
    for yuv, rgb in got[1:]:
        assert np.array_equal(yuv[:h][outside], planes.y[outside])
        written = replace(planes, data=yuv)
        for a, b in ((written.u, planes.u), (written.v, planes.v)):
            assert np.array_equal(a[outside[::2, ::2]], b[outside[::2, ::2]])
        assert np.array_equal(rgb[outside], before[outside])  # RGB too, colour included
        assert box_error(rgb) < min(2.2, box_error(decode_rgb(through_rgb)[0])), box_error(rgb)


# ----------------------------------------------------------------------------- end to end
def test_stream_passes_untouched_pixels_through_bit_exactly(lipsync, media):
    """Frame-iterator level: no-face frames are the decoded input; dubbed frames differ from
    it only inside the face region; audio longer than video ping-pongs."""
    inputs = _decode(media["video"])
    out = list(lipsync.stream(media["video"], media["long"], batch_size=16))
    assert len(out) == N_LONG
    assert [f.source_index for f in out] == [source_index(i, N_FRAMES, "pingpong") for i in range(N_LONG)]
    dubbed = 0
    for f in out:
        ref = inputs[f.source_index]
        if f.source_index in GAP:
            assert not f.dubbed
        if not f.dubbed:
            assert f.image is ref or np.array_equal(f.image, ref)
            continue
        dubbed += 1
        x0, y0, x1, y1 = f.region
        outside = np.ones(ref.shape[:2], bool)
        outside[max(y0, 0):y1, max(x0, 0):x1] = False
        assert np.array_equal(f.image[outside], ref[outside])
        assert (f.image[~outside] != ref[~outside]).any()
    assert dubbed >= 0.8 * sum(1 for f in out if f.source_index not in GAP)


def test_dub_writes_mp4_with_input_geometry_and_new_audio(lipsync, media, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "out" / "dubbed.mp4"
    out.parent.mkdir()
    summary = lipsync.dub(media["video"], media["long"], out)
    assert list(cwd.iterdir()) == []  # nothing in the working directory
    assert sorted(p.name for p in out.parent.iterdir()) == ["dubbed.mp4"]  # no temp file left
    info = _streams(out)
    assert (info["width"], info["height"], info["fps"]) == (320, 240, 25)
    assert (info["vcodec"], info["acodec"]) == ("h264", "aac")
    assert info["frames"] == summary.frames == N_LONG
    assert abs(info["frames"] / 25 - 1.5) <= 1 / 25
    assert abs(info["audio_seconds"] - 1.5) <= 1 / 25
    assert summary.faces_found >= 20 and summary.fps_achieved > 0
    assert set(summary.stage_times.as_dict()) >= {"decode", "detect", "marlin", "generate", "blend", "encode"}
    # file level: lossy h264 again, so untouched frames match within codec tolerance
    inputs, outputs = _decode(media["video"]), _decode(out)
    for i, frame in enumerate(outputs):
        ref = inputs[source_index(i, N_FRAMES, "pingpong")]
        if source_index(i, N_FRAMES, "pingpong") in GAP:
            assert np.abs(frame.astype(int) - ref).mean() < 2.0
        else:  # the top rows (above the face) are outside every face region
            assert np.abs(frame[:20].astype(int) - ref[:20]).mean() < 2.0


def test_dub_stores_what_it_did_not_change_bit_exactly(lipsync, media, tmp_path):
    """Losslessly encoded (crf 0), frames without a face and the rows above every face are the
    input's stored samples, colour planes included: no round trip through RGB."""
    out = lipsync.dub(media["video"], media["long"], tmp_path / "lossless.mp4", crf=0).output

    def planes(path):
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]

    inputs, outputs = planes(media["video"]), planes(out)
    assert len(outputs) == N_LONG
    h = SIZE[0]
    top = np.r_[0:20, h:h + 5, h + h // 4:h + h // 4 + 5]  # the top 20 rows of Y, 10 of U and of V
    redrawn = 0
    for i, yuv in enumerate(outputs):
        ref = inputs[source_index(i, N_FRAMES, "pingpong")]
        if source_index(i, N_FRAMES, "pingpong") in GAP:
            assert np.array_equal(yuv, ref)
        else:
            assert np.array_equal(yuv[top], ref[top])
            redrawn += not np.array_equal(yuv, ref)
    assert redrawn >= 0.8 * sum(source_index(i, N_FRAMES, "pingpong") not in GAP for i in range(N_LONG))


def test_dub_of_a_turned_phone_video_keeps_its_stored_samples(lipsync, media, tmp_path):
    """A video stored sideways with a display rotation (as phones write) is dubbed upright, and
    the rows above the face are still the input's stored samples, turned with the picture."""
    upright = moving_face_frames(12, (160, 96))  # portrait
    path = write_video(tmp_path / "phone.mp4", [np.ascontiguousarray(np.rot90(f)) for f in upright],
                       rotation=90)
    shown = list(iter_frames(path, keep_planes=True))
    assert np.abs(shown[0].image.astype(int) - upright[0]).mean() < 8  # upright, not upside down
    assert shown[0].planes.size == (96, 160)
    out = lipsync.dub(path, media["tiny"], tmp_path / "phone_dub.mp4", crf=0).output
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (96, 160)
        written = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    assert len(written) == 12
    for yuv, f in zip(written, shown):
        assert np.array_equal(yuv[:10], f.planes.data[:10])  # the top 10 rows of Y
        assert not np.array_equal(yuv, f.planes.data)  # the face was redrawn


def test_video_longer_than_audio_is_cut_or_kept(lipsync, media, tmp_path):
    cut = lipsync.dub(media["video"], media["short"], tmp_path / "cut.mp4", loop="loop")
    assert cut.frames == 20 and _streams(tmp_path / "cut.mp4")["frames"] == 20
    inputs = _decode(media["video"])
    kept = list(lipsync.stream(media["video"], media["short"], keep_video=True))
    assert len(kept) == N_FRAMES
    assert all(not f.dubbed and np.array_equal(f.image, inputs[f.index]) for f in kept[20:])
    summary = lipsync.dub(media["video"], media["short"], tmp_path / "kept.mp4", keep_video=True)
    info = _streams(tmp_path / "kept.mp4")
    assert summary.frames == info["frames"] == N_FRAMES
    assert abs(info["audio_seconds"] - N_FRAMES / 25) <= 1 / 25  # speech, then silence


def test_still_image_input(lipsync, media, tmp_path):
    out = tmp_path / "img.mp4"
    summary = lipsync.dub(media["image"], media["tiny"], out, fps=20)
    info = _streams(out)
    assert info["fps"] == 20 and info["frames"] == summary.frames == 10
    assert (info["width"], info["height"]) == (320, 240)
    assert summary.faces_found == 10


def test_cli_pairs_reports_failed_rows_and_does_the_rest(checkpoint, media, tmp_path, capsys):
    from lipsync.infer import main

    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "audio", "out"])
        w.writerow([media["video"], media["tiny"], "a.mp4"])
        w.writerow([tmp_path / "missing.mp4", media["tiny"], "b.mp4"])
        w.writerow([media["image"], media["tiny"], "c.mp4"])
    rc = main(["--pairs", str(pairs), "--checkpoint", str(checkpoint), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert (tmp_path / "a.mp4").is_file() and (tmp_path / "c.mp4").is_file()
    assert not (tmp_path / "b.mp4").exists()
    assert "line 3" in err and "missing.mp4" in err and "no such file" in err


def test_cli_single_run_prints_summary(checkpoint, media, tmp_path, capsys):
    from lipsync.infer import main

    out = tmp_path / "one.mp4"
    rc = main(["--video", str(media["video"]), "--audio", str(media["tiny"]), "--out", str(out),
               "--checkpoint", str(checkpoint), "--device", "cpu", "--smooth", "3", "--pads", "0,8,0,0"])
    assert rc == 0 and out.is_file()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "12 frames" in line and "faces found in" in line and "fps achieved" in line



# ----------------------------------------------------------------------------- detect_every, encoding
def test_detect_every_option_validates_and_reaches_the_tracker():
    from lipsync.inference.faces import track_config

    assert DubOptions().detect_every == 3  # the documented default
    assert track_config(DubOptions(detect_every=5)).detect_every == 5
    assert track_config(DubOptions(detect_every=np.int64(1))).detect_every == 1
    for bad in (0, -2, 1.5, True, None):
        with pytest.raises(DubError, match="detect every"):
            DubOptions(detect_every=bad)


@pytest.fixture(scope="module")
def clean_video(tmp_path_factory) -> Path:
    """20 frames with the face visible throughout (no gap)."""
    d = tmp_path_factory.mktemp("clean_media")
    return write_video(d / "moving.mp4", moving_face_frames(20, SIZE), fps=25)


def test_detect_every_skips_detections_and_still_dubs_every_frame(lipsync, clean_video, media, monkeypatch):
    """Through LipSync.stream: the detector runs on every N-th frame only, every frame is still
    dubbed, and the face regions stay close to those of detecting every frame."""
    from marlin.face import FaceDetector

    calls = []
    original = FaceDetector.detect

    def counting(self, rgb, landmarks=True):
        calls.append(1)
        return original(self, rgb, landmarks)

    monkeypatch.setattr(FaceDetector, "detect", counting)
    inputs = _decode(clean_video)
    regions = {}
    for every in (1, 5):
        calls.clear()
        out = list(lipsync.stream(clean_video, media["short"], detect_every=every))
        assert len(out) == 20
        regions[every] = np.array([f.region for f in out], float)
        assert len(calls) == (20 if every == 1 else 4)
        for f in out:  # the face was replaced on every frame
            assert f.dubbed
            x0, y0, x1, y1 = f.region
            ref = inputs[f.source_index]
            assert (f.image[max(y0, 0):y1, max(x0, 0):x1] != ref[max(y0, 0):y1, max(x0, 0):x1]).any()
    width = regions[1][:, 2] - regions[1][:, 0]
    assert (np.abs(regions[5] - regions[1]).max(1) <= 0.1 * width).all()


@pytest.mark.parametrize("value", ["0", "-3"])
def test_cli_rejects_bad_detect_every(checkpoint, media, tmp_path, capsys, value):
    from lipsync.infer import main

    out = tmp_path / "x.mp4"
    rc = main(["--video", str(media["video"]), "--audio", str(media["tiny"]), "--out", str(out),
               "--checkpoint", str(checkpoint), "--device", "cpu", "--quiet", "--detect-every", value])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "detect every" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_writer_thread_count_keeps_the_video(tmp_path, media):
    """x264 with one thread writes the same quality as with its own default (which the engine uses)."""
    import inspect

    from lipsync.inference.writer import DubWriter

    assert inspect.signature(DubWriter).parameters["threads"].default == 0  # the engine's choice
    frames = moving_face_frames(6, (96, 128))
    error = {}
    for threads in (1, 0):
        out = tmp_path / f"t{threads}.mp4"
        with DubWriter(out, (128, 96), Fraction(25), str(media["tiny"]), 6 / 25, threads=threads) as w:
            for f in frames:
                w.write(f)
            w.close()
        decoded = _decode(out)
        assert len(decoded) == 6
        error[threads] = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(decoded, frames)])
    assert error[1] < 6 and abs(error[1] - error[0]) < 0.5  # 4:2:0 on a tiny, detailed face
    with pytest.raises(ValueError, match="threads"):
        DubWriter(tmp_path / "bad.mp4", (128, 96), Fraction(25), str(media["tiny"]), 0.2, threads=-1)
    assert not list(tmp_path.glob("*.partial.mp4"))
