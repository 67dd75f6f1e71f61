"""`cri-shim doctor`: what this host lacks to run cri-shim, and how to fix it."""

from __future__ import annotations

import argparse
from typing import Any

from cri_shim.cli.config import add_config_flags, effective_config
from cri_shim.doctor import FAIL, WARN, host_findings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check the host: cgroups, runtimes, conmon, CNI, disk")
    add_config_flags(p)
    p.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    findings = host_findings(effective_config(args))
    for f in findings:
        print(f)
    fails = sum(f.status == FAIL for f in findings)
    warns = sum(f.status == WARN for f in findings)
    print(f"\n{fails} blocking problem(s), {warns} warning(s)")
    return 1 if fails else 0
