"""A real Ray cluster on this machine for the Ray engine's tests (indexer/ray_engine.py): a head and a worker
node of one CPU each (ray.cluster_utils.Cluster), and the models as loaders Ray can ship to its actors."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from serving import ROOT

from runners.clip import ClipEncoder
from runners.vlm.describe import Describer
from store.interface import StoreError

OBJECT_STORE = 80 * 1024**2  # per node: enough for a tiny library, keeps memory modest


@contextmanager
def two_node_cluster() -> Iterator[Any]:
    """A head node and one worker node (one CPU each), this process connected as the driver."""
    import ray
    from ray.cluster_utils import Cluster

    from indexer.ray_engine import no_usage_reports

    no_usage_reports()  # as the indexer's connect(): no usage poller left running in this test process
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": path}},
             logging_level=logging.WARNING, include_dashboard=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


class ClipLoader:
    """Loads the tiny CLIP in the process that calls it (each embed actor)."""

    def __init__(self, folder: Path, model_id: str) -> None:
        self.folder, self.model_id = folder, model_id

    def __call__(self) -> ClipEncoder:
        return ClipEncoder(str(self.folder), "cpu", model_id=self.model_id)


class DescriberLoader:
    """Loads the tiny describer (tests/fixtures/tiny_describer) as the describe stage's model."""

    def __init__(self, folder: Path, max_new_tokens: int = 16) -> None:
        self.folder, self.max_new_tokens = folder, max_new_tokens

    def __call__(self) -> Describer:
        from config import DEFAULT_DESCRIBE_PROMPT, Settings
        from runners.vlm import load_vlm

        settings = Settings(_env_file=None, vqa_model=str(self.folder), device="cpu")  # type: ignore[call-arg]
        return Describer(load_vlm(self.folder, settings), DEFAULT_DESCRIBE_PROMPT,
                         max_new_tokens=self.max_new_tokens)


class FailingWriter:
    """A store whose writes are refused (a Qdrant server that errors), as the write tasks open it."""

    def __call__(self) -> FailingWriter:
        return self

    def upsert(self, points: Any) -> None:
        raise StoreError("the server refused the write (disk full)")

    def close(self) -> None: ...
