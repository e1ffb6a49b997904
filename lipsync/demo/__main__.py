"""``python -m lipsync.demo``: start the demo server (see ``--help``)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
