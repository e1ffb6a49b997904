"""``python -m lipsync.preprocess``: clips in the marlin.data layout, skip report, resume, layouts."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from helpers_train import one_thread_fixture
from media import moving_face_frames, speech_like, write_video

from lipsync.data.datasets import LipSyncDataset
from lipsync.preprocess import PreprocessConfig, find_sources, main, preprocess, write_split
from marlin.data import read_clip, split_clips, write_clip

_one_thread = one_thread_fixture()  # tiny models: one intra-op thread is fastest


def talking_video(path, n=40, photo="astronaut", audio=True, size=(160, 200)):
    frames = moving_face_frames(n, size, photo)
    return write_video(path, frames, audio=speech_like(n / 25, seed=1) if audio else None)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A folder with one good clip, a faceless clip, a clip without audio and a corrupt file."""
    src = tmp_path_factory.mktemp("videos")
    talking_video(src / "good.mp4")
    write_video(src / "faceless.mp4", [np.full((96, 128, 3), 70, np.uint8)] * 30, audio=speech_like(1.2))
    talking_video(src / "mute.mp4", n=30, audio=False)
    (src / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)
    (src / "notes.txt").write_text("not a video")
    return src


def test_folder_gives_one_clip_and_names_the_three_bad_files(mixed, tmp_path, capsys):
    out = tmp_path / "data"
    cfg = ["--size", "64", "--min-frames", "20", "--no-progress"]
    assert main(["--input", str(mixed), "--output", str(out), *cfg, "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "preprocess_report.json").read_text())
    assert report["clips"] == ["good"] and report["sources"] == 4
    reasons = {s["source"].rsplit("/", 1)[1]: s["reason"] for s in report["skipped"]}
    assert reasons == {"faceless.mp4": "no face", "mute.mp4": "no audio", "corrupt.mp4": "unreadable"}
    for name in reasons:
        assert f"skipped {mixed / name}" in printed
    clip = read_clip(out, "good")
    assert clip.frames.shape == (40, 64, 64, 3) and clip.regions.shape == (40, 64, 64)
    assert clip.landmarks.shape == (40, 478, 2) and clip.boxes.shape == (40, 4)
    assert clip.meta["fps"] == 25 and clip.meta["identity"] == "good" and clip.meta["pads"] == [0, 10, 0, 0]
    # the face fills the crop: skin and mouth regions present, the lips in its lower half
    assert (clip.regions == 1).mean() > 0.3 and (clip.regions == 5).any()
    assert clip.landmarks.min() > -16 and clip.landmarks.max() < 80
    lip = clip.landmarks[:, 13, 1]  # mesh point 13: the upper lip
    assert np.all((lip > 32) & (lip < 64))
    import soundfile

    wav, sr = soundfile.read(clip.audio_path)
    assert sr == 16000 and len(wav) == 40 * 640  # audio cut to the frames
    leftovers = [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".preprocess"]
    assert not leftovers  # no temporary folders
    LipSyncDataset(out, ["good"], n_frames=5, size=48)[0]  # trainable as is

    # resumable: a second run reuses every result and rewrites nothing
    stamp = (out / "good" / "frames.npy").stat().st_mtime_ns
    report2 = preprocess(mixed, out, PreprocessConfig(size=64, min_frames=20), progress=False)
    assert report2["reused"] == 4 and report2["clips"] == ["good"] and len(report2["skipped"]) == 3
    assert (out / "good" / "frames.npy").stat().st_mtime_ns == stamp
    # changed settings redo the work
    report3 = preprocess(mixed, out, PreprocessConfig(size=64, min_frames=60), progress=False)
    assert report3["reused"] == 0 and {s["reason"] for s in report3["skipped"]} >= {"too short"}


def test_wav2lip_layout_and_file_list(tmp_path):
    root = tmp_path / "lrs2_pre"
    clip_dir = root / "5535415699068794046" / "00001"
    clip_dir.mkdir(parents=True)
    for i, frame in enumerate(moving_face_frames(30, (200, 200))):
        if i == 12:
            continue  # a frame without a face: the release skipped it, splitting the run
        crop = cv2.resize(frame[20:190, 25:175], (96, 96))
        cv2.imwrite(str(clip_dir / f"{i}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    import soundfile

    soundfile.write(clip_dir / "audio.wav", speech_like(30 / 25), 16000)
    talking_video(root / "other.mp4", n=30, photo="grace_hopper")
    listing = tmp_path / "train.txt"
    listing.write_text("5535415699068794046/00001\nother\nmissing/00002\n")
    sources, missing = find_sources(listing, root=root)
    assert [(s.kind, s.clip_id, s.identity) for s in sources] == [
        ("frames", "5535415699068794046__00001", "5535415699068794046"), ("video", "other", "other")]
    assert missing[0].reason == "unreadable" and "missing" in missing[0].source
    out = tmp_path / "data"
    report = preprocess(listing, out, PreprocessConfig(size=48, min_frames=10), root=root, progress=False)
    assert report["clips"] == ["5535415699068794046__00001", "5535415699068794046__00001__1", "other"]
    first = read_clip(out, "5535415699068794046__00001")
    assert first.n_frames == 12 and first.meta["layout"] == "wav2lip"
    assert read_clip(out, "5535415699068794046__00001__1").meta["start_frame"] == 13
    assert first.landmarks is not None  # the mesh found the face in the tight crops


def test_split_by_identity_or_by_clip(tmp_path):
    frames = np.zeros((5, 8, 8, 3), np.uint8)
    for i in range(10):
        write_clip(tmp_path, f"c{i}", frames, meta={"identity": f"p{i // 2}"})
    train, val = write_split(tmp_path, 0.2)
    assert len(val) == 2 and len({int(v[1:]) // 2 for v in val}) == 1  # both clips of one person
    assert not set(train) & set(val) and sorted(train + val) == [f"c{i}" for i in range(10)]
    assert split_clips(tmp_path, "val") == val
    single = tmp_path / "single"
    for i in range(5):
        write_clip(single, f"take{i}", frames, meta={"identity": "me"})
    train, val = write_split(single, 0.2)
    assert len(val) == 1 and len(train) == 4  # one speaker: the clips themselves are split


def test_bad_input_gives_one_line_error(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]
    with pytest.raises(SystemExit) as e:
        main(["--input", str(tmp_path), "--output", str(tmp_path / "o"), "--smooth-window", "4"])
    assert e.value.code == 2
    assert main(["--input", str(tmp_path), "--output", str(tmp_path / "o")]) == 2  # no videos
    assert "no videos" in capsys.readouterr().err
