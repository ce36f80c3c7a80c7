"""The progress of a wait, for ``SlurmJob.wait()`` and ``slurm-apply status --watch``.

Where a bar can be redrawn (a Jupyter kernel, a terminal) it is a ``tqdm.auto`` bar: a widget
in Jupyter when ipywidgets is installed, text otherwise. Where it cannot (a log file, a pipe),
redrawing would pile up carriage returns, so the same meter is written as a line now and then.
Either way it learns of a status only when the wait loop's ``on_update`` hands it one, and its
words beside the counts come from ``_render``.
"""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING, Any, Callable, Optional, Tuple

from .render import ENDED_BADLY_COLOUR, progress_postfix

if TYPE_CHECKING:
    from .model import JobStatus


class Progress:
    """Shows each status it is called with; ``close()`` when the wait is over.

    Parameters
    ----------
    file : file-like, optional
        Where the bar or lines go (default: ``sys.stderr`` when created). Ignored by the
        Jupyter widget.
    every_s : float
        Where no bar fits: the least time between two lines (the first and the last are
        always written, and a line is skipped when nothing but the time changed).
    clock : callable
        Seconds, monotonic (tests pass their own).
    """

    def __init__(self, *, file: Optional[IO[str]] = None, every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.file = file if file is not None else sys.stderr
        self.every_s, self.clock = every_s, clock
        self.live = in_kernel() or _isatty(self.file)
        self.bar: Any = None  # the tqdm bar, made on the first status where one fits
        self.t0: Optional[float] = None
        self.n0 = 0  # rows with an outcome when the wait began: not counted in the rate
        self.last: Optional["JobStatus"] = None
        self.line_at: Optional[float] = None
        self.line_key: Optional[Tuple[int, str]] = None

    def __call__(self, st: "JobStatus") -> None:
        n = st.rows_done + st.rows_failed
        if self.t0 is None:
            self.t0, self.n0 = self.clock(), n
        self.last = st
        if self.live:
            self._draw(st, n)
        else:
            self._line(st, n, final=False)

    def close(self) -> None:
        """Leave the last state shown: the bar stays, or a last line is written."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.last is not None and not self.live:
            self._line(self.last, self.last.rows_done + self.last.rows_failed, final=True)

    def _draw(self, st: "JobStatus", n: int) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            # smoothing=0: the rate is rows since the wait began over the time since; rows
            # arrive in bursts between polls, so a moving average would jump about.
            self.bar = tqdm(total=st.rows_total, initial=n, desc=st.jobname, unit="row",
                            file=self.file, dynamic_ncols=True, smoothing=0, leave=True)
        self.bar.set_postfix_str(progress_postfix(st), refresh=False)
        if st.ended and st.state != "COMPLETED":
            self.bar.colour = ENDED_BADLY_COLOUR  # a full bar must not look like success
        self.bar.update(n - self.bar.n)
        # Our calls are already paced by the wait loop; tqdm's own throttle would leave out
        # the last change before a pause (and `status --watch` clears the screen between).
        self.bar.refresh()

    def _line(self, st: "JobStatus", n: int, *, final: bool) -> None:
        now = self.clock()
        key = (n, progress_postfix(st))
        if key == self.line_key:
            return  # only the time changed
        if not final and self.line_at is not None and now - self.line_at < self.every_s:
            return
        from tqdm import tqdm

        text = tqdm.format_meter(n, st.rows_total, now - (self.t0 or now), prefix=st.jobname, unit="row",
                                 ascii=True, postfix=key[1], initial=self.n0)
        self.file.write(text + "\n")
        self.file.flush()
        self.line_at, self.line_key = now, key


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (the test tqdm.auto makes to pick its widget)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # a half-imported or odd IPython: not a kernel we can draw in
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _isatty(file: IO[str]) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False
