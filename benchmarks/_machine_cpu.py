"""How busy the whole machine's CPUs were over a stretch of a benchmark, from ``/proc/stat``.

A throughput figure on a shared 2-CPU machine means little without it: a second worker can only
add throughput where the first left CPU idle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuTimes:
    busy: int
    total: int


def cpu_times() -> CpuTimes:
    """The machine's CPU time so far, in clock ticks: busy (everything but idle and iowait) and
    total. ``CpuTimes(0, 0)`` where there is no ``/proc/stat``."""
    try:
        fields = _PROC_STAT.read_text().splitlines()[0].split()[1:]
    except OSError:
        return CpuTimes(0, 0)
    ticks = [int(value) for value in fields[:8]]  # user … steal; guest is inside user already
    idle = ticks[3] + ticks[4]
    return CpuTimes(busy=sum(ticks) - idle, total=sum(ticks))


def busy_cpus(start: CpuTimes, end: CpuTimes) -> float:
    """How many CPUs were busy on average between two readings (0 … ``os.cpu_count()``)."""
    total = end.total - start.total
    if total <= 0:
        return 0.0
    return (end.busy - start.busy) / total * (os.cpu_count() or 1)
