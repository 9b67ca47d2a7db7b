"""The progress helper: in a pipe, plain lines (no carriage return), periodically and at the end."""

from __future__ import annotations

import os

import pytest

from training.progress import PlainProgress, progress, track


def test_a_pipe_gets_plain_lines_not_a_bar(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with progress(total=10, desc="label corpus", unit=" texts", every_s=0.0) as bar:  # pytest's stderr is a pipe
        assert isinstance(bar, PlainProgress)
        bar.update(4)
        bar.set_postfix(workers=2)
        bar.update(6)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("label corpus: 4/10 texts (40%)") and "workers=2" in lines[-1]
    assert lines[-1].startswith("label corpus: 10/10 texts (100%)")


def test_track_counts_the_items_and_is_silent_when_disabled(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert list(track(range(3), desc="parts", unit="part")) == [0, 1, 2]
    assert capsys.readouterr().err.strip().startswith("parts: 3/3 part (100%)")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert list(track(range(3), desc="parts")) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_library_bars_are_turned_off_in_a_pipe_only_and_an_explicit_choice_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from training import progress as module

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(module, "on_terminal", lambda: True)
    module.quiet_library_bars()
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    monkeypatch.setattr(module, "on_terminal", lambda: False)
    module.quiet_library_bars()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    module.quiet_library_bars()
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"


def test_work_done_before_a_resume_moves_the_count_but_not_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    from training import progress as module

    clock = iter([100.0, 110.0, 110.0])  # created, then one line 10 s later
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock))
    bar = PlainProgress(total=1000, desc="label corpus", unit=" texts")
    bar.skip(800)  # shards kept from the run that was cut
    bar.n += 50  # this run's work, counted without printing
    line = bar._line()
    assert line.startswith("label corpus: 850/1000 texts (85%)")
    assert "5.0 texts/s" in line and "eta 30s" in line  # 50 texts in 10 s, 150 to go


def test_the_terminal_bar_leaves_skipped_items_out_of_its_rate() -> None:
    import io

    from training.progress import Bar

    out = io.StringIO()
    bar = Bar(total=1000, file=out, mininterval=0.0, smoothing=0.0)
    bar.skip(800)
    assert (bar.n, bar.initial) == (800, 800)
    bar.start_t -= 10.0  # ten seconds of this run's work
    bar.update(50)
    shown = bar.format_meter(**{**bar.format_dict, "rate": None})  # unsmoothed: tqdm's (n - initial) / elapsed
    bar.close()
    assert "850/1000" in shown and "5.00it/s" in shown
