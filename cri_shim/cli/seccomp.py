"""`cri-shim seccomp record`: record a command's seccomp profile through the running daemon.

It does what a kubelet would: a pod of its own (handler --handler), the image pulled if
missing, one container running the command with the recorder's annotation, then waits for the
exit, collects the profile from the daemon's recorder directory into --output, prints the
container's output and removes the pod. The exit code is the container's.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cri_shim.cli.config import add_config_flags, effective_config


def add_parser(sub: Any) -> None:
    seccomp = sub.add_parser("seccomp", help="seccomp profiles")
    ssub = seccomp.add_subparsers(dest="seccomp_command", required=True)
    rec = ssub.add_parser(
        "record", help="run a command in a container through the daemon and record its seccomp profile",
        description="cri-shim seccomp record --output FILE [--handler H] -- IMAGE CMD...")
    add_config_flags(rec)
    rec.add_argument("--output", "-o", required=True, help="where the profile is written")
    rec.add_argument("--handler", default="", help="runtime handler (default: the daemon's default)")
    rec.add_argument("--host-network", action="store_true", help="the node's network, not a CNI one")
    rec.add_argument("--timeout", type=float, default=0, help="stop the container after this many seconds")
    rec.add_argument("image")
    rec.add_argument("command", nargs=argparse.REMAINDER)
    rec.set_defaults(func=cmd_record)


def cmd_record(args: argparse.Namespace) -> int:
    import grpc

    from cri_shim.criapi import api_pb2 as pb
    from cri_shim.criapi import api_pb2_grpc
    from cri_shim.seccomp_recorder import annotation, profile

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("cri-shim: seccomp record: no command given (… -- IMAGE CMD...)", file=sys.stderr)
        return 2
    cfg = effective_config(args)
    name = f"cli-{secrets.token_hex(6)}.json"
    recorded = annotation.output_path(cfg.seccomp_recorder_dir(), name)
    channel = grpc.insecure_channel(f"unix:{cfg.socket}")
    rt = api_pb2_grpc.RuntimeServiceStub(channel)
    images = api_pb2_grpc.ImageServiceStub(channel)
    logs = Path(tempfile.mkdtemp(prefix="cri-shim-seccomp-record-"))
    pod_id = ""
    try:
        image = pb.ImageSpec(image=args.image)
        if not images.ImageStatus(pb.ImageStatusRequest(image=image)).HasField("image"):
            images.PullImage(pb.PullImageRequest(image=image))
        suffix = secrets.token_hex(4)
        pod_cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"seccomp-record-{suffix}", namespace="cri-shim",
                                           uid=f"seccomp-record-{suffix}"),
            log_directory=str(logs), hostname="seccomp-record")
        if args.host_network:
            pod_cfg.linux.security_context.namespace_options.network = pb.NODE
        pod_id = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg, runtime_handler=args.handler)
                                  ).pod_sandbox_id
        cfg_c = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="recorded"), image=image,
                                   command=command, log_path="recorded.log")
        cfg_c.annotations[annotation.ANNOTATION] = annotation.PREFIX + name
        cid = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg_c,
                                                           sandbox_config=pod_cfg)).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=cid))
        deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
        while True:
            st = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
            if st.state == pb.CONTAINER_EXITED:
                break
            if deadline is not None and time.monotonic() > deadline:
                rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10))
                continue
            time.sleep(0.1)
        # StopContainer of an exited container returns once the profile is written.
        rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
        _print_log(logs / "recorded.log")
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(recorded, out)
        recorded.unlink()
        import json

        calls = profile.allowed(json.loads(out.read_text()))
        print(f"cri-shim: seccomp profile of {len(calls)} calls written to {out} "
              f"(container exit code {st.exit_code})", file=sys.stderr)
        return st.exit_code
    except grpc.RpcError as e:
        print(f"cri-shim: seccomp record: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"cri-shim: seccomp record: no profile was written ({e.filename}); "
              "see the daemon's log", file=sys.stderr)
        return 1
    finally:
        if pod_id:
            try:
                rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
                rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
            except grpc.RpcError as e:
                print(f"cri-shim: seccomp record: removing pod {pod_id}: {e.details()}", file=sys.stderr)
        channel.close()
        shutil.rmtree(logs, ignore_errors=True)
        with_partial = annotation.partial_path(recorded)
        for leftover in (recorded, with_partial):
            if os.path.exists(leftover):
                os.unlink(leftover)


def _print_log(path: Path) -> None:
    """The container's output, from its CRI log (each line: time stream tag text)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) == 4:
            stream = sys.stderr if parts[1] == "stderr" else sys.stdout
            stream.write(parts[3] + ("\n" if parts[2] == "F" else ""))
    sys.stdout.flush()
