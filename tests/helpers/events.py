"""Server-sent events as tests read them: the (event, data) pairs of a text/event-stream body."""

from __future__ import annotations

import json
from typing import Any


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        found.append((lines["event"], json.loads(lines["data"])))
    return found
