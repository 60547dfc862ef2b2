"""The command line's progress display: files done of total, bytes, rate, ETA and the files in
flight, drawn by rich on standard error when it is a terminal and absent otherwise (then the
commands print a plain line per file instead)."""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn, TaskID

# How many in-flight names the display lists before it says "+N more".
_SHOWN_NAMES = 3


def _count_column() -> ProgressColumn:
    """``12/200 3.4 files/s`` or ``1.2/4.0 GB 85.1 MB/s``. Built on first use: rich is imported
    only when there is a display to draw (not for --json or a pipe)."""
    from rich.filesize import decimal
    from rich.progress import ProgressColumn, Task
    from rich.table import Column
    from rich.text import Text

    class CountColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed or 0.0
            if task.fields.get("unit") == "bytes":
                return Text(
                    f"{decimal(int(task.completed))}/{decimal(int(task.total or 0))} "
                    f"{decimal(int(speed))}/s"
                )
            return Text(f"{int(task.completed)}/{int(task.total or 0)} {speed:.1f} files/s")

    return CountColumn(table_column=Column(no_wrap=True))


def _short(name: str, width: int = 24) -> str:
    """A file's base name, cut in the middle when long (the ends tell files apart)."""
    base = name.rsplit("/", 1)[-1]
    if len(base) <= width:
        return base
    half = (width - 1) // 2
    return base[:half] + "…" + base[-half:]


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


class FileProgress:
    """A live display of a batch of files; every method is safe from any thread and a no-op
    when ``enabled`` is false."""

    def __init__(self, files: int, *, total_bytes: int | None = None, enabled: bool) -> None:
        self._enabled = enabled
        self._lock = threading.Lock()
        self._current: list[str] = []
        self._progress: Progress | None = None
        self._files_task: TaskID | None = None
        self._bytes_task: TaskID | None = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        self._progress = Progress(
            TextColumn("[bold]{task.description:>5}"),
            BarColumn(bar_width=20),
            _count_column(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn(
                "{task.fields[extra]}",
                markup=False,
                table_column=Column(no_wrap=True, overflow="ellipsis"),
            ),
            console=Console(stderr=True),
            # Standard output goes above the display only when it is a terminal (the display's,
            # likely); redirected to a file or a pipe, what is printed there lands there.
            redirect_stdout=sys.stdout.isatty(),
        )
        self._files_task = self._progress.add_task("files", total=files, extra="", unit="files")
        if total_bytes is not None:
            self._bytes_task = self._progress.add_task(
                "bytes", total=total_bytes, extra="", unit="bytes"
            )

    def __enter__(self) -> Self:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    @property
    def enabled(self) -> bool:
        return self._enabled

    def started(self, name: str) -> None:
        with self._lock:
            self._current.append(name)
            self._show_current()

    def advance_bytes(self, count: int) -> None:
        if self._progress is not None and self._bytes_task is not None:
            self._progress.advance(self._bytes_task, count)

    def add_bytes_total(self, count: int) -> None:
        """A file's size counted again (it was read twice) or newly known."""
        if self._progress is not None and self._bytes_task is not None:
            task = self._progress.tasks[self._bytes_task]
            self._progress.update(self._bytes_task, total=(task.total or 0) + count)

    def finished(self, name: str) -> None:
        with self._lock:
            if name in self._current:
                self._current.remove(name)
            if self._progress is not None and self._files_task is not None:
                self._progress.advance(self._files_task, 1)
            self._show_current()

    def print(self, line: str) -> None:
        """A line above the display (or on standard error when there is none)."""
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=sys.stderr, flush=True)

    def _show_current(self) -> None:
        if self._progress is None or self._files_task is None:
            return
        names = [_short(name) for name in self._current[:_SHOWN_NAMES]]
        more = len(self._current) - len(names)
        text = ", ".join(names) + (f" +{more}" if more > 0 else "")
        self._progress.update(self._files_task, extra=text)
