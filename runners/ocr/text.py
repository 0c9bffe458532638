"""The words of a photo's read text as search compares them: one normal form, quoted phrases, matched lines.

`normalized` is the one rule by which a quoted phrase and a photo's read text are compared: NFKC (full-width
letters and digits become ASCII, compatibility ideographs their unified form), case folding (English is
case-insensitive), every run of whitespace one space, and no whitespace at all next to a CJK character (an OCR
model puts spaces inside Chinese text or leaves them out from one photo to the next: "生日快乐 小明" and
"生日快乐小明" are the same text). The indexer stores each photo's read text in this form (payload `ocr_norm`),
so a quoted phrase is an exact substring test on it, done by the store over the whole collection.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Han (with extensions and compatibility ideographs), CJK punctuation, hiragana, katakana, hangul, full-width forms:
# no whitespace is kept next to any of these.
_CJK = ("\u1100-\u11ff\u3000-\u303f\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
        "\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff")
_SPACE_NEAR_CJK = re.compile(f"(?<=[{_CJK}])\\s+|\\s+(?=[{_CJK}])")
_SPACES = re.compile(r"\s+")
# A phrase between straight or curly double quotes (ASCII ", “ ”, full-width ＂, 「 」 and 『 』 corner brackets).
_QUOTED = re.compile(r'"([^"]*)"|“([^”]*)”|＂([^＂]*)＂|「([^」]*)」|『([^』]*)』')
_QUOTES = re.compile(r'["“”＂「」『』]')
MAX_PHRASES = 8  # quoted phrases one query may hold (each is one more condition on every point)


def normalized(text: str) -> str:
    """`text` in the form phrases are compared in (see the module docstring)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACES.sub(" ", _SPACE_NEAR_CJK.sub("", folded)).strip()


@dataclass(frozen=True)
class TextQuery:
    """A search text taken apart: `words` (the text without its quote marks, what ranks the photos) and the
    normalized quoted `phrases`, each of which a photo's read text must contain."""

    words: str
    phrases: tuple[str, ...]


def parse_query(text: str) -> TextQuery:
    """The phrases between double quotes in `text` (empty or blank ones ignored, an unpaired quote mark taken
    as a plain character and dropped) and the words of the whole text (without its quote marks; a text with none
    is left exactly as it is). ValueError for more than MAX_PHRASES."""
    phrases: list[str] = []
    for match in _QUOTED.finditer(text):
        phrase = normalized(next(group for group in match.groups() if group is not None))
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    if len(phrases) > MAX_PHRASES:
        raise ValueError(f"the query holds {len(phrases)} quoted phrases, more than {MAX_PHRASES}")
    if not _QUOTES.search(text):  # no quote mark: the text as it came (what CLIP and BM25 always got)
        return TextQuery(text, ())
    words = _SPACES.sub(" ", _QUOTES.sub(" ", text)).strip()
    return TextQuery(words or text.strip(), tuple(phrases))


def read_text_norm(lines: Sequence[str]) -> str:
    """The normalized read text of a photo: its lines in reading order, normalized, one per line ("\\n" between
    them, so a phrase never runs from one line into the next unless it holds the line break itself)."""
    return "\n".join(n for n in (normalized(line) for line in lines) if n)


def contains_phrase(norm_text: str, phrase: str) -> bool:
    """Whether a photo whose normalized read text is `norm_text` holds the (normalized) `phrase`."""
    return bool(phrase) and phrase in norm_text


def matched_lines(lines: Sequence[Any], query: TextQuery) -> list[dict[str, Any]]:
    """The read lines (payload `ocr_lines` entries: text, confidence, box, angle) that a query matches: those
    holding one of its quoted phrases and, for its other words, those holding one of them (a Latin word whole,
    Chinese by any two neighbouring characters of the query, or one character when the query has one there)."""
    keys = list(query.phrases) + [key for key in word_keys(query.words) if key]
    found = []
    for line in lines:
        if not isinstance(line, dict):  # a payload from elsewhere (an archive): only objects are lines
            continue
        text = normalized(str(line.get("text", "")))
        if text and any(key in text if not key.isascii() else _has_word(text, key) for key in keys):
            found.append(line)
    return found


def word_keys(words: str) -> list[str]:
    """What a line must hold to match a query's words: each Latin word (3 or more letters or any number), and each
    pair of neighbouring CJK characters (a lone CJK character when a run has only one)."""
    keys: list[str] = []
    for token in normalized(words).replace("\n", " ").split(" "):
        cjk_runs = re.findall(f"[{_CJK}]+", token)
        for run in cjk_runs:
            keys.extend([run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)])
        for latin in re.findall(f"(?:(?![{_CJK}])[^\\W_])+", token):
            if len(latin) >= 3 or latin.isdigit():
                keys.append(latin)
    return keys


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![0-9a-z]){re.escape(word)}(?![0-9a-z])", text) is not None
