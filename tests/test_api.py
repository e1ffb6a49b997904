"""The Python API: ``from lipsync import LipSync``; checkpoints, conventions, streaming frames."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from media import moving_face_frames, speech_like, write_video

from audio import mel_window_starts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("api")
    video = write_video(d / "face.mp4", moving_face_frames(10, (240, 320)), fps=25)
    audio = d / "speech.wav"
    sf.write(audio, speech_like(0.24), 16000)  # 6 frames at 25 fps
    return {"video": video, "audio": audio, "dir": d}


def test_import_is_lazy_and_light():
    code = ("import sys; import lipsync; assert 'lipsync.api' not in sys.modules; "
            "from lipsync import LipSync, DubOptions; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('gradio', 'lpips')]; "
            "assert not bad, bad; print(LipSync.__name__)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "LipSync"


def test_default_checkpoint_is_found_from_the_package_not_the_cwd(tmp_path, monkeypatch):
    import lipsync

    monkeypatch.chdir(tmp_path)
    assert lipsync.DEFAULT_CHECKPOINT == ROOT / "checkpoints" / "lipsync_default.safetensors"
    if not lipsync.DEFAULT_CHECKPOINT.exists():
        with pytest.raises(lipsync.DubError, match="--checkpoint"):
            lipsync.LipSync.from_checkpoint()
    else:  # the shipped default loads from any working directory
        assert lipsync.LipSync.from_checkpoint(device="cpu").audio_convention == "inference"


def test_marlin_generator_streams_frames_with_checkpoint_convention(clip, tmp_path):
    from lipsync import DubError, LipSync
    from lipsync.checkpoints import save
    from lipsync.models import create_model

    torch.manual_seed(1)
    path = save(tmp_path / "m.safetensors", create_model("marlin_lip_tiny"),
                {"audio_convention": "wav2lip_train"})
    ls = LipSync.from_checkpoint(path, device="cpu")
    assert ls.audio_convention == "wav2lip_train"
    job = ls.prepare(clip["video"], clip["audio"])
    want = mel_window_starts(job.mels.mel, 25, n_frames=6, convention="wav2lip_train")
    assert np.array_equal(job.mels.starts, want)
    assert job.mels.starts[2] == 80 * 1 // 25  # frame 2 reads the window of frame 1
    job.close()
    frames = list(ls.iter_frames(clip["video"], clip["audio"], batch_size=4))
    assert len(frames) == 6
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in frames)
    assert sorted(p.name for p in clip["dir"].iterdir()) == ["face.mp4", "speech.wav"]  # nothing written
    with pytest.raises(DubError, match="unknown option"):
        ls.prepare(clip["video"], clip["audio"], smoothness=3)


def test_public_wav2lip_layout_runs_frame_by_frame(clip, tmp_path):
    """A release-layout .pth (DataParallel prefix, BGR weights) through the whole engine."""
    from lipsync import LipSync
    from lipsync.models import Wav2Lip

    torch.manual_seed(2)
    state = {f"module.{k}": v for k, v in Wav2Lip().state_dict().items()}
    path = tmp_path / "wav2lip.pth"
    torch.save({"state_dict": state, "global_step": 7}, path)
    ls = LipSync.from_checkpoint(path, device="cpu")
    assert ls.runner.window == 1 and ls.runner.size == 96
    assert ls.audio_convention == "wav2lip_train"  # what the release was trained with
    out = tmp_path / "w.mp4"
    summary = ls.dub(clip["video"], clip["audio"], out, batch_size=3, threads=False)
    assert out.is_file() and summary.frames == 6 and summary.faces_found == 6
    assert summary.stage_times.marlin == 0 and summary.stage_times.generate > 0


def test_prepare_checks_everything_before_writing(clip, tmp_path):
    from lipsync import DubError, LipSync
    from lipsync.checkpoints import save
    from lipsync.models import create_model

    path = save(tmp_path / "m.safetensors", create_model("marlin_lip_tiny"))
    ls = LipSync.from_checkpoint(path, device="cpu")
    with pytest.raises(DubError, match="must end in .mp4"):
        ls.prepare(clip["video"], clip["audio"], tmp_path / "out.avi")
    with pytest.raises(DubError, match="outside"):
        ls.prepare(clip["video"], clip["audio"], tmp_path / "o.mp4", box=(0, 0, 400, 100))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


class _ReturnsItsInput(torch.nn.Module):
    """A perfect generator for a video dubbed with its own mouth: returns the crop it is shown."""

    img_size = 96

    def forward(self, faces: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
        return faces[:, 3:6]


def test_keep_detail_gives_back_the_frame_where_the_generator_copied(tmp_path):
    from lipsync import LipSync
    from marlin.video import iter_frames

    video = write_video(tmp_path / "big.mp4", moving_face_frames(6, (480, 640)), fps=25)  # a 200 px face
    audio = tmp_path / "speech.wav"
    sf.write(audio, speech_like(0.24), 16000)
    source = np.stack([f.image for f in iter_frames(video)])
    ls = LipSync(_ReturnsItsInput(), device="cpu")
    kept = np.stack(list(ls.iter_frames(video, audio, threads=False)))
    plain = np.stack(list(ls.iter_frames(video, audio, threads=False, keep_detail=False)))
    changed = np.any(plain != source, axis=-1)  # the blended lower face, resampled through 96 px
    assert changed.sum() > 6 * 1000
    err = lambda out: np.abs(out[changed].astype(float) - source[changed]).mean()  # noqa: E731
    assert err(plain) > 1.0 and err(kept) < 0.2 * err(plain)
