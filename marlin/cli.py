"""Command-line helpers every ``python -m ...`` tool of the project shares."""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``ArgumentDefaultsHelpFormatter`` that appends ``(default: X)`` only where it says something.

    Nothing is appended when the help text already mentions its default (e.g. ``"(default 0.9)"``
    or ``"%(default)s"``) or when the default is ``None`` or ``argparse.SUPPRESS``.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or "default" in text.lower():
            return action.help
        return super()._get_help_string(action)
