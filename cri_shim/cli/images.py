"""`cri-shim images pull|import`: client-side commands for the image store."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cri_shim.cli.config import add_config_flags, effective_config

BAR_WIDTH = 30


def add_parser(sub: Any) -> None:
    images = sub.add_parser("images", help="pull or import images")
    isub = images.add_subparsers(dest="images_command", required=True)
    pull = isub.add_parser("pull", help="pull an image through the running daemon, with progress")
    add_config_flags(pull)
    pull.add_argument("ref")
    pull.add_argument("--username", default="")
    pull.add_argument("--password", default="")
    pull.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    pull.set_defaults(func=cmd_pull)
    imp = isub.add_parser("import", help="load an OCI layout (dir or tar) or a docker-save tar")
    add_config_flags(imp)
    imp.add_argument("path")
    imp.add_argument("--name", default="", help="repository for OCI layout entries that only carry a tag")
    imp.set_defaults(func=cmd_import)


def render_bar(ref: str, done: int, total: int) -> str:
    frac = min(done / total, 1.0) if total else 0.0
    filled = int(frac * BAR_WIDTH)
    return (f"\r{ref} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{done / 1e6:7.1f}/{total / 1e6:.1f} MB {frac * 100:5.1f}%")


def cmd_pull(args: argparse.Namespace) -> int:
    import grpc

    from cri_shim.criapi import api_pb2 as pb
    from cri_shim.criapi import api_pb2_grpc
    from cri_shim.imaging import reference
    from cri_shim.imaging.pull_progress import progress_file

    cfg = effective_config(args)
    ref = str(reference.parse(args.ref))
    progress = progress_file(cfg.state_dir, ref)
    result: dict[str, Any] = {}

    def run() -> None:
        channel = grpc.insecure_channel(f"unix:{cfg.socket}")
        try:
            stub = api_pb2_grpc.ImageServiceStub(channel)
            result["id"] = stub.PullImage(pb.PullImageRequest(
                image=pb.ImageSpec(image=args.ref),
                auth=pb.AuthConfig(username=args.username, password=args.password))).image_ref
        except grpc.RpcError as e:
            result["error"] = f"{e.code().name}: {e.details()}"
        finally:
            channel.close()

    started = time.time()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    shown = False
    while t.is_alive():
        t.join(0.1)
        if args.quiet:
            continue
        try:
            p = json.loads(progress.read_text())
        except (OSError, ValueError):
            continue
        if os.stat(progress).st_mtime < started - 1:
            continue  # left by an earlier pull of the same image
        sys.stderr.write(render_bar(ref, p["done"], p["total"]))
        sys.stderr.flush()
        shown = True
    if shown:
        sys.stderr.write("\n")
    if "error" in result:
        print(f"cri-shim: pull {args.ref} failed: {result['error']}", file=sys.stderr)
        return 1
    print(result["id"])
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from cri_shim.imaging.manager import ImageManager

    cfg = effective_config(args)

    async def go() -> list[str]:
        m = ImageManager(cfg, collect_garbage=False)
        await m.start()
        try:
            return await m.import_archive(Path(args.path), args.name)
        finally:
            await m.stop()

    ids = asyncio.run(go())
    for i in ids:
        print(i)
    # Tell a running daemon to re-read its image index.
    try:
        pid = int((Path(cfg.state_dir) / "cri-shim.pid").read_text())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        pass
    return 0
