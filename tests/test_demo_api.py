"""The Gradio demo (``lipsync.demo``) driven through its API with gradio_client.

The server runs in this process on a free localhost port.  Sample media are made here with
tests/media.py (demos/assets ships none yet) and the checkpoints are tiny random-init models
saved in a temporary folder (the shipped default is not needed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from media import moving_face_frames, speech_like, write_video

ROOT = Path(__file__).resolve().parents[1]
N_VIDEO, N_OUT = 8, 12  # the speech outlasts the video: frames 8..11 replay it (ping-pong)


def make_demo_files(root: Path) -> dict[str, Path]:
    """Sample media, tiny checkpoints and bad inputs under ``root``."""
    from lipsync.checkpoints import save
    from lipsync.models import create_model
    from marlin import Marlin

    assets, ckpts, bad = root / "assets", root / "ckpts", root / "bad"
    for d in (assets, ckpts, bad):
        d.mkdir(parents=True, exist_ok=True)
    files = {"video": write_video(assets / "sample.mp4", moving_face_frames(N_VIDEO, (240, 320)), fps=25),
             "audio": assets / "sample.wav", "assets": assets, "ckpts": ckpts, "work": root / "work"}
    sf.write(files["audio"], speech_like(N_OUT / 25), 16000)
    torch.manual_seed(0)
    save(ckpts / "lip_tiny.safetensors", create_model("marlin_lip_tiny"))
    Marlin.from_config("vit_tiny").save(ckpts / "marlin_tiny.safetensors")
    files["noface"] = write_video(bad / "noface.mp4", [np.full((120, 160, 3), 90, np.uint8)] * 6, fps=25)
    files["long"] = bad / "long.wav"
    sf.write(files["long"], speech_like(3.0), 16000)
    files["broken"] = bad / "broken.mp4"
    files["broken"].write_bytes(np.random.default_rng(0).bytes(4096))
    files["huge"] = bad / "huge.wav"
    sf.write(files["huge"], speech_like(1.5, sr=48000), 48000, subtype="FLOAT")  # 288 KB
    return files


def demo_config(files: dict[str, Path], **changes):
    from lipsync.demo import DemoConfig

    base = dict(checkpoints_dir=files["ckpts"], assets_dir=files["assets"], device="cpu", precision="fp32",
                max_seconds=2.0, max_upload_mb=0.25, work_dir=files["work"])
    return DemoConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return make_demo_files(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def server(files):
    from lipsync.demo import serve

    app, url = serve(demo_config(files), block=False, quiet=True)
    yield app, url
    app.close()


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    from gradio_client import Client

    return Client(server[1], verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def _video(value) -> str:
    """gradio_client returns a video output as a path or as {"video": path, ...}."""
    return value["video"] if isinstance(value, dict) else value


def _frames(path) -> list[np.ndarray]:
    from marlin.video import iter_frames

    return [f.image.astype(np.float32) for f in iter_frames(path)]


# ----- pure parts ---------------------------------------------------------------------------
def test_advanced_options_mirror_the_cli():
    from lipsync.demo import build_options
    from lipsync.infer import build_parser, options_from_args

    argv = ["--video", "v.mp4", "--audio", "a.wav", "--face-backend", "haar", "--face", "index:1",
            "--box", "1,2,30,40", "--pads", "1,2,3,4", "--smooth", "3", "--max-gap", "4", "--resize", "2",
            "--blend", "mouth", "--color-match", "--loop", "freeze", "--keep-video", "--fps", "30",
            "--crf", "20", "--preset", "fast", "--batch-size", "8", "--no-keep-detail"]
    cli = options_from_args(build_parser().parse_args(argv))
    ui = build_options("haar", "index:1", "1,2,30,40", "1,2,3,4", 3, "4", 2, "mouth", True, "freeze", True,
                       30, 20, "fast", 8, False)
    assert ui == cli
    assert build_options() == options_from_args(build_parser().parse_args(["--video", "v", "--audio", "a"]))


def test_bad_option_values_are_named():
    from lipsync import DubError
    from lipsync.demo import DemoConfig, DemoError, build_options

    with pytest.raises(DemoError, match="pads must be 4"):
        build_options(pads="1,2")
    with pytest.raises(DemoError, match="max gap"):
        build_options(max_gap="soon")
    with pytest.raises(DubError, match="loop mode 'bounce'"):
        build_options(loop="bounce")
    with pytest.raises(DemoError, match="concurrency"):
        DemoConfig(concurrency=0)


def test_examples_checkpoints_and_messages(files, tmp_path):
    from lipsync.demo import even_size, find_examples, list_checkpoints, tidy_message

    rows = find_examples(files["assets"])
    assert rows == [[str(files["video"]), None, str(files["audio"])]]
    (tmp_path / "face.png").write_bytes(b"")
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "face.wav").write_bytes(b"")
    assert find_examples(tmp_path) == [[None, str(tmp_path / "face.png"), str(tmp_path / "face.wav")]]
    assert find_examples(tmp_path / "missing") == []
    assert list_checkpoints(files["ckpts"]) == ["lip_tiny.safetensors", "marlin_tiny.safetensors"]
    upload = "/tmp/gradio/abc/x.mp4"
    msg = tidy_message(f"{upload}: no face found (try --face-backend haar)\nmore", [upload])
    assert msg == "x.mp4: no face found (try the Haar face detector (advanced options))"
    assert even_size(1920, 1080, 360) == (640, 360) and even_size(640, 480, 1080) == (640, 480)
    assert all(v % 2 == 0 for v in even_size(333, 251, None) + even_size(333, 251, 125))


def test_output_size_scales_the_input(files, tmp_path):
    from lipsync.demo import scale_input
    from marlin.video import probe

    small = scale_input(files["video"], 120, tmp_path)
    info = probe(small)
    assert (info.width, info.height, info.n_frames) == (160, 120, N_VIDEO)
    assert scale_input(files["video"], 480, tmp_path) == files["video"]  # never scaled up


# ----- through the server -------------------------------------------------------------------
def test_api_offers_both_tabs_with_examples_and_a_limited_queue(server, client, files):
    app, _ = server
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/dub", "/marlin"} <= set(api)
    defaults = {p["parameter_name"]: p.get("parameter_default") for p in api["/dub"]["parameters"]}
    assert defaults["checkpoint"] == "lip_tiny.safetensors" and defaults["loop"] == "pingpong"
    assert {"face", "pads", "smooth", "loop", "output_size", "box", "face_backend"} <= set(defaults)
    defaults_names = ["lip_tiny.safetensors", "marlin_tiny.safetensors"]
    config = app.config
    samples = [c["props"].get("samples") for c in config["components"] if c.get("type") == "dataset"]
    assert samples and "sample.mp4" in str(samples[0][0]) and "sample.wav" in str(samples[0][-1])
    heavy = [f for f in app.fns.values() if f.api_name in ("dub", "marlin")]
    assert len(heavy) == 2 and all(f.concurrency_limit == 1 and f.concurrency_id == "model" for f in heavy)
    assert app._queue.max_size == 16
    added = files["ckpts"] / "new.pth"
    added.write_bytes(b"weights")
    try:  # "Rescan" re-reads the checkpoints folder into both menus
        menus = next(f for f in app.fns.values() if f.name == "rescan").fn()
        assert all([c[0] for c in m.choices] == [*defaults_names, added.name] for m in menus)
    finally:
        added.unlink()


def test_bad_requests_get_clear_messages_then_a_good_request_dubs(server, client, files, monkeypatch):
    import httpx
    from gradio_client import handle_file

    from lipsync.demo import DemoError
    from marlin.video import probe

    app, url = server

    def dub(video=None, audio=None, **kw):
        return client.predict(video=handle_file(str(video)) if video else None, photo=None,
                              audio=handle_file(str(audio)) if audio else None, api_name="/dub", **kw)

    video, audio = files["video"], files["audio"]
    bad = [({"video": files["broken"], "audio": audio}, "video broken.mp4: "),
           ({"video": video, "audio": files["long"]}, "long.wav: 3.0 s is longer than this demo's limit"),
           ({"video": video, "audio": video}, "sample.mp4: the file has no audio track"),
           ({"video": files["noface"], "audio": audio}, "no face found in any frame"),
           ({"video": video, "audio": audio, "checkpoint_path": "/nowhere/x.pth"}, "no such file"),
           ({"video": video, "audio": audio, "pads": "1,2"}, "pads must be 4"),
           ({"video": None, "audio": audio}, "give a video or a photo"),
           ({"video": video, "audio": files["huge"]}, "exceeds the maximum file size of 262144 bytes")]
    for kwargs, expected in bad:
        with pytest.raises(Exception) as err:
            dub(**kwargs)
        text = str(err.value)
        assert expected is None or expected in text, text
        assert "Traceback" not in text and "/tmp/gradio" not in text
    with open(files["huge"], "rb") as f:  # the server refuses big uploads whatever the client does
        response = httpx.post(f"{url}gradio_api/upload", files={"files": ("huge.wav", f, "audio/wav")})
    assert response.status_code == 413 and "262144 bytes" in response.text
    with pytest.raises(DemoError, match=r"huge.wav: 0.3 MiB is over this demo's upload limit of 0.25 MiB"):
        app.demo.dub(str(files["video"]), None, str(files["huge"]))  # files given by path are checked too
    with monkeypatch.context() as m:  # an unexpected failure is reported too
        m.setattr(app.demo, "dub", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
        with pytest.raises(Exception, match=r"failed \(RuntimeError: boom\); the server is still running"):
            dub(video=video, audio=audio)

    dubbed, both, summary = dub(video=video, audio=audio)
    assert summary["frames"] == N_OUT and summary["faces_found"] == N_OUT
    assert summary["source_frames"] == N_VIDEO and summary["checkpoint"] == "lip_tiny.safetensors"
    assert summary["fps_achieved"] > 0 and "faces found in 12" in summary["summary"]
    out, pair = probe(_video(dubbed)), probe(_video(both))
    assert (out.width, out.height, out.n_frames, out.has_audio) == (320, 240, N_OUT, True)
    assert (pair.width, pair.height, pair.n_frames, pair.has_audio) == (640, 240, N_OUT, True)
    src, after, sbs = _frames(files["video"]), _frames(_video(dubbed)), _frames(_video(both))
    assert np.abs(after[0][:60] - src[0][:60]).mean() < 3  # above the face: the input's pixels
    assert np.abs(after[0][60:200, 100:220] - src[0][60:200, 100:220]).mean() > 1  # the face changed
    for i, shown in ((0, 0), (7, 7), (9, 5), (11, 3)):  # ping-pong: 0..7, then 6 5 4 3
        errors = [np.abs(sbs[i][:, :320] - s).mean() for s in src]
        assert int(np.argmin(errors)) == shown and errors[shown] < 4, (i, errors)
        assert np.abs(sbs[i][:, 320:] - after[i]).mean() < 4, i


def test_a_photo_is_dubbed_at_the_chosen_output_size(client, files):
    from gradio_client import handle_file
    from PIL import Image

    from marlin.video import probe

    photo = files["ckpts"].parent / "photo.jpg"
    Image.fromarray(moving_face_frames(1, (480, 640))[0]).save(photo, quality=85)
    dubbed, both, summary = client.predict(video=None, photo=handle_file(str(photo)),
                                           audio=handle_file(str(files["audio"])), output_size="240p", fps=25,
                                           api_name="/dub")
    assert (summary["width"], summary["height"], summary["frames"]) == (320, 240, N_OUT)
    assert summary["faces_found"] == N_OUT and summary["source_frames"] == 1
    info = probe(_video(both))
    assert (info.width, info.height, info.n_frames) == (640, 240, N_OUT)
    sbs = _frames(_video(both))
    assert np.abs(sbs[0][:, :320] - sbs[-1][:, :320]).mean() < 2  # "before" is the still photo throughout


def test_marlin_tab_masks_reconstructs_and_exports_features(client, files):
    from gradio_client import handle_file
    from PIL import Image

    clip = handle_file(str(files["video"]))
    grid, video, feats, summary = client.predict(clip=clip, checkpoint="marlin_tiny.safetensors",
                                                 strategy="fasking", mask_ratio=0.75, api_name="/marlin")
    assert summary["visible_tokens"] == int(392 * 0.25) and summary["faces_in_window"] == N_VIDEO
    assert np.isfinite(summary["masked_patch_mse"]) and summary["windows"] == 1
    assert np.asarray(Image.open(grid)).shape == (3 * 224, 8 * 224, 3)  # clip / masked / reconstruction
    features = np.load(feats)
    assert features.shape == (1, 192) and features.dtype == np.float32 and np.isfinite(features).all()
    assert os.path.getsize(_video(video)) > 0
    # the lip-sync checkpoint's own MARLIN encoder: features, but no decoder to reconstruct with
    grid, _, feats, summary = client.predict(clip=clip, checkpoint="lip_tiny.safetensors", strategy="tube",
                                             crop_face=False, api_name="/marlin")
    assert "only the encoder" in summary["reconstruction"]
    assert np.asarray(Image.open(grid)).shape == (2 * 224, 8 * 224, 3)
    assert np.load(feats).shape == (1, 192)
    with pytest.raises(Exception, match="needs face crops"):
        client.predict(clip=clip, strategy="fasking", crop_face=False, api_name="/marlin")
    with pytest.raises(Exception, match="noface.mp4: no face found in the sampled frames"):
        client.predict(clip=handle_file(str(files["noface"])), api_name="/marlin")


def test_queue_runs_one_request_at_a_time(server, client, files, monkeypatch):
    from gradio_client import handle_file
    from PIL import Image

    from lipsync.demo import MarlinResult

    app, _ = server
    lock, state = threading.Lock(), {"active": 0, "peak": 0}
    npy = app.demo.work_dir / "fake.npy"
    np.save(npy, np.zeros((1, 4), np.float32))

    def slow(clip, *args, **kwargs):
        with lock:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
        time.sleep(0.7)
        with lock:
            state["active"] -= 1
        return MarlinResult(str(grid), str(files["video"]), str(npy), {"ok": True})

    grid = app.demo.work_dir / "grid.png"
    Image.new("RGB", (8, 8)).save(grid)
    monkeypatch.setattr(app.demo, "marlin", slow)
    jobs = [client.submit(clip=handle_file(str(files["video"])), api_name="/marlin") for _ in range(3)]
    results = [job.result(timeout=60) for job in jobs]
    assert [r[3] for r in results] == [{"ok": True}] * 3
    assert state["peak"] == 1


def test_cli_help_and_bad_flags(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "lipsync.demo", "--help"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode == 0 and "--max-upload-mb" in res.stdout and "--concurrency" in res.stdout
    launcher = [sys.executable, str(ROOT / "demos" / "app.py"), "--checkpoints-dir", str(tmp_path / "no")]
    res = subprocess.run(launcher, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: checkpoints folder {tmp_path / 'no'}: no such folder"]
