"""`cri-shim serve`: run the CRI server in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from cri_shim import logs, malloc_arenas
from cri_shim.cli.config import add_config_flags, effective_config


def add_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the CRI server in the foreground")
    add_config_flags(serve)
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    malloc_arenas.limit()  # before the daemon's imports and threads allocate
    from cri_shim.daemon import Daemon, SocketInUse

    cfg = effective_config(args)
    logs.setup(cfg.log_level, cfg.log_format)
    try:
        asyncio.run(Daemon(cfg).run())
    except SocketInUse as e:
        print(f"cri-shim: {e}", file=sys.stderr)
        return 1
    return 0
