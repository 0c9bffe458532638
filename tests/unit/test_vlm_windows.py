"""runners/vlm_windows: the vision tower's window attention computed on windows gives the attention the export's
[N, N] window mask gives, on a graph shaped like the export's (SDPA over [heads, N, dim] with the mask input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

HEADS, DIM, WINDOW = 4, 16, 64
LOWEST = np.finfo(np.float32).min


def tower_like() -> Any:
    """Two attention blocks as the export has them: one window-masked, one full (attention_mask)."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([HEADS, -1, DIM], np.float32, name="x")
    full = ops.parameter([1, -1, -1], np.float32, name="attention_mask")
    windows = ops.parameter([1, -1, -1], np.float32, name="window_attention_mask")
    for param, name in ((x, "x"), (full, "attention_mask"), (windows, "window_attention_mask")):
        param.output(0).get_tensor().set_names({name})
    two, three = ops.constant(np.float32(2)), ops.constant(np.float32(3))
    h = ops.scaled_dot_product_attention(x, ops.multiply(x, two), ops.multiply(x, three), windows, causal=False)
    h = ops.scaled_dot_product_attention(h, ops.multiply(h, two), h, full, causal=False)
    return ov.Model([h], [x, full, windows])


def window_mask(sizes: list[int]) -> np.ndarray:
    """GenAI's window mask: 0 inside each window (consecutive runs of `sizes` patches), the lowest float outside."""
    n = sum(sizes)
    mask = np.full((1, n, n), LOWEST, np.float32)
    start = 0
    for size in sizes:
        mask[0, start:start + size, start:start + size] = 0
        start += size
    return mask


def run(model: Any, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    full = np.zeros_like(mask)
    return np.asarray(compiled({"x": x, "attention_mask": full, "window_attention_mask": mask})[0])


@pytest.mark.parametrize("sizes", [
    [64] * 81,  # a 1008x1008 photo's 81 full windows (5,184 patches): a multiple of the chunk
    [64, 32, 64, 32, 16, 8, 64, 64, 4],  # edge windows smaller: N not a multiple of the chunk
    [4],  # a tiny photo: less than one chunk
    [16, 16, 64, 64, 64, 64, 64, 64, 64, 64, 12],  # two images (or video frames) one after the other
])
def test_banded_window_attention_equals_the_masked_full_attention(sizes: list[int]) -> None:
    from runners.vlm.windows import band_window_attention

    rng = np.random.default_rng(len(sizes))
    x = rng.standard_normal((HEADS, sum(sizes), DIM)).astype(np.float32)
    mask = window_mask(sizes)
    expected = run(tower_like(), x, mask)
    model = tower_like()
    assert band_window_attention(model, WINDOW) == 1  # only the window-masked block
    np.testing.assert_allclose(run(model, x, mask), expected, rtol=1e-4, atol=1e-5)


def test_a_tower_without_window_masks_is_left_alone(tmp_path: Path) -> None:
    import openvino as ov

    from runners.vlm.windows import apply

    model = tower_like()
    for op in model.get_ordered_ops():  # no input named window_attention_mask any more
        if op.get_friendly_name() == "window_attention_mask":
            op.set_friendly_name("other_mask")
    ov.save_model(model, tmp_path / "openvino_vision_embeddings_merger_model.xml")
    (tmp_path / "config.json").write_text('{"vision_config": {"window_size": 112, "patch_size": 14}}')
    assert apply(tmp_path) == 0
    assert apply(tmp_path / "missing") == 0


def test_the_window_size_comes_from_the_model_config(tmp_path: Path) -> None:
    from runners.vlm.windows import window_patches

    config = tmp_path / "config.json"
    config.write_text('{"vision_config": {"window_size": 112, "patch_size": 14}}')
    assert window_patches(config) == 64
    config.write_text('{"vision_config": {"window_size": 56, "patch_size": 14}}')
    assert window_patches(config) == 16
