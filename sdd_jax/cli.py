"""``sdd-jax`` / ``python -m sdd_jax``: run presets, branch from finished runs, report.

sdd-jax presets
sdd-jax show PRESET [--set key=value ...]
sdd-jax run PRESET [--set key=value ...] [--seeds N] [--workdir DIR|gs://BUCKET/DIR] [-q | -v] [--force-unlock]
sdd-jax sweep PRESET --grid KEY=V1,V2,... [--grid ...] [--set key=value ...] [--seeds N] [--workdir DIR] [-q | -v]
sdd-jax oneshot RUN_DIR --levels 4,8,12 [--force-unlock]      (also: reinit, random-prune, redense)
sdd-jax report RUN_DIR|STUDY_DIR
sdd-jax compare STUDY_DIR|RUN_DIR... --by KEY [--panel KEY] [--distance] [--branches] [--out DIR]
sdd-jax analyze RUN_DIR [--levels 0,17,27,34] [--set analysis.key=value ...] [-q]
sdd-jax estimate PRESET [--set key=value ...] [--seeds N] [--epochs 2]
sdd-jax export RUN_DIR --level K [--seed S] [--format npz|bcoo] [--out PATH]

PRESET is a preset name (sdd-jax presets) or a Python file defining config() (my_preset.py).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import signal
import sys
import threading
import warnings

from sdd_jax.cli_commands import COMMANDS
from sdd_jax.cli_parser import build_parser
from sdd_jax.config import ConfigError

# The exit statuses of a stopped command, as shells report signals: Ctrl-C (SIGINT), SIGTERM.
INTERRUPTED = 128 + signal.SIGINT
TERMINATED = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a preempted VM's shutdown): the command stops as on Ctrl-C, its in-flight
    checkpoint finished and its run directory's lock released."""


@contextlib.contextmanager
def _sigterm_stops():
    """While a command runs, the first SIGTERM raises :class:`Terminated` in the main thread (the
    later ones are ignored while it stops); the previous handler afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _warning_line
    with _sigterm_stops():
        return _main(args)


def _main(args) -> int:
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # e.g. `sdd-jax show ... | head`
        sys.stderr.close()
        return 0
    except OSError as err:
        print(f"sdd-jax: error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except (ConfigError, KeyError, ValueError, FloatingPointError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"sdd-jax: error: {message}", file=sys.stderr)
        return 2
    except Terminated:
        print("sdd-jax: stopped by SIGTERM; rerun the same command to resume", file=sys.stderr)
        return TERMINATED
    except KeyboardInterrupt:
        print("sdd-jax: interrupted; rerun the same command to resume", file=sys.stderr)
        return INTERRUPTED
    except Exception as err:  # noqa: BLE001 - a bug: one line, the traceback on request
        if os.environ.get("SDD_JAX_TRACEBACK"):
            raise
        first = (str(err).strip().splitlines() or [""])[0][:300]
        print(
            f"sdd-jax: error: unexpected {type(err).__name__}: {first} (set SDD_JAX_TRACEBACK=1 to see where)",
            file=sys.stderr,
        )
        return 1


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"sdd-jax: warning: {message}\n"


def os_error_line(err: OSError) -> str:
    """One line for a failed file operation: the path, the reason and, for a full disk, what a
    rerun does."""
    if err.strerror is None:  # raised by this package with its own message
        return str(err)
    where = err.filename if err.filename is not None else "a file"
    line = f"cannot write or read {where}: {err.strerror}"
    if err.errno == errno.ENOSPC:
        line += (
            "; free some space and rerun the same command: finished levels and the last "
            "checkpoint are kept, and the results are the same as an uninterrupted run"
        )
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        line += "; choose a writable --workdir (run.workdir) or fix the permissions"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):
        line += "; a file stands where a folder is needed"
    return line


STOPPED = (INTERRUPTED, TERMINATED)


def entry() -> None:
    """The ``sdd-jax`` console script and ``python -m sdd_jax``: :func:`main`, then exit with its
    status. After a stop (Ctrl-C, SIGTERM) the process leaves without the interpreter's teardown:
    the exit handlers run (a Cloud Storage lock is released, trackers finish their runs), the
    streams are flushed, and ``os._exit`` ends it. Tearing jax down while a compilation or a
    checkpoint thread is still at work crashed the interpreter (a segmentation fault instead of
    exit status 130 or 143) when a stop came early in a run."""
    code = main()
    if code in STOPPED:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
