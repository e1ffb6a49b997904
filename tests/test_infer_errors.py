"""Every kind of bad input to ``python -m lipsync.infer``: one ``error:`` line, exit 2, no output."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from media import moving_face_frames, speech_like, write_video

from lipsync.infer import main


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from lipsync.checkpoints import save
    from lipsync.models import create_model

    d = tmp_path_factory.mktemp("bad_inputs")
    f: dict[str, Path] = {}
    f["video"] = write_video(d / "face.mp4", moving_face_frames(12, (240, 320)), fps=25)
    f["faceless"] = write_video(d / "faceless.mp4", [np.full((240, 320, 3), 90, np.uint8)] * 12, fps=25)
    f["audio"] = d / "speech.wav"
    sf.write(f["audio"], speech_like(0.6), 16000)
    f["empty_audio"] = d / "empty.wav"
    sf.write(f["empty_audio"], np.zeros(0, np.float32), 16000)
    f["short_audio"] = d / "short.wav"
    sf.write(f["short_audio"], speech_like(0.1), 16000)
    f["text_mp4"] = d / "notes.mp4"
    f["text_mp4"].write_text("these are not the frames you are looking for\n")
    f["audio_only_mp4"] = d / "audio_only.mp4"
    with av.open(str(f["audio_only_mp4"]), "w") as c:  # an mp4 holding only an aac stream
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        frame = av.AudioFrame.from_ndarray((speech_like(0.6) * 32767).astype(np.int16)[None], format="s16",
                                           layout="mono")
        frame.sample_rate = 16000
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    f["folder"] = d / "a_folder"
    f["folder"].mkdir()
    torch.manual_seed(0)
    f["ckpt"] = save(d / "tiny.safetensors", create_model("marlin_lip_tiny"))
    data = f["ckpt"].read_bytes()
    f["truncated"] = d / "truncated.safetensors"
    f["truncated"].write_bytes(data[: len(data) // 2])
    f["wrong_kind"] = save(d / "expert.safetensors", create_model("marlin_sync_tiny"))
    f["not_ckpt"] = d / "weights.pth"
    f["not_ckpt"].write_bytes(b"PK\x03\x04 definitely not a zip archive")
    return f


def _run(capsys, files, *args: str, checkpoint: str | None = "ckpt") -> tuple[int, str]:
    argv = ["--device", "cpu", "--quiet", *args]  # later flags win: a test's own --device counts
    if checkpoint is not None:
        argv += ["--checkpoint", str(files[checkpoint]) if checkpoint in files else checkpoint]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def _assert_bad(rc: int, err: str, *needles: str) -> None:
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


def _no_output(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir()]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("video, audio, needles", [
    ("missing.mp4", "audio", ("missing.mp4", "no such file")),
    ("folder", "audio", ("a_folder", "directory")),
    ("text_mp4", "audio", ("notes.mp4", "not a readable video")),
    ("audio_only_mp4", "audio", ("audio_only.mp4", "no video stream")),
    ("video", "missing.wav", ("missing.wav", "no such file")),
    ("video", "folder", ("a_folder", "directory")),
    ("video", "video", ("face.mp4", "no audio stream")),  # a video file without an audio track
    ("video", "text_mp4", ("notes.mp4",)),
    ("video", "empty_audio", ("empty.wav",)),
    ("video", "short_audio", ("short.wav", "0.2 s")),
])
def test_bad_media(capsys, files, tmp_path, video, audio, needles):
    v = str(files.get(video, tmp_path / video))
    a = str(files.get(audio, tmp_path / audio))
    out = tmp_path / "out"
    out.mkdir()
    rc, err = _run(capsys, files, "--video", v, "--audio", a, "--out", str(out / "x.mp4"))
    _assert_bad(rc, err, *needles)
    _no_output(out)


def test_zero_length_audio_says_so(capsys, files, tmp_path):
    rc, err = _run(capsys, files, "--video", str(files["video"]), "--audio", str(files["empty_audio"]),
                   "--out", str(tmp_path / "x.mp4"))
    _assert_bad(rc, err, "empty.wav")
    assert "no audio samples" in err or "zero-length" in err


def test_unwritable_output_folder(capsys, files, tmp_path):
    targets = [Path("/sys/lipsync_out.mp4")]  # sysfs refuses new files, even to root
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        targets.append(locked / "x.mp4")
    for target in targets:
        rc, err = _run(capsys, files, "--video", str(files["video"]), "--audio", str(files["audio"]),
                       "--out", str(target))
        _assert_bad(rc, err, str(target), "not writable")
        assert not target.exists()


def test_output_folder_missing_or_output_is_an_input(capsys, files, tmp_path):
    rc, err = _run(capsys, files, "--video", str(files["video"]), "--audio", str(files["audio"]),
                   "--out", str(tmp_path / "nope" / "x.mp4"))
    _assert_bad(rc, err, "does not exist")
    before = files["video"].read_bytes()
    rc, err = _run(capsys, files, "--video", str(files["video"]), "--audio", str(files["audio"]),
                   "--out", str(files["video"]))
    _assert_bad(rc, err, "face.mp4", "also an input")
    assert files["video"].read_bytes() == before


@pytest.mark.parametrize("checkpoint, needles", [
    ("truncated", ("truncated.safetensors",)),
    ("wrong_kind", ("expert.safetensors", "marlin_sync")),
    ("not_ckpt", ("weights.pth",)),
    ("folder", ("a_folder", "directory")),
    ("missing.safetensors", ("missing.safetensors", "no such file")),
])
def test_bad_checkpoint(capsys, files, tmp_path, checkpoint, needles):
    ckpt = checkpoint if checkpoint in files else str(tmp_path / checkpoint)
    rc, err = _run(capsys, files, "--video", str(files["video"]), "--audio", str(files["audio"]),
                   "--out", str(tmp_path / "x.mp4"), checkpoint=ckpt)
    _assert_bad(rc, err, *needles)
    assert not (tmp_path / "x.mp4").exists()


def test_missing_default_checkpoint_names_file_and_flag(capsys, files, tmp_path, monkeypatch):
    import lipsync.inference.job as job

    monkeypatch.setattr(job, "DEFAULT_CHECKPOINT", tmp_path / "checkpoints" / "lipsync_default.safetensors")
    rc, err = _run(capsys, files, "--video", str(files["video"]), "--audio", str(files["audio"]),
                   "--out", str(tmp_path / "x.mp4"), checkpoint=None)
    _assert_bad(rc, err, "lipsync_default.safetensors", "--checkpoint")


def test_face_backend_without_weights(capsys, files, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    out = tmp_path / "out"
    out.mkdir()
    rc, err = _run(capsys, files, "--video", str(files["video"]), "--audio", str(files["audio"]),
                   "--out", str(out / "x.mp4"), "--face-backend", "fan")
    _assert_bad(rc, err, "fan", "s3fd")
    _no_output(out)


def test_video_without_any_face(capsys, files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    rc, err = _run(capsys, files, "--video", str(files["faceless"]), "--audio", str(files["audio"]),
                   "--out", str(out / "x.mp4"))
    _assert_bad(rc, err, "faceless.mp4", "no face")
    _no_output(out)


def test_bad_option_values(capsys, files, tmp_path):
    for extra, needle in ((["--batch-size", "0"], "batch size"), (["--box", "50,50,10,10"], "box"),
                          (["--resize", "0.5"], "resize"), (["--device", "tpu"], "tpu")):
        rc, err = _run(capsys, files, "--video", str(files["video"]), "--audio", str(files["audio"]),
                       "--out", str(tmp_path / "x.mp4"), *extra)
        _assert_bad(rc, err, needle)
    with pytest.raises(SystemExit) as e:  # argparse's own usage errors also exit 2
        main(["--video", str(files["video"])])
    assert e.value.code == 2
