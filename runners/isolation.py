"""Per-item isolation, written once: run a batch; if it raises, run each item alone, so only the culprit fails.

Used by CLIP's encoder (a text or image the processor refuses) and the VLM (an item the model fails on); the other
items get the results they would get alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


def batch_then_each(run: Callable[[list[Item]], list[Result]], items: Sequence[Item],
                    failed: Callable[[Item, Exception], Result]) -> list[Result]:
    """`run(items)` (one result per item); if that raises, `run([item])` for each item, and for an item that
    fails alone `failed(item, exc)`: its own result, or a re-raise of an error that is not the item's fault."""
    batch = list(items)
    if not batch:
        return []
    try:
        return run(batch)
    except Exception as exc:  # noqa: BLE001 - retried item by item below; what is not an item's fault re-raises
        if len(batch) == 1:
            return [failed(batch[0], exc)]
        log.warning("a batch of %d failed (%r): running each item alone", len(batch), exc)
    results: list[Result] = []
    for item in batch:
        try:
            results.extend(run([item]))
        except Exception as exc:  # noqa: BLE001 - see above
            results.append(failed(item, exc))
    return results
