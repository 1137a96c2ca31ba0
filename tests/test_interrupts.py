"""A stopping signal that arrives while a checkpoint is written is handled once the write is done."""

import atexit
import os
import signal

import pytest

from sdd_jax import cli, interrupts


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


@pytest.mark.parametrize("code", [130, 143])
def test_a_stopped_command_runs_the_exit_handlers_and_skips_the_teardown(monkeypatch, code):
    """After a stop, ``sdd-jax`` runs the exit handlers, then leaves with ``os._exit``: the
    interpreter's teardown (jax's, with a compilation or checkpoint thread at work) crashed."""
    calls = []
    monkeypatch.setattr(cli, "main", lambda: code)
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: calls.append("exit handlers"))

    def hard_exit(status):
        calls.append(status)
        raise Stopped(status)  # os._exit does not return

    monkeypatch.setattr(os, "_exit", hard_exit)
    with pytest.raises(Stopped):
        cli.entry()
    assert calls == ["exit handlers", code]


def test_a_finished_command_exits_normally(monkeypatch):
    monkeypatch.setattr(cli, "main", lambda: 0)
    monkeypatch.setattr(os, "_exit", lambda status: pytest.fail("os._exit after a normal end"))
    with pytest.raises(SystemExit) as exited:
        cli.entry()
    assert exited.value.code == 0
