"""Asking the library (/ask, /ask/stream and the chat model "library"): find photos with the search of
/text2image_search, give them to the VQA model numbered, with the question and ASK_INSTRUCTION, and say
which of them the answer names. The search and the VQA requests are passed in (api/searching.py,
api/vqa_requests.py), so fake runners test it without a server."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse

from api import chat_completions, chat_messages, vqa_moments
from api.chat_completions import LIBRARY_MODEL, Answer, Chat
from api.errors import ApiError, bad_request
from api.read_text import read_fields, text_query
from api.search_fields import SearchPage, described_fields, image_urls, search_page
from api.searching import Searching
from api.vqa_requests import VqaRequests
from config import Settings
from core.images import BadImage, load_image
from core.library import Library, NotInLibrary
from runners.ocr import TextQuery
from runners.vlm import ChatRequest
from store.interface import Hit

log = logging.getLogger("service")
DEFAULT_TOP_K = 3
MAX_EVIDENCE_CHARS = 500  # of a photo's read text given to the model beside it
NO_MATCH = ("No photos in the library matched the question, so there is nothing to answer from. "
            "图库中没有与问题相符的照片。")

# "photo 2", "images 1 and 3", "图2", "照片2、3", "第2张", "[2]", "[1, 3]", "#2"
ZH_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
NUMBER = r"(?:\d+|[一二两三四五六七八九十]+)"
NUMBERS = rf"{NUMBER}(?:\s*(?:,|，|、|/|&|\band\b|\bor\b|和|与|及|或)\s*{NUMBER})*"
CITATIONS = (
    re.compile(rf"\b(?:photo(?:graph)?|image|picture|pic|img)s?\s*(?:#|no\.?|number)?\s*({NUMBERS})", re.IGNORECASE),
    re.compile(rf"(?:照片|图片|图像|相片|图)\s*(?:#|第)?\s*({NUMBERS})"),
    re.compile(rf"第\s*({NUMBERS})\s*[张幅个]"),
    re.compile(r"\[\s*(\d+(?:\s*[,，]\s*\d+)*)\s*\]"),
    re.compile(r"#\s*(\d+)"),
)


def number_value(text: str) -> int:
    """An Arabic or Chinese numeral (up to 九十九) as an int."""
    if text.isdigit():
        return int(text)
    tens, _, ones = text.rpartition("十")
    if "十" not in text:
        return ZH_DIGITS.get(text, 0)
    return (ZH_DIGITS.get(tens, 0) if tens else 1) * 10 + ZH_DIGITS.get(ones, 0)


def cited_photos(answer: str, count: int) -> list[int]:
    """The 1-based numbers of the photos (of `count`) that the answer names, ascending."""
    found: set[int] = set()
    for pattern in CITATIONS:
        for match in pattern.finditer(answer):
            found.update(number_value(n) for n in re.findall(NUMBER, match.group(1)))
    return sorted(n for n in found if 1 <= n <= count)


def photo_content(images: list[bytes], question: str, instruction: str,
                  read_texts: list[str] | None = None) -> list[dict[str, Any]]:
    """The user message: the photos in order, each after its label "Photo N:", then the instruction and
    the question in one text part. One photo and no instruction is what /vqa sends: [image, question].
    `read_texts` (/ask: the text the OCR stage read in each photo) goes after a photo's label as evidence the
    model may quote: `Photo 2 (text read in it: "金龙面馆 / Golden Dragon"):`."""
    numbered = len(images) > 1 or bool(instruction)
    parts: list[dict[str, Any]] = []
    for number, data in enumerate(images, 1):
        if numbered:
            read = (read_texts or [])[number - 1:number]
            evidence = " / ".join(line for line in (read[0] if read else "").splitlines() if line.strip())
            quoted = json.dumps(evidence[:MAX_EVIDENCE_CHARS], ensure_ascii=False)
            label = f"Photo {number} (text read in it: {quoted}):" if evidence else f"Photo {number}:"
            parts.append({"type": "text", "text": label})
        parts.append({"type": "image", "image": data})
    parts.append({"type": "text", "text": f"{instruction}\n\n{question}" if instruction else question})
    return parts


def sources_markdown(sources: list[dict[str, Any]], cited: list[int]) -> str:
    """The sources after a chat answer: a numbered list of links to the photos, the cited ones marked."""
    if not sources:
        return ""
    lines = [f"{n}. [{s['image'].replace('[', '(').replace(']', ')')}]({s['image_url']})"
             + (" (cited)" if n in cited else "") for n, s in enumerate(sources, 1)]
    return "\n\nSources:\n" + "\n".join(lines)


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (a library chat asks that; its images are not used)."""
    for message in reversed(messages):
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                return content
            return "\n".join(p["text"] for p in content if p.get("type") == "text")
    raise chat_messages.invalid("a chat with the library needs a user message")


@dataclass(frozen=True)
class RetrievedPhoto:
    """A retrieved photo: what the answer shows as its source, and the bytes the model sees."""

    source: dict[str, Any]
    data: bytes


class Asking:
    def __init__(self, searching: Searching, vqa: VqaRequests, library: Library, settings: Settings) -> None:
        self.searching = searching
        self.vqa = vqa
        self.library = library
        self.settings = settings

    def question(self, question: str, query: str | None) -> tuple[str, str]:
        """The question and the search text (the question unless `query` has text); 503 when VQA is
        disabled, as /vqa; 400 for an empty or over-long one."""
        self.vqa.require_enabled()
        limit = self.settings.max_query_chars
        asked, searched = question.strip(), (query or "").strip() or question.strip()
        if not asked:
            raise bad_request("question is empty")
        for name, text in (("question", asked), ("query", searched)):
            if len(text) > limit:
                raise bad_request(f"{name} is longer than {limit} characters")
        return asked, searched

    async def retrieve(self, query: str, top_k: int, page: SearchPage, mode: str | None = None) -> list[RetrievedPhoto]:
        """The photos to answer from, best first: the search of /text2image_search in the same `mode`, less
        those whose picture does not support the query (`pictured`)."""
        window = self.settings.ask_clip_support
        more = window if mode != "vector" else 0  # room to refill what the rule below leaves out
        parsed = text_query(query)
        hits, ran = await self.searching.text_hits(parsed, top_k + more, page, mode)
        if ran != "vector":
            hits = await self.pictured(parsed.words, top_k, page, hits)
        hits = hits[:top_k]
        photos: list[RetrievedPhoto] = await self.searching.off_loop(self.readable, hits, parsed)
        return photos

    async def pictured(self, words: str, top_k: int, page: SearchPage, hits: list[Hit]) -> list[Hit]:
        """The rule against answers from photos that only *say* the query (issue 22 D11): words, in a
        description or drawn on the photo itself, may lift a photo into the answer's sources, but only one
        that CLIP's image-text ranking alone also puts among the ASK_CLIP_SUPPORT best photos for the query
        (same filters, from the first page); any other is not given to the model, so it is never cited, and
        the next supported photo of the ranking takes its place. `words`: the query without its quote marks, as
        the search encoded it."""
        window = self.settings.ask_clip_support
        if not window or not hits:
            return hits
        vector = await self.searching.text_vector(words)
        store = self.searching.store
        support: list[Hit] = await store.run(store.store.search, vector, page.offset + max(window, top_k),
                                             page.where, 0, False)
        supported = {hit.id for hit in support}
        kept = [hit for hit in hits if hit.id in supported]
        for hit in hits:
            if hit.id not in supported:
                log.info("ask: leaving out %r: its words match the query but CLIP does not rank its picture "
                         "among the %d best (ASK_CLIP_SUPPORT)", hit.payload.get("path"), window)
        return kept

    def readable(self, hits: list[Hit], query: TextQuery | None = None) -> list[RetrievedPhoto]:
        """The hits whose file is still a readable image of the library; the others (deleted or changed
        since indexing) are left out, so the numbers the model sees are the sources' numbers. Each source
        carries the text read in its photo and the lines `query` matches (api/read_text.py)."""
        photos = []
        for hit in hits:
            rel = str(hit.payload.get("path", ""))
            if hit.payload.get("media") == "video":  # a moment: its frame, and a source naming clip and time
                moment = vqa_moments.moment_source(self.library, rel, hit.payload)
                if moment is not None:
                    photos.append(RetrievedPhoto({"image": rel, "score": round(float(hit.score), 6), **moment[0]},
                                                 moment[1]))
                continue
            try:
                data = self.library.read_bytes(rel)
                load_image(data)
            except (NotInLibrary, BadImage) as exc:
                log.warning("ask: skipping %r, no longer a library image (%s)", rel, exc)
                continue
            source = {"image": rel, "score": round(float(hit.score), 6), **described_fields(hit.payload),
                      **image_urls(rel), **read_fields(hit.payload, query)}
            photos.append(RetrievedPhoto(source, data))
        return photos

    def chat_request(self, photos: list[RetrievedPhoto], question: str, **sampling: Any) -> ChatRequest:
        content = photo_content([p.data for p in photos], question, self.settings.ask_instruction,
                                [str(p.source.get("read_text", "")) for p in photos])
        return ChatRequest(messages=[{"role": "user", "content": content}], deadline=self.vqa.deadline(), **sampling)

    async def ask(self, question: str, query: str, top_k: int, page: SearchPage,
                  mode: str | None = None) -> dict[str, Any]:
        """POST /ask: the answer, its sources and the numbers of those it cites."""
        photos = await self.retrieve(query, top_k, page, mode)
        answer = NO_MATCH
        if photos:
            answer = (await self.vqa.generate(self.chat_request(photos, question), "/ask"))["text"]
        sources = [p.source for p in photos]
        return {"status": "success", "question": question, "answer": answer, "sources": sources,
                "cited": cited_photos(answer, len(sources))}

    async def ask_stream(self, question: str, query: str, top_k: int, page: SearchPage,
                         mode: str | None = None) -> Response:
        """POST /ask/stream: refusals (search errors, a full VQA queue) answer before the 200; then the
        events `sources`, `delta`... and `done` (or `error` if the model fails once started)."""
        photos = await self.retrieve(query, top_k, page, mode)
        if photos:
            self.vqa.check_room()
        return StreamingResponse(self.events(question, photos), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def events(self, question: str, photos: list[RetrievedPhoto]) -> AsyncIterator[str]:
        sources = [p.source for p in photos]
        yield sse("sources", {"sources": sources})
        answer = ""
        async for piece in self.answer_pieces(question, photos):
            if isinstance(piece, ApiError):
                yield sse("error", {"code": piece.code, "message": piece.message})
                return
            answer += piece
            yield sse("delta", {"text": piece})
        yield sse("done", {"answer": answer, "cited": cited_photos(answer, len(sources))})

    async def answer_pieces(self, question: str, photos: list[RetrievedPhoto],
                            **sampling: Any) -> AsyncIterator[str | ApiError]:
        """The answer as it is generated (NO_MATCH without photos); a refusal of the model as its ApiError."""
        if not photos:
            yield NO_MATCH
            return
        try:
            pieces = await self.vqa.stream(self.chat_request(photos, question, **sampling))
        except ApiError as exc:
            yield exc
            return
        try:
            async for piece in pieces:
                if piece:
                    yield piece
        finally:
            with anyio.CancelScope(shield=True):  # a client that left: cancel the runner's generation
                await pieces.aclose()  # type: ignore[attr-defined]

    async def chat_completion(self, raw: bytes, path: str) -> Response:
        """/v1/chat/completions with model "library" (the route: api/chat_completions.py)."""
        return await chat_completions.complete(raw, path, self.vqa, self)

    async def chat_answer(self, chat: Chat, path: str) -> Answer:
        """A checked chat with model "library": the last user message asked of the library; the sources
        follow the answer as markdown links."""
        question, query = self.question(last_user_text(chat.messages), None)
        top_k = min(DEFAULT_TOP_K, self.settings.ask_max_images)
        photos = await self.retrieve(query, top_k, search_page(top_k, 0, False, self.settings.search_max_window))
        sources, sampling = [p.source for p in photos], chat.sampling()

        def trailer(answer: str) -> str:
            return sources_markdown(sources, cited_photos(answer, len(sources)))

        if chat.stream:
            if photos:
                self.vqa.check_room()
            return Answer(LIBRARY_MODEL, pieces=self.answer_pieces(question, photos, **sampling), trailer=trailer)
        result: dict[str, Any] = {"text": NO_MATCH, "prompt_tokens": 0, "completion_tokens": 0, "finish_reason": "stop"}
        if photos:
            result = await self.vqa.generate(self.chat_request(photos, question, **sampling), path)
        return Answer(LIBRARY_MODEL, result=result, trailer=trailer)
