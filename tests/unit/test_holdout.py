"""The router's slice of the transfer corpus (training.stages.holdout): deterministic, capped, and disjoint
from the texts the student trains, tunes or is tested on."""

from __future__ import annotations

import numpy as np

from training.data.tasks import normalized
from training.stages.holdout import holdout_key, split_corpus

CORPUS = [f"sentence number {i} about a film that was {'good' if i % 3 else 'bad'}" for i in range(2000)]


def test_the_slice_is_a_pure_function_of_the_texts_and_settings() -> None:
    a = split_corpus(CORPUS, 0.1, 10_000, set())
    b = split_corpus(list(CORPUS), 0.1, 10_000, set())
    assert np.array_equal(a.holdout, b.holdout) and np.array_equal(a.kd, b.kd)
    assert 120 < a.holdout.size < 280  # about 10% of 2,000
    # the slice and the KD rows partition the corpus
    assert np.intersect1d(a.holdout, a.kd).size == 0
    assert np.array_equal(np.union1d(a.holdout, a.kd), np.arange(len(CORPUS)))
    # membership follows the text, not its position: shuffling the corpus keeps the same texts
    order = np.random.default_rng(0).permutation(len(CORPUS))
    shuffled = [CORPUS[i] for i in order]
    c = split_corpus(shuffled, 0.1, 10_000, set())
    assert {shuffled[i] for i in c.holdout} == {CORPUS[i] for i in a.holdout}


def test_copies_of_a_text_in_other_casing_or_punctuation_fall_on_the_same_side() -> None:
    assert holdout_key("A GREAT film!") == holdout_key("a great film")
    texts = ["A great film!", "a great film", "a great ... FILM"]
    split = split_corpus(texts, 1.0, 10, set())
    assert split.holdout.tolist() == [0, 1, 2]


def test_training_dev_and_test_texts_are_never_held_out() -> None:
    everything = split_corpus(CORPUS, 0.5, 10_000, set())
    taken = [CORPUS[i] for i in everything.holdout[:50]]
    excluded = {normalized(t.upper() + " !") for t in taken}  # the labeled sets hold them in another form
    split = split_corpus(CORPUS, 0.5, 10_000, excluded)
    held = {CORPUS[i] for i in split.holdout}
    assert not held & set(taken)
    assert all(normalized(t) not in excluded for t in held)
    assert set(taken) <= {CORPUS[i] for i in split.kd}  # they stay in distillation


def test_the_cap_keeps_the_smallest_hashes() -> None:
    full = split_corpus(CORPUS, 0.2, 10_000, set())
    capped = split_corpus(CORPUS, 0.2, 50, set())
    assert capped.holdout.size == 50
    keys = sorted((holdout_key(CORPUS[i]), i) for i in full.holdout)
    assert capped.holdout.tolist() == sorted(i for _, i in keys[:50])
    assert capped.kd.size == len(CORPUS) - 50


def test_windows_are_never_held_out_and_windows_of_held_out_texts_leave_distillation() -> None:
    originals = ["the plot was thin but the acting was superb", "what a dull and lifeless movie this is",
                 "an instant classic with a moving score"]
    windows = ["the plot was thin", "dull and lifeless movie", "with a moving score", "acting was superb"]
    texts = originals + windows
    split = split_corpus(texts, 1.0, 10, set(), window_min_words=3, originals=len(originals))
    assert split.holdout.tolist() == [0, 1, 2]
    assert split.kd.size == 0 and split.windows_dropped == 4  # every window is one of a held-out text
    none = split_corpus(texts, 0.0, 10, set(), window_min_words=3, originals=len(originals))
    assert none.holdout.size == 0 and none.kd.size == len(texts)
