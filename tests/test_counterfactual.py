"""Counterfactual references (lipsync.data.synthetic.counterfactual) and their use in training."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from helpers_train import one_thread_fixture

from lipsync.data.datasets import COUNTERFACTUAL, LipSyncDataset
from lipsync.data.sync_measure import measure_openings, sync_correlation
from lipsync.data.synthetic import make_clip, mouth_for_audio, opening, read_sidecar
from lipsync.data.synthetic.counterfactual import fit_track, main, write_counterfactuals
from lipsync.preprocess import PreprocessConfig, preprocess
from marlin.data import DataError, list_clips

_one_thread = one_thread_fixture()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Three 2 s synthetic clips, preprocessed at 128 px, with counterfactual references."""
    clips = tmp_path_factory.mktemp("synth")
    for seed in (21, 22, 23):
        make_clip(clips, seed=seed, duration=2.0)
    data = tmp_path_factory.mktemp("prep")
    preprocess(clips, data, PreprocessConfig(size=128, min_frames=25), progress=False)
    bare = tmp_path_factory.mktemp("bare")  # the same clips before counterfactuals are written
    for cid in list_clips(data):
        shutil.copytree(data / cid, bare / cid)
    written = write_counterfactuals(data, offset=1, progress=False)
    return clips, data, bare, written


def _padded(crops):
    """Crops with a border, so the face detector sees a whole face, not a frame-filling one."""
    return [cv2.copyMakeBorder(c, 48, 48, 48, 48, cv2.BORDER_REPLICATE) for c in crops]


def test_fit_track_runs_back_and_forth_without_repeating_the_turns():
    track = np.arange(4, dtype=np.float32)[:, None].repeat(4, 1)
    assert fit_track(track, 10)[:, 0].tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    assert fit_track(track, 3)[:, 0].tolist() == [0, 1, 2]
    assert fit_track(track[:1], 3)[:, 0].tolist() == [0, 0, 0]


def test_counterfactual_is_the_same_face_speaking_the_other_clips_speech(prepared):
    clips, data, _, written = prepared
    assert written == list_clips(data) and len(written) == 3
    cid = written[0]
    frames = np.load(data / cid / "frames.npy")
    other = np.load(data / cid / COUNTERFACTUAL)
    assert other.shape == frames.shape and other.dtype == np.uint8
    record = json.loads((data / cid / "counterfactual.json").read_text())
    meta = json.loads((data / cid / "meta.json").read_text())
    own_source = clips / meta["source"].split("/")[-1]
    assert record["speech"] != own_source.name  # never its own speech

    # Same pose and light: the upper face matches the original crops to within coding noise,
    # while the mouth (lower half) differs more.
    s = frames.shape[1]
    diff = np.abs(other.astype(np.int16) - frames.astype(np.int16))
    assert diff[:, : s // 2].mean() < 6
    assert diff[:, s // 2:].mean() > 1.5 * diff[:, : s // 2].mean()

    # The mouth follows the other speech, not the clip's own.
    spec, _ = read_sidecar(own_source)
    start, n = meta["start_frame"], len(frames)
    wanted = opening(mouth_for_audio(clips / record["speech"], spec.fps, spec.identity.articulation)[0])
    own = opening(mouth_for_audio(own_source, spec.fps, spec.identity.articulation)[0])
    measured = measure_openings(_padded(other))
    assert np.isfinite(measured).mean() > 0.9
    follows = sync_correlation(measured, fit_track(wanted[:, None], start + n)[start:, 0], max_lag=0)
    ignores = sync_correlation(measured, own[start:start + n], max_lag=0)
    assert follows.correlation > 0.7, follows
    assert follows.correlation > ignores.correlation + 0.3, (follows, ignores)


def test_dataset_counterfactual_reference_shows_the_target_frames_with_another_mouth(prepared):
    _, data, bare, _ = prepared
    ds = LipSyncDataset(data, split="all", n_frames=5, size=96, reference="counterfactual")
    window = LipSyncDataset(data, split="all", n_frames=5, size=96)
    for key in [(0, 3), (1, 8), 2]:
        item, plain = ds[key], window[key]
        assert item["ref_start"] == item["start"] == plain["start"]
        torch.testing.assert_close(item["target"], plain["target"])
        expected = ds.counterfactual(item["index"], item["start"], 5).transpose(0, 1)
        torch.testing.assert_close(item["faces"][3:], expected)
        torch.testing.assert_close(item["faces"][:3], plain["faces"][:3])  # the masked target is unchanged
        assert plain["ref_start"] != plain["start"]  # the default still takes another window
    with pytest.raises(DataError, match="no counterfactual.npy .*lipsync.data.synthetic.counterfactual"):
        LipSyncDataset(bare, split="all", n_frames=5, reference="counterfactual")
    with pytest.raises(DataError, match="reference 'mirror'"):
        LipSyncDataset(data, split="all", n_frames=5, reference="mirror")


def test_cli_errors_are_one_line_and_exit_2(prepared, tmp_path, capsys):
    clips, data, _, _ = prepared
    with pytest.raises(SystemExit) as bad:
        main(["--data", str(data), "--offset", "seven"])
    assert bad.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert main(["--data", str(tmp_path)]) == 2
    assert "no preprocessed clips" in capsys.readouterr().err
    assert main(["--data", str(data), "--offset", "3"]) == 2
    err = capsys.readouterr().err
    assert "own speech" in err and err.count("\n") == 1
    # a clip whose source is not a synthetic clip (no sidecar): named, nothing written
    fake = tmp_path / "prep"
    shutil.copytree(data, fake)
    for cid in list_clips(fake):
        (fake / cid / COUNTERFACTUAL).unlink()
    moved = tmp_path / "videos"
    moved.mkdir()
    assert main(["--data", str(fake), "--clips", str(moved), "--quiet"]) == 2
    assert "not a synthetic clip" in capsys.readouterr().err
    assert not list(fake.glob(f"*/{COUNTERFACTUAL}"))


def test_train_with_counterfactual_reference(prepared, tmp_path, capsys, caplog):
    """A short run trains on counterfactual references; without them it stops with exit 2; a
    generator that sees the whole reference trained on other windows is warned about copying."""
    from lipsync.train import cli as train_main

    _, data, bare, _ = prepared
    args = ["--model", "marlin_lip_tiny", "--set", "img_size=48", "--set", "encoder_init=random",
            "--set", "reference_mask=null", "--set", "composite=true", "--steps", "2", "--batch-size", "2",
            "--cpu", "--disc-wt", "0", "--sync-wt", "0", "--eval-every", "2", "--val-samples", "1",
            "--sample-every", "0", "--log-every", "1", "--reference", "counterfactual"]
    assert train_main(["--data", str(data), "--out", str(tmp_path / "run"), *args]) == 0
    assert (tmp_path / "run" / "generator.safetensors").exists()
    assert "copy the visible mouth" not in caplog.text
    assert train_main(["--data", str(bare), "--out", str(tmp_path / "bare_run"), *args]) == 2
    assert not (tmp_path / "bare_run" / "generator.safetensors").exists()
    rest = ["--set", "reference_mask=[0.25,0.45,0.75,0.85]", "--set", "reference_fill=rest"]
    assert train_main(["--data", str(data), "--out", str(tmp_path / "rest_run"), *args, *rest]) == 2
    assert "counterfactual references do not have" in capsys.readouterr().err
    caplog.clear()
    window = [a if a != "counterfactual" else "window" for a in args]
    assert train_main(["--data", str(bare), "--out", str(tmp_path / "window_run"), *window]) == 0
    assert "can learn to copy the visible mouth" in caplog.text
