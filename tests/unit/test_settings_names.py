"""One vocabulary for the runtimes: CLIP_RUNTIME (and its siblings) beside VQA_RUNTIME, the old CLIP_BACKEND names
still read, so a user's .env or unit file keeps working."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import Settings

OLD_AND_NEW = {
    "CLIP_BACKEND": ("clip_runtime", "onnx"),
    "CLIP_BACKEND_CACHE": ("clip_runtime_cache", "/tmp/clip-exports"),
    "CLIP_BACKEND_MIN_TOP1": ("clip_runtime_min_top1", "0.5"),
    "CLIP_BACKEND_MIN_COSINE": ("clip_runtime_min_cosine", "0.9"),
}


@pytest.mark.parametrize("old", sorted(OLD_AND_NEW))
def test_an_old_name_is_still_read(old: str, monkeypatch: pytest.MonkeyPatch) -> None:
    field, value = OLD_AND_NEW[old]
    monkeypatch.setenv(old, value)
    read = getattr(Settings(_env_file=None), field)  # type: ignore[call-arg]
    assert str(read) == value or read == float(value)


def test_the_new_name_is_read_and_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIP_RUNTIME", "openvino")
    assert Settings(_env_file=None).clip_runtime == "openvino"  # type: ignore[call-arg]
    monkeypatch.setenv("CLIP_BACKEND", "onnx")
    assert Settings(_env_file=None).clip_runtime == "openvino"  # type: ignore[call-arg]


def test_an_old_name_in_a_dot_env_file(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("CLIP_BACKEND=torch\n", encoding="utf-8")
    assert Settings(_env_file=env).clip_runtime == "torch"  # type: ignore[call-arg]


def test_a_bad_value_under_the_old_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIP_BACKEND", "tpu")
    with pytest.raises(ValueError, match="clip_backend|clip_runtime"):
        Settings(_env_file=None)  # type: ignore[call-arg]
