"""Synthetic talking faces: visemes, espeak speech, drawn/photo faces, clips on disk, CLI."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from lipsync.data.synthetic import (
    EspeakError,
    Phoneme,
    PhotoIdentity,
    SpeechParams,
    generate,
    make_clip,
    mouth_from_audio,
    mouth_track,
    read_sidecar,
    render_face,
    sample_clip_spec,
    synthesize,
    synthesize_clip,
)
from lipsync.data.synthetic.__main__ import main as cli_main
from lipsync.data.synthetic.clip import ClipSpec, _clip_audio
from lipsync.data.synthetic.faces import identity_from_dict, identity_to_dict, sample_identity
from lipsync.data.synthetic.landmarks import detect_face
from lipsync.data.synthetic.visemes import VISEMES, phoneme_visemes


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("clip"), seed=3, duration=2.0)


def _phonemes(spec):
    return [Phoneme(s, a, b) for s, a, b in spec]


# ---------------------------------------------------------------- visemes
@pytest.mark.parametrize(
    "symbol, expected",
    [
        ("p", ("bilabial",)),
        ("m", ("bilabial",)),
        ("f", ("labiodental",)),
        ("aI", ("a", "i")),
        ("oU", ("ou", "u")),
        ("t[", ("alveolar",)),
        ("@2", ("schwa",)),
        ("_:", ("rest",)),
        ("u:", ("u",)),
        ("O@", ("o", "schwa")),
        ("Q7", ("schwa",)),
    ],
)
def test_phoneme_visemes(symbol, expected):
    assert phoneme_visemes(symbol) == expected


def test_mouth_track_closes_for_bilabials_and_opens_for_vowels():
    ph = _phonemes(
        [
            ("_", 0.0, 0.2),
            ("m", 0.2, 0.3),
            ("A:", 0.3, 0.6),
            ("p", 0.6, 0.72),
            ("A:", 0.72, 1.0),
            ("_:", 1.0, 1.6),
        ]
    )
    track = mouth_track(ph, 40, 25.0)
    assert track.shape == (40, 4) and track.dtype == np.float32
    assert track.min() >= 0 and track.max() <= 1
    open_ = track[:, 0]
    assert open_[10:14].max() > 0.6  # "ah" at 0.4-0.56 s
    assert open_[15:17].min() < 0.2  # "p" closure at 0.6-0.72 s, between two open vowels
    assert open_[:3].max() < 0.05 and open_[-8:].max() < 0.05  # silence: lips closed
    assert np.abs(np.diff(track, axis=0)).max() < 0.5  # coarticulation: no jumps


def test_mouth_track_rounding_and_spreading():
    u = mouth_track(_phonemes([("u:", 0.0, 0.5)]), 12, 25.0)
    i = mouth_track(_phonemes([("i:", 0.0, 0.5)]), 12, 25.0)
    assert u[5, 2] > 0.8 and u[5, 1] < 0.3  # "oo": rounded, narrow
    assert i[5, 1] > 0.8 and i[5, 2] < 0.1  # "ee": spread
    assert VISEMES["bilabial"][1] > VISEMES["velar"][1]


def test_mouth_track_articulation_and_offset():
    ph = _phonemes([("A:", 0.0, 0.4)])
    base = mouth_track(ph, 25, 25.0)
    assert np.allclose(mouth_track(ph, 25, 25.0, articulation=0.5)[:, 0], base[:, 0] * 0.5, atol=1e-6)
    shifted = mouth_track(ph, 25, 25.0, offset=0.4)
    assert shifted[:8, 0].max() < 0.05 and shifted[12:18, 0].max() > 0.7


def test_mouth_from_audio_follows_loudness():
    sr = 16000
    t = np.arange(sr * 2) / sr
    wav = (np.sin(2 * np.pi * 500 * t) * (t > 1.0)).astype(np.float32)  # silent, then loud
    track = mouth_from_audio(wav, 50, 25.0)
    assert track[:20, 0].max() < 0.05 and track[30:, 0].min() > 0.8


# ---------------------------------------------------------------- speech
def test_synthesize_gives_timed_phonemes():
    utt = synthesize(SpeechParams("Bob, open the window.", voice="en-us", rate=170))
    assert utt.sample_rate == 16000 and utt.wav.dtype == np.float32
    assert 0.7 < utt.duration < 3.0 and np.abs(utt.wav).max() > 0.05
    starts = [p.start for p in utt.phonemes]
    assert starts == sorted(starts) and utt.phonemes[-1].end <= utt.duration + 1e-6
    symbols = [p.symbol for p in utt.phonemes]
    assert "b" in symbols and "w" in symbols
    # espeak's timing is real: the audio is quiet during the closure-less pause symbols at the end
    spoken_end = max(p.end for p in utt.phonemes if not p.symbol.startswith("_"))
    tail = utt.wav[int(spoken_end * 16000) + 800 :]
    assert len(tail) == 0 or np.abs(tail).max() < 0.02


def test_synthesize_is_deterministic_and_voices_differ():
    p = SpeechParams("Please bring five apples.", voice="en", variant="f2", rate=150, pitch=60)
    a = synthesize.__wrapped__(p)
    b = synthesize.__wrapped__(p)
    assert np.array_equal(a.wav, b.wav) and a.phonemes == b.phonemes
    other = synthesize(
        SpeechParams("Please bring five apples.", voice="en", variant="m3", rate=150, pitch=30)
    )
    assert len(other.wav) != len(a.wav) or not np.allclose(other.wav, a.wav)


def test_missing_espeak_is_a_clear_error():
    with pytest.raises(EspeakError, match="apt-get install espeak-ng"):
        synthesize.__wrapped__(SpeechParams("hello"), library="/nonexistent/libespeak-ng.so.1")
    with pytest.raises(EspeakError, match="no voice 'zz-nothing'"):
        synthesize(SpeechParams("hello", voice="zz-nothing"))


# ---------------------------------------------------------------- identities
def test_identity_round_trip_and_variety():
    rng = np.random.default_rng(0)
    idents = [sample_identity(rng, photo_fraction=0.3) for _ in range(30)]
    for ident in idents:
        assert identity_from_dict(json.loads(json.dumps(identity_to_dict(ident)))) == ident
    drawn = [i for i in idents if i.kind == "drawn"]
    assert any(i.kind == "photo" for i in idents)
    assert len({i.skin for i in drawn}) == len(drawn) and len({i.hair_style for i in drawn}) >= 3
    with pytest.raises(ValueError, match="identity kind"):
        identity_from_dict({"kind": "cartoon"})
    with pytest.raises(ValueError, match="unknown drawn identity fields"):
        identity_from_dict({**identity_to_dict(drawn[0]), "tail": 1})


# ---------------------------------------------------------------- clips
def test_make_clip_writes_video_audio_and_ground_truth(clip_files):
    with av.open(str(clip_files.video)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert v.codec_context.name == "h264" and a.codec_context.name == "aac"
        assert (v.width, v.height) == (256, 256) and a.rate == 16000
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 50
    track = np.load(clip_files.track)
    assert track["mouth"].shape == (50, 4) and track["face_box"].shape == (50, 4)
    assert track["mouth_box"].shape == (50, 4) and track["pose"].shape == (50, 6)
    assert list(track["params"]) == ["open", "width", "round", "teeth"]
    assert track["mouth"][:, 0].max() > 0.3  # the face speaks
    box = track["face_box"]
    height = box[:, 3] - box[:, 1]
    assert (height > 0.4 * 256).all() and (height < 0.8 * 256).all()
    spec, side = read_sidecar(clip_files.sidecar)
    assert side["n_frames"] == 50 and spec.duration == 2.0 and spec.seed == 3
    assert ClipSpec.from_dict(spec.to_dict()) == spec and side["phonemes"]
    with pytest.raises(ValueError, match="not a readable synthetic-clip sidecar"):
        read_sidecar(clip_files.video.with_name("missing.json"))


def test_clip_audio_is_in_sync_with_the_video(clip_files):
    """The decoded AAC track starts with the first frame (encoder priming is trimmed on decode)."""
    from audio import load_audio

    spec, _ = read_sidecar(clip_files.sidecar)
    expected, _ = _clip_audio(spec, synthesize(spec.speech))
    decoded = load_audio(clip_files.video)
    assert len(decoded) >= len(expected)
    n = len(expected)
    lags = range(-1600, 1601, 8)
    score = [
        float(np.dot(expected[max(0, k) : n + min(0, k)], decoded[max(0, -k) : n - max(0, k)])) for k in lags
    ]
    assert abs(lags[int(np.argmax(score))]) <= 16  # within 1 ms (a 64 ms lag would be 1024 samples)


def test_clip_is_deterministic_for_a_seed(clip_files, tmp_path):
    again = make_clip(tmp_path, seed=3, duration=2.0)
    for a, b in (
        (clip_files.video, again.video),
        (clip_files.track, again.track),
        (clip_files.sidecar, again.sidecar),
    ):
        assert a.read_bytes() == b.read_bytes()
    other = sample_clip_spec(4, 2.0)
    assert other != read_sidecar(clip_files.sidecar)[0]


def test_rerender_changes_only_the_mouth(clip_files):
    spec, _ = read_sidecar(clip_files.sidecar)
    clip = synthesize_clip(spec)
    same = render_face(spec, clip.mouth)
    assert np.array_equal(same.frames, clip.frames)  # re-render reproduces the clip exactly
    still = np.tile(np.array([[0.0, 0.5, 0.0, 0.0]], np.float32), (len(clip.mouth), 1))
    other = render_face(spec, still)
    diff = np.abs(other.frames.astype(int) - clip.frames.astype(int)).max(-1)
    for i in range(len(diff)):
        x1, y1, x2, y2 = clip.face_box[i]
        top = int(y1 + 0.45 * (y2 - y1))  # above the nose: eyes, brows, hair, background
        assert diff[i, :top].max() == 0
    assert diff.max() > 60  # the mouth did change


def test_faces_are_detected_in_a_batch_of_clips():
    """mediapipe (through marlin.face) finds the face in >= 95% of frames, drawn and photo faces."""
    found = total = 0
    kinds = set()
    for seed in range(10):
        spec = sample_clip_spec(100 + seed, 1.0, photo_fraction=0.4)
        kinds.add(spec.identity.kind)
        clip = synthesize_clip(spec)
        for i in range(0, len(clip.frames), 5):
            det = detect_face(clip.frames[i])
            total += 1
            if det is None:
                continue
            found += 1
            gx1, gy1, gx2, gy2 = clip.face_box[i]
            lx1, ly1 = det.landmarks.min(0)
            lx2, ly2 = det.landmarks.max(0)
            iw = max(0.0, min(gx2, lx2) - max(gx1, lx1))
            ih = max(0.0, min(gy2, ly2) - max(gy1, ly1))
            inter = iw * ih
            union = (gx2 - gx1) * (gy2 - gy1) + (lx2 - lx1) * (ly2 - ly1) - inter
            assert inter / union > 0.5, (seed, i)  # the ground-truth face box matches the detected face
    assert kinds == {"drawn", "photo"}
    assert found / total >= 0.95, f"face found in {found}/{total} frames"


def test_photo_faces_get_a_new_mouth():
    spec = sample_clip_spec(7, 0.6)
    for photo in ("astronaut", "grace_hopper"):
        photo_spec = ClipSpec(**{**spec.__dict__, "identity": PhotoIdentity(photo=photo, glasses="round")})
        closed = np.tile(np.array([[0.0, 0.5, 0.0, 0.0]], np.float32), (3, 1))
        wide = np.tile(np.array([[1.0, 0.5, 0.0, 0.6]], np.float32), (3, 1))
        a, b = render_face(photo_spec, closed), render_face(photo_spec, wide)
        x1, y1, x2, y2 = a.mouth_box[0].astype(int)
        region = np.abs(a.frames[0].astype(int) - b.frames[0].astype(int))[y1 : y2 + 20, x1:x2]
        assert region.mean() > 15  # the drawn mouth opens on the photo
        assert (b.mouth_box[0, 3] - b.mouth_box[0, 1]) > 1.5 * (a.mouth_box[0, 3] - a.mouth_box[0, 1])


# ---------------------------------------------------------------- generate / CLI
def test_cli_generates_a_resumable_data_set(tmp_path, capsys):
    out = tmp_path / "set"
    args = [
        "--out",
        str(out),
        "--clips",
        "2",
        "--seed",
        "1",
        "--min-duration",
        "0.8",
        "--max-duration",
        "1.0",
        "--identities",
        "1",
        "--size",
        "160x128",
        "--no-progress",
    ]
    assert cli_main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["name"] for c in manifest["clips"]] == ["clip_00000", "clip_00001"]
    specs = [read_sidecar(out / c["sidecar"])[0] for c in manifest["clips"]]
    assert (
        specs[0].identity == specs[1].identity and specs[0].speech != specs[1].speech
    )  # one face, two utterances
    assert specs[0].size == (128, 160)
    stamp = (out / "clip_00000.mp4").stat().st_mtime_ns
    files = generate(
        out, 2, seed=1, min_duration=0.8, max_duration=1.0, identities=1, size=(128, 160), progress=False
    )
    assert (out / "clip_00000.mp4").stat().st_mtime_ns == stamp and len(files) == 2  # kept, not redone
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def _run_cli(args: list[str]) -> int:
    try:
        return cli_main(args)
    except SystemExit as e:  # argparse type errors exit from inside parse_args
        return e.code


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--clips", "0"], "--clips must be >= 1"),
        (["--clips", "2", "--min-duration", "3", "--max-duration", "2"], "--min-duration"),
        (["--clips", "2", "--size", "big"], "WIDTHxHEIGHT"),
        (["--clips", "2", "--photo-fraction", "1.5"], "--photo-fraction"),
    ],
)
def test_cli_rejects_bad_input_with_one_line(tmp_path, capsys, bad, message):
    assert _run_cli(["--out", str(tmp_path / "x"), *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "x").exists()
