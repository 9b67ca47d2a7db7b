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
