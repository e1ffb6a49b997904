"""Evaluation results: per-video rows, their arithmetic mean, and the table / JSON / CSV outputs.

Pure formatting except :func:`write_json` and :func:`write_csv`, which write atomically (a
temporary file beside the target, then ``os.replace``), so an interrupted run never leaves a
half-written file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Per-video numeric columns, in display order: (key, header, format).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("lse_d", "LSE-D", "{:.3f}"),
    ("lse_c", "LSE-C", "{:.3f}"),
    ("av_offset", "AV off", "{:+d}"),
    ("lse_frames", "frames", "{:d}"),
    ("expert_sync", "expert*", "{:.3f}"),
    ("lpips", "LPIPS", "{:.4f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("psnr", "PSNR", "{:.2f}"),
    ("pairs", "pairs", "{:d}"),
)
#: Columns averaged into the "mean" row (counts and offsets are not scores).
MEAN_KEYS = ("lse_d", "lse_c", "expert_sync", "lpips", "ssim", "psnr")
EXPERT_NOTE = (
    "expert* = mean in-sync probability from this project's own sync expert; "
    "NOT comparable with LSE-C or published numbers"
)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def mean_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Arithmetic mean over videos of each score column (videos without the value are left out),
    plus ``n_<key>``, the number of videos averaged."""
    out: dict[str, Any] = {"video": "mean"}
    for key in MEAN_KEYS:
        vals = [r[key] for r in rows if _finite(r.get(key))]
        if vals:
            out[key] = sum(vals) / len(vals)
            out[f"n_{key}"] = len(vals)
    return out


def _present(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [c for c in COLUMNS if any(c[0] in r for r in rows)]


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def format_table(
    rows: Sequence[dict[str, Any]], summary: dict[str, Any], fid: dict[str, Any] | None = None
) -> str:
    """A plain-text table: one line per video, a rule, the mean row; FID and notes below."""
    cols = _present([*rows, summary])
    header = ["video", *(c[1] for c in cols)]
    body = [[str(r.get("video", "")), *(_cell(r.get(k), f) for k, _, f in cols)] for r in rows]
    mean = ["mean", *(_cell(summary.get(k), f) if k in MEAN_KEYS else "" for k, _, f in cols)]
    widths = [max(len(line[i]) for line in [header, *body, mean]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))
        )

    rule = "-" * len(fmt(header))
    lines = [fmt(header), rule, *map(fmt, body), rule, fmt(mean)]
    if fid is not None and _finite(fid.get("fid")):
        lines.append(
            f"FID ({fid['region']}): {fid['fid']:.3f}  ({fid['generated_frames']} generated vs "
            f"{fid['reference_frames']} reference frames)"
        )
    if any("expert_sync" in r for r in [*rows, summary]):
        lines.append(EXPERT_NOTE)
    errors = [r for r in rows if r.get("errors")]
    for r in errors:
        lines.append(f"{r['video']}: " + "; ".join(r["errors"]))
    return "\n".join(lines)


def _atomic_write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | Path, report: dict[str, Any]) -> Path:
    """Write the whole report as JSON (non-finite numbers become null)."""
    return _atomic_write(path, json.dumps(_json_safe(report), indent=2) + "\n")


def write_csv(
    path: str | Path,
    rows: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    fid: dict[str, Any] | None = None,
) -> Path:
    """Write one CSV line per video plus the mean line (with FID, when computed, in its column)."""
    keys = ["video", *(k for k, _, _ in _present([*rows, summary]))]
    last = dict(summary)
    if fid is not None and _finite(fid.get("fid")):
        keys.append("fid")
        last["fid"] = fid["fid"]
    keys.append("errors")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in [*rows, last]:
        line = {k: ("" if r.get(k) is None else r.get(k)) for k in keys}
        line["errors"] = "; ".join(r.get("errors", []))
        writer.writerow(line)
    return _atomic_write(path, buf.getvalue())
