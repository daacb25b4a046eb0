"""Generate the data tables of clipedge's JavaScript and Java tokenizer ports from the Python reference's own tables.

    python tests/ports/make_entity_table.py          # rewrite both generated files (checks each table first)
    python tests/ports/make_entity_table.py --check  # exit 1 if they differ from what this Python would write

Writes `runtime/web_page/clip_tokenizer_tables.mjs` and `runtime/java/clipedge/ClipTokenizerTables.java`. The ports
(`clip_tokenizer.mjs`, `ClipTokenizer.java`) must give the ids of `clipedge.runtime.tokenizer.Tokenizer` for every
text, and those ids depend on data that JavaScript and Java either lack or hold in another Unicode version:

- Python's `html.unescape` tables: the HTML5 named references (`html.entities.html5`, with the legacy names that
  need no ';'), the numeric references it remaps and the code points it drops;
- ftfy's tables: its upper-case entity names (`&EACUTE;`), the single-byte codecs its mojibake repair tries, the
  ligature, width and control-character maps, and its regexes (translated below into JavaScript and Java syntax:
  Python's `\\s`, `\\w` and `\\d` are Unicode classes there, so they are spelt out as explicit code point ranges;
  the badness regex also as plain class sequences for Java, whose regex engine tests big classes slowly);
- Python's `str.isspace` (what `str.split()` splits on), `str.lower()` (with the Final_Sigma rule's two
  properties, derived by probing `lower()`) and `unicodedata.normalize('NFC')` (combining classes, canonical
  decompositions, primary composites), in Python's Unicode version;
- the classes the `regex` module's pre-tokenization pattern puts each code point in (`[\\p{L}]+`, `[\\p{N}]`,
  `[^\\s\\p{L}\\p{N}]+` under IGNORECASE, in the `regex` module's Unicode version) and the caseless equivalents of
  the pattern's literal characters (IGNORECASE lets 'ſ' match the 's' of `'s` and `<start_of_text>`).

With these the ports do not depend on the browser's, the JVM's or Android's Unicode version at all. Each table is
checked against the Python function it stands for before it is written. The header records the versions it was
made with; regenerate after upgrading Python, `regex` or `ftfy`.
"""

from __future__ import annotations

import argparse
import functools
import html
import html.entities
import json
import random
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

import ftfy
import regex
from ftfy import badness, chardata, fixes

from clipedge.runtime import tokenizer as reference

ROOT = Path(__file__).resolve().parents[2]
JS_OUT = ROOT / "runtime" / "web_page" / "clip_tokenizer_tables.mjs"
JAVA_OUT = ROOT / "runtime" / "java" / "clipedge" / "ClipTokenizerTables.java"
MAX_CODE_POINT = 0x10FFFF
# Separators of the packed maps: private-use characters, checked absent from every key and value (and, unlike
# control characters, written as themselves by JSON and UTF-8).
FIELD, RECORD = "\ue000", "\ue001"

# ----- code point sets -----


def _ranges(members: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in sorted(members):
        if out and out[-1][1] == c - 1:
            out[-1] = (out[-1][0], c)
        else:
            out.append((c, c))
    return out


def _pack_ranges(members: Iterable[int]) -> str:
    """'41-5a,61-7a,aa': inclusive hex ranges, what both ports parse into sorted [start, end] pairs."""
    return ",".join(f"{a:x}" if a == b else f"{a:x}-{b:x}" for a, b in _ranges(members))


def _code_points_where(test: Callable[[str], object]) -> list[int]:
    return [c for c in range(MAX_CODE_POINT + 1) if test(chr(c))]


def _pack_map(pairs: Iterable[tuple[str, str]]) -> str:
    items = list(pairs)
    for key, value in items:
        assert FIELD not in key + value and RECORD not in key + value, (key, value)
    return RECORD.join(f"{key}{FIELD}{value}" for key, value in items)


# ----- regex translation: Python `re` syntax -> JavaScript (u flag) and Java -----
# Just enough of sre_parse for ftfy's patterns: literals, escapes, classes with ranges, groups, lookarounds,
# quantifiers, alternation and '^'. Anything else raises, so a new construct in a future ftfy cannot slip
# through mistranslated. The translation is checked against the original on thousands of strings below.

_VERBOSE_SPACE = " \t\n\r\v\f"  # what sre_parse skips in VERBOSE mode (outside classes); not \xa0
_CLASS_ESCAPES = {"s": r"\s", "w": r"\w", "d": r"\d"}
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}


@functools.cache
def _escape_members(letter: str) -> list[int]:
    """Code points of Python's \\s, \\w or \\d in a str pattern (Unicode semantics, as ftfy compiles them)."""
    return _code_points_where(re.compile(_CLASS_ESCAPES[letter]).match)


def _parse_escape(pattern: str, i: int) -> tuple[tuple[str, object], int]:
    """The escape after the backslash at i-1: ('set', code points) or ('char', code point)."""
    c = pattern[i]
    if c in _CLASS_ESCAPES:
        return ("set", _escape_members(c)), i + 1
    width = {"x": 2, "u": 4, "U": 8}.get(c)
    if width:
        return ("char", int(pattern[i + 1 : i + 1 + width], 16)), i + 1 + width
    if c in _SIMPLE_ESCAPES:
        return ("char", ord(_SIMPLE_ESCAPES[c])), i + 1
    if c.isalnum():
        raise NotImplementedError(f"escape \\{c} in {pattern!r}")
    return ("char", ord(c)), i + 1


def _parse_class(pattern: str, i: int) -> tuple[tuple[str, object], int]:
    """A [...] class starting after its '['; returns ('class', (negated, sorted code points))."""
    negated = pattern[i] == "^"
    i += negated
    members: set[int] = set()
    first = True
    while first or pattern[i] != "]":
        first = False
        if pattern[i] == "\\":
            (kind, value), i = _parse_escape(pattern, i + 1)
        else:
            kind, value, i = "char", ord(pattern[i]), i + 1
        if kind == "set":
            members.update(value)
            continue
        if pattern[i] == "-" and pattern[i + 1] != "]":  # a range
            if pattern[i + 1] == "\\":
                (kind_end, end), i = _parse_escape(pattern, i + 2)
                assert kind_end == "char", pattern
            else:
                end, i = ord(pattern[i + 1]), i + 2
            members.update(range(value, end + 1))
        else:
            members.add(value)
    return ("class", (negated, sorted(members))), i + 1


def parse_regex(pattern: str, verbose: bool) -> list[tuple[str, object]]:
    tokens: list[tuple[str, object]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if verbose and c in _VERBOSE_SPACE:
            i += 1
        elif verbose and c == "#":
            i = pattern.find("\n", i) if "\n" in pattern[i:] else len(pattern)
        elif c == "[":
            token, i = _parse_class(pattern, i + 1)
            tokens.append(token)
        elif c == "\\":
            (kind, value), i = _parse_escape(pattern, i + 1)
            tokens.append(("class", (False, value)) if kind == "set" else ("char", value))
        elif c == ".":  # Python's '.' is anything but \n (JavaScript's and Java's also exclude \r, \u2028, ...)
            tokens.append(("class", (True, [ord("\n")])))
            i += 1
        elif c == "(":
            prefix = next(p for p in ("(?<!", "(?<=", "(?:", "(?!", "(?=", "(") if pattern.startswith(p, i))
            if prefix == "(" and pattern.startswith("(?", i):
                raise NotImplementedError(f"group syntax at {pattern[i:i + 4]!r}")
            tokens.append(("meta", prefix))
            i += len(prefix)
        elif c == "{":
            quantifier = re.match(r"\{\d+(,\d*)?\}", pattern[i:])
            assert quantifier, pattern[i:]
            tokens.append(("meta", quantifier.group()))
            i += quantifier.end()
        elif c in ")|*+?^":
            tokens.append(("meta", c))
            i += 1
        elif c == "$":  # Python's '$' also matches before a final '\n'; not needed by any translated pattern
            raise NotImplementedError(f"'$' in {pattern!r}")
        else:
            tokens.append(("char", ord(c)))
            i += 1
    return tokens


def _escape_code_point(c: int, dialect: str) -> str:
    if chr(c).isascii() and chr(c).isalnum():
        return chr(c)
    return {"js": f"\\u{{{c:X}}}", "java": f"\\x{{{c:X}}}", "python": f"\\U{c:08X}"}[dialect]


def emit_regex(tokens: list[tuple[str, object]], dialect: str) -> str:
    out = []
    for kind, value in tokens:
        if kind == "meta":
            out.append(value)
        elif kind == "char":
            out.append(_escape_code_point(value, dialect))
        else:
            negated, members = value
            parts = []
            for a, b in _ranges(members):
                low = _escape_code_point(a, dialect)
                parts.append(low if a == b else f"{low}-{_escape_code_point(b, dialect)}")
            out.append("[" + ("^" if negated else "") + "".join(parts) + "]")
    return "".join(out)


def translate(compiled: re.Pattern) -> dict[str, str]:
    """A compiled ftfy/stdlib pattern (str or bytes; bytes patterns are used on latin-1 "binary strings")."""
    pattern = compiled.pattern
    if isinstance(pattern, bytes):
        pattern = pattern.decode("latin-1")
    assert compiled.flags & ~(re.UNICODE | re.VERBOSE) == 0, f"flags {compiled.flags} of {pattern!r}"
    tokens = parse_regex(pattern, verbose=bool(compiled.flags & re.VERBOSE))
    return {dialect: emit_regex(tokens, dialect) for dialect in ("js", "java", "python")}


def _regex_probe_strings(compiled: re.Pattern, count: int, seed: int) -> list[str]:
    """Strings made of the characters the pattern names and a few others, so that most of its branches are taken;
    for str patterns also random text, terminal escapes and mojibake."""
    pattern = compiled.pattern
    text = pattern.decode("latin-1") if isinstance(pattern, bytes) else pattern
    alphabet = sorted({c for c in text if c not in "\\[]()|"} | set(" \n\xa0az.,?!1;&#<>\x1b\x80\xa0\xc3\xe2"))
    rng = random.Random(seed)
    probes = ["".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(count)]
    if isinstance(pattern, bytes):
        return probes
    probes += ["".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(1, 8))) for _ in range(count // 4)]
    probes += ["\x1b[" + probe for probe in probes[::4]]  # terminal escapes, with digits of every script
    return probes + _mojibake_probes()


def _mojibake_probes() -> list[str]:
    words = ["café", "naïve", "“quotes”", "—dash—", "…", "€100", "日本語", "😀", "Ελληνικά", "русский", "à la"]
    out = []
    for word in words:
        for codec in ("latin-1", "cp1252", "mac_roman", "cp437", "cp1251", "cp1250", "cp1253", "iso-8859-2"):
            broken = word.encode("utf-8").decode(codec, errors="replace")
            out += [broken, f"x {broken} y", broken.encode("utf-8").decode(codec, errors="replace")]
    return out


def check_translation(compiled: re.Pattern, python_form: str, count: int = 3000) -> None:
    """The translation, compiled back into Python, must find the same matches as the original."""
    translated = re.compile(python_form)
    for probe in _regex_probe_strings(compiled, count, seed=len(python_form)):
        subject = probe.encode("latin-1") if isinstance(compiled.pattern, bytes) else probe
        theirs = [m.span() for m in compiled.finditer(subject)]
        ours = [m.span() for m in translated.finditer(probe)]
        assert ours == theirs, f"translation of {compiled.pattern!r} differs on {probe!r}: {ours} vs {theirs}"


def required_characters(compiled: re.Pattern, max_members: int = 5000) -> list[int]:
    """Characters of which every match holds at least one: per top-level alternative, the smallest non-ASCII set
    it must match once (a literal or a class not made optional by a quantifier). The ports scan a text for these
    before running the regex: most texts have none, and Java runs big classes slowly."""
    tokens = parse_regex(compiled.pattern, verbose=bool(compiled.flags & re.VERBOSE))
    alternatives: list[list[tuple[str, object]]] = [[]]
    depth = 0
    for kind, value in tokens:
        if kind == "meta" and value == "|" and depth == 0:
            alternatives.append([])
            continue
        if kind == "meta" and value.startswith("("):
            depth += 1
        elif kind == "meta" and value == ")":
            depth -= 1
        alternatives[-1].append((kind, value, depth))
    required: set[int] = set()
    for alternative in alternatives:
        candidates = []
        for position, (kind, value, level) in enumerate(alternative):
            following = alternative[position + 1][1] if position + 1 < len(alternative) else ""
            optional = following in ("?", "*") or str(following).startswith("{0")
            if level > 0 or optional or kind == "meta":
                continue
            members = [value] if kind == "char" else (None if value[0] else value[1])
            if members and len(members) <= max_members and all(c >= 0x80 for c in members):
                candidates.append(members)
        assert candidates, f"no required non-ASCII character in an alternative of {compiled.pattern!r}"
        required.update(min(candidates, key=len))
    return sorted(required)


def class_sequences(compiled: re.Pattern) -> tuple[list[list[int]], list[list[str]]]:
    """A pattern made only of alternatives of character classes (some optional with '?', maybe a leading '^') as
    (classes as sorted code points, alternatives as steps: class index, 'index?' or '^'). ftfy's BADNESS_RE has
    that shape; java.util.regex tests a big class's parts one by one, so the Java port matches this form by hand."""
    tokens = parse_regex(compiled.pattern, verbose=bool(compiled.flags & re.VERBOSE))
    classes: list[list[int]] = []
    alternatives: list[list[str]] = [[]]
    for kind, value in tokens:
        if kind == "meta":
            if value == "|":
                alternatives.append([])
            elif value == "?" and alternatives[-1] and alternatives[-1][-1] != "^":
                alternatives[-1][-1] += "?"
            elif value == "^" and not alternatives[-1]:
                alternatives[-1].append("^")
            else:
                raise NotImplementedError(f"{value!r} in a class-sequence pattern")
            continue
        if kind == "char":
            members = [value]
        else:
            negated, members = value
            if negated:
                excluded = set(members)
                members = [c for c in range(MAX_CODE_POINT + 1) if c not in excluded]
        if members not in classes:
            classes.append(members)
        alternatives[-1].append(str(classes.index(members)))
    return classes, alternatives


def match_class_sequences(classes: list[set[int]], alternatives: list[list[str]], text: str) -> bool:
    """What the Java port does with class_sequences(): is there a match anywhere (re.search)?"""

    def matches(steps: list[str], at: int) -> bool:
        if not steps:
            return True
        step, rest = steps[0], steps[1:]
        if step == "^":
            return at == 0 and matches(rest, at)
        members = classes[int(step.rstrip("?"))]
        if at < len(text) and ord(text[at]) in members and matches(rest, at + 1):
            return True
        return step.endswith("?") and matches(rest, at)

    return any(matches(steps, at) for at in range(len(text) + 1) for steps in alternatives)


# ftfy's regexes (and Python's own html.unescape pattern) the ports use, by the name they use.
REGEXES = {
    "badness": badness.BADNESS_RE,
    "utf8Detector": chardata.UTF8_DETECTOR_RE,
    "alteredUtf8": chardata.ALTERED_UTF8_RE,
    "lossyUtf8": chardata.LOSSY_UTF8_RE,
    "aGraveWord": fixes.A_GRAVE_WORD_RE,
    "c1Control": chardata.C1_CONTROL_RE,
    "singleQuote": chardata.SINGLE_QUOTE_RE,
    "doubleQuote": chardata.DOUBLE_QUOTE_RE,
    "ansiEscape": fixes.ANSI_RE,
    "ftfyEntity": chardata.HTML_ENTITY_RE,
    "htmlCharref": html._charref,
}

# ----- the tables -----


def _entity_tables() -> dict[str, str]:
    html5 = html.entities.html5
    # ftfy's HTML_ENTITIES is '&' + each html5 name that ends in ';', plus upper-case spellings it adds itself.
    base = {"&" + name: char for name, char in html5.items() if name.endswith(";")}
    extra = {name: char for name, char in chardata.HTML_ENTITIES.items() if name not in base}
    assert all(chardata.HTML_ENTITIES[name] == char for name, char in base.items())
    assert all(name.startswith("&") and name.endswith(";") for name in extra)
    invalid = html._invalid_charrefs
    return {
        "html5Entities": _pack_map(html5.items()),
        "ftfyUpperEntities": _pack_map(extra.items()),
        "htmlInvalidCharrefs": _pack_map((str(num), char) for num, char in sorted(invalid.items())),
        "htmlInvalidCodePoints": _pack_ranges(html._invalid_codepoints),
    }


def _charmap_tables() -> dict[str, str]:
    """Each single-byte codec ftfy tries, as its 256-character decoding table; the ports encode by inverting it."""
    assert "windows-1252" not in chardata.CHARMAP_ENCODINGS  # the ports rely on this ftfy 6.3 quirk; see there
    tables = {}
    for encoding in chardata.CHARMAP_ENCODINGS:
        table = bytes(range(256)).decode(encoding)
        assert len(set(table)) == 256, encoding  # invertible, so encoding is unambiguous
        # ASCII but \x1a maps to itself (the ports rely on it: possible_encoding() lets those through as such)
        assert all(table[b] == chr(b) for b in range(0x80) if b != 0x1A), encoding
        for byte, char in enumerate(table):
            assert char.encode(encoding) == bytes([byte]), (encoding, byte)
            # what possible_encoding() accepts: ASCII but \x1a, plus the decoded bytes 0x80-0xff and 0x1a
            assert chardata.possible_encoding(char, encoding)
        tables[encoding] = table
    cp1252_undefined = []
    for byte in range(0x80, 0x100):
        try:
            bytes([byte]).decode("windows-1252")
        except UnicodeDecodeError:
            cp1252_undefined.append(byte)
    return {
        "charmapEncodings": ",".join(chardata.CHARMAP_ENCODINGS),
        "charmaps": "".join(tables[e] for e in chardata.CHARMAP_ENCODINGS),
        "cp1252Undefined": _pack_ranges(cp1252_undefined),
    }


def _ftfy_translate_tables() -> dict[str, str]:
    assert all(value is None for value in chardata.CONTROL_CHARS.values())
    return {
        "ligatures": _pack_map((chr(c), s) for c, s in sorted(chardata.LIGATURES.items())),
        "widthMap": _pack_map((chr(c), s) for c, s in sorted(chardata.WIDTH_MAP.items())),
        "controlChars": _pack_ranges(chardata.CONTROL_CHARS),
    }


def _case_tables() -> dict[str, str]:
    """str.lower() per code point, and the two properties of its Final_Sigma rule, found by probing lower():
    CPython lower-cases U+03A3 to 'ς' when a cased letter precedes it (case-ignorable ones skipped) and none follows.
    With c between 'A' and 'Σ', 'ς' means c is case-ignorable or cased; with 'AΣ' before c, that c is
    case-ignorable or not cased; both means case-ignorable. For the rest, c before 'Σ' tells whether c is cased."""
    lower = []
    ignorable = []
    cased = []
    for c in range(MAX_CODE_POINT + 1):
        ch = chr(c)
        if ch.lower() != ch:
            lower.append((ch, ch.lower()))
        between = ("A" + ch + "Σ").lower()[-1] == "ς"
        before_other = ("AΣ" + ch).lower()[1] == "ς"
        if between and before_other:
            ignorable.append(c)
        elif (ch + "Σ").lower()[-1] == "ς":
            cased.append(c)
        else:
            assert between != before_other, hex(c)
    return {
        "lower": _pack_map(lower),
        "caseIgnorable": _pack_ranges(ignorable),
        "cased": _pack_ranges(cased),
        "pythonSpace": _pack_ranges(_code_points_where(str.isspace)),
    }


# Hangul syllables decompose and compose by arithmetic (Unicode chapter 3.12), not by table.
S_BASE, L_BASE, V_BASE, T_BASE = 0xAC00, 0x1100, 0x1161, 0x11A7
L_COUNT, V_COUNT, T_COUNT = 19, 21, 28
S_COUNT = L_COUNT * V_COUNT * T_COUNT


def _nfc_tables(verify: bool = True) -> dict[str, str]:
    """unicodedata's NFC as tables: canonical combining classes, full canonical decompositions and the primary
    composites (two-character canonical decompositions whose result NFC keeps), in Python's Unicode version.
    Browsers, JVMs and Android versions each normalize with their own Unicode version, so the ports use these."""
    combining = {c: unicodedata.combining(chr(c)) for c in range(MAX_CODE_POINT + 1) if unicodedata.combining(chr(c))}
    runs: list[list[int]] = []  # [start, end, class]
    for c, value in sorted(combining.items()):
        if runs and runs[-1][1] == c - 1 and runs[-1][2] == value:
            runs[-1][1] = c
        else:
            runs.append([c, c, value])
    decompositions = []
    composites = []
    for c in range(MAX_CODE_POINT + 1):
        ch = chr(c)
        if S_BASE <= c < S_BASE + S_COUNT:
            continue
        nfd = unicodedata.normalize("NFD", ch)
        if nfd != ch:
            decompositions.append((ch, nfd))
        mapping = unicodedata.decomposition(ch).split()
        if len(mapping) == 2 and not mapping[0].startswith("<") and unicodedata.normalize("NFC", ch) == ch:
            composites.append(("".join(chr(int(m, 16)) for m in mapping), ch))
    # Characters NFC can change or combine: a text with none of them is NFC already (checked below), so the ports
    # skip the algorithm for it. Hangul syllables are not listed: alone they come back as they were.
    maybe = set(combining) | {ord(ch) for ch, _ in decompositions} | {ord(pair[1]) for pair, _ in composites}
    maybe |= {*range(V_BASE, V_BASE + V_COUNT), *range(T_BASE + 1, T_BASE + T_COUNT)}
    tables = {
        "combiningClasses": ",".join(f"{a:x}-{b:x}:{v}" if a != b else f"{a:x}:{v}" for a, b, v in runs),
        "decompositions": _pack_map(decompositions),
        "composites": _pack_map(composites),
        "nfcMaybe": _pack_ranges(maybe),
    }
    if verify:
        _check_nfc(combining, dict(decompositions), dict(composites), maybe)
    return tables


def nfc_from_tables(text: str, combining: dict[int, int], decompositions: dict[str, str],
                    composites: dict[str, str]) -> str:
    """NFC as the ports compute it: decompose, order marks by combining class, compose (Unicode chapter 3.11)."""
    decomposed: list[int] = []
    for ch in text:
        c = ord(ch)
        if S_BASE <= c < S_BASE + S_COUNT:
            s = c - S_BASE
            decomposed += [L_BASE + s // (V_COUNT * T_COUNT), V_BASE + s % (V_COUNT * T_COUNT) // T_COUNT]
            if s % T_COUNT:
                decomposed.append(T_BASE + s % T_COUNT)
        else:
            decomposed += map(ord, decompositions.get(ch, ch))
    for i in range(1, len(decomposed)):  # canonical ordering: a stable insertion sort of each run of marks
        j = i
        while j > 0 and 0 < combining.get(decomposed[j], 0) < combining.get(decomposed[j - 1], 0):
            decomposed[j - 1], decomposed[j] = decomposed[j], decomposed[j - 1]
            j -= 1
    out: list[int] = []
    starter = -1  # index in out of the last starter, if nothing since has blocked it
    last_class = -1
    for c in decomposed:
        klass = combining.get(c, 0)
        if starter >= 0 and (last_class < klass or last_class == 0 and starter == len(out) - 1):
            composite = _compose(out[starter], c, composites)
            if composite is not None:
                out[starter] = composite
                continue
        if klass == 0:
            starter = len(out)
        last_class = klass
        out.append(c)
    return "".join(map(chr, out))


def _compose(first: int, second: int, composites: dict[str, str]) -> int | None:
    if L_BASE <= first < L_BASE + L_COUNT and V_BASE <= second < V_BASE + V_COUNT:
        return S_BASE + ((first - L_BASE) * V_COUNT + second - V_BASE) * T_COUNT
    s = first - S_BASE
    if 0 <= s < S_COUNT and s % T_COUNT == 0 and T_BASE < second < T_BASE + T_COUNT:
        return first + second - T_BASE
    composite = composites.get(chr(first) + chr(second))
    return None if composite is None else ord(composite)


def _check_nfc(combining: dict[int, int], decompositions: dict[str, str], composites: dict[str, str],
               maybe: set[int]) -> None:
    """The tables with the ports' algorithm give unicodedata's NFC: every code point alone, and mixtures; and a text
    without a character of `maybe` is its own NFC."""
    marks = sorted(combining)
    interesting = marks + [ord(ch) for ch in decompositions] + [ord(c) for pair in composites for c in pair]
    interesting += [*range(0x1100, 0x1113), *range(0x1161, 0x1176), *range(0x11A7, 0x11C3), 0xAC00, 0xAC01, 0xD7A3]
    rng = random.Random(0)
    samples = [chr(c) for c in range(MAX_CODE_POINT + 1)]
    samples += ["".join(chr(rng.choice(interesting)) for _ in range(rng.randint(2, 8))) for _ in range(200_000)]
    for text in samples:
        ours = nfc_from_tables(text, combining, decompositions, composites)
        assert ours == unicodedata.normalize("NFC", text), f"NFC of {text!r}"
    stable = [c for c in interesting + [*range(0x20, 0x3000), *range(0xAC00, 0xAD00)] if c not in maybe]
    for _ in range(100_000):
        text = "".join(chr(rng.choice(stable)) for _ in range(rng.randint(1, 8)))
        assert unicodedata.normalize("NFC", text) == text, f"NFC changes {text!r}"


# What the ports hand-code of the reference's pattern; if the reference changes, this fails instead of the ports.
SPECIAL_TEXTS = ("<start_of_text>", "<end_of_text>")
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
EXPECTED_PATTERN = "|".join(
    [*(regex.escape(s) for s in SPECIAL_TEXTS), *CONTRACTIONS, r"[\p{L}]+", r"[\p{N}]", r"[^\s\p{L}\p{N}]+"]
)


def _pretoken_tables() -> dict[str, str]:
    """Which class of the reference's pre-tokenization pattern takes each code point, with its flags."""
    assert reference._PRETOKEN_PATTERN == EXPECTED_PATTERN, reference._PRETOKEN_PATTERN
    assert (reference._SOT_TEXT, reference._EOT_TEXT) == SPECIAL_TEXTS
    flags = regex.IGNORECASE
    letter = regex.compile(r"[\p{L}]", flags)
    number = regex.compile(r"[\p{N}]", flags)
    other = regex.compile(r"[^\s\p{L}\p{N}]", flags)
    letters, numbers, others = (_code_points_where(p.fullmatch) for p in (letter, number, other))
    assert not (set(letters) & set(numbers)) and not (set(others) & (set(letters) | set(numbers)))
    literals = sorted(set("".join(SPECIAL_TEXTS + CONTRACTIONS)))
    caseless = []
    for char in literals:
        literal = regex.compile(regex.escape(char), flags)
        caseless.append((char, "".join(map(chr, _code_points_where(literal.fullmatch)))))
    return {
        "pretokenLetter": _pack_ranges(letters),
        "pretokenNumber": _pack_ranges(numbers),
        "pretokenOther": _pack_ranges(others),
        "pretokenCaseless": _pack_map(caseless),
    }


def build_tables(verify: bool = True) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(data tables, translated regexes by name then dialect). With `verify`, each translated regex, the badness
    class sequences and the NFC tables are first checked against the Python functions they stand for (slow)."""
    # The ports hard-code fix_text's default configuration: every fix on, NFC, lines cut at 1,000,000 characters.
    defaults = ftfy.TextFixerConfig()._asdict()
    expected = dict.fromkeys(defaults, True)
    expected.update(unescape_html="auto", normalization="NFC", max_decode_length=1_000_000)
    assert defaults == expected, defaults
    tables = {}
    for part in (_entity_tables, _charmap_tables, _ftfy_translate_tables, _case_tables, _pretoken_tables):
        tables.update(part())
    tables.update(_nfc_tables(verify))
    regexes = {name: translate(compiled) for name, compiled in REGEXES.items()}
    tables["badnessRequired"] = _pack_ranges(required_characters(badness.BADNESS_RE))
    classes, alternatives = class_sequences(badness.BADNESS_RE)
    tables["badnessClasses"] = ";".join(_pack_ranges(c) for c in classes)
    tables["badnessSequences"] = "|".join(",".join(steps) for steps in alternatives)
    no_op = reference._FTFY_NO_OP
    assert no_op.flags & ~(regex.UNICODE | regex.VERSION0) == 0 and "\\p" not in no_op.pattern
    regexes["ftfyNoOp"] = translate(re.compile(no_op.pattern))
    if verify:
        for name, compiled in [*REGEXES.items(), ("ftfyNoOp", no_op)]:
            check_translation(compiled, regexes[name]["python"])
        member_sets = [set(c) for c in classes]
        for probe in _regex_probe_strings(badness.BADNESS_RE, 3000, seed=7):
            assert match_class_sequences(member_sets, alternatives, probe) == badness.is_bad(probe), probe
    return tables, regexes


def versions() -> str:
    return (f"Python {sys.version.split()[0]} (Unicode {unicodedata.unidata_version}), regex {regex.__version__}, "
            f"ftfy {ftfy.__version__}")


# ----- rendering -----

# Each port gets what it uses: JavaScript runs ftfy's badness regex as a regex, Java its class-sequence form.
JAVA_ONLY_TABLES = {"badnessClasses", "badnessSequences"}
JS_ONLY_REGEXES = {"badness"}

_HEADER = ("Generated by tests/ports/make_entity_table.py from {versions}; do not edit. "
           "Tables from Python's html, str and unicodedata, ftfy (MIT, Robyn Speer) and the regex module, as the "
           "reference clipedge.runtime.tokenizer uses them.")


def _java_literal(text: str) -> str:
    """A Java string literal. Non-ASCII as \\uXXXX; ASCII controls, quote and backslash as octal or simple
    escapes, never \\uXXXX: javac turns those into raw characters before parsing, so \\u000a would end the line."""
    out = []
    for ch in text:
        c = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif c < 0x20 or c == 0x7F:
            out.append(f"\\{c:03o}")
        elif c < 0x80:
            out.append(ch)
        else:
            out.extend(f"\\u{unit:04x}" for unit in _utf16_units(c))
    return '"' + "".join(out) + '"'


def _utf16_units(c: int) -> list[int]:
    if c < 0x10000:
        return [c]
    c -= 0x10000
    return [0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF)]


def _chunks(text: str, size: int = 8000) -> list[str]:
    """Java caps a string constant at 65535 bytes of modified UTF-8 (up to 6 per code point): chunk by code points
    (so no surrogate pair is split), join at load."""
    out, i = [], 0
    while i < len(text):
        out.append(text[i : i + size])
        i += size
    return out


def render_js(tables: dict[str, str], regexes: dict[str, dict[str, str]]) -> str:
    lines = [f"// {_HEADER.format(versions=versions())}", "// Format: see ClipTokenizer's table parsers.", ""]
    lines.append("export const TABLES = {")
    for name, value in tables.items():
        if name in JAVA_ONLY_TABLES:
            continue
        lines.append(f"  {name}: {json.dumps(value, ensure_ascii=False)},")
    lines.append("};")
    lines.append("")
    lines.append("// Python regexes translated to JavaScript syntax (use with the u flag).")
    lines.append("export const REGEXES = {")
    for name, forms in regexes.items():
        lines.append(f"  {name}: {json.dumps(forms['js'])},")
    lines.append("};")
    return "\n".join(lines) + "\n"


def render_java(tables: dict[str, str], regexes: dict[str, dict[str, str]]) -> str:
    """A class of two maps filled in a static block (Map.ofEntries would need Android API level 30)."""
    lines = [
        f"// {_HEADER.format(versions=versions())}",
        "package clipedge;",
        "",
        "import java.util.HashMap;",
        "import java.util.Map;",
        "",
        "/** Data of {@link ClipTokenizer}, generated from the Python reference's tables; see the header. */",
        "final class ClipTokenizerTables {",
        "    private ClipTokenizerTables() {}",
        "",
        "    /** Table name to packed text (same names and formats as clip_tokenizer_tables.mjs). */",
        "    static final Map<String, String> TABLES = new HashMap<>();",
        "    /** Python regexes translated to java.util.regex syntax. */",
        "    static final Map<String, String> REGEXES = new HashMap<>();",
        "",
        "    static {",
    ]
    entries = [("TABLES", name, value) for name, value in tables.items()]
    entries += [("REGEXES", name, forms["java"]) for name, forms in regexes.items() if name not in JS_ONLY_REGEXES]
    for target, name, value in entries:
        parts = ",\n                ".join(_java_literal(chunk) for chunk in _chunks(value)) or '""'
        lines.append(f"        {target}.put(\"{name}\", String.join(\"\",\n                {parts}));")
    lines += ["    }", "}"]
    return "\n".join(lines) + "\n"


def render_all(verify: bool = True) -> dict[Path, str]:
    tables, regexes = build_tables(verify)
    return {JS_OUT: render_js(tables, regexes), JAVA_OUT: render_java(tables, regexes)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render_all().items():
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)} ({len(text.encode('utf-8')):,} bytes)")
    for path in stale:
        print(f"{path.relative_to(ROOT)} is not what this Python ({versions()}) generates", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
