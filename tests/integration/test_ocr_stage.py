"""The OCR stage (indexer/ocr_stage.py) on the embedded store, through the command line, with the real OCR models on
sign photos drawn by tests/signs.py: copies read once (by content hash), a SIGKILL after the first written batch and
a rerun that reads only the rest, `--watch --ocr` reading a photo added while it runs, and the Ray engine's actor
(indexer/ray_engine.py, PayloadActor) giving the local engine's reads (the whole stage on a Ray cluster:
tests/integration/test_ray_indexing.py). The service's write path, failures and search:
tests/integration/test_ocr_served.py."""

from __future__ import annotations

import json
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from helpers.indexing import cli_env, collection, kill_after_first_batch
from serving import ROOT
from signs import jpeg, sign

from config import Settings
from indexer.decode import content_hash
from indexer.ocr_stage import TextReads, read_payload
from indexer.payload_stage import PixelBudget, SameContent
from indexer.ray_engine import PayloadActor
from runners.ocr import TextReader, ocr_by_of
from store.interface import PAYLOAD_FIELDS, point_id

BATCH = 2
WORDS = ["Golden Dragon", "金龙面馆", "EXIT 出口", "Night Market 夜市", "Bakery 面包店", "Taxi 出租车"]


def make_library(library: Path) -> dict[str, str]:
    """name -> the words on its sign; two names are copies of one photo."""
    made = {}
    for i, words in enumerate(WORDS):
        rel = f"{'ab'[i % 2]}/sign_{i}.jpg"
        (library / rel).parent.mkdir(parents=True, exist_ok=True)
        (library / rel).write_bytes(jpeg(sign([words], size=(800, 600), seed=40 + i)))
        made[rel] = words
    shutil.copy(library / "a/sign_0.jpg", library / "b/copy_of_0.jpg")
    made["b/copy_of_0.jpg"] = WORDS[0]
    return made


def env_for(model: Path, library: Path, qdrant: Path) -> dict[str, str]:
    env = {k: v for k, v in cli_env(model, library, qdrant).items() if not k.startswith(("OCR_", "INDEX_"))}
    # TQDM_MININTERVAL=0: the progress bar shows every batch, so the kill can aim at the first one.
    return {**env, "DEVICE": "cpu", "TQDM_MININTERVAL": "0", "OCR_BATCH_SIZE": str(BATCH)}


def indexer(env: dict[str, str], *args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-m", "indexer", "--no-progress", "--json", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def norm(text: object) -> str:
    return str(text).casefold().replace(" ", "")


def test_sigkill_mid_ocr_then_a_rerun_reads_the_rest_once(tiny_clip_dir: Path, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    made = make_library(library)
    qdrant = tmp_path / "qdrant"
    env = env_for(tiny_clip_dir, library, qdrant)
    assert indexer(env)["added"] == len(made)
    _, vectors = collection(qdrant)

    done, total = kill_after_first_batch(env, "ocr", BATCH)
    assert total == len(made)
    payloads, _ = collection(qdrant)
    ocr_by = ocr_by_of(Settings(_env_file=None))  # type: ignore[call-arg]
    first = {p["path"] for p in payloads.values() if p.get("ocr_by") == ocr_by}
    assert BATCH <= len(first) < len(made), "the kill landed after the whole stage"

    summary = indexer(env, "--ocr")
    ocr = summary["ocr"]
    assert isinstance(ocr, dict) and (summary["added"], summary["updated"]) == (0, 0)
    assert (ocr["read"], ocr["failed"]) == (len(made) - len(first), 0)
    # Copies are read once: one of the two names holding sign 0 got the other's read, unless the kill split them.
    assert ocr["photos_read"] + ocr["reused"] == ocr["read"]
    payloads, after = collection(qdrant)
    assert set(payloads) == {point_id(rel) for rel in made}
    for pid, payload in payloads.items():
        assert set(payload) == {*PAYLOAD_FIELDS, "ocr_text", "ocr_lines", "ocr_norm", "ocr_by"}
        assert payload["ocr_by"] == ocr_by and norm(payload["ocr_text"]) == norm(made[str(payload["path"])])
        assert np.array_equal(after[pid], vectors[pid])
    again = indexer(env, "--ocr")["ocr"]
    assert isinstance(again, dict) and (again["read"], again["photos_read"]) == (0, 0)
    # A photo copied under a new name after the stage ran is not read again: its read is copied.
    shutil.copy(library / "a/sign_2.jpg", library / "a/another_copy.jpg")
    copied = indexer(env, "--ocr")["ocr"]
    assert isinstance(copied, dict) and (copied["read"], copied["reused"], copied["photos_read"]) == (1, 1, 0)


def test_watch_with_ocr_reads_a_photo_added_while_it_runs(tiny_clip_dir: Path, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    (library / "first.jpg").write_bytes(jpeg(sign(["Golden Dragon"], size=(640, 480), seed=1)))
    qdrant = tmp_path / "qdrant"
    env = {**env_for(tiny_clip_dir, library, qdrant), "WATCH_INTERVAL_S": "0.3", "WATCH_SETTLE_S": "0.3"}
    proc = subprocess.Popen([sys.executable, "-m", "indexer", "--watch", "--ocr", "--no-progress"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr
    assert stderr is not None
    lines: list[str] = []

    def passes(count: int, limit: float = 120) -> None:  # a pass line is logged once its OCR is done too
        deadline = time.monotonic() + limit
        while sum("pass:" in line for line in lines) < count and time.monotonic() < deadline:
            if select.select([stderr], [], [], 0.1)[0]:
                lines.append(stderr.readline().decode(errors="replace"))
        assert sum("pass:" in line for line in lines) >= count, "".join(lines)

    try:
        passes(1)
        (library / "second.jpg").write_bytes(jpeg(sign(["EXIT 出口"], size=(640, 480), seed=2)))
        passes(2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        stderr.close()
    assert proc.returncode == 0, "".join(lines)
    payloads, _ = collection(qdrant)
    read = {p["path"]: norm(p.get("ocr_text")) for p in payloads.values()}
    assert read == {"first.jpg": "goldendragon", "second.jpg": "exit出口"}


def test_the_ray_actor_reads_as_the_local_engine(tmp_path: Path) -> None:
    library = tmp_path / "lib"
    library.mkdir()
    data = jpeg(sign(["Night Market 夜市"], size=(800, 600), seed=3))
    (library / "one.jpg").write_bytes(data)
    (library / "gone.jpg").write_bytes(data)
    reader = TextReader()
    pixels = PixelBudget(decode=4_000_000, shrink=4_000_000)
    photos = [SameContent(content_hash(data), [point_id("one.jpg")], ["one.jpg"]),
              SameContent("sha256:other", [point_id("gone.jpg")], ["gone.jpg"])]
    actor = PayloadActor(lambda: reader, library, pixels, TextReads(reader.ocr_by))
    out = actor({"photo": photos})
    outcomes = [json.loads(item) for item in out["outcome"]]
    assert outcomes[1] == "changed since it was indexed: run the indexer again"
    from core.images import load_image

    image, _, _ = load_image(data)
    assert outcomes[0] == read_payload(reader.read(image), reader.ocr_by)
    assert norm(outcomes[0]["ocr_text"]) == "nightmarket夜市"

