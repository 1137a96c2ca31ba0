"""Signals that stop a command (Ctrl-C's SIGINT, a preempted VM's SIGTERM), held back while a
checkpoint is being written: :func:`deferred`.

A ``KeyboardInterrupt`` (or the command line's SIGTERM exception, :class:`sdd_jax.cli.Terminated`)
raised in the middle of orbax's ``save`` leaves its asynchronous writer half started (a coroutine
never awaited, a background thread waiting on it at exit). Inside :func:`deferred` such a signal is
recorded instead, and handled as it would have been (its handler called, or the signal raised
again) as soon as the block ends: the checkpoint is complete, then the command stops. Elsewhere,
and outside the main thread (where Python delivers no signal), nothing changes.

Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

STOPPING = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then handle the first one that came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in STOPPING}

    def hold(signum, frame):
        if not caught:
            caught.append(signum)

    for sig in STOPPING:
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            _deliver(caught[0], previous[caught[0]])


def _deliver(signum: int, handler) -> None:
    """What ``signum`` would have done with ``handler`` in place."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)  # the default action (SIGINT's raises KeyboardInterrupt)
