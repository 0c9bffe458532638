"""The OCR stage on Ray (`python -m indexer --ocr --engine ray`): photos decoded and read on an actor pool, each
actor with its own TextReader, through the functions the local engine uses (describe_stage.decode_photo,
ocr_stage.read_decoded); the driver records every batch (indexer/ocr_stage.py, OcrStage.record), as it does for
the describe stage (indexer/ray_engine.py, RayDescriber). Ray is imported only with `--engine ray`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from indexer.describe_stage import PixelBudget, SameContent, decode_photo
from indexer.ocr_stage import LineReader, read_decoded
from indexer.ray_engine import RayOptions, configure


class OcrActor:
    """One reader (OCR models) per actor: decodes and reads a batch of photos."""

    def __init__(self, load: Callable[[], LineReader], root: Path, pixels: PixelBudget, ocr_by: str) -> None:
        from core.library import Library

        self.reader = load()
        self.library = Library(root)
        self.pixels = pixels
        self.ocr_by = ocr_by

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        photos: list[SameContent] = list(batch["photo"])
        decoded = [decode_photo(self.library, photo, self.pixels) for photo in photos]
        outcomes = read_decoded(lambda: self.reader, decoded, self.ocr_by)
        return {"photo": photos, "outcome": [json.dumps(outcome) for outcome in outcomes]}


class RayReader:
    """indexer.ocr_stage's engine seam on Ray: photos read on an actor pool (INDEX_RAY_DESCRIBE_ACTORS actors: the
    describe stage's, as they run one after the other), recorded by the driver."""

    def __init__(self, load: Callable[[], LineReader], options: RayOptions) -> None:
        self.load = load
        self.options = options

    def __call__(self, photos: list[SameContent], root: Path, pixels: PixelBudget, ocr_by: str, batch_size: int
                 ) -> Iterator[tuple[list[SameContent], list[dict[str, Any] | str]]]:
        if not photos:
            return
        import ray
        from ray.data import ActorPoolStrategy

        configure(self.options.progress)
        dataset = (ray.data.from_items([{"photo": photo} for photo in photos],
                                       override_num_blocks=max(1, min(len(photos) // batch_size, 1000)))
                   .map_batches(OcrActor, batch_size=batch_size,
                                fn_constructor_kwargs={"load": self.load, "root": root, "pixels": pixels,
                                                       "ocr_by": ocr_by},
                                compute=ActorPoolStrategy(size=self.options.describe_actors),
                                num_cpus=self.options.cpus_per_actor))
        for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
            yield list(batch["photo"]), [json.loads(str(outcome)) for outcome in batch["outcome"]]
