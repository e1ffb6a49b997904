"""The streaming dubbing engine behind ``lipsync.LipSync`` and ``python -m lipsync.infer``.

Modules: ``options`` (DubOptions, DubSummary, DubError), ``plan`` (pure frame/loop/device
planning), ``source`` (input frames in constant memory), ``faces`` (track, crop, blend on top
of ``marlin.face``), ``runner`` (batched generator calls), ``engine`` (the frame pipeline),
``writer`` (atomic mp4 output), ``job`` (input checks and checkpoint loading).
"""

from .options import DubError, DubOptions, DubSummary, FaceSelect, StageTimes

__all__ = ["DubError", "DubOptions", "DubSummary", "FaceSelect", "StageTimes"]
