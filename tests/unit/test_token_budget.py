"""Teacher batches capped by a token budget (texts x padded length), as text-embeddings-inference does."""

from __future__ import annotations

import pytest

from service.runtimes.teacher import token_budget_batches


def _sizes(batches: list[slice]) -> list[int]:
    return [b.stop - b.start for b in batches]


def test_token_budget_batches_cap_texts_and_padded_tokens() -> None:
    lengths = [5] * 10 + [100] * 10 + [1000]
    batches = token_budget_batches(lengths, batch_size=8, max_tokens=400)
    assert sum(_sizes(batches)) == len(lengths)
    assert [b.start for b in batches] == sorted(b.start for b in batches)  # consecutive, in order
    for b in batches:
        size, longest = b.stop - b.start, max(lengths[b])
        assert size <= 8
        assert size == 1 or size * longest <= 400
    assert _sizes(batches)[-1] == 1  # a text longer than the budget gets a batch of its own
    assert _sizes(token_budget_batches(lengths, batch_size=8)) == [8, 8, 5]  # no budget: batch_size only
    assert token_budget_batches([], 4, 10) == []
    with pytest.raises(ValueError, match="batch_size"):
        token_budget_batches(lengths, 0)
    with pytest.raises(ValueError, match="max_tokens"):
        token_budget_batches(lengths, 4, -1)


