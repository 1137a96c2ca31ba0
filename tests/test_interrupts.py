"""A stopping signal that arrives while a checkpoint is written is handled once the write is done."""

import os
import signal

import pytest

from sdd_jax import interrupts


class Stopped(Exception):
    pass


def test_a_signal_inside_the_block_is_handled_when_the_block_ends(monkeypatch):
    def stop(signum, frame):
        raise Stopped(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        done = []
        with pytest.raises(Stopped) as stopped:
            with interrupts.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGINT)  # a second one: only the first is handled
                done.append("the block ran to its end")
        assert done == ["the block ran to its end"] and stopped.value.args == (signal.SIGTERM,)
        assert signal.getsignal(signal.SIGTERM) is stop  # the handlers are back
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_inside_the_block_is_a_keyboard_interrupt_after_it():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("finished")
    assert done == ["finished"]


def test_without_a_signal_nothing_happens():
    with interrupts.deferred():
        value = 1 + 1
    assert value == 2 and signal.getsignal(signal.SIGINT) is signal.default_int_handler
