"""The README's first Quick start command: dub the bundled sample with the shipped weights."""

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "checkpoints" / "lipsync_default.safetensors"
ASSETS = ROOT / "demos" / "assets"


def test_shipped_weights_are_small_safetensors_with_metadata():
    files = sorted((ROOT / "checkpoints").glob("*.safetensors"))
    assert DEFAULT in files
    assert sum(f.stat().st_size for f in files) <= 50 * 2**20
    with safe_open(str(DEFAULT), "pt") as f:
        meta = f.metadata()
    assert meta["audio_convention"] == "inference"
    assert "synthetic" in json.dumps(meta).lower()  # the card says what it was trained on


def test_readme_quick_start_dubs_the_bundled_sample(tmp_path):
    video, audio = ASSETS / "speaker.mp4", ASSETS / "speech.wav"
    out = tmp_path / "dubbed.mp4"
    res = subprocess.run([sys.executable, "-m", "lipsync.infer", "--video", str(video), "--audio", str(audio),
                          "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dubbed.mp4"]  # nothing else written
    wav, sr = sf.read(str(audio))
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert {s.type for s in c.streams} == {"video", "audio"}
        assert (v.codec_context.width, v.codec_context.height) == (256, 256)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert abs(len(frames) / 25 - len(wav) / sr) <= 1 / 25
    with av.open(str(video)) as c:
        first_in = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    diff = np.abs(frames[0].astype(int) - first_in.astype(int)).mean(axis=2)
    assert diff[:96].mean() < 3  # the top of the frame (hair, forehead) is left as it was
    assert diff[140:200, 90:170].mean() > diff[:96].mean()  # the mouth region was redrawn


def test_shipped_generators_load_and_dub_one_window():
    """The default (trained on counterfactual references: it sees the whole face) and the earlier
    one that hides the reference's mouth load from their files alone and keep the top of the face."""
    from lipsync.checkpoints import load

    loaded = load(DEFAULT)
    cfg = loaded.model.config
    assert cfg.mouth_input and cfg.warp and cfg.composite and cfg.reference_mask is None
    assert cfg.copy_bias > 0  # re-saved to keep more of the frame (checkpoints/README.md)
    assert cfg.mouth_reference and cfg.copy_gate > 0  # told, and gated by, each frame's own opening
    assert "synthetic" in loaded.meta["trained_on"] and "counterfactual" in loaded.meta["recipe"]
    _dubs_one_window(loaded.model.eval())
    masked = load(ROOT / "checkpoints" / "lipsync_masked_synth.safetensors")
    assert masked.model.config.reference_mask is not None and not masked.model.config.mouth_input
    assert "synthetic" in masked.meta["trained_on"]
    _dubs_one_window(masked.model.eval())


def _dubs_one_window(model) -> None:
    import torch

    with av.open(str(ASSETS / "speaker.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(16), c.decode(video=0))]
    # the centre of the frame as a face-sized square, 96 px; the masked target and the reference
    x = torch.from_numpy(np.stack(frames)[:, 48:208, 48:208]).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(96, 96), mode="area")
    masked = x.clone()
    masked[:, :, 48:] = 0
    faces = torch.cat([masked, x], 1).transpose(0, 1)[None]  # (1, 6, 16, 96, 96)
    mels = torch.zeros(1, 16, 1, 80, 16)
    with torch.no_grad():
        out = model(faces, mels)
    assert out.shape == (1, 3, 16, 96, 96)
    assert (out[0, :, :, :40] - x.transpose(0, 1)[:, :, :40]).abs().mean() < 0.05  # upper face copied
