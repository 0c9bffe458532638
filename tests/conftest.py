"""Shared fixtures for tests/unit and tests/integration. pytest puts the repository root and tests/ on sys.path
(pyproject.toml), so tests import serving, shapes, fixtures and helpers (never each other). tests/unit and
tests/integration have no __init__.py, so a module's file name must be unique across both.

Models:
    tiny_clip_dir    the committed trained tiny Chinese-CLIP (tests/fixtures/tiny_clip, 32-d)
    random_clip_dir  an untrained tiny Chinese-CLIP built once per session (48-d)
Settings:
    settings_env     set environment variables and get fresh Settings (get_settings cache cleared)
Hubs:
    offline_hubs     Hugging Face and ModelScope pointed at a dead endpoint (tests/unit/test_hub.py)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from config import Settings, get_settings

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# ---------------------------------------------------------------- models


@pytest.fixture(scope="session")
def tiny_clip_dir() -> Path:
    """The trained tiny Chinese-CLIP (rebuild with tests/fixtures/make_tiny_clip.py)."""
    folder = FIXTURES / "tiny_clip"
    if not (folder / "config.json").is_file():
        pytest.fail(f"{folder} is missing: run .venv/bin/python tests/fixtures/make_tiny_clip.py")
    return folder


@pytest.fixture(scope="session")
def random_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny Chinese-CLIP with its own processor; projection_dim 48 (the trained one has 32)."""
    from fixtures.make_tiny_clip import build_random_clip

    return build_random_clip(tmp_path_factory.mktemp("models") / "random_clip")


# ---------------------------------------------------------------- settings


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Settings]]:
    """`settings_env(CLIP_MODEL="/x", DEVICE="cpu")` sets (a None value deletes) environment variables
    for this test, clears config.get_settings' cache and returns the fresh Settings. The cache is
    cleared again after the test, once monkeypatch has restored the environment."""

    def apply(**env: str | Path | None) -> Settings:
        for name, value in env.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, str(value))
        get_settings.cache_clear()
        return get_settings()

    get_settings.cache_clear()
    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()


# ---------------------------------------------------------------- model hubs, offline

DEAD_ENDPOINT = "http://127.0.0.1:9"


@pytest.fixture
def offline_hubs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Both hubs' endpoints at 127.0.0.1:9 (connection refused at once) and ModelScope's default cache in
    tmp_path, so a test can neither reach nor wait for the network."""
    import huggingface_hub.constants

    monkeypatch.setenv("MODELSCOPE_ENDPOINT", DEAD_ENDPOINT)
    monkeypatch.delenv("MODELSCOPE_DOMAIN", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", DEAD_ENDPOINT)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", DEAD_ENDPOINT)  # read at import time
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "default-modelscope-cache"))


# ---------------------------------------------------------------- tiny Qwen2.5-VL (VQA runner)
# Appended for runners/vlm/model.py and tests/unit/test_vlm.py:
#     tiny_qwen_dir  the committed trained tiny Qwen2.5-VL (tests/fixtures/tiny_qwen, 2.8 MB)
#     tiny_vlm       runners.vlm.VisionLanguageModel on it (CPU, no quantisation), loaded once per session

from runners.vlm import VisionLanguageModel, load_vlm  # noqa: E402 - appended block; runners.vlm imports torch lazily


@pytest.fixture(scope="session")
def tiny_qwen_dir() -> Path:
    """The trained tiny Qwen2.5-VL (rebuild with tests/fixtures/make_tiny_qwen.py). It answers colour
    questions about tests/shapes.py images: "What color is the shape?" -> "red", "图形是什么颜色？" -> "红色"."""
    folder = FIXTURES / "tiny_qwen"
    if not (folder / "config.json").is_file():
        pytest.fail(f"{folder} is missing: run .venv/bin/python tests/fixtures/make_tiny_qwen.py")
    return folder


@pytest.fixture(scope="session")
def tiny_vlm(tiny_qwen_dir: Path) -> VisionLanguageModel:
    """load_vlm(tiny_qwen_dir) on CPU with default VQA_* settings, shared by the whole session."""
    settings = Settings(_env_file=None, vqa_model=str(tiny_qwen_dir), device="cpu")  # type: ignore[call-arg]
    return load_vlm(tiny_qwen_dir, settings)


# ---------------------------------------------------------------- tiny describer (indexer's describe stage)
#     tiny_describer_dir  the committed tiny Qwen2.5-VL trained to describe draw_described images as JSON
#     tiny_describer      runners.vlm.VisionLanguageModel on it (CPU, no quantisation), loaded once per session


@pytest.fixture(scope="session")
def tiny_describer_dir() -> Path:
    """The trained tiny describer (rebuild with tests/fixtures/make_tiny_describer.py). Asked
    config.DEFAULT_DESCRIBE_PROMPT about a shapes.draw_described image it answers
    {"description": "红色的圆形", "visible_text": "发票", "tags": ["红色", "圆形"]} (colour and word reliable,
    shape weak)."""
    folder = FIXTURES / "tiny_describer"
    if not (folder / "config.json").is_file():
        pytest.fail(f"{folder} is missing: run .venv/bin/python tests/fixtures/make_tiny_describer.py")
    return folder


@pytest.fixture(scope="session")
def tiny_describer(tiny_describer_dir: Path) -> VisionLanguageModel:
    """load_vlm(tiny_describer_dir) on CPU with default VQA_* settings, shared by the whole session."""
    settings = Settings(_env_file=None, vqa_model=str(tiny_describer_dir), device="cpu")  # type: ignore[call-arg]
    return load_vlm(tiny_describer_dir, settings)


# ---------------------------------------------------------------- archives (indexer/archive.py)
#     archived   an archive file of 30 points exported from the in-memory store


@pytest.fixture
def archived(tmp_path: Path) -> Path:
    """`python -m indexer --export`'s file for a memory store holding 30 points (tests/helpers/archives.py)."""
    from helpers.archives import export, fill
    from helpers.stores import Backend

    b = Backend("memory", tmp_path)
    try:
        fill(b.open(), 30)
        file = tmp_path / "a.jsonl"
        export(b.opened[0], file)
        return file
    finally:
        b.cleanup()


# ---------------------------------------------------------------------------------------------- scheduling
# scripts/test.sh runs two workers, each given whole files in collection order (--dist loadfile). The files that
# took longest in a measured run (--durations) go first, so the two workers end together instead of one
# finishing the longest file alone at the end. Order only: every test still runs.
SLOW_FIRST = (  # measured on a quiet 2-core machine (scripts/test.sh --durations=0, per file), longest first
    "test_vlm_openvino.py", "test_live_index_served.py", "test_ray_indexing.py", "test_crash.py",
    "test_service.py", "test_ray_cli.py", "test_load.py", "test_ui.py", "test_slow_clients.py",
    "test_faults_images_served.py", "test_contract.py", "test_indexer_cli.py", "test_ask_served.py",
    "test_faults_vqa_served.py", "test_video_served.py", "test_hybrid_served.py", "test_ocr_stage.py",
    "test_ocr_served.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: index for index, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: the rest keep their order
