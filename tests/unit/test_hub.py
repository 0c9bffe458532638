"""runners.hub.resolve_model: local folder -> ModelScope / Hugging Face cache -> download, all offline.

Every test runs with both hubs' endpoints pointed at 127.0.0.1:9 (connection refused at once), so
nothing here can reach, or wait for, the network. The real hub clients failing against that endpoint
(ModelScope retries for ~10 s) are in tests/integration/test_hub_offline.py.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from runners.hub import ModelNotFoundError, resolve_model

pytestmark = pytest.mark.usefixtures("offline_hubs")  # conftest.py: both hubs at a dead endpoint


@pytest.fixture
def failing_download(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Both hubs' snapshot_download raise at once; returns the calls made."""
    import huggingface_hub
    import modelscope

    calls: list[dict[str, Any]] = []

    def fail(source: str) -> Callable[..., str]:
        def snapshot_download(model_id: str, **kwargs: Any) -> str:
            calls.append({"source": source, "model_id": model_id, **kwargs})
            if kwargs.get("local_files_only"):  # the Hugging Face cache lookup
                raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
            raise ConnectionError("network is unreachable")

        return snapshot_download

    monkeypatch.setattr(modelscope, "snapshot_download", fail("modelscope"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail("huggingface"))
    return calls


def model_files(folder: Path, source: Path | None = None) -> Path:
    """A model folder: a copy of `source`, or a stub config.json."""
    if source is not None:
        shutil.copytree(source, folder)
    else:
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
    return folder


def downloads(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in calls if not c.get("local_files_only")]


# ---------------------------------------------------------------- local folders


def test_local_folder_wins(tmp_path: Path, failing_download: list) -> None:
    folder = model_files(tmp_path / "my-model")
    # Even with the same id cached, an existing folder is used as is.
    model_files(tmp_path / "cache" / "models" / "Org" / "Name")
    assert resolve_model(str(folder), "modelscope", tmp_path / "cache", "CLIP_MODEL") == folder.resolve()
    assert failing_download == []


def test_relative_folder_shaped_like_an_id_is_a_local_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_download: list
) -> None:
    folder = model_files(tmp_path / "Org" / "Name")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("Org/Name", "modelscope", None, "CLIP_MODEL") == folder.resolve()
    assert failing_download == []


def test_folder_without_config_json(tmp_path: Path, failing_download: list) -> None:
    (tmp_path / "weights-only").mkdir()
    (tmp_path / "weights-only" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="CLIP_MODEL=.*weights-only.*config.json"):
        resolve_model(str(tmp_path / "weights-only"), "modelscope", None, "CLIP_MODEL")
    assert failing_download == []


@pytest.mark.parametrize("model", ["./missing", "/nowhere/model", "~/no-such-model-here", "a/b/c", "name-only"])
def test_missing_paths_fail_without_download(model: str, failing_download: list) -> None:
    with pytest.raises(ModelNotFoundError, match="VQA_MODEL=.*no such folder"):
        resolve_model(model, "modelscope", None, "VQA_MODEL")
    assert failing_download == []


# ---------------------------------------------------------------- ModelScope cache


@pytest.mark.parametrize(
    ("model", "layout"),
    [
        ("Org/Name", "models/Org/Name"),  # modelscope >= 1.x default layout
        ("Org/Name", "Org/Name"),  # snapshot_download(cache_dir=...) layout
        ("Org/Name", "Org---Name"),  # older releases
        ("Qwen/Qwen2.5-VL-3B-Instruct", "models/Qwen/Qwen2___5-VL-3B-Instruct"),  # dots stored as ___
        ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2___5-VL-3B-Instruct"),
        ("OFA-Sys/chinese-clip-vit-base-patch16", "models/AI-ModelScope/chinese-clip-vit-base-patch16"),  # alias
    ],
)
def test_modelscope_cache_layouts(tmp_path: Path, failing_download: list, model: str, layout: str) -> None:
    cache = tmp_path / "ms-cache"
    folder = model_files(cache / layout)
    assert resolve_model(model, "modelscope", cache, "CLIP_MODEL") == folder
    assert downloads(failing_download) == []


def test_modelscope_cache_env_when_no_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_download: list
) -> None:
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "env-cache"))
    folder = model_files(tmp_path / "env-cache" / "models" / "Org" / "Name")
    assert resolve_model("Org/Name", "modelscope", None, "CLIP_MODEL") == folder
    assert failing_download == []


def test_cache_folder_without_config_json_is_not_a_hit(tmp_path: Path, failing_download: list) -> None:
    (tmp_path / "cache" / "models" / "Org" / "Name").mkdir(parents=True)  # an interrupted download
    with pytest.raises(ModelNotFoundError):
        resolve_model("Org/Name", "modelscope", tmp_path / "cache", "CLIP_MODEL")
    assert [c["model_id"] for c in downloads(failing_download)] == ["Org/Name"]


def test_encoder_loads_a_cached_model_by_id(
    tmp_path: Path, random_clip_dir: Path, settings_env: Callable[..., Settings], failing_download: list
) -> None:
    from runners.clip import open_clip

    cache = tmp_path / "ms-cache"
    model_files(cache / "models" / "Tiny" / "Chinese-CLIP_v1___0", source=random_clip_dir)
    settings_env(CLIP_MODEL="Tiny/Chinese-CLIP_v1.0", MODEL_CACHE_DIR=cache, MODEL_SOURCE="modelscope", DEVICE="cpu")
    encoder = open_clip()
    assert encoder.model_id == "Tiny/Chinese-CLIP_v1.0"  # the id, not the cache path
    assert encoder.encode_texts(["红色的圆形"]).shape == (1, encoder.dim)
    assert failing_download == []


# ---------------------------------------------------------------- Hugging Face cache


def hf_cache_entry(cache: Path, model: str, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """The huggingface_hub cache layout: models--Org--Name/{refs/main, snapshots/<commit>/...}."""
    repo = cache / ("models--" + model.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return model_files(repo / "snapshots" / commit)


def test_huggingface_cache_resolves_without_network(tmp_path: Path) -> None:
    snapshot = hf_cache_entry(tmp_path / "hf-cache", "Org/Name")
    started = time.monotonic()
    assert resolve_model("Org/Name", "huggingface", tmp_path / "hf-cache", "CLIP_MODEL") == snapshot
    assert time.monotonic() - started < 10


def test_source_selects_the_cache(tmp_path: Path, failing_download: list) -> None:
    cache = tmp_path / "cache"
    model_files(cache / "models" / "Org" / "Name")  # ModelScope layout only
    with pytest.raises(ModelNotFoundError, match="MODEL_SOURCE=modelscope"):
        resolve_model("Org/Name", "huggingface", cache, "CLIP_MODEL")
    assert [c["source"] for c in downloads(failing_download)] == ["huggingface"]


# ---------------------------------------------------------------- download failures


def test_download_failure_names_model_and_setting(tmp_path: Path, failing_download: list) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model("OFA-Sys/chinese-clip-vit-base-patch16", "modelscope", tmp_path / "cache", "CLIP_MODEL")
    message = str(caught.value)
    assert "OFA-Sys/chinese-clip-vit-base-patch16" in message and "CLIP_MODEL" in message
    assert "MODEL_CACHE_DIR" in message and "MODEL_SOURCE=huggingface" in message
    assert "network is unreachable" in message
    [call] = downloads(failing_download)
    assert call["model_id"] == "AI-ModelScope/chinese-clip-vit-base-patch16"  # ModelScope's copy
    assert call["cache_dir"] == str(tmp_path / "cache")
