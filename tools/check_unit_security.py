#!/usr/bin/env python3
"""Fail when a systemd unit's exposure (`systemd-analyze security --offline=yes`) is too high.

Usage: check_unit_security.py UNIT_FILE [--max 2.0]. Prints the measured exposure; exit 0 when
it is at most the maximum, 1 when above, 2 when it cannot be measured.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def measure(unit: str) -> tuple[float | None, str]:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None, "systemd-analyze is not installed"
    proc = subprocess.run(  # noqa: S603 - fixed argv; the unit path is an argument
        [tool, "security", "--offline=yes", "--no-pager", unit],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    found = EXPOSURE_RE.search(output)
    return (float(found.group(1)) if found else None), output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("unit")
    parser.add_argument("--max", type=float, default=2.0, dest="maximum")
    args = parser.parse_args(argv)
    exposure, output = measure(args.unit)
    if exposure is None:
        print(f"check_unit_security: could not measure {args.unit}:\n{output}", file=sys.stderr)
        return 2
    verdict = "ok" if exposure <= args.maximum else "too high"
    print(f"{args.unit}: exposure {exposure} (max {args.maximum}) {verdict}")
    if exposure > args.maximum:
        print("\n".join(line for line in output.splitlines() if "✗" in line), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
