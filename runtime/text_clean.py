"""Text cleaning for CLIP's tokenizer (clipedge.runtime.tokenizer), as OpenCLIP's default ('lower') cleaner does it,
and where a long text may be cut so that cleaning its head gives the start of cleaning all of it (issue #33).

ftfy credit and the reference pipeline: see clipedge.runtime.tokenizer.
"""

from __future__ import annotations

import html

import ftfy
import regex

__all__: list[str] = []  # private to the tokenizer

# Texts made only of these characters pass through ftfy.fix_text and html.unescape unchanged, up to whitespace
# (ftfy 6 turns \r into \n, which the whitespace collapse erases), so they skip both: ftfy is most of the
# reference's time per caption. Excluded: '&' (HTML entities), DEL and C0 controls other than \t\n\f\r (ftfy
# deletes them, and ESC starts terminal escapes), and all non-ASCII (ftfy's other fixes and NFC act only there).
# The parity tests cover every excluded case.
_FTFY_NO_OP = regex.compile(r"[\t\n\f\r\x20-\x25\x27-\x7e]*")
_FTFY_SEGMENT = ftfy.TextFixerConfig().max_decode_length  # ftfy.fix_text fixes a line in pieces this long
# A text longer than this, cut to its context length, is cleaned and split a head at a time (issue #33: one 10 MB
# "word" took 40 s and 2 GB); _TAIL: the head's last characters, which cleaning the whole text may give otherwise.
_LONG_TEXT, _TAIL = 1 << 16, 256


def _clean(text: str) -> str:
    """Normalize a text exactly as OpenCLIP's default ('lower') cleaner does.

    ftfy fixes mojibake, ligatures, full-width forms and curly quotes; HTML is unescaped twice because captions
    scraped from the web are often escaped twice (`&amp;amp;`); whitespace runs become one space; then lower-case.
    """
    return _clean_cased(text).lower()


def _clean_cased(text: str) -> str:
    """`_clean` before its lower-casing."""
    if _FTFY_NO_OP.fullmatch(text) is None:
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split())


def _safe_cut(text: str, size: int) -> int:
    """A length >= `size` at which `text` can be cut so that cleaning the head gives the start of cleaning it all.

    ftfy is not local: it fixes a text in segments, each a line or 1M characters of one, each as a whole (its
    mojibake test weighs the segment). Cut where ftfy's own segments end and the head's segments, and the settings
    each gets (ftfy stops unescaping HTML for good after a segment with '<'), are the whole text's. A head that is
    all _FTFY_NO_OP characters is left alone by ftfy and html.unescape, and may be cut anywhere. The html.unescape
    after ftfy may see an entity across a cut inside a line: that changes only the last few characters, which
    `Tokenizer._encode_head` leaves out (_TAIL)."""
    if _FTFY_NO_OP.fullmatch(text, 0, size) is not None:
        return size
    pos = 0
    while pos < len(text):  # ftfy.fix_text's segmentation, step for step
        end = text.find("\n", pos) + 1 or len(text)
        end = min(end, pos + _FTFY_SEGMENT)
        if end >= size:
            return end
        pos = end
    return len(text)
