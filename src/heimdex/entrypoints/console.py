"""The ``heimdex`` console script: ``heimdex probe FILE…`` straight to the prober, every other
command (and any probe line this module does not read exactly as typer would) through the typer
application in :mod:`heimdex.entrypoints.cli`.

``heimdex probe one.mp4`` is meant to answer about as fast as ``ffprobe``: a Python process with
PyAV loaded is most of that budget already, and building the typer application (click, typer, the
replay and job models) cost as much again. So a plain probe line — files, ``--json``,
``--jobs N`` — is parsed here, with the same meaning typer gives it, and anything else (``--help``,
an unknown option, a bad ``--jobs``, shell completion) goes to typer, which answers it the usual
way. This module imports nothing beyond the standard library until it knows which it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

if TYPE_CHECKING:
    from heimdex.settings import Settings

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# typer's completion asks the program itself, through this variable (click's _PROG_COMPLETE).
_COMPLETION_VARIABLE = "_HEIMDEX_COMPLETE"


Args = TypeVar("Args")


class CliError(Exception):
    """A mistake the user can fix; printed as one line."""


class ProbeArgs:
    """``heimdex probe``'s arguments (a class of its own: argparse is not imported for them)."""

    def __init__(self, files: Sequence[Path], *, json: bool, jobs: int) -> None:
        self.files, self.json, self.jobs = list(files), json, jobs


def run_command(handler: Callable[[Args], int], args: Args) -> int:
    """Run a command body; user mistakes and Heimdex errors become one line and an exit code."""
    from heimdex.domain.errors import HeimdexError

    try:
        return handler(args)
    except CliError as exc:
        print(f"heimdex: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HeimdexError as exc:
        print(f"heimdex: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def load_settings_or_fail() -> Settings:
    """The settings; a bad value is a :class:`CliError` (one line per value)."""
    from heimdex.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        raise CliError(str(exc)) from exc


def cmd_probe(args: ProbeArgs) -> int:
    """``heimdex probe``'s body: the configured prober, in this process."""
    from heimdex.entrypoints.probe_command import probe_command

    return probe_command(load_settings_or_fail(), args.files, as_json=args.json, jobs=args.jobs)


def plain_probe(argv: Sequence[str]) -> ProbeArgs | None:
    """``argv``'s probe arguments when it is a probe line with only files, ``--json`` and
    ``--jobs``/``-j`` N (N >= 1), read as click reads them (options among the files, ``--``
    ending the options); ``None`` for anything else, which typer then answers."""
    if len(argv) < 2 or argv[0] != "probe" or _COMPLETION_VARIABLE in os.environ:
        return None
    files: list[Path] = []
    as_json = False
    jobs: str | None = None
    rest = iter(argv[1:])
    for word in rest:
        if word == "--":
            files += [Path(name) for name in rest]
        elif word == "--json":
            as_json = True
        elif word in ("--jobs", "-j"):
            jobs = next(rest, None)
            if jobs is None:
                return None
        elif word.startswith("--jobs="):
            jobs = word.removeprefix("--jobs=")
        elif word.startswith("-j") and not word.startswith("-j="):
            jobs = word.removeprefix("-j")
        elif word.startswith("-") and word != "-":
            return None  # --help, -h, an unknown option or a file named like one: typer's call
        else:
            files.append(Path(word))
    if not files:
        return None
    if jobs is None:
        return ProbeArgs(files, json=as_json, jobs=os.cpu_count() or 1)
    if not (jobs.isascii() and jobs.isdigit()) or int(jobs) < 1:
        return None  # typer says why
    return ProbeArgs(files, json=as_json, jobs=int(jobs))


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status of the command ``argv`` (default: ``sys.argv[1:]``), run in this process."""
    args = list(sys.argv[1:] if argv is None else argv)
    probe = plain_probe(args)
    if probe is not None:
        return run_command(cmd_probe, probe)
    from heimdex.entrypoints.cli import main as typer_main

    return typer_main(args)


def run() -> NoReturn:
    """The ``heimdex`` console script: :func:`main`, then the process ends.

    A reader that goes away (``heimdex ingest --json | head``) ends the command with status 1
    and no traceback, as click ends the other commands: the ingest's task group has already
    cancelled its files in flight, as on Ctrl-C.

    A plain probe ends with ``os._exit`` once its output is flushed: interpreter shutdown
    (module teardown, unloading PyAV's FFmpeg) costs about a tenth of the command's time, and
    a probe holds nothing that needs it.
    """
    args = sys.argv[1:]
    try:
        code = main(args)
        sys.stdout.flush()
    except BaseException as exc:  # re-raised unless it is only a closed pipe
        if not reader_went_away(exc):
            raise
        code = EXIT_FAILURE  # as click ends a command whose reader went away
        # Python flushes stdout again at exit; that write must not find the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if plain_probe(args) is not None:
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def reader_went_away(exc: BaseException) -> bool:
    """Whether ``exc`` is a closed standard output and nothing else (a task group's included)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(reader_went_away(inner) for inner in exc.exceptions)
    return isinstance(exc, BrokenPipeError)


if __name__ == "__main__":
    run()
