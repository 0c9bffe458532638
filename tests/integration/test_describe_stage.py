"""The indexer's describe stage (indexer/describe.py) with the real tiny VLM through runners.vlm.describe.Describer,
on each store backend: incremental (each content described once), copies by content hash, a prompt change,
failures, and the command line (`--describe`, `--json`) in this process. A SIGKILL mid-describe is
tests/integration/test_describe_crash.py."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.indexing import index
from helpers.stores import Backend
from PIL import Image
from shapes import CLASSES, COLOR_ZH, draw_described, draw_shape

from config import DEFAULT_DESCRIBE_PROMPT
from indexer.describe_stage import DescribeStage
from indexer.payload_stage import PayloadOptions as Options
from indexer.pipeline import Summary
from runners.clip import ClipEncoder
from runners.vlm import VisionLanguageModel
from runners.vlm.describe import Describer, Description, describer_id
from store.interface import DESCRIPTION_FIELDS, Point, point_id

BATCH = 3


class CountingDescriber:
    """The real Describer, counting the images it was given (its answers are the model's own)."""

    def __init__(self, describer: Describer) -> None:
        self.describer = describer
        self.described_by = describer.described_by
        self.images = 0

    def describe(self, images: list[Image.Image]) -> list[Description | str]:
        self.images += len(images)
        return self.describer.describe(images)


class Loader:
    """The stage's `load`: counts how often the model was asked for."""

    def __init__(self, vlm: VisionLanguageModel, prompt: str = DEFAULT_DESCRIBE_PROMPT) -> None:
        self.model = CountingDescriber(Describer(vlm, prompt, max_new_tokens=16))
        self.loads = 0

    def __call__(self) -> CountingDescriber:
        self.loads += 1
        return self.model


@pytest.fixture(scope="module")
def encoder(random_clip_dir: Path) -> ClipEncoder:
    return ClipEncoder(str(random_clip_dir), "cpu", model_id="random-clip")


@pytest.fixture(params=["edge", "memory", "remote"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each backend, the running service's write path (store/via_service.py) included."""
    backend = Backend(request.param, tmp_path)
    yield backend.open()
    backend.cleanup()


@pytest.fixture(params=["edge", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    backend = Backend(request.param, tmp_path)
    yield backend.open()
    backend.cleanup()


def small_library(folder: Path, n: int = 8) -> dict[str, tuple[str, str]]:
    """`n` photos of distinct shape/colour classes, png and jpg, one in a subfolder: {name: (shape, colour)}."""
    made = {}
    for i, (shape, colour) in enumerate(CLASSES[::2][:n]):
        rel = f"{'sub/' if i == 1 else ''}{shape}-{colour}.{'jpg' if i % 2 else 'png'}"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        draw_shape(shape, colour, size=64, seed=i).save(folder / rel)
        made[rel] = (shape, colour)
    return made


def describe(store: Any, library: Path, loader: Loader) -> Summary:
    summary = Summary()
    options = Options(batch_size=BATCH, workers=2, progress=False)
    return DescribeStage(store, library, loader.model.described_by, loader, summary, options).run()


def descriptions(store: Any) -> dict[str, dict[str, Any]]:
    """path -> the description fields of every point (None where a field is missing)."""
    return {p["path"]: {key: p.get(key) for key in DESCRIPTION_FIELDS} for _, p in store.payloads()}


# ---------------------------------------------------------------- incremental


def test_describes_every_photo_once_and_a_rerun_describes_nothing(any_store: Any, encoder: ClipEncoder,
                                                                  tiny_vlm: VisionLanguageModel,
                                                                  tmp_path: Path) -> None:
    store = any_store
    library = tmp_path / "lib"
    shapes = small_library(library)  # 8 photos, 3 batches of 3
    index(store, encoder, library)
    loader = Loader(tiny_vlm)
    summary = describe(store, library, loader)
    assert (summary.described, summary.descriptions_reused, summary.describe_failed) == (len(shapes), 0, 0)
    assert loader.model.images == len(shapes) and loader.loads == 1
    stored = descriptions(store)
    assert set(stored) == set(shapes)
    for fields in stored.values():  # the tiny VQA model's answer to this prompt is no JSON: stored whole
        assert fields["description"] and (fields["visible_text"], fields["tags"]) == ("", [])
        assert fields["described_by"] == loader.model.described_by
    assert "describe" in summary.seconds

    again = Loader(tiny_vlm)
    summary = describe(store, library, again)
    assert (summary.described, summary.describe_failed, again.model.images, again.loads) == (0, 0, 0, 0)
    assert descriptions(store) == stored


def test_renamed_copied_and_touched_files_keep_their_description_without_the_model(
        store: Any, encoder: ClipEncoder, tiny_vlm: VisionLanguageModel, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = sorted(small_library(library))
    index(store, encoder, library)
    loader = Loader(tiny_vlm)
    describe(store, library, loader)
    before = descriptions(store)

    renamed, copied, touched = shapes[0], shapes[1], shapes[2]
    (library / "moved").mkdir()
    shutil.move(library / renamed, library / "moved" / Path(renamed).name)
    shutil.copy(library / copied, library / "moved" / f"copy-{Path(copied).name}")
    os.utime(library / touched, (time.time() + 10, time.time() + 10))
    summary, counting = index(store, encoder, library)
    assert (summary.reused, counting.embedded) == (3, 0)

    summary = describe(store, library, loader)
    assert (summary.described, loader.model.images) == (0, len(shapes))  # nothing more for the model
    after = descriptions(store)
    assert after[f"moved/{Path(renamed).name}"] == before[renamed]
    assert after[f"moved/copy-{Path(copied).name}"] == after[copied] == before[copied]
    assert after[touched] == before[touched]
    # Their text vectors came along: a search by the words of each one's description finds it by its new name.
    for rel in (f"moved/{Path(renamed).name}", f"moved/copy-{Path(copied).name}", touched):
        hits = store.search(None, 50, text=after[rel]["description"])
        assert rel in {hit.payload["path"] for hit in hits} and renamed not in {hit.payload["path"] for hit in hits}


def test_a_point_that_lost_its_description_copies_it_from_the_same_content(
        store: Any, encoder: ClipEncoder, tiny_vlm: VisionLanguageModel, tmp_path: Path) -> None:
    """As a run killed between a copy's upsert and its description leaves it: the stage copies, no model call."""
    library = tmp_path / "lib"
    shapes = sorted(small_library(library))
    shutil.copy(library / shapes[0], library / "copy.png")
    index(store, encoder, library)
    loader = Loader(tiny_vlm)
    summary = describe(store, library, loader)
    # Two files, one content: the model describes it once, both points get the answer.
    assert (summary.described, loader.model.images) == (len(shapes) + 1, len(shapes))
    pid = point_id("copy.png")
    payload = dict(store.payloads())[pid]
    bare = {key: value for key, value in payload.items() if key not in DESCRIPTION_FIELDS}
    store.upsert([Point(pid, store.vectors([pid])[pid], bare)])
    assert descriptions(store)["copy.png"]["described_by"] is None

    fresh = Loader(tiny_vlm)
    summary = describe(store, library, fresh)
    assert (summary.described, summary.descriptions_reused, fresh.loads) == (1, 1, 0)
    assert descriptions(store)["copy.png"] == descriptions(store)[shapes[0]]


def test_a_changed_file_is_described_again_and_only_it(store: Any, encoder: ClipEncoder,
                                                       tiny_vlm: VisionLanguageModel, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = sorted(small_library(library))
    index(store, encoder, library)
    describe(store, library, Loader(tiny_vlm))
    draw_shape("triangle", "purple", seed=99).save(library / shapes[4])  # new content
    os.utime(library / shapes[4], (time.time() + 5, time.time() + 5))
    summary, _ = index(store, encoder, library)
    assert summary.updated == 1
    loader = Loader(tiny_vlm)
    summary = describe(store, library, loader)
    assert summary.failures == []
    assert (summary.described, loader.model.images) == (1, 1)


def test_changing_the_prompt_describes_everything_again(store: Any, encoder: ClipEncoder,
                                                        tiny_vlm: VisionLanguageModel, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = small_library(library)
    index(store, encoder, library)
    first = Loader(tiny_vlm)
    describe(store, library, first)
    other = Loader(tiny_vlm, prompt="图形是什么颜色？")  # a prompt the tiny model was trained on
    summary = describe(store, library, other)
    assert (summary.described, other.model.images) == (len(shapes), len(shapes))
    stored = descriptions(store)
    assert {fields["described_by"] for fields in stored.values()} == {other.model.described_by}
    assert other.model.described_by != first.model.described_by
    for rel, (_, colour) in shapes.items():  # that prompt gets each photo's own colour
        assert stored[rel]["description"] == {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色",
                                              "purple": "紫色", "orange": "橙色"}[colour], rel
    assert describe(store, library, other).described == 0
    back = Loader(tiny_vlm)  # and back to the first prompt: described again
    assert describe(store, library, back).described == len(shapes)


# ---------------------------------------------------------------- failures


def test_photos_the_model_or_the_file_fail_on_are_listed_and_the_run_completes(
        store: Any, encoder: ClipEncoder, tiny_vlm: VisionLanguageModel, tmp_path: Path) -> None:
    library = tmp_path / "lib"
    shapes = sorted(small_library(library))
    # CLIP embeds a 1x300 strip (its centre, core/images.clip_view), Qwen's processor refuses it (over 200:1).
    Image.new("RGB", (1, 300), "white").save(library / "strip.png")
    index(store, encoder, library)
    (library / shapes[5]).write_bytes(b"not an image any more")  # changed since it was indexed
    (library / shapes[6]).unlink()  # gone since it was indexed
    loader = Loader(tiny_vlm)
    summary = describe(store, library, loader)
    reasons = dict(summary.failures)
    assert summary.describe_failed == 3 and set(reasons) == {"strip.png", shapes[5], shapes[6]}
    assert reasons["strip.png"] == "cannot describe: the model gave no answer: image: aspect ratio 300:1 is over 200:1"
    assert reasons[shapes[5]] == "cannot describe: changed since it was indexed: run the indexer again"
    assert reasons[shapes[6]].startswith("cannot describe: cannot read: ")
    assert summary.described == len(shapes) - 2
    stored = descriptions(store)
    assert stored["strip.png"]["described_by"] is None
    assert all(stored[rel]["description"] for rel in shapes if rel not in (shapes[5], shapes[6]))

    again = describe(store, library, Loader(tiny_vlm))  # tried again every run, never aborting it
    assert (again.described, again.describe_failed) == (0, 3)


# ---------------------------------------------------------------- the command line, in this process


def cli_settings(settings_env: Any, random_clip_dir: Path, tiny_qwen_dir: Path, tmp_path: Path, **env: Any) -> None:
    settings_env(**{"QDRANT_URL": None, "QDRANT_PATH": tmp_path / "qdrant", "CLIP_MODEL": random_clip_dir,
                    "DEVICE": "cpu", "VQA_MODEL": tiny_qwen_dir, "VQA_QUANTIZATION": "none",
                    "DESCRIBE_BATCH_SIZE": "4", "DESCRIBE_MAX_NEW_TOKENS": "16", "INDEX_DESCRIBE": None,
                    "DESCRIBE_PROMPT": None, **env})


def edge_vectors(folder: Path) -> dict[str, np.ndarray]:
    from store.qdrant_edge import EdgeStore

    store = EdgeStore(folder, "images")
    try:
        return store.vectors([pid for pid, _ in store.payloads()])
    finally:
        store.close()


def test_cli_describe_adds_descriptions_to_an_embedded_library_without_re_embedding(
        settings_env: Any, random_clip_dir: Path, tiny_qwen_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from indexer.__main__ import run

    library = tmp_path / "lib"
    shapes = small_library(library)
    model = Path(shutil.copytree(tiny_qwen_dir, tmp_path / "describer"))
    cli_settings(settings_env, random_clip_dir, model, tmp_path)
    assert run(["--library", str(library), "--no-progress", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["added"] == len(shapes) and plain["described"] == 0 and "describe" not in plain["seconds"]
    vectors = edge_vectors(tmp_path / "qdrant")

    assert run(["--library", str(library), "--no-progress", "--json", "--describe"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["added"], summary["updated"], summary["unchanged"]) == (0, 0, len(shapes))
    assert (summary["described"], summary["descriptions_reused"], summary["describe_failed"]) == (len(shapes), 0, 0)
    assert summary["failures"] == [] and summary["seconds"]["describe"] > 0
    after = edge_vectors(tmp_path / "qdrant")
    assert set(after) == set(vectors)
    for pid, vector in vectors.items():  # the CLIP vectors are the very same
        assert np.array_equal(after[pid], vector)

    # INDEX_DESCRIBE=true does what --describe does; with nothing left to describe the model is not even
    # loaded (its weights are gone here: loading it would fail).
    (model / "model.safetensors").unlink()
    cli_settings(settings_env, random_clip_dir, model, tmp_path, INDEX_DESCRIBE="true")
    assert run(["--library", str(library), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["described"], summary["describe_failed"], summary["added"]) == (0, 0, 0)
    assert "describe" in summary["seconds"]


def test_cli_text_summary_and_failures(settings_env: Any, random_clip_dir: Path, tiny_qwen_dir: Path,
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from indexer.__main__ import run

    library = tmp_path / "lib"
    shapes = small_library(library)
    Image.new("RGB", (1, 300), "white").save(library / "strip.png")
    cli_settings(settings_env, random_clip_dir, tiny_qwen_dir, tmp_path, INDEX_DESCRIBE="true")
    assert run(["--library", str(library), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"described {len(shapes)} (copied from the same content: 0) | describe failed 1" in out
    assert "failed: strip.png: cannot describe: the model gave no answer: image: aspect ratio 300:1" in out
    # A prompt change describes everything again on the next run, nothing else does.
    cli_settings(settings_env, random_clip_dir, tiny_qwen_dir, tmp_path, INDEX_DESCRIBE="true",
                 DESCRIBE_PROMPT="图形是什么颜色？")
    assert run(["--library", str(library), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["described"], summary["describe_failed"]) == (len(shapes), 1)


# ---------------------------------------------------------------- the tiny describer: JSON answers, end to end


def test_cli_describe_with_the_tiny_describer_fills_the_fields_and_text_search_finds_them(
        settings_env: Any, random_clip_dir: Path, tiny_describer_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from indexer.__main__ import run
    from store.qdrant_edge import EdgeStore

    library = tmp_path / "lib"
    library.mkdir()
    cases = {"invoice.png": ("circle", "red", "发票"), "exit.jpg": ("square", "green", "出口"),
             "sale.png": ("triangle", "blue", "SALE"), "cab.png": ("circle", "yellow", "TAXI"),
             "plain.png": ("square", "purple", "")}
    for i, (name, (shape, colour, word)) in enumerate(cases.items()):
        draw_described(shape, colour, word, seed=3 * 10**9 + i, size=128).save(library / name)
    cli_settings(settings_env, random_clip_dir, tiny_describer_dir, tmp_path, DESCRIBE_MAX_NEW_TOKENS="128")
    assert run(["--library", str(library), "--no-progress", "--json", "--describe"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["added"], summary["described"], summary["describe_failed"]) == (len(cases), len(cases), 0)

    store = EdgeStore(tmp_path / "qdrant", "images")
    try:
        stored = descriptions(store)
        for name, (_, colour, word) in cases.items():  # the model's JSON, parsed into the three fields
            assert stored[name]["visible_text"] == word, stored[name]
            assert COLOR_ZH[colour] in stored[name]["description"] and COLOR_ZH[colour] in stored[name]["tags"]
        assert store.described_counts() == {describer_id(str(tiny_describer_dir), DEFAULT_DESCRIBE_PROMPT): 5}
        for query, name in [("发票", "invoice.png"), ("出口", "exit.jpg"), ("sale", "sale.png"), ("绿色", "exit.jpg")]:
            assert store.search(None, 3, text=query)[0].payload["path"] == name, query
    finally:
        store.close()


def test_cli_describe_max_pixels_reaches_the_model(settings_env: Any, random_clip_dir: Path, tiny_describer_dir: Path,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """DESCRIBE_MAX_PIXELS=3136 (the tiny describer's 4-token minimum): every photo is still described, but at
    that size the words drawn in them are no longer read (bench/describe_pixels.py measures the curve)."""
    from indexer.__main__ import run
    from store.qdrant_edge import EdgeStore

    library = tmp_path / "lib"
    library.mkdir()
    words = {"invoice.png": ("circle", "red", "发票"), "exit.png": ("square", "green", "出口"),
             "sale.png": ("triangle", "blue", "SALE"), "cab.png": ("circle", "yellow", "TAXI")}
    for i, (name, (shape, colour, word)) in enumerate(words.items()):
        draw_described(shape, colour, word, seed=3 * 10**9 + i, size=128).save(library / name)
    cli_settings(settings_env, random_clip_dir, tiny_describer_dir, tmp_path, DESCRIBE_MAX_NEW_TOKENS="128",
                 DESCRIBE_MAX_PIXELS="3136")
    assert run(["--library", str(library), "--no-progress", "--json", "--describe"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["described"], summary["describe_failed"]) == (len(words), 0)
    store = EdgeStore(tmp_path / "qdrant", "images")
    try:
        read = [descriptions(store)[name]["visible_text"] == word for name, (_, _, word) in words.items()]
    finally:
        store.close()
    assert not all(read), read  # at the default budget all four are read (the test above)
