"""Serving the app: :func:`serve` (in the foreground or in the background) and the command
line ``python -m lipsync.demo`` (:func:`main`), which prints one ``error: ...`` line and exits
with status 2 on bad flags, a taken port or an unwritable work folder.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path

from marlin.cli import HelpFormatter

from ..inference.options import PRECISIONS
from .config import DemoConfig, DemoError
from .handlers import Demo
from .ui import build_app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve(config: DemoConfig | None = None, host: str = "127.0.0.1", port: int | None = None,
          block: bool = True, quiet: bool = False):
    """Start the app on ``host:port`` (``None``: a free port).  Returns ``(app, url)``; with
    ``block=False`` it serves in the background until ``app.close()``."""
    app = build_app(config)
    demo: Demo = app.demo
    cfg = demo.config
    allowed = [str(p) for p in (cfg.assets_dir, demo.work_dir) if Path(p).is_dir()]
    _, url, _ = app.launch(server_name=host, server_port=port or free_port(host), prevent_thread_lock=True,
                           share=False, inbrowser=False, quiet=quiet, show_error=True, ssr_mode=False,
                           max_file_size=cfg.max_upload_bytes, allowed_paths=allowed, mcp_server=False,
                           enable_monitoring=False, pwa=False)
    if block:
        try:
            app.block_thread()
        finally:
            app.close()
    return app, url


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m lipsync.demo``; defaults come from :class:`DemoConfig`."""
    d = DemoConfig()
    p = argparse.ArgumentParser(
        prog="python -m lipsync.demo", formatter_class=HelpFormatter,
        description="Local Gradio app: dub a face video or photo with new speech, and look inside MARLIN. "
                    "Runs offline; open the printed URL in a browser.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="TCP port (0: any free port)")
    p.add_argument("--checkpoints-dir", type=Path, default=d.checkpoints_dir,
                   help="checkpoints offered in the menus")
    p.add_argument("--checkpoint", help="menu choice at start, a file name in --checkpoints-dir (default: "
                                        "lipsync_default.safetensors when present, else the first file)")
    p.add_argument("--assets-dir", type=Path, default=d.assets_dir, help="folder of bundled example media")
    p.add_argument("--device", default=d.device,
                   help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision, help="compute precision")
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="requests that run at once")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help="requests that may wait in the queue")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, help="largest upload, MiB")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds, help="longest accepted video or audio")
    p.add_argument("--work-dir", type=Path, help="where outputs are written (default: <tmp>/lipsync-demo)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the server until interrupted; returns the exit status (0, 2 on bad input, 130 on Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests
    try:
        if not args.checkpoints_dir.is_dir():
            raise DemoError(f"checkpoints folder {args.checkpoints_dir}: no such folder")
        if not 0 <= args.port < 65536:
            raise DemoError(f"port {args.port} is not in 0..65535")
        from ..inference.plan import resolve_device

        resolve_device(args.device)
        config = DemoConfig(checkpoints_dir=args.checkpoints_dir, assets_dir=args.assets_dir,
                            checkpoint=args.checkpoint, device=args.device, precision=args.precision,
                            concurrency=args.concurrency, max_queue=args.max_queue,
                            max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
                            work_dir=args.work_dir)
        serve(config, host=args.host, port=args.port or None)
    except (ValueError, OSError) as e:  # bad flags, a taken port, an unwritable work folder
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
