"""JSON bodies and JSON-decoded form values: a bound on nesting, so a deep body answers 400, not 500.

Python's json module recurses once per nesting level and raises RecursionError (not ValueError) past
about a thousand levels; pydantic's parser, which BentoML uses for JSON bodies, refuses past about 200
levels with "recursion limit exceeded". MAX_JSON_DEPTH is that same bound, checked before json.loads
wherever we, or BentoML's form parsing, would call it.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from api.errors import ApiError, bad_request

MAX_JSON_DEPTH = 200
TOO_DEEP = f"nested too deeply (at most {MAX_JSON_DEPTH} levels of arrays and objects)"

ESCAPE = re.compile(rb"\\.", re.DOTALL)  # removed first, so that a string is simply "..." below
STRING = re.compile(rb'"[^"]*"')
NOT_BRACKET = re.compile(rb"[^\[\]{}]")
STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def too_deep(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays/objects more than `limit` deep (brackets inside strings do
    not count). Linear in the size; most bodies return at the first line (base64 holds no brackets)."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = NOT_BRACKET.sub(b"", STRING.sub(b"", ESCAPE.sub(b"", data)))
    return max(accumulate(STEP[b] for b in brackets), default=0) > limit


def invalid_json(detail: str) -> ApiError:
    return bad_request(f"the body is not valid JSON: {detail}", code="invalid_json")


def parse_json(body: bytes) -> Any:
    """A request body as JSON; 400 invalid_json when it is not JSON or nests too deeply."""
    if too_deep(body):
        raise invalid_json(TOO_DEEP)
    try:
        return json.loads(body)
    except RecursionError:  # not expected under MAX_JSON_DEPTH; still never a 500
        raise invalid_json(TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError):
        raise bad_request("the body is not valid JSON", code="invalid_json") from None
