"""Every BentoML 1.4.40 workaround of this project, in one place, each with its upstream issue.

`WORKAROUNDS` lists them: what BentoML does, where upstream does it, and which code of ours works around
it. The small pieces live here (`NO_RECYCLE`, `NO_FILE`, `upload_name`, the form limits); the big ones
stay where they act (api/http/middleware.py, api/http/openapi_doc.py, api/errors.py) and are only listed.
tests/unit/test_bentoml_compat.py checks each upstream behaviour directly and fails, naming the
workaround to drop, when an upgrade changes it.

"Upstream: none filed" means no upstream issue or pull request was found for it; the entry then
names the upstream code that does it. This module imports nothing from bentoml (core/ is neutral).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENTOML_VERSION = "1.4.40"  # the pinned version these workarounds were measured against


@dataclass(frozen=True)
class Workaround:
    name: str
    upstream: str  # the upstream issue(s), or the upstream code when none is filed
    behaviour: str  # what BentoML does
    ours: str  # what we do about it, and where


# The depends() client (`_bentoml_impl/client/proxy2.py` SessionManager) replaces its aiohttp session
# every 100 requests or 300 s and closes the old one while requests still use it: the callers get
# ServerDisconnectedError / "Connector is closed", 2-13 % of calls under concurrency (BENCHMARKS.md).
# Upstream #5540, #5544, PR #5541 (merged, not covering this), open PR #5698. A caller reads these
# limits from the runner's `runner_connection` config, so the local socket session is never recycled.
NO_RECYCLE: dict[str, Any] = {"max_requests": 2**31 - 1, "max_age": 1e9}


def runner_options(timeout_s: int) -> dict[str, Any]:
    """The `@bentoml.service` options both model runners share: one worker (each holds its model),
    BentoML's request timeout, and NO_RECYCLE."""
    return {"workers": 1, "traffic": {"timeout": timeout_s}, "runner_connection": NO_RECYCLE}

# An optional upload. BentoML turns an upload into a Path (FileSchema) only for a plain `Path`
# annotation: `Path | None` is listed as a file field but skips the conversion (every upload is a 400),
# and `Optional[Path]` fails at import ("Unable to infer the input spec"). So the parameter is `Path`
# with this None default (typed Any so that mypy accepts None for a `Path`).
NO_FILE: Any = None

# BentoML saves an upload as NamedTemporaryFile(suffix=<its file name>): "tmp" + 8 random characters
# + the name (`_bentoml_sdk/validators.py` FileSchema.decode); the original name is not kept elsewhere.
TEMP_PREFIX_CHARS = len("tmp") + 8

# The longest upload file name BentoML can save: its temporary file is tmp<8 random><the name's last
# path part>, and a file name has at most 255 bytes (NAME_MAX on Linux and macOS file systems); a longer
# one fails with ENAMETOOLONG: a 500. api/http/middleware.py refuses it with 400. (A NUL in the name is already
# a 400: the ValueError is raised inside pydantic's validation.)
NAME_MAX = 255
MAX_UPLOAD_NAME_BYTES = NAME_MAX - TEMP_PREFIX_CHARS

# Starlette's form parser limits: BentoML answers 500 when a body passes one (its request.form() raises
# a MultiPartException that `api_endpoint_wrapper` does not map), so api/http/middleware.py refuses with 400.
MAX_FIELD_BYTES = 1024 * 1024
MAX_PARTS = 1000


def upload_name(upload: Path) -> str:
    """The uploaded file's own name, recovered from BentoML's temporary file name."""
    name = upload.name
    return (name[TEMP_PREFIX_CHARS:] if name.startswith("tmp") else name) or "upload"


def upload_name_problem(filename: bytes) -> str | None:
    """Why BentoML could not save an upload sent with this multipart `filename`, or None. The name is
    decoded as Starlette does (UTF-8, else Latin-1) and cut to its last path part as BentoML does."""
    try:
        name = filename.decode("utf-8")
    except UnicodeDecodeError:
        name = filename.decode("latin-1")
    size = len(os.path.basename(name).encode("utf-8", "surrogateescape"))
    if size > MAX_UPLOAD_NAME_BYTES:
        return f"the file name is {size} bytes long, over the {MAX_UPLOAD_NAME_BYTES} bytes a saved upload can have"
    return None


WORKAROUNDS: tuple[Workaround, ...] = (
    Workaround(
        "runner session recycling",
        "#5540, #5544, #5698 (PR #5541 merged without covering it)",
        "the depends() client closes its HTTP session every 100 requests / 300 s while calls still use it",
        "NO_RECYCLE as `runner_connection` of both runners (runners/clip/service.py, runners/vlm/service.py)"),
    Workaround(
        "optional upload annotation",
        "none filed; _bentoml_sdk/io_models.py IOMixin.__pydantic_init_subclass__, _pydantic.py",
        "only a plain `Path` parameter is converted from an upload; `Path | None` gives a 400 for every "
        "upload, `Optional[Path]` fails at import",
        "upload parameters are `Path` with the default NO_FILE (service.py)"),
    Workaround(
        "upload file name",
        "none filed; _bentoml_sdk/validators.py FileSchema.decode",
        "an upload arrives as a temporary file named tmp<8 random><its name>",
        "upload_name() recovers the name for /image2image_search's `query`"),
    Workaround(
        "upload file name too long",
        "none filed; _bentoml_sdk/validators.py FileSchema.decode (NamedTemporaryFile(suffix=<its name>))",
        "an upload whose file name is over 244 bytes (255 with the tmp prefix) answers 500 (ENAMETOOLONG)",
        "api/http/middleware.py FormInspector refuses it with 400 (upload_name_problem, MAX_UPLOAD_NAME_BYTES)"),
    Workaround(
        "4xx body is a list",
        "none filed; _bentoml_impl/server/app.py api_endpoint_wrapper (`detail = ({...},)`)",
        'a raised InvalidArgument/NotFound answers `[{"error": ...}]`, a JSON list',
        "api/errors.py returns_errors answers ApiError itself; api/http/middleware.py describe() unwraps lists"),
    Workaround(
        "5xx hides its message",
        "none filed; _bentoml_impl/server/app.py api_endpoint_wrapper",
        "a raised ServiceUnavailable (any status >= 500) answers a generic message, its own is lost",
        "api/errors.py returns_errors renders 503s (store, runner, VQA capacity) with their message"),
    Workaround(
        "unknown Content-Type read as JSON",
        "none filed; _bentoml_impl/server/app.py api_endpoint (ALL_SERDE.get(.., JSON))",
        "a body of any unknown media type is parsed as JSON",
        "api/http/middleware.py answers 415 on the API routes"),
    Workaround(
        "text value in a file field",
        "none filed; _bentoml_impl/serde.py MultipartSerde.ensure_file",
        "a text value sent in a file field is downloaded as a URL, server-side",
        "api/http/middleware.py FormInspector refuses it with a 400 before BentoML reads it"),
    Workaround(
        "form bodies Starlette refuses",
        "none filed; _bentoml_impl/server/app.py api_endpoint_wrapper",
        "a multipart part without a name, a field over 1 MB or over 1000 parts answer 500",
        "api/http/middleware.py FormInspector (MAX_FIELD_BYTES, MAX_PARTS) answers 400"),
    Workaround(
        "non-UTF-8 form text",
        "none filed; Starlette's form parser as BentoML uses it",
        "a multipart text field that is not UTF-8 is decoded as Latin-1 (urlencoded: U+FFFD), no error",
        "api/http/middleware.py FormInspector answers 400"),
    Workaround(
        "form values JSON-decoded",
        "none filed; _bentoml_impl/serde.py MultipartSerde.parse_request (json.loads on every value)",
        "a form text such as `2024` or `true` arrives as a number or a boolean; a `str` field refuses it",
        "api/search_fields.py as_text (the `Text` annotation in service.py) turns it back into the text sent"),
    Workaround(
        "deeply nested form values",
        "none filed; _bentoml_impl/serde.py MultipartSerde.parse_request (catches JSONDecodeError only)",
        "a form text that nests arrays ~1000 deep raises RecursionError in json.loads: 500",
        "api/http/middleware.py FormInspector refuses values over api/http/json_body.py MAX_JSON_DEPTH with 400"),
    Workaround(
        "/docs.json",
        "none filed; _bentoml_sdk/service/openapi.py, _bentoml_sdk/io_models.py, bentoml/_internal/service/openapi",
        'uploads typed `type: file` (not OpenAPI 3), JSON Schema 2020 nulls, info.version "None" from '
        'source, BentoML\'s own error schemas, a "Service APIs" tag, the mounted Starlette routes missing',
        "api/http/openapi_doc.py fix_spec, served by api/http/middleware.py"),
    Workaround(
        "unhandled error held until the timeout",
        "none filed; bentoml/_internal/server/http/traffic.py TimeoutMiddleware",
        "an app that raises before answering sends nothing until traffic.timeout, then drops the request",
        "api/http/middleware.py ApiContractMiddleware answers the 500 itself"),
    Workaround(
        "runner probe raises",
        "none filed; _bentoml_impl/client/proxy2.py AsyncClient.is_ready catches timeouts only",
        "while a runner's socket is not up, is_ready() raises and /readyz answers 500 instead of 503",
        "MultimodalServer.__is_ready__ asks each runner itself and reads a failure as not ready"),
    Workaround(
        "max_batch_size 1 refused",
        "none filed; _bentoml_sdk/method.py APIMethod.max_batch_size validator gt(1)",
        "@bentoml.api(batchable=True, max_batch_size=1) raises at import",
        "config.py CLIP_/VQA_MAX_BATCH_SIZE ge=2; CLIP_ADAPTIVE_BATCHING=false turns batching off instead"),
    Workaround(
        "prometheus_client mode fixed at import",
        "none filed; bentoml.metrics is a deprecated lazy alias of prometheus_client (its docstring)",
        "prometheus_client picks multiprocess mode when first imported, before BentoML's workers set "
        "PROMETHEUS_MULTIPROC_DIR if a service module imports it at the top",
        "core/telemetry.py imports prometheus_client on first use, not at import"),
)
