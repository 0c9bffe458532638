"""The indexer's store RPC (store/remote.py <-> api/internal_store.py): one generic call, an allowlist, a
timeout that follows the service's REQUEST_TIMEOUT_S."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers.stores import DIM, MODEL, ServedEdge, make_points

from store.base import Hit, SearchFilter
from store.remote import TOKEN_HEADER, RemoteStore, ServiceFile, from_wire, hints_of, to_wire


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedEdge]:
    s = ServedEdge(tmp_path / "qdrant", "images")
    s.store.ensure_collection(MODEL, DIM)
    yield s
    s.close()


def test_store_methods_off_the_allowlist_are_404_and_do_nothing(served: ServedEdge) -> None:
    served.store.upsert(make_points(2))
    client = served.client(**{TOKEN_HEADER: ServedEdge.TOKEN})
    for method in ("close", "finish", "ensure_indexes", "_drop", "__init__"):
        response = client.post(f"/internal/store/{method}", json={})
        assert response.status_code == 404, method
        assert response.json()["error"]["code"] == "not_found"
    assert served.store.count() == 2  # still open, nothing dropped


def test_unknown_and_missing_arguments_are_400(served: ServedEdge) -> None:
    client = served.client(**{TOKEN_HEADER: ServedEdge.TOKEN})
    unknown = client.post("/internal/store/count", json={"drop": True})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "invalid_argument"
    missing = client.post("/internal/store/ensure_collection", json={"model_id": MODEL})
    assert missing.status_code == 400 and "dim" in missing.json()["error"]["message"]


def test_every_answer_crosses_as_the_local_store_gives_it(served: ServedEdge) -> None:
    remote = served.remote()
    points = make_points(4)
    remote.upsert(points)
    query = points[0].vector
    where = SearchFilter(exclude_ids=(points[1].id,))
    assert remote.search(query, 3, where) == served.store.search(query, 3, where)
    got = remote.vectors([p.id for p in points])
    assert set(got) == {p.id for p in points}
    np.testing.assert_array_equal(got[points[2].id], served.store.vectors([points[2].id])[points[2].id])
    items, after = remote.payload_page(None, 2)
    local_items, local_after = served.store.payload_page(None, 2)
    assert items == local_items and after == str(local_after)
    assert dict(remote.payloads()) == dict(served.store.payloads())
    assert remote.unindexed_points() == served.store.unindexed_points() == 4
    remote.finish()  # only flushes: the index is built at the service's next start
    assert served.store.unindexed_points() == 4


def test_the_wire_keeps_types() -> None:
    hits = [Hit("a", 0.5, {"path": "x.jpg", "folders": ["f"]})]
    assert from_wire(to_wire(hits), hints_of("search")["return"]) == hits
    where = SearchFilter(folder="f", min_width=10, exclude_ids=("a", "b"))
    assert from_wire(to_wire(where), hints_of("search")["where"]) == where
    with pytest.raises(ValueError):
        from_wire({"x": ["not fields"]}, hints_of("set_payloads")["payloads"])


def test_the_client_waits_past_the_services_request_timeout() -> None:
    found = ServiceFile("http://127.0.0.1:9", "t", 1, "images")
    for service_timeout in (30.0, 110.0, 600.0):
        remote = RemoteStore.from_file(found, service_timeout)
        try:
            assert remote.client.timeout == httpx.Timeout(remote.timeout_s)
            assert remote.timeout_s > service_timeout
        finally:
            remote.close()
