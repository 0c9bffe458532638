"""Benchmarks refuse a busy machine: the machine's busy CPU time over a bench's run (/proc/stat), less what the
bench's own process tree used (itself and the servers, workers and exporters it starts, with their finished
children: /proc/<pid>/stat utime + stime + cutime + cstime), is what other processes took.
`record()` (bench/_report.py) refuses to write BENCHMARKS.md when the other processes took more than
MAX_OTHERS_SHARE of the machine's CPU time over the run: it prints what it saw, the busiest other processes
first, and exits non-zero. Nothing overrides it (a `--note` only describes a quiet run); re-run on a quiet machine.

Why: a table recorded under load was once quoted as a limit (a 5-s build read 149 s) and a wrong conclusion
followed. A process of the bench that is orphaned and reaped by init takes its CPU time with it, which is then
counted as others': the check errs on refusing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_OTHERS_SHARE = 0.10  # of all CPUs over the run: 0.2 of a core on a 2-core machine
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    parent: int
    name: str
    own_s: float  # utime + stime
    children_s: float  # cutime + cstime: its finished children it waited for


def processes() -> dict[int, Proc]:
    """Every process readable now."""
    found: dict[int, Proc] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()  # stat(5) from the state on: ppid is [1], utime [11] .. cstime [14]
        found[int(entry.name)] = Proc(int(fields[1]), raw[raw.index("(") + 1:raw.rindex(")")],
                                      (int(fields[11]) + int(fields[12])) / TICKS,
                                      (int(fields[13]) + int(fields[14])) / TICKS)
    return found


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICKS


def in_tree(pid: int, root: int, table: dict[int, Proc]) -> bool:
    for _ in range(64):
        if pid == root:
            return True
        if pid <= 1 or pid not in table:
            return False
        pid = table[pid].parent
    return False


@dataclass
class Watch:
    """CPU time of this process tree and of everything else since `start()`."""

    root: int = field(default_factory=os.getpid)
    started: float = 0.0
    busy_at_start: float = 0.0
    own_at_start: float = 0.0
    others_at_start: dict[int, float] = field(default_factory=dict)

    def start(self) -> Watch:
        table = processes()
        self.started, self.busy_at_start = time.monotonic(), machine_busy_seconds()
        self.own_at_start = self.tree_seconds(table)
        self.others_at_start = {pid: p.own_s for pid, p in table.items() if not in_tree(pid, self.root, table)}
        return self

    def tree_seconds(self, table: dict[int, Proc]) -> float:
        return sum(p.own_s + p.children_s for pid, p in table.items() if in_tree(pid, self.root, table))

    def report(self) -> Quiet:
        table = processes()
        wall = time.monotonic() - self.started
        own = self.tree_seconds(table) - self.own_at_start
        others = max(0.0, machine_busy_seconds() - self.busy_at_start - own)
        named: dict[str, float] = {}
        for pid, p in table.items():
            if not in_tree(pid, self.root, table):
                named[p.name] = named.get(p.name, 0.0) + p.own_s - self.others_at_start.get(pid, 0.0)
        busiest = sorted(((n, s) for n, s in named.items() if s >= 0.05), key=lambda kv: -kv[1])[:5]
        return Quiet(wall_s=wall, capacity_s=wall * (os.cpu_count() or 1), own_s=own, others_s=others,
                     busiest=busiest)


@dataclass(frozen=True)
class Quiet:
    wall_s: float
    capacity_s: float
    own_s: float
    others_s: float
    busiest: list[tuple[str, float]]

    @property
    def others_share(self) -> float:
        return self.others_s / self.capacity_s if self.capacity_s else 0.0

    def ok(self) -> bool:
        return self.others_share <= MAX_OTHERS_SHARE

    def describe(self) -> str:
        top = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.busiest) or "none"
        return (f"other processes used {self.others_share:.1%} of the {os.cpu_count()} CPUs over {self.wall_s:.0f} s "
                f"(this bench {self.own_s / self.capacity_s:.1%}; busiest others: {top})")


def watch() -> Watch:
    """A watch started now (bench/_report.py starts one when a bench imports it, before anything is measured)."""
    return Watch().start()
