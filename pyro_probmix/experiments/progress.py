# SPDX-License-Identifier: Apache-2.0
"""A progress bar over runs: tqdm on a terminal when it is installed, else a plain one; into a
pipe or a file, one plain line every 30 s (no carriage returns)."""
import sys
import time

__all__ = ["Progress"]


class Progress:
    """``Progress(total, desc, quiet)``; ``update(n)`` adds ``n`` (possibly fractional) runs.

    >>> import io
    >>> stream = io.StringIO()
    >>> with Progress(4, "runs", stream=stream) as bar:
    ...     bar.update(1.5)
    ...     bar.update(10)  # clipped to the total
    >>> bar.done, "4.0/4" in stream.getvalue(), chr(13) in stream.getvalue()  # not a terminal: no CR
    (4.0, True, False)
    """

    def __init__(self, total, desc="runs", quiet=False, stream=None):
        self.total, self.desc, self.quiet = total, desc, quiet
        self.stream = stream or sys.stderr
        self.done = 0.0
        self.start = time.perf_counter()
        self._last_print = 0.0
        self._printed = None  # the count of the last line printed
        self._bar = None
        if quiet or total == 0:
            return
        if not getattr(self.stream, "isatty", lambda: False)():
            self._draw(force=True)
            return
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="run", file=self.stream, dynamic_ncols=True,
                             bar_format="{l_bar}{bar}| {n:.1f}/{total} {unit}s [{elapsed}<{remaining}]")
        except ImportError:
            self._draw(force=True)

    def update(self, n=1.0):
        """Add ``n`` runs (clipped to the total)."""
        if self.quiet or self.total == 0:
            return
        n = max(0.0, min(n, self.total - self.done))
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            self._draw()

    def _draw(self, force=False):
        now = time.perf_counter()
        tty = getattr(self.stream, "isatty", lambda: False)()
        if not force and now - self._last_print < (0.5 if tty else 30.0) and self.done < self.total:
            return
        if self._printed == self.done and not tty:
            return  # this line is out already
        self._last_print, self._printed = now, self.done
        frac = self.done / self.total if self.total else 1.0
        elapsed = now - self.start
        eta = f"{elapsed / frac - elapsed:.0f}s" if frac > 0 else "?"
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        line = f"{self.desc}: [{bar}] {self.done:.1f}/{self.total} runs, {elapsed:.0f}s elapsed, ETA {eta}"
        self.stream.write(("\r" + line) if tty else (line + "\n"))
        self.stream.flush()

    def close(self):
        """Finish the bar (also on leaving a ``with`` block)."""
        if self.quiet or self.total == 0:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            self._draw(force=True)
            if getattr(self.stream, "isatty", lambda: False)():
                self.stream.write("\n")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
