"""Progress display that suits where it goes: a live tqdm bar on a terminal, plain lines in a log.

A tqdm bar redraws itself with carriage returns many times a second; written to a log file or a
CI console that becomes one enormous line (or thousands of lines). :func:`progress_bar` returns
tqdm when the stream is a terminal, and otherwise a :class:`LineProgress` that prints one
complete line (count, percent, rate, ETA, postfix) every ``LINE_PERCENT`` percent of the work or
every ``LINE_SECONDS`` seconds, whichever comes first, plus a last line when it closes. Both
offer the part of tqdm's interface furlora uses (update, set_postfix, set_postfix_str, close,
``n``, ``total``, ``disable``, use as a context manager).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

#: In a log, a progress line at least every this many percent of the total ...
LINE_PERCENT = 10.0
#: ... and at least every this many seconds (a slow step still shows the run is alive).
LINE_SECONDS = 30.0


def is_terminal(stream: Any) -> bool:
    """True when ``stream`` is an interactive terminal (a live bar makes sense there)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class LineProgress:
    """tqdm's interface, printing whole lines at an interval (for logs and CI)."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it", initial: int = 0,
                 disable: bool = False, file: TextIO | None = None, percent: float = LINE_PERCENT,
                 seconds: float = LINE_SECONDS, clock: Any = time.monotonic) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.disable = disable
        self.file = file
        self.percent = percent
        self.seconds = seconds
        self._clock = clock
        self._start = clock()
        self._initial = initial
        self._last_time = self._start
        self._last_n = initial
        self._postfix = ""
        self._closed = False

    # tqdm's interface ---------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        self.n += n
        if self.disable:
            return
        now = self._clock()
        step = self.total * self.percent / 100.0 if self.total else None
        if (step is not None and self.n - self._last_n >= step) or now - self._last_time >= self.seconds:
            self._print(now)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = str(s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.n != self._last_n:
            self._print(self._clock())

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -------------------------------------------------------------------------------------------
    def line(self, now: float | None = None) -> str:
        """The progress line as printed: ``desc: n/total (p%) rate unit/s, elapsed, ETA, postfix``."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._start, 1e-9)
        done = self.n - self._initial
        rate = done / elapsed
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.total:
            parts.append(f"{self.n}/{self.total} ({100.0 * self.n / self.total:.0f}%)")
        else:
            parts.append(f"{self.n}")
        parts.append(f", {rate:.3g} {self.unit}/s, elapsed {_duration(elapsed)}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f", ETA {_duration((self.total - self.n) / rate)}")
        if self._postfix:
            parts.append(f", {self._postfix}")
        return "".join(parts)

    def _print(self, now: float) -> None:
        print(self.line(now), file=self.file if self.file is not None else sys.stderr, flush=True)
        self._last_time = now
        self._last_n = self.n


def progress_bar(total: int | None, desc: str, unit: str = "it", *, initial: int = 0, disable: bool = False,
                 file: TextIO | None = None, leave: bool = True) -> Any:
    """A tqdm bar on a terminal, a :class:`LineProgress` otherwise (log files, CI, pipes)."""
    stream = file if file is not None else sys.stderr
    if is_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=file,
                    dynamic_ncols=True, leave=leave)
    return LineProgress(total, desc=desc, unit=unit, initial=initial, disable=disable, file=file)


def quiet_library_bars(stream: TextIO | None = None) -> bool:
    """Turn off transformers' and diffusers' own bars (weight loading, pipeline steps) when
    ``stream`` (default stderr) is not a terminal: in a log each would be a carriage-return
    redraw. Returns True when it turned them off. On a terminal they stay as the libraries set them."""
    if is_terminal(stream if stream is not None else sys.stderr):
        return False
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    return True
