"""What the one-shot CLIs share: an argument parser whose errors are ConfigErrors (printed as
JSON, exit 2) instead of argparse's usage text, JSON on stdout, logs on stderr."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, NoReturn

from bluez_jk.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class JsonArgumentParser(argparse.ArgumentParser):
    """argparse that raises ConfigError; `--help` still prints help and exits 0."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message, key="arguments")


def emit(payload: Any, *, pretty: bool) -> None:
    text = json.dumps(payload, indent=2 if pretty else None, sort_keys=False, allow_nan=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value > 3600:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= 3600 s, got {text!r}")
    return value
