"""The seed server's two hot loops, re-implemented faithfully for comparison only (never used to serve).

The seed (a single-file server) indexed a library one image at a time and searched a Python dict:

* `seed_index`: for each file, PIL open -> convert("RGB") -> the model's own processor -> encode one
  image -> .cpu().numpy() into a dict {name: vector}. Same ChineseCLIP model object as the project's
  ClipEncoder, so a comparison measures the pipeline (decode, batching, threads), not the model.
* `seed_search`: a loop over {name: vector} computing np.dot per image, then sorted()[:k].
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def seed_index(paths: Iterable[Path], model: Any, processor: Any, device: str = "cpu") -> dict[str, np.ndarray]:
    """Embed each image on its own, as the seed did. `model`/`processor`: a ChineseCLIPModel and its
    AutoProcessor (e.g. `ClipEncoder.model` / `ClipEncoder.processor`)."""
    import torch

    vectors: dict[str, np.ndarray] = {}
    for path in paths:
        image = Image.open(path).convert("RGB")
        inputs = processor(images=image, return_tensors="pt").to(device)
        with torch.no_grad():
            out = model.get_image_features(pixel_values=inputs["pixel_values"].to(model.dtype))
        out = out if not hasattr(out, "pooler_output") else out.pooler_output
        out = out / out.norm(dim=-1, keepdim=True)
        vectors[path.name] = out[0].cpu().numpy()
    return vectors


def seed_search(index: dict[str, np.ndarray], query: np.ndarray, k: int = 10) -> list[tuple[str, float]]:
    """Score every stored vector in a Python loop, then sort them all: O(n log n) per query."""
    scores = []
    for name, vector in index.items():
        scores.append((name, float(np.dot(query, vector))))
    return sorted(scores, key=lambda item: item[1], reverse=True)[:k]


def exact_search(matrix: np.ndarray, query: np.ndarray, k: int = 10) -> np.ndarray:
    """Exact numpy brute force (one matrix-vector product + argpartition): the ground truth for recall."""
    scores = matrix @ query
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]
