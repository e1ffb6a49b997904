"""Gradio dubbing demo: ``python -m lipsync.demo`` (or ``python demos/app.py``).

Two tabs.  *Dub*: a face video or photo (upload or webcam) and new speech (upload or
microphone) -> the dubbed video, a before/after video side by side and the run summary.
*MARLIN*: a face clip -> the masked input and the reconstruction of the loaded MARLIN model,
and the clip's features as a ``.npy`` download.  Runs offline (analytics off, fonts bundled).

Every request is checked before any work (upload size, duration, frame size, readable media)
and fails with one message in the page ("no face found" too); a failing request never stops
the server.  A queue with a concurrency limit keeps two users from exhausting memory.

Modules: ``config`` (settings, limits, option parsing), ``checks`` (request checks and the
page's error messages), ``media`` (scaled input, before/after video), ``marlin_tab`` (masking,
reconstruction, features), ``handlers`` (:class:`Demo`), ``ui`` (the page), ``server``
(:func:`serve` and the command line).

>>> from lipsync.demo import DemoConfig, serve                        # doctest: +SKIP
>>> app, url = serve(DemoConfig(device="cpu"), port=7860, block=False)
>>> app.close()
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported
os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ start-up chatter
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .checks import tidy_message  # noqa: E402 - after the environment above
from .config import OUTPUT_SIZES, DemoConfig, DemoError, build_options, find_examples, list_checkpoints  # noqa: E402
from .handlers import Demo  # noqa: E402
from .marlin_tab import MarlinResult  # noqa: E402
from .media import even_size, scale_input  # noqa: E402
from .server import main, serve  # noqa: E402
from .ui import build_app  # noqa: E402

__all__ = ["DemoConfig", "DemoError", "Demo", "build_app", "build_options", "serve", "main", "OUTPUT_SIZES",
           "MarlinResult", "even_size", "find_examples", "list_checkpoints", "scale_input", "tidy_message"]
