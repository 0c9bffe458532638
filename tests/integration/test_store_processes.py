"""The embedded store (qdrant-edge-py) across processes: a folder another process holds is refused with a
message naming the way out, and points written before a SIGKILL are all there on reopening."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from helpers.stores import DIM, MODEL, edge_store, make_points
from serving import ROOT

from store.interface import CollectionInfo


def run_child(code: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_edge_locked_by_another_process(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    holder = edge_store(folder)
    holder.ensure_collection(MODEL, DIM)  # opens the shard: this process holds the folder now
    holder.upsert(make_points(3))

    child = run_child("""
        import json, sys
        from pathlib import Path
        from store.interface import StoreLockedError
        from store.qdrant_edge import EdgeStore
        out = {}
        s = EdgeStore(Path(sys.argv[1]), "images")
        out["info"] = s.info() is not None          # reading the model record needs no lock
        for name, call in [("count", s.count),
                           ("ensure", lambda: s.ensure_collection("test/clip-a", 8)),
                           ("recreate", lambda: s.ensure_collection("test/clip-b", 4, recreate=True))]:
            try:
                call()
                out[name] = "no error"
            except StoreLockedError as exc:
                out[name] = "locked: " + str(exc)
        print(json.dumps(out))
    """, str(folder))
    assert child.returncode == 0, child.stderr
    out = json.loads(child.stdout)
    assert out["info"] is True
    for name in ("count", "ensure", "recreate"):
        msg = out[name]
        assert msg.startswith("locked: "), (name, msg)
        assert str(folder) in msg
        assert "stop the process that holds the folder, or use a Qdrant server via QDRANT_URL" in msg
        assert ".<collection>.service.json" in msg  # a running service takes writes through its address file

    # The refused recreate destroyed nothing.
    assert holder.info() == CollectionInfo(model_id=MODEL, dim=DIM)
    assert holder.count() == 3
    holder.close()
    # Released on close: another process can open it now.
    child = run_child("""
        import sys
        from pathlib import Path
        from store.qdrant_edge import EdgeStore
        print(EdgeStore(Path(sys.argv[1]), "images").count())
    """, str(folder))
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "3"


def test_edge_sigkill_after_upsert_keeps_points(tmp_path: Path) -> None:
    folder = tmp_path / "qdrant"
    child = run_child("""
        import os, signal, sys
        from pathlib import Path
        sys.path.insert(0, "tests")
        from helpers.stores import make_points
        from store.qdrant_edge import EdgeStore
        s = EdgeStore(Path(sys.argv[1]), "images")
        s.ensure_collection("test/clip-a", 8)
        points = make_points(40)
        s.upsert(points)
        s.delete([points[0].id])
        print("written", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)   # no finish(), no close(), no atexit
    """, str(folder))
    assert child.returncode == -9, child.stderr
    assert child.stdout.strip() == "written"

    points = make_points(40)
    reopened = edge_store(folder)
    assert reopened.info() == CollectionInfo(model_id=MODEL, dim=DIM)
    assert reopened.count() == 39
    got = reopened.vectors([p.id for p in points])
    assert set(got) == {p.id for p in points[1:]}
    np.testing.assert_allclose(got[points[5].id], points[5].vector, atol=1e-5)
    assert dict(reopened.payloads())[points[5].id] == points[5].payload
    assert reopened.search(points[5].vector, 1)[0].id == points[5].id
    reopened.close()
