"""``sdd_jax.progress``: a bar on a terminal, sparse lines in a log file, nothing when quiet."""

import io

import numpy as np

from sdd_jax.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def rows(level, accs=(0.80, 0.82)):
    return [{"test_acc": a, "train_acc": 0.99, "density": 0.8**level} for a in accs]


def drive(progress, clock, levels=4, epochs=60, seconds_per_epoch=1.5, skip_levels=0):
    """Levels of ``epochs`` epochs each, ``seconds_per_epoch`` on the fake clock per epoch."""
    progress.skip_epochs(skip_levels * epochs)
    for level in range(skip_levels, levels):
        progress.start_level(level, 0.8**level)
        for epoch in range(epochs):
            clock[0] += seconds_per_epoch
            progress.epoch_done(0.8 if epoch % 5 == 4 else None)
        progress.level_done(level, rows(level))


def test_a_log_file_gets_a_line_per_level_and_at_most_one_a_minute():
    clock, stream = [0.0], io.StringIO()
    with Progress(
        total_epochs=4 * 60, verbosity=1, desc="quickstart", stream=stream, clock=lambda: clock[0]
    ) as progress:
        drive(progress, clock, skip_levels=1)
    lines = stream.getvalue().splitlines()
    done = [line for line in lines if " done " in line]
    assert [line.split()[2] for line in done] == ["1", "2", "3"]  # one per level trained
    # 270 s of training: at most one in-level line per minute besides the level lines.
    assert len(lines) - len(done) <= 270 // 60
    assert all(line.startswith("quickstart: level") for line in lines)
    assert "\r" not in stream.getvalue()  # no bar redraws
    # Each level line gives the sample standard deviation over seeds and the epochs done.
    assert f"± {100 * np.std([0.80, 0.82], ddof=1):.2f}" in done[0]
    assert "epochs 120/240" in done[0] and "epochs 240/240" in done[-1]
    # The ETA comes from the epochs trained in this process (60 epochs in 90 s, 120 to go).
    assert "ETA 03:00" in done[0]


def test_a_quickstart_sized_run_logs_tens_of_lines_not_thousands():
    clock, stream = [0.0], io.StringIO()
    with Progress(total_epochs=35 * 60, verbosity=1, stream=stream, clock=lambda: clock[0]) as progress:
        drive(progress, clock, levels=35, epochs=60, seconds_per_epoch=117 / (35 * 60))
    assert 35 <= len(stream.getvalue().splitlines()) <= 35 + 2


def test_a_terminal_gets_the_bar_and_quiet_gets_nothing():
    clock, stream = [0.0], Terminal()
    with Progress(total_epochs=2 * 10, verbosity=1, stream=stream, clock=lambda: clock[0]) as progress:
        assert progress.bar is not None
        drive(progress, clock, levels=2, epochs=10)
    assert "\r" in stream.getvalue() and " done " not in stream.getvalue()

    stream = io.StringIO()
    with Progress(total_epochs=2 * 10, verbosity=0, stream=stream, clock=lambda: clock[0]) as progress:
        drive(progress, clock, levels=2, epochs=10, seconds_per_epoch=100)
    assert stream.getvalue() == ""


def test_verbose_on_a_terminal_adds_a_line_per_level_and_one_seed_shows_no_spread():
    clock, stream = [0.0], Terminal()
    with Progress(total_epochs=10, verbosity=2, stream=stream, clock=lambda: clock[0]) as progress:
        progress.start_level(0, 1.0)
        progress.level_done(0, rows(0, accs=(0.8,)))
    assert "level  0  density 100.000%  test  80.00%  train" in stream.getvalue()
    assert "±" not in stream.getvalue()


def test_steps_of_a_named_task_log_at_most_a_line_a_minute_and_one_at_the_end():
    """The analysis counts steps under a task name (its re-dense epochs through epoch_done)."""
    clock, stream = [0.0], io.StringIO()
    with Progress(
        total_epochs=30, verbosity=1, desc="run:analyze", stream=stream, clock=lambda: clock[0], unit="step"
    ) as progress:
        for i in range(30):
            progress.task(f"sharpness, level {i}")
            clock[0] += 7.0  # 210 s in all
            progress.epoch_done(0.5) if i % 2 else progress.step()
    lines = stream.getvalue().splitlines()
    assert 210 // 60 <= len(lines) <= 210 // 60 + 1
    assert lines[-1].startswith("run:analyze: sharpness, level 29  [steps 30/30")
    assert all("steps " in line and "level" in line for line in lines)


def test_a_task_names_itself_on_the_bar():
    clock, stream = [0.0], Terminal()
    with Progress(total_epochs=3, verbosity=1, stream=stream, clock=lambda: clock[0], unit="step") as progress:
        progress.task("re-dense, level 2")
        for _ in range(3):
            progress.epoch_done(0.9)
        assert progress.done == 3
    text = stream.getvalue()
    assert "re-dense, level 2" in text and "3/3" in text and "test_acc" not in text


def test_a_stack_of_several_configurations_shows_the_range_of_their_means_not_one_mean():
    """A study's stack: 3 points x 2 seeds. Its lines give the range of the points' mean
    accuracies (numpy here), never the mean or sd over replicas of different configurations."""
    accs = np.array([0.30, 0.32, 0.40, 0.44, 0.35, 0.35])  # points: 31%, 42%, 35%
    means = 100 * accs.reshape(3, 2).mean(axis=1)
    rows6 = [{"test_acc": a, "train_acc": 0.9 + a / 10, "density": 0.8} for a in accs]
    clock, stream = [0.0], io.StringIO()
    with Progress(total_epochs=2, verbosity=1, stream=stream, clock=lambda: clock[0], interval=0) as progress:
        progress.describe("study noise.rate=0.2 (6 replicas)", group=2)
        progress.start_level(1, 0.8)
        clock[0] += 1
        progress.epoch_done(list(accs))
        progress.level_done(1, rows6)
        progress.describe("study (2 replicas)", group=2)  # one point: its mean and sd over seeds
        progress.level_done(1, rows6[:2])
    epoch, level, single = stream.getvalue().splitlines()
    span = f"{means.min():.2f}–{means.max():.2f}%"
    assert f"test {span} over 3 points" in epoch
    train = 100 * (0.9 + accs / 10).reshape(3, 2).mean(axis=1)
    assert f"test {span}  train {train.min():.2f}–{train.max():.2f}%" in level
    assert "of 3 points, 2 seeds each" in level and "±" not in level
    assert f"{100 * accs.mean():.2f}" not in epoch + level  # the meaningless mean over replicas
    assert f"test  31.00% ± {100 * np.std(accs[:2], ddof=1):.2f}" in single
