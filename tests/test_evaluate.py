"""python -m lipsync.evaluate: per-video rows + mean, JSON/CSV, missing weights, errors; weights lookup;
report formatting; the project's own sync expert score."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync import evaluate
from lipsync.metrics import report, weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory):
    """gen/{a,b}.mp4 (noisy copies, different noise) and ref/{a,b}.mp4, 12 frames at 25 fps with speech."""
    from media import moving_face_frames, speech_like, write_video

    root = tmp_path_factory.mktemp("eval")
    (root / "gen").mkdir()
    (root / "ref").mkdir()
    frames = moving_face_frames(12, size=(64, 80))
    wav = speech_like(12 / 25, seed=2)
    rng = np.random.default_rng(0)
    for name, noise in (("a", 8), ("b", 30)):
        write_video(root / "ref" / f"{name}.mp4", frames, fps=25, audio=wav)
        noisy = [
            np.clip(f.astype(int) + rng.integers(-noise, noise + 1, f.shape), 0, 255).astype(np.uint8)
            for f in frames
        ]
        write_video(root / "gen" / f"{name}.mp4", noisy, fps=25, audio=wav)
    return root


@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory):
    """A weights folder with random SyncNet v2 and AlexNet-features files (no FID, no expert)."""
    from lipsync.compat import import_torchvision
    from lipsync.models import SyncNetV2

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(
        {k: v.half() if v.is_floating_point() else v for k, v in SyncNetV2().state_dict().items()},
        folder / "syncnet_v2.model",
    )
    alex = import_torchvision().models.alexnet(weights=None)
    torch.save(
        {k: v for k, v in alex.state_dict().items() if k.startswith("features.")},
        folder / "alexnet-owt-7be5be79.pth",
    )
    return folder


@pytest.fixture()
def isolated(monkeypatch, tmp_path):
    """No weights anywhere unless a test points LIPSYNC_WEIGHTS somewhere."""
    monkeypatch.setenv("LIPSYNC_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path


def test_cli_missing_weights_one_line_others_run_and_outputs(
    clips_dir, weights_folder, isolated, monkeypatch, capsys
):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from marlin.video import read_frames

    monkeypatch.setenv("LIPSYNC_WEIGHTS", str(weights_folder))
    out_json, out_csv = isolated / "out" / "r.json", isolated / "out" / "r.csv"
    code = evaluate.main(
        [
            "--videos",
            str(clips_dir / "gen"),
            "--reference",
            str(clips_dir / "ref"),
            "--metrics",
            "lse,fid,lpips,ssim,psnr,expert",
            "--lse-mode",
            "whole",
            "--region",
            "frame",
            "--json",
            str(out_json),
            "--csv",
            str(out_csv),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    warn = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    fid_lines = [line for line in warn if "pt_inception-2015-12-05-6726825d.pth" in line]
    assert len(fid_lines) == 1 and str(weights_folder) in fid_lines[0] and "--fid-weights" in fid_lines[0]
    assert any("sync_expert.safetensors" in line for line in warn)
    assert "Traceback" not in captured.err

    result = json.loads(out_json.read_text())
    assert result["metrics"] == ["lse", "lpips", "ssim", "psnr"] and result["fid"] is None
    rows = result["videos"]
    assert [Path(r["video"]).name for r in rows] == ["a.mp4", "b.mp4"]
    for row in rows:
        assert row["errors"] == []
        assert np.isfinite([row["lse_d"], row["lse_c"], row["lpips"]]).all()
        assert row["lse_frames"] == 12 and -15 <= row["av_offset"] <= 15
        gen, ref = read_frames(row["video"]), read_frames(row["reference"])
        want_ssim = np.mean(
            [structural_similarity(g, r, channel_axis=-1, data_range=255) for g, r in zip(gen, ref)]
        )
        want_psnr = np.mean([peak_signal_noise_ratio(r, g, data_range=255) for g, r in zip(gen, ref)])
        assert row["ssim"] == pytest.approx(want_ssim, rel=1e-9)
        assert row["psnr"] == pytest.approx(want_psnr, rel=1e-9)
        assert row["pairs"] == 12
    assert rows[0]["psnr"] > rows[1]["psnr"] and rows[0]["lpips"] < rows[1]["lpips"]  # less noise is closer
    for key in ("lse_d", "lse_c", "lpips", "ssim", "psnr"):
        assert result["mean"][key] == pytest.approx((rows[0][key] + rows[1][key]) / 2)

    lines = list(csv.DictReader(out_csv.open()))
    assert [line["video"] for line in lines][-1] == "mean" and len(lines) == 3
    assert float(lines[2]["psnr"]) == pytest.approx(result["mean"]["psnr"])
    table = captured.out
    assert "LSE-D" in table and "mean" in table and "a.mp4" in table
    assert not list(out_json.parent.glob(".*.tmp"))  # atomic writes leave no temp files


def test_cli_no_reference_skips_reference_metrics(clips_dir, isolated, capsys):
    code = evaluate.main(
        ["--videos", str(clips_dir / "gen" / "a.mp4"), "--json", "", "--csv", "", "--no-progress"]
    )
    err = capsys.readouterr().err
    # default metrics: lse and expert lack weights, the rest lack a reference -> nothing can run
    assert code == 2
    assert "no --reference: skipping fid, lpips, ssim, psnr" in err
    assert err.strip().splitlines()[-1].startswith("error: no metric can run")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--videos", "/nonexistent/folder"], "no such file or folder"),
        (["--videos", "{gen}", "--metrics", "lse,bogus"], "unknown metric"),
        (["--videos", "{gen}", "--metrics", "ssim"], "--reference is needed for ssim"),
        (["--videos", "{gen}", "--reference", "{gen}/a.mp4", "--metrics", "ssim"], "not a folder"),
        (["--videos", "{empty}"], "no video files"),
        (["--videos", "{list}"], "listed videos do not exist"),
    ],
)
def test_cli_bad_input_one_line_exit_2(argv, message, clips_dir, isolated, capsys):
    (isolated / "empty").mkdir()
    (isolated / "list.txt").write_text("gen/a.mp4\nmissing.mp4\n")
    subs = {
        "gen": str(clips_dir / "gen"),
        "empty": str(isolated / "empty"),
        "list": str(isolated / "list.txt"),
    }
    argv = [a.format(**subs) for a in argv]
    assert evaluate.main([*argv, "--no-progress", "--json", "", "--csv", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_help_runs_as_module():
    out = subprocess.run(
        [sys.executable, "-m", "lipsync.evaluate", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0 and "--syncnet-v2" in out.stdout and "--lse-mode" in out.stdout


def test_list_file_and_reference_matching(clips_dir, tmp_path):
    lst = tmp_path / "videos.txt"
    lst.write_text(f"# generated\n{clips_dir / 'gen' / 'b.mp4'}\n{clips_dir / 'gen' / 'a.mp4'}\n")
    videos = evaluate.list_videos(lst)
    assert [v.name for v in videos] == ["b.mp4", "a.mp4"]
    refs = evaluate.match_references(videos, clips_dir / "ref")
    assert {v.name: r.name for v, r in refs.items()} == {"b.mp4": "b.mp4", "a.mp4": "a.mp4"}


def test_weights_lookup_order_and_messages(isolated, monkeypatch):
    with pytest.raises(weights.MissingWeights) as e:
        weights.resolve("syncnet_v2")
    msg = str(e.value)
    assert "\n" not in msg and "syncnet_v2.model" in msg and str(isolated / "no-weights") in msg
    hub = isolated / "torch-home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"x")
    assert weights.resolve("fid_inception") == hub / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(weights.MissingWeights, match="syncnet_v2.model"):  # not a torch hub file
        (hub / "syncnet_v2.model").write_bytes(b"x")
        weights.resolve("syncnet_v2")
    (isolated / "no-weights").mkdir()
    (isolated / "no-weights" / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"y")
    assert weights.resolve("fid_inception").parent == isolated / "no-weights"  # folder before torch hub
    with pytest.raises(weights.MissingWeights, match="elsewhere.pth .--fid-weights. is not a file"):
        weights.resolve("fid_inception", isolated / "elsewhere.pth")
    monkeypatch.delenv("LIPSYNC_WEIGHTS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "xdg"))
    assert weights.weights_dir() == isolated / "xdg" / "lipsync" / "weights"


def test_report_table_mean_and_notes(tmp_path):
    rows = [
        {"video": "x.mp4", "lse_d": 7.0, "lse_c": 2.0, "av_offset": -1, "expert_sync": 0.5, "errors": []},
        {"video": "y.mp4", "lse_d": 9.0, "lse_c": float("nan"), "errors": ["lse: too short"]},
    ]
    mean = report.mean_row(rows)
    assert mean["lse_d"] == 8.0 and mean["n_lse_d"] == 2 and mean["lse_c"] == 2.0 and mean["n_lse_c"] == 1
    table = report.format_table(
        rows, mean, {"fid": 12.5, "region": "face", "generated_frames": 10, "reference_frames": 11}
    )
    assert (
        "FID (face): 12.500" in table
        and "NOT comparable with LSE-C" in table
        and "y.mp4: lse: too short" in table
    )
    path = report.write_json(tmp_path / "r.json", {"mean": mean, "bad": float("inf")})
    assert json.loads(path.read_text())["bad"] is None


def test_expert_score_on_tracked_video(tmp_path):
    from media import moving_face_frames, speech_like, write_video

    from lipsync.metrics.expert import expert_score_video, expert_similarities
    from lipsync.models import SyncNetColor

    torch.manual_seed(0)
    model = SyncNetColor().eval()
    mel = np.zeros((80, 100), np.float32)
    faces = [np.full((48, 96, 3), 100, np.uint8)] * 9
    items = [(i, None if i == 4 else f) for i, f in enumerate(faces)]  # runs 0-3 and 5-8: too short for 5
    assert expert_similarities(model, items, mel).size == 0
    sims = expert_similarities(model, list(enumerate(faces)), mel, batch_size=2)
    assert sims.shape == (5,) and ((sims >= 0) & (sims <= 1)).all()
    path = write_video(
        tmp_path / "face.mp4", moving_face_frames(10, size=(144, 192)), fps=25, audio=speech_like(10 / 25)
    )
    value, n = expert_score_video(model, path)
    assert n == 6 and 0 <= value <= 1  # 10 frames -> 6 windows of 5
