"""Ground-truth sync measure: pure functions, the ceiling/floor on rendered clips, bench/quality.py."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lipsync.data.sync_measure import (
    measure_openings,
    mouth_opening,
    mouth_region_error,
    mouth_region_sums,
    mouth_teeth,
    mouth_width,
    sync_correlation,
)
from lipsync.data.synthetic import make_clip, opening, read_sidecar, render_face, speak
from lipsync.data.synthetic.clip import write_video

ROOT = Path(__file__).resolve().parent.parent


def _landmarks(gap: float, eyes: float = 100.0) -> np.ndarray:
    pts = np.zeros((478, 2), np.float32)
    pts[263, 0] = eyes  # outer eye corners 33 (at the origin) and 263
    for upper, lower in ((13, 14), (82, 87), (312, 317), (81, 178), (311, 402)):
        pts[upper] = (50, 150)
        pts[lower] = (50, 150 + gap)
    return pts


def test_mouth_opening_is_gap_over_eye_distance():
    assert mouth_opening(_landmarks(20.0)) == pytest.approx(0.2)
    assert mouth_opening(_landmarks(20.0, eyes=50.0)) == pytest.approx(0.4)
    batch = mouth_opening(np.stack([_landmarks(0.0), _landmarks(30.0)]))
    assert batch.shape == (2,) and batch[0] == 0 and batch[1] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="478, 2"):
        mouth_opening(np.zeros((68, 2)))


def test_mouth_width_is_corner_distance_over_eye_distance():
    pts = _landmarks(10.0)
    pts[61], pts[291] = (20, 150), (80, 158)  # mouth corners 60 px apart across, 8 down
    assert mouth_width(pts) == pytest.approx(np.hypot(60, 8) / 100)
    assert mouth_opening(pts) == pytest.approx(0.1)  # the corners do not enter the opening
    wide = pts.copy()
    wide[291] = (100, 150)
    batch = mouth_width(np.stack([pts, wide]))
    assert batch.shape == (2,) and batch[1] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="478, 2"):
        mouth_width(np.zeros((68, 2)))


def _ring_landmarks(x1: float, y1: float, x2: float, y2: float, eyes: float = 100.0) -> np.ndarray:
    """Face-mesh points with the inner-lip ring on the rectangle (x1, y1)-(x2, y2)."""
    from lipsync.data.synthetic.landmarks import LIPS_INNER

    pts = np.zeros((478, 2), np.float32)
    pts[263, 0] = eyes
    n = len(LIPS_INNER)  # the ring: corner 78, along the lower lip, corner 308, back along the upper
    lower = np.linspace(x1, x2, n // 2 + 1)
    for k, index in enumerate(LIPS_INNER):
        pts[index] = (lower[k], y2) if k <= n // 2 else (lower[n - k], y1)
    return pts


def test_mouth_teeth_counts_bright_unsaturated_pixels_inside_the_inner_lips():
    """The tooth-like area inside the inner-lip ring over the squared eye distance: white teeth
    count, a dark cavity, red lips and white skin outside the ring do not."""
    lips, cavity, teeth = (190, 70, 70), (45, 12, 15), (236, 232, 220)
    image = np.full((200, 120, 3), lips, np.uint8)
    image[140:160, 30:70] = cavity
    pts = _ring_landmarks(30, 140, 70, 160)
    assert mouth_teeth(image, pts) == 0.0
    image[140:150, 30:70] = teeth  # the upper half of the gap shows teeth: 400 px (less the ring's
    assert mouth_teeth(image, pts) == pytest.approx(400 / 100**2, rel=0.15)  # anti-aliased edge)
    image[100:130, 30:70] = 255  # bright skin above the lips is not inside the ring
    assert mouth_teeth(image, pts) == pytest.approx(400 / 100**2, rel=0.15)
    both = mouth_teeth(np.stack([image, image]), np.stack([pts, _ring_landmarks(30, 140, 70, 160, 50)]))
    assert both.shape == (2,) and both[1] == pytest.approx(4 * both[0])  # relative to the face's size
    grey = image.copy()
    grey[140:150, 30:70] = (100, 98, 94)  # unsaturated but dark: shadow, not teeth
    assert mouth_teeth(grey, pts) == 0.0
    with pytest.raises(ValueError, match="frames"):
        mouth_teeth(image[None].repeat(3, 0), np.stack([pts, pts]))


def test_mouth_teeth_on_real_faces():
    """Real photos: a smile showing its teeth reads well above 0, a closed mouth 0."""
    from media import face_photo

    from lipsync.data.synthetic.landmarks import detect_face

    smile, closed = face_photo("astronaut"), face_photo("grace_hopper")
    assert mouth_teeth(smile, detect_face(smile).landmarks) > 0.02
    assert mouth_teeth(closed, detect_face(closed).landmarks) < 0.002


def test_mouth_teeth_reads_the_renderers_teeth(clips):
    """On a rendered face at a fixed opening the measure follows the renderer's teeth parameter."""
    from lipsync.data.synthetic.landmarks import detect_face

    source, _, _ = clips
    spec, _ = read_sidecar(source.sidecar)
    read = []
    for amount in (0.0, 0.5, 1.0):
        frame = render_face(spec, np.array([[0.7, 0.5, 0.0, amount]], np.float32)).frames[0]
        read.append(mouth_teeth(frame, detect_face(frame).landmarks))
    assert read[0] < 0.002 < read[1] < read[2], read


def test_sync_correlation_zero_lag_lag_search_and_gaps():
    rng = np.random.default_rng(0)
    demanded = np.convolve(rng.random(80), np.ones(3) / 3, mode="same")
    exact = sync_correlation(demanded * 3 + 1, demanded)
    assert exact.correlation == pytest.approx(1.0) and exact.best_lag == 0 and exact.n_frames == 80
    late = np.concatenate([np.full(2, demanded[0]), demanded[:-2]])  # video two frames behind the audio
    s = sync_correlation(late, demanded, max_lag=3)
    assert s.best_lag == 2 and s.best_correlation == pytest.approx(1.0) and s.correlation < 0.9
    gappy = demanded.copy()
    gappy[::5] = np.nan  # frames without a face are skipped
    g = sync_correlation(gappy, demanded, max_lag=0)
    assert g.correlation == pytest.approx(1.0) and g.n_frames == 64
    assert sync_correlation(np.full(80, 0.2), demanded).correlation == 0.0  # still mouth: no sync
    assert sync_correlation(demanded[:50], demanded).n_frames == 50  # common length
    with pytest.raises(ValueError, match="max_lag"):
        sync_correlation(demanded, demanded, max_lag=-1)


def test_mouth_region_error_counts_only_the_lip_box():
    ref = np.full((3, 64, 64, 3), 100, np.uint8)
    boxes = np.tile(np.array([[20, 30, 40, 40]], np.float32), (3, 1))
    assert mouth_region_error(ref, ref, boxes) == 0.0
    out = ref.copy()
    out[:, :10] = 0  # far from the lips: ignored
    assert mouth_region_error(out, ref, boxes) == 0.0
    out[:, 25:45, 10:50] = 110
    assert mouth_region_error(out, ref, boxes, margin=0.0) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="differs from the reference"):
        mouth_region_error(ref[:, :32], ref, boxes)


def test_mouth_region_sums_are_the_error_frame_by_frame():
    ref = np.full((3, 64, 64, 3), 100, np.uint8)
    boxes = np.array([[20, 30, 40, 40], [10, 10, 50, 30], [70, 70, 80, 80]], np.float32)  # last: off
    out = ref.copy()
    out[1, 10:30, 10:50] = 104  # only the second frame's box differs
    totals, pixels = mouth_region_sums(out, ref, boxes, margin=0.0)
    assert pixels.tolist() == [20 * 10 * 3, 40 * 20 * 3, 0]
    assert totals.tolist() == [0.0, 4.0 * 40 * 20 * 3, 0.0]
    # the mean weighs frames by their pixels: 4 levels on 2400 of the 3000 values
    assert mouth_region_error(out, ref, boxes, margin=0.0) == pytest.approx(4.0 * 2400 / 3000)
    assert mouth_region_sums(out[:2], ref, boxes)[0].shape == (2,)  # the common length


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("sync")
    return make_clip(root, seed=11, duration=1.6), make_clip(root, seed=12, duration=1.6), root


def _decoded(path):
    from marlin.video import read_frames

    return read_frames(path)


def test_ceiling_correlation_is_high_and_still_mouth_is_near_zero(clips):
    """Landmark-measured opening on the encoded clip follows the ground truth (the ceiling)."""
    source, _, _ = clips
    spec, _ = read_sidecar(source.sidecar)
    track = np.load(source.track)["mouth"]
    frames = _decoded(source.video)
    ceiling = sync_correlation(measure_openings(frames), opening(track))
    assert ceiling.correlation > 0.8, ceiling
    still = np.tile(np.array([[0.25, 0.5, 0.0, 0.3]], np.float32), (len(track), 1))
    floor = sync_correlation(measure_openings(render_face(spec, still).frames), opening(track), max_lag=0)
    assert abs(floor.correlation) < 0.3, floor


def _bench(name: str = "quality"):
    """A bench script loaded by path (``bench/`` on sys.path would shadow the marlin package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_quality_reports_dubbed_floor_and_ceiling(clips, tmp_path, capsys):
    source, other, _ = clips
    # a perfect dub: the source face re-rendered speaking the other clip's audio, muxed with that audio
    from audio import load_audio

    dub = write_video(
        tmp_path / "dub.mp4", speak(source.sidecar, other.video).frames, load_audio(other.video)
    )
    out = tmp_path / "quality.json"
    bench = _bench()
    assert bench.main([str(dub), str(other.video), "--source", str(source.sidecar), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dubbed" in printed and "floor" in printed and "ceiling" in printed
    rows = json.loads(out.read_text())["rows"]
    assert rows["ceiling"]["sync_r"] > 0.8 and rows["dubbed"]["sync_r"] > 0.8
    assert rows["floor"]["sync_r"] < rows["dubbed"]["sync_r"] - 0.2
    assert rows["dubbed"]["mouth_l1"] < rows["floor"]["mouth_l1"]
    assert rows["dubbed"]["face_found"] == 1.0
    # per frame as well: the lip error's sums and pixel counts, the demanded and the source's own opening
    result = json.loads(out.read_text())
    for row in rows.values():
        assert len(row["frame_l1_sum"]) == len(row["frame_pixels"]) == row["frames"]
        assert sum(row["frame_l1_sum"]) / sum(row["frame_pixels"]) == pytest.approx(row["mouth_l1"])
    np.testing.assert_allclose(result["own"], opening(np.load(source.track)["mouth"]))
    assert len(result["demanded"]) == result["audio_frames"]

    assert bench.main([str(dub), str(other.video)]) == 2  # dub.mp4 has no sidecar and no --source
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "--source" in err and "\n" not in err


def test_bench_quality_pipeline_row_scores_a_perfect_generator(clips, tmp_path, capsys):
    """--pipeline SIZE: the re-render dubbed by a pass-through generator keeps its sync and most of
    its lips; only crop, resize to SIZE, blend and encode cost anything."""
    source, other, _ = clips
    out = tmp_path / "quality.json"
    bench = _bench()
    assert bench.main([str(source.video), str(other.video), "--source", str(source.sidecar),
                       "--pipeline", "96", "--json", str(out)]) == 0
    assert "pipeline" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert rows["pipeline"]["sync_r"] > 0.8
    assert rows["ceiling"]["mouth_l1"] < rows["pipeline"]["mouth_l1"] < rows["floor"]["mouth_l1"]
    assert bench.main([str(source.video), str(other.video), "--source", str(source.sidecar),
                       "--pipeline", "8"]) == 2
    assert "--pipeline" in capsys.readouterr().err
    # --pipeline-blur: the same perfect generator drawing blurred loses lip detail
    assert bench.main([str(source.video), str(other.video), "--source", str(source.sidecar),
                       "--pipeline", "96", "--pipeline-blur", "2", "--json", str(out)]) == 0
    blurred = json.loads(out.read_text())["rows"]["pipeline"]
    assert blurred["mouth_l1"] > rows["pipeline"]["mouth_l1"] + 0.5
    assert bench.main([str(source.video), str(other.video), "--source", str(source.sidecar),
                       "--pipeline-blur", "2"]) == 2
    assert "--pipeline-blur needs --pipeline" in capsys.readouterr().err


def test_pass_through_blur_is_a_gaussian_of_the_crop():
    bench = _bench()
    faces = torch.zeros(1, 6, 33, 33)
    faces[:, 3:6, 16, 16] = 1.0  # a point in the reference
    sharp = bench.PassThrough(33)(faces, None)
    torch.testing.assert_close(sharp, faces[:, 3:6])
    out = bench.PassThrough(33, blur=1.5)(faces, None)[0, 0]
    assert out.sum() == pytest.approx(1.0, abs=1e-4) and out[16, 16] == out.max() < 0.1
    row = out[16, 11:22] / out[16, 16]  # radius ceil(3 sigma) = 5 px
    want = torch.exp(-torch.arange(-5, 6.0) ** 2 / (2 * 1.5**2))
    torch.testing.assert_close(row, want, atol=1e-4, rtol=0)


def test_quality_set_breaks_the_error_down_by_the_change_asked_for():
    """--by-change: frames grouped by |demanded - own opening|, errors weighted by pixels."""
    def pair(demanded, own, dub, floor, pixels=10):
        n = len(demanded)
        row = lambda e: {"frame_l1_sum": [x * pixels for x in e], "frame_pixels": [pixels] * n}  # noqa: E731
        return {"demanded": demanded, "own": own, "rows": {"dubbed": row(dub), "floor": row(floor)}}

    results = [pair([0.1, 0.5, 0.9], [0.1, 0.1, 0.1], dub=[6.0, 8.0, 10.0], floor=[5.0, 12.0, 20.0]),
               pair([0.3, 0.3], [0.32, 0.3, 0.0], dub=[4.0, 2.0], floor=[3.0, 1.0])]  # own: one frame more
    groups = _bench("quality_set").by_change(results, ("dubbed", "floor"), edges=(0.0, 0.05, 0.6, math.inf))
    assert [g["frames"] for g in groups] == [3, 1, 1]  # the own track's extra frame is left out
    unchanged, moved, far = groups
    assert unchanged["dubbed"] == pytest.approx(4.0) and unchanged["floor"] == pytest.approx(3.0)
    assert moved["dubbed"] == 8.0 and far["floor"] == 20.0
    assert far["error_share"] == pytest.approx(10.0 / 30.0)
    assert sum(g["frame_share"] for g in groups) == pytest.approx(1.0)
    assert far["to"] is None and moved["to"] == 0.6  # the open end is written as null in the JSON


def test_quality_set_pass_through_costs_only_the_second_encode(clips, tmp_path, capsys):
    """--pass-through: the source sent through crop, blend and encode stays close to the source."""
    _, _, root = clips
    ids = tmp_path / "val.txt"
    ids.write_text("clip_11\nclip_12\n")
    out = tmp_path / "set.json"
    bench = _bench("quality_set")
    args = ["--clips", str(root), "--ids", str(ids), "--pairs", "2"]
    assert bench.main([*args, "--pass-through", "--crf", "0", "--by-change", "--json", str(out)]) == 0
    assert "share of the dubbed error" in capsys.readouterr().out
    report = json.loads(out.read_text())
    for pair in report["pairs"]:
        rows = pair["rows"]
        assert abs(rows["dubbed"]["mouth_l1"] - rows["floor"]["mouth_l1"]) < 1.5
        assert abs(rows["dubbed"]["sync_r"] - rows["floor"]["sync_r"]) < 0.1
    assert sum(g["frames"] for g in report["by_change"]) > 0
    bad_args = [["--crf", "52"], ["--pass-through", "--checkpoint", "x.safetensors"],
                ["--pass-through", "--precision", "bf16"], ["--checkpoint", str(tmp_path / "no.safetensors")]]
    if not torch.cuda.is_available():
        bad_args.append(["--precision", "fp16"])  # the dubs would run on the CPU, which has no fp16
    for bad in bad_args:
        assert bench.main([*args, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
