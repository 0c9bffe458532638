"""runners.hub.resolve_model with the real Hugging Face and ModelScope clients against a refused endpoint
(127.0.0.1:9): an error naming the model, not a hang. Slow by design: ModelScope retries for ~10 s."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runners import hub
from runners.hub import ModelNotFoundError, resolve_model

pytestmark = pytest.mark.usefixtures("offline_hubs")  # conftest.py: both hubs at a dead endpoint


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", ["huggingface", "modelscope"])
def test_real_clients_fail_fast_offline(tmp_path: Path, source: str) -> None:
    """The real hub clients against a refused endpoint: an error naming the model, not a hang."""
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model("Nobody/no-such-model", source, tmp_path / "cache", "CLIP_MODEL")
    assert time.monotonic() - started < 45  # ModelScope retries its listing for ~10 s
    assert "Nobody/no-such-model" in str(caught.value) and "CLIP_MODEL" in str(caught.value)
    assert hub.find_cached("Nobody/no-such-model", source, tmp_path / "cache") is None
