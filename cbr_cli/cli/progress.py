"""Progress of ``cbr batch`` and ``cbr calibrate`` on stderr.

On a terminal: a rich progress bar per phase (done/total, images/s, ETA, failures so
far), with each failure printed above it as it happens. Otherwise (a log file, CI): a
line when a phase starts, one every ``interval`` seconds, one when it ends, and one
per failure -- no cursor tricks in logs.
"""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from cbr_cli.batch.pool import Progress


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} img/s" if speed else "- img/s", style="cyan")


def _duration(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class ProgressDisplay:
    """A progress callback (``display(progress)``); use as a context manager."""

    def __init__(self, console: Console, interval: float = 10.0) -> None:
        self.console = console
        self.interval = interval
        self.live = console.is_terminal
        self._bar: RichProgress | None = None
        self._task = None
        self._phase: str | None = None
        self._start = 0.0
        self._last_line = 0.0

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __call__(self, progress: Progress) -> None:
        if progress.phase != self._phase:
            self._begin(progress)
        if progress.reason is not None:
            name = escape(progress.item or "?")
            self._print(f"[red]failed[/red] {name}: {escape(progress.reason)}")
        if self._bar is not None and self._task is not None:
            failed = f"[red]{progress.failed} failed[/red]" if progress.failed else ""
            self._bar.update(self._task, completed=progress.done, failed=failed)
            return
        now = time.monotonic()
        if progress.done == progress.total and progress.total:
            self._line(progress, f"done in {now - self._start:.1f} s")
        elif now - self._last_line >= self.interval and progress.done:
            elapsed = now - self._start
            rate = progress.done / elapsed if elapsed > 0 else 0.0
            eta = (progress.total - progress.done) / rate if rate > 0 else 0.0
            self._line(progress, f"{rate:.1f} images/s, ETA {_duration(eta)}")

    def _begin(self, progress: Progress) -> None:
        self._phase = progress.phase
        self._start = self._last_line = time.monotonic()
        already = f" ({progress.skipped} already done)" if progress.skipped else ""
        if not self.live:
            self.console.print(
                f"cbr: {progress.phase}: {progress.total} image{_s(progress.total)}{already}",
                highlight=False,
                soft_wrap=True,
            )
            return
        if self._bar is None:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[failed]}"),
                console=self.console,
            )
            self._bar.start()
        if already:
            self._bar.console.print(f"{progress.skipped} images already done")
        self._task = self._bar.add_task(progress.phase, total=progress.total, failed="")

    def _line(self, progress: Progress, tail: str) -> None:
        self._last_line = time.monotonic()
        failed = f", {progress.failed} failed" if progress.failed else ""
        self.console.print(
            f"cbr: {progress.phase}: {progress.done}/{progress.total}{failed}, {tail}",
            highlight=False,
            soft_wrap=True,
        )

    def _print(self, markup: str) -> None:
        target = self._bar.console if self._bar is not None else self.console
        target.print(markup, highlight=False, soft_wrap=True)


def _s(count: int) -> str:
    return "" if count == 1 else "s"
