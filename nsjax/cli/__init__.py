"""The `nsjax` command line: `nsjax COMMAND [ARGS]`, one sub-command per task.

Each command is a `Command` in `COMMANDS`: its name, a one-line help, a function adding its
arguments to an argparse parser, and a function running it on the parsed arguments that returns
the exit status. Errors the user can fix are reported without a traceback: bad flags exit with
status 2 (argparse, or a `UsageError` for combinations argparse cannot check), a bad input (a
missing file, an empty folder, labels out of range: `ValueError` / `OSError`) prints its message
on stderr and returns 1, Ctrl-C returns 130. Commands import what they need when they run, so
`nsjax --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nsjax import _malloc
from nsjax.cli._common import Command, UsageError
from nsjax.cli._data import DATA_COMMANDS
from nsjax.cli._loop import LOOP_COMMANDS
from nsjax.cli._train import TRAIN_COMMANDS

__all__ = ["COMMANDS", "Command", "UsageError", "console", "main"]

COMMANDS: tuple[Command, ...] = LOOP_COMMANDS + TRAIN_COMMANDS + DATA_COMMANDS


# --------------------------------------------------------------------------- main


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog="nsjax", description="Noisy Student self-training "
                                     "in JAX. `nsjax COMMAND --help` describes a command.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {}
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        parsers[command.name] = sub
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    """Run `nsjax` with `argv` (default: `sys.argv[1:]`).

    **Arguments:**

    - `argv`: the command-line arguments after the program name.

    **Returns:** the exit status (0 on success, 1 for a bad input, 130 on Ctrl-C); bad flags
    raise `SystemExit(2)` with argparse's message.
    """
    parser, parsers = _parsers()
    args = parser.parse_args(argv)
    command = next(c for c in COMMANDS if c.name == args.command)
    try:
        return command.run(args)
    except UsageError as e:
        parsers[command.name].error(str(e))
    except (ValueError, OSError) as e:
        print(f"nsjax {command.name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nsjax {command.name}: interrupted", file=sys.stderr)
        return 130


def console() -> int:
    """The `nsjax` program: `main()` in a process whose large buffers get transparent huge
    pages (`nsjax._malloc`: the process first re-runs itself under that glibc setting)."""
    _malloc.reexec(["-m", "nsjax.cli", *sys.argv[1:]])
    return main()
