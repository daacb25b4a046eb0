"""clipedge's CLIP tokenizer against OpenCLIP's `SimpleTokenizer` (the reference), and its API contract.

The reference is loaded from OpenCLIP's `open_clip/tokenizer.py` by path (the `open_clip` package itself needs
torchvision, which the test extra does not install). The corpus is built here from a fixed seed: 6691 texts
(`CORPUS_SIZE`, checked below) in 15 families: plain captions, punctuation and numbers, HTML entities (single,
double, triple escaped, beside tags), ftfy cases (ligatures, full-width forms, curly quotes, mojibake, control
characters, terminal escapes, surrogates), emoji (ZWJ sequences, flags, skin tones, keycaps), 20+ scripts
(accented Latin, Greek, Cyrillic, Arabic, Hebrew, Devanagari, CJK, Korean, Thai, ...), mixed whitespace, literal
special-token strings, texts over 77 tokens, empty and whitespace-only texts, random code points, random ASCII
(every control character included) and mixtures of all of these. Every text must give the reference's ids.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from clipedge.runtime.errors import BundleError, InputError, TextError
from clipedge.runtime.tokenizer import Tokenizer

CONTEXT = 77
CORPUS_SIZE = 6691
INSTALL_HINT = "pip install --no-deps open_clip_torch"

# ----- the reference -----


def find_reference_file() -> Path | None:
    """Path of OpenCLIP's tokenizer.py, found without importing the `open_clip` package (its __init__ needs
    torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "tokenizer.py"
        if candidate.is_file():
            return candidate
    return None


def load_reference_module() -> ModuleType:
    """Execute OpenCLIP's tokenizer.py as a stand-alone module; raise with the install command if it is absent."""
    path = find_reference_file()
    if path is None:
        raise ModuleNotFoundError(f"OpenCLIP's tokenizer (the reference) is not installed: {INSTALL_HINT}")
    spec = importlib.util.spec_from_file_location("_openclip_reference_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----- the corpus -----
# Word tables, kept dense.
# fmt: off

NOUNS = (
    "dog cat bird car truck bicycle person woman man child horse cow sheep airplane boat train bus pizza cake "
    "banana apple orange sandwich laptop phone keyboard chair couch bed table clock vase book umbrella kite "
    "surfboard skateboard giraffe zebra elephant bear teddy toilet sink oven refrigerator mountain beach river "
    "street building bridge tower forest desert snow sunset city market kitchen garden"
).split()
ADJECTIVES = (
    "red blue green yellow black white small large old young happy sad wooden metal shiny blurry cropped bright "
    "dark cute tiny huge wet dry striped spotted fluffy rusty modern vintage"
).split()
VERBS = "sitting standing running jumping eating sleeping flying parked swimming playing lying waiting".split()
PLACES = "park street beach kitchen field room table road grass water snow sky garden market".split()
TEMPLATES = (
    "a photo of a {adj} {noun}.",
    "A {adj} {noun} {verb} in the {place}",
    "This is a picture of {n} {noun}s {verb} near a {noun2}.",
    "itap of a {noun}",
    "a bad photo of the {noun}.",
    "a close-up photo of the {adj} {noun}",
    "{Noun} and {noun2} on a {adj} {place}",
    "an origami {noun}.",
    "a sculpture of a {noun}",
    "the {adj} {noun} is {verb} while the {noun2} watches",
    "there are {n} {noun}s and {m} {noun2}s in this image",
    "A {NOUN} {VERB} ON THE {PLACE}!",
)

PUNCTUATION_PIECES = (
    "3.14159", "1,000,000", "2024-06-01", "10:30am", "$19.99", "50%", "#1", "No.7", "e.g.", "i.e.",
    "U.S.A.", "it's", "IT'S", "They'Ll", "can't", "won't", "y'all", "rock'n'roll", "we'd", "I'M", "you've",
    "'quoted'", '"double"', "--", "...", "?!", "!!!", "(parens)", "[brackets]", "{braces}", "a/b", "a\\b",
    "snake_case", "kebab-case", "user@example.com", "https://example.com/path?q=1", "C++", "C#", "F# minor",
    "1st", "2nd", "3rd", "100x", "4K", "1080p", "v2.0.1", "0xFF", "-42", "+7", "1e-5", "~", "`code`", "^_^",
    ":-)", "<3", "a*b", "x^2", "5'10\"", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "''", "'",
    "O'Brien", "'ſ", "it'ſ", "'K",
)

HTML_PIECES = (
    "&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&#x27;", "&nbsp;", "&eacute;", "&EACUTE;", "&copy;",
    "&hellip;", "&mdash;", "&amp;amp;", "&amp;lt;b&amp;gt;", "&amp;#39;", "&amp;amp;amp;",
    "&amp;amp;amp;amp;", "&amp", "&notanentity;", "&#128512;", "&#x1F600;", "&#0;", "&#xD800;",
    "&#1114112;", "AT&T", "R&D", "&&", "& ", "&lt;end_of_text&gt;", "<b>bold</b>",
    "&ntilde; &Ntilde; &NTILDE; &nTILDE;", "P&EACUTE;REZ", "&SZLIG;", "&Jscr;ohn", "&checkmark;", "&#8217;",
    "&rsquo;", "&ldquo;quoted&rdquo;", "&lt;3", "&gt;_&lt;", "&#65;&#66;", "&#x3C;p&#x3E;", "&apos;",
    "&amp;nbsp;", "&not", "this&not that", "&#9731;", "&#x2603;",
)

FTFY_PIECES = (
    "ﬁnancial", "ﬂuﬃest", "ﬀ", "ﬃ", "ﬄ", "ﬅ", "ﬆ", "Ĳssel", "ĳs", "ＬＯＵＤ　ＮＯＩＳＥＳ",
    "ｈｅｌｌｏ１２３", "ｳﾙﾄﾗﾏﾝ", "Ｕﾀｰﾝ", "‘single’", "“double”", "it’s", "ʼokina", "‛reversed‟",
    "\x1b[31mred\x1b[0m", "\x1b[1;32m", "bell\x07", "nul\x00char", "del\x7f", "\ufeffbom", "\u206aformat",
    "\ufff9anchor", "\ud83d\ude00", "lone\ud800surrogate", "\udfff", "soft\xadhyphen", "e\u0301",
    "A\u030angstrom", "n\u0303", "№", "™", "½", "²", "ⅷ", "𝐇𝐞𝐥𝐥𝐨", "𝓢𝓬𝓻𝓲𝓹𝓽", "Ω", "K", "Å", "\x80\x81",
    "\x85", "\x9c", "\x96dash", "âœ” No problems", "sÃ³", "voilÃ le travail", "Ã¼ber", "cafÃ©", "â€™",
    "â€œquoteâ€\x9d", "Ã\xa0 la", "Ð¿Ñ€Ð¸Ð²ÐµÑ‚", "ãƒ†ã‚¹ãƒˆ", "&macr;\\_(ã\x83\x84)_/&macr;",
    "Broken text&hellip; it&#x2019;s ﬂubberiﬁc!",
)
MOJIBAKE_SOURCES = (
    "café", "naïve", "über", "señor", "crème brûlée", "日本語", "😀 smile", "“quotes”", "—dash—", "…",
    "€100", "Ελληνικά", "русский", "ß", "Ω≈ç√", "🇫🇷",
)

EMOJI = (
    "😀", "😂", "🥲", "🤖", "🐶", "🐱", "🍕", "🎉", "❤️", "❤", "☺︎", "☺️", "👍", "👍🏻", "👍🏽", "👍🏿",
    "🙋🏾‍♀️", "👨‍👩‍👧‍👦", "👩🏽‍💻", "🧑‍🚀", "🏳️‍🌈", "🏳️‍⚧️", "🏴‍☠️", "🇺🇸", "🇯🇵", "🇩🇪", "🇫🇷", "🇧🇷",
    "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "1️⃣", "#️⃣", "*️⃣", "🔟", "©️", "®", "‼️", "🫠", "🫶🏼", "🪿", "🧌", "🐕‍🦺", "🐻‍❄️",
    "😶‍🌫️", "❤️‍🔥", "👁️‍🗨️", "🤝🏻", "💏🏿", "🧔‍♂️", "⚽", "☕", "☀️", "⭐", "✨", "🔥", "💯", "🆗",
    "🅰️", "Ⓜ️",
)

SCRIPT_SENTENCES = (
    "Café crème brûlée à la française", "naïve façade déjà vu", "Ångström Øresund Åland",
    "Straße Grüße Ärger", "Łódź Kraków Gdańsk", "Dvořák Čapek Šťastný", "São Paulo Açaí Pão",
    "İstanbul ılık Iğdır", "ǅemal ǈubljana", "Tiếng Việt có dấu", "Ελληνικά: Η γρήγορη καφέ αλεπού",
    "ΟΔΟΣ ΣΟΦΟΣ", "Съешь же ещё этих мягких булок", "Україна: їжак, ґанок, єнот", "Српски језик",
    "القط يجلس على السجادة", "مَرْحَبًا بِكُمْ ٠١٢٣٤", "سلام ۱۲۳ دنیا", "החתול יושב על השטיח",
    "שָׁלוֹם עֲלֵיכֶם", "बिल्ली चटाई पर बैठी है", "नमस्ते दुनिया १२३", "一只猫坐在垫子上",
    "猫がマットの上に座っている。", "「こんにちは」、世界！", "カタカナ ひらがな 漢字", "𠀀𠀁𪚥 rare CJK",
    "高清壁纸 4K", "고양이가 매트 위에 앉아 있다", "ᄀᄁᄂ ㄱㄴㄷ 한글", "แมวนั่งอยู่บนเสื่อ",
    "ภาษาไทย ๑๒๓", "ქართული ენა", "Հայերեն լեզու", "አማርኛ ቋንቋ", "தமிழ் மொழி", "বাংলা ভাষা", "བོད་ཡིག",
    "ᠮᠣᠩᠭᠣᠯ", "ພາສາລາວ", "ខ្មែរ", "ꦗꦮ", "𐌰𐌱𐌲 gothic", "ᚠᚢᚦ runes", "ⲁⲃⲅ coptic", "Ꭰꭱ cherokee", "ᐃᓄᒃᑎᑐᑦ",
    "ߒߞߏ", "ސުނަ", "ܣܘܪܝܝܐ",
)
SCRIPT_RANGES = (
    (0x00C0, 0x024F), (0x0370, 0x03FF), (0x0400, 0x04FF), (0x0590, 0x05FF), (0x0600, 0x06FF),
    (0x0900, 0x097F), (0x0E00, 0x0E7F), (0x1100, 0x11FF), (0x3040, 0x30FF), (0x4E00, 0x9FFF),
    (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x0980, 0x09FF), (0x0B80, 0x0BFF), (0x10A0, 0x10FF),
    (0x1E00, 0x1EFF), (0xFF00, 0xFFEF), (0x2000, 0x206F),
)

SEPARATORS = (
    " ", "  ", "\t", "\n", "\r\n", "\r", "\xa0", "\u2003", "\u3000", "\u200b", "\u2028", "\u2029", "\x85",
    "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\u180e", "\u202f", "\u205f", "\ufeff", " \t \n ",
    "\u00a0\u00a0",
)

SPECIAL_STRINGS = (
    "<|startoftext|>", "<|endoftext|>", "<start_of_text>", "<end_of_text>", "<START_OF_TEXT>",
    "<End_Of_Text>", "<start_of_text", "start_of_text>", "<<end_of_text>>", "&lt;start_of_text&gt;",
    "&amp;lt;end_of_text&amp;gt;", "<|ENDOFTEXT|>", "<startoftext>", "<start of text>", "＜start_of_text＞",
    "<end_of_text><end_of_text>",
    "<ſtart_of_text>",  # long s: already lower-case, yet case-folds to 's' under the pattern's IGNORECASE
    "<end_of_teﬅ>",  # 'st' ligature: ftfy turns it into "st", making the special string
)

EMPTY_LIKE = (
    "", " ", "\t", "\n\n", "\r\n", "\xa0", "\u3000", "\u200b", "\x00", "\x1b", "&nbsp;", "&#32;", "\ufeff",
    "  \t\n ", "\x0b\x0c", "\u2028", "&amp;nbsp;", "\x1b[0m", "\x7f", "\u180e",
)

# fmt: on


def _caption(rng: random.Random) -> str:
    noun, noun2 = rng.choice(NOUNS), rng.choice(NOUNS)
    text = rng.choice(TEMPLATES).format(
        adj=rng.choice(ADJECTIVES),
        noun=noun,
        noun2=noun2,
        Noun=noun.title(),
        NOUN=noun.upper(),
        verb=rng.choice(VERBS),
        VERB=rng.choice(VERBS).upper(),
        place=rng.choice(PLACES),
        PLACE=rng.choice(PLACES).upper(),
        n=rng.randint(2, 12),
        m=rng.choice(["two", "three", "many", "7"]),
    )
    return rng.choice([text, text, text.capitalize(), text.title(), text.upper()])


def _insert(rng: random.Random, text: str, piece: str) -> str:
    """Put `piece` at a random character position, with or without spaces around it."""
    at = rng.randint(0, len(text))
    pad = rng.choice(["", " "])
    return text[:at] + pad + piece + pad + text[at:]


def _mixed_pieces(rng: random.Random, pieces: tuple[str, ...], k: int) -> str:
    return _insert(rng, _caption(rng), " ".join(rng.choices(pieces, k=k)))


def _html_with_tags(rng: random.Random) -> str:
    """ftfy unescapes entities itself, repeatedly, unless the line holds a '<': then only html.unescape's two
    rounds apply, so these texts are where the reference's double unescape shows."""
    text = _mixed_pieces(rng, HTML_PIECES, rng.randint(1, 3))
    return _insert(rng, text, rng.choice(["<b>", "</i>", "<", "a < b", "<br/>", "&lt;", "<p>&amp;amp;"]))


def _mojibake(rng: random.Random) -> str:
    text = rng.choice(MOJIBAKE_SOURCES)
    codec = rng.choice(["latin-1", "cp1252", "mac_roman", "cp437"])
    broken = text.encode("utf-8").decode(codec, errors="replace")
    if rng.random() < 0.3:  # twice broken
        broken = broken.encode("utf-8").decode(codec, errors="replace")
    return _insert(rng, _caption(rng), broken)


def _script_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(SCRIPT_SENTENCES)
    words = []
    for _ in range(rng.randint(1, 6)):
        low, high = rng.choice(SCRIPT_RANGES)
        words.append("".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 8))))
    return " ".join(words)


def _emoji_text(rng: random.Random) -> str:
    run = "".join(rng.choices(EMOJI, k=rng.randint(1, 5)))
    return rng.choice([run, _insert(rng, _caption(rng), run), f"I love {run}!!!", run.replace("", " ").strip()])


def _whitespace_text(rng: random.Random) -> str:
    words = _caption(rng).split()
    text = words[0]
    for word in words[1:]:
        text += rng.choice(SEPARATORS) + word
    return rng.choice(SEPARATORS) + text + rng.choice(SEPARATORS)


def _long_text(rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return " ".join(_caption(rng) for _ in range(rng.randint(6, 20)))
    if kind == 1:
        return rng.choice("ab!7") * rng.randint(60, 400)
    if kind == 2:
        return "1234567890" * rng.randint(8, 30)
    if kind == 3:
        return "".join(rng.choices(EMOJI, k=rng.randint(40, 120)))
    if kind == 4:
        return "".join(rng.choices(SCRIPT_SENTENCES, k=rng.randint(5, 15)))
    return " ".join(rng.choice(["a", "cat", "the"]) for _ in range(rng.randint(70, 82)))  # around the 75-id limit


def _random_codepoints(rng: random.Random) -> str:
    def codepoint() -> str:
        roll = rng.random()
        if roll < 0.6:
            return chr(rng.randint(0, 0xFFFF))
        if roll < 0.8:
            return chr(rng.randint(0x10000, 0x10FFFF))
        return chr(rng.randint(0x20, 0x7E))

    return "".join(codepoint() for _ in range(rng.randint(1, 24)))


def _random_ascii(rng: random.Random) -> str:
    if rng.random() < 0.5:
        alphabet = [chr(c) for c in range(128)]  # every control character, '&', '<' and DEL included
    else:
        alphabet = [chr(c) for c in range(0x20, 0x7F)] + [" "] * 10 + list("\t\n\r\x0c")
    return "".join(rng.choices(alphabet, k=rng.randint(1, 40)))


# (family, count, generator): with the fixed pieces above, CORPUS_SIZE texts in all.
FAMILIES: tuple[tuple[str, int, Callable[[random.Random], str]], ...] = (
    ("caption", 1200, _caption),
    ("punctuation", 500, lambda rng: _mixed_pieces(rng, PUNCTUATION_PIECES, rng.randint(1, 4))),
    ("html", 450, lambda rng: _mixed_pieces(rng, HTML_PIECES, rng.randint(1, 3))),
    ("html-with-tags", 250, _html_with_tags),
    ("html-multiline", 100, lambda rng: "\n".join(_mixed_pieces(rng, HTML_PIECES, 1) for _ in range(3))),
    ("ftfy", 400, lambda rng: _mixed_pieces(rng, FTFY_PIECES, rng.randint(1, 3))),
    ("mojibake", 200, _mojibake),
    ("emoji", 350, _emoji_text),
    ("scripts", 1000, _script_text),
    ("whitespace", 300, _whitespace_text),
    ("special", 200, lambda rng: _insert(rng, _caption(rng), rng.choice(SPECIAL_STRINGS))),
    ("long", 200, _long_text),
    ("random-codepoints", 700, _random_codepoints),
    ("random-ascii", 500, _random_ascii),
    ("mixture", 80, lambda rng: " ".join(gen(rng) for _, _, gen in rng.sample(FAMILIES[:14], k=3))),
)


def build_corpus(seed: int = 0) -> list[str]:
    """The parity corpus: every fixed piece once, then seeded random texts per family."""
    rng = random.Random(seed)
    texts = [*EMPTY_LIKE, *SPECIAL_STRINGS, *HTML_PIECES, *FTFY_PIECES, *EMOJI, *SCRIPT_SENTENCES]
    texts += [" ".join(["a"] * n) for n in range(72, 80)]  # exactly around SOT + 75 ids + EOT
    for _, count, generate in FAMILIES:
        texts += [generate(rng) for _ in range(count)]
    return texts


# ----- fixtures -----


@pytest.fixture(scope="module")
def reference_module() -> ModuleType:
    try:
        return load_reference_module()
    except ModuleNotFoundError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def reference(reference_module: ModuleType):
    return reference_module.SimpleTokenizer()


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.default()


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return build_corpus()


@pytest.fixture(scope="module")
def reference_ids(reference, corpus: list[str]) -> np.ndarray:
    return reference(corpus, context_length=CONTEXT).numpy()


def _mismatch_report(texts: list[str], ours: np.ndarray, theirs: np.ndarray, limit: int = 5) -> str:
    rows = np.flatnonzero((ours != theirs).any(axis=1))
    lines = [f"{len(rows)} of {len(texts)} texts differ from OpenCLIP; first {min(limit, len(rows))}:"]
    for i in rows[:limit]:
        lines.append(f"  [{i}] {texts[i]!r:.100}\n      ours:     {ours[i][ours[i] != 0].tolist()}")
        lines.append(f"      openclip: {theirs[i][theirs[i] != 0].tolist()}")
    return "\n".join(lines)


def _write_hf_files(directory: Path, reference_module: ModuleType) -> None:
    """HF's vocab.json + merges.txt for CLIP, built from OpenAI's gz file with the reference's own byte table."""
    lines = gzip.open(reference_module.default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(reference_module.bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    items = list(vocab.items())
    random.Random(1).shuffle(items)  # vocab.json order must not matter, only its ids
    (directory / "vocab.json").write_text(json.dumps(dict(items), ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


# ----- parity with the reference -----


def test_reference_is_installed() -> None:
    """Reported as a failure, not a skip: without the reference no parity claim below means anything."""
    assert find_reference_file() is not None, f"OpenCLIP's tokenizer (the reference) is not installed: {INSTALL_HINT}"


def test_corpus_is_deterministic_and_sized(corpus: list[str]) -> None:
    assert len(corpus) == CORPUS_SIZE
    assert build_corpus() == corpus


def test_ids_match_openclip(tokenizer: Tokenizer, corpus: list[str], reference_ids: np.ndarray) -> None:
    ours = tokenizer(corpus)
    assert ours.shape == reference_ids.shape
    assert np.array_equal(ours, reference_ids), _mismatch_report(corpus, ours, reference_ids)


def test_ids_match_openclip_with_warm_cache(tokenizer: Tokenizer, corpus: list[str], reference_ids) -> None:
    """Second pass goes through the word cache; it must not change a single id."""
    tokenizer(corpus)
    ours = tokenizer(corpus)
    assert np.array_equal(ours, reference_ids), _mismatch_report(corpus, ours, reference_ids)


def test_untruncated_encode_matches_openclip(tokenizer: Tokenizer, reference, corpus: list[str]) -> None:
    mismatches = [(i, t) for i, t in enumerate(corpus) if tokenizer.encode(t) != reference.encode(t)]
    assert not mismatches, f"{len(mismatches)} texts differ, first: {mismatches[:5]!r:.1000}"


@pytest.mark.parametrize("context_length", [2, 16, 100])
def test_other_context_lengths_match_openclip(tokenizer, reference, corpus, context_length: int) -> None:
    texts = corpus[::7]
    ours = tokenizer(texts, context_length=context_length)
    theirs = reference(texts, context_length=context_length).numpy()
    assert np.array_equal(ours, theirs), _mismatch_report(texts, ours, theirs)


def test_special_ids_and_sizes_match_openclip(tokenizer: Tokenizer, reference) -> None:
    assert (tokenizer.sot_token_id, tokenizer.eot_token_id) == (reference.sot_token_id, reference.eot_token_id)
    assert (tokenizer.sot_token_id, tokenizer.eot_token_id) == (49406, 49407)
    assert tokenizer.vocab_size == reference.vocab_size == 49408
    assert tokenizer.context_length == CONTEXT


def test_literal_special_strings_follow_openclip(tokenizer: Tokenizer) -> None:
    """OpenCLIP maps its own spellings to SOT/EOT (also when HTML-escaped) and splits OpenAI's as plain text."""
    assert tokenizer.encode("<start_of_text>") == [49406]
    assert tokenizer.encode("a <END_OF_TEXT> b")[1] == 49407
    assert tokenizer.encode("&lt;end_of_text&gt;") == [49407]
    assert 49406 not in tokenizer.encode("<|startoftext|>")


# ----- vocabulary files -----


def test_hf_files_give_the_same_ids(tmp_path: Path, reference_module, corpus, reference_ids) -> None:
    _write_hf_files(tmp_path, reference_module)
    hf = Tokenizer.from_files(tmp_path)
    assert (hf.sot_token_id, hf.eot_token_id, hf.vocab_size) == (49406, 49407, 49408)
    ours = hf(corpus)
    assert np.array_equal(ours, reference_ids), _mismatch_report(corpus, ours, reference_ids)
    by_file = Tokenizer.from_files(tmp_path / "vocab.json")  # naming one of the pair means its directory
    assert np.array_equal(by_file(corpus[::9]), reference_ids[::9])


def test_from_files_reads_the_gz_by_file_or_directory(reference_module, corpus, reference_ids) -> None:
    gz = Path(reference_module.default_bpe())
    for source in (gz, gz.parent):
        ours = Tokenizer.from_files(source)(corpus[::5])
        assert np.array_equal(ours, reference_ids[::5])


def test_from_files_without_vocabulary_raises(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no tokenizer files"):
        Tokenizer.from_files(tmp_path)
    with pytest.raises(BundleError, match="no tokenizer files"):
        Tokenizer.from_files(tmp_path / "missing.txt.gz")


def test_from_files_with_mismatched_vocab_raises(tmp_path: Path, reference_module) -> None:
    _write_hf_files(tmp_path, reference_module)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    del vocab["the</w>"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(BundleError, match="do not belong together"):
        Tokenizer.from_files(tmp_path)


def test_from_files_with_damaged_gz_raises(tmp_path: Path) -> None:
    (tmp_path / "bpe_simple_vocab_16e6.txt.gz").write_bytes(b"not gzip")
    with pytest.raises(BundleError, match="not a gzip"):
        Tokenizer.from_files(tmp_path)


def test_save_then_from_files_round_trips(tmp_path: Path, tokenizer, reference_module, corpus, reference_ids) -> None:
    names = tokenizer.save(tmp_path / "tokenizer")
    assert names == ["bpe_simple_vocab_16e6.txt.gz", "LICENSE-openai-clip.txt"]
    assert all((tmp_path / "tokenizer" / name).is_file() for name in names)
    assert "Copyright (c) 2021 OpenAI" in (tmp_path / "tokenizer" / names[1]).read_text(encoding="utf-8")
    loaded = Tokenizer.from_files(tmp_path / "tokenizer")
    ours = loaded(corpus)
    assert np.array_equal(ours, reference_ids), _mismatch_report(corpus, ours, reference_ids)
    # The saved file is still OpenAI's format: the reference reads it to the same ids.
    saved_gz = str(tmp_path / "tokenizer" / names[0])
    theirs = reference_module.SimpleTokenizer(bpe_path=saved_gz)(corpus[::5], context_length=CONTEXT).numpy()
    assert np.array_equal(theirs, reference_ids[::5])


def test_save_is_byte_reproducible(tmp_path: Path, tokenizer: Tokenizer) -> None:
    digests = []
    for name in ("a", "b"):
        tokenizer.save(tmp_path / name)
        digests.append(hashlib.sha256((tmp_path / name / "bpe_simple_vocab_16e6.txt.gz").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_save_refuses_ids_out_of_openai_order(tmp_path: Path, tokenizer: Tokenizer) -> None:
    vocab = dict(tokenizer._vocab)
    vocab["the</w>"], vocab["a</w>"] = vocab["a</w>"], vocab["the</w>"]
    shuffled = Tokenizer(vocab, tokenizer._merges, tokenizer.sot_token_id, tokenizer.eot_token_id)
    with pytest.raises(BundleError, match="not in OpenAI's order"):
        shuffled.save(tmp_path)


# ----- shapes, truncation, bad input -----


def test_output_is_int32_batch_by_context(tokenizer: Tokenizer) -> None:
    ids = tokenizer(["a cat", "a dog", ""])
    assert ids.dtype == np.int32 and ids.shape == (3, CONTEXT)
    assert ids[2, :3].tolist() == [49406, 49407, 0]


def test_single_string_is_a_batch_of_one(tokenizer: Tokenizer) -> None:
    assert np.array_equal(tokenizer("a cat"), tokenizer(["a cat"]))
    assert tokenizer("a cat").shape == (1, CONTEXT)


def test_empty_batch(tokenizer: Tokenizer) -> None:
    ids = tokenizer([])
    assert ids.shape == (0, CONTEXT) and ids.dtype == np.int32


def test_truncation_keeps_eot_last(tokenizer: Tokenizer) -> None:
    ids = tokenizer(["word " * 200, "a cat"])
    assert ids[0, 0] == tokenizer.sot_token_id and ids[0, -1] == tokenizer.eot_token_id
    assert (ids[0] != 0).all()
    assert ids[1, -1] == 0


def test_truncate_false_raises_naming_the_text(tokenizer: Tokenizer) -> None:
    with pytest.raises(TextError, match=r"text 1 .* is 200 tokens, 202 with SOT and EOT, over the context length 77"):
        tokenizer(["a cat", "cat " * 200], truncate=False)


def test_truncate_false_accepts_an_exact_fit(tokenizer: Tokenizer) -> None:
    ids = tokenizer([" ".join(["a"] * 75)], truncate=False)
    assert ids[0, -1] == tokenizer.eot_token_id
    with pytest.raises(TextError, match="text 0"):
        tokenizer([" ".join(["a"] * 76)], truncate=False)


@pytest.mark.parametrize("bad", [None, b"a cat", 3, 2.5, ["nested"]])
def test_non_string_item_raises(tokenizer: Tokenizer, bad: object) -> None:
    with pytest.raises(TextError, match=rf"text 1 is {type(bad).__name__}\b"):
        tokenizer(["a cat", bad])
    with pytest.raises(TextError, match=type(bad).__name__):
        tokenizer.encode(bad)


@pytest.mark.parametrize("bad", [b"a cat", 42, None])
def test_non_sequence_batch_raises(tokenizer: Tokenizer, bad: object) -> None:
    with pytest.raises(TextError, match="texts must be a str or a sequence of str"):
        tokenizer(bad)


@pytest.mark.parametrize("bad", [0, 1, -5, 2.0, True, "77"])
def test_bad_context_length_raises(tokenizer: Tokenizer, bad: object) -> None:
    with pytest.raises(InputError, match="context_length"):
        tokenizer("a cat", context_length=bad)


# ----- decode -----


@pytest.mark.parametrize(
    "text", ["a photo of a cat", "two dogs playing in the snow", "the quick brown fox jumps over the lazy dog"]
)
def test_decode_inverts_encode_for_plain_text(tokenizer: Tokenizer, text: str) -> None:
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode(tokenizer(text)[0]) == text  # SOT, EOT and padding dropped


def test_decode_matches_openclip_text(tokenizer: Tokenizer, reference, corpus: list[str]) -> None:
    """For caption texts OpenCLIP's decode gives the same words, with one trailing space."""
    for text in corpus[: len(corpus) // 5]:
        ids = tokenizer.encode(text)
        if text.isascii() and text.isprintable() and "&" not in text and "<" not in text:
            assert tokenizer.decode(ids) == reference.decode(ids).removesuffix(" "), text


def test_decode_rejects_unknown_ids(tokenizer: Tokenizer) -> None:
    with pytest.raises(InputError, match="token id 99999 at position 1"):
        tokenizer.decode([320, 99999])
    with pytest.raises(InputError, match="1-D"):
        tokenizer.decode(np.zeros((2, 3), dtype=np.int32))


# ----- runtime hygiene -----


def test_import_pulls_in_neither_tensorflow_nor_torch() -> None:
    code = (
        "import sys, clipedge.runtime.tokenizer as t; t.Tokenizer.default()('a cat'); "
        "heavy = [m for m in ('tensorflow', 'torch', 'transformers') if m in sys.modules]; "
        "sys.exit(f'imported {heavy}' if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
