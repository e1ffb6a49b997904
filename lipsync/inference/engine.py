"""The streaming dubbing engine: decode -> track -> crop -> generate -> blend, in bounded batches.

Frames flow through as a generator chain; at any moment the engine holds at most
``lookahead`` frames waiting for the tracker's centred smoothing window, one generator batch
(``batch_size`` frames, rounded up to the generator's window) and a few frames in the decode
and encode queues.  Nothing grows with the video's length.

Output frame ``i`` shows source frame ``i`` while the video lasts; after that the loop plan
(:func:`lipsync.inference.plan.source_index`) picks frames, and tracks from the first pass
are reused when the replay was foreseen (the tracker runs again otherwise).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .faces import Cropper, FaceStage, FaceTrack
from .options import DubOptions, StageTimes
from .runner import GeneratorRunner
from .source import FrameSource

log = logging.getLogger(__name__)


@dataclass
class OutFrame:
    """One output frame.

    Attributes
    ----------
    index : position in the output
    source_index : the input frame it shows
    image : (H, W, 3) uint8 RGB; when ``dubbed`` is False it is the decoded input frame itself
    dubbed : whether a generated face was blended in
    region : (x0, y0, x1, y1) frame region the face crop covered (None when not dubbed);
        pixels outside it are the input's, bit for bit
    base : the decoded input frame a dubbed ``image`` was made from (None when not dubbed)
    """

    index: int
    source_index: int
    image: np.ndarray
    dubbed: bool
    region: tuple[int, int, int, int] | None = None
    base: np.ndarray | None = None

    @property
    def input_image(self) -> np.ndarray:
        """The decoded input frame this frame shows (``image`` itself when not dubbed)."""
        return self.base if self.base is not None else self.image


@dataclass
class _Item:
    index: int
    source_index: int
    image: np.ndarray
    track: FaceTrack | None


_END = object()


def prefetch(iterator: Iterator, size: int, times: StageTimes | None = None,
             attr: str = "decode") -> Iterator:
    """Run ``iterator`` in a daemon thread, ``size`` items ahead; exceptions re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    stop = threading.Event()

    def work() -> None:
        try:
            while not stop.is_set():
                t0 = time.perf_counter()
                item = next(iterator, _END)
                if times is not None:
                    setattr(times, attr, getattr(times, attr) + time.perf_counter() - t0)
                q.put(item)
                if item is _END:
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(_Failure(e))
        finally:  # stopped early: let the source generator clean up (its own threads, files)
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="lipsync-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _timed(iterator: Iterator, times: StageTimes, attr: str) -> Iterator:
    while True:
        t0 = time.perf_counter()
        item = next(iterator, _END)
        setattr(times, attr, getattr(times, attr) + time.perf_counter() - t0)
        if item is _END:
            return
        yield item


class Engine:
    """Dub one video with one audio track, frame by frame.

    Parameters
    ----------
    runner : the generator
    options : run options
    """

    def __init__(self, runner: GeneratorRunner, options: DubOptions) -> None:
        self.runner = runner
        self.options = options
        self.times = StageTimes()
        self.faces_found = 0
        self.source_frames = 0

    # -- stage 1+2: frames with tracks, in output order ---------------------------------
    def _decoded(self, source: FrameSource) -> Iterator[tuple[int, np.ndarray]]:
        it = source.forward()
        if self.options.threads:
            return prefetch(it, 4, self.times, "decode")
        return _timed(it, self.times, "decode")

    def _tracked(self, frames: Iterator[tuple[int, np.ndarray]], stage: FaceStage,
                 cache: dict[int, FaceTrack] | None) -> Iterator[tuple[int, np.ndarray, FaceTrack]]:
        held: dict[int, np.ndarray] = {}
        for index, image in frames:
            held[index] = image
            t0 = time.perf_counter()
            ready = stage.push(index, image)
            self.times.detect += time.perf_counter() - t0
            for i, track in ready:
                if cache is not None:
                    cache[i] = track
                yield i, held.pop(i), track
        t0 = time.perf_counter()
        ready = stage.flush()
        self.times.detect += time.perf_counter() - t0
        for i, track in ready:
            if cache is not None:
                cache[i] = track
            yield i, held.pop(i), track

    def _items(self, source: FrameSource, n_out: int, detector) -> Iterator[_Item]:
        opts = self.options
        expected = 1 if source.is_image else source.info.n_frames
        cache: dict[int, FaceTrack] | None = {} if n_out > expected else None  # replay foreseen
        stage = FaceStage(opts, detector)
        decoded = self._decoded(source)
        rest: list[tuple[int, np.ndarray]] = []

        def until_out(frames):
            for index, image in frames:
                if index >= n_out:
                    rest.append((index, image))
                    return
                yield index, image

        n_src = 0
        tracked = self._tracked(until_out(decoded), stage, cache)
        if opts.threads:  # detection and tracking run beside generation and encoding
            tracked = prefetch(tracked, opts.batch_size)
        for i, image, track in tracked:
            n_src = i + 1
            yield _Item(i, i, image, track)
        if rest:  # the video outlasts the audio
            if opts.keep_video:
                for index, image in [*rest, *decoded]:
                    yield _Item(index, index, image, None)
                self.source_frames = source.n_read
            else:
                decoded.close()
                self.source_frames = n_out
            return
        self.source_frames = n_src
        if n_src == 0:
            return
        if n_src >= n_out:
            return
        replay = source.replay(n_src, n_out, "freeze" if source.is_image else opts.loop)
        if opts.threads:
            replay = prefetch(replay, 4, self.times, "decode")
        else:
            replay = _timed(replay, self.times, "decode")
        out_index = n_src
        if cache is not None:
            for src_i, image in replay:
                yield _Item(out_index, src_i, image, cache[src_i])
                out_index += 1
        else:  # replay not foreseen: track the replayed frames again
            log.info("tracking the replayed frames again (the video had fewer frames than it declared)")
            stage = FaceStage(opts, detector)
            numbered = ((out_index + k, (src, img)) for k, (src, img) in enumerate(replay))
            pairs = {}

            def images():
                for o, (src, img) in numbered:
                    pairs[o] = src
                    yield o, img

            for o, image, track in self._tracked(images(), stage, None):
                yield _Item(o, pairs.pop(o), image, track)

    # -- stage 3-5: crop, generate, blend ------------------------------------------------
    def run(self, source: FrameSource, mels: MelSource, n_out: int, detector) -> Iterator[OutFrame]:
        """Output frames in order (``n_out`` of them, more with ``keep_video``).

        ``detector`` is the ``marlin.face.FaceDetector`` to track with (None with a fixed box).
        """
        cropper = Cropper(self.options, self.runner.size)
        window = self.runner.window
        batch = -(-self.options.batch_size // window) * window
        pending: list[_Item] = []
        for item in self._items(source, n_out, detector):
            pending.append(item)
            if len(pending) >= batch:
                yield from self._process(pending, cropper, mels)
                pending = []
        if pending:
            yield from self._process(pending, cropper, mels)

    def _process(self, items: list[_Item], cropper: Cropper, mels: MelSource) -> Iterator[OutFrame]:
        window = self.runner.window
        dub = [k for k, it in enumerate(items)
               if it.track is not None and it.track.found and it.index < mels.n]
        if not dub:
            yield from self._passthrough(items)
            return
        t0 = time.perf_counter()
        crops = {k: c for k in dub if (c := cropper.crop(items[k].image, items[k].track)) is not None}
        self.times.crop += time.perf_counter() - t0
        if not crops:
            yield from self._passthrough(items)
            return
        # clips of `window` consecutive frames; a frame without a face borrows the nearest crop
        # (its own mel window is kept) and a short last clip is padded with its last frame
        slots: list[tuple[int, int, bool]] = []  # (frame position, crop position, is padding)
        for start in range(0, len(items), window):
            group = list(range(start, min(start + window, len(items))))
            have = [k for k in group if k in crops]
            if not have:
                continue
            for j, k in enumerate(group + [group[-1]] * (window - len(group))):
                src = k if k in crops else min(have, key=lambda h, k=k: abs(h - k))
                slots.append((k, src, j >= len(group)))
        batch_crops = np.stack([crops[src][0] for _, src, _ in slots])
        batch_mels = mels.windows([items[k].index for k, _, _ in slots])
        openings = None
        if self.runner.needs_openings:  # each window's most closed mouth, the copy gate, mouth_reference
            openings = np.array([_opening(items[src].track) for _, src, _ in slots], np.float32)
        geometry = None
        if self.runner.needs_geometry:  # where each crop's mouth is, for mouth_map generators
            geometry = np.stack([_geometry(items[src].track, crops[src][1]) for _, src, _ in slots])
        generated = self.runner(batch_crops, batch_mels, self.times, openings, geometry)
        out_for = {k: generated[pos] for pos, (k, src, pad) in enumerate(slots) if k == src and not pad}
        t0 = time.perf_counter()
        done = []
        for k, it in enumerate(items):
            if k in out_for:
                crop, cmap = crops[k]
                image = cropper.paste(it.image, out_for[k], cmap, it.track, given=crop)
                region = (cmap.x0, cmap.y0, cmap.x1, cmap.y1)
                done.append(OutFrame(it.index, it.source_index, image, True, region, it.image))
            else:
                done.append(OutFrame(it.index, it.source_index, it.image, False))
        self.faces_found += len(out_for)
        self.times.blend += time.perf_counter() - t0
        yield from done

    @staticmethod
    def _passthrough(items: list[_Item]) -> Iterator[OutFrame]:
        for it in items:
            yield OutFrame(it.index, it.source_index, it.image, False)


def _geometry(track, crop_map) -> np.ndarray:
    """(5,) where a tracked face's mouth is in its crop (``mouth_geometry``); NaN without landmarks."""
    from lipsync.data.sync_measure import mouth_geometry

    try:
        return mouth_geometry(crop_map.to_crop(track.landmarks), crop_map.width, crop_map.height)
    except (ValueError, TypeError):  # no landmarks, or another landmark scheme
        return np.full(5, np.nan, np.float32)


def _opening(track) -> float:
    """The mouth opening of a tracked face from its face-mesh landmarks; NaN without them."""
    from lipsync.data.sync_measure import mouth_opening

    try:
        return float(mouth_opening(track.landmarks))
    except (ValueError, TypeError):  # no landmarks, or another landmark scheme
        return float("nan")


class MelSource:
    """Mel windows of the new audio for any output frames, computed on demand.

    Parameters
    ----------
    mel : (80, T) float32 mel spectrogram of the whole audio
    starts : (n,) int window start columns, one per output frame
    """

    def __init__(self, mel: np.ndarray, starts: np.ndarray, width: int = 16) -> None:
        self.mel = mel
        self.starts = np.asarray(starts, np.int64)
        self.width = width
        self.n = len(self.starts)

    def windows(self, indices: list[int]) -> np.ndarray:
        """(len(indices), 80, width) float32 windows; past the end the last columns repeat."""
        t = self.mel.shape[1]
        cols = self.starts[np.clip(np.asarray(indices), 0, self.n - 1)][:, None] + np.arange(self.width)[None]
        cols = np.clip(cols, 0, t - 1)
        return np.ascontiguousarray(self.mel[:, cols].transpose(1, 0, 2), np.float32)
