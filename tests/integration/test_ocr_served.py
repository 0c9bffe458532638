"""Text in photos end to end (issue 28), against the real `bentoml serve` with the tiny CLIP and VQA models and the
real OCR models (rapidocr's PP-OCRv6, ONNX Runtime) reading signs drawn by tests/signs.py with a Debian CJK font.

One library, one server: indexed first without OCR (text search is refused, the default mode is vector); then
`python -m indexer --ocr` runs while the service holds the store (its writes go through the service): every photo
is read but one whose file changed since it was indexed (listed, its batch-mates read), and a second run reads
nothing. Then searches find photos by their words (Chinese, English in any case, mixed), a phrase in double quotes
is an exact filter (with folders, dates and paging, in every mode), results carry the read text and the matched
lines' boxes, /ask gives the read text as its sources' evidence, and the web page boxes the matched lines.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers.browser import launched, open_ui, search, tab, wait_until
from PIL import Image
from playwright.sync_api import expect
from serving import Server, run_indexer, running, service_env
from shapes import draw_shape
from signs import jpeg, png, sign

# name -> the sign's lines (None: the file is made apart below)
SIGNS: dict[str, list[str]] = {
    "signs/golden.jpg": ["金龙面馆", "Golden Dragon"],
    "signs/birthday.png": ["生日快乐 小明"],
    "street/exit_a.jpg": ["EXIT 出口"],
    "street/exit_b.jpg": ["EXIT 出口 North Gate"],  # texts of other lengths: other BM25 scores, so the
    "street/exit_c.jpg": ["Emergency EXIT 出口 2"],  # pages of one below have an order that never ties
    "plain/exit_d.jpg": ["EXIT 出口"],
    "street/fruit.jpg": ["Dragon Fruit 火龙果"],
}
ODD = ["signs/cmyk.jpg", "signs/upside.png", "signs/anim.gif", "signs/deep.png", "plain/circle.png",
       "plain/strip.png", "plain/tiny.png"]
CHANGED = "bad/changed.jpg"  # its bytes change after indexing, size and mtime kept: the OCR stage refuses it
POINTS = len(SIGNS) + len(ODD) + 1


def make_library(library: Path) -> None:
    for seed, (rel, lines) in enumerate(SIGNS.items()):
        path = library / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        angle = {"signs/birthday.png": 12.0, "street/fruit.jpg": -20.0}.get(rel, 0.0)
        image = sign(lines, size=(900, 675), seed=seed, angle=angle)
        path.write_bytes(png(image) if rel.endswith(".png") else jpeg(image))
    for rel in ODD + [CHANGED]:
        (library / rel).parent.mkdir(parents=True, exist_ok=True)
    cmyk = sign(["Night Market 夜市"], size=(800, 600), seed=21).convert("CMYK")
    (library / "signs/cmyk.jpg").write_bytes(jpeg_cmyk(cmyk))
    sign(["Bakery 面包店"], size=(800, 600), seed=22).rotate(180).save(library / "signs/upside.png")
    first = sign(["Taxi 出租车"], size=(640, 480), seed=23)
    first.save(library / "signs/anim.gif", save_all=True, append_images=[Image.new("RGB", (640, 480), "white")],
               duration=100, loop=0)
    deep = sign(["Library 图书馆"], size=(800, 600), seed=24).convert("L")
    Image.frombytes("I;16", deep.size, bytes(b for v in deep.tobytes() for b in (v, v))).save(
        library / "signs/deep.png")
    draw_shape("circle", "red", seed=3).save(library / "plain/circle.png")
    Image.new("RGB", (40_000, 1), (90, 90, 90)).save(library / "plain/strip.png")
    Image.new("RGB", (8, 8), (90, 90, 90)).save(library / "plain/tiny.png")
    (library / CHANGED).write_bytes(jpeg(sign(["Changed 改变"], size=(640, 480), seed=25)))


def jpeg_cmyk(image: Image.Image) -> bytes:
    import io

    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92)
    return out.getvalue()


def tamper(path: Path) -> None:
    """Other bytes, the same size and mtime: the indexer's plan takes the file for unchanged."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[-200:-100] = bytes(100)  # still a JPEG (its last scan bytes zeroed), another content hash
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ocr")
    library = tmp / "photos"
    make_library(library)
    # ASK_CLIP_SUPPORT=0: the tiny CLIP knows coloured shapes only, so it supports no sign for /ask's rule
    env = {**service_env(tmp, tiny_clip_dir, library), "ASK_CLIP_SUPPORT": "0", "OCR_BATCH_SIZE": "4"}
    done = run_indexer(env, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == POINTS and "ocr" not in json.loads(done.stdout)
    tamper(library / CHANGED)
    with running(env, tmp / "server.log") as server:
        before = {"text": post(server, "/text2image_search", json={"text_query": "dragon", "mode": "text"}),
                  "mode": ranked(server, "dragon")[0]}
        first = run_indexer(env, "--ocr", "--json")  # through the running service's write path
        assert first.returncode == 0, first.stderr
        again = run_indexer(env, "--ocr", "--json")
        assert again.returncode == 0, again.stderr
        deadline = time.monotonic() + 30
        while ranked(server, "dragon")[0] != "hybrid" and time.monotonic() < deadline:  # DESCRIBED_TTL_S
            time.sleep(0.5)
        yield {"server": server, "before": before, "first": json.loads(first.stdout),
               "again": json.loads(again.stdout)}


def post(server: Server, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=120, **kwargs)


def ranked(server: Server, query: str, **fields: Any) -> tuple[str, list[dict[str, Any]]]:
    answer = post(server, "/text2image_search", json={"text_query": query, "top_k": 20, "include_image": False,
                                                       **fields})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body["mode"], body["results"]


def names(results: list[dict[str, Any]]) -> list[str]:
    return [r["image"] for r in results]


def test_the_stage_reads_every_photo_once_and_lists_the_one_it_cannot(setup: dict[str, Any]) -> None:
    assert setup["before"]["text"].status_code == 409
    assert setup["before"]["text"].json()["error"]["code"] == "no_descriptions"
    assert setup["before"]["mode"] == "vector"
    first, again = setup["first"], setup["again"]
    ocr = first["ocr"]
    assert (ocr["read"], ocr["failed"], ocr["photos_read"]) == (POINTS - 1, 1, POINTS - 1), ocr
    assert ocr["with_text"] >= len(SIGNS) + 4 and ocr["photos_per_s"] > 0 and ocr["ocr_by"].startswith("rapidocr")
    assert [(path, reason.split(":")[0]) for path, reason in first["failures"]] == [(CHANGED, "cannot read its text")]
    assert "changed since it was indexed" in first["failures"][0][1]
    assert "ocr" in first["seconds"]
    # Nothing new to read: the second run reads no photo (the changed one is tried again, and listed again).
    assert (again["ocr"]["read"], again["ocr"]["photos_read"], again["ocr"]["failed"]) == (0, 0, 1)


def test_text_search_finds_photos_by_their_words(setup: dict[str, Any]) -> None:
    server = setup["server"]
    for query, first in [("面馆", "signs/golden.jpg"), ("golden", "signs/golden.jpg"),
                         ("GOLDEN", "signs/golden.jpg"), ("生日快乐", "signs/birthday.png"),
                         ("火龙果 fruit", "street/fruit.jpg"), ("夜市", "signs/cmyk.jpg"),
                         ("面包店", "signs/upside.png"), ("出租车", "signs/anim.gif"), ("图书馆", "signs/deep.png")]:
        mode, results = ranked(server, query, mode="text")
        assert mode == "text" and results and results[0]["image"] == first, (query, names(results))
    mode, results = ranked(server, "Dragon", mode="text")
    assert set(names(results)) == {"signs/golden.jpg", "street/fruit.jpg"}
    golden = next(r for r in results if r["image"] == "signs/golden.jpg")
    assert golden["read_text"] == "金龙面馆\nGolden Dragon"
    [line] = golden["matched_lines"]
    assert line["text"] == "Golden Dragon" and line["confidence"] > 0.9 and len(line["box"]) == 4
    x0, y0, x1, y1 = line["box"]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
    assert "description" not in golden  # only new fields: nothing else changes for old clients
    # The default mode fuses CLIP with the words once photos were read.
    mode, results = ranked(server, "金龙面馆")
    assert mode == "hybrid" and results[0]["image"] == "signs/golden.jpg"


def test_a_quoted_phrase_is_an_exact_filter(setup: dict[str, Any]) -> None:
    server = setup["server"]
    for mode in ("text", "hybrid", "vector"):
        assert names(ranked(server, '"golden dragon"', mode=mode)[1]) == ["signs/golden.jpg"], mode
        assert ranked(server, '"dragon golden"', mode=mode)[1] == [], mode
    assert names(ranked(server, '"GOLDEN   Dragon" sign', mode="text")[1]) == ["signs/golden.jpg"]
    assert names(ranked(server, '“生日快乐小明”')[1]) == ["signs/birthday.png"]  # spaces in CJK text ignored
    assert names(ranked(server, '"生日 快乐"')[1]) == ["signs/birthday.png"]
    assert ranked(server, '"金龙面馆 Golden"')[1] == []  # a phrase never runs from one line into the next
    assert ranked(server, '"no such words"')[1] == []
    assert names(ranked(server, '"golden dragon" "火龙果"')[1]) == []  # every phrase must be there
    # With filters and paging: the four EXIT signs, three in street/.
    assert set(names(ranked(server, '"exit 出口"')[1])) == {"street/exit_a.jpg", "street/exit_b.jpg",
                                                              "street/exit_c.jpg", "plain/exit_d.jpg"}
    pages = [names(ranked(server, '"EXIT出口"', folder="street", top_k=1, offset=k)[1]) for k in range(4)]
    assert sorted(sum(pages[:3], [])) == ["street/exit_a.jpg", "street/exit_b.jpg", "street/exit_c.jpg"]
    assert pages[3] == []
    assert ranked(server, '"exit 出口"', modified_after="2999-01-01")[1] == []
    matched = ranked(server, '"exit"', folder="plain")[1][0]["matched_lines"]
    assert [m["text"] for m in matched] == ["EXIT 出口"]


def test_bad_text_queries_are_400(setup: dict[str, Any]) -> None:
    server = setup["server"]
    many = " ".join(f'"w{i}"' for i in range(9))
    answer = post(server, "/text2image_search", json={"text_query": many})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_argument"
    assert "quoted phrases" in answer.json()["error"]["message"]
    assert ranked(server, '""')[1] is not None  # empty quotes: no phrase, the text as typed


def test_ask_retrieves_by_the_words_and_carries_the_read_text(setup: dict[str, Any]) -> None:
    server = setup["server"]
    asked = post(server, "/ask", json={"question": "What was the name of the restaurant?", "query": "金龙面馆",
                                       "mode": "text", "top_k": 1})
    assert asked.status_code == 200, asked.text
    [source] = asked.json()["sources"]
    assert source["image"] == "signs/golden.jpg" and source["read_text"] == "金龙面馆\nGolden Dragon"
    assert [m["text"] for m in source["matched_lines"]] == ["金龙面馆"]
    health = httpx.get(f"{server.url}/health", timeout=60).json()
    assert health["read_images"] == POINTS - 1 and list(health["read_by"]) == [setup["first"]["ocr"]["ocr_by"]]
    schema = httpx.get(f"{server.url}/docs.json", timeout=60).json()["components"]["schemas"]
    assert {"read_text", "matched_lines"} <= set(schema["SearchResult"]["properties"])
    assert {"read_text", "matched_lines"} <= set(schema["AskSource"]["properties"])


def test_the_page_boxes_the_matched_lines(setup: dict[str, Any]) -> None:
    server = setup["server"]
    with launched() as browser, tab(browser) as page:
        open_ui(page, server)
        expect(page.locator("#status")).to_contain_text(f"{POINTS - 1} read for text")
        shown = search(page, '"golden dragon"')
        assert shown == ["signs/golden.jpg"]
        card = page.locator("#grid .card").first
        expect(card.locator(".read-text")).to_have_text("“Golden Dragon”")
        wait_until(page, "() => document.querySelector('#grid .read-boxes.placed') !== null")
        box = card.locator(".read-box").first.bounding_box()
        thumb = card.locator("img").bounding_box()
        assert box is not None and thumb is not None and box["width"] > 5 and box["height"] > 2
        assert thumb["x"] <= box["x"] and box["x"] + box["width"] <= thumb["x"] + thumb["width"] + 1
        assert thumb["y"] <= box["y"] and box["y"] + box["height"] <= thumb["y"] + thumb["height"] + 1
        page.screenshot(path=str(Path(__file__).resolve().parents[2] / "test-artifacts" / "ocr-boxes.png"))
