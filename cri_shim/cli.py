"""The `cri-shim` command: serve, config, and client subcommands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from cri_shim import __version__
from cri_shim.config import Config, load, to_toml
from cri_shim.errors import CRIError

LOG_LEVELS = ("debug", "info", "warning", "error")


def _config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--socket", help="CRI socket path (default /run/cri-shim/cri-shim.sock)")
    p.add_argument("--state-dir", dest="state_dir", help="runtime state (default /run/cri-shim)")
    p.add_argument("--root-dir", dest="root_dir", help="persistent data (default /var/lib/cri-shim)")
    p.add_argument("--log-level", dest="log_level", choices=LOG_LEVELS)


def _effective_config(args: argparse.Namespace) -> Config:
    overrides = {k: getattr(args, k) for k in ("socket", "state_dir", "root_dir", "log_level")}
    return load(args.config, overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cri-shim", description="Kubernetes CRI runtime")
    parser.add_argument("--version", action="version", version=f"cri-shim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the CRI server in the foreground")
    _config_flags(serve)
    serve.set_defaults(func=cmd_serve)
    config = sub.add_parser("config", help="print the effective configuration as TOML")
    _config_flags(config)
    config.set_defaults(func=cmd_config)
    try:
        from cri_shim.images_cli import add_images_parser
    except ImportError:
        pass
    else:
        add_images_parser(sub)
    return parser


def cmd_config(args: argparse.Namespace) -> int:
    sys.stdout.write(to_toml(_effective_config(args)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from cri_shim.daemon import Daemon, SocketInUse

    cfg = _effective_config(args)
    # Our loggers at the configured level; grpc's and asyncio's internals only when loud.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("cri_shim").setLevel(cfg.log_level.upper())
    try:
        asyncio.run(Daemon(cfg).run())
    except SocketInUse as e:
        print(f"cri-shim: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CRIError as e:
        print(f"cri-shim: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
