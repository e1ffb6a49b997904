"""Frames per second of every generator at 96 / 192 / 256 px: eager fp32 vs faster inference paths.

For each generator and output size the script times

- ``eager``: the model as built, fp32, under ``torch.no_grad`` (the reference output);
- ``fold``: :func:`lipsync.models.prepare_for_inference` with BatchNorm folded into the
  convolutions and channels-last weights, fp32, under ``inference_mode``;
- ``bf16`` (CPU with bf16 support, or a GPU) / ``fp16`` (GPU): the same in half precision;

and prints frames per second, the speed-up over eager and the max abs difference of the output
(RGB in [0, 1]) from eager.  ``best`` is the fastest path whose max abs difference is within
``--tolerance`` (default 2/255: invisible once quantised to 8 bits).  Weights are random (with
non-trivial BatchNorm statistics), so the differences are representative, not those of a
trained model.  The MARLIN generator's times include its encoder (one 16-frame window per
batch of 16 frames).

Usage::

    python -m bench.models                              # all generators, 96/192/256, CPU
    python -m bench.models --models wav2lip marlin_lip_tiny --sizes 96 --repeats 5
    python -m bench.models --device cuda                # on a GPU: fp32 vs folded vs fp16/bf16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run as a file
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from lipsync.models import GENERATORS, MODELS, create_model, prepare_for_inference  # noqa: E402
from marlin.cli import HelpFormatter  # noqa: E402

DEFAULT_MODELS = ["wav2lip", "marlin_lip_tiny", "marlin_lip_base"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    choices = [n for n, spec in MODELS.items() if spec.architecture in GENERATORS]
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=choices)
    parser.add_argument("--sizes", nargs="+", type=int, default=[96, 192, 256])
    parser.add_argument("--frames", type=int, default=16, help="frames per timed call (a multiple of 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per path (after one warm-up)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--tolerance", type=float, default=2 / 255, help="max abs diff allowed for 'best'")
    return parser


def randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def timed(fn, args, repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    out = fn(*args)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats, out


def bench_one(name: str, size: int, args: argparse.Namespace, device: torch.device) -> list[dict]:
    overrides = {} if MODELS[name].architecture == "wav2lip" else {"img_size": size}
    torch.manual_seed(0)
    model = create_model(name, **overrides).eval()
    randomise_batchnorm(model)
    model.to(device)
    g = torch.Generator().manual_seed(1)
    faces = torch.rand(1, 6, args.frames, size, size, generator=g)
    faces[:, :3, :, size // 2:] = 0
    mels = torch.randn(1, args.frames, 1, 80, 16, generator=g)
    faces, mels = faces.to(device), mels.to(device)

    def eager(f, m):
        with torch.no_grad():
            return model(f, m)

    paths = [("eager", eager), ("fold", prepare_for_inference(model))]
    if bf16_supported(device):
        paths.append(("bf16", prepare_for_inference(model, dtype=torch.bfloat16)))
    if device.type == "cuda":
        paths.append(("fp16", prepare_for_inference(model, dtype=torch.float16)))
    rows, reference = [], None
    for label, fn in paths:
        seconds, out = timed(fn, (faces, mels), args.repeats, device)
        if reference is None:
            reference = out.float()
        diff = (out.float() - reference).abs().max().item()
        rows.append({"model": name, "size": size, "path": label, "fps": args.frames / seconds, "diff": diff})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames % 16 or args.frames < 16:
        print("error: --frames must be a positive multiple of 16", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as e:
        print(f"error: device {args.device!r} is not usable ({e})", file=sys.stderr)
        return 2
    jobs = [(n, s) for n in args.models for s in args.sizes if MODELS[n].architecture != "wav2lip" or s == 96]
    skipped = sorted({n for n in args.models if MODELS[n].architecture == "wav2lip"} if
                     any(s != 96 for s in args.sizes) else set())
    print(f"device: {device} ({torch.get_num_threads()} CPU threads), torch {torch.__version__}, "
          f"{args.frames} frames per call, {args.repeats} timed calls")
    if skipped:
        print(f"note: {', '.join(skipped)} exists only at 96 px (the release architecture)")
    results = []
    for name, size in tqdm(jobs, desc="models", unit="config"):
        results.extend(bench_one(name, size, args, device))
    print(f"\n{'model':<18}{'size':>5}  {'path':<6}{'fps':>9}{'speed-up':>10}{'max|diff|':>12}")
    for (name, size) in jobs:
        rows = [r for r in results if r["model"] == name and r["size"] == size]
        base = rows[0]["fps"]
        ok = [r for r in rows if r["diff"] <= args.tolerance]
        best = max(ok, key=lambda r: r["fps"])
        for r in rows:
            mark = "  <- best" if r is best else ""
            print(f"{name:<18}{size:>5}  {r['path']:<6}{r['fps']:>9.2f}{r['fps'] / base:>9.2f}x"
                  f"{r['diff']:>12.2e}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
