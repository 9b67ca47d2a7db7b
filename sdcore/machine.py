"""What the reports say about the machine and its load at the time of a measurement."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shown_path(path: str | Path) -> str:
    """A path as a report records it: relative to the repository when it lies inside it (links not
    followed), so the report reads the same on any machine; elsewhere as given."""
    absolute = Path(os.path.abspath(path))
    return absolute.relative_to(REPO).as_posix() if absolute.is_relative_to(REPO) else str(path)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu_model()}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.platform()}"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def busy_processes(min_cpu: float = 20.0, limit: int = 5) -> list[str]:
    """Other processes using at least ``min_cpu`` % of a core (ps's average over each one's life), for
    the reports' load note; this process, its parent and the ``ps`` call itself are left out."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,args", "--sort=-pcpu"], capture_output=True,
                             text=True, check=False).stdout.splitlines()[1:]
    except OSError:
        return []
    mine = {os.getpid(), os.getppid()}
    busy = []
    for line in out:
        parts = line.split(None, 3)
        if len(parts) < 4 or not parts[2].replace(".", "", 1).isdigit():
            continue
        pid, ppid, cpu, args = int(parts[0]), int(parts[1]), float(parts[2]), parts[3]
        if pid in mine or ppid == os.getpid() or args.startswith("ps ") or cpu < min_cpu:
            continue
        busy.append(f"{cpu:.0f}% {args[:100]}")
    return busy[:limit]


def load_note() -> str:
    busy = busy_processes()
    return ("other busy processes: " + "; ".join(busy)) if busy else "no other busy process."
