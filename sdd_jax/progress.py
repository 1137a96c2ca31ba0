"""Progress over levels and epochs.

On a terminal: one tqdm bar (current level, density, last test accuracy, ETA), and in verbose
mode a line per finished level. When the stream is not a terminal (a log file, ``nohup``, a
batch job), a bar would write a line per update, so the output is line based instead: one line
per finished level, and within a level at most one line per ``interval`` seconds (a minute).
Nothing when quiet.

A study trains several configurations in one stack (``describe(..., group=n)``: its points,
``n`` consecutive replicas each): an accuracy shown is then the range of the configurations'
means (``test 31.20–35.00% over 4 points``), not a mean over replicas of different
configurations.

The same object follows other work in units of its own (``unit``: the analysis counts "step"s):
:meth:`Progress.task` names what is running (the bar's postfix, and the text of the throttled
lines), :meth:`Progress.step` counts units done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from sdd_jax import distributed


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """``verbosity``: 0 quiet, 1 progress (a bar on a terminal, sparse lines elsewhere), 2 also
    one line per finished level on a terminal.

    ``interactive`` chooses the bar (``True``) or the lines (``False``); ``None`` asks
    ``stream.isatty()``. ``interval`` is the least number of seconds between two in-level lines
    (line mode; ``clock`` gives seconds, :func:`time.monotonic` by default). ``unit`` names
    what ``total_epochs`` counts (the bar's unit and the lines' ``<unit>s D/T``).
    """

    def __init__(
        self,
        total_epochs: int,
        verbosity: int = 1,
        desc: str = "",
        stream=None,
        interactive: bool | None = None,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        unit: str = "epoch",
    ):
        self.verbosity = int(verbosity) if distributed.is_primary() else 0  # one process prints (multi-host)
        self.stream = stream or sys.stderr
        self.desc = desc
        self.total = int(total_epochs)
        self.interval = float(interval)
        self.clock = clock
        self.unit = unit
        self.text = ""  # the current task (see task())
        self.group: int | None = None  # replicas per configuration (see describe())
        self.level = 0
        self.density = 1.0
        self.done = 0  # epochs done, skipped ones included
        self.skipped = 0  # epochs found done when the run resumed (not timed)
        self.started = self.last_line = clock()
        self.bar = None
        self.lines = False
        if self.verbosity > 0:
            if interactive if interactive is not None else _is_terminal(self.stream):
                self.bar = tqdm(
                    total=total_epochs, desc=desc, unit=unit, file=self.stream, dynamic_ncols=True, leave=True
                )
            else:
                self.lines = True

    def describe(self, desc: str, group: int | None = None) -> None:
        """Name what is running now (the bar's description, the prefix of the lines): a study's
        program and stack, whose replicas are configurations of ``group`` consecutive replicas
        (seeds) each."""
        self.desc = desc
        self.group = group
        if self.bar is not None:
            self.bar.set_description(desc, refresh=False)

    def start_level(self, level: int, density: float) -> None:
        self.level, self.density = level, density
        self._postfix(None)

    def skip_epochs(self, n: int) -> None:
        if n <= 0:
            return
        self.done += n
        self.skipped += n
        if self.bar is not None:
            self.bar.update(n)

    def epoch_done(self, test_acc: float | Sequence[float] | None) -> None:
        """One epoch trained (``test_acc``: its test accuracy, a fraction, per replica or their
        mean; None when not evaluated). Under a :meth:`task`, the same as :meth:`step`."""
        if self.text:
            self.step()
            return
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            self._postfix(test_acc)
        elif self.lines and self.clock() - self.last_line >= self.interval:
            test = "" if test_acc is None else f"  test {self._accuracy(test_acc)}{self._over(test_acc)}"
            self._line(f"level {self.level:2d}  density {100 * self.density:7.3f}%{test}")

    def _means(self, values: float | Sequence[float]) -> np.ndarray:
        """The configurations' mean accuracies (one value when the replicas are one configuration)."""
        x = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if self.group and x.size > self.group and x.size % self.group == 0:
            return x.reshape(-1, self.group).mean(axis=1)
        return np.array([x.mean()])

    def _accuracy(self, values: float | Sequence[float], width: int = 6) -> str:
        """``"80.00%"``, or ``"31.20–35.00%"``: the range of the configurations' means (in %)."""
        means = 100 * self._means(values)
        if means.size == 1:
            return f"{means[0]:{width}.2f}%"
        return f"{means.min():.2f}–{means.max():.2f}%"

    def _over(self, values: float | Sequence[float]) -> str:
        n = self._means(values).size
        return f" over {n} points" if n > 1 else ""

    def task(self, text: str) -> None:
        """Name the work now running (``"re-dense, level 3"``): the bar's postfix, and the text of
        the in-level lines (line mode)."""
        self.text = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)

    def step(self, n: int = 1) -> None:
        """``n`` units of the current task done. In line mode a line (the task, the units done,
        elapsed time and ETA) at most every ``interval`` seconds, and one when all are done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines and (self.clock() - self.last_line >= self.interval or self.done >= self.total):
            self._line(self.text)

    def _postfix(self, test_acc):
        if self.bar is None:
            return
        postfix = {"level": self.level, "density": f"{100 * self.density:.2f}%"}
        if test_acc is not None:
            postfix["test_acc"] = self._accuracy(test_acc, width=0)
        self.bar.set_postfix(postfix, refresh=False)

    def _timing(self) -> str:
        """``epochs D/T, elapsed E, ETA R``, the rate measured over the epochs trained here."""
        elapsed = self.clock() - self.started
        trained = self.done - self.skipped
        text = f"{self.unit}s {self.done}/{self.total}, elapsed {tqdm.format_interval(elapsed)}"
        if trained > 0 and self.done < self.total:
            text += f", ETA {tqdm.format_interval(elapsed / trained * (self.total - self.done))}"
        return text

    def _line(self, message: str) -> None:
        prefix = f"{self.desc}: " if self.desc else ""
        print(f"{prefix}{message}  [{self._timing()}]", file=self.stream, flush=True)
        self.last_line = self.clock()

    def level_done(self, level: int, rows: list[dict]) -> None:
        if not (self.lines or (self.bar is not None and self.verbosity >= 2)):
            return
        test = np.array([r["test_acc"] for r in rows])
        train = np.array([r["train_acc"] for r in rows])
        if self._means(test).size > 1:  # several configurations: the range of their means
            seeds = f", {self.group} seed{'s' if self.group != 1 else ''} each"
            accuracy = (
                f"test {self._accuracy(test)}  train {self._accuracy(train)}"
                f"  (range of the means of {self._means(test).size} points{seeds})"
            )
        else:
            spread = f" ± {100 * test.std(ddof=1):.2f}" if len(test) > 1 else ""  # sample std
            accuracy = f"test {100 * test.mean():6.2f}%{spread}  train {100 * train.mean():6.2f}%"
        message = f"level {level:2d}  density {100 * rows[0]['density']:7.3f}%  {accuracy}"
        if self.lines:
            self._line(f"{message}  done")
        else:
            self.bar.write(message, file=self.stream)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.lines = False
