"""Python API of the dubbing engine: ``LipSync.from_checkpoint(...).dub(video, audio, out)``.

>>> from lipsync import LipSync                                       # doctest: +SKIP
>>> ls = LipSync.from_checkpoint()                # checkpoints/lipsync_default.safetensors
>>> summary = ls.dub("talk.mp4", "speech.wav", "dubbed.mp4", face_backend="mediapipe")
>>> for frame in ls.iter_frames("talk.mp4", "speech.wav"):           # RGB uint8 (H, W, 3)
...     show(frame)

One loaded model serves any number of runs; every run streams (memory does not grow with the
video's length).  Bad input raises :class:`DubError` (or the ``AudioError`` / ``VideoError`` of
the lower layers, both ``ValueError``) before anything is written.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .inference.engine import Engine, OutFrame
from .inference.job import DEFAULT_CHECKPOINT, Job, load_generator, prepare_job
from .inference.options import DubError, DubOptions, DubSummary
from .inference.plan import resolve_device
from .inference.runner import GeneratorRunner
from .inference.source import FrameSource
from .inference.writer import DubWriter

__all__ = ["DEFAULT_CHECKPOINT", "DubError", "DubOptions", "DubSummary", "LipSync", "OutFrame"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (frames done, frames total)


class LipSync:
    """A loaded lip-sync generator ready to dub videos.

    Parameters
    ----------
    model : a ``lipsync.models`` generator
    meta : the checkpoint's metadata (``audio_convention`` is read from it)
    device : "auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:1", "mps"
    precision : "auto" (fp16 on cuda, bf16 on a CPU with native bf16, fp32 elsewhere; a reduced
        precision only if the first batch agrees with fp32: ``GeneratorRunner``), "fp32", "fp16", "bf16"
    """

    def __init__(self, model: torch.nn.Module, meta: dict[str, Any] | None = None, device: str = "auto",
                 precision: str = "auto", checkpoint: str | None = None) -> None:
        self.device = resolve_device(device)
        self.precision = precision
        self.meta = dict(meta or {})
        self.checkpoint = checkpoint
        self.model = model
        self._runner: GeneratorRunner | None = None

    @property
    def runner(self) -> GeneratorRunner:
        """The prepared generator (built on first use: BatchNorm folding and the precision trial
        of ``precision="auto"`` cost a few forward passes, not worth paying for a bad input)."""
        if self._runner is None:
            self._runner = GeneratorRunner(self.model, self.device, self.precision)
        return self._runner

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, device: str = "auto",
                        precision: str = "auto") -> LipSync:
        """Load a checkpoint (ours, or the public wav2lip.pth / wav2lip_gan.pth).

        ``path=None`` loads the shipped default, ``checkpoints/lipsync_default.safetensors`` in
        the repository (found relative to this package, not the working directory).

        Raises
        ------
        DubError
            The file is missing, truncated, or not a lip-sync generator checkpoint.
        """
        model, meta, where = load_generator(path)
        return cls(model, meta, device=device, precision=precision, checkpoint=where)

    @property
    def audio_convention(self) -> str:
        """Mel window convention the generator was trained with (from the checkpoint)."""
        from .inference.job import audio_convention

        return audio_convention(self.meta)

    # -- runs ---------------------------------------------------------------------------
    def prepare(self, video: str | os.PathLike, audio: str | os.PathLike,
                out: str | os.PathLike | None = None, options: DubOptions | None = None,
                **changes: Any) -> Job:
        """Check every input and build the run (nothing is written yet); see :func:`prepare_job`."""
        opts = (options or DubOptions()).replace(**changes) if changes else (options or DubOptions())
        return prepare_job(video, audio, out, opts, self.audio_convention)

    def _engine(self, job: Job) -> Engine:
        return Engine(self.runner, job.options)

    def iter_frames(self, video: str | os.PathLike, audio: str | os.PathLike,
                    options: DubOptions | None = None, **changes: Any) -> Iterator[np.ndarray]:
        """Dubbed frames one at a time, RGB uint8 (H, W, 3), for callers that stream.

        Frames without a face are the decoded input frames, unchanged.  When no frame had a face,
        :class:`DubError` is raised after the last frame.
        """
        for frame in self.stream(video, audio, options, **changes):
            yield frame.image

    def stream(self, video: str | os.PathLike, audio: str | os.PathLike, options: DubOptions | None = None,
               **changes: Any) -> Iterator[OutFrame]:
        """Like :meth:`iter_frames`, with each frame's bookkeeping (:class:`OutFrame`: output index,
        source frame index, whether it was dubbed, the face region)."""
        job = self.prepare(video, audio, None, options, **changes)
        yield from self._run(job)

    def _run(self, job: Job, engine: Engine | None = None) -> Iterator[OutFrame]:
        engine = engine or self._engine(job)
        try:
            yield from engine.run(job.source, job.mels, job.n_out, job.detector)
        finally:
            job.close()
        if engine.faces_found == 0:
            raise DubError(f"{job.video}: no face found in any frame (try --face-backend haar, a lower "
                           f"detection threshold, or --box x1,y1,x2,y2)")

    def dub(self, video: str | os.PathLike, audio: str | os.PathLike, out: str | os.PathLike | None = None,
            options: DubOptions | None = None, progress: ProgressCallback | None = None,
            **changes: Any) -> DubSummary:
        """Dub ``video`` with ``audio`` into ``out`` (mp4, h264 + aac).

        Parameters
        ----------
        video : video file or still image
        audio : any file with an audio stream (audio or video)
        out : output mp4; default ``<video stem>_dubbed.mp4`` beside the video
        options : a :class:`DubOptions`; keyword arguments override its fields
        progress : called as ``progress(done, total)`` after every frame

        Returns
        -------
        DubSummary
            frames written, faces found, fps achieved, seconds per stage.
        """
        started = time.perf_counter()
        job = self.prepare(video, audio, out, options, **changes)
        engine = self._engine(job)
        writer = DubWriter(job.out, job.source.size, job.source.fps, str(job.audio), job.audio_seconds,
                           crf=job.options.crf, preset=job.options.preset,
                           pad_audio_to_video=job.options.keep_video)
        frames = self._run(job, engine)
        try:
            n = _encode(frames, writer, engine, job.source, job.total_frames, progress,
                        threaded=job.options.threads)
            t0 = time.perf_counter()
            writer.close()
            engine.times.encode += time.perf_counter() - t0
        except BaseException:
            frames.close()
            writer.abort()
            job.close()
            raise
        return DubSummary(output=str(job.out), frames=n, faces_found=engine.faces_found,
                          source_frames=engine.source_frames, fps=float(job.source.fps),
                          duration=n / float(job.source.fps), seconds=time.perf_counter() - started,
                          stage_times=engine.times, width=job.source.size[0], height=job.source.size[1])


def _encode(frames: Iterator[OutFrame], writer: DubWriter, engine: Engine, source: FrameSource, total: int,
            progress: ProgressCallback | None, threaded: bool) -> int:
    """Feed frames to the writer (in a background thread when ``threaded``); returns the count."""
    times = engine.times

    def write(frame: OutFrame) -> None:  # with the input as stored, where the source kept it
        writer.write(frame.image, frame.base, source.planes_for(frame.input_image), frame.region)

    if not threaded:
        n = 0
        for frame in frames:
            t0 = time.perf_counter()
            write(frame)
            times.encode += time.perf_counter() - t0
            n += 1
            if progress:
                progress(n, total)
        return n
    q: queue.Queue = queue.Queue(maxsize=8)
    failure: list[BaseException] = []

    def work() -> None:
        try:
            while (item := q.get()) is not None:
                t0 = time.perf_counter()
                write(item)
                times.encode += time.perf_counter() - t0
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            failure.append(e)
            while q.get() is not None:  # drain so the producer never blocks
                pass

    thread = threading.Thread(target=work, name="lipsync-encode", daemon=True)
    thread.start()
    n = 0
    try:
        for frame in frames:
            if failure:
                break
            q.put(frame)
            n += 1
            if progress:
                progress(n, total)
    finally:
        q.put(None)
        thread.join()
    if failure:
        raise failure[0]
    return n


def default_output(video: str | os.PathLike) -> Path:
    """``<video folder>/<video stem>_dubbed.mp4``."""
    v = Path(video)
    return v.with_name(f"{v.stem}_dubbed.mp4")
