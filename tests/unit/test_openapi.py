"""api/http/openapi_doc.py without a server: fix_spec and fix_schema repair what BentoML 1.4.40 generates (the
served /docs.json is validated in tests/integration/test_contract.py)."""

from __future__ import annotations

import json

from openapi_spec_validator import validate

from api.http.openapi_doc import fix_spec


def test_fix_spec_repairs_bentomls_output() -> None:
    """fix_spec on a small document with each problem BentoML 1.4.40 has (a pure function)."""
    api_input = {"type": "object", "properties": {
        "upload": {"type": "file", "format": "binary", "default": None},
        "name": {"anyOf": [{"type": "string", "maxLength": 9}, {"type": "null"}], "default": None},
        "n": {"type": "integer", "exclusiveMinimum": 0, "examples": [3]},
        "either": {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}}}
    bentoml_spec = {
        "openapi": "3.0.2", "info": {"title": "t", "version": "None"},
        "paths": {"/x": {"post": {
            "x-bentoml-name": "x", "operationId": "svc__x", "tags": ["Service APIs"],
            "requestBody": {"content": {"multipart/form-data": {"schema": {"title": "Input", **api_input}}}},
            "responses": {200: {"description": "ok"}, 400: {"description": "bad", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/InvalidArgument"}}}}}}}},
        "components": {"schemas": {"x__Input": api_input, "InvalidArgument": {"type": "object"}}},
    }
    before = json.dumps(bentoml_spec, sort_keys=True)
    fixed = fix_spec(bentoml_spec, version="1.2.3")
    assert json.dumps(bentoml_spec, sort_keys=True) == before  # the input is left alone
    validate(fixed)
    assert fixed["info"]["version"] == "1.2.3"
    props = fixed["components"]["schemas"]["x__Input"]["properties"]
    assert props["upload"] == {"type": "string", "format": "binary", "default": None, "nullable": True}
    assert props["name"] == {"type": "string", "maxLength": 9, "default": None, "nullable": True}
    assert props["n"] == {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "example": 3}
    assert props["either"] == {"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": True}
    operation = fixed["paths"]["/x"]["post"]
    assert operation["operationId"] == "x" and operation["tags"] == ["service"]
    assert operation["requestBody"]["content"]["multipart/form-data"]["schema"] == {
        "$ref": "#/components/schemas/x__Input"}
    assert set(operation["responses"]) == {"200", "400", "401", "413", "415", "429", "500", "504"}
    assert "InvalidArgument" not in fixed["components"]["schemas"]
    assert "/health" in fixed["paths"] and "/v1/chat/completions" in fixed["paths"]


def test_openapi_fix_turns_a_literal_into_an_enum() -> None:
    from api.http.openapi_doc import fix_schema

    schema = {"anyOf": [{"type": "boolean"}, {"const": "thumbnail", "type": "string"}], "default": True}
    fix_schema(schema)
    assert schema == {"anyOf": [{"type": "boolean"}, {"enum": ["thumbnail"], "type": "string"}], "default": True}
