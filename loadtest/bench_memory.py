"""Memory facts for ``make bench``: pages of the embedding table, copy bandwidth (process RSS:
``sdcore.process_memory``).

Three views of "how much of the table is in memory", because they answer different questions:
- ``touched_pages``: the pages the gathers of this process actually read, computed from the rows it
  gathered and the shard files' layout (exact; what the student needs resident for this workload);
- ``mapped_rss``: the shard mappings' ``Rss`` in ``/proc/self/smaps`` (pages mapped into this process;
  larger than the touched set because the kernel maps read faults in 64 KiB "fault-around" blocks);
- ``page_cache_resident``: ``mincore`` over the mappings (pages in the page cache, whoever read them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

PAGE = mmap.PAGESIZE


def mapped_rss(paths: Sequence[Path | str], smaps: str | None = None) -> int:
    """Sum of ``Rss`` of the mappings of ``paths`` in ``/proc/self/smaps`` (or the given text)."""
    wanted = {str(Path(p).resolve()) for p in paths}
    text = smaps if smaps is not None else Path("/proc/self/smaps").read_text()
    total = 0
    current = False
    for line in text.splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            current = len(head) == 6 and head[5].strip() in wanted  # a mapping's header line
        elif current and line.startswith("Rss:"):
            total += int(line.split()[1]) * 1024
    return total


def touched_pages(rows: npt.NDArray[np.int64], row_bytes: int, data_offset: int) -> int:
    """Distinct file pages covered by ``rows`` of a table stored from byte ``data_offset`` on."""
    if rows.size == 0:
        return 0
    rows = np.unique(rows.astype(np.int64))
    first = (data_offset + rows * row_bytes) // PAGE
    last = (data_offset + (rows + 1) * row_bytes - 1) // PAGE
    spans = last - first + 1
    pages = np.repeat(first, spans) + (np.arange(int(spans.sum())) - np.repeat(np.cumsum(spans) - spans, spans))
    return int(np.unique(pages).size)


def page_cache_resident(array: np.memmap) -> int | None:
    """Bytes of ``array``'s file mapping that are in the page cache (``mincore``); None if unavailable."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        data = int(array.ctypes.data)
        offset = int(getattr(array, "offset", 0))
        start = (data - offset) & ~(PAGE - 1)
        end = data + array.nbytes
        length = end - start
        pages = (length + PAGE - 1) // PAGE
        vec = (ctypes.c_ubyte * pages)()
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(length), vec) != 0:
            return None
        return int((np.frombuffer(bytes(vec), dtype=np.uint8) & 1).sum()) * PAGE
    except (OSError, AttributeError, ValueError):
        return None


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """This machine's memory copy bandwidth in bytes/s (bytes read; numpy copy of a large array).

    Counted as bytes of the source per second, the same convention as the student's gather figure
    (bytes of distinct rows read per second), so the two compare directly.
    """
    src = np.ones(mib * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch of dst pages is not what we measure
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - started)
    return src.nbytes / statistics.median(times)

