"""`python -m indexer --watch` run as users run it, in a subprocess, on the embedded store (no service):
a file written in pieces, add/change/move/remove, the library unmounted and back, and SIGTERM.
The store is checked by opening it once the watcher has stopped (the embedded store has one owner)."""

from __future__ import annotations

import io
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers.indexing import cli_env, edge_contents
from serving import ROOT
from shapes import draw_shape, make_library

PASS = re.compile(r"pass: added (\d+) \| updated (\d+) \| removed (\d+) \| failed (\d+)")
SETTLE_S = 1.0


class Watch:
    """The watcher subprocess and its log lines, each with the time it was read."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "indexer", "--watch", "--no-progress"], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self.read, daemon=True).start()

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))

    def next_pass(self, timeout: float = 60) -> tuple[float, tuple[int, ...]]:
        """The time and (added, updated, removed, failed) of the next pass line."""
        deadline = time.monotonic() + timeout
        while True:
            at, line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            self.seen.append(line)
            found = PASS.search(line)
            if found:
                return at, tuple(int(n) for n in found.groups())

    def quiet_for(self, seconds: float) -> list[str]:
        """The lines logged in the next `seconds`; none may be a pass."""
        deadline, lines = time.monotonic() + seconds, []
        while (left := deadline - time.monotonic()) > 0:
            try:
                lines.append(self.lines.get(timeout=left)[1])
            except queue.Empty:
                break
        self.seen += lines
        assert not [line for line in lines if PASS.search(line)], lines
        return lines


def jpeg(shape: str, color: str, seed: int) -> bytes:
    out = io.BytesIO()
    draw_shape(shape, color, size=256, seed=seed).save(out, format="JPEG", quality=95)
    return out.getvalue()


def test_watch_mode_follows_the_library(tiny_clip_dir: Path, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = make_library(library, n_per_class=1)
    env = cli_env(tiny_clip_dir, library, tmp_path / "qdrant")
    env.update(WATCH_INTERVAL_S="0.2", WATCH_SETTLE_S=str(SETTLE_S))
    watch = Watch(env)
    try:
        _, first = watch.next_pass(timeout=120)
        assert first == (len(shapes), 0, 0, 0)

        # A copy in pieces, each gap shorter than the settle time: indexed once, complete.
        data = jpeg("circle", "red", seed=7)
        piece = len(data) // 4 + 1
        with open(library / "slow.jpg", "wb") as out:
            for start in range(0, len(data), piece):
                if start:
                    time.sleep(SETTLE_S * 0.6)
                out.write(data[start:start + piece])
                out.flush()
        copied = time.monotonic()
        at, counts = watch.next_pass()
        assert counts == (1, 0, 0, 0) and at > copied, watch.seen  # no pass saw it half written
        delay = at - copied
        print(f"copy finished -> pass written: {delay:.2f} s (interval 0.2 s, settle {SETTLE_S} s)")
        assert delay < 10
        watch.quiet_for(SETTLE_S * 2)  # indexed once

        changed = sorted(shapes)[0]
        (library / changed).write_bytes(jpeg("square", "blue", seed=3))
        assert watch.next_pass()[1] == (0, 1, 0, 0)

        moved = sorted(shapes)[1]
        (library / "moved").mkdir()
        (library / moved).rename(library / "moved" / Path(moved).name)
        assert watch.next_pass()[1] == (1, 0, 1, 0)  # one pass: the vector is reused, not re-embedded

        removed = sorted(shapes)[2]
        (library / removed).unlink()
        assert watch.next_pass()[1] == (0, 0, 1, 0)

        # Unmounted: first no folder at all, then an empty mount point. Nothing is removed meanwhile.
        library.rename(tmp_path / "away")
        logged = watch.quiet_for(SETTLE_S * 3)
        library.mkdir()
        logged += watch.quiet_for(SETTLE_S * 3)
        assert sum("waiting for it" in line for line in logged) == 2, logged
        library.rmdir()
        (tmp_path / "away").rename(library)
        assert any("is back" in line for line in watch.quiet_for(SETTLE_S * 3))
        (library / "after.jpg").write_bytes(jpeg("triangle", "green", seed=5))
        assert watch.next_pass()[1] == (1, 0, 0, 0)

        watch.proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert watch.proc.wait(timeout=10) == 0
        assert time.monotonic() - stopped < 5
    finally:
        if watch.proc.poll() is None:
            watch.proc.kill()
            watch.proc.wait()

    stored = {p["path"]: p for p in edge_contents(tmp_path / "qdrant").values()}
    expected = (set(shapes) - {moved, removed}) | {"slow.jpg", "after.jpg", f"moved/{Path(moved).name}"}
    assert set(stored) == expected
    assert stored["slow.jpg"]["size"] == len(data)
    assert stored[changed]["size"] == (library / changed).stat().st_size
