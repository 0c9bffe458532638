"""CLIP's probe for the fidelity gate (runners/fidelity.py): fixed synthetic images and texts encoded by a runtime,
compared with PyTorch fp32's vectors on the user's own model (stored beside the export), within CLIP's Bounds."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from runners.clip.runtime import Runtime, unit
from runners.fidelity import Fidelity

PROBE_TEXTS = (
    "红色的圆形", "一只猫", "蓝色的天空", "绿色的正方形", "夜晚的城市", "海边的日落",
    "a photo of a dog", "a yellow triangle", "a bowl of noodles", "black and white stripes",
)

PROBE_IMAGES = 16



@dataclass(frozen=True)
class Bounds:
    """The least agreement with PyTorch fp32 a runtime must show on the probe set."""

    min_top1: float = 0.9  # share of probe queries whose top-1 result equals PyTorch fp32's
    min_cosine: float = 0.99  # the lowest cosine of any probe vector with PyTorch fp32's

    def faithful(self) -> Bounds:
        """What `auto` demands: identical probe rankings, whatever the bound set for an explicit choice."""
        return Bounds(min_top1=1.0, min_cosine=self.min_cosine)



@dataclass(frozen=True)
class Vectors:
    images: np.ndarray
    texts: np.ndarray



def probe_images(n: int = PROBE_IMAGES) -> list[Image.Image]:
    """Fixed synthetic scenes: a few coloured shapes on a tinted background (the same pixels every time)."""
    images = []
    for seed in range(n):
        rng = random.Random(f"clip-probe/{seed}")
        image = Image.new("RGB", (112, 112), tuple(rng.randint(60, 250) for _ in range(3)))  # type: ignore[arg-type]
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 4)):
            x, y, r = rng.uniform(10, 100), rng.uniform(10, 100), rng.uniform(8, 40)
            fill = tuple(rng.randint(0, 255) for _ in range(3))
            if rng.random() < 0.5:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)  # type: ignore[arg-type]
            else:
                sides = rng.randint(3, 6)
                draw.polygon([(x + r * math.cos(2 * math.pi * k / sides), y + r * math.sin(2 * math.pi * k / sides))
                              for k in range(sides)], fill=fill)  # type: ignore[arg-type]
        images.append(image)
    return images



def probe_inputs(processor: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    pixels = processor(images=probe_images(), return_tensors="np")["pixel_values"]
    tokens = processor(text=list(PROBE_TEXTS), padding=True, truncation=True, return_tensors="np")
    return np.asarray(pixels, dtype=np.float32), {k: np.asarray(v, dtype=np.int64) for k, v in tokens.items()}



def probe(runtime: Runtime, processor: Any) -> Vectors:
    pixels, tokens = probe_inputs(processor)
    return Vectors(images=unit(runtime.image_features(pixels)), texts=unit(runtime.text_features(tokens)))



def compare(reference: Vectors, candidate: Vectors) -> Fidelity:
    """Lowest cosine of any vector with its reference, and the share of probe queries (each text ranks the
    images; each image ranks the other images) whose top-1 result is the reference's."""
    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sum(a.astype(np.float64) * b.astype(np.float64), axis=1)

    cosines = np.concatenate([cosine(reference.images, candidate.images), cosine(reference.texts, candidate.texts)])
    agree = [top1(reference.texts, reference.images) == top1(candidate.texts, candidate.images),
             top1(reference.images, reference.images, self_match=True)
             == top1(candidate.images, candidate.images, self_match=True)]
    hits = np.concatenate(agree)
    return Fidelity(agreed=int(hits.sum()), total=int(hits.size), item="queries' top-1 results",
                    min_cosine=float(cosines.min()))



def top1(queries: np.ndarray, items: np.ndarray, self_match: bool = False) -> np.ndarray:
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    if self_match:
        np.fill_diagonal(scores, -np.inf)
    return np.asarray(scores.argmax(axis=1))

