"""What the checkout wrappers (tools/jk_ble_*.py) check before importing bluez-jk, so that the
wrong interpreter gives a sentence saying what to run instead of a traceback.

Kept to syntax every Python 3 accepts: it must run under the old interpreter it complains about.
"""

import importlib
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIN_PYTHON = (3, 11)


def _fail(script, message):  # type: ignore[no-untyped-def]
    sys.stderr.write(f"{script}: {message}\n")
    # The tools promise one JSON object on stdout, also when they cannot start.
    error = {"type": "ConfigError", "message": message, "stage": "config", "dbus_error": None}
    sys.stdout.write(json.dumps({"error": error}) + "\n")
    sys.exit(2)


def require(module, script):  # type: ignore[no-untyped-def]
    """The `main` of `module`, or exit 2 with what to do."""
    venv = ROOT / ".venv" / "bin" / "python"
    args = " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_with = f"{venv} {ROOT / 'tools' / script} {args}".rstrip() if venv.exists() else None
    if sys.version_info < MIN_PYTHON:
        have = ".".join(str(n) for n in sys.version_info[:3])
        _fail(
            script,
            f"bluez-jk needs Python >= 3.11, this is {have} ({sys.executable}); "
            + (
                f"run {run_with}"
                if run_with
                else "install python3.11 or newer (Debian 12 / "
                "Raspberry Pi OS bookworm have it) and run bash tools/setup.sh"
            ),
        )
    try:
        return importlib.import_module(module).main
    except ModuleNotFoundError as err:
        hint = (
            f"run it with the project's virtual environment: {run_with}"
            if run_with
            else "create the virtual environment with bash tools/setup.sh, then run "
            f".venv/bin/python tools/{script}"
        )
        _fail(
            script, f"the Python module {err.name!r} is not installed for {sys.executable}; {hint}"
        )
