"""Benchmark of the dubbing engine: end-to-end fps, per-stage times, peak memory.

    python bench/infer.py                         # everything (slow: includes a 5 min input)
    python bench/infer.py --quick                 # 720p only, 4 s clips, 60 s "long" input
    python bench/infer.py --sizes 720 --models tiny --skip-memory

For each input size (720p, 1080p) and generator (the tiny registry model, the public
Wav2Lip-size generator; ``--models default`` adds the shipped default checkpoint, with its warp
and drawn mouth) it dubs a clip with

* ``engine``: ``lipsync.LipSync.dub`` with its default options (streaming, threaded
  decode/detect/encode, BatchNorm folded, bf16 where the CPU has it and the model agrees with
  fp32, face detector on every 3rd frame with the face mesh following in between, x264's
  default threads), and
* ``naive``: a straightforward implementation like the public release's script: every frame
  decoded into a list first, then detection on every frame, cropping, generation (eager fp32
  model, batches of the same size), blending and encoding (x264's default threads), one stage
  after the other.

and prints frames per second, seconds per stage, CPU seconds and peak RSS.  Each run is a
separate subprocess, so peak RSS is per run.  The memory part dubs a 10 s and a 5 min input at
720p with the engine: peak RSS must be about equal (it is bounded by the frames in flight).
The naive implementation's peak RSS grows by one decoded frame per input frame (2.6 MiB at
720p), so it is measured on the 10 s input only and its 5 min figure is extrapolated.

Inputs are generated (a real public-domain face photo moving over a background, plus
speech-like audio) into a temporary folder; weights are random (speed does not depend on them),
except the shipped default's.  The naive implementation gives a generator only faces and audio,
so it is not run for the default, whose copy gate and drawn mouth also take each face's mouth
opening and position (the engine and the CPU profile give them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # media.py: the test suite's face photos and speech

SIZES = {"720": (720, 1280), "1080": (1080, 1920), "480": (480, 854)}
MODELS = {"tiny": "marlin_lip_tiny", "wav2lip": "wav2lip", "default": None}  # None: the shipped file
DEFAULT = ROOT / "checkpoints" / "lipsync_default.safetensors"


# ----------------------------------------------------------------------------- inputs
def make_video(path: Path, size: tuple[int, int], seconds: float, fps: int = 25) -> Path:
    """A moving real face over a plain background, with speech, written frame by frame."""
    import av
    from media import face_photo, place, speech_like

    h, w = size
    photo = face_photo("astronaut")
    n = int(round(seconds * fps))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "20", "preset": "ultrafast"}
        for i in range(n):
            cx, cy = w / 2 + 0.05 * w * np.sin(i / 20), h / 2 + 0.03 * h * np.cos(i / 25)
            img = place(photo, (h, w), (cx, cy), 0.8 * h / photo.shape[0] * (1 + 0.05 * np.sin(i / 30)))
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
    import soundfile as sf

    sf.write(path.with_suffix(".wav"), speech_like(seconds, seed=1), 16000)
    return path


def make_checkpoint(path: Path, name: str) -> Path:
    """A checkpoint of random weights for a registry model at ``path``; the shipped default's file."""
    if MODELS[name] is None:
        return DEFAULT
    from lipsync.checkpoints import save

    return save(path, make_model(name))


def make_model(name: str):
    import torch

    from lipsync.checkpoints import load
    from lipsync.models import create_model

    if MODELS[name] is None:
        return load(DEFAULT).model
    torch.manual_seed(0)
    return create_model(MODELS[name])


# ----------------------------------------------------------------------------- naive baseline
def naive_dub(video: Path, audio: Path, out: Path, model, batch_size: int) -> dict:
    """Everything in memory, one stage after the other (the public release's structure)."""
    import torch

    from audio import load_audio, mel_window_starts, melspectrogram
    from lipsync.inference.engine import MelSource
    from lipsync.inference.writer import DubWriter
    from marlin.face import FaceDetector, FaceTracker, TrackConfig, paste_back, wav2lip_crop
    from marlin.video import iter_frames, probe

    times = {}
    t0 = time.perf_counter()
    info = probe(video)
    frames = [f.image for f in iter_frames(video, fps=info.fps)]  # every frame in RAM
    times["decode"] = time.perf_counter() - t0
    wav = load_audio(audio)
    mel = melspectrogram(wav)
    n = min(len(frames), round(len(wav) / 16000 * float(info.fps)))
    mels = MelSource(mel, mel_window_starts(mel, info.fps, n_frames=n))
    t0 = time.perf_counter()
    tracker = FaceTracker(TrackConfig(), FaceDetector("mediapipe"))
    tracks = []
    for img in frames[:n]:
        tracks += tracker.push(img)
    tracks += tracker.flush()
    times["detect"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    crops = [wav2lip_crop(img, tr.box, (0, 10, 0, 0), model.img_size) for img, tr in zip(frames, tracks)]
    times["crop"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    window = model.frames_per_window
    generated = []
    with torch.no_grad():
        for s in range(0, n, batch_size):
            idx = list(range(s, min(n, s + batch_size)))
            idx += [idx[-1]] * (-len(idx) % window)
            x = torch.from_numpy(np.stack([crops[i][0] for i in idx])).permute(0, 3, 1, 2).float() / 255
            masked = x.clone()
            masked[:, :, x.shape[2] // 2:] = 0
            faces = torch.cat([masked, x], 1)
            m = torch.from_numpy(mels.windows(idx)).unsqueeze(1)
            if window > 1:
                b = len(idx) // window
                faces = faces.view(b, window, 6, *faces.shape[2:]).transpose(1, 2)
                m = m.view(b, window, 1, 80, 16)
            y = model(faces, m)
            if window > 1:
                y = y.transpose(1, 2).reshape(len(idx), 3, *y.shape[3:])
            y = (y.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
            generated += list(y[: min(n, s + batch_size) - s])
    times["generate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    outputs = [paste_back(frames[i], generated[i], crops[i][1], tracks[i].landmarks, given=crops[i][0])
               for i in range(n)]  # as the engine pastes by default (--keep-detail)
    times["blend"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    writer = DubWriter(out, (info.width, info.height), info.fps, str(audio), len(wav) / 16000,
                       threads=0)
    for img in outputs:
        writer.write(img)
    writer.close()
    times["encode"] = time.perf_counter() - t0
    return {"frames": n, "stage_times": times}


# ----------------------------------------------------------------------------- CPU profile
def stage_profile(size: tuple[int, int], models: list[str], n: int = 32) -> dict:
    """CPU milliseconds per frame of each stage, one thread, measured with ``time.process_time``.

    Unlike wall time this hardly depends on what else the machine runs, so it tells what the
    stages cost on an idle CPU; each process is limited to one torch thread and one x264 thread.
    """
    import av
    import torch
    from media import face_photo, place

    from lipsync.inference.engine import _geometry, _opening
    from lipsync.inference.options import DubOptions
    from lipsync.inference.runner import GeneratorRunner
    from marlin.face import FaceDetector, FaceTracker, TrackConfig, paste_back, wav2lip_crop
    from marlin.video import iter_frames

    torch.set_num_threads(1)
    h, w = size
    photo = face_photo("astronaut")
    scale = 0.8 * h / photo.shape[0]
    frames = [place(photo, (h, w), (w / 2 + 20 * np.sin(i / 5), h / 2), scale) for i in range(n)]
    out: dict[str, float] = {}

    def clock(fn, count: int) -> float:
        t = time.process_time()
        fn()
        return (time.process_time() - t) / count * 1000

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.mp4"
        with av.open(str(path), "w") as c:
            s = c.add_stream("libx264", rate=25)
            s.width, s.height, s.pix_fmt, s.options = w, h, "yuv420p", {"crf": "18", "preset": "veryfast"}
            s.codec_context.thread_count = 1

            def encode():
                for f in frames:
                    for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                        c.mux(p)
                for p in s.encode():
                    c.mux(p)

            out["encode"] = clock(encode, n)
        out["decode"] = clock(lambda: sum(1 for _ in iter_frames(path)), n)
    det = FaceDetector("mediapipe")
    every = DubOptions().detect_every
    tracker = FaceTracker(TrackConfig(detect_every=every), det)
    tracker.push(frames[0])
    tracker.flush()
    out[f"detect every {every}"] = clock(lambda: [tracker.push(f) for f in frames[1:]], n - 1)
    tracker = FaceTracker(TrackConfig(), det)
    tracker.push(frames[0])  # model start-up outside the clock
    tracks: list = []
    out["detect"] = clock(lambda: tracks.extend(tracker.push(f) for f in frames[1:]), n - 1)
    tracks = [t for batch in tracks for t in batch] + tracker.flush()
    tk = tracks[len(tracks) // 2]
    crops: list = []
    out["crop"] = clock(lambda: crops.extend(wav2lip_crop(f, tk.box, (0, 10, 0, 0), 96) for f in frames), n)
    out["blend"] = clock(lambda: [paste_back(f, c[0], c[1], tk.landmarks, given=c[0])
                                  for f, c in zip(frames, crops)], n)
    batch = np.stack([c[0] for c in crops])
    mels = np.random.default_rng(0).normal(size=(n, 80, 16)).astype(np.float32)
    openings = np.full(n, _opening(tk), np.float32)  # what the engine gives models that take them
    geometry = np.stack([_geometry(tk, c[1]) for c in crops])
    for model in models:
        m = make_model(model)
        for label, precision, optimize in (("naive", "fp32", False), ("engine", "auto", True)):
            runner = GeneratorRunner(m, torch.device("cpu"), precision, optimize=optimize)
            extra = {k: v for k, v, wanted in (("openings", openings, runner.needs_openings),
                                               ("geometry", geometry, runner.needs_geometry)) if wanted}
            runner(batch[:16], mels[:16], **{k: v[:16] for k, v in extra.items()})
            out[f"generate {model} {label} ({str(runner.dtype).replace('torch.', '')})"] = clock(
                lambda r=runner, e=extra: r(batch, mels, **e), n)
    return out


def print_profile(label: str, prof: dict[str, float], models: list[str]) -> None:
    common = ("decode", "detect", "crop", "blend", "encode")
    print(f"{label}: CPU ms/frame, one thread: " + ", ".join(f"{k} {prof[k]:.1f}" for k in common))
    engine_keys = [k for k in prof if k.startswith("detect every")]
    print(f"{'':<6}engine's settings: " + ", ".join(f"{k} {prof[k]:.1f}" for k in engine_keys))
    base = sum(prof[k] for k in common)
    engine_base = base + sum(prof[k] for k in engine_keys) - prof["detect"]
    for model in models:
        for key, v in prof.items():
            if key.startswith(f"generate {model} "):
                total = (engine_base if " engine " in key else base) + v
                print(f"    {key:<38} {v:7.1f}   all stages {total:6.1f} ms/frame = {1000 / total:5.1f} fps "
                      f"on one idle core", flush=True)


# ----------------------------------------------------------------------------- one run
def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM belongs to the process image; getrusage's
    ru_maxrss would also count the parent's peak, which Linux carries across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere
def worker(args: argparse.Namespace) -> None:
    """Run one configuration and print one JSON line (runs in its own process)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    video, audio, out = Path(args.video), Path(args.video).with_suffix(".wav"), Path(args.out)
    started = time.perf_counter()
    if args.mode == "engine":
        from lipsync import LipSync

        ls = LipSync.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision)
        ls.runner  # noqa: B018 - build it now (BatchNorm folding, precision trial): not part of the run
        load_s = time.perf_counter() - started
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        s = ls.dub(video, audio, out, batch_size=args.batch_size)
        result = {"frames": s.frames, "faces": s.faces_found, "stage_times": s.stage_times.as_dict(),
                  "precision": str(ls.runner.dtype).replace("torch.", "")}
    else:
        from lipsync.checkpoints import load

        model = load(args.checkpoint).model.eval()
        load_s = time.perf_counter() - started
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        result = naive_dub(video, audio, out, model, args.batch_size)
        result["precision"] = "float32"
    wall = time.perf_counter() - t0
    result.update(wall=wall, load=load_s, fps=result["frames"] / wall, cpu=time.process_time() - cpu0,
                  peak_rss_mib=peak_rss_mib())
    print("RESULT " + json.dumps(result), flush=True)


def run_one(mode: str, video: Path, checkpoint: Path, out: Path, batch_size: int, device: str,
            precision: str = "auto") -> dict:
    cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--video", str(video), "--out", str(out),
           "--checkpoint", str(checkpoint), "--batch-size", str(batch_size), "--device", device,
           "--precision", precision]
    env = dict(os.environ, GLOG_minloglevel="2", PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{mode} run failed:\n{res.stderr[-3000:]}")


def _row(label: str, r: dict) -> str:
    st = r["stage_times"]
    stages = " ".join(f"{k[:5]}={st.get(k, 0):.1f}" for k in ("decode", "detect", "marlin", "generate",
                                                              "blend", "encode"))
    return (f"{label:<28} {r['frames']:>5} fr  {r['fps']:6.2f} fps  wall {r['wall']:7.1f}s  "
            f"cpu {r['cpu']:7.1f}s  rss {r['peak_rss_mib']:7.0f} MiB  [{r['precision']}]  {stages}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="720,1080", help="comma-separated input heights (480, 720, 1080)")
    p.add_argument("--models", default="tiny,wav2lip",
                   help="comma-separated: tiny, wav2lip (random weights), default (the shipped checkpoint)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length for the fps runs")
    p.add_argument("--long-seconds", type=float, default=300.0, help="long input for the memory run")
    p.add_argument("--memory-size", default="720", help="input height for the memory runs")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeat", type=int, default=1,
                   help="run each fps configuration this many times (alternating) and keep the fastest: "
                        "wall times on a shared machine are noisy")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--skip-profile", action="store_true", help="skip the per-stage CPU profile")
    p.add_argument("--quick", action="store_true", help="720p, 4 s clips, a 60 s long input")
    p.add_argument("--json", default=None, help="also write all results to this JSON file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="engine", help=argparse.SUPPRESS)
    p.add_argument("--video", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.quick:
        args.sizes, args.seconds, args.long_seconds = "720", 4.0, 60.0
    for option, names, known in (("--models", args.models, MODELS), ("--sizes", args.sizes, SIZES)):
        unknown = [n for n in names.split(",") if n not in known]
        if unknown:
            p.error(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, cuda: {torch.cuda.is_available()}", flush=True)
    results: dict[str, dict] = {}
    if not args.skip_profile:
        for size in args.sizes.split(","):
            prof = stage_profile(SIZES[size], args.models.split(","))
            results[f"{size}p cpu profile"] = prof
            print_profile(f"{size}p", prof, args.models.split(","))
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as tmp:
        d = Path(tmp)
        ckpts = {m: make_checkpoint(d / f"{m}.safetensors", m) for m in args.models.split(",")}
        for size in args.sizes.split(","):
            video = make_video(d / f"in_{size}.mp4", SIZES[size], args.seconds)
            for model, ckpt in ckpts.items():
                modes = ("engine",) if args.skip_naive or MODELS[model] is None else ("engine", "naive")
                for _ in range(max(1, args.repeat)):
                    for mode in modes:
                        key = f"{size}p {model} {mode}"
                        r = run_one(mode, video, ckpt, d / "out.mp4", args.batch_size, args.device)
                        if key not in results or r["fps"] > results[key]["fps"]:
                            results[key] = r
                for mode in modes:
                    key = f"{size}p {model} {mode}"
                    print(_row(key, results[key]), flush=True)
                if "naive" in modes:
                    e, n = results[f"{size}p {model} engine"], results[f"{size}p {model} naive"]
                    print(f"{'':<28} engine / naive throughput: {e['fps'] / n['fps']:.2f}x", flush=True)
        if not args.skip_memory:
            msize = args.memory_size
            tiny = ckpts.get("tiny") or make_checkpoint(d / "tiny.safetensors", "tiny")
            for label, seconds in (("short", 10.0), ("long", args.long_seconds)):
                video = make_video(d / f"mem_{label}.mp4", SIZES[msize], seconds)
                key = f"{msize}p {seconds:g}s tiny engine"
                results[key] = run_one("engine", video, tiny, d / "out.mp4", args.batch_size, args.device)
                print(_row(key, results[key]), flush=True)
                if label == "short" and not args.skip_naive:
                    key = f"{msize}p {seconds:g}s tiny naive"
                    results[key] = run_one("naive", video, tiny, d / "out.mp4", args.batch_size, args.device)
                    print(_row(key, results[key]), flush=True)
                video.unlink()
            short = results[f"{msize}p 10s tiny engine"]["peak_rss_mib"]
            long = results[f"{msize}p {args.long_seconds:g}s tiny engine"]["peak_rss_mib"]
            print(f"engine peak RSS: 10 s input {short:.0f} MiB, {args.long_seconds:g} s input "
                  f"{long:.0f} MiB (ratio {long / short:.2f})", flush=True)
            if not args.skip_naive:
                h, w = SIZES[msize]
                naive = results[f"{msize}p 10s tiny naive"]["peak_rss_mib"]
                extra = (args.long_seconds - 10) * 25 * h * w * 3 * 2 / 2**20  # input + output frame lists
                print(f"naive peak RSS: 10 s input {naive:.0f} MiB; {args.long_seconds:g} s input would "
                      f"need about {naive + extra:.0f} MiB (two frame lists of {h}x{w})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
