"""Words of a photo's description as a BM25 sparse vector, the same way on both store backends.

Qdrant scores a sparse vector query by the dot product of the query's and the point's values; the
collection's "text" sparse vector has Modifier.IDF, so the engine multiplies each term by its inverse
document frequency, computed over the points that have a text vector. The rest of BM25, the
term-frequency part with document-length normalisation, is computed here: each document term gets

    tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / AVG_DOC_LEN))

and each distinct query term 1.0, so query . document = sum over shared terms of idf * tf-part: BM25.

Tokens: text is NFKC-normalised and case-folded, then split into runs of letters and digits. Latin
(and any other non-CJK) runs are one token each. Runs of Chinese, Japanese kana or Korean hangul have
no spaces to split words on, so each gives every single character AND every pair of neighbouring
characters: a one-character query (狗) matches a longer word (小狗), and a two-character word (发票)
scores above a document that only shares one of its characters. Qdrant's own Multilingual tokenizer
segments 小狗 as one word, so 狗 would not match it; hence tokens are made here.

Term ids are CRC-32 of the token's UTF-8 (the same in every process and version, and within Qdrant's
u32 sparse indices); two tokens with the same CRC (rare) count as one term.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections import Counter

K1 = 1.2
B = 0.75
# The engine applies IDF only, so the average document length BM25 normalises by is a constant
# rather than the collection's running average (which would change every stored vector as the
# collection grows). A typical description (a short Chinese sentence, the visible text, 3-5 tags)
# makes ~40-80 tokens once CJK characters and their pairs are counted; 64 sits in that range.
AVG_DOC_LEN = 64.0

# Han (with extensions and compatibility ideographs), hiragana, katakana, hangul (syllables and jamo).
_CJK = ("\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
        "\U00020000-\U0003ffff")
_RUN = re.compile(f"([{_CJK}]+)|((?:(?![{_CJK}])[^\\W_])+)")


def tokens(text: str) -> list[str]:
    """The tokens of `text`, in order (CJK runs give their characters, then their pairs)."""
    out: list[str] = []
    for match in _RUN.finditer(unicodedata.normalize("NFKC", text).casefold()):
        cjk, other = match.groups()
        if other:
            out.append(other)
        else:
            out.extend(cjk)
            out.extend(cjk[i:i + 2] for i in range(len(cjk) - 1))
    return out


def term_id(token: str) -> int:
    return zlib.crc32(token.encode("utf-8"))


def terms(text: str) -> dict[int, float]:
    """A document's sparse vector: term id -> BM25 term-frequency weight ({} for text without words)."""
    found = tokens(text)
    counts: Counter[int] = Counter(term_id(t) for t in found)
    norm = K1 * (1 - B + B * len(found) / AVG_DOC_LEN)
    return {tid: tf * (K1 + 1) / (tf + norm) for tid, tf in counts.items()}


def query_terms(text: str) -> dict[int, float]:
    """A query's sparse vector: 1.0 per distinct term ({} for text without words)."""
    return dict.fromkeys((term_id(t) for t in tokens(text)), 1.0)
