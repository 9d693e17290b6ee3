"""Stop signals: a preemption notice ends training at a checkpoint, a second Ctrl-C at once.

SIGTERM (what schedulers and ``kill`` send), SIGUSR1 (SLURM's ``--signal=USR1@120``)
and SIGINT (Ctrl-C):

- while the training loop runs (:func:`graceful_stops`), the first one only asks it
  to stop: the loop finishes its step, every rank agrees at the next step, rank 0
  writes ``checkpoint_latest.pyth``, and the run exits with :data:`EXIT_PREEMPTED`;
- elsewhere (set-up, testing) the first one raises :class:`Interrupted` at once and
  the run exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM);
- a second SIGINT ends the process at once (status 130) whatever it is doing; any
  other repeat is part of the stop already under way and is ignored.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
# sysexits.h's EX_TEMPFAIL, "try again later": the run stopped at a checkpoint and resumes when rerun.
EXIT_PREEMPTED = 75


class Interrupted(BaseException):
    """A stop signal arrived (``args[0]``: its number). A BaseException, so no ``except
    Exception`` on the way swallows it; the ``finally`` blocks it unwinds release the lock,
    and the DataLoader iterators it frees stop their workers."""


class Preempted(Exception):
    """Training stopped at a checkpoint because a stop signal asked it to (``args[0]``: its number)."""


class StopSignals:
    """Within ``with StopSignals() as stop``, the stop signals behave as the module docstring says;
    the first is kept in ``stop.received``.

    DataLoader workers ignore all three (see ``video_gc.data.loader.seed_worker``): the main
    process stops them, and a signal that reaches the whole process group neither kills a
    worker the step under way still needs nor raises in the middle of its decoding. Nor do they print a traceback for a connection the main process closed because
    it stopped while taking a batch from them: the main process reports the stop.
    """

    active: StopSignals | None = None

    def __enter__(self) -> StopSignals:
        self.received, self.resent, self.graceful, self.children = None, False, False, []
        self.previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}
        self.previous_hook, sys.unraisablehook = sys.unraisablehook, self._dropped
        StopSignals.active = self
        return self

    def __exit__(self, *exc) -> None:
        StopSignals.active = None
        self.restore()

    def restore(self) -> None:
        sys.unraisablehook = self.previous_hook
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame) -> None:
        if self.received is None:
            self.received = signum
            if self.graceful:
                return  # the training loop sees it at its next step
        elif signum == signal.SIGINT and not self.resent:
            self._exit_now()
        elif not self.resent:
            return
        self.resent = False
        raise Interrupted(self.received)

    def _exit_now(self) -> None:
        """A second Ctrl-C: no checkpoint, no clean-up, no waiting for anyone."""
        workers = [child.pid for child in multiprocessing.active_children()]  # DataLoader workers
        for pid in self.children + workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.write(2, b"second SIGINT: exiting at once\n")
        os._exit(128 + signal.SIGINT)

    def _dropped(self, unraisable) -> None:
        """Python drops an exception raised where it cannot pass one on: a ``__del__``, or an
        at-fork hook while a DataLoader forks its workers. Interrupted must not be lost there:
        the signal is sent again from a thread, so that it arrives once that code has returned.
        Other such errors after a signal come from code the stop cut short (e.g. the ``__del__``
        of a half-built DataLoader iterator) and are part of the stop."""
        if isinstance(unraisable.exc_value, Interrupted):
            self.resent = True
            threading.Timer(0.01, os.kill, (os.getpid(), self.received)).start()
        elif self.received is None:
            self.previous_hook(unraisable)


def stop_requested() -> int | None:
    """The stop signal received while :func:`graceful_stops` was active, else None."""
    stop = StopSignals.active
    return stop.received if stop is not None and stop.graceful else None


def agree_to_stop() -> int:
    """This process stops because another one got a stop signal (or it got one itself): from now
    on a SIGTERM (e.g. from a launcher stopping the others) is part of this stop. Returns the
    signal to report."""
    stop = StopSignals.active
    if stop is not None and stop.received is None:
        stop.received = signal.SIGTERM
    return stop.received if stop is not None else signal.SIGTERM


@contextlib.contextmanager
def graceful_stops():
    """Within it, a first stop signal waits for the caller to act on :func:`stop_requested`. A
    signal that came before (during set-up) has already raised; outside any StopSignals (a
    programmatic call) nothing changes."""
    stop = StopSignals.active
    if stop is None:
        yield
        return
    stop.graceful = True
    try:
        yield
    finally:
        stop.graceful = False
    if stop.received is not None:  # arrived after the loop last looked: stop as the rest of the run would
        raise Interrupted(stop.received)


def _quiet_about_closed_connections(exc_type, exc, traceback) -> None:
    # multiprocessing's thread that hands tensors to the main process reports through sys.excepthook.
    if not issubclass(exc_type, ConnectionError):
        sys.__excepthook__(exc_type, exc, traceback)


def _in_forked_child() -> None:
    # A DataLoader worker: until its init function ignores the stop signals for good
    # (video_gc.data.loader.seed_worker), a Ctrl-C to the group must not raise in it either.
    if StopSignals.active is not None:
        StopSignals.active.restore()
        StopSignals.active = None
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.excepthook = _quiet_about_closed_connections


os.register_at_fork(after_in_child=_in_forked_child)
