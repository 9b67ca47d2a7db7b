"""This process's memory, read from ``/proc/self/status``: one place for the pipeline's per-step peaks,
the labeling-memory probe and the benchmark.

Not ``ru_maxrss`` for the peak: Linux carries it across ``execve``, so a spawned child would report its
parent's peak at the fork. Zero where ``/proc`` has no such line (not Linux).
"""

from __future__ import annotations

from pathlib import Path


def _status_kib(field: str) -> int:
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def rss_bytes() -> int:
    """Resident set size now (VmRSS)."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size of this process image (VmHWM)."""
    return _status_kib("VmHWM") * 1024
