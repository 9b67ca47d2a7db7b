"""The subword study's rules: which texts form the low-coverage slice, and when subwords count as a help."""

from __future__ import annotations

import numpy as np

from training.studies.subwords import Scored, compare_split, helps, low_coverage_slice


def test_the_slice_is_the_lowest_bucket_when_it_holds_enough_texts() -> None:
    coverage = np.array([0.05, 0.1, 0.15, 0.5, 0.9, 0.9, 0.95, 1.0, 1.0, 1.0])
    first, last, mask = low_coverage_slice(coverage, share=0.3)
    assert (first, last) == (0, 0)
    assert mask.tolist() == [True, True, True] + [False] * 7


def test_a_thin_lowest_bucket_is_merged_upward_until_the_share_is_reached() -> None:
    # One text in 0.0-0.2, none in 0.2-0.4, two in 0.4-0.6: a 30% slice needs the first three buckets.
    coverage = np.array([0.1, 0.45, 0.55, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.0])
    first, last, mask = low_coverage_slice(coverage, share=0.3)
    assert (first, last) == (0, 2)
    assert mask.sum() == 3 and mask[:3].all()


def test_the_slice_starts_at_the_lowest_bucket_that_holds_texts_and_stops_at_the_last() -> None:
    coverage = np.full(20, 0.9)
    first, last, mask = low_coverage_slice(coverage, share=0.1)
    assert (first, last) == (4, 4) and mask.all()
    first, last, mask = low_coverage_slice(np.array([]), share=0.1)
    assert mask.size == 0 and first == last


def test_subwords_help_on_a_test_gain_or_on_a_tie_with_a_slice_gain_only() -> None:
    assert helps(0.5, -2.0)
    assert helps(0.0, 1.0)
    assert not helps(0.0, 0.0)  # a larger table for the same answers
    assert not helps(-0.5, 3.0)


def test_the_unknown_word_texts_are_the_word_runs_even_when_every_word_pools_subwords() -> None:
    # With subword_scope "all" every text pools subword rows; the unknown-word column must still hold
    # only the texts with a word outside the vocabulary, the same texts for both students.
    coverage = np.array([0.1, 0.5, 0.9, 1.0])
    word = Scored(np.array([True, False, True, True]), coverage, np.array([True, True, False, False]))
    both = Scored(np.array([True, True, False, True]), coverage, np.array([True, True, False, False]))
    split = compare_split(word, both)
    assert split["with_unknown_words"]["word_only"]["texts"] == 2
    assert split["with_unknown_words"]["word_only"]["accuracy"] == 0.5
    assert split["with_unknown_words"]["subwords"]["accuracy"] == 1.0
    assert split["coverage_equal"]
