"""``python -m marlin.pretrain``: learning, outputs, exact resume, NaN stop, launcher, bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_train import one_thread_fixture
from media import moving_face_frames, write_video
from PIL import Image
from safetensors import safe_open

from marlin import Marlin
from marlin.data import FaceClipDataset, read_clip, split_clips, write_clip
from marlin.pretrain import cli, main

S = 64  # tiny config: vit_tiny at 8 frames of 64 x 64 (4 x 4 x 4 = 64 tokens)
TINY = ["--variant", "vit_tiny", "--n-frames", "8", "--img-size", str(S), "--sample-every", "0",
        "--val-clips", "2", "--cpu"]

REPO = Path(__file__).resolve().parents[1]


_one_thread = one_thread_fixture()  # tiny models: one intra-op thread is fastest


def crude_regions(size: int) -> np.ndarray:
    """Box/ellipse face parts at fixed places of a centred face (good enough to drive fasking)."""
    r = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size] / size
    r[((yy - 0.5) / 0.38) ** 2 + ((xx - 0.5) / 0.3) ** 2 < 1] = 1
    r[int(size * .35):int(size * .45), int(size * .3):int(size * .45)] = 2
    r[int(size * .35):int(size * .45), int(size * .55):int(size * .7)] = 3
    r[int(size * .45):int(size * .6), int(size * .45):int(size * .55)] = 4
    r[int(size * .65):int(size * .75), int(size * .38):int(size * .62)] = 5
    r[: int(size * .15), int(size * .3):int(size * .7)] = 6
    return r


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Six 24-frame clips of the two real face photos drifting and zooming, with region maps."""
    root = tmp_path_factory.mktemp("clips")
    for i in range(6):
        photo = ("astronaut", "grace_hopper")[i % 2]

        def path(k, i=i):
            return S / 2 + 3 * np.sin(k / 4 + i), S / 2 + 2 * np.cos(k / 5 + i), (0.9 + 0.05 * i) * S / 512

        frames = np.stack(moving_face_frames(24, (S, S), photo, path))
        write_clip(root, f"clip{i}", frames, regions=np.repeat(crude_regions(S)[None], 24, 0),
                   audio=np.zeros(16000, np.float32), meta={"identity": f"person{i}", "source": "test"})
    return root


def metrics(out) -> dict[tuple[int, str], str]:
    with open(out / "metrics.csv") as f:
        return {(int(r["step"]), r["name"]): r["value"] for r in csv.DictReader(f)}


# --------------------------------------------------------------------------- data layer
def test_clip_layout_roundtrip_and_windows(clips, tmp_path):
    clip = read_clip(clips, "clip0")
    assert clip.frames.shape == (24, S, S, 3) and isinstance(clip.frames, np.memmap)
    assert clip.regions.shape == (24, S, S) and clip.audio_path is not None
    assert clip.meta == {"fps": 25, "identity": "person0", "source": "test", "n_frames": 24, "size": S}
    train, val = split_clips(clips, "train"), split_clips(clips, "val")
    assert len(val) == 1 and sorted(train + val) == [f"clip{i}" for i in range(6)]
    (clips / "val.txt").write_text("clip3\n")
    (clips / "train.txt").write_text("clip0\nclip1\n")
    try:
        assert split_clips(clips, "val") == ["clip3"] and split_clips(clips, "train") == ["clip0", "clip1"]
    finally:
        (clips / "val.txt").unlink()
        (clips / "train.txt").unlink()
    ds = FaceClipDataset(clips, ["clip0"], n_frames=8, stride=2, size=32, with_regions=True)
    a, b = ds[(0, 11)], ds[(0, 11)]
    assert a["video"].shape == (3, 8, 32, 32) and a["regions"].shape == (8, 32, 32)
    assert torch.equal(a["video"], b["video"]) and 0 <= a["start"] <= 24 - 15
    assert len({ds[(0, s)]["start"] for s in range(20)}) > 3  # random starts
    with pytest.raises(ValueError, match="frames must be"):
        write_clip(tmp_path, "bad", np.zeros((4, 8, 9, 3), np.uint8))


# --------------------------------------------------------------------------- learning
def test_pretrain_lowers_masked_reconstruction_loss(clips, tmp_path):
    out = tmp_path / "run"
    assert main(["--data", str(clips), "--out", str(out), *TINY, "--steps", "120", "--batch-size", "4",
                 "--lr", "2e-3", "--warmup-steps", "5", "--adv-weight", "0", "--save-every", "60",
                 "--log-every", "10", "--sample-every", "60"]) == 0
    m = metrics(out)
    before, after = float(m[(0, "val/mse")]), float(m[(120, "val/mse")])
    print(f"held-out masked MSE {before:.4f} -> {after:.4f} after 120 steps")
    assert after < 0.4 * before
    assert float(m[(120, "train/mse")]) < float(m[(10, "train/mse")])
    model = Marlin.from_file(out / "model.safetensors")  # our checkpoint, config from metadata
    assert model.config.n_frames == 8 and model.config.img_size == S and model.has_decoder
    with safe_open(out / "model.safetensors", "pt") as f:
        assert f.metadata()["masking"] == "fasking" and f.metadata()["step"] == "120"
    grid = np.asarray(Image.open(out / "samples" / "step_0000120.png"))
    assert grid.shape == (3 * S, 8 * S, 3)  # input / masked input / reconstruction
    assert torch.load(out / "state.pt", weights_only=True)["step"] == 120
    assert any((out / "tb").iterdir())


# --------------------------------------------------------------------------- resume
class Interrupt(Exception):
    pass


def test_resume_reproduces_uninterrupted_run(clips, tmp_path, monkeypatch):
    """With the WGAN critic and gradient penalty on: two models, two optimisers, two schedulers."""
    args = ["--data", str(clips), *TINY, "--steps", "6", "--batch-size", "2", "--lr", "1e-3",
            "--warmup-steps", "2", "--adv-weight", "0.05", "--gp-weight", "1", "--save-every", "3",
            "--log-every", "1"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0

    import marlin.pretrain as pretrain

    real_loader = pretrain.make_loader

    def dying_loader(*a, **k):
        loader = real_loader(*a, **k)

        def batches():
            for i, batch in enumerate(loader):
                if i == 4:  # killed while computing step 5, after the checkpoint of step 3
                    raise Interrupt
                yield batch
        return batches()

    monkeypatch.setattr(pretrain, "make_loader", dying_loader)
    with pytest.raises(Interrupt):
        main([*args, "--out", str(tmp_path / "cut")])
    monkeypatch.setattr(pretrain, "make_loader", real_loader)
    assert main([*args, "--out", str(tmp_path / "cut"), "--resume"]) == 0

    full, cut = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    for step in range(1, 7):
        for name in ("train/mse", "train/critic", "train/adv"):
            assert cut[(step, name)] == full[(step, name)], (step, name)
    a, b = (Marlin.from_file(tmp_path / d / "model.safetensors") for d in ("full", "cut"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --------------------------------------------------------------------------- failures
def test_nonfinite_loss_stops_keeping_last_checkpoint(clips, tmp_path, capsys):
    out = tmp_path / "nan"
    code = cli(["--data", str(clips), "--out", str(out), *TINY, "--steps", "20", "--batch-size", "2",
                "--lr", "1e35", "--warmup-steps", "0", "--adv-weight", "0", "--save-every", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "non-finite loss at step" in err and str(out / "state.pt") in err
    failed_at = int(err.split("non-finite loss at step ")[1].split()[0])
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == failed_at  # the checkpoint before the bad step
    assert all(torch.isfinite(v).all() for v in state["models"]["marlin"].values())
    Marlin.from_file(out / "model.safetensors")


def test_bad_input_gives_one_line_error(clips, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "error: --data" in capsys.readouterr().err
    bare = tmp_path / "bare"
    write_clip(bare, "c0", read_clip(clips, "clip0").frames[:20])  # no regions.npy
    assert cli(["--data", str(bare), "--out", str(tmp_path / "o"), *TINY, "--masking", "fasking"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "regions.npy" in err[0]
    assert cli(["--data", str(tmp_path), "--out", str(tmp_path / "o2"), *TINY]) == 2  # no videos
    assert "no videos" in capsys.readouterr().err


# --------------------------------------------------------------------------- video folder + launcher
def test_video_folder_input_uses_tube_masking(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for photo in ("astronaut", "grace_hopper"):
        write_video(videos / f"{photo}.mp4", moving_face_frames(20, (72, 96), photo))  # not square
    out = tmp_path / "run"
    assert main(["--data", str(videos), "--out", str(out), *TINY, "--steps", "2", "--batch-size", "2",
                 "--adv-weight", "0", "--save-every", "2", "--val-fraction", "0"]) == 0
    cached = read_clip(out / "clip_cache", "astronaut")
    assert cached.frames.shape == (20, S, S, 3) and cached.regions is None
    assert cached.frames[:, :5].max() == 0  # zero padding above the 72-row frame
    with safe_open(out / "model.safetensors", "pt") as f:
        assert f.metadata()["masking"] == "tube"


def test_two_processes_through_accelerate_launch(clips, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "marlin.pretrain", "--data", str(clips), "--out", str(out), *TINY, "--steps", "2",
           "--batch-size", "2", "--adv-weight", "0.01", "--save-every", "2", "--log-every", "1"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] == 2 and len(state["rng"]) == 2  # one RNG state per process
    m = metrics(out)
    assert (2, "train/mse") in m and float(m[(2, "lr")]) > 0
