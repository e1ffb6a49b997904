"""Start the dubbing demo: ``python demos/app.py [--port 7860] [--device cpu] ...``.

A thin launcher for :mod:`lipsync.demo` (same flags as ``python -m lipsync.demo --help``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # works from a checkout without installing

from lipsync.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
