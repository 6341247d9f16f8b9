"""The ``muse-quant`` command line: one parser, each subcommand registered by its own module.

A subcommand module (``muse_quant/cli/<name>.py``) exposes ``register(subparsers)``, which adds
its parser and sets ``func=run`` on it; ``run(args) -> int`` returns the exit status. Bad input
raises :class:`MuseQuantError`, printed here as one line with exit status 2. The modules keep
their heavy imports inside ``run``, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from harness_ext import __version__
from harness_ext.errors import MuseQuantError
from muse_quant.cli import audit, demo, eval, leaderboard, sweep, toyworld, unlearn
from muse_quant.threads import parse_threads, set_threads

#: The subcommands, in the order ``--help`` lists them.
COMMANDS = (toyworld, unlearn, demo, eval, sweep, audit, leaderboard)
#: Subcommands that read their own arguments (``eval``: lm-eval's flags, and ``--threads`` among
#: them) or run no model (``tasks-path``).
OWN_PARSERS = ("eval", "tasks-path")


class OneLineErrors(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (``muse-quant CMD: error: ...``) and exit 2,
    without the usage block; ``--help`` says the rest. Subcommands' parsers are of this class."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
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
    for command in COMMANDS:
        command.register(subparsers)
    for name, sub in subparsers.choices.items():
        if name not in OWN_PARSERS:
            _add_threads(sub)
    return parser


def _add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads`` on a subcommand's parser, or on each of its own subcommands'."""
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if nested:
        for sub in nested[0].choices.values():
            _add_threads(sub)
        return
    parser.add_argument(
        "--threads",
        type=thread_count,
        metavar="N",
        help="CPU threads for torch (and llama.cpp); default: torch's own, one per core "
        "(README: threads)",
    )


def thread_count(text: str) -> int:
    """argparse type of ``--threads`` (:func:`muse_quant.threads.parse_threads`)."""
    try:
        return parse_threads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into SystemExit so that builds and writes clean up their temporary files."""
    raise SystemExit(128 + signum)


#: Loggers whose warnings are noise on a CPU machine: torchao (installed for the rtn precisions,
#: and imported by transformers whenever it is installed, so in every command) tries to load its
#: CUDA and other-Python kernels and warns for each, and registers enums that torch's pytree
#: module warns about; bitsandbytes warns on import that its optional CPU 4-bit kernel library
#: is missing (it then uses its torch one).
QUIET_LOGGERS = ("torchao", "torch.utils._pytree", "bitsandbytes")


def _freeze_at_exit() -> None:
    """Skip the interpreter's last garbage collections when the process exits.

    Each full collection walks every object torch, transformers and lm-eval created (about
    0.4 s after an eval), and the shutdown runs several: about 1.5 s of every command's exit.
    ``gc.freeze`` at exit moves the objects then tracked out of their reach; the memory goes
    back to the system with the process. Files are closed and logs flushed before it (the
    commands close what they write; logging flushes in its own exit handler), and Python never
    promised ``__del__`` to objects still alive at exit. Registered as an exit handler, so a
    caller that runs several commands in one process (tests, a notebook) is collected as usual
    until it exits; registered once however often ``main`` runs.
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def main(argv: Sequence[str] | None = None) -> int:
    _freeze_at_exit()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "threads", None) is not None:
            set_threads(args.threads)
        return int(args.func(args) or 0)
    except MuseQuantError as e:
        print(f"muse-quant: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("muse-quant: interrupted", file=sys.stderr)
        return 130
