"""Search request fields shared by /text2image_search and /image2image_search: filters, paging,
dedup and how results carry their image (base64, thumbnail URLs or nothing)."""

from __future__ import annotations

import datetime as dt
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import BeforeValidator, Field

from api.errors import bad_request
from core.library import NotInLibrary, raw_name, url_path
from store.interface import Hit, SearchFilter


def as_text(value: Any) -> Any:
    """BentoML JSON-decodes form values, so a query like `2024` or `true` arrives as a number or a
    bool: take it back as the text the user typed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (int, float)) else value


OptionalText = Annotated[str | None, BeforeValidator(as_text)]

IncludeImage = Annotated[bool | Literal["thumbnail"], Field(
    description='true: each file base64-encoded; false: no image; "thumbnail": thumbnail_url and image_url')]
Folder = Annotated[OptionalText, Field(description="library-relative folder: only files in it or its subfolders")]
ModifiedAfter = Annotated[OptionalText, Field(
    description="only files modified at or after: ISO 8601 date or datetime (UTC unless it has an offset) "
                "or unix seconds")]
ModifiedBefore = Annotated[OptionalText, Field(
    description="only files modified at or before (a date includes that whole day); as modified_after")]
MinWidth = Annotated[int | None, Field(ge=0, description="only images at least this wide (pixels)")]
MinHeight = Annotated[int | None, Field(ge=0, description="only images at least this high (pixels)")]
MinBytes = Annotated[int | None, Field(ge=0, description="only files of at least this many bytes")]
Media = Annotated[Literal["image", "video"] | None, Field(
    description='only photos ("image") or only the moments of videos ("video"); unset: both')]
Offset = Annotated[int, Field(ge=0, description="skip this many results (paging)")]
Dedup = Annotated[bool, Field(description="collapse files with identical content, keeping the best")]
SearchMode = Annotated[Literal["vector", "text", "hybrid"] | None, Field(
    description='how results are ranked: "vector" = CLIP similarity (score is the cosine); "text" = BM25 over '
                'the photos\' descriptions, visible text and tags, and the text read in them (`python -m indexer '
                '--ocr`); "hybrid" = both, fused by Reciprocal Rank Fusion (score is the fused rank score). Default: '
                '"hybrid" when the index holds descriptions (`python -m indexer --describe`) or read text, else '
                '"vector". The answer\'s `mode` says which ran. In every mode, a phrase in double quotes in the query '
                'must be in a photo\'s read text')]

# The filter and paging fields every search endpoint takes: (name, type, default). Adding a filter to the
# API is one row here (and its SearchFilter field in store/interface.py, its parsing in search_page).
SEARCH_FIELDS: tuple[tuple[str, Any, Any], ...] = (
    ("folder", Folder, None), ("modified_after", ModifiedAfter, None), ("modified_before", ModifiedBefore, None),
    ("min_width", MinWidth, None), ("min_height", MinHeight, None), ("min_bytes", MinBytes, None),
    ("offset", Offset, 0), ("dedup", Dedup, False), ("media", Media, None))


def with_search_fields(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Give an endpoint written with `**fields` the SEARCH_FIELDS as named parameters in its signature.

    BentoML builds each endpoint's form/JSON schema (and /docs.json) from `inspect.signature`, and calls it
    with one keyword argument per field, which land in `**fields`: so the fields are declared once for
    every search endpoint, and the request shape stays flat (a pydantic model argument would nest it)."""
    signature = inspect.signature(endpoint)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind)
             for name, kind, default in SEARCH_FIELDS]
    endpoint.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
    return endpoint

THUMBNAIL_SIZE = 256


@dataclass(frozen=True)
class SearchPage:
    where: SearchFilter
    offset: int
    dedup: bool


def search_page(top_k: int, offset: int, dedup: bool, max_window: int, *, folder: str | None = None,
                modified_after: str | None = None, modified_before: str | None = None, min_width: int | None = None,
                min_height: int | None = None, min_bytes: int | None = None, media: str | None = None,
                exclude: tuple[str, ...] = ()) -> SearchPage:
    """Validate the filter and paging fields (ApiError 400 with a message naming the field)."""
    if offset + top_k > max_window:
        raise bad_request(f"offset + top_k is {offset + top_k}, more than {max_window} (SEARCH_MAX_WINDOW): "
                          "narrow the search with filters instead of paging this deep")
    after = parse_time("modified_after", modified_after)
    before = parse_time("modified_before", modified_before, end_of_day=True)
    if after is not None and before is not None and after > before:
        raise bad_request("modified_after is later than modified_before")
    where = SearchFilter(folder=library_folder(folder), modified_after=after, modified_before=before,
                         min_width=min_width or None, min_height=min_height or None, min_bytes=min_bytes or None,
                         media=media or None, exclude_ids=exclude)
    return SearchPage(where, offset, dedup)


def parse_time(name: str, value: str | None, end_of_day: bool = False) -> float | None:
    """Unix seconds from unix seconds, an ISO 8601 date (its start, or with `end_of_day` its last
    microsecond) or an ISO 8601 datetime (UTC when it has no offset)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise bad_request(f"{name}: {value!r} is not a finite number of seconds")
        return seconds
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            if end_of_day:
                moment += dt.timedelta(days=1, microseconds=-1)
        else:
            moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise bad_request(f"{name}: {value!r} is not an ISO 8601 date (2024-05-31), datetime "
                          "(2024-05-31T18:30:00+08:00) or unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def library_folder(folder: str | None) -> str | None:
    """A folder as the indexer records it ("a/b"); None for the whole library."""
    if folder is None:
        return None
    text = folder.strip().strip("/")
    if "\0" in text or ("\\" in text and not is_library_text(text)):  # \xNN escapes name bytes, as in results
        raise bad_request(f"folder: {folder!r} is not a library folder (use / between folder names)")
    parts = [part for part in PurePosixPath(text).parts if part != "."]
    if ".." in parts:
        raise bad_request(f"folder: {folder!r} leaves the image library")
    return "/".join(parts) or None


def is_library_text(text: str) -> bool:
    try:
        raw_name(text)
    except NotInLibrary:
        return False
    return True


def image_urls(rel_path: str, t: float | None = None) -> dict[str, str]:
    """The /images URLs of a library name: the file's raw bytes percent-encoded, so a name that is
    not UTF-8 (`\\xNN` escapes in its library name) reaches its file too. A video's moment at `t`: its frame
    (thumbnail and full size) and `video_url`, the clip itself (a browser plays it from `t` with `#t=`)."""
    try:
        quoted = url_path(rel_path)
    except NotInLibrary:  # never a name the indexer stored; its URLs answer 404
        quoted = quote(rel_path, safe="/", errors="backslashreplace")
    if t is not None:
        return {"thumbnail_url": f"/images/{quoted}?t={t:g}&size={THUMBNAIL_SIZE}",
                "image_url": f"/images/{quoted}?t={t:g}&size=0", "video_url": f"/images/{quoted}"}
    return {"thumbnail_url": f"/images/{quoted}?size={THUMBNAIL_SIZE}", "image_url": f"/images/{quoted}?size=0"}


def described_fields(payload: dict[str, Any]) -> dict[str, str]:
    """The VLM-written `description` and `visible_text` of a photo, where the indexer wrote them."""
    return {key: str(payload[key]) for key in ("description", "visible_text") if payload.get(key)}


def result_item(hit: Hit, include_image: bool | str, read_base64: Any) -> dict[str, Any]:
    """One search result: path, score, description and visible text when the photo has them and, as
    asked, the image's bytes or its URLs."""
    path = str(hit.payload.get("path", ""))
    item: dict[str, Any] = {"image": path, "score": round(float(hit.score), 6)}
    item.update(described_fields(hit.payload))
    media = media_fields(hit.payload)
    if include_image == "thumbnail":
        item.update(image_urls(path, media.get("t")))
    elif include_image:  # a video moment: its frame (an old client shows a picture, not a clip)
        item["image_base64"] = read_base64(path, media["t"]) if "t" in media else read_base64(path)
    item.update(media)  # after the fields results always had, in their order
    return item


def moment(payload: dict[str, Any]) -> dict[str, float]:
    """A video moment's times in seconds: `t` (its best frame), `start`, `end`."""
    return {key: float(payload.get(key) or 0.0) for key in ("t", "start", "end")}


def media_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """`media` ("image" or "video"), and for a video its moment and its other matching moments, best first
    (api/moment_hits.py folds them into the clip's best hit)."""
    if payload.get("media") != "video":
        return {"media": "image"}
    others = [{**moment(p), "score": round(float(score), 6)} for score, p in payload.get("moments", [])]
    return {"media": "video", **moment(payload), "moments": others}
