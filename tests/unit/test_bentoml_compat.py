"""Each BentoML 1.4.40 workaround (core/bentoml_compat.py) against the upstream behaviour it works around.

Every test exercises BentoML itself, in-process (a tiny service served by Starlette's TestClient, or
BentoML's internals called directly), and asserts that the behaviour is still there. When an upgrade
fixes one, its test fails with "upstream fixed X: drop workaround Y".
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import bentoml
import pytest
from bentoml.exceptions import InvalidArgument, ServiceUnavailable
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from core.bentoml_compat import (
    BENTOML_VERSION,
    MAX_UPLOAD_NAME_BYTES,
    NO_FILE,
    NO_RECYCLE,
    WORKAROUNDS,
    upload_name,
)

ROOT = Path(__file__).resolve().parents[2]


def fixed(what: str, workaround: str) -> str:
    return f"upstream fixed {what}: drop workaround {workaround} (core/bentoml_compat.py)"


async def mounted(request: Any) -> PlainTextResponse:
    return PlainTextResponse("mounted")


@bentoml.asgi_app(Starlette(routes=[Route("/mounted", mounted)]), path="/")
@bentoml.service(name="compat_probe")
class Probe:
    """One endpoint per upstream behaviour the workarounds depend on."""

    @bentoml.api
    def plain(self, image: Path = NO_FILE, text: str = "") -> dict[str, Any]:
        return {"name": image.name if image is not None else None, "text": text}

    @bentoml.api
    def union(self, image: Path | None = None) -> dict[str, Any]:
        return {"type": type(image).__name__}

    @bentoml.api
    def refuse(self, status: int = 400) -> dict[str, Any]:
        if status == 503:
            raise ServiceUnavailable("the store is restarting")
        raise InvalidArgument("top_k is too large")


PROBE: Any = Probe  # the bentoml Service object (mypy sees the class the decorators were given)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    from _bentoml_impl.server.app import ServiceAppFactory

    PROBE.inject_config()
    with TestClient(ServiceAppFactory(PROBE, is_main=True)(), raise_server_exceptions=False) as test_client:
        yield test_client


def multipart(*parts: bytes) -> tuple[bytes, dict[str, str]]:
    body = b"".join(b"--b\r\n" + part + b"\r\n" for part in parts) + b"--b--\r\n"
    return body, {"content-type": "multipart/form-data; boundary=b"}


def test_the_pinned_version_is_the_one_installed() -> None:
    assert bentoml.__version__ == BENTOML_VERSION, (
        f"BentoML is now {bentoml.__version__}: run this file, drop the workarounds whose upstream "
        "behaviour changed, then update BENTOML_VERSION")
    assert len({w.name for w in WORKAROUNDS}) == len(WORKAROUNDS)


# -- runner session recycling (#5540 / #5544 / #5698) -------------------------------------------------

def test_depends_client_still_recycles_its_session_under_running_requests() -> None:
    from _bentoml_impl.client.proxy2 import SessionManager

    manager = SessionManager("http://127.0.0.1:1", timeout=1, headers={})
    assert (manager.max_requests, manager.max_age) == (100, 300.0), fixed("the recycling defaults", "NO_RECYCLE")
    closed: list[int] = []

    class Session:
        def __init__(self, number: int) -> None:
            self.number = number

        async def close(self) -> None:
            closed.append(self.number)

    sessions = iter(range(10))
    manager._make_client = lambda: Session(next(sessions))  # type: ignore[assignment,return-value,method-assign]
    manager.max_requests = 1

    async def two_calls() -> None:
        await manager.get_session()  # a request takes session 0 and is still running...
        await manager.get_session()
        await manager.get_session()  # ...when a later call closes it under it

    asyncio.run(two_calls())
    assert closed == [0], fixed("the session closed under running requests (#5540)", "NO_RECYCLE")


def test_runner_connection_reaches_the_depends_client() -> None:
    """How NO_RECYCLE takes effect: the caller's client reads the runner's `runner_connection`."""
    from _bentoml_impl.client.proxy2 import RemoteProxy

    class Runner:
        @bentoml.api
        def ping(self) -> int:
            return 1

    runner: Any = bentoml.service(name="compat_runner", runner_connection=NO_RECYCLE)(Runner)
    runner.inject_config()
    proxy = RemoteProxy("http://127.0.0.1:1", service=runner)
    manager = proxy._async._session_manager
    assert (manager.max_requests, manager.max_age) == (NO_RECYCLE["max_requests"], NO_RECYCLE["max_age"])


# -- uploads ---------------------------------------------------------------------------------------------

def test_only_a_plain_path_annotation_is_an_upload(client: TestClient) -> None:
    upload = {"image": ("cat.png", b"\x89PNG", "image/png")}
    assert client.post("/plain", files=upload).status_code == 200
    refused = client.post("/union", files=upload)
    assert refused.status_code == 400 and "path" in refused.text, fixed("`Path | None` uploads", "NO_FILE")
    assert client.post("/plain", data={"text": "x"}).json()["name"] is None  # NO_FILE: no upload is None

    try:
        class WithOptional:  # the input spec is built when @bentoml.api runs
            @bentoml.api
            def f(self, image: Optional[Path] = None) -> int:  # noqa: UP045 - the annotation under test
                return 0
    except TypeError as exc:
        assert "infer the input spec" in str(exc)
    else:
        pytest.fail(fixed("`Optional[Path]` uploads", "NO_FILE"))


def test_an_upload_arrives_as_tmp_random_and_its_name(client: TestClient) -> None:
    answer = client.post("/plain", files={"image": ("cat photo.png", b"\x89PNG", "image/png")})
    saved = answer.json()["name"]
    assert saved != "cat photo.png" and saved.startswith("tmp"), fixed("upload names", "upload_name")
    assert upload_name(Path(saved)) == "cat photo.png", fixed("the temporary file name pattern", "upload_name")


def test_an_upload_name_over_the_bound_answers_500(client: TestClient) -> None:
    longest = "a" * (MAX_UPLOAD_NAME_BYTES - 4) + ".png"
    fits = client.post("/plain", files={"image": (longest, b"\x89PNG", "image/png")})
    assert fits.status_code == 200 and upload_name(Path(fits.json()["name"])) == longest
    answer = client.post("/plain", files={"image": ("a" + longest, b"\x89PNG", "image/png")})
    assert answer.status_code == 500, fixed(f"over-long upload names (now {answer.status_code})",
                                            "upload_name_problem in api/http/middleware.py FormInspector")


# -- error bodies ----------------------------------------------------------------------------------------

def test_a_raised_4xx_answers_a_list(client: TestClient) -> None:
    answer = client.post("/refuse", json={"status": 400})
    assert answer.status_code == 400
    assert answer.json() == [{"error": "top_k is too large"}], fixed(
        "the list-shaped 4xx body", "api/errors.py returns_errors and the list case of api/http/middleware.py describe")


def test_a_raised_5xx_hides_its_message(client: TestClient) -> None:
    answer = client.post("/refuse", json={"status": 503})
    assert answer.status_code == 503
    assert "restarting" not in answer.text, fixed("5xx messages", "the 503s of api/errors.py returns_errors")


# -- request bodies --------------------------------------------------------------------------------------

def test_an_unknown_content_type_is_read_as_json(client: TestClient) -> None:
    answer = client.post("/plain", content=b'{"text": "csv?"}', headers={"content-type": "text/csv"})
    assert answer.status_code == 200 and answer.json()["text"] == "csv?", fixed(
        "unknown media types", "the 415 of api/http/middleware.py")


def test_a_text_value_in_a_file_field_is_fetched_as_a_url(client: TestClient, monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    import httpx

    fetched: list[str] = []

    async def get(self: Any, url: str, *args: Any, **kwargs: Any) -> Any:
        fetched.append(url)
        raise httpx.ConnectError("no network in this test")

    monkeypatch.setattr(httpx.AsyncClient, "get", get)
    # BentoML's guard against private addresses needs uvloop, absent here; a public URL passes it anyway
    monkeypatch.setattr("_bentoml_impl.serde.make_safe_connect", contextlib.nullcontext)
    client.post("/plain", data={"image": "https://example.com/cat.png"})
    assert fetched == ["https://example.com/cat.png"], fixed(
        "URL downloads of file fields", "the text-in-a-file-field check of api/http/middleware.py FormInspector")


@pytest.mark.parametrize("part", [
    b'Content-Disposition: form-data\r\n\r\nno name',
    b'Content-Disposition: form-data; name="text"\r\n\r\n' + b"x" * (1024 * 1024 + 1),
], ids=["part-without-name", "field-over-1MB"])
def test_a_form_starlette_refuses_answers_500(client: TestClient, part: bytes) -> None:
    body, headers = multipart(part)
    answer = client.post("/plain", content=body, headers=headers)
    assert answer.status_code == 500, fixed(f"500s for bad forms (now {answer.status_code})",
                                            "FormInspector's MAX_FIELD_BYTES / MAX_PARTS / no-name checks")


def test_non_utf8_form_text_is_accepted(client: TestClient) -> None:
    body, headers = multipart(b'Content-Disposition: form-data; name="text"\r\n\r\n\xe9t\xe9')
    multipart_answer = client.post("/plain", content=body, headers=headers)
    urlencoded = client.post("/plain", content=b"text=%E9t%E9",
                             headers={"content-type": "application/x-www-form-urlencoded"})
    assert multipart_answer.status_code == 200 and multipart_answer.json()["text"] == "\xe9t\xe9", fixed(
        "Latin-1 form text", "the UTF-8 check of api/http/middleware.py FormInspector")
    assert urlencoded.status_code == 200 and urlencoded.json()["text"] == "\ufffdt\ufffd", fixed(
        "undecodable urlencoded text", "the UTF-8 check of api/http/middleware.py FormInspector")


def test_form_values_are_json_decoded(client: TestClient) -> None:
    answer = client.post("/plain", data={"text": "2024"})
    assert answer.status_code == 400 and "string" in answer.text, fixed(
        "JSON-decoded form values", "api/search.py as_text (the `Text` annotation)")


def test_a_deeply_nested_form_value_answers_500(client: TestClient) -> None:
    answer = client.post("/plain", data={"text": "[" * 100_000 + "]" * 100_000})
    assert answer.status_code == 500, fixed(f"RecursionError on deep form values (now {answer.status_code})",
                                            "the MAX_JSON_DEPTH check of api/http/middleware.py FormInspector")


# -- /docs.json ------------------------------------------------------------------------------------------

def test_the_generated_spec_still_needs_fix_spec() -> None:
    spec = PROBE.openapi_spec.asdict()
    schemas = spec["components"]["schemas"]
    image = schemas["plain__Input"]["properties"]["image"]
    assert image.get("type") == "file", fixed("`type: file` uploads",
                                              "the upload case of api/http/openapi_doc.py fix_schema")
    assert spec["info"]["version"] == "None", fixed('info.version "None"',
                                                    "the version of api/http/openapi_doc.py fix_spec")
    assert {"InvalidArgument", "NotFound", "InternalServerError"} <= set(schemas), fixed(
        "BentoML's own error schemas", "api/http/openapi_doc.py BENTOML_ERRORS")
    assert {"type": "null"} in schemas["TaskStatusResponse"]["properties"]["executed_at"]["anyOf"], fixed(
        "JSON Schema 2020 nulls", "the anyOf-null case of api/http/openapi_doc.py fix_schema")
    assert "Service APIs" in [tag["name"] for tag in spec.get("tags", [])], fixed(
        'the "Service APIs" tag', "api/http/openapi_doc.py SERVICE_TAG")
    assert "/mounted" not in spec["paths"], fixed("mounted routes missing", "api/http/openapi_doc.py extra_paths")


# -- serving ---------------------------------------------------------------------------------------------

def test_an_app_that_raises_before_answering_is_held_until_the_timeout() -> None:
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    async def crashing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def call() -> None:
        await TimeoutMiddleware(crashing, timeout=0.3)({"type": "http"}, receive, send)

    started = time.monotonic()
    try:
        asyncio.run(call())
    except RuntimeError:
        pass
    assert time.monotonic() - started >= 0.3 and not sent, fixed(
        "errors held until the timeout", "the catch-all 500 of api/http/middleware.py ApiContractMiddleware")


def test_the_runner_probe_raises_while_the_socket_is_down(tmp_path: Path) -> None:
    import aiohttp
    from _bentoml_impl.client.proxy2 import RemoteProxy

    proxy = RemoteProxy(f"file://{tmp_path / 'absent.sock'}")

    async def probe() -> None:
        try:
            await proxy.is_ready(1)
        finally:
            await proxy.close()

    try:
        asyncio.run(probe())
    except aiohttp.ClientError:
        return
    pytest.fail(fixed("is_ready() on a runner that is not up", "the own runner_ready() of service.py __is_ready__"))


def test_max_batch_size_1_is_refused() -> None:
    def batch(self: Any, items: list[str]) -> list[str]:
        return items

    try:
        bentoml.api(batchable=True, max_batch_size=1)(batch)
    except ValueError as exc:
        assert "max_batch_size" in str(exc)
    else:
        pytest.fail(fixed("max_batch_size 1", "ge=2 on CLIP_/VQA_MAX_BATCH_SIZE in config.py"))


def test_prometheus_client_fixes_its_mode_at_import(tmp_path: Path) -> None:
    code = ("import os, prometheus_client.values as v; os.environ['PROMETHEUS_MULTIPROC_DIR'] = os.getcwd(); "
            "import prometheus_client; print(v.ValueClass is v.MutexValue)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env={"PATH": ""})
    assert done.stdout.strip() == "True", fixed("prometheus_client's import-time mode",
                                                "the lazy import of core/telemetry.py") + done.stderr
    from bentoml import metrics

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert metrics.__getattr__("Counter") is not None
    assert any(issubclass(w.category, DeprecationWarning) for w in caught), fixed(
        "the deprecated bentoml.metrics alias", "prometheus_client used directly in core/telemetry.py")


def test_core_telemetry_imports_prometheus_client_on_first_use() -> None:
    code = "import sys, core.telemetry; print('prometheus_client' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "False", done.stderr


def test_both_runners_carry_the_shared_runner_options() -> None:
    """runner_options() is what both model runners are declared with (NO_RECYCLE included)."""
    from runners.clip.service import ClipRunner
    from runners.vlm.service import VQARunner

    for runner in (ClipRunner, VQARunner):
        config: Any = getattr(runner, "config")  # noqa: B009 - a BentoML service attribute mypy cannot see
        assert config["runner_connection"] == NO_RECYCLE and config["workers"] == 1
