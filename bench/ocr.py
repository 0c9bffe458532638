"""Text in photos (issue 28): what the OCR stage reads and how fast, ONNX Runtime vs OpenVINO side by side.

    .venv/bin/python bench/ocr.py [--photos-per-cell 4] [--speed-photos 5] [--describe 0] [--phrase-scan 20000]
                                  [--no-record]

The benchmark set is made here (tests/signs.py): photos of signs holding a Chinese, an English or a mixed phrase,
drawn with every CJK font of Debian's packages that is installed (fonts-wqy-zenhei, fonts-noto-cjk,
fonts-arphic-ukai, fonts-arphic-uming: `apt-get install` them), text 20-100 px high, rotated up to +-30 degrees,
some at low contrast, some blurred, all saved as JPEG quality 70 on 1-MP photos with clutter. Each runtime runs in a
process of its own (its peak memory is that process's ru_maxrss) and reports:

- character accuracy (1 - edit distance / length, read text vs the sign, both normalized as search compares them) by
  text height and by rotation;
- phrase recall@5: each photo's phrase searched as text (BM25 over the read text, mode "text", in an embedded store
  holding every photo of the set): the share of photos found among the first 5 (other photos whose sign holds the
  phrase too are right answers as well, so they are not counted against it: phrases repeat across the set);
- the same reads: the share of photos whose read text is identical under both runtimes;
- photos/s reading one photo at a time at 1 MP (1155x866) and 12 MP (4000x3000), median over --speed-photos photos;
- the OCR stage's photos/min (indexer/ocr_stage.py: decode, read and write, on the embedded store) and peak memory;
- with --describe N: the describe stage's photos/min on N of the same photos (VQA_MODEL, its CPU runtime), for the
  ratio; without it, only the OCR side is measured;
- what a quoted phrase costs a search (the exact substring filter), per mode, over --phrase-scan read photos.

A figure is only worth recording on a quiet machine: the script writes the "Text in photos" block of BENCHMARKS.md
unless --no-record.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from _machine import cpu_name, instruction_sets  # noqa: E402
from _report import record, table  # noqa: E402

PHRASES = ["金龙面馆", "生日快乐", "出口", "夜市小吃", "火车站", "图书馆", "Golden Dragon", "Night Market",
           "EXIT", "Bakery", "Pharmacy", "Taxi Stand", "EXIT 出口", "Dragon Fruit 火龙果", "WiFi 密码",
           "Coffee 咖啡", "Open 24h 营业中", "Bus 公交车站"]
SIZES = (20, 28, 40, 64, 100)
ANGLES = (0, 10, 20, 30)
ONE_MP = (1155, 866)
TWELVE_MP = (4000, 3000)


def cases(per_cell: int, seed: int = 0) -> list[dict[str, Any]]:
    """The benchmark set: per_cell photos for each (text height, rotation) cell; fonts, phrases, the rotation's
    sign, contrast and blur vary by a seeded draw."""
    from signs import installed_fonts

    fonts = installed_fonts()
    if not fonts:
        raise SystemExit("no CJK font installed: apt-get install fonts-wqy-zenhei fonts-noto-cjk fonts-arphic-ukai "
                         "fonts-arphic-uming")
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for size in SIZES:
        for angle in ANGLES:
            for k in range(per_cell):
                out.append({"name": f"s{size}_a{angle}_{k}.jpg", "phrase": rng.choice(PHRASES), "px": size,
                            "angle": angle * rng.choice((-1, 1)), "font": fonts[len(out) % len(fonts)],
                            "contrast": rng.choice((1.0, 1.0, 0.45, 0.3)), "blur": rng.choice((0, 0, 0.8, 1.5)),
                            "seed": rng.randrange(1 << 30)})
    return out


def draw(case: dict[str, Any], size: tuple[int, int] = ONE_MP) -> Any:
    from signs import sign

    return sign([case["phrase"]], size=size, text_px=case["px"], font_name=case["font"], angle=case["angle"],
                contrast=case["contrast"], blur=case["blur"], seed=case["seed"])


def make_set(folder: Path, per_cell: int) -> list[dict[str, Any]]:
    from signs import jpeg

    folder.mkdir(parents=True, exist_ok=True)
    made = cases(per_cell)
    for case in made:
        (folder / case["name"]).write_bytes(jpeg(draw(case), quality=70))
    return made


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def accuracy(read: str, truth: str) -> float:
    from runners.ocr import normalized

    got, want = (normalized(t).replace(" ", "").replace("\n", "") for t in (read, truth))
    return max(0.0, 1 - edit_distance(got, want) / max(1, len(want)))


def holds(sign: str, phrase: str) -> bool:
    """Whether a sign reading `sign` holds `phrase` (as search compares them: NFKC, case folded, no spaces)."""
    from runners.ocr import normalized

    return normalized(phrase).replace(" ", "") in normalized(sign).replace(" ", "")


def worker(runtime: str, folder: Path, made: list[dict[str, Any]], speed_photos: int) -> dict[str, Any]:
    """One runtime, in this process: reads, recall, speeds, the stage's rate and this process's peak memory."""
    import numpy as np

    from config import Settings
    from core.images import load_image
    from indexer.ocr_stage import OcrStage, ocr_options
    from indexer.pipeline import Summary
    from runners.ocr import open_reader
    from store.interface import Point, folders_of, point_id
    from store.qdrant_edge import EdgeStore

    settings = Settings(_env_file=None, ocr_runtime=runtime)  # type: ignore[call-arg,arg-type]
    reader = open_reader(settings)
    reader.read(draw(made[0]))  # load the models before timing
    speeds = {}
    for label, size in (("1 MP", ONE_MP), ("12 MP", TWELVE_MP)):
        photos = [draw(case, size) for case in made[:speed_photos]]
        seconds = []
        for photo in photos:
            start = time.perf_counter()
            reader.read(photo)
            seconds.append(time.perf_counter() - start)
        speeds[label] = 1 / statistics.median(seconds)
    # The stage over the whole set, on an embedded store (random unit vectors stand in for CLIP's).
    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeStore(Path(tmp), "bench")
        store.ensure_collection("bench/none", 8)
        rng = np.random.default_rng(0)
        points = []
        for case in made:
            data = (folder / case["name"]).read_bytes()
            from indexer.decode import content_hash

            vector = rng.standard_normal(8).astype(np.float32)
            image, width, height = load_image(data)
            points.append(Point(point_id(case["name"]), vector / np.linalg.norm(vector), {
                "path": case["name"], "content_hash": content_hash(data), "size": len(data), "mtime": 0.0,
                "width": width, "height": height, "indexed_at": "", "model_id": "bench/none",
                "folders": folders_of(case["name"])}))
        store.upsert(points)
        summary = Summary()
        OcrStage(store, folder, reader.ocr_by, lambda: reader, summary,
                 ocr_options(batch_size=settings.ocr_batch_size, progress=False,
                            max_pixels=settings.ocr_max_pixels)).run()
        payloads = dict(store.payloads())
        reads = {str(p["path"]): str(p.get("ocr_text") or "") for p in payloads.values()}
        found = {}
        for case in made:
            # Other photos whose sign holds this phrase too are right answers as well: they do not push it out.
            also = {c["name"] for c in made if c is not case and holds(c["phrase"], case["phrase"])}
            hits = store.search(None, len(made), text=case["phrase"])
            ranked = [hit.payload.get("path") for hit in hits if hit.payload.get("path") not in also]
            found[case["name"]] = case["name"] in ranked[:5]
        store.close()
    assert summary.ocr is not None
    return {"runtime": runtime, "reads": reads, "found": found, "speeds": speeds,
            "stage_per_min": summary.ocr["photos_per_s"] * 60, "failed": summary.ocr["failed"],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def describe_rate(folder: Path, made: list[dict[str, Any]], count: int) -> float:
    """The describe stage's photos/min on `count` photos of the set (VQA_MODEL as the settings say)."""
    from config import get_settings
    from core.images import load_image
    from runners.vlm import open_describer

    describer = open_describer(get_settings())
    images = [load_image((folder / case["name"]).read_bytes())[0] for case in made[:count]]
    describer.describe([images[0].resize((448, 336))])  # warm up (allocations, kernels), small to save minutes
    start = time.perf_counter()
    describer.describe(images)
    return len(images) / (time.perf_counter() - start) * 60


def phrase_scan(points: int, dim: int = 512, repeats: int = 7) -> list[tuple[str, str, str]]:
    """Median latency of a top-10 search with and without a quoted phrase, per mode, over `points` read photos
    (random vectors, read texts of three words each): what the exact phrase filter costs (docs/text-in-photos.md)."""
    import numpy as np

    from runners.ocr import read_text_norm
    from store.interface import Point, SearchFilter, point_id
    from store.qdrant_edge import EdgeStore

    rng, pick = np.random.default_rng(0), random.Random(0)
    words = ["golden", "dragon", "exit", "出口", "面馆", "生日", "快乐", "market", "夜市", "taxi", "bakery", "咖啡"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeStore(Path(tmp), "bench")
        store.ensure_collection("bench/none", dim)
        for start in range(0, points, 1000):
            count = min(1000, points - start)
            vectors = rng.standard_normal((count, dim)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            names = [f"p{start + i}.jpg" for i in range(count)]
            store.upsert([Point(point_id(n), v, {"path": n, "content_hash": n, "folders": []})
                          for n, v in zip(names, vectors, strict=True)])
            texts = {point_id(n): " ".join(pick.sample(words, 3)) for n in names}
            store.set_descriptions({pid: {"ocr_text": t, "ocr_norm": read_text_norm([t]), "ocr_by": "bench"}
                                    for pid, t in texts.items()})
        store.finish()
        query = rng.standard_normal(dim).astype(np.float32)
        query /= np.linalg.norm(query)
        for mode, vector, text in (("text", None, "golden dragon"), ("vector", query, None),
                                   ("hybrid", query, "golden dragon")):
            medians = []
            for where in (None, SearchFilter(phrases=("golden dragon",))):
                seconds = []
                for _ in range(repeats):
                    start_s = time.perf_counter()
                    store.search(vector, 10, where, text=text)
                    seconds.append(time.perf_counter() - start_s)
                medians.append(statistics.median(seconds) * 1000)
            rows.append((f"{mode}, {points:,} points", f"{medians[0]:.1f} ms", f"{medians[1]:.1f} ms"))
        store.close()
    return rows


def by(made: list[dict[str, Any]], reads: dict[str, str], key: str, values: tuple[int, ...]) -> list[float]:
    return [statistics.mean(accuracy(reads[c["name"]], c["phrase"]) for c in made if abs(c[key]) == v)
            for v in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos-per-cell", type=int, default=4, help="photos per (text height, rotation) cell")
    parser.add_argument("--speed-photos", type=int, default=5)
    parser.add_argument("--describe", type=int, default=0, help="also time the describe stage on this many photos")
    parser.add_argument("--phrase-scan", type=int, default=20_000,
                        help="points of the quoted-phrase latency figures (0: not measured)")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one runtime in a process of its own
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        made = cases(args.photos_per_cell)
        print(json.dumps(worker(args.worker, args.folder, made, args.speed_photos)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "set"
        made = make_set(folder, args.photos_per_cell)
        results = {}
        for runtime in ("onnxruntime", "openvino"):
            done = subprocess.run([sys.executable, __file__, "--worker", runtime, "--folder", str(folder),
                                   "--photos-per-cell", str(args.photos_per_cell),
                                   "--speed-photos", str(args.speed_photos)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{runtime} worker failed: {done.stderr[-2000:]}")
            results[runtime] = json.loads(done.stdout.strip().splitlines()[-1])
        describe_per_min = describe_rate(folder, made, args.describe) if args.describe else None
    ort, ov = results["onnxruntime"], results["openvino"]
    for case in made:  # what each missed phrase was read as: where recall is lost (not recorded)
        if not ort["found"][case["name"]]:
            print(f"missed: {case['name']} font {case['font']} contrast {case['contrast']} blur {case['blur']}: "
                  f"{case['phrase']!r} read {ort['reads'][case['name']]!r}", file=sys.stderr)
    same = sum(ort["reads"][c["name"]] == ov["reads"][c["name"]] for c in made) / len(made)
    heads = ("", "ONNX Runtime", "OpenVINO")
    size_rows = [(f"text {s} px", f"{a:.3f}", f"{b:.3f}") for s, a, b in
                 zip(SIZES, by(made, ort["reads"], "px", SIZES), by(made, ov["reads"], "px", SIZES), strict=True)]
    angle_rows = [(f"rotated {a} deg", f"{x:.3f}", f"{y:.3f}") for a, x, y in
                  zip(ANGLES, by(made, ort["reads"], "angle", ANGLES), by(made, ov["reads"], "angle", ANGLES),
                      strict=True)]
    recall_rows: list[tuple[str, str, str]] = []
    for low, high in ((20, 27), (28, 100)):
        cell = [c for c in made if low <= c["px"] <= high]
        recall_rows.append((f"phrase recall@5, text {low}-{high} px", f"{recall(ort, cell):.3f}",
                            f"{recall(ov, cell):.3f}"))

    def three(rows: list[tuple[str, str, str]]) -> str:
        lines = [f"| {' | '.join(heads)} |", "|---|---|---|"] + [f"| {' | '.join(row)} |" for row in rows]
        return "\n".join(lines)

    speed_rows = [(f"photos/s at {label}", f"{ort['speeds'][label]:.2f}", f"{ov['speeds'][label]:.2f}")
                  for label in ("1 MP", "12 MP")]
    speed_rows += [("OCR stage photos/min (decode, read, write)", f"{ort['stage_per_min']:.0f}",
                    f"{ov['stage_per_min']:.0f}"),
                   ("peak memory of the process (MiB)", f"{ort['peak_mb']:.0f}", f"{ov['peak_mb']:.0f}"),
                   ("phrase recall@5, all", f"{recall(ort, made):.3f}", f"{recall(ov, made):.3f}")]
    rows = [("photos in the set", str(len(made))), ("fonts", ", ".join(sorted({c["font"] for c in made}))),
            ("photos whose read text is the same under both runtimes", f"{same:.3f}")]
    if describe_per_min is not None:
        from config import get_settings

        settings = get_settings()
        rows += [(f"describe stage photos/min (the first {args.describe} photos; VQA_MODEL={settings.vqa_model}, "
                  f"VQA_RUNTIME={settings.vqa_runtime} {settings.vqa_torch_cpu_dtype}, "
                  f"DESCRIBE_MAX_NEW_TOKENS={settings.describe_max_new_tokens})",
                  f"{describe_per_min:.2f}"),
                 ("OCR stage / describe stage (photos/min)", f"{ort['stage_per_min'] / describe_per_min:.1f}x")]
    body = ("### Text in photos (issue 28)\n\n"
            f"`.venv/bin/python bench/ocr.py --photos-per-cell {args.photos_per_cell} --speed-photos "
            f"{args.speed_photos} --describe {args.describe} --phrase-scan {args.phrase_scan}` on {cpu_name()} "
            f"({instruction_sets()}): rapidocr 3.10.0, "
            "PP-OCRv6 small det/rec, photos of signs made by tests/signs.py (JPEG q70, 1 MP, clutter, some faint or "
            "blurred), each runtime in its own process.\n\n" + table(rows)
            + "\n\nCharacter accuracy by text height:\n\n" + three(size_rows)
            + "\n\nCharacter accuracy by rotation (either way):\n\n" + three(angle_rows)
            + "\n\n" + three(recall_rows + speed_rows))
    if args.phrase_scan:
        scan = ["| top-10 search | no phrase | with a quoted phrase |", "|---|---|---|"]
        scan += [f"| {' | '.join(row)} |" for row in phrase_scan(args.phrase_scan)]
        body += ("\n\nWhat the exact phrase filter costs (embedded store, 512-d vectors, every point read; the dense "
                 "ranking scans exactly when a phrase is given):\n\n" + "\n".join(scan))
    print(body)
    if not args.no_record:
        record("text-in-photos", body)


def recall(result: dict[str, Any], cell: list[dict[str, Any]]) -> float:
    """The share of the cell's photos that a text search for their phrase put among the first 5 (the worker's)."""
    return sum(bool(result["found"][c["name"]]) for c in cell) / max(1, len(cell))


if __name__ == "__main__":
    main()
