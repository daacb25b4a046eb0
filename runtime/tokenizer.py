"""CLIP's byte-level BPE tokenizer, giving the same ids as OpenCLIP's `SimpleTokenizer` for every input.

Credit: the vocabulary layout (256 byte symbols, the same with `</w>`, 48894 merges, SOT, EOT = 49408 ids),
the byte-to-unicode table (the standard GPT-2 mapping) and the pre-tokenization regex come from openai/CLIP
`clip/simple_tokenizer.py` (MIT, Copyright (c) 2021 OpenAI; see LICENSE-openai-clip.txt beside this file).
The special-token spellings matched inside text (`<start_of_text>`, `<end_of_text>`) follow
mlfoundations/open_clip `src/open_clip/tokenizer.py`, which is the reference here: OpenAI's own tokenizer
matches `<|startoftext|>` instead, and HF `transformers`' `CLIPTokenizer` differs from both on HTML entities and
ftfy fixes. The code is written for clipedge: per-word id caching and an ASCII fast path make it faster
than the reference while the tests hold it to the reference's ids on thousands of texts.

Text pipeline (the reference's, step for step): ftfy.fix_text -> html.unescape twice -> collapse whitespace ->
lower-case -> regex pre-tokens -> UTF-8 bytes as unicode symbols -> BPE merges by rank -> ids.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import itertools
import json
import operator
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import regex

from clipedge.runtime import bpe
from clipedge.runtime.errors import BundleError, InputError, TextError
from clipedge.runtime.text_clean import _FTFY_NO_OP, _LONG_TEXT, _TAIL, _clean, _clean_cased, _safe_cut  # noqa: F401 (tests read _FTFY_NO_OP here)

__all__ = ["Tokenizer"]

CONTEXT_LENGTH = 77  # every OpenAI/OpenCLIP CLIP text tower has 77 positions
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"  # OpenAI's file name; also what `save()` writes
LICENSE_FILE = "LICENSE-openai-clip.txt"
HF_VOCAB_FILE = "vocab.json"
HF_MERGES_FILE = "merges.txt"

# OpenAI keeps only the first merges of the 262k-line file: 49408 ids = 2 * 256 byte symbols + merges + SOT + EOT.
N_MERGES = 49408 - 2 * 256 - 2  # 48894; openai/CLIP writes this as the slice merges[1:49152-256-2+1]
_END_OF_WORD = "</w>"
_SHORT_WORD = 48  # symbols; longer words take the heap BPE (same ids, O(n log n) instead of O(n^2))
# Literal special-token strings in a text become SOT/EOT. These are OpenCLIP's spellings; "<|startoftext|>" in a
# text is ordinary BPE there, and so it is here.
_SOT_TEXT, _EOT_TEXT = "<start_of_text>", "<end_of_text>"
# Names the special tokens carry in vocabularies (HF vocab.json uses OpenAI's; OpenCLIP's are accepted too).
_SOT_NAMES = ("<|startoftext|>", _SOT_TEXT)
_EOT_NAMES = ("<|endoftext|>", _EOT_TEXT)
# openai/CLIP clip/simple_tokenizer.py, with OpenCLIP's special-token alternatives; IGNORECASE as in both.
_PRETOKEN_PATTERN = "|".join(
    [regex.escape(_SOT_TEXT), regex.escape(_EOT_TEXT), r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""]
)
@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2 byte -> printable-character table, in the order that fixes ids 0..255.

    BPE works on strings, so every UTF-8 byte needs a visible, non-whitespace stand-in: printable Latin-1 bytes
    stand for themselves, the other 68 bytes are shifted to U+0100 and up. Insertion order matters: token id i
    (i < 256) is the i-th value of this dict.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shifted = (b for b in range(256) if b not in table)
    for offset, b in enumerate(shifted):
        table[b] = chr(256 + offset)
    return table


def _base_symbols() -> list[str]:
    """The 512 tokens every vocabulary starts with: each byte symbol, then each byte symbol ending a word."""
    symbols = list(_bytes_to_unicode().values())
    return symbols + [s + _END_OF_WORD for s in symbols]


def _canonical_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Token -> id in OpenAI's order: the 512 base symbols, then one token per merge, by rank."""
    tokens = _base_symbols() + [a + b for a, b in merges]
    return {token: i for i, token in enumerate(tokens)}


def _parse_merges(lines: Iterable[str], source: str, first_line: int) -> list[tuple[str, str]]:
    """Turn 'a b' lines (header already dropped) into merge pairs, rank = position; blank lines are skipped."""
    merges = []
    for number, line in enumerate(lines, start=first_line):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise BundleError(f"{source}: line {number} {line!r} is not a merge of two symbols; the file is damaged")
        merges.append((parts[0], parts[1]))
    return merges


def _read_openai_merges(stream: IO[bytes], source: str) -> list[tuple[str, str]]:
    """Read the first N_MERGES merges of a bpe_simple_vocab_16e6.txt.gz stream (line 1 is a header)."""
    try:
        # newline="\n": split lines on LF only, as the reference's .split("\n") does
        with gzip.open(stream, "rt", encoding="utf-8", newline="\n") as lines:
            next(lines, None)
            head = list(itertools.islice(lines, N_MERGES))
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise BundleError(f"{source} is not a gzip-compressed UTF-8 BPE merges file: {err}") from err
    merges = _parse_merges(head, source, first_line=2)
    if not merges:
        raise BundleError(f"{source} holds no BPE merges; re-export the bundle or pass OpenAI's {VOCAB_FILE}")
    return merges


def _special_id(vocab: Mapping[str, int], names: Sequence[str], source: str) -> int:
    for name in names:
        if name in vocab:
            return vocab[name]
    raise BundleError(f"{source} has none of the special tokens {list(names)}; is it a CLIP vocabulary?")


def _read_hf_files(directory: Path) -> tuple[dict[str, int], list[tuple[str, str]], int, int]:
    """Read HF's vocab.json (token -> id) and merges.txt ('#version' header, then one merge per line)."""
    vocab_path, merges_path = directory / HF_VOCAB_FILE, directory / HF_MERGES_FILE
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        lines = merges_path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"cannot read the HF tokenizer files in {directory}: {err}") from err
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise BundleError(f"{vocab_path} must map each token to an integer id")
    header = 1 if lines and lines[0].startswith("#version") else 0
    merges = _parse_merges(lines[header:], str(merges_path), first_line=1 + header)
    sot = _special_id(vocab, _SOT_NAMES, str(vocab_path))
    eot = _special_id(vocab, _EOT_NAMES, str(vocab_path))
    specials = {*_SOT_NAMES, *_EOT_NAMES}
    bpe_vocab = {token: i for token, i in vocab.items() if token not in specials}
    return bpe_vocab, merges, sot, eot


def _batch(texts: str | Sequence[str]) -> list[str]:
    """Accept one str or a sequence of str; name the first item that is not a str."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise TextError(f"texts must be a str or a sequence of str, got {type(texts).__name__}; decode bytes first")
    batch = list(texts)
    for index, text in enumerate(batch):
        if not isinstance(text, str):
            raise TextError(f"text {index} is {type(text).__name__} ({text!r:.60}), not str; pass text as str")
    return batch


def _check_context_length(context_length: Any) -> int:
    try:
        length = operator.index(context_length)
    except TypeError:
        length = -1
    if isinstance(context_length, bool) or length < 2:
        raise InputError(f"context_length must be an int >= 2 (room for SOT and EOT), got {context_length!r}")
    return length


class Tokenizer:
    """CLIP's BPE tokenizer: texts -> int32 ids [B, context_length] as the text tower's `input_ids`.

    Build it with `Tokenizer.default()` (OpenAI's vocabulary shipped with clipedge) or `Tokenizer.from_files()`
    (a bundle's `tokenizer/` dir, HF `vocab.json` + `merges.txt`, or a `bpe_simple_vocab_16e6.txt.gz`).
    Each row is SOT, the text's BPE ids, EOT, then zeros, exactly as OpenCLIP's `SimpleTokenizer` returns.
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Sequence[tuple[str, str]],
        sot_token_id: int,
        eot_token_id: int,
        context_length: int = CONTEXT_LENGTH,
        cache_size: int = 1 << 16,
    ) -> None:
        """`vocab` maps BPE tokens (byte symbols, `</w>` marking a word's end) to ids; `merges` are ranked pairs.

        Word -> ids results are cached (`cache_size` words, dropped all at once when full, so memory stays bounded
        on a device that tokenizes user text forever).
        """
        self._vocab = dict(vocab)
        self._merges = [tuple(pair) for pair in merges]
        self._ranks = {pair: rank for rank, pair in enumerate(self._merges)}
        self._check_vocab()
        self.sot_token_id = int(sot_token_id)
        self.eot_token_id = int(eot_token_id)
        self.context_length = _check_context_length(context_length)
        self.vocab_size = max([*self._vocab.values(), self.sot_token_id, self.eot_token_id]) + 1
        self._byte_symbols = _bytes_to_unicode()
        self._pattern = regex.compile(_PRETOKEN_PATTERN, regex.IGNORECASE)
        self._cache_size = cache_size
        self._cache: dict[str, tuple[int, ...]] = {}
        self._longest = max(len(token.removesuffix(_END_OF_WORD)) for token in self._vocab)  # in byte symbols
        self._specials = {_SOT_TEXT: (self.sot_token_id,), _EOT_TEXT: (self.eot_token_id,)}

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"

    # ----- construction -----

    @classmethod
    def default(cls, *, context_length: int = CONTEXT_LENGTH) -> Tokenizer:
        """OpenAI CLIP's vocabulary as shipped inside clipedge.runtime (used by every OpenAI/OpenCLIP CLIP)."""
        resource = importlib.resources.files(__package__).joinpath(VOCAB_FILE)
        with resource.open("rb") as stream:
            merges = _read_openai_merges(stream, f"clipedge.runtime/{VOCAB_FILE}")
        return cls._from_openai_merges(merges, context_length)

    @classmethod
    def from_files(
        cls, directory_or_file: str | os.PathLike[str], *, context_length: int = CONTEXT_LENGTH
    ) -> Tokenizer:
        """Load a vocabulary from a directory or a file.

        A directory may hold `bpe_simple_vocab_16e6.txt.gz` (OpenAI's format, what `save()` writes; preferred when
        both are present) or HF's `vocab.json` + `merges.txt` (naming either file means that pair, whatever else its
        directory holds: a bundle names the files it checked). Any other file is read as OpenAI's gzip format. Both
        formats give the same ids for CLIP's vocabulary.
        """
        path = Path(directory_or_file)
        if path.name in (HF_VOCAB_FILE, HF_MERGES_FILE):
            path = path.parent
            if (path / HF_VOCAB_FILE).is_file() and (path / HF_MERGES_FILE).is_file():
                vocab, merges, sot, eot = _read_hf_files(path)
                return cls(vocab, merges, sot, eot, context_length=context_length)
        if path.is_dir() and (path / VOCAB_FILE).is_file():
            path = path / VOCAB_FILE
        if path.is_file():
            with path.open("rb") as stream:
                return cls._from_openai_merges(_read_openai_merges(stream, str(path)), context_length)
        if path.is_dir() and (path / HF_VOCAB_FILE).is_file() and (path / HF_MERGES_FILE).is_file():
            vocab, merges, sot, eot = _read_hf_files(path)
            return cls(vocab, merges, sot, eot, context_length=context_length)
        raise BundleError(
            f"no tokenizer files at {path}: expected {VOCAB_FILE}, or {HF_VOCAB_FILE} + {HF_MERGES_FILE}, "
            "or the path of a .txt.gz merges file"
        )

    @classmethod
    def _from_openai_merges(cls, merges: list[tuple[str, str]], context_length: int) -> Tokenizer:
        vocab = _canonical_vocab(merges)
        return cls(vocab, merges, len(vocab), len(vocab) + 1, context_length=context_length)

    def _check_vocab(self) -> None:
        """Fail at load, naming the token, rather than with a KeyError on some later text."""
        needed = [s for s in _base_symbols() if s not in self._vocab]
        needed += [a + b for a, b in self._merges if a + b not in self._vocab]
        if needed:
            raise BundleError(
                f"the vocabulary lacks {len(needed)} tokens the merges can produce (first: {needed[0]!r}); "
                "vocab and merges files do not belong together"
            )

    # ----- saving -----

    def save(self, directory: str | os.PathLike[str]) -> list[str]:
        """Write the vocabulary into `directory` (a bundle's `tokenizer/` dir); return the file names written.

        Writes `bpe_simple_vocab_16e6.txt.gz` holding only the merges used (about a quarter of OpenAI's file; still
        readable by OpenAI/OpenCLIP's tokenizers), gzip'd with a fixed mtime so its sha256 is reproducible, and the
        MIT licence notice that must travel with OpenAI's vocabulary.
        """
        if self._vocab != _canonical_vocab(self._merges) or (self.sot_token_id, self.eot_token_id) != (
            len(self._vocab),
            len(self._vocab) + 1,
        ):
            raise BundleError(
                f"this vocabulary's ids are not in OpenAI's order, so {VOCAB_FILE} cannot represent it; "
                f"ship its {HF_VOCAB_FILE} and {HF_MERGES_FILE} instead"
            )
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self._merges)
        with (target / VOCAB_FILE).open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(text.encode("utf-8"))
        licence = importlib.resources.files(__package__).joinpath(LICENSE_FILE).read_bytes()
        (target / LICENSE_FILE).write_bytes(licence)
        return [VOCAB_FILE, LICENSE_FILE]

    # ----- BPE -----

    def _merge(self, symbols: list[str]) -> list[str]:
        return bpe.merge(symbols, self._ranks)

    def _merge_long(self, symbols: list[str]) -> list[str]:
        return bpe.merge_long(symbols, self._ranks, self._merges)

    def _symbols(self, word: str) -> list[str]:
        """A pre-token's UTF-8 bytes as BPE symbols."""
        try:
            data = word.encode("utf-8")
        except UnicodeEncodeError as err:  # lone surrogates (e.g. a str decoded with surrogateescape)
            raise TextError(f"it holds {err.object[err.start:err.end]!r}, unpaired surrogate code points that are "
                            "not Unicode text; decode its bytes with errors='replace'") from None
        return [self._byte_symbols[b] for b in data]

    def _word_ids(self, word: str) -> tuple[int, ...]:
        """Ids of one pre-token: its UTF-8 bytes as symbols, the last marked as a word end, then merged."""
        special = self._specials.get(word)
        if special is not None:
            return special
        symbols = self._symbols(word)
        symbols[-1] += _END_OF_WORD
        merged = self._merge(symbols) if len(symbols) <= _SHORT_WORD else self._merge_long(symbols)
        return tuple(self._vocab[token] for token in merged)

    def _head_ids(self, word: str, count: int) -> tuple[int, ...] | None:
        """The first `count` ids of a pre-token that starts with `word` and is far longer than `count` tokens need
        (bpe.merge_head), or None where only merging the whole word can tell."""
        near = 2 * (count * self._longest + 64)  # characters: at least as many UTF-8 bytes, so symbols
        if len(word) <= near:
            return None
        head = bpe.merge_head(self._symbols(word[:near]), self._ranks, self._merges, count, self._longest)
        return None if head is None else tuple(self._vocab[token] for token in head)

    def _cached_ids(self, word: str) -> tuple[int, ...]:
        word_ids = self._cache.get(word)
        if word_ids is None:
            word_ids = self._word_ids(word)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[word] = word_ids
        return word_ids

    def _encode(self, text: str, limit: int | None = None) -> list[int]:
        """BPE ids of a text; with `limit`, stop once that many are known (the rest would be cut off anyway): a long
        text is cleaned only as far as needed (`_encode_head`), a long word merged only at its start (`_head_ids`)."""
        if limit is not None and len(text) > _LONG_TEXT:
            head_ids = self._encode_head(text, limit)
            if head_ids is not None:
                return head_ids
        ids: list[int] = []
        for match in self._pattern.finditer(_clean(text)):
            word = match.group()
            head = self._head_ids(word, limit - len(ids)) if limit is not None else None
            ids.extend(self._cached_ids(word) if head is None else head)
            if limit is not None and len(ids) >= limit:
                break
        return ids

    def _encode_head(self, text: str, limit: int) -> list[int] | None:
        """The first `limit` ids of a long text from a head of it, growing fourfold until the head yields them;
        None when the head would be the whole text (or holds a capital sigma) and `_encode` must do it all.

        Only pre-tokens that end before the head's last _TAIL characters are taken as they are (the regex's
        matches there are the whole text's: the head was cut where its cleaning is the start of the whole text's,
        `_safe_cut`); a pre-token running into the tail is long, and its start gives its first ids (`_head_ids`).
        str.lower is per character but for Σ, whose final form depends on what follows, however far: a head with
        one is not used."""
        size = _LONG_TEXT
        while size < len(text):
            end = _safe_cut(text, size)
            cased = _clean_cased(text[:end]) if end < len(text) else "Σ"
            if "Σ" in cased:
                return None
            cleaned = cased.lower()
            trusted = len(cleaned) - _TAIL
            ids: list[int] = []
            for match in self._pattern.finditer(cleaned, 0, trusted):
                head = None if match.end() < trusted else self._head_ids(match.group(), limit - len(ids))
                if match.end() >= trusted and head is None:
                    break
                ids.extend(self._cached_ids(match.group()) if head is None else head)
                if len(ids) >= limit:
                    return ids
            size *= 4
        return None

    # ----- public encode / decode -----

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without SOT/EOT and without truncation."""
        if not isinstance(text, str):
            raise TextError(f"encode() needs a str, got {type(text).__name__} ({text!r:.60})")
        try:
            return self._encode(text)
        except TextError as err:
            raise TextError(f"text {text!r:.60}: {err}") from None

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None, truncate: bool = True
    ) -> np.ndarray:
        """Tokenize a batch: int32 [B, context_length] rows of SOT, ids, EOT, zero padding.

        A text too long for the context is cut so that EOT stays the last token (OpenCLIP's rule); with
        `truncate=False` it raises TextError naming the text instead. "" gives [SOT, EOT] like the reference.
        """
        batch = _batch(texts)
        length = self.context_length if context_length is None else _check_context_length(context_length)
        out = np.zeros((len(batch), length), dtype=np.int32)
        for index, text in enumerate(batch):
            try:
                ids = self._encode(text, limit=length - 2 if truncate else None)
            except TextError as err:
                raise TextError(f"text {index} ({text!r:.60}): {err}") from None
            if len(ids) + 2 > length:
                if not truncate:
                    raise TextError(
                        f"text {index} ({text!r:.60}) is {len(ids)} tokens, {len(ids) + 2} with SOT and EOT, over "
                        f"the context length {length}; shorten it or call with truncate=True"
                    )
                ids = ids[: length - 2]
            out[index, : len(ids) + 2] = [self.sot_token_id, *ids, self.eot_token_id]
        return out

    @functools.cached_property
    def _id_bytes(self) -> dict[int, bytes]:
        """id -> UTF-8 bytes, a word end becoming a space; SOT/EOT map to nothing. Built on first decode."""
        byte_of = {symbol: b for b, symbol in _bytes_to_unicode().items()}
        table = {self.sot_token_id: b"", self.eot_token_id: b""}
        for token, i in self._vocab.items():
            word_end = token.endswith(_END_OF_WORD)
            body = token[: -len(_END_OF_WORD)] if word_end else token
            table[i] = bytes(byte_of[c] for c in body) + (b" " if word_end else b"")
        return table

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of `encode()` ids or of one row of `__call__()`: SOT/EOT dropped, trailing zero padding ignored.

        Trailing zeros are always padding: id 0 ('!' inside a word) can never end an encoding, because every
        word's last token carries `</w>`. The result is the cleaned, lower-cased text with spaces between
        pre-tokens ("hello , world !"), as OpenAI's decode gives it.
        """
        array = np.asarray(ids)
        if array.ndim != 1 or (array.size and not np.issubdtype(array.dtype, np.integer)):
            raise InputError(f"decode() needs a 1-D sequence of int ids, got shape {array.shape} of {array.dtype}")
        values = array.tolist()
        while values and values[-1] == 0:
            values.pop()
        table = self._id_bytes
        unknown = [(pos, i) for pos, i in enumerate(values) if i not in table]
        if unknown:
            pos, i = unknown[0]
            raise InputError(f"token id {i} at position {pos} is not in the vocabulary (size {self.vocab_size})")
        return b"".join(table[i] for i in values).decode("utf-8", errors="replace").removesuffix(" ")
