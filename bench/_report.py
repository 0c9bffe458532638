"""Shared helpers of the issue-5 benchmarks: write a figure table into BENCHMARKS.md and save a small PNG.

Each benchmark owns one block of the "## Performance vs the seed (issue 5, partial)" section, delimited
by `<!-- bench:NAME -->` / `<!-- /bench:NAME -->`, and replaces only that block when it is re-run.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from _quiet import watch

WATCH = watch()  # started when a bench imports this module, i.e. before it measures anything

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
PLOTS = ROOT / "bench" / "plots"
SECTION = "## Performance vs the seed (issue 5)"
INTRO = (
    "Measured on the 2-core CPU machine; each ratio compares two code paths measured side by side in one run, "
    "and every block says how much CPU other processes took while it ran (bench/_quiet.py refuses to record a "
    "run where they took more than 10%). The seed baselines "
    "(`bench/seed_baselines.py`) re-implement the original single-file server's loops: one image at a "
    "time through PIL and the model's processor, and search as a Python loop over a dict."
)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(rows: Sequence[tuple[str, str]], head: tuple[str, str] = ("figure", "value")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def quiet_line() -> str:
    """What the machine did besides this bench so far; exits (status 3) when it was busy: no figure is written."""
    seen = WATCH.report()
    if not seen.ok():
        print(f"refusing to write BENCHMARKS.md: {seen.describe()}; run the bench again on a quiet machine",
              file=sys.stderr)
        raise SystemExit(3)
    return f"Machine: {seen.describe()}."


def record(name: str, body: str) -> None:
    """Put `body` into BENCHMARKS.md as block `name` of the issue-5 section (created when missing), with the
    machine's load during the run; refused on a busy machine (quiet_line)."""
    machine = quiet_line()
    text = BENCHMARKS.read_text(encoding="utf-8") if BENCHMARKS.exists() else "# Benchmarks\n"
    block = f"<!-- bench:{name} -->\n{body.strip()}\n\n{machine}\n<!-- /bench:{name} -->"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{INTRO}\n"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        head, sep, tail = text.partition(SECTION)
        # Append at the end of the section (before the next "## " heading, if any).
        nxt = re.search(r"^## ", tail, re.M)
        cut = nxt.start() if nxt else len(tail)
        tail = tail[:cut].rstrip("\n") + "\n\n" + block + "\n" + ("\n" + tail[cut:] if nxt else "")
        text = head + sep + tail
    BENCHMARKS.write_text(text, encoding="utf-8")


def bar_plot(path: Path, title: str, labels: Sequence[str], values: Sequence[float], ylabel: str,
             log: bool = False) -> Path:
    """A small bar chart (about 20-40 KB) for BENCHMARKS.md."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    bars = ax.bar(list(labels), list(values), color=["#999999", "#3b75af", "#e1812c", "#519e3e"][: len(values)])
    ax.bar_label(bars, labels=[f"{v:,.3g}" for v in values], fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def grouped_plot(path: Path, title: str, groups: Sequence[str], series: dict[str, Sequence[float]],
                 ylabel: str, log: bool = True) -> Path:
    """Grouped bars: one group per x value (e.g. collection size), one bar per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=90)
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar(x + i * width - 0.4 + width / 2, list(values), width, label=name)
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=7)
    ax.set_xticks(x, list(groups))
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()
