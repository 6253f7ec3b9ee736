"""One progress helper for everything a user waits on.

:func:`progress_bar` picks the display from where the output goes:

* in a Jupyter kernel: ``tqdm.auto`` (a widget bar when ipywidgets is installed, a text bar otherwise);
* on a terminal (the stream is a TTY): ``tqdm.auto``'s text bar, redrawn in place;
* anywhere else (CI logs, ``make demo 2> log``): :class:`PlainProgress`, a few short plain lines
  (one at the start, one per tenth of the work, one at the end) with no carriage returns or
  cursor-control sequences;

and ``progress=False`` silences it. Every variant iterates, ``update``\\ s, ``set_description``\\ s and
works as a context manager the same way.

>>> for chunk in progress_bar(chunks, desc="forward", unit="batch"):
...     run(chunk)
>>> with progress_bar(total=3, desc="report", unit="stage") as bar:
...     bar.set_description("report: loading"); bar.update(1)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

from tqdm import tqdm as _std_tqdm
from tqdm.auto import tqdm as _auto_tqdm

T = TypeVar("T")


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (the rule ``tqdm.auto`` uses: ``ipykernel``'s shell is loaded).

    Returns:
        True inside a Jupyter kernel, False in a plain interpreter, a script or a test run.
    """
    return "ipykernel.zmqshell" in sys.modules


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    progress: bool | None = True,
    leave: bool = True,
    file: IO[str] | None = None,
) -> Any:
    """A progress bar over ``iterable`` (or over ``total`` manual ``update`` steps), shown as fits the output.

    Args:
        iterable: Items to iterate over; ``None`` for a bar advanced with ``update``.
        total: Number of steps (default ``len(iterable)`` when it has one).
        desc: Label in front of the count.
        unit: Name of one step (``"batch"``, ``"stage"``).
        progress: ``False`` shows nothing; ``None`` shows a bar only for more than one step.
        leave: Keep the finished bar on screen (interactive bars only; plain lines always stay).
        file: Stream to write to (default ``sys.stderr`` at call time).

    Returns:
        A ``tqdm`` bar (notebook or terminal), a :class:`PlainProgress` for non-interactive output, or a
        disabled ``tqdm`` when silenced; all iterate over ``iterable`` and accept ``update``.
    """
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress: expected True, False or None, got {progress!r}")
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    stream = sys.stderr if file is None else file
    show = (total is None or total > 1) if progress is None else progress
    if not show:
        return _std_tqdm(iterable, total=total, desc=desc, unit=unit, disable=True)
    if in_notebook() or _is_tty(stream):
        return _auto_tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=file)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, file=stream)


def _is_tty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PlainProgress:
    """Progress as short plain lines for logs: ``desc: 3/10 batch (30%) [00:02]``.

    A line is written when the bar starts, each time the work crosses another tenth of ``total`` (or,
    with no total, at most every ``interval`` seconds) and when it closes; never a carriage return or an
    escape sequence, so a log file or CI console shows each line once.
    """

    def __init__(self, iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", file: IO[str] | None = None, interval: float = 10.0) -> None:
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.file = sys.stderr if file is None else file
        self.interval = interval
        self.n = 0
        self.postfix = ""
        self._start = time.monotonic()
        self._last_line = self._start
        self._tenth = 0
        self._closed = False
        self._line()

    # ------------------------------------------------------------------ tqdm's everyday interface
    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("this progress bar was made without an iterable; call update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("this progress bar has no total")
        return self.total

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Advance by ``n`` steps; writes a line when another tenth is done (or ``interval`` passed)."""
        self.n += n
        now = time.monotonic()
        if self.total:
            tenth = min(10, int(10 * self.n / self.total))
            if tenth > self._tenth and self.n < self.total:
                self._tenth = tenth
                self._line()
        elif now - self._last_line >= self.interval:
            self._line()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Change the label (used from the next line on)."""
        self.desc = desc or ""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Text written after the count (used from the next line on)."""
        self.postfix = s

    def refresh(self) -> None:
        """Nothing to redraw: plain lines are only written at the milestones."""

    def write(self, s: str) -> None:
        """Write a message line."""
        print(s, file=self.file, flush=True)

    def close(self) -> None:
        """Write the final line (once)."""
        if not self._closed:
            self._closed = True
            self._line(done=True)

    # ------------------------------------------------------------------------------- the lines
    def _line(self, done: bool = False) -> None:
        self._last_line = time.monotonic()
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        text = f"{self.desc}: {count} {self.unit}" if self.desc else f"{count} {self.unit}"
        if self.total:
            text += f" ({100 * self.n // self.total}%)"
        elapsed = _std_tqdm.format_interval(self._last_line - self._start)
        text += f" done in {elapsed}" if done else f" [{elapsed}]"
        if self.postfix:
            text += f", {self.postfix}"
        print(text, file=self.file, flush=True)
