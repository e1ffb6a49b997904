"""The demo's request handlers (:class:`Demo`), usable without a browser.

Each request is checked (:mod:`.checks`) before a model is loaded; loaded models are cached per
tab; each request writes into its own ``run-*`` folder under the work folder, and folders older
than ``keep_hours`` are deleted when the next request starts.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..inference.options import DubOptions
from .checks import check_audio, check_upload, check_visual
from .config import OUTPUT_SIZES, DemoConfig, DemoError, list_checkpoints, no_progress
from .marlin_tab import MarlinResult, explore_clip, load_marlin_any
from .media import scale_input, side_by_side


def remove_old(folder: Path, max_age_s: float) -> None:
    """Delete request folders (``run-*``) older than ``max_age_s``."""
    limit = time.time() - max_age_s
    for child in folder.glob("run-*"):
        try:
            if child.stat().st_mtime < limit:
                shutil.rmtree(child, ignore_errors=True)
        except OSError:
            pass


class _ModelCache:
    """Loaded models by (path, size, mtime); least recently used dropped first; thread-safe."""

    def __init__(self, loader: Callable[[Path], Any], size: int) -> None:
        self.loader, self.size = loader, size
        self.items: OrderedDict[tuple, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, path: Path) -> Any:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with self.lock:
            if key not in self.items:
                self.items[key] = self.loader(path)
                while len(self.items) > self.size:
                    self.items.popitem(last=False)
            self.items.move_to_end(key)
            return self.items[key]


class Demo:
    """The demo's request handlers, usable without a browser (tests, scripts).

    :meth:`dub` and :meth:`marlin` take file paths and option values and return output paths and
    a summary dict; bad input raises :class:`DemoError` (or the ``ValueError`` subclasses of the
    lower layers: ``DubError``, ``VideoError``, ``AudioError``), which the app shows as a message.
    """

    def __init__(self, config: DemoConfig | None = None) -> None:
        self.config = config or DemoConfig()
        self.work_dir = Path(self.config.work_dir or Path(tempfile.gettempdir()) / "lipsync-demo")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._dubbers = _ModelCache(self._load_dubber, self.config.cached_models)
        self._marlins = _ModelCache(self._load_marlin, self.config.cached_models)

    def checkpoint_choices(self) -> list[str]:
        return list_checkpoints(self.config.checkpoints_dir)

    def default_choice(self, prefer: str = "lipsync_default") -> str | None:
        """The configured checkpoint, else the first file whose name contains ``prefer``, else the first."""
        choices = self.checkpoint_choices()
        if self.config.checkpoint in choices:
            return self.config.checkpoint
        return next((c for c in choices if prefer in c.lower()), choices[0] if choices else None)

    def resolve_checkpoint(self, choice: str | None, path: str | None) -> Path:
        """A typed path wins over the menu choice; the menu names files in ``checkpoints_dir``."""
        if path and str(path).strip():
            p = Path(str(path).strip()).expanduser()
        elif choice:
            p = self.config.checkpoints_dir / Path(str(choice)).name
        else:
            raise DemoError(f"no checkpoint: put one in {self.config.checkpoints_dir} or type its path")
        if not p.is_file():
            raise DemoError(f"checkpoint {p}: {'is a directory' if p.is_dir() else 'no such file'}")
        return p

    def _load_dubber(self, path: Path):
        from ..api import LipSync

        return LipSync.from_checkpoint(path, device=self.config.device, precision=self.config.precision)

    def _load_marlin(self, path: Path):
        from ..inference.plan import resolve_device

        return load_marlin_any(path, resolve_device(self.config.device))

    def _request_dir(self) -> Path:
        remove_old(self.work_dir, self.config.keep_hours * 3600)
        return Path(tempfile.mkdtemp(prefix="run-", dir=self.work_dir))

    def dub(self, video: str | None, photo: str | None, audio: str | None, checkpoint: str | None = None,
            checkpoint_path: str | None = None, output_size: str = "original",
            options: DubOptions | None = None, progress: Callable[..., None] | None = None
            ) -> tuple[str, str, dict[str, Any]]:
        """Dub ``video`` (or, without one, ``photo``) with the speech in ``audio``.

        Returns
        -------
        (dubbed mp4, before/after mp4, summary dict: frames, faces_found, fps_achieved, ...)
        """
        report = progress or no_progress
        if not (video or photo):
            raise DemoError("give a video or a photo with a face (upload one or use the webcam)")
        if not audio:
            raise DemoError("give the new speech: upload an audio file or record one with the microphone")
        if output_size not in OUTPUT_SIZES:
            raise DemoError(f"output size {output_size!r} is not one of {', '.join(OUTPUT_SIZES)}")
        cfg, what = self.config, "video" if video else "photo"
        source = check_upload(video or photo, what, cfg.max_upload_bytes)
        speech = check_upload(audio, "audio", cfg.max_upload_bytes)
        check_visual(source, cfg.max_seconds, cfg.max_pixels, what)
        check_audio(speech, cfg.max_seconds)
        options = options or DubOptions()
        ckpt = self.resolve_checkpoint(checkpoint, checkpoint_path)
        report(0.0, desc="loading the model")
        ls = self._dubbers.get(ckpt)
        work = self._request_dir()
        if OUTPUT_SIZES[output_size]:
            report(0.0, desc="scaling the input")
            source = scale_input(source, OUTPUT_SIZES[output_size], work)
        out = work / "dubbed.mp4"

        def frames_done(done: int, total: int) -> None:
            report((done, max(total, done)), desc="dubbing", unit="frames")

        summary = ls.dub(source, speech, out, options=options, progress=frames_done)
        report(0.99, desc="before/after video")
        both = side_by_side(source, out, work / "before_after.mp4", options.loop, options.fps)
        info = {"frames": summary.frames, "faces_found": summary.faces_found,
                "source_frames": summary.source_frames, "width": summary.width, "height": summary.height,
                "fps": round(summary.fps, 3), "duration_s": round(summary.duration, 3),
                "seconds": round(summary.seconds, 2), "fps_achieved": round(summary.fps_achieved, 2),
                "stage_seconds": {k: round(v, 2) for k, v in summary.stage_times.as_dict().items()},
                "checkpoint": ckpt.name, "device": str(ls.device), "summary": summary.line().split(" -> ")[0]}
        return str(out), str(both), info

    def marlin(self, clip: str | None, checkpoint: str | None = None, checkpoint_path: str | None = None,
               strategy: str = "tube", mask_ratio: float = 0.75, crop_face: bool = True, seed: float = 0,
               keep_seq: bool = False, progress: Callable[..., None] | None = None) -> MarlinResult:
        """Mask and reconstruct the first window of ``clip``; save the features of every window."""
        from marlin.masking import MASKING_STRATEGIES

        if not clip:
            raise DemoError("give a face clip (upload a video or record one with the webcam)")
        if strategy not in MASKING_STRATEGIES:
            raise DemoError(f"masking strategy {strategy!r} is not one of {', '.join(MASKING_STRATEGIES)}")
        cfg = self.config
        path = check_upload(clip, "clip", cfg.max_upload_bytes)
        check_visual(path, cfg.max_seconds, cfg.max_pixels, "clip")
        ckpt = self.resolve_checkpoint(checkpoint, checkpoint_path)
        (progress or no_progress)(0.0, desc="loading MARLIN")
        model = self._marlins.get(ckpt)
        result = explore_clip(model, path, self._request_dir(), strategy, float(mask_ratio), bool(crop_face),
                              int(seed or 0), bool(keep_seq), progress)
        result.summary["checkpoint"] = ckpt.name
        return result
