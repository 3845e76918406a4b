"""The ``mlgauge`` command. Each sub-command lives in its own module; this one
only dispatches and turns every error into one line and an exit code."""

from __future__ import annotations

import argparse
import os
import sys

from mlgauge import __version__
from mlgauge.errors import MlgaugeError, UsageError
from mlgauge.interrupts import EXIT_CODE as TERMINATED_EXIT
from mlgauge.interrupts import Terminated

COMMANDS = ("run", "prepare", "results", "report", "compare", "train", "rcp", "tiny", "profile", "list", "submit", "check", "fl")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit; we want one line
        raise UsageError(f"{self.prog}: {message}", hint=f"See '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(prog="mlgauge", description="Fair, reproducible ML performance measurement, the MLPerf way.")
    parser.add_argument("--version", action="version", version=f"mlgauge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"mlgauge.cli.{name}_cmd").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv or ["run"])
        return int(args.handler(args) or 0)
    except MlgaugeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("error: terminated", file=sys.stderr)
        return TERMINATED_EXIT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so in one line unless asked for the traceback
        if os.environ.get("MLGAUGE_DEBUG"):
            raise
        print(f"error: internal error: {type(exc).__name__}: {exc} (set MLGAUGE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
