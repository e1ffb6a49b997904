"""Benchmark MARLIN feature extraction: this project vs the reference (marlin-pytorch 0.3.4).

    python bench/marlin.py                       # vit_small and vit_base on the CPU
    python bench/marlin.py --device cuda --bf16  # on a GPU, also both under bfloat16 autocast

Both implementations get the same random weights (the reference's state dict is loaded into
ours) and the same clips; the script prints clips per second of ``extract_features``
(per-token output, as the lip-sync generator uses it), the speed-up, the largest absolute
difference between the outputs, and the achieved GFLOP/s next to a large-matmul measurement of
the same machine.  Runs are interleaved and the best of ``--repeats`` is reported, which keeps
the comparison fair on a shared machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marlin import Marlin, available_models, get_config  # noqa: E402
from marlin.cli import HelpFormatter  # noqa: E402
from marlin.config import MarlinConfig  # noqa: E402
from marlin.model.release import build_release, release_available  # noqa: E402


def encoder_flops(cfg: MarlinConfig) -> float:
    """Multiply-adds x 2 of one clip through the encoder (linear layers, attention, patch conv)."""
    n, e = cfg.n_tokens, cfg.encoder_dim
    hidden = int(e * cfg.mlp_ratio)
    per_block = n * (3 * e * e + e * e + 2 * e * hidden) + 2 * n * n * e  # qkv, proj, mlp; qk^T, av
    embed = n * e * cfg.patch_dim
    return 2.0 * (embed + cfg.encoder_depth * per_block)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def bench_variant(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    cfg = get_config(name)
    torch.manual_seed(args.seed)
    ref = build_release(cfg, with_decoder=False)
    with torch.no_grad():  # non-trivial biases and norms, so the comparison means something
        for key, p in ref.named_parameters():
            if not key.endswith("pos_embedding.emb"):
                p.add_(0.02 * torch.randn_like(p))
    ours = Marlin(cfg, with_decoder=False).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref, ours = ref.to(device), ours.to(device)
    x = torch.rand(args.batch, *cfg.clip_shape, generator=torch.Generator().manual_seed(1)).to(device)

    def run_ref():
        with torch.no_grad():
            return ref.extract_features(x, keep_seq=True)

    def run_ours():
        return ours.extract_features(x, keep_seq=True)

    def run_bf16():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            return ours.extract_features(x, keep_seq=True)

    def run_ref_bf16():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            return ref.extract_features(x, keep_seq=True)

    runs = {"release": run_ref, "ours": run_ours}
    if args.bf16:  # like for like: the release under the same autocast
        runs.update(release_bf16=run_ref_bf16, ours_bf16=run_bf16)
    outputs = {k: fn() for k, fn in runs.items()}  # warm-up, and the outputs to compare
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, fn in runs.items():
            times[k].append(timed(fn, device))
    with torch.no_grad():
        pooled_diff = (ref.extract_features(x, keep_seq=False) - ours.extract_features(x, keep_seq=False))
    flops = encoder_flops(cfg) * args.batch
    result = {"flops_per_clip": encoder_flops(cfg)}
    for k in runs:
        best = min(times[k])
        result[f"{k}_clips_s"] = args.batch / best
        result[f"{k}_median_clips_s"] = args.batch / statistics.median(times[k])
        result[f"{k}_gflops"] = flops / best / 1e9
    result["diff_tokens"] = (outputs["ours"] - outputs["release"]).abs().max().item()
    result["diff_pooled"] = pooled_diff.abs().max().item()
    if args.bf16:
        for impl in ("ours_bf16", "release_bf16"):
            result[f"diff_{impl}"] = (outputs[impl].float() - outputs["release"]).abs().max().item()
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--variants", nargs="+", default=["vit_small", "vit_base"], choices=available_models())
    p.add_argument("--batch", type=int, default=2, help="clips per forward pass")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per implementation (best is shown)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="also time both under bfloat16 autocast (default: on for cuda)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--matmul-size", type=int, default=4096, help="side of the square matmul for the peak")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not release_available():
        print("error: marlin-pytorch is not installed (pip install --no-deps marlin-pytorch==0.3.4)",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if args.bf16 is None:
        args.bf16 = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, best of {args.repeats}")
    peak = matmul_gflops(device, torch.float32, args.matmul_size)
    line = f"matmul {args.matmul_size}^2 fp32: {peak:.1f} GFLOP/s"
    if args.bf16:
        peak16 = matmul_gflops(device, torch.bfloat16, args.matmul_size)
        line += f", bf16: {peak16:.1f} GFLOP/s"
    print(line)
    header = f"{'variant':10} {'impl':12} {'clips/s':>8} {'median':>8} {'GFLOP/s':>8} {'of peak':>8}"
    print(header)
    for variant in args.variants:
        r = bench_variant(variant, args, device)
        impls = ["release", "ours"] + (["release_bf16", "ours_bf16"] if args.bf16 else [])
        for impl in impls:
            ref_peak = peak16 if impl.endswith("_bf16") else peak
            print(f"{variant:10} {impl:12} {r[f'{impl}_clips_s']:8.3f} {r[f'{impl}_median_clips_s']:8.3f} "
                  f"{r[f'{impl}_gflops']:8.1f} {100 * r[f'{impl}_gflops'] / ref_peak:7.1f}%")
        speed = r["ours_clips_s"] / r["release_clips_s"]
        speed_median = r["ours_median_clips_s"] / r["release_median_clips_s"]
        print(f"{variant:10} speed-up {speed:.2f}x best / {speed_median:.2f}x median (fp32), "
              f"{r['flops_per_clip'] / 1e9:.1f} GFLOP/clip, "
              f"max |diff| tokens {r['diff_tokens']:.2e}, pooled {r['diff_pooled']:.2e}")
        if args.bf16:
            speed16 = r["ours_bf16_clips_s"] / r["release_bf16_clips_s"]
            speed16_median = r["ours_bf16_median_clips_s"] / r["release_bf16_median_clips_s"]
            print(f"{variant:10} speed-up {speed16:.2f}x best / {speed16_median:.2f}x median (bf16), "
                  f"max |diff| from the fp32 release: ours {r['diff_ours_bf16']:.2e}, "
                  f"release {r['diff_release_bf16']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
