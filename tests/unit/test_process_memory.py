"""The one process-memory helper: real readings of this process."""

from __future__ import annotations

import numpy as np

from sdcore.process_memory import peak_rss_bytes, rss_bytes


def test_the_peak_holds_the_largest_resident_set_after_it_is_freed() -> None:
    before = peak_rss_bytes()
    assert 0 < rss_bytes() <= before
    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, written so it is resident
    during = rss_bytes()
    del block
    slack = 4 * 2**20  # the kernel syncs its per-CPU RSS counters lazily: two readings may differ a little
    assert during >= 64 * 2**20
    assert peak_rss_bytes() >= during - slack  # freed, yet the peak keeps it
    assert peak_rss_bytes() >= rss_bytes() - slack
