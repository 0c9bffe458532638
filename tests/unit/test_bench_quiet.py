"""bench/_quiet.py: a bench refuses to write BENCHMARKS.md when other processes took more than a small share of
the CPUs while it ran, and counts its own process tree (servers, workers it starts) as its own."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _quiet  # noqa: E402

BUSY = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass\n"


def outsider(seconds: float) -> None:
    """A busy process outside this process tree: started through a shell that exits at once (orphaned)."""
    code = BUSY.format(s=seconds).replace("\n", "; ").replace("; while", "\nwhile")
    subprocess.run(["sh", "-c", f"setsid {sys.executable} -c '{code}' >/dev/null 2>&1 &"], check=True)


def test_another_process_busy_during_the_run_refuses_the_record() -> None:
    watch = _quiet.Watch().start()
    outsider(2.0)
    time.sleep(2.2)
    seen = watch.report()
    assert not seen.ok(), seen.describe()
    assert seen.others_share > _quiet.MAX_OTHERS_SHARE
    assert "python" in seen.describe()  # the busiest others are named


def test_the_benchs_own_children_are_its_own() -> None:
    watch = _quiet.Watch().start()
    work = "import time\nsum(i * i for i in range(4_000_000))\nprint(time.process_time())"
    used = float(subprocess.run([sys.executable, "-c", work], check=True, capture_output=True, text=True).stdout)
    seen = watch.report()
    assert seen.own_s >= 0.9 * used, seen.describe()  # the finished child's CPU time, counted as the bench's own


def test_record_exits_without_writing_on_a_busy_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import _report

    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n")
    monkeypatch.setattr(_report, "BENCHMARKS", target)
    monkeypatch.setattr(_report, "WATCH", _quiet.Watch().start())
    outsider(2.0)
    time.sleep(2.2)
    with pytest.raises(SystemExit) as stopped:
        _report.record("x", "| a | b |")
    assert stopped.value.code == 3
    assert target.read_text() == "# Benchmarks\n"
