"""The ``muse-quant`` command line: one parser, each subcommand registered by its own module.

A subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func=run`` on it; ``run(args) -> int`` returns the exit status. Bad input raises
:class:`MuseQuantError`, printed here as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from harness_ext import __version__
from harness_ext.errors import MuseQuantError

#: Modules that register subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "harness_ext.toyworld.command",
    "harness_ext.unlearning.command",
    "harness_ext.demo",
    "harness_ext.eval_command",
    "harness_ext.sweep.command",
    "harness_ext.audit_command",
    "leaderboards.command",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="muse-quant",
        description=(
            "Does LLM unlearning survive quantization? MUSE metrics as lm-eval tasks, "
            "evaluated across precisions."
        ),
        epilog="Example: muse-quant demo    (the whole story on the toy world: unlearn, quantize, "
        "rank, audit)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"muse-quant {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit so that builds and writes clean up their temporary files."""
    raise SystemExit(128 + signum)


#: Loggers whose warnings are noise on a CPU machine: torchao (imported by transformers when
#: installed) tries to load its CUDA and other-Python kernels and warns for each, and registers
#: enums that torch's pytree module warns about.
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MuseQuantError as e:
        print(f"muse-quant: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("muse-quant: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
