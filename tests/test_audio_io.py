"""load_audio: every common container decodes to mono float32 at the asked rate; bad input -> AudioError."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from media import speech_like, write_video

import audio
import audio.io
from audio import AudioError, load_audio

TONE_HZ = 440.0
DURATION = 1.5


def tone(sr: int, seconds: float = DURATION, hz: float = TONE_HZ, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def write_audio_av(path: Path, samples: np.ndarray, sr: int, codec: str, rate: int | None = None) -> Path:
    """Encode (N,) or (N, C) float samples with PyAV into an audio-only file."""
    pcm = samples if samples.ndim == 2 else samples[:, None]
    layout = {1: "mono", 2: "stereo"}[pcm.shape[1]]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate or sr)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray((pcm * 32767).astype(np.int16).reshape(1, -1), format="s16",
                                           layout=layout)
        frame.sample_rate = sr
        resampler = av.AudioResampler(format=stream.format.name, layout=layout, rate=stream.rate)
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def write_video_then_audio(path: Path, samples: np.ndarray, sr: int = 16000) -> Path:
    """A video whose stream 0 is video and stream 1 the (mono aac) audio."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        as_ = out.add_stream("aac", rate=sr)
        as_.layout = "mono"
        for i in range(int(DURATION * 25)):
            img = np.full((48, 64, 3), 8 * i % 255, np.uint8)
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        pcm = (samples * 32767).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = sr
        resampler = av.AudioResampler(format=as_.format.name, layout="mono", rate=sr)
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in as_.encode(f):
                out.mux(packet)
        for packet in as_.encode(None):
            out.mux(packet)
    return path


def dominant_hz(wav: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.argmax(spectrum) * sr / len(wav))


def frames(n: int = 38) -> list[np.ndarray]:
    return [np.full((48, 64, 3), 10 + 5 * i, np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("audio_io")
    stereo44 = np.stack([tone(44100), tone(44100)], axis=1)
    sf.write(d / "stereo44k.wav", stereo44, 44100, subtype="PCM_16")
    sf.write(d / "mono22k.flac", tone(22050), 22050)
    write_audio_av(d / "stereo44k.mp3", stereo44, 44100, "libmp3lame")
    write_audio_av(d / "mono44k.m4a", tone(44100), 44100, "aac")
    write_audio_av(d / "stereo48k.ogg", np.stack([tone(48000)] * 2, axis=1), 48000, "libopus")
    for ext in (".mp4", ".mov", ".mkv", ".webm"):
        codec = "libvpx-vp9" if ext == ".webm" else "libx264"
        write_video(d / f"video{ext}", frames(), fps=25, audio=tone(16000), sr=16000, codec=codec)
    write_video_then_audio(d / "audio_second.mkv", tone(16000))
    write_video(d / "silent_video.mp4", frames(10), fps=25)  # no audio stream
    return d


AAC_SLACK = 2048 / 16000  # aac encoders add up to 1024 priming + 1024 padding samples
FORMATS = {  # file -> duration tolerance in s: lossless is exact, lossy codecs add encoder padding
    "stereo44k.wav": 1e-3, "mono22k.flac": 1e-3, "stereo44k.mp3": 0.06, "mono44k.m4a": AAC_SLACK,
    "stereo48k.ogg": 0.03, "video.mp4": AAC_SLACK, "video.mov": AAC_SLACK, "video.mkv": AAC_SLACK,
    "video.webm": 0.03, "audio_second.mkv": AAC_SLACK,
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_decodes_to_mono_16k_with_its_content(media_dir, name):
    wav = load_audio(media_dir / name)
    assert wav.dtype == np.float32 and wav.ndim == 1 and wav.flags.c_contiguous
    assert abs(len(wav) / 16000 - DURATION) <= FORMATS[name]
    assert abs(dominant_hz(wav, 16000) - TONE_HZ) < 2.0
    mid = wav[len(wav) // 4: 3 * len(wav) // 4]  # amplitude survives (steady part, lossy codecs ~10%)
    assert 0.4 < np.sqrt(2 * np.mean(mid ** 2)) < 0.6


def test_audio_is_found_when_it_is_not_stream_zero(media_dir):
    with av.open(str(media_dir / "audio_second.mkv")) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
    assert len(load_audio(media_dir / "audio_second.mkv")) > 0


def test_stereo_is_averaged_and_lossless_audio_is_exact(tmp_path):
    left, right = tone(16000, hz=300, amp=0.6), tone(16000, hz=1100, amp=0.2)
    sf.write(tmp_path / "lr.wav", np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    wav = load_audio(tmp_path / "lr.wav")
    np.testing.assert_allclose(wav, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("sr_out", [16000, 8000, 22050])
def test_resampling_keeps_the_signal(tmp_path, sr_out):
    sf.write(tmp_path / "48k.wav", tone(48000, hz=1000), 48000, subtype="FLOAT")
    wav = load_audio(str(tmp_path / "48k.wav"), sr=sr_out)
    assert abs(len(wav) - DURATION * sr_out) <= 2
    expected = tone(sr_out, hz=1000)[: len(wav)]
    core = slice(sr_out // 10, len(wav) - sr_out // 10)  # resampler filter edges aside
    np.testing.assert_allclose(wav[core], expected[core], atol=0.02)


def test_speech_survives_a_lossy_round_trip(tmp_path):
    speech = speech_like(2.0, seed=3)
    write_audio_av(tmp_path / "speech.m4a", speech, 16000, "aac")
    wav = load_audio(tmp_path / "speech.m4a")
    # aac adds encoder delay: align by cross-correlation, then compare the waveforms
    lag = int(np.argmax(np.correlate(wav[:8000], speech[:4000], mode="valid")))
    n = min(len(speech), len(wav) - lag)
    assert lag < 2100 and np.corrcoef(wav[lag:lag + n], speech[:n])[0, 1] > 0.95


def test_small_chunks_give_the_same_result(media_dir, monkeypatch):
    expected = load_audio(media_dir / "stereo44k.mp3")
    monkeypatch.setattr(audio.io, "_CHUNK_SAMPLES", 1000)  # ~24 chunks instead of one
    np.testing.assert_array_equal(load_audio(media_dir / "stereo44k.mp3"), expected)


def test_chunked_buffer_joins_in_order_and_frees_chunks():
    buf = audio.io._ChunkedBuffer(chunk_samples=5)
    pieces = [np.arange(k, dtype=np.float32) + 10 * k for k in (4, 1, 7, 0, 2, 5)]
    for piece in pieces:
        buf.append(piece)
    assert len(buf.chunks) == 4  # 19 samples in chunks of 5
    out = buf.finish()
    np.testing.assert_array_equal(out, np.concatenate(pieces))
    assert out.shape == (19,) and out.dtype == np.float32 and buf.chunks == []


def check_error(path, *reason_words: str) -> None:
    with pytest.raises(AudioError) as info:
        load_audio(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message, message
    for word in reason_words:
        assert word in message, message


def test_missing_path(tmp_path):
    check_error(tmp_path / "nope.wav", "no such file")


def test_directory(tmp_path):
    check_error(tmp_path, "directory")


def test_text_file_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is a text file, not audio\n" * 40)
    check_error(path, "not a readable audio or video file")


@pytest.mark.parametrize("name", ["noise.mp3", "noise.wav", "noise.m4a"])
def test_corrupt_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(7).bytes(30000))
    check_error(path, "not a readable audio or video file")


def test_corrupt_packets_become_silence_and_keep_the_timing(media_dir, tmp_path):
    data = bytearray((media_dir / "mono44k.m4a").read_bytes())
    start = len(data) // 3
    data[start:start + 3000] = np.random.default_rng(0).bytes(3000)
    path = tmp_path / "damaged.m4a"
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match="undecodable audio packet"):
        wav = load_audio(path)
    assert abs(len(wav) / 16000 - DURATION) <= AAC_SLACK and np.isfinite(wav).all()
    assert abs(dominant_hz(wav[-8000:], 16000) - TONE_HZ) < 3  # the audio after the damage is intact


def test_truncated_header(media_dir, tmp_path):
    path = tmp_path / "cut.wav"
    path.write_bytes((media_dir / "stereo44k.wav").read_bytes()[:30])
    check_error(path, "not a readable")


def test_video_without_audio_stream(media_dir):
    check_error(media_dir / "silent_video.mp4", "no audio stream", "video")


def test_zero_length_audio(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    check_error(path, "no audio samples")


@pytest.mark.parametrize("sr", [0, -16000, 16000.5, "16000", True])
def test_bad_sample_rate(media_dir, sr):
    with pytest.raises(AudioError, match="sample rate"):
        load_audio(media_dir / "mono22k.flac", sr=sr)


def test_public_api_is_reexported():
    for name in audio.__all__:
        assert getattr(audio, name) is not None
    assert (audio.SAMPLE_RATE, audio.MEL_FPS, audio.MEL_WINDOW, audio.N_MELS) == (16000, 80, 16, 80)
