"""Dub a video with new speech: ``python -m lipsync.infer --video V --audio A [--out O] [options]``.

The face in V is re-animated to speak A and written to O (mp4, h264 + aac, V's size and frame
rate, A's duration).  ``--pairs pairs.csv`` dubs many rows with one loaded model.  Bad input
prints one ``error: ...`` line and exits with status 2; nothing is written then.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import os
import sys
from pathlib import Path

# mediapipe's C++ logging would otherwise print several lines to stderr per run
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from lipsync.inference.options import (  # noqa: E402 - after the environment above
    BLEND_REGIONS,
    FACE_BACKENDS,
    LOOP_MODES,
    PRECISIONS,
    DubError,
    DubOptions,
    FaceSelect,
)
from marlin.cli import HelpFormatter  # noqa: E402

log = logging.getLogger("lipsync.infer")

EXIT_BAD_INPUT = 2
EXIT_SOME_FAILED = 1


def _ints(text: str, n: int, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(round(float(v))) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"{what} must be {n} comma-separated numbers, got {text!r}")
    return values


def _face(text: str) -> FaceSelect:
    try:
        return FaceSelect.parse(text)
    except DubError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def build_parser() -> argparse.ArgumentParser:
    d = DubOptions()
    p = argparse.ArgumentParser(
        prog="python -m lipsync.infer", formatter_class=HelpFormatter,
        description="Lip-sync a video (or a still image) to new speech. Output: mp4 (h264 + aac) with the "
                    "video's size and frame rate and the audio's duration.")
    io = p.add_argument_group("input and output")
    io.add_argument("--video", help="video file or still image (jpg/png) with the face to dub")
    io.add_argument("--audio", help="the new speech: any audio file, or a video whose audio track to use")
    io.add_argument("--out", help="output .mp4 (default: <video folder>/<video name>_dubbed.mp4)")
    io.add_argument("--pairs", metavar="CSV",
                    help="dub many: a CSV with columns video,audio[,out] (header optional; relative "
                         "paths are relative to the CSV's folder); one failed row does not stop the rest")
    io.add_argument("--checkpoint", help="generator weights: ours (.safetensors) or the public "
                                         "wav2lip.pth / wav2lip_gan.pth (default: "
                                         "checkpoints/lipsync_default.safetensors)")
    io.add_argument("--fps", type=float, default=d.fps, help="frame rate for a still-image --video")
    io.add_argument("--loop", choices=LOOP_MODES, default=d.loop,
                    help="when the audio outlasts the video: play it forward and backward (pingpong), "
                         "restart it (loop) or hold the last frame (freeze)")
    io.add_argument("--keep-video", action=argparse.BooleanOptionalAction, default=d.keep_video,
                    help="when the video outlasts the audio, keep its remaining frames unchanged with "
                         "silence (default: cut the video at the end of the audio)")
    io.add_argument("--crf", type=int, default=d.crf,
                    help="x264 constant rate factor: 0 lossless .. 51 worst; 18 is visually close to "
                         "lossless")
    io.add_argument("--preset", default=d.preset,
                    help="x264 speed preset (ultrafast .. veryslow). veryfast: on a noisy 720p test clip "
                         "at crf 18, 'faster' took 40%% more CPU for +0.2 dB PSNR, and 'superfast' kept "
                         "the per-pixel noise, writing 12x larger files with more CPU, not less")

    face = p.add_argument_group("face")
    face.add_argument("--face-backend", choices=FACE_BACKENDS, default=d.face_backend,
                      help="face detector (fan needs face-alignment's weights in the torch hub cache)")
    face.add_argument("--face", type=_face, default="largest",
                      help="which face to dub: largest, index:N (N-th from the left) or point:X,Y")
    face.add_argument("--box", type=lambda t: _ints(t, 4, "--box"), default=None, metavar="X1,Y1,X2,Y2",
                      help="fixed face box in pixels: no detection")
    face.add_argument("--pads", type=lambda t: _ints(t, 4, "--pads"), default=d.pads,
                      metavar="TOP,BOTTOM,LEFT,RIGHT", help="pixels added around the face box")
    face.add_argument("--smooth", type=int, default=d.smooth_window,
                      help="centred smoothing window for the face box, in frames (1: none)")
    face.add_argument("--max-gap", type=int, default=d.max_gap,
                      help="bridge up to this many frames without a detected face (default: the "
                           "tracker's); longer gaps pass through unchanged")
    face.add_argument("--detect-every", type=int, default=d.detect_every, metavar="N",
                      help="run the face detector on every N-th frame only; in between, the face "
                           "mesh follows the face from its last box, and the detector takes over again "
                           "when the mesh loses it. 3: a third less tracking CPU than 1, boxes on "
                           "average within 1-1.5%% of the face size of detecting every frame (2.6%% for "
                           "a small, fast-moving face), frame-to-frame jitter unchanged. 1: detect on "
                           "every frame")
    face.add_argument("--resize", type=float, default=d.resize,
                      help="detect faces on frames shrunk by this factor (faster on 4K); the output "
                           "keeps the input's resolution")
    face.add_argument("--blend", choices=BLEND_REGIONS, default=d.blend,
                      help="shape of the soft mask the generated face is blended in with")
    face.add_argument("--color-match", action=argparse.BooleanOptionalAction, default=d.color_match,
                      help="match the generated face's colour to the frame around the mask edge")
    face.add_argument("--keep-detail", action=argparse.BooleanOptionalAction, default=d.keep_detail,
                      help="put the frame's own fine detail (skin texture, sharp edges the generator's "
                           "small face crop cannot hold) back wherever the generator left the face as "
                           "it was; a redrawn mouth gets none of the old one's")

    run = p.add_argument_group("compute")
    run.add_argument("--device", default="auto",
                     help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    run.add_argument("--precision", choices=PRECISIONS, default="auto",
                     help="auto: fp16 on cuda, bf16 on CPUs with native bf16, each kept only if at most "
                          "1%% of the first batch's values are more than 3 levels from fp32; else fp32")
    run.add_argument("--batch-size", type=int, default=d.batch_size,
                     help="frames per generator batch (also bounds the frames held in memory)")
    run.add_argument("--threads", action=argparse.BooleanOptionalAction, default=d.threads,
                     help="decode and encode in background threads")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    run.add_argument("--verbose", action="store_true",
                     help="log what each stage does, and let native libraries (mediapipe) print")
    return p


def options_from_args(args: argparse.Namespace) -> DubOptions:
    return DubOptions(
        face_backend=args.face_backend, pads=tuple(args.pads), smooth_window=args.smooth,
        face=args.face if isinstance(args.face, FaceSelect) else FaceSelect.parse(args.face),
        box=args.box, blend=args.blend, color_match=args.color_match, keep_detail=args.keep_detail,
        resize=args.resize,
        batch_size=args.batch_size, crf=args.crf, preset=args.preset,
        loop=args.loop, keep_video=args.keep_video, fps=args.fps, max_gap=args.max_gap,
        detect_every=args.detect_every, threads=args.threads)


def read_pairs(path: Path) -> list[tuple[int, Path, Path, Path | None]]:
    """Rows ``(line number, video, audio, out or None)`` of a pairs CSV."""
    if not path.is_file():
        raise DubError(f"pairs file {path}: {'is a directory' if path.is_dir() else 'no such file'}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DubError(f"pairs file {path}: cannot be read as CSV ({e})") from e
    base = path.parent
    out = []
    for n, row in enumerate(rows, 1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if n == 1 and [c.lower() for c in cells[:2]] == ["video", "audio"]:
            continue
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise DubError(f"pairs file {path}, line {n}: need video,audio[,out], got {','.join(cells)!r}")
        video, audio = base / cells[0], base / cells[1]
        target = base / cells[2] if len(cells) > 2 and cells[2] else None
        out.append((n, video, audio, target))
    if not out:
        raise DubError(f"pairs file {path}: no rows")
    return out


def _progress_bar(quiet: bool, desc: str):
    """A ``progress(done, total)`` callback drawing a tqdm bar with ETA, and a closer."""
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    state: dict = {}

    def progress(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, unit="frame", desc=desc, dynamic_ncols=True, leave=False)
        bar.total = max(total, done)
        bar.update(done - bar.n)

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return progress, close


def _dub_one(ls, video: Path, audio: Path, out: Path | None, options: DubOptions, quiet: bool) -> None:
    from lipsync.api import default_output

    target = out or default_output(video)
    progress, close = _progress_bar(quiet, Path(video).name)
    try:
        summary = ls.dub(video, audio, target, options=options, progress=progress)
    finally:
        close()
    if not quiet:
        print(summary.line(), flush=True)


@contextlib.contextmanager
def hide_native_stderr(enabled: bool = True):
    """Send what native libraries write to file descriptor 2 (mediapipe's absl/TFLite start-up
    chatter) to /dev/null, while Python's ``sys.stderr`` keeps reaching the terminal."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    old = sys.stderr
    replaced = False
    try:
        if old.fileno() == 2:  # the real stderr: give Python its own copy of the descriptor
            sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=old.encoding, errors="replace")
            replaced = True
    except (OSError, ValueError, AttributeError):  # a captured / in-memory stderr: leave it
        pass
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        if replaced:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = old
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with hide_native_stderr(not args.verbose):
        return _main(parser, args)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.pairs is None and not (args.video and args.audio):
        parser.error("give --video and --audio, or --pairs CSV")
    if args.pairs is not None and (args.video or args.audio or args.out):
        parser.error("--pairs replaces --video/--audio/--out; give one or the other")
    try:
        options = options_from_args(args)
        rows = read_pairs(Path(args.pairs)) if args.pairs else None
        from lipsync.api import LipSync, default_output
        from lipsync.inference.job import check_paths

        if rows is None:  # report a wrong path before spending time on loading the model
            check_paths(args.video, args.audio, args.out or default_output(args.video))

        ls = LipSync.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision)
        if rows is None:
            _dub_one(ls, Path(args.video), Path(args.audio), Path(args.out) if args.out else None, options,
                     args.quiet)
            return 0
    except ValueError as e:  # DubError, AudioError, VideoError: bad input, one line
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted; no output written", file=sys.stderr)
        return 130
    failed = 0
    for n, video, audio, out in rows:
        try:
            _dub_one(ls, video, audio, out, options, args.quiet)
        except KeyboardInterrupt:
            print("error: interrupted; the current row was not written", file=sys.stderr)
            return 130
        except Exception as e:  # noqa: BLE001 - one row's failure must not stop the others
            failed += 1
            reason = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            print(f"error: {args.pairs} line {n}: {reason}", file=sys.stderr)
    if not args.quiet or failed:
        print(f"pairs: {len(rows) - failed} of {len(rows)} dubbed, {failed} failed", flush=True)
    return EXIT_SOME_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
