"""Student training: resume after an interruption equals an uninterrupted run; KD; feature dropout; bags."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.run_status import student_state
from training.stages import distill
from training.stages.distill import BagSource, TrainResult, TrainSpec, train_student
from training.stages.student import DAN, Bags, drop_features, predict_logits, select_bags

pytestmark = pytest.mark.usefixtures("torch_single_thread")

VOCAB = 300
DIM = 8


def make_bags(texts: int, seed: int, max_len: int = 20) -> Bags:
    """Random bags of rows, some of them empty."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, max_len + 1, size=texts)
    lengths[::17] = 0
    rows = rng.integers(0, VOCAB, size=int(lengths.sum())).astype(np.int64)
    return Bags(rows, np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64))


def row_scores() -> np.ndarray:
    return np.random.default_rng(99).normal(size=VOCAB)


def mean_score(bags: Bags) -> np.ndarray:
    lengths = np.diff(np.append(bags.offsets, bags.rows.size))
    owner = np.repeat(np.arange(len(bags)), lengths)
    sums = np.bincount(owner, weights=row_scores()[bags.rows], minlength=len(bags))
    return sums / np.maximum(lengths, 1)


def labeled(texts: int, seed: int) -> tuple[Bags, np.ndarray]:
    """Bags with a learnable label: the sign of the mean score of their rows."""
    bags = make_bags(texts, seed)
    return bags, (mean_score(bags) > 0).astype(np.int64)


TRAIN, TRAIN_LABELS = labeled(320, seed=1)
DEV, DEV_LABELS = labeled(80, seed=2)
SOURCE = BagSource.from_bags(TRAIN, TRAIN_LABELS)
SPEC = TrainSpec(mode="scratch", epochs=4, batch_size=16, lr=5e-2, feature_dropout=0.2, seed=5)


def fresh_model(dropout: float = 0.2) -> DAN:
    torch.manual_seed(1)
    return DAN(VOCAB, DIM, DIM, 2, dropout=dropout)


def count_accuracy_calls(monkeypatch: pytest.MonkeyPatch, fail_on: int | None = None) -> list[int]:
    """Route train_student's per-epoch dev evaluation through the real one, counting calls; with
    ``fail_on`` the n-th call raises, as a crash (or Ctrl-C) at the end of that epoch would."""
    calls: list[int] = []
    real: Callable[..., float] = distill.accuracy

    def wrapped(model: DAN, bags: Bags, labels: np.ndarray) -> float:
        calls.append(1)
        if fail_on is not None and len(calls) == fail_on:
            raise KeyboardInterrupt("simulated interruption")
        return real(model, bags, labels)

    monkeypatch.setattr(distill, "accuracy", wrapped)
    return calls


def run(model: DAN, spec: TrainSpec, ckpt: Path, name: str = "student") -> TrainResult:
    return train_student(model, spec, SOURCE, DEV, DEV_LABELS, ckpt, name)


def assert_same_weights(a: DAN, b: DAN) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, torch_single_thread: None) -> tuple[DAN, TrainResult]:
    model = fresh_model()
    result = run(model, SPEC, tmp_path_factory.mktemp("ckpt-full"))
    return model, result


def test_the_task_is_learned(uninterrupted: tuple[DAN, TrainResult]) -> None:
    model, result = uninterrupted
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.best_dev_acc == max(h["dev_acc"] for h in result.history) > 0.65  # chance: about 0.5
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    # The model holds the best epoch's weights.
    assert distill.accuracy(model, DEV, DEV_LABELS) == result.best_dev_acc


@pytest.mark.parametrize("fail_on", [2, 3, 4])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uninterrupted: tuple[DAN, TrainResult], fail_on: int
) -> None:
    count_accuracy_calls(monkeypatch, fail_on=fail_on)
    with pytest.raises(KeyboardInterrupt):
        run(fresh_model(), SPEC, tmp_path)
    assert (tmp_path / "student-last.pt").is_file()
    assert not (tmp_path / "student-done.json").exists()
    progress = json.loads((tmp_path / distill.progress_file("student")).read_text())  # what `sd status` reads
    assert (progress["epoch"], progress["epochs"], len(progress["history"])) == (fail_on - 1, 4, fail_on - 1)
    state, detail = student_state(tmp_path, "student")
    assert state == "part done" and detail.startswith(f"{fail_on - 1} of 4 epochs (dev acc: ")
    assert detail.endswith(f"resumes after epoch {fail_on - 1}")

    calls = count_accuracy_calls(monkeypatch)
    # Another initialisation: whatever the resumed run starts from must come from the checkpoint.
    torch.manual_seed(12345)
    resumed = DAN(VOCAB, DIM, DIM, 2, dropout=0.2)
    result = run(resumed, SPEC, tmp_path)

    assert len(calls) == SPEC.epochs - (fail_on - 1)  # only the epochs after the checkpoint ran again
    full_model, full_result = uninterrupted
    assert result.history == full_result.history
    assert (result.best_epoch, result.best_dev_acc) == (full_result.best_epoch, full_result.best_dev_acc)
    assert_same_weights(resumed, full_model)
    assert not (tmp_path / "student-last.pt").exists()
    assert not (tmp_path / distill.progress_file("student")).exists()
    assert student_state(tmp_path, "student")[0] == "done"
    assert json.loads((tmp_path / "student-done.json").read_text())["best_epoch"] == full_result.best_epoch


def test_a_finished_run_is_not_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uninterrupted: tuple[DAN, TrainResult]
) -> None:
    first = fresh_model()
    run(first, SPEC, tmp_path)
    calls = count_accuracy_calls(monkeypatch)
    again = DAN(VOCAB, DIM, DIM, 2, dropout=0.2)
    result = run(again, SPEC, tmp_path)
    assert calls == []
    assert result.history == uninterrupted[1].history
    assert_same_weights(again, first)


def test_a_changed_spec_does_not_reuse_a_stale_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    changed = TrainSpec(mode="scratch", epochs=3, batch_size=32, lr=3e-3, feature_dropout=0.0, seed=8)
    fresh = fresh_model()
    fresh_result = run(fresh, changed, tmp_path / "clean")

    # A checkpoint of SPEC, interrupted after its first epoch, lies in the folder.
    count_accuracy_calls(monkeypatch, fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        run(fresh_model(), SPEC, tmp_path / "stale")
    calls = count_accuracy_calls(monkeypatch)
    model = fresh_model()
    result = run(model, changed, tmp_path / "stale")
    assert len(calls) == changed.epochs
    assert result.history == fresh_result.history
    assert_same_weights(model, fresh)

    # A finished run of another spec is not reused either.
    calls.clear()
    other = TrainSpec(**{**changed.__dict__, "seed": 9})
    result = run(fresh_model(), other, tmp_path / "stale")
    assert len(calls) == other.epochs
    assert result.history != fresh_result.history


def test_a_finished_run_on_other_training_data_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same spec and name, other targets (as after a relabeling or a new vocabulary in the pipeline,
    whose step_kd/_train_labeled call train_student with an unchanged spec but another inputs_key): the
    old weights must not come back."""
    flipped = BagSource.from_bags(TRAIN, 1 - TRAIN_LABELS)
    expected = fresh_model()
    expected_result = train_student(expected, SPEC, flipped, DEV, 1 - DEV_LABELS, tmp_path / "clean", "s")

    run(fresh_model(), SPEC, tmp_path / "reused", "s")  # the original labels, finished
    calls = count_accuracy_calls(monkeypatch)
    model = fresh_model()
    result = train_student(
        model, SPEC, flipped, DEV, 1 - DEV_LABELS, tmp_path / "reused", "s", inputs_key="flipped labels"
    )
    assert len(calls) == SPEC.epochs, "a finished run of other training data was returned as is"
    assert result.history == expected_result.history
    assert_same_weights(model, expected)


def test_checkpoint_every_two_epochs_resumes_from_the_last_one_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uninterrupted: tuple[DAN, TrainResult]
) -> None:
    spec = TrainSpec(**{**SPEC.__dict__, "checkpoint_every": 2})
    full_model = fresh_model()
    full = run(full_model, spec, tmp_path / "full")
    assert full.history == uninterrupted[1].history  # checkpointing does not change the run

    count_accuracy_calls(monkeypatch, fail_on=4)  # epochs 1-3 done, checkpoint after epoch 2 only
    with pytest.raises(KeyboardInterrupt):
        run(fresh_model(), spec, tmp_path / "cut")
    calls = count_accuracy_calls(monkeypatch)
    model = fresh_model()
    result = run(model, spec, tmp_path / "cut")
    assert len(calls) == 2
    assert result.history == full.history
    assert_same_weights(model, full_model)


# --- Knowledge distillation -------------------------------------------------------------------------


def test_kd_loss_is_the_temperature_scaled_kl() -> None:
    spec = TrainSpec(mode="kd", epochs=1, batch_size=4, lr=1e-3, temperature=2.0)
    student = torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -2.0]])
    teacher = torch.tensor([[2.0, 0.0, 0.0], [-1.0, 1.0, 3.0]])
    p = F.softmax(teacher / 2, dim=-1)
    q = F.softmax(student / 2, dim=-1)
    expected = (p * (p.log() - q.log())).sum(dim=-1).mean() * 4
    assert distill._loss(spec, student, teacher).item() == pytest.approx(expected.item(), rel=1e-6)
    assert distill._loss(spec, teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_training_fits_the_teacher_logits(tmp_path: Path) -> None:
    score = mean_score(TRAIN)
    teacher = np.stack([-4 * score, 4 * score, np.zeros_like(score)], axis=1).astype(np.float32)
    dev_teacher = mean_score(DEV)
    dev_labels = np.where(dev_teacher > 0, 1, 0)
    spec = TrainSpec(mode="kd", epochs=6, batch_size=16, lr=5e-2, feature_dropout=0.0, temperature=2.0, seed=3)
    torch.manual_seed(0)
    model = DAN(VOCAB, DIM, 16, 3, dropout=0.0)
    result = train_student(model, spec, BagSource.from_bags(TRAIN, teacher), DEV, dev_labels, tmp_path, "kd")
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    agree = predict_logits(model, TRAIN).argmax(axis=1) == teacher.argmax(axis=1)
    assert agree.mean() > 0.85
    assert result.best_dev_acc > 0.75


# --- Feature dropout and bags -----------------------------------------------------------------------


def bag_lists(bags: Bags) -> list[list[int]]:
    bounds = np.append(bags.offsets, bags.rows.size)
    return [bags.rows[bounds[i] : bounds[i + 1]].tolist() for i in range(len(bags))]


def is_subsequence(small: list[int], big: list[int]) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


def test_feature_dropout_rate_zero_is_the_identity() -> None:
    bags = make_bags(50, seed=4)
    assert drop_features(bags, 0.0, np.random.default_rng(0)) is bags


def test_feature_dropout_drops_about_the_rate_and_keeps_offsets_valid() -> None:
    bags = make_bags(3000, seed=5, max_len=60)
    rate = 0.3
    dropped = drop_features(bags, rate, np.random.default_rng(0))
    assert len(dropped) == len(bags)
    assert dropped.offsets[0] == 0
    assert np.all(np.diff(dropped.offsets) >= 0) and dropped.offsets[-1] <= dropped.rows.size
    kept_share = dropped.rows.size / bags.rows.size
    # ~90,000 occurrences: the binomial standard deviation of the share is about 0.0015.
    assert abs(kept_share - (1 - rate)) < 0.01, kept_share
    before, after = bag_lists(bags), bag_lists(dropped)
    for original, kept in zip(before, after, strict=True):
        assert is_subsequence(kept, original)
        if not original:
            assert kept == []
    # Per bag too: a long bag loses about the rate of its n-grams.
    long_bags = [i for i, b in enumerate(before) if len(b) >= 40]
    shares = [len(after[i]) / len(before[i]) for i in long_bags]
    assert abs(float(np.mean(shares)) - (1 - rate)) < 0.02
    # The same generator state drops the same occurrences.
    again = drop_features(bags, rate, np.random.default_rng(0))
    assert np.array_equal(again.rows, dropped.rows) and np.array_equal(again.offsets, dropped.offsets)


def test_feature_dropout_changes_training(tmp_path: Path) -> None:
    plain = {**SPEC.__dict__, "feature_dropout": 0.0, "epochs": 2}
    a, b, c = fresh_model(0.0), fresh_model(0.0), fresh_model(0.0)
    run(a, TrainSpec(**plain), tmp_path / "a")
    run(b, TrainSpec(**plain), tmp_path / "b")
    run(c, TrainSpec(**{**plain, "feature_dropout": 0.5}), tmp_path / "c")
    assert_same_weights(a, b)  # deterministic without dropout
    assert not torch.equal(a.embedding.weight, c.embedding.weight)


def test_select_bags_equals_slicing_by_hand() -> None:
    bags = make_bags(60, seed=6)
    offsets = np.append(bags.offsets, bags.rows.size)
    lists = bag_lists(bags)
    index = np.array([5, 0, 59, 17, 17, 34, 2, 51], dtype=np.int64)  # repeats, empty bags (0, 17, 34, 51)
    assert lists[0] == [] and lists[17] == []
    selected = select_bags(bags.rows, offsets, index)
    assert bag_lists(selected) == [lists[i] for i in index]
    assert selected.rows.dtype == np.int64 and selected.offsets.dtype == np.int64
    everything = select_bags(bags.rows, offsets, np.arange(60, dtype=np.int64))
    assert np.array_equal(everything.rows, bags.rows) and np.array_equal(everything.offsets, bags.offsets)
    # Works on the int32 memory-mapped store the corpus features use.
    as_int32 = select_bags(bags.rows.astype(np.int32), offsets, index)
    assert bag_lists(as_int32) == [lists[i] for i in index]


def test_select_bags_of_no_texts_is_empty() -> None:
    bags = make_bags(10, seed=7)
    offsets = np.append(bags.offsets, bags.rows.size)
    selected = select_bags(bags.rows, offsets, np.empty(0, dtype=np.int64))
    assert len(selected) == 0 and selected.rows.size == 0


def test_predict_logits_is_the_same_in_any_batch_size(uninterrupted: tuple[DAN, TrainResult]) -> None:
    model = uninterrupted[0]
    whole = predict_logits(model, DEV)
    np.testing.assert_allclose(predict_logits(model, DEV, batch_size=7), whole, atol=1e-6, rtol=0)
    with torch.no_grad():
        direct = model(*DEV.tensors()).numpy()
    np.testing.assert_allclose(whole, direct, atol=1e-6, rtol=0)
    assert predict_logits(model, Bags(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))).shape == (0, 2)
