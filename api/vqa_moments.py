"""A video's moment for the VQA model: /vqa with the `image_id` of a library video and `t` shows the model
frames around `t`; /ask gives it the frame of each video moment it found, and its source names the clip and
the time. Frames are read by seeking (core/videos.py), JPEG-encoded like an uploaded photo, and travel to the
runner as images (runners/vlm/protocol.py)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from api.errors import bad_request
from api.search_fields import image_urls, media_fields
from core.library import Library, NotInLibrary
from core.videos import NO_SIZE_LIMIT, BadVideo, read_frames

FRAMES = 3  # frames the model sees around `t`
SPAN_S = 1.0  # they are spread over [t - SPAN_S, t + SPAN_S]
LONG_SIDE = 1024  # their longer side at most (VQA_MAX_PIXELS bounds what the model takes anyway)


def around(t: float, count: int = FRAMES, span: float = SPAN_S) -> list[float]:
    """`count` times spread over [t - span, t + span] (from 0), in order."""
    start = max(0.0, t - span)
    step = (t + span - start) / max(count - 1, 1)
    return [start + i * step for i in range(count)]


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def frames_near(library: Library, rel: str, times: list[float]) -> list[bytes]:
    """The JPEG frames of library video `rel` at `times`; NotInLibrary or BadVideo when it has none."""
    with library.open(rel, NO_SIZE_LIMIT) as opened:
        frames, _ = read_frames(opened.stream(), times, long_side=LONG_SIDE)  # type: ignore[arg-type]
    return [jpeg(image) for _, image in frames]


def moment_parts(library: Library, rel: str, t: float) -> list[dict[str, Any]]:
    """The message parts of a question about the moment at `t` of library video `rel`: a line saying what the
    pictures are, then the frames around `t`. 400 when `t` is past the clip's end or it does not decode."""
    try:
        frames = frames_near(library, rel, around(t))
    except BadVideo as exc:
        raise bad_request(f"t: no frame of {rel!r} around {t:g} s ({exc})") from exc
    intro = {"type": "text", "text": f"These are frames of a video around {t:g} seconds, in order."}
    return [intro, *({"type": "image", "image": data} for data in frames)]


def moment_source(library: Library, rel: str, payload: dict[str, Any]) -> tuple[dict[str, Any], bytes] | None:
    """/ask: what a video moment's source adds (media, t, start, end, its frame's URLs) and the frame at its
    `t`; None when the clip no longer decodes (left out of the sources, as a deleted photo is)."""
    fields = media_fields(payload)
    fields.pop("moments", None)
    try:
        frames = frames_near(library, rel, [float(fields["t"])])
    except (NotInLibrary, BadVideo):
        return None
    return {**fields, **image_urls(rel, fields["t"])}, frames[0]


def check_t(t: float | None, image_id: str | None, is_video: bool) -> None:
    """`t` only with the image_id of a video, and a video's image_id only with `t`."""
    if t is not None and not is_video:
        raise bad_request("t: only with the image_id of a video in the library")
    if t is None and is_video:
        raise bad_request(f"image_id {image_id!r} is a video: send t, the moment to ask about (seconds)")
