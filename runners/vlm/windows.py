"""Window attention of Qwen2.5-VL's vision tower computed on windows, in its OpenVINO export.

The export (optimum-intel) gives each window-attention block of the tower a ScaledDotProductAttention over all N
patches of the photo, with the windows as an [N, N] mask input (`window_attention_mask`, which OpenVINO GenAI
fills: 0 inside a window, the lowest float outside). So 28 of the 32 blocks cost what full attention costs:
at 1 MP (5,184 patches) ~3.9 TFLOP of the tower's ~11 for work the mask then throws away
(bench/vlm_cpu_parts.py). A window holds at most (window_size / patch_size)^2 patches (64) and GenAI orders the
patches window by window, so every patch's window lies within `window` positions of it. This rewrite makes each
such block attend in chunks of C = 2 * window queries to the 2C keys around them (the band [chunk - window,
chunk + C + window)), with the band of the same mask: the same attention (every masked-out key still counts 0),
~N / 2C times less of it. The model's inputs, outputs and the full-attention blocks are unchanged, so GenAI runs
it as before. Applied by runners/vlm/openvino_export.py to the tower it exports; tests/unit/test_vlm_windows.py checks
the rewrite against the original graph.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TOWER = "openvino_vision_embeddings_merger_model.xml"
MASK = "window_attention_mask"


def window_patches(config_file: Path) -> int:
    """The most patches a window of the tower holds: (window_size / patch_size)^2 (64 for Qwen2.5-VL)."""
    vision = json.loads(config_file.read_text(encoding="utf-8")).get("vision_config", {})
    return int((vision.get("window_size", 112) // vision.get("patch_size", 14)) ** 2)


def apply(export: Path) -> int:
    """Rewrite the export's vision tower in place (no-op for a tower without window-masked attention); the
    number of attention blocks rewritten."""
    import openvino as ov

    path = export / TOWER
    if not path.is_file():
        return 0
    model = ov.Core().read_model(path)
    count = band_window_attention(model, window_patches(export / "config.json"))
    if count:
        temp = path.with_name(path.stem + ".windows.xml")
        ov.save_model(model, temp, compress_to_fp16=False)  # weights stay as exported (int8 and their f32 scales)
        temp.with_suffix(".bin").replace(path.with_suffix(".bin"))
        temp.replace(path)
        log.info("vision tower: %d window-attention blocks now attend within their windows", count)
    return count


def band_window_attention(model: Any, window: int) -> int:
    """Replace every ScaledDotProductAttention whose mask is the `window_attention_mask` input by the banded
    form (module docstring); the count replaced."""
    mask = next((p for p in model.get_parameters() if p.get_friendly_name() == MASK), None)
    if mask is None:
        return 0
    targets = [op for op in model.get_ordered_ops() if op.get_type_name() == "ScaledDotProductAttention"
               and op.get_input_size() == 4 and op.input_value(3).get_node().get_friendly_name() == MASK]
    if not targets:
        return 0
    chunk = 2 * window
    band = Band(mask.output(0), chunk, window)
    for op in targets:
        q, k, v = (op.input_value(i) for i in range(3))
        op.output(0).replace(band.attention(q, k, v))
    model.validate_nodes_and_infer_types()
    return len(targets)


class Band:
    """The shared pieces: the padding of the sequence and the banded mask, built once for all blocks."""

    def __init__(self, mask: Any, chunk: int, window: int) -> None:
        import numpy as np
        import openvino.opset13 as ops

        self.chunk, self.window = chunk, window
        i64 = np.int64
        size = ops.gather(ops.shape_of(mask, "i64"), ops.constant(np.array([1], i64)), ops.constant(i64(0)))
        self.size = size  # N, shape [1]
        c = ops.constant(np.array([chunk], i64))
        self.pad = ops.floor_mod(ops.subtract(c, ops.floor_mod(size, c)), c)  # N + pad: a multiple of C
        chunks = ops.divide(ops.add(size, self.pad), c)  # J
        lowest = ops.constant(np.array(np.finfo(np.float32).min, np.float32))
        square = ops.reshape(mask, ops.concat([size, size], 0), False)  # [N, N]
        w = ops.constant(np.array([window], i64))
        nothing = ops.constant(np.array([0], i64))
        # Keys: `window` masked-out columns on the left, pad + window on the right; queries: pad rows, all masked
        # out (finite: their softmax stays a number, and their outputs are cut off). [P, P + C], one copy.
        padded = ops.pad(square, ops.concat([nothing, w], 0), ops.concat([self.pad, ops.add(self.pad, w)], 0),
                         "constant", lowest)
        one = ops.constant(np.array([1], i64))
        blocks = ops.reshape(padded, ops.concat([chunks, c, ops.add(chunks, one), c], 0), False)  # [J, C, J+1, C]
        first = ops.unsqueeze(ops.range(ops.constant(i64(0)), ops.squeeze(chunks, ops.constant(i64(0))),
                                        ops.constant(i64(1)), "i64"), ops.constant(i64(1)))  # [J, 1]
        pairs = ops.concat([first, ops.add(first, ops.constant(np.array([[1]], i64)))], 1)  # [J, 2]: j, j+1
        diagonal = ops.gather(blocks, pairs, ops.constant(i64(2)), 1)  # [J, C, 2, C]: key blocks j and j+1
        self.mask = ops.reshape(diagonal, ops.constant(np.array([0, chunk, 2 * chunk], i64)), True)  # [J, C, 2C]

    def attention(self, q: Any, k: Any, v: Any) -> Any:
        """The block's attention over [H, N, D] query, key and value, banded; [H, N, D] out."""
        import numpy as np
        import openvino.opset13 as ops

        i64 = np.int64
        heads, dim = (int(q.get_partial_shape()[i].get_length()) for i in (0, 2))
        nothing = ops.constant(np.array([0, 0, 0], i64))
        after = ops.concat([ops.constant(np.array([0], i64)), self.pad, ops.constant(np.array([0], i64))], 0)
        queries = ops.reshape(ops.pad(q, nothing, after, "constant"),
                              ops.constant(np.array([heads, -1, self.chunk, dim], i64)), False)  # [H, J, C, D]
        keys, values = self.banded(k), self.banded(v)  # [H, J, 2C, D]
        out = ops.scaled_dot_product_attention(queries, keys, values, self.mask, causal=False)  # [H, J, C, D]
        out = ops.reshape(out, ops.constant(np.array([heads, -1, dim], i64)), False)  # [H, P, D]
        return ops.slice(out, ops.constant(np.array([0], i64)), self.size, ops.constant(np.array([1], i64)),
                         ops.constant(np.array([1], i64))).output(0)

    def banded(self, x: Any) -> Any:
        """[H, N, D] -> [H, J, 2C, D]: chunk j's keys are positions [j*C - window, (j+1)*C + window)."""
        import numpy as np
        import openvino.opset13 as ops

        i64 = np.int64
        heads, dim = (int(x.get_partial_shape()[i].get_length()) for i in (0, 2))
        w = ops.constant(np.array([self.window], i64))
        zero = ops.constant(np.array([0], i64))
        before = ops.concat([zero, w, zero], 0)
        after = ops.concat([zero, ops.add(self.pad, w), zero], 0)
        blocks = ops.reshape(ops.pad(x, before, after, "constant"),
                             ops.constant(np.array([heads, -1, self.chunk, dim], i64)), False)  # [H, J+1, C, D]
        one, big = ops.constant(np.array([1], i64)), ops.constant(np.array([2**62], i64))
        axis = ops.constant(np.array([1], i64))
        left = ops.slice(blocks, zero, ops.constant(np.array([-1], i64)), one, axis)
        right = ops.slice(blocks, one, big, one, axis)
        return ops.concat([left, right], 2)
