"""The served OpenAPI document: BentoML 1.4.40's generated spec made valid OpenAPI 3.0 and true to
this service (`fix_spec`). api/http/middleware.py serves it at /docs.json.

What BentoML gets wrong: `type: file` for uploads, JSON Schema 2020 nulls (`anyOf [.., {type: null}]`,
`default: null` on a non-nullable type), `info.version: "None"` when served from source, error
responses documented as its own `{"error", "detail"}` bodies (ours is `Error`), request bodies
inlined under the same name as their component schema (generated clients drop those APIs), untyped
success bodies, and the routes of the mounted Starlette app (/health, /v1/...) missing.
"""

from __future__ import annotations

import copy
import json
from typing import Any

OPENAPI_VERSION = "3.0.3"
NULL = {"type": "null"}
BENTOML_ERRORS = ("InvalidArgument", "NotFound", "InternalServerError")
SERVICE_TAG = "service"  # BentoML's "Service APIs" becomes a `service_ap_is` module in generated clients
# Listing the form media types as well would be true, but openapi-python-client 0.29.1 generates a
# client that fails to import (`Unset` undefined) for a request body with several media types.
FORMS_TOO = ("The same fields are also accepted as `multipart/form-data` or `application/x-www-form-urlencoded` "
             "form fields (values are JSON-decoded when they parse as JSON).")

DESCRIPTION = """Visual question answering (Qwen2.5-VL) and plain-language photo search (Chinese-CLIP).

Every failure answers an HTTP status and the same JSON body:
`{"status": "error", "error": {"code": "invalid_argument", "message": "top_k: Input should be ..."}}`
(`code` is a short machine-readable word, `message` a sentence for people).
"""

ERROR = {
    "type": "object",
    "title": "Error",
    "description": "The body of every error response.",
    "required": ["status", "error"],
    "properties": {
        "status": {"type": "string", "enum": ["error"]},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "a short machine-readable code",
                         "example": "invalid_argument"},
                "message": {"type": "string", "description": "what went wrong, for people",
                            "example": "top_k: Input should be greater than or equal to 1"},
            },
        },
    },
}

# What a score is depends on the ranking that made it (api/searching.py, store/qdrant_base.py).
MOMENT = {  # a video result's moment (search results, /ask sources)
    "t": {"type": "number", "description": "a video: the time of the moment's best frame, in seconds"},
    "start": {"type": "number", "description": "a video: where the moment starts, in seconds"},
    "end": {"type": "number", "description": "a video: where the moment ends, in seconds"},
}
SCORE = ("higher is better: the cosine similarity of CLIP vectors in `vector` mode (and on /image2image_search), "
         "the BM25 weight of the description's words in `text` mode, the fused (RRF) score in `hybrid` mode")
DESCRIBED = {  # api/search_fields.py described_fields: written by `python -m indexer --describe`
    "description": {"type": "string", "description": "the photo's VLM-written description, when it has one"},
    "visible_text": {"type": "string", "description": "the text the VLM read in the photo, when there is any"},
}
MODE = {"type": "string", "enum": ["vector", "text", "hybrid"],
        "description": "how the results were ranked: CLIP similarity, the descriptions' words, or both fused "
                       "(/image2image_search: always `vector`)"}
NULLABLE_STRING = {"type": "string", "nullable": True}
NULLABLE_NUMBER = {"type": "number", "nullable": True}
NULLABLE_INTEGER = {"type": "integer", "nullable": True}
HEALTH = {  # api/health.py health_report
    "status": {"type": "string", "enum": ["healthy", "degraded"]},
    "store": {"type": "string", "enum": ["ok", "damaged", "unavailable"],
              "description": "`damaged`: searches refused, /readyz 503 (`python -m indexer --verify`)"},
    "clip_model_loaded": {"type": "boolean"}, "vqa_model_loaded": {"type": "boolean"},
    "image_library_size": {**NULLABLE_INTEGER, "description": "points in the index; null while the store is "
                                                              "not answering"},
    "device": NULLABLE_STRING,
    "gpu_memory_allocated_gb": NULLABLE_NUMBER, "gpu_memory_reserved_gb": NULLABLE_NUMBER,
    "clip_model": {"type": "string"},
    "index_model": {**NULLABLE_STRING, "description": "the CLIP model the index was built with"},
    "described_images": {"type": "integer", "description": "photos with a description"},
    "descriptions_by": {"type": "object", "additionalProperties": {"type": "integer"},
                        "description": "photos described by each `<VQA model id>#<prompt hash>`"},
    "vqa_model": {"type": "string"},
    "vqa_quantization": NULLABLE_STRING,
    "vqa_runtime": {**NULLABLE_STRING, "description": "VQA_RUNTIME as resolved: `torch` or `openvino`"},
    "vqa_precision": {**NULLABLE_STRING, "description": "its weight precision: `fp32`, `bf16`, `int8`, `int4`..."},
    "vqa_batches": {"type": "object", "properties": {"generate_calls": NULLABLE_INTEGER,
                                                     "answers": NULLABLE_INTEGER}},
    "read_images": {"type": "integer", "description": "photos whose text was read (indexer --ocr)"},
    "read_by": {"type": "object", "additionalProperties": {"type": "integer"},
                "description": "photos read by each OCR model id (`ocr_by`)"},
}

# The text read in a photo (indexer --ocr; api/read_text.py), on search results and /ask's sources.
READ_FIELDS: dict[str, Any] = {
    "read_text": {"type": "string", "description": "the text read in the photo, one line each, when it has any "
                  "(indexer --ocr)"},
    "matched_lines": {"type": "array", "items": {"$ref": "#/components/schemas/ReadLine"},
                      "description": "text search: the read lines that hold a quoted phrase or a word of the query"},
}

SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "SearchResult": {
        "type": "object", "required": ["image", "score"],
        "properties": {
            "image": {"type": "string", "description": "path relative to IMAGE_LIBRARY"},
            "score": {"type": "number", "description": SCORE},
            **DESCRIBED,
            "image_base64": {"type": "string", "nullable": True,
                             "description": "the file's bytes, base64 (null if it was deleted since indexing)"},
            "thumbnail_url": {"type": "string", "description": 'with include_image="thumbnail": '
                              "/images/<path>?size=256"},
            "image_url": {"type": "string", "description": 'with include_image="thumbnail": /images/<path>?size=0'},
            "media": {"type": "string", "enum": ["image", "video"],
                      "description": 'what `image` names: a photo, or a video whose moment `t` matched'},
            **MOMENT,
            "moments": {"type": "array", "description": "a video: its other matching moments, best first "
                        "(a clip is listed once, at its best moment)",
                        "items": {"type": "object", "properties": {
                            "t": {"type": "number"}, "start": {"type": "number"}, "end": {"type": "number"},
                            "score": {"type": "number"}}}},
            "video_url": {"type": "string", "description": 'a video, with include_image="thumbnail": '
                          "/images/<path>, the clip itself (Range requests work)"},
            **READ_FIELDS,
        },
    },
    "ReadLine": {
        "type": "object", "required": ["text", "confidence", "box", "angle"],
        "description": "a line of text read in the photo (indexer --ocr)",
        "properties": {
            "text": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "box": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 4,
                    "maxItems": 4, "description": "[x0, y0, x1, y1] as fractions of the photo's width and height"},
            "angle": {"type": "number", "description": "the line's slope in degrees (clockwise)"},
        },
    },
    "SearchResponse": {
        "type": "object", "required": ["status", "query", "mode", "results"],
        "properties": {
            "status": {"type": "string", "enum": ["success"]},
            "query": {"type": "string"},
            "mode": MODE,
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/SearchResult"}},
        },
    },
    "AskSource": {
        "type": "object", "required": ["image", "score", "thumbnail_url", "image_url"],
        "properties": {
            "image": {"type": "string", "description": "path relative to IMAGE_LIBRARY"},
            "score": {"type": "number", "description": SCORE.replace(" (and on /image2image_search)", "")},
            "thumbnail_url": {"type": "string", "description": "/images/<path>?size=256"},
            "image_url": {"type": "string", "description": "/images/<path>?size=0"},
            **DESCRIBED,
            "media": {"type": "string", "enum": ["image", "video"],
                      "description": "a photo, or a video moment (the model saw the frame at `t`)"},
            **MOMENT,
            "video_url": {"type": "string", "description": "a video: /images/<path>, the clip itself"},
            **READ_FIELDS,
        },
    },
    "AskResponse": {
        "type": "object", "required": ["status", "question", "answer", "sources", "cited"],
        "properties": {
            "status": {"type": "string", "enum": ["success"]}, "question": {"type": "string"},
            "answer": {"type": "string"},
            "sources": {"type": "array", "items": {"$ref": "#/components/schemas/AskSource"},
                        "description": "the photos given to the model, best match first (photo 1, 2, ...)"},
            "cited": {"type": "array", "items": {"type": "integer", "minimum": 1},
                      "description": "1-based numbers of the sources the answer names"},
        },
    },
    "VQAResponse": {
        "type": "object", "required": ["status", "question", "answer"],
        "properties": {"status": {"type": "string", "enum": ["success"]}, "question": {"type": "string"},
                       "answer": {"type": "string"}},
    },
    "Health": {"type": "object", "required": list(HEALTH), "properties": HEALTH},
}

COMMON_ERRORS = {
    400: "Invalid input: a missing or invalid field, or a malformed JSON or multipart body",
    401: "API_KEY is set and the request has no valid `Authorization: Bearer <key>`",
    413: "The body is over MAX_UPLOAD_MB",
    415: "Unsupported Content-Type",
    429: "Too many requests in flight (see Retry-After)",
    500: "Unexpected server error (see the server log)",
    504: "No answer within REQUEST_TIMEOUT_S",
}
ROUTE_ERRORS: dict[str, dict[int, str]] = {
    "/text2image_search": {409: "The image index was built with another CLIP model",
                           503: "The vector store is not answering (see Retry-After)"},
    "/image2image_search": {404: "image_id is not in the image index",
                            409: "The image index was built with another CLIP model",
                            503: "The vector store or the CLIP runner is not answering (see Retry-After)"},
    "/vqa": {404: "image_id is not in the image library",
             503: "VQA is disabled, at capacity or its runner is restarting (see Retry-After)"},
    "/vqa/stream": {404: "image_id is not in the image library",
                    503: "VQA is disabled, at capacity or its runner is restarting (see Retry-After)"},
    "/ask": {409: "The image index was built with another CLIP model",
             503: "VQA is disabled, at capacity, its runner is restarting or the vector store is not answering "
                  "(see Retry-After)"},
    "/ask/stream": {409: "The image index was built with another CLIP model",
                    503: "VQA is disabled, at capacity, its runner is restarting or the vector store is not "
                         "answering (see Retry-After)"},
}
SUCCESS = {"/text2image_search": "SearchResponse", "/image2image_search": "SearchResponse", "/vqa": "VQAResponse",
           "/ask": "AskResponse"}
ASK_EVENT = {"type": "object", "required": ["event", "data"], "description": "one server-sent event",
             "properties": {"event": {"type": "string", "enum": ["sources", "delta", "done", "error"]},
                            "data": {"type": "string", "description": "the event's JSON object"}}}
# Routes answering server-sent events: (what the events are)
EVENT_STREAMS = {"/ask/stream": "Server-sent events: `sources` ({\"sources\": [...]}) first, then `delta` "
                                "({\"text\"}) pieces of the answer, then `done` ({\"answer\", \"cited\"}); "
                                "`error` ({\"code\", \"message\"}) if the model fails after the start"}
IMAGE_TYPES = ("image/jpeg", "image/webp", "image/png", "image/gif", "image/bmp")
VIDEO_TYPES = ("video/mp4", "video/quicktime", "video/webm", "video/x-matroska", "video/x-msvideo")


def error_responses(statuses: dict[int, str]) -> dict[str, Any]:
    return {str(status): {"description": description, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for status, description in sorted(statuses.items())}


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def fix_schema(schema: Any) -> None:
    """Rewrite one JSON Schema (and the schemas inside it) in place into an OpenAPI 3.0 Schema Object."""
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "file":  # BentoML's marker for an upload
        schema.update(type="string", format="binary")
        schema.pop("content_type", None)
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and NULL in any_of:  # Optional[X] -> X, nullable
        rest = [s for s in any_of if s != NULL]
        del schema["anyOf"]
        if len(rest) == 1:
            schema.update({k: v for k, v in rest[0].items() if k not in schema})
        else:
            schema["anyOf"] = rest
        schema["nullable"] = True
    if "const" in schema:  # JSON Schema's const (a Literal) -> a one-value enum
        schema["enum"] = [schema.pop("const")]
    if "default" in schema and schema["default"] is None:
        schema["nullable"] = True
    for bound in ("Minimum", "Maximum"):  # JSON Schema 2020 numbers -> OpenAPI 3.0 booleans
        value = schema.get(f"exclusive{bound}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            schema[bound.lower()] = value
            schema[f"exclusive{bound}"] = True
    if isinstance(schema.get("examples"), list):
        examples = schema.pop("examples")
        if examples:
            schema.setdefault("example", examples[0])
    for key in ("items", "additionalProperties", "not"):
        fix_schema(schema.get(key))
    for key in ("anyOf", "oneOf", "allOf"):
        for child in schema.get(key) or []:
            fix_schema(child)
    for child in (schema.get("properties") or {}).values():
        fix_schema(child)


def fix_operation(path: str, operation: dict[str, Any], schemas: dict[str, Any]) -> None:
    for media in (operation.get("requestBody") or {}).get("content", {}).values():
        fix_schema(media.get("schema"))
    for response in (operation.get("responses") or {}).values():
        for media in (response.get("content") or {}).values():
            fix_schema(media.get("schema"))
    for parameter in operation.get("parameters") or []:
        fix_schema(parameter.get("schema"))
    name = operation.get("x-bentoml-name")
    if not name:  # BentoML's own infrastructure routes
        return
    operation["operationId"] = name
    operation["tags"] = [SERVICE_TAG]
    content = (operation.get("requestBody") or {}).get("content")
    if content:
        operation["requestBody"]["required"] = True
        if len(content) == 1 and f"{name}__Input" in schemas:  # an inline copy clashes in generated clients
            next(iter(content.values()))["schema"] = {"$ref": f"#/components/schemas/{name}__Input"}
        if list(content) == ["application/json"]:
            operation["description"] = f"{operation.get('description', '')}\n\n{FORMS_TOO}".strip()
    responses = {k: v for k, v in operation.get("responses", {}).items() if not k.startswith(("4", "5"))}
    if path in SUCCESS and "200" in responses:
        responses["200"] = json_response("Successful Response", {"$ref": f"#/components/schemas/{SUCCESS[path]}"})
    if path in EVENT_STREAMS and "200" in responses:
        responses["200"] = {"description": EVENT_STREAMS[path],
                            "content": {"text/event-stream": {"schema": ASK_EVENT}}}
    responses.update(error_responses({**COMMON_ERRORS, **ROUTE_ERRORS.get(path, {})}))
    operation["responses"] = responses


def extra_paths() -> dict[str, Any]:
    """The routes of the mounted Starlette app (service.py), which BentoML does not list."""
    obj = {"type": "object", "additionalProperties": True}
    part = {"type": "object", "required": ["type"], "additionalProperties": True, "properties": {
        "type": {"type": "string", "enum": ["text", "image_url"]}, "text": {"type": "string"},
        "image_url": {"type": "object", "required": ["url"], "properties": {
            "url": {"type": "string", "description": "a data: URL with base64 image bytes"}}}}}
    message = {"type": "object", "required": ["role", "content"], "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant"]},
        "content": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": part}]}}}
    chat = {"type": "object", "required": ["messages"], "properties": {
        "model": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": message},
        "max_tokens": {"type": "integer", "minimum": 1, "nullable": True},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "nullable": True},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "nullable": True},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMinimum": True, "nullable": True},
        "stream": {"type": "boolean", "default": False}}}
    tags = [SERVICE_TAG]
    event = {"type": "object", "description": "one server-sent event: `data` is a chat.completion.chunk "
             "as JSON, the last one `[DONE]`", "properties": {"data": {"type": "string"}}}
    return {
        "/images/{path}": {"get": images_operation()},
        "/health": {"get": {
            "operationId": "health", "tags": tags,
            "description": "Models loaded, the VQA runtime and its precision, index size, GPU memory.",
            "responses": {"200": json_response("Service health", {"$ref": "#/components/schemas/Health"}),
                          **error_responses({500: COMMON_ERRORS[500]})},
        }},
        "/v1/models": {"get": {
            "operationId": "list_models", "tags": tags,
            "description": "OpenAI-compatible: the served VQA model, and `library` (asks the library).",
            "responses": {"200": json_response("Model list", obj), **error_responses({500: COMMON_ERRORS[500]})},
        }},
        "/v1/chat/completions": {"post": {
            "operationId": "chat_completions", "tags": tags,
            "description": "OpenAI-compatible vision chat; `stream: true` answers server-sent events. "
                           'With `model: "library"` the last user message is asked of the library (as /ask), '
                           "the sources following the answer as markdown links.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": chat}}},
            "responses": {
                "200": {"description": "A chat completion, or its events when streaming", "content": {
                    "application/json": {"schema": obj}, "text/event-stream": {"schema": event}}},
                **error_responses({400: "Not a valid chat request", 503: "VQA is disabled (VQA_ENABLED=false)",
                                   500: COMMON_ERRORS[500]}),
            },
        }},
    }


def images_operation() -> dict[str, Any]:
    binary = {"schema": {"type": "string", "format": "binary"}}
    cache = {name: {"schema": {"type": "string"}} for name in ("ETag", "Last-Modified", "Cache-Control")}
    return {
        "operationId": "get_image", "tags": [SERVICE_TAG],
        "description": "A cached JPEG/WebP thumbnail of a library image (its longer side at most `size` px), "
                       "or the file itself with `size=0`. ETag/Last-Modified; 304 for a matching "
                       "If-None-Match / If-Modified-Since. A library video: `t` gives the frame at `t` seconds "
                       "as a thumbnail (`size`, `format`), no `t` the clip itself (a single byte Range: 206).",
        "parameters": [
            {"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "the library-relative path as the file's raw bytes, URL-quoted: take it from a "
                            "search result's `thumbnail_url` / `image_url`"},
            {"name": "size", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0, "maximum": 2048, "default": 256}},
            {"name": "format", "in": "query", "required": False,
             "schema": {"type": "string", "enum": ["jpeg", "webp"], "default": "jpeg"}},
            {"name": "t", "in": "query", "required": False, "schema": {"type": "number", "minimum": 0},
             "description": "a video: the time of the frame to show, in seconds (a search result's `t`)"},
        ],
        "responses": {
            "200": {"description": "The thumbnail, or the original file", "headers": cache,
                    "content": {media: binary for media in (*IMAGE_TYPES, *VIDEO_TYPES)}},
            "206": {"description": "A byte range of the original file or clip (`Range`)",
                    "content": {media: binary for media in (*IMAGE_TYPES, *VIDEO_TYPES)}},
            "304": {"description": "Not modified since the ETag / date the client has", "headers": cache},
            **error_responses({400: "A bad size or format", 401: COMMON_ERRORS[401],
                               404: "Not an image file inside the library", 416: "A range past the end",
                               429: COMMON_ERRORS[429],
                               500: COMMON_ERRORS[500]}),
        },
    }


def fix_spec(spec: dict[str, Any], version: str = "dev") -> dict[str, Any]:
    """A valid OpenAPI 3.0 document from BentoML's `service.openapi_spec.asdict()` (not modified)."""
    spec = json.loads(json.dumps(spec))  # a copy, with BentoML's int status codes as the strings JSON has
    spec["openapi"] = OPENAPI_VERSION
    info = spec.setdefault("info", {})
    info.setdefault("title", "multimodal_server")
    if info.get("version") in (None, "", "None"):
        info["version"] = version
    info["description"] = DESCRIPTION
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in BENTOML_ERRORS:
        schemas.pop(name, None)
    for schema in schemas.values():
        fix_schema(schema)
    schemas.update(copy.deepcopy(SCHEMAS))
    paths = spec.setdefault("paths", {})
    for name, item in extra_paths().items():
        paths.setdefault(name, item)
    for path, item in paths.items():
        for operation in item.values():
            if isinstance(operation, dict):
                fix_operation(path, operation, schemas)
    spec["tags"] = [dict(tag, name=SERVICE_TAG) if tag.get("name") == "Service APIs" else tag
                    for tag in spec.get("tags", [])]
    return spec
