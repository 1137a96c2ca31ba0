"""Progress over levels and epochs: one tqdm bar (current level, density, last test accuracy,
ETA), a line per finished level in verbose mode, nothing when quiet."""

from __future__ import annotations

import sys

import numpy as np


class Progress:
    """``verbosity``: 0 quiet, 1 a progress bar, 2 the bar plus one line per finished level."""

    def __init__(self, total_epochs: int, verbosity: int = 1, desc: str = "", stream=None):
        self.verbosity = int(verbosity)
        self.stream = stream or sys.stderr
        self.level = 0
        self.density = 1.0
        self.bar = None
        if self.verbosity > 0:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_epochs, desc=desc, unit="epoch", file=self.stream,
                            dynamic_ncols=True, leave=True)

    def start_level(self, level: int, density: float) -> None:
        self.level, self.density = level, density
        self._postfix(None)

    def skip_epochs(self, n: int) -> None:
        if self.bar is not None and n > 0:
            self.bar.update(n)

    def epoch_done(self, test_acc: float | None) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self._postfix(test_acc)

    def _postfix(self, test_acc):
        if self.bar is None:
            return
        postfix = {"level": self.level, "density": f"{100 * self.density:.2f}%"}
        if test_acc is not None:
            postfix["test_acc"] = f"{100 * test_acc:.2f}%"
        self.bar.set_postfix(postfix, refresh=False)

    def level_done(self, level: int, rows: list[dict]) -> None:
        if self.verbosity >= 2:
            test = np.array([r["test_acc"] for r in rows])
            train = np.array([r["train_acc"] for r in rows])
            message = (f"level {level:2d}  density {100 * rows[0]['density']:7.3f}%  "
                       f"test {100 * test.mean():6.2f}% ± {100 * test.std():.2f}  "
                       f"train {100 * train.mean():6.2f}%")
            if self.bar is not None:
                self.bar.write(message, file=self.stream)
            else:
                print(message, file=self.stream)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
