"""Ctrl-C and SIGTERM in the CLI: the first is a stop request, like the dashboard's Stop
button.  Training ends at the next batch and the best validated epoch so far is kept and
saved as a run marked ``stopped``.  A later signal aborts at once and keeps nothing: the
way out of a stop that takes too long (decoding, a feature pass, a slow batch).

Under torchrun one Ctrl-C reaches a worker twice: the terminal sends SIGINT to the whole
foreground process group, and torchrun forwards what it received.  Signals within
``FORWARD_WINDOW_S`` of the first count as that same request.  torchrun gives its workers
30 seconds after forwarding before it SIGKILLs them: one batch and a save fit in that."""
from __future__ import annotations

import signal
import sys
import threading
import time

FORWARD_WINDOW_S = 2.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore_stops() -> None:
    """For a process that is only reporting and exiting now: a late signal must not add a line."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def abort(_signum=None, _frame=None):
    """A signal handler that ends the process's work at once (Ctrl-C's usual meaning).  One is
    enough: a second (forwarded) signal must not cut the cleanup short."""
    ignore_stops()
    raise KeyboardInterrupt


class StopOnSignal:
    """While installed, SIGINT/SIGTERM set ``event`` (the trainer's stop signal) instead of
    raising; a later one aborts, once ``window_s`` has passed (0 in one process, where
    nothing forwards: the second Ctrl-C aborts whenever it comes).  ``notice`` is printed once, on
    stderr, when the first arrives (None: silent, as on ranks other than 0)."""

    def __init__(self, notice: str | None, window_s: float = FORWARD_WINDOW_S):
        self.event = threading.Event()
        self.notice, self.window_s = notice, window_s
        self.first_at: float | None = None
        self._previous: dict = {}

    def install(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame):
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
            self.event.set()
            if self.notice:
                print(self.notice, file=sys.stderr, flush=True)
        elif now - self.first_at >= self.window_s:
            abort(signum, frame)


STOP_NOTICE = ("stopping after the current batch; the best epoch so far will be kept "
               "(press Ctrl-C again to abort and keep nothing)")
