"""GET /images/{library-relative path}?size=N[&format=jpeg|webp]: cached thumbnails and original files.

A thumbnail's longer side is at most N pixels (default 256, 1..2048); size=0 serves the file itself.
Only content of an allowed image type is served, original or thumbnail: PIL must identify it from its
header as JPEG, PNG, WEBP, GIF or BMP, and the original goes out with the type of its content, not of
its name (a .png holding a JPEG is image/jpeg). HTML, SVG, text or any other content under an image
name answers the same 404 as a missing file. Thumbnails are made once per file version (path, size, format, file
mtime and byte size) into THUMBNAIL_CACHE, written atomically (a temporary file renamed into place),
and answered with ETag / Last-Modified / Cache-Control; a matching If-None-Match or If-Modified-Since
gets 304. The path is the file's raw name, percent-encoded (a name that is not UTF-8 too: see
core/library.py). Only library files (core/library.py, the rule the indexer uses) are served: anything else,
`..`, absolute paths, hidden files, symlinks leading out or to hidden files, answers 404 as a missing file does.

Each answer comes from one descriptor (core/library.py Library.open: no link followed, a regular file,
checked on that descriptor), so a file swapped after the check is never served. HEAD reads no image data
and renders nothing; a single byte `Range` answers 206 with Content-Range (416 past the end). A cached
thumbnail of 0 bytes is made again; a cache that cannot be written warns once (docs/security.md, D12).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote_to_bytes

from PIL import Image
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api import video_images
from api.errors import ApiError, bad_request, handles_errors, not_found
from api.http.logs import escape_controls
from config import get_settings
from core.files import write_atomically
from core.images import BadImage, load_image
from core.library import Library, LibraryFile, NotInLibrary, OpenedFile, is_video_name, library_name
from core.videos import NO_SIZE_LIMIT, BadVideo

log = logging.getLogger("service")

PREFIX = b"/images/"  # where service.py mounts serve_image


class AnyPath(PathConvertor):
    """Starlette's `path` convertor (".*") stops at a newline (Starlette #1058, closed unfixed), so a
    file named "new\nline.jpg" got a plain 404. Registered under the name "path" at import, before
    service.py builds its routes and BentoML mounts them at "/" (itself a `{path:path}` route)."""

    regex = "[\\s\\S]*"


register_url_convertor("path", AnyPath())
DEFAULT_SIZE = 256
MAX_SIZE = 2048
FORMATS = {"jpeg": ("JPEG", "image/jpeg", ".jpg"), "jpg": ("JPEG", "image/jpeg", ".jpg"),
           "webp": ("WEBP", "image/webp", ".webp")}
# PIL's format name -> the media type served. MPO is a JPEG with extra frames (many cameras write it).
ALLOWED_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
                 "GIF": "image/gif", "BMP": "image/bmp"}
PIL_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")  # the plugins tried (MPO comes through JPEG's)
CACHE_CONTROL = "private, max-age=3600"
QUALITY = 85


def etag(found: LibraryFile, *parts: object) -> str:
    """A strong ETag for this version of the file (and the given rendering)."""
    key = "\0".join(str(p) for p in (found.rel, found.mtime_ns, found.size, *parts))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def cache_headers(found: LibraryFile, tag: str) -> dict[str, str]:
    return {"ETag": f'"{tag[:32]}"', "Last-Modified": formatdate(found.mtime_ns / 1e9, usegmt=True),
            "Cache-Control": CACHE_CONTROL}


class ImageFiles:
    """Serves the library's images and their thumbnails (one instance per API process)."""

    def __init__(self, library: Path, cache: Path, workers: int = 2) -> None:
        self.library = Library(library)
        self.cache = cache
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="thumbnail")
        self.cache_failing = False  # the last thumbnail could not be cached (warned once)

    async def respond(self, request: Request) -> Response:
        size, fmt = parse_size(request.query_params.get("size")), parse_format(request.query_params.get("format"))
        raw = requested_name(request)
        try:
            rel = library_name(raw)
        except NotInLibrary as exc:
            raise missing(raw) from exc
        loop = asyncio.get_running_loop()
        try:  # the whole answer comes from one descriptor, opened and read on the thumbnail threads
            return await loop.run_in_executor(self.pool, self.answer, request, rel, size, fmt)
        except (NotInLibrary, OSError, BadImage, BadVideo) as exc:  # refused, unreadable, or not an allowed image
            log.info("not serving image %s: %s", escape_controls(request.url.path), exc)
            raise missing(raw) from exc

    def answer(self, request: Request, rel: str, size: int, fmt: str) -> Response:
        """The response for library file `rel`, read only through the descriptor Library.open gives."""
        if is_video_name(rel):
            return self.video_answer(request, rel, size, fmt)
        with self.library.open(rel) as opened:
            found = opened.found
            tag = etag(found, "original") if size == 0 else etag(found, size, fmt)
            headers = cache_headers(found, tag)
            # checked first, so that not even a 304 tells a caller that a non-image file exists
            media_type = file_type(opened)
            if not_modified(request, headers["ETag"], found.mtime_ns):
                return Response(status_code=304, headers=headers)
            head = request.method == "HEAD"
            if size == 0:  # the original: a HEAD or a range reads only what it sends
                span = byte_range(request, headers["ETag"], found.size)
                start, end = span or (0, found.size)
                body = b"" if head else opened.read(start, end - start)
                return sized_response(body, media_type, headers, span, found.size, end - start)
            media_type = FORMATS[fmt][1]
            cached = self.cached(tag, fmt)
            if cached is None and head:  # HEAD never renders: no length is promised
                response = Response(b"", media_type=media_type, headers={**headers, "Accept-Ranges": "bytes"})
                del response.headers["content-length"]
                return response
            if cached is None:
                cached = self.thumbnail(opened, size, fmt, tag)
        span = byte_range(request, headers["ETag"], len(cached))
        start, end = span or (0, len(cached))
        return sized_response(b"" if head else cached[start:end], media_type, headers, span, len(cached), end - start)

    def video_answer(self, request: Request, rel: str, size: int, fmt: str) -> Response:
        """A video's frame at `t`, or the file itself (api/video_images.py)."""
        t = video_images.parse_t(request.query_params.get("t"))
        with self.library.open(rel, NO_SIZE_LIMIT) as opened:
            found = opened.found
            media_type = video_images.video_type(opened)  # checked first, as for photos
            if t is None and (size == 0 or "size" not in request.query_params):
                return self.video_file(request, opened, media_type)
            tag = etag(found, "frame", t or 0.0, size, fmt)
            headers = cache_headers(found, tag)
            if not_modified(request, headers["ETag"], found.mtime_ns):
                return Response(status_code=304, headers=headers)
            body = self.cached(tag, fmt)
            if body is None:
                body = video_images.render_frame(opened, t or 0.0, size, FORMATS[fmt][0], QUALITY)
                self.store_cached(tag, fmt, body)
        head = request.method == "HEAD"
        return sized_response(b"" if head else body, FORMATS[fmt][1], headers, None, len(body), len(body))

    def video_file(self, request: Request, opened: OpenedFile, media_type: str) -> Response:
        found = opened.found
        headers = cache_headers(found, etag(found, "original"))
        if not_modified(request, headers["ETag"], found.mtime_ns):
            return Response(status_code=304, headers=headers)
        span = byte_range(request, headers["ETag"], found.size)
        start, end = span or (0, found.size)
        headers.update({"Accept-Ranges": "bytes", "Content-Length": str(end - start)})
        if span is not None:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{found.size}"
        body = iter(()) if request.method == "HEAD" else video_images.FilePieces(opened, start, end)
        return StreamingResponse(body, status_code=206 if span else 200, media_type=media_type, headers=headers)

    def cache_path(self, key: str, fmt: str) -> Path:
        return self.cache / key[:2] / f"{key}{FORMATS[fmt][2]}"

    def cached(self, key: str, fmt: str) -> bytes | None:
        """The cached thumbnail, or None: missing, unreadable, or empty (a write cut short, e.g. by a
        crash before the data reached the disk, left 0 bytes: made again)."""
        try:
            return self.cache_path(key, fmt).read_bytes() or None
        except OSError:
            return None

    def thumbnail(self, opened: OpenedFile, size: int, fmt: str, key: str) -> bytes:
        """Render the thumbnail from the opened file and cache it. Runs on the thumbnail threads. A cache
        that cannot be written (full, read-only) still serves it, with one warning until it works again."""
        body = render(opened.read(), size, FORMATS[fmt][0])
        self.store_cached(key, fmt, body)
        return body

    def store_cached(self, key: str, fmt: str, body: bytes) -> None:
        """Write a rendered thumbnail into the cache; one warning while the cache cannot be written."""
        try:
            write_atomically(self.cache_path(key, fmt), body)
        except OSError as exc:
            if not self.cache_failing:
                log.warning("cannot cache thumbnails in %s (THUMBNAIL_CACHE): %s; serving them uncached, "
                            "this is said once until the cache works again", self.cache, exc)
            self.cache_failing = True
        else:
            if self.cache_failing:
                log.warning("thumbnail cache %s (THUMBNAIL_CACHE) is writable again", self.cache)
            self.cache_failing = False


def sized_response(body: bytes, media_type: str, headers: dict[str, str], span: tuple[int, int] | None,
                   total: int, length: int) -> Response:
    """200 with the whole body, or 206 with Content-Range for `span`; the Content-Length is the length of
    what a GET sends, for a HEAD too."""
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(length)}
    if span is None:
        return Response(body, media_type=media_type, headers=headers)
    headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{total}"
    return Response(body, status_code=206, media_type=media_type, headers=headers)


def byte_range(request: Request, etag: str, total: int) -> tuple[int, int] | None:
    """The one byte range [start, end) a `Range: bytes=...` header asks for, or None for the whole body:
    no Range, an If-Range that does not match the ETag, several ranges or a malformed one (RFC 9110 lets a
    server ignore those). 416 for a range that starts past the end (or an empty suffix)."""
    value = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if value is None or (if_range is not None and if_range.strip() != etag):
        return None
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or (first and not first.isdigit()) \
            or (last and not last.isdigit()):
        return None
    if not first:  # the last N bytes
        start, end = max(0, total - int(last)), total
        if int(last) == 0 or total == 0:
            raise unsatisfiable(total)
    else:
        start, end = int(first), total if not last else min(total, int(last) + 1)
        if last and int(last) < start:
            return None  # malformed: ignored
        if start >= total:
            raise unsatisfiable(total)
    return start, end


def unsatisfiable(total: int) -> ApiError:
    return ApiError(416, "range_not_satisfiable", f"the range asked for is not within the {total} bytes sent",
                    {"Content-Range": f"bytes */{total}"})


def requested_name(request: Request) -> bytes:
    """The path after /images/ as raw bytes. Taken from the undecoded request path: the server
    decodes %XX escapes as UTF-8, turning the bytes of a name that is not UTF-8 into U+FFFD."""
    raw_path = request.scope.get("raw_path")
    if isinstance(raw_path, bytes) and PREFIX in raw_path:
        return unquote_to_bytes(raw_path.split(PREFIX, 1)[1])
    return os.fsencode(request.path_params.get("path", ""))


def missing(raw: bytes) -> ApiError:
    """The one 404 of /images, for a missing file and for everything not served alike."""
    return not_found(f"{raw.decode('utf-8', 'backslashreplace')!r} is not an image in the library")


def content_type(content: bytes | BinaryIO) -> str | None:
    """The media type of an allowed image format, read from the content's header (no pixels are
    decoded); None for anything else (HTML, SVG, text, TIFF, an unreadable or oversized header)."""
    source = io.BytesIO(content) if isinstance(content, bytes) else content
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=PIL_FORMATS) as image:
                return ALLOWED_TYPES.get(image.format or "")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):  # UnidentifiedImageError is an OSError
        return None


def file_type(opened: OpenedFile) -> str:
    """content_type() of an opened file, reading only its header; BadImage when it is not an allowed image."""
    media_type = content_type(opened.stream())  # type: ignore[arg-type]  # read/seek/tell is all PIL uses
    if media_type is None:
        raise BadImage("its content is not an allowed image type")
    return media_type


def render(data: bytes, size: int, pil_format: str) -> bytes:
    """Decode (JPEG in draft mode, at the smallest scale still >= size), turn upright, shrink; BadImage
    if it does not decode."""
    image, _, _ = load_image(data, draft_size=size)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format=pil_format, quality=QUALITY)
    return out.getvalue()


def parse_size(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_SIZE
    try:
        size = int(value)
    except ValueError:
        raise bad_request(f"size: {value!r} is not a whole number of pixels") from None
    if not 0 <= size <= MAX_SIZE:
        raise bad_request(f"size: must be 0 (the original file) or 1 to {MAX_SIZE} pixels, got {size}")
    return size


def parse_format(value: str | None) -> str:
    fmt = (value or "jpeg").lower()
    if fmt not in FORMATS:
        raise bad_request(f"format: {value!r} is not jpeg or webp")
    return fmt


def not_modified(request: Request, etag: str, mtime_ns: int) -> bool:
    """If-None-Match wins over If-Modified-Since (RFC 9110)."""
    match = request.headers.get("if-none-match")
    if match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in match.split(",")}
        return "*" in tags or etag in tags
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        moment = parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False
    if moment.tzinfo is None:
        return False
    return mtime_ns // 1_000_000_000 <= int(moment.timestamp())


@lru_cache(maxsize=1)
def image_files() -> ImageFiles:
    settings = get_settings()
    return ImageFiles(settings.image_library, settings.thumbnail_cache)


@handles_errors
async def serve_image(request: Request) -> Response:
    """The Starlette endpoint mounted at /images/{path:path} in service.py."""
    return await image_files().respond(request)
