// CLIP's byte-level BPE tokenizer for browsers and Node.js >= 20: the ids of clipedge's Python tokenizer
// (runtime/tokenizer.py, itself held to OpenCLIP's SimpleTokenizer), for every text, with no dependencies.
//
// Credit: the vocabulary layout (256 byte symbols, the same with `</w>`, 48894 merges, SOT, EOT), the byte-to-unicode
// table (the standard GPT-2 mapping) and the pre-tokenization regex come from openai/CLIP `clip/simple_tokenizer.py`
// (MIT, Copyright (c) 2021 OpenAI; see runtime/LICENSE-openai-clip.txt). The special-token spellings matched inside
// text (`<start_of_text>`, `<end_of_text>`) follow mlfoundations/open_clip `src/open_clip/tokenizer.py`. The text
// cleaning ports ftfy's `fix_text` (MIT, Copyright (c) 2023 Robyn Speer) and Python's `html.unescape`. Written for
// clipedge; tests/ports/test_tokenizer_ports.py holds it to the Python tokenizer's ids on thousands of texts.
//
// Text pipeline (the Python tokenizer's, step for step): ftfy.fix_text -> html.unescape twice -> collapse
// whitespace -> lower-case -> regex pre-tokens -> UTF-8 bytes as unicode symbols -> BPE merges by rank -> ids.
// JavaScript's own Unicode data (toLowerCase, normalize, \s, \p{L}) is whatever Unicode version the browser ships,
// so none of it is used: Python's str.lower (Final_Sigma included), str.split's whitespace, unicodedata's NFC, the
// regex module's \p{L} and \p{N}, and Python's \s, \w and \d inside ftfy's regexes come from
// clip_tokenizer_tables.mjs, generated from the Python reference by tests/ports/make_entity_table.py. The ids do not
// depend on the browser's or Node's Unicode version.
//
// Usage:
//   import { loadClipTokenizer } from './clip_tokenizer.mjs';
//   const tokenizer = await loadClipTokenizer('bundle/tokenizer/');   // or the .txt.gz, or vocab.json/merges.txt
//   const rows = tokenizer.tokenize(['a photo of a cat']);           // Int32Array rows of 77: SOT, ids, EOT, 0...
//   rows[0].buffer                                                   // the whole batch, flat [B * 77]

import { REGEXES, TABLES } from './clip_tokenizer_tables.mjs';

export const CONTEXT_LENGTH = 77; // every OpenAI/OpenCLIP CLIP text tower has 77 positions
export const VOCAB_FILE = 'bpe_simple_vocab_16e6.txt.gz';
export const HF_VOCAB_FILE = 'vocab.json';
export const HF_MERGES_FILE = 'merges.txt';

// OpenAI keeps only the first merges of the 262k-line file: 49408 ids = 2 * 256 byte symbols + merges + SOT + EOT.
const N_MERGES = 49408 - 2 * 256 - 2;
const END_OF_WORD = '</w>';
const SHORT_WORD = 48; // symbols; longer words take the heap BPE (same ids, O(n log n) instead of O(n^2))
// Literal special-token strings in a text become SOT/EOT (OpenCLIP's spellings; "<|startoftext|>" is plain text).
const SOT_TEXT = '<start_of_text>';
const EOT_TEXT = '<end_of_text>';
const CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];
// Names the special tokens carry in vocabularies (HF vocab.json uses OpenAI's; OpenCLIP's are accepted too).
const SOT_NAMES = ['<|startoftext|>', SOT_TEXT];
const EOT_NAMES = ['<|endoftext|>', EOT_TEXT];
const MAX_ID = 1 << 20; // pair keys are id * 2^20 + id, exact in a double
const MAX_DECODE_LENGTH = 1_000_000; // ftfy fixes a line in pieces of at most this many code points

// ----- table parsing (formats written by tests/ports/make_entity_table.py) -----

const FIELD = '\ue000';
const RECORD = '\ue001';

/** '41-5a,61-7a,aa' -> Int32Array [0x41, 0x5a, 0x61, 0x7a, 0xaa, 0xaa]: sorted inclusive ranges. */
function parseRanges(packed) {
  const parts = packed ? packed.split(',') : [];
  const out = new Int32Array(parts.length * 2);
  parts.forEach((part, i) => {
    const [low, high = low] = part.split('-');
    out[2 * i] = parseInt(low, 16);
    out[2 * i + 1] = parseInt(high, 16);
  });
  return out;
}

function inRanges(ranges, cp) {
  let lo = 0;
  let hi = (ranges.length >> 1) - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (cp < ranges[2 * mid]) hi = mid - 1;
    else if (cp > ranges[2 * mid + 1]) lo = mid + 1;
    else return true;
  }
  return false;
}

function parseMap(packed) {
  return new Map(packed ? packed.split(RECORD).map((record) => record.split(FIELD)) : []);
}

function escapeCodePoint(cp) {
  return `\\u{${cp.toString(16)}}`;
}

/** A regex character class of the code points in the ranges. */
function rangesClass(ranges) {
  let out = '';
  for (let i = 0; i < ranges.length; i += 2) {
    out += escapeCodePoint(ranges[i]);
    if (ranges[i + 1] !== ranges[i]) out += '-' + escapeCodePoint(ranges[i + 1]);
  }
  return `[${out}]`;
}

function mapKeysClass(map) {
  return `[${[...map.keys()].map((key) => escapeCodePoint(key.codePointAt(0))).join('')}]`;
}

/** Membership of ranges as a BMP bitmap plus the ranges themselves for the rest. */
function codePointSet(ranges) {
  const bmp = new Uint8Array(0x10000);
  for (let i = 0; i < ranges.length && ranges[i] < 0x10000; i += 2) {
    bmp.fill(1, ranges[i], Math.min(ranges[i + 1], 0xffff) + 1);
  }
  return (cp) => (cp < 0x10000 ? bmp[cp] === 1 : inRanges(ranges, cp));
}

// Pre-token classes of the reference pattern '[\p{L}]+', '[\p{N}]', '[^\s\p{L}\p{N}]+' (IGNORECASE), per code point.
const LETTER = 1;
const NUMBER = 2;
const OTHER = 3;

let DATA = null;

/** Parse the tables once, on first use (importing the module stays cheap). */
function data() {
  if (DATA) return DATA;
  const letter = parseRanges(TABLES.pretokenLetter);
  const number = parseRanges(TABLES.pretokenNumber);
  const other = parseRanges(TABLES.pretokenOther);
  const bmpClass = new Uint8Array(0x10000); // 0 = no class: skipped by the pattern, as whitespace is
  for (const [ranges, cls] of [[letter, LETTER], [number, NUMBER], [other, OTHER]]) {
    for (let i = 0; i < ranges.length && ranges[i] < 0x10000; i += 2) {
      bmpClass.fill(cls, ranges[i], Math.min(ranges[i + 1], 0xffff) + 1);
    }
  }
  const lower = new Map();
  for (const [key, value] of parseMap(TABLES.lower)) lower.set(key.codePointAt(0), value);
  const caseless = new Map();
  for (const [key, value] of parseMap(TABLES.pretokenCaseless)) {
    caseless.set(key, new Set(Array.from(value, (ch) => ch.codePointAt(0))));
  }
  const encodings = TABLES.charmapEncodings.split(',');
  const charmaps = new Map();
  encodings.forEach((name, i) => {
    const decode = TABLES.charmaps.slice(256 * i, 256 * (i + 1));
    const encode = new Map();
    for (let b = 0; b < 256; b++) encode.set(decode.charCodeAt(b), b);
    charmaps.set(name, { decode, encode });
  });
  const combining = new Uint8Array(0x10000);
  const astralCombining = []; // [start, end, class]
  for (const run of TABLES.combiningClasses.split(',')) {
    const [span, value] = run.split(':');
    const [low, high = low] = span.split('-').map((hex) => parseInt(hex, 16));
    if (low >= 0x10000) astralCombining.push([low, high, Number(value)]);
    else combining.fill(Number(value), low, high + 1);
  }
  const decompositions = new Map();
  for (const [key, value] of parseMap(TABLES.decompositions)) {
    decompositions.set(key.codePointAt(0), Array.from(value, (ch) => ch.codePointAt(0)));
  }
  const composites = new Map();
  for (const [pair, value] of parseMap(TABLES.composites)) {
    const [first, second] = Array.from(pair, (ch) => ch.codePointAt(0));
    composites.set(first * 0x110000 + second, value.codePointAt(0));
  }
  const invalidCharrefs = new Map();
  for (const [num, char] of parseMap(TABLES.htmlInvalidCharrefs)) invalidCharrefs.set(Number(num), char);
  const ligatures = parseMap(TABLES.ligatures);
  const widthMap = parseMap(TABLES.widthMap);
  const re = (name, flags = 'u') => new RegExp(REGEXES[name], flags);
  DATA = {
    letter,
    number,
    other,
    bmpClass,
    lower,
    caseless,
    combining,
    astralCombining,
    decompositions,
    composites,
    nfcMaybe: codePointSet(parseRanges(TABLES.nfcMaybe)),
    caseIgnorable: parseRanges(TABLES.caseIgnorable),
    cased: parseRanges(TABLES.cased),
    encodings,
    charmaps,
    cp1252Undefined: parseRanges(TABLES.cp1252Undefined),
    html5: parseMap(TABLES.html5Entities),
    ftfyUpper: parseMap(TABLES.ftfyUpperEntities),
    invalidCharrefs,
    invalidCodePoints: parseRanges(TABLES.htmlInvalidCodePoints),
    ligatures,
    ligatureRe: new RegExp(mapKeysClass(ligatures), 'gu'),
    widthMap,
    widthRe: new RegExp(mapKeysClass(widthMap), 'gu'),
    controlRe: new RegExp(rangesClass(parseRanges(TABLES.controlChars)), 'gu'),
    spaceRunRe: new RegExp(rangesClass(parseRanges(TABLES.pythonSpace)) + '+', 'u'),
    noOpRe: new RegExp(`^(?:${REGEXES.ftfyNoOp})$`, 'u'),
    badnessRequired: codePointSet(parseRanges(TABLES.badnessRequired)),
    badnessRe: re('badness'),
    utf8DetectorRe: re('utf8Detector'),
    utf8DetectorReG: re('utf8Detector', 'gu'),
    alteredUtf8Re: re('alteredUtf8'),
    alteredUtf8ReG: re('alteredUtf8', 'gu'),
    lossyUtf8ReG: re('lossyUtf8', 'gu'),
    aGraveWordReG: re('aGraveWord', 'gu'),
    c1Re: re('c1Control'),
    c1ReG: re('c1Control', 'gu'),
    singleQuoteReG: re('singleQuote', 'gu'),
    doubleQuoteReG: re('doubleQuote', 'gu'),
    ansiReG: re('ansiEscape', 'gu'),
    ftfyEntityReG: re('ftfyEntity', 'gu'),
    charrefReG: re('htmlCharref', 'gu'),
  };
  return DATA;
}

// ----- NFC, with Python's unicodedata tables (Unicode chapter 3.11; Hangul by arithmetic, chapter 3.12) -----

const S_BASE = 0xac00;
const L_BASE = 0x1100;
const V_BASE = 0x1161;
const T_BASE = 0x11a7;
const L_COUNT = 19;
const V_COUNT = 21;
const T_COUNT = 28;
const S_COUNT = L_COUNT * V_COUNT * T_COUNT;

function combiningClass(cp) {
  const D = data();
  if (cp < 0x10000) return D.combining[cp];
  for (const [low, high, value] of D.astralCombining) if (cp >= low && cp <= high) return value;
  return 0;
}

function compose(first, second) {
  if (first >= L_BASE && first < L_BASE + L_COUNT && second >= V_BASE && second < V_BASE + V_COUNT) {
    return S_BASE + ((first - L_BASE) * V_COUNT + second - V_BASE) * T_COUNT;
  }
  const s = first - S_BASE;
  if (s >= 0 && s < S_COUNT && s % T_COUNT === 0 && second > T_BASE && second < T_BASE + T_COUNT) {
    return first + second - T_BASE;
  }
  return data().composites.get(first * 0x110000 + second);
}

/** Python's unicodedata.normalize('NFC', text): decompose, order marks by combining class, compose. */
export function nfc(text) {
  const D = data();
  let maybe = false;
  for (let i = 0; i < text.length && !maybe; i++) {
    // a text without any character NFC can change or combine is NFC already (the generator checks this)
    maybe = text.charCodeAt(i) >= 0x300 && D.nfcMaybe(text.codePointAt(i));
  }
  if (!maybe) return text;
  const decomposed = [];
  for (const ch of text) {
    const cp = ch.codePointAt(0);
    const s = cp - S_BASE;
    if (s >= 0 && s < S_COUNT) {
      const n = V_COUNT * T_COUNT;
      decomposed.push(L_BASE + Math.floor(s / n), V_BASE + Math.floor((s % n) / T_COUNT));
      if (s % T_COUNT) decomposed.push(T_BASE + (s % T_COUNT));
    } else {
      const mapping = D.decompositions.get(cp);
      if (mapping) decomposed.push(...mapping);
      else decomposed.push(cp);
    }
  }
  // canonical ordering: a stable insertion sort of each run of marks by combining class
  for (let i = 1; i < decomposed.length; i++) {
    for (let j = i; j > 0; j--) {
      const klass = combiningClass(decomposed[j]);
      if (!(klass > 0 && klass < combiningClass(decomposed[j - 1]))) break;
      [decomposed[j - 1], decomposed[j]] = [decomposed[j], decomposed[j - 1]];
    }
  }
  const out = [];
  let starter = -1; // index in out of the last starter
  let lastClass = -1;
  for (const cp of decomposed) {
    const klass = combiningClass(cp);
    // not blocked: adjacent to the starter, or every mark since has a lower class
    if (starter >= 0 && (lastClass < klass || (lastClass === 0 && starter === out.length - 1))) {
      const composite = compose(out[starter], cp);
      if (composite !== undefined) {
        out[starter] = composite;
        continue;
      }
    }
    if (klass === 0) starter = out.length;
    lastClass = klass;
    out.push(cp);
  }
  let result = '';
  for (let i = 0; i < out.length; i += 4096) result += String.fromCodePoint(...out.slice(i, i + 4096));
  return result;
}

// ----- Python's html.unescape (Lib/html/__init__.py) -----

function replaceCharref(s) {
  const D = data();
  if (s[0] === '#') {
    // numeric reference; the pattern allowed at most one ';'
    const hex = s[1] === 'x' || s[1] === 'X';
    const digits = s.slice(hex ? 2 : 1).replace(/;$/, '');
    // Beyond 2^53 the value is inexact, but then it is far over 0x10FFFF either way.
    const num = parseInt(digits, hex ? 16 : 10);
    if (D.invalidCharrefs.has(num)) return D.invalidCharrefs.get(num);
    if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\ufffd';
    if (inRanges(D.invalidCodePoints, num)) return '';
    return String.fromCodePoint(num);
  }
  const named = D.html5.get(s);
  if (named !== undefined) return named;
  // the longest name that prefixes it (HTML5 decodes '&notit;' as '¬it;'). Names are ASCII, so UTF-16 prefixes
  // find the same one Python's code point prefixes do.
  for (let x = s.length - 1; x > 1; x--) {
    const prefix = D.html5.get(s.slice(0, x));
    if (prefix !== undefined) return prefix + s.slice(x);
  }
  return '&' + s;
}

/** Python's html.unescape: named (HTML5 table, legacy names without ';' too) and numeric references. */
export function htmlUnescape(s) {
  if (!s.includes('&')) return s;
  return s.replace(data().charrefReG, (_, body) => replaceCharref(body));
}

// ----- ftfy.fix_text (ftfy 6.3: __init__.py, fixes.py, chardata.py, badness.py, bad_codecs/) -----

/** ftfy's unescape_html: only entities with ';', plus upper-case spellings such as '&EACUTE;'. */
function ftfyUnescapeHtml(text) {
  const D = data();
  return text.replace(D.ftfyEntityReG, (match) => {
    const entity = D.html5.get(match.slice(1)) ?? D.ftfyUpper.get(match);
    if (entity !== undefined) return entity;
    if (match.startsWith('&#')) {
      const unescaped = htmlUnescape(match);
      return unescaped.includes(';') ? match : unescaped; // only a reference that consumed its ';'
    }
    return match;
  });
}

/** ftfy's badness.is_bad. Every match of its regex holds one of the badnessRequired characters (the generator
 * proves it per alternative), so a text without any skips the regex. */
function isBad(text) {
  const D = data();
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80 && D.badnessRequired(text.codePointAt(i))) return D.badnessRe.test(text);
  }
  return false;
}

function possibleEncoding(text, encoding) {
  const { encode } = data().charmaps.get(encoding);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    // ftfy's class: \x00-\x19 and \x1b-\x7f (each codec maps them to themselves), and whatever the bytes 0x80-0xff
    // and 0x1a decode to (0x1a decodes to U+FFFD in the sloppy codecs, so there \x1a itself is not encodable)
    if ((c >= 0x80 || c === 0x1a) && !encode.has(c)) return false;
  }
  return true;
}

/** text.encode(encoding) as a "binary string" (one char per byte); the caller checked possibleEncoding. */
function encodeCharmap(text, encoding) {
  const { encode } = data().charmaps.get(encoding);
  const bytes = new Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = encode.get(text.charCodeAt(i));
  return binaryString(bytes);
}

function binaryString(codes) {
  let out = '';
  for (let i = 0; i < codes.length; i += 8192) out += String.fromCharCode.apply(null, codes.slice(i, i + 8192));
  return out;
}

/** Strict UTF-8 of bytes [from, to) of a binary string, as Python decodes it; null where Python raises. */
function decodeUtf8Strict(b, from = 0, to = b.length) {
  const units = [];
  let i = from;
  while (i < to) {
    const c0 = b.charCodeAt(i);
    let cp;
    let size;
    if (c0 < 0x80) {
      units.push(c0);
      i += 1;
      continue;
    } else if (c0 >= 0xc2 && c0 <= 0xdf) {
      size = 2;
      cp = c0 & 0x1f;
    } else if (c0 >= 0xe0 && c0 <= 0xef) {
      size = 3;
      cp = c0 & 0x0f;
    } else if (c0 >= 0xf0 && c0 <= 0xf4) {
      size = 4;
      cp = c0 & 0x07;
    } else {
      return null;
    }
    if (i + size > to) return null;
    // the second byte's range depends on the first (no overlongs, surrogates or code points over U+10FFFF)
    const c1 = b.charCodeAt(i + 1);
    const low = c0 === 0xe0 ? 0xa0 : c0 === 0xf0 ? 0x90 : 0x80;
    const high = c0 === 0xed ? 0x9f : c0 === 0xf4 ? 0x8f : 0xbf;
    if (c1 < low || c1 > high) return null;
    for (let k = 1; k < size; k++) {
      const ck = b.charCodeAt(i + k);
      if (ck < 0x80 || ck > 0xbf) return null;
      cp = (cp << 6) | (ck & 0x3f);
    }
    if (cp > 0xffff) {
      cp -= 0x10000;
      units.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
    } else {
      units.push(cp);
    }
    i += size;
  }
  return binaryString(units);
}

/** ftfy's 'utf-8-variants' codec: UTF-8 plus Java's C0 80 for NUL and CESU-8 surrogate pairs; null on error.
 * Follows its IncrementalDecoder step for step, including what its bytes regexes' '$' does: in Python it also
 * matches before a final b'\n', so a trailing "\xc0\n" decodes to NUL. */
function decodeUtf8Variants(b) {
  const n = b.length;
  const byte = (k) => (k < n ? b.charCodeAt(k) : -1);
  const atEnd = (k) => k === n || (k === n - 1 && byte(k) === 0x0a);
  const within = (k, low, high) => byte(k) >= low && byte(k) <= high;
  // SPECIAL_BYTES_RE: \xc0(\x80|$) | CESU-8 | \xed([\xa0-\xbf]|$)([\x80-\xbf]|$); CESU-8 starts like the last
  const isSpecial = (k) => {
    if (byte(k) === 0xc0) return byte(k + 1) === 0x80 || atEnd(k + 1);
    if (byte(k) !== 0xed) return false;
    if (atEnd(k + 1)) return true;
    return within(k + 1, 0xa0, 0xbf) && (within(k + 2, 0x80, 0xbf) || atEnd(k + 2));
  };
  let out = '';
  let pos = 0;
  while (pos < n) {
    let k = pos;
    while (k < n && !isSpecial(k)) k++;
    if (k > pos) {
      const plain = decodeUtf8Strict(b, pos, k);
      if (plain === null) return null;
      out += plain;
      pos = k;
      continue;
    }
    if (byte(pos) === 0xc0) {
      if (n - pos < 2) return null;
      out += '\0'; // two bytes consumed whatever the second is (it is \x80, or a final \n)
      pos += 2;
      continue;
    }
    if (n - pos < 6) {
      const rest = decodeUtf8Strict(b, pos, n); // what Python does here; it always fails on the \xed
      return rest === null ? null : out + rest;
    }
    const cesu =
      within(pos + 1, 0xa0, 0xaf) &&
      within(pos + 2, 0x80, 0xbf) &&
      byte(pos + 3) === 0xed &&
      within(pos + 4, 0xb0, 0xbf) &&
      (within(pos + 5, 0x80, 0xbf) || atEnd(pos + 5));
    if (!cesu) return null; // a lone surrogate: Python's UTF-8 decoder raises
    const cp =
      ((byte(pos + 1) & 0x0f) << 16) +
      ((byte(pos + 2) & 0x3f) << 10) +
      ((byte(pos + 4) & 0x0f) << 6) +
      (byte(pos + 5) & 0x3f) +
      0x10000;
    out += String.fromCodePoint(cp);
    pos += 6;
  }
  return out;
}

function restoreByteA0(bytes) {
  const D = data();
  const aGrave = bytes.replace(D.aGraveWordReG, '\xc3\xa0 ');
  return aGrave.replace(D.alteredUtf8ReG, (match) => match.replaceAll(' ', '\xa0'));
}

function replaceLossySequences(bytes) {
  return bytes.replace(data().lossyUtf8ReG, '\xef\xbf\xbd');
}

function decodeInconsistentUtf8(text) {
  const D = data();
  // substrings of text: fewer UTF-16 units exactly when fewer code points, the length ftfy compares
  return text.replace(D.utf8DetectorReG, (sub) => (sub.length < text.length && isBad(sub) ? fixEncoding(sub) : sub));
}

function fixC1Controls(text) {
  const sloppy1252 = data().charmaps.get('sloppy-windows-1252').decode;
  return text.replace(data().c1ReG, (c) => sloppy1252[c.charCodeAt(0)]);
}

function fixEncodingOneStep(text) {
  const D = data();
  if (text.length === 0) return text;
  if (/^[\x00-\x7f]*$/.test(text) || !isBad(text)) return text;
  const possible = [];
  for (const encoding of D.encodings) {
    if (!possibleEncoding(text, encoding)) continue;
    possible.push(encoding);
    let bytes = encodeCharmap(text, encoding);
    if (encoding !== 'macroman' && D.alteredUtf8Re.test(bytes)) bytes = restoreByteA0(bytes);
    if (encoding.startsWith('sloppy')) bytes = replaceLossySequences(bytes);
    const variants = bytes.includes('\xed') || bytes.includes('\xc0');
    const fixed = variants ? decodeUtf8Variants(bytes) : decodeUtf8Strict(bytes);
    if (fixed !== null) return fixed;
  }
  if (D.utf8DetectorRe.test(text)) {
    const fixed = decodeInconsistentUtf8(text);
    if (fixed !== text) return fixed;
  }
  // ftfy asks whether 'windows-1252' is among the possible encodings, which are named 'sloppy-windows-1252', so
  // the answer is always no: Latin-1 text is re-decoded as strict windows-1252 (unless it holds one of the five
  // bytes windows-1252 leaves undefined).
  if (possible.includes('latin-1')) {
    let defined = true;
    for (let i = 0; i < text.length && defined; i++) defined = !inRanges(D.cp1252Undefined, text.charCodeAt(i));
    if (defined) {
      const fixed = fixC1Controls(text); // latin-1 bytes read as windows-1252 differ only in 0x80-0x9f
      if (fixed !== text) return fixed;
    }
  }
  if (D.c1Re.test(text)) return fixC1Controls(text);
  return text;
}

/** ftfy.fix_encoding: undo mojibake until nothing changes. */
function fixEncoding(text) {
  for (;;) {
    const fixed = fixEncodingOneStep(text);
    if (fixed === text) return text;
    text = fixed;
  }
}

function fixSurrogates(text) {
  // Python holds surrogate code points one by one and pairs them; a JavaScript string pairs them by itself, so
  // only the unpaired ones are left to become U+FFFD.
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

/** ftfy.fix_and_explain on one line, with fix_text's default configuration. */
function fixSegment(text, unescapeHtml) {
  const D = data();
  for (;;) {
    const original = text;
    if (unescapeHtml) text = ftfyUnescapeHtml(text);
    text = fixEncoding(text);
    text = fixC1Controls(text);
    text = text.replace(D.ligatureRe, (c) => D.ligatures.get(c));
    text = text.replace(D.widthRe, (c) => D.widthMap.get(c));
    text = text.replace(D.doubleQuoteReG, '"').replace(D.singleQuoteReG, "'");
    text = text.replace(/\r\n/g, '\n').replace(/[\r\u2028\u2029\x85]/g, '\n');
    text = fixSurrogates(text);
    text = text.replace(D.ansiReG, '');
    text = text.replace(D.controlRe, '');
    text = nfc(text);
    if (text === original) return text;
  }
}

/** The unit index max code points after pos (or the end). */
function advanceCodePoints(text, pos, max) {
  for (let count = 0; pos < text.length && count < max; count++) pos += text.codePointAt(pos) > 0xffff ? 2 : 1;
  return pos;
}

/** ftfy.fix_text with its defaults: line by line; HTML entities are left alone from the first line with a '<'. */
export function fixText(text) {
  let unescapeHtml = true;
  let out = '';
  let pos = 0;
  while (pos < text.length) {
    let end = text.indexOf('\n', pos) + 1 || text.length;
    if (end - pos > MAX_DECODE_LENGTH) end = Math.min(end, advanceCodePoints(text, pos, MAX_DECODE_LENGTH));
    const segment = text.slice(pos, end);
    if (unescapeHtml && segment.includes('<')) unescapeHtml = false;
    out += fixSegment(segment, unescapeHtml);
    pos = end;
  }
  return out;
}

// ----- Python's str.lower() and str.split() -----

function codePointBefore(text, end) {
  const low = text.charCodeAt(end - 1);
  if (low >= 0xdc00 && low <= 0xdfff && end >= 2) {
    const high = text.charCodeAt(end - 2);
    if (high >= 0xd800 && high <= 0xdbff) return ((high - 0xd800) << 10) + (low - 0xdc00) + 0x10000;
  }
  return low;
}

/** CPython's Final_Sigma test for the 'Σ' at i: a cased letter before it and none after, case-ignorables skipped. */
function isFinalSigma(text, i) {
  const D = data();
  let j = i;
  let before = -1;
  while (j > 0) {
    const cp = codePointBefore(text, j);
    j -= cp > 0xffff ? 2 : 1;
    if (!inRanges(D.caseIgnorable, cp)) {
      before = cp;
      break;
    }
  }
  if (before < 0 || !inRanges(D.cased, before)) return false;
  for (j = i + 1; j < text.length; ) {
    const cp = text.codePointAt(j);
    if (!inRanges(D.caseIgnorable, cp)) return !inRanges(D.cased, cp);
    j += cp > 0xffff ? 2 : 1;
  }
  return true;
}

/** Python's str.lower(): full (SpecialCasing) mappings, Final_Sigma, in Python's Unicode version; no locale. */
export function pythonLower(text) {
  if (/^[\x00-\x7f]*$/.test(text)) return text.toLowerCase(); // ASCII: A-Z only, the same everywhere
  const { lower } = data();
  let out = '';
  for (let i = 0; i < text.length; ) {
    const cp = text.codePointAt(i);
    const width = cp > 0xffff ? 2 : 1;
    if (cp === 0x3a3) out += isFinalSigma(text, i) ? '\u03c2' : '\u03c3';
    else out += lower.get(cp) ?? text.slice(i, i + width);
    i += width;
  }
  return out;
}

/** The Python tokenizer's _clean: ftfy and html.unescape twice (skipped where they are no-ops), then
 * " ".join(text.split()).lower(). */
export function cleanText(text) {
  const D = data();
  if (!D.noOpRe.test(text)) text = htmlUnescape(htmlUnescape(fixText(text)));
  return pythonLower(
    text
      .split(D.spaceRunRe)
      .filter((word) => word !== '')
      .join(' '),
  );
}

// ----- pre-tokenization: the reference pattern, scanned by hand -----

function classOf(cp) {
  const D = data();
  if (cp < 0x10000) return D.bmpClass[cp];
  if (inRanges(D.letter, cp)) return LETTER;
  if (inRanges(D.number, cp)) return NUMBER;
  return inRanges(D.other, cp) ? OTHER : 0;
}

/** End of `literal` matched at i the way IGNORECASE does ('ſ' matches 's'), or -1. */
function matchLiteral(text, i, literal) {
  const { caseless } = data();
  for (const char of literal) {
    if (i >= text.length) return -1;
    const cp = text.codePointAt(i);
    if (!caseless.get(char).has(cp)) return -1;
    i += cp > 0xffff ? 2 : 1;
  }
  return i;
}

/** End of the pre-token regex.finditer would match at i, or -1 where none starts (it then moves one code point on).
 * Alternatives in the pattern's order: <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
 * [^\s\p{L}\p{N}]+ with IGNORECASE. */
function pretokenEnd(text, i) {
  const first = text.charCodeAt(i);
  if (first === 0x3c) {
    for (const special of [SOT_TEXT, EOT_TEXT]) {
      const end = matchLiteral(text, i, special);
      if (end >= 0) return end;
    }
  } else if (first === 0x27) {
    for (const contraction of CONTRACTIONS) {
      const end = matchLiteral(text, i, contraction);
      if (end >= 0) return end;
    }
  }
  const cls = classOf(text.codePointAt(i));
  if (cls === 0) return -1;
  let end = i + (text.codePointAt(i) > 0xffff ? 2 : 1);
  if (cls === NUMBER) return end;
  while (end < text.length) {
    const cp = text.codePointAt(end);
    if (classOf(cp) !== cls) break;
    end += cp > 0xffff ? 2 : 1;
  }
  return end;
}

// ----- BPE -----

/** The GPT-2 byte -> printable character table, in the order that fixes ids 0..255 (see runtime/tokenizer.py). */
function bytesToUnicode() {
  const printable = [];
  const range = (a, b) => {
    for (let c = a; c <= b; c++) printable.push(c);
  };
  range(0x21, 0x7e);
  range(0xa1, 0xac);
  range(0xae, 0xff);
  const table = new Map(printable.map((b) => [b, String.fromCharCode(b)]));
  let offset = 0;
  for (let b = 0; b < 256; b++) if (!table.has(b)) table.set(b, String.fromCharCode(256 + offset++));
  return table; // insertion order: the printable bytes first, then the shifted ones
}

function baseSymbols() {
  const symbols = [...bytesToUnicode().values()];
  return [...symbols, ...symbols.map((s) => s + END_OF_WORD)];
}

/** A line of merges as Python's line.split() cuts it (its whitespace, not JavaScript's). */
function pythonSplit(line) {
  return line.split(data().spaceRunRe).filter((part) => part !== '');
}

function parseMerges(lines, source, firstLine) {
  const merges = [];
  lines.forEach((line, index) => {
    const parts = pythonSplit(line);
    if (parts.length === 0) return;
    if (parts.length !== 2) {
      throw new Error(`${source}: line ${firstLine + index} ${JSON.stringify(line)} is not a merge of two symbols`);
    }
    merges.push(parts);
  });
  return merges;
}

function checkContextLength(contextLength) {
  if (!Number.isInteger(contextLength) || contextLength < 2) {
    throw new RangeError(`contextLength must be an integer >= 2 (room for SOT and EOT), got ${contextLength}`);
  }
  return contextLength;
}

function preview(text) {
  return JSON.stringify(text).slice(0, 60);
}

/** Min-heap of numbers (rank * 2^32 + position: the (rank, position) order of the Python heap). */
class NumberHeap {
  constructor(items) {
    this.items = items;
    for (let i = (items.length >> 1) - 1; i >= 0; i--) this.down(i);
  }
  get size() {
    return this.items.length;
  }
  peek() {
    return this.items[0];
  }
  push(value) {
    const items = this.items;
    let i = items.push(value) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent] <= value) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = value;
  }
  pop() {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0) {
      items[0] = last;
      this.down(0);
    }
    return top;
  }
  down(i) {
    const items = this.items;
    const n = items.length;
    const value = items[i];
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && items[child + 1] < items[child]) child++;
      if (items[child] >= value) break;
      items[i] = items[child];
      i = child;
    }
    items[i] = value;
  }
}

const POSITIONS = 2 ** 32;

export class ClipTokenizer {
  /**
   * Build from the vocabulary's content:
   * - a string: the text of OpenAI's `bpe_simple_vocab_16e6.txt.gz`, decompressed (what a bundle's `tokenizer/`
   *   folder holds, and what loadClipTokenizer reads);
   * - or `{ vocab, merges }`: HF's `vocab.json` (text or parsed object) and `merges.txt` text.
   * Options: contextLength (77), cacheSize (65536 words; the cache is dropped all at once when full).
   */
  constructor(vocabulary, { contextLength = CONTEXT_LENGTH, cacheSize = 1 << 16 } = {}) {
    let vocab;
    let merges;
    let sot;
    let eot;
    if (typeof vocabulary === 'string') {
      // The gz's line 1 is a header; OpenAI uses the next N_MERGES lines. Lines end at '\n' only.
      merges = parseMerges(vocabulary.split('\n').slice(1, 1 + N_MERGES), VOCAB_FILE, 2);
      if (merges.length === 0) throw new Error(`${VOCAB_FILE} holds no BPE merges`);
      vocab = new Map();
      [...baseSymbols(), ...merges.map(([a, b]) => a + b)].forEach((token, i) => vocab.set(token, i));
      sot = vocab.size;
      eot = vocab.size + 1;
    } else if (vocabulary && typeof vocabulary === 'object' && 'vocab' in vocabulary && 'merges' in vocabulary) {
      ({ vocab, merges, sot, eot } = parseHuggingFace(vocabulary.vocab, vocabulary.merges));
    } else {
      throw new TypeError('ClipTokenizer needs the merges text of bpe_simple_vocab_16e6.txt.gz or { vocab, merges }');
    }
    this.sotTokenId = sot;
    this.eotTokenId = eot;
    this.contextLength = checkContextLength(contextLength);
    let maxId = Math.max(sot, eot);
    for (const id of vocab.values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    this._build(vocab, merges);
    this._cacheSize = cacheSize;
    this._cache = new Map();
  }

  _build(vocab, merges) {
    const missing = baseSymbols().filter((s) => !vocab.has(s));
    missing.push(...merges.filter(([a, b]) => !vocab.has(a + b)).map(([a, b]) => a + b));
    if (missing.length > 0) {
      throw new Error(`the vocabulary lacks ${missing.length} tokens the merges can produce (first: ` +
        `${JSON.stringify(missing[0])}); vocab and merges files do not belong together`);
    }
    if (this.vocabSize > MAX_ID) throw new RangeError(`vocabulary ids must be below ${MAX_ID}`);
    const symbols = [...bytesToUnicode().entries()];
    this._byteIds = new Int32Array(256);
    this._byteEndIds = new Int32Array(256);
    for (const [b, symbol] of symbols) {
      this._byteIds[b] = vocab.get(symbol);
      this._byteEndIds[b] = vocab.get(symbol + END_OF_WORD);
    }
    // rank of each mergeable pair of ids (a later duplicate pair wins, as in the Python dict), and per rank the
    // pair and the id it merges into. A pair whose half is no token can never occur in a word: left out.
    this._ranks = new Map();
    this._first = new Int32Array(merges.length);
    this._second = new Int32Array(merges.length);
    this._merged = new Int32Array(merges.length);
    merges.forEach(([a, b], rank) => {
      const first = vocab.get(a);
      const second = vocab.get(b);
      this._merged[rank] = vocab.get(a + b);
      if (first === undefined || second === undefined) return;
      this._first[rank] = first;
      this._second[rank] = second;
      this._ranks.set(first * MAX_ID + second, rank);
    });
  }

  /** The reference's merge loop: merge the lowest-rank pair everywhere, left to right; repeat. */
  _merge(symbols) {
    const ranks = this._ranks;
    let n = symbols.length;
    while (n > 1) {
      let best = Infinity;
      for (let i = 0; i + 1 < n; i++) {
        const rank = ranks.get(symbols[i] * MAX_ID + symbols[i + 1]);
        if (rank !== undefined && rank < best) best = rank;
      }
      if (best === Infinity) break;
      const first = this._first[best];
      const second = this._second[best];
      let w = 0;
      for (let i = 0; i < n; ) {
        if (i + 1 < n && symbols[i] === first && symbols[i + 1] === second) {
          symbols[w++] = this._merged[best];
          i += 2;
        } else {
          symbols[w++] = symbols[i++];
        }
      }
      n = w;
    }
    return Array.from(symbols.subarray(0, n));
  }

  /** The same merges in O(n log n) (runtime/bpe.py merge_long): pairs in a heap by (rank, position), symbols in a
   * linked list; one rank's merges all happen before the pairs they create are considered. */
  _mergeLong(symbols) {
    const ranks = this._ranks;
    const n = symbols.length;
    const sym = symbols;
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    const items = [];
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
      if (i + 1 < n) {
        const rank = ranks.get(sym[i] * MAX_ID + sym[i + 1]);
        if (rank !== undefined) items.push(rank * POSITIONS + i);
      }
    }
    const heap = new NumberHeap(items);
    const pushedRound = new Int32Array(n).fill(-1);
    let round = 0;
    while (heap.size > 0) {
      const rank = Math.floor(heap.peek() / POSITIONS);
      const first = this._first[rank];
      const second = this._second[rank];
      const merged = [];
      while (heap.size > 0 && Math.floor(heap.peek() / POSITIONS) === rank) {
        const i = heap.pop() % POSITIONS;
        const j = alive[i] ? next[i] : -1;
        if (j < 0 || sym[i] !== first || sym[j] !== second) continue; // stale entry
        sym[i] = this._merged[rank];
        alive[j] = 0;
        next[i] = next[j];
        if (next[j] >= 0) prev[next[j]] = i;
        merged.push(i);
      }
      round++;
      for (const i of merged) {
        for (const left of [prev[i], i]) {
          const right = left >= 0 ? next[left] : -1;
          if (right < 0 || pushedRound[left] === round) continue;
          const pairRank = ranks.get(sym[left] * MAX_ID + sym[right]);
          if (pairRank === undefined) continue;
          pushedRound[left] = round;
          heap.push(pairRank * POSITIONS + left);
        }
      }
    }
    const out = [];
    for (let i = 0; i >= 0; i = next[i]) out.push(sym[i]);
    return out;
  }

  /** Ids of one pre-token: its UTF-8 bytes as symbols, the last marked as a word end, then merged. */
  _wordIds(word) {
    if (word === SOT_TEXT) return [this.sotTokenId];
    if (word === EOT_TEXT) return [this.eotTokenId];
    const bytes = utf8Bytes(word);
    const symbols = new Int32Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) symbols[i] = this._byteIds[bytes[i]];
    symbols[bytes.length - 1] = this._byteEndIds[bytes[bytes.length - 1]];
    return symbols.length <= SHORT_WORD ? this._merge(symbols) : this._mergeLong(symbols);
  }

  /** BPE ids of a text; with `limit`, stop once that many are known (the rest would be cut off anyway). */
  _encode(text, limit) {
    const cleaned = cleanText(text);
    const ids = [];
    const cache = this._cache;
    for (let i = 0; i < cleaned.length; ) {
      const end = pretokenEnd(cleaned, i);
      if (end < 0) {
        i += cleaned.codePointAt(i) > 0xffff ? 2 : 1;
        continue;
      }
      const word = cleaned.slice(i, end);
      let wordIds = cache.get(word);
      if (wordIds === undefined) {
        wordIds = this._wordIds(word);
        if (cache.size >= this._cacheSize) cache.clear();
        cache.set(word, wordIds);
      }
      for (const id of wordIds) ids.push(id);
      i = end;
      if (limit !== undefined && ids.length >= limit) break;
    }
    return ids;
  }

  /** BPE ids of one text, without SOT/EOT and without truncation. */
  encode(text) {
    if (typeof text !== 'string') throw new TypeError(`encode() needs a string, got ${typeof text}`);
    return this._encode(text);
  }

  /**
   * Tokenize a string or an array of strings: one Int32Array row of `contextLength` per text, SOT, ids, EOT,
   * then zeros, exactly as the Python Tokenizer. The rows are views of one buffer (`rows[0].buffer`, [B * L]).
   * A text too long for the context is cut so that EOT stays the last token; with truncate=false it throws.
   */
  tokenize(texts, contextLength = this.contextLength, truncate = true) {
    const batch = typeof texts === 'string' ? [texts] : Array.from(texts);
    batch.forEach((text, index) => {
      if (typeof text !== 'string') throw new TypeError(`text ${index} is ${typeof text}, not a string`);
    });
    const length = checkContextLength(contextLength);
    const flat = new Int32Array(batch.length * length);
    return batch.map((text, index) => {
      let ids = this._encode(text, truncate ? length - 2 : undefined);
      if (ids.length + 2 > length) {
        if (!truncate) {
          throw new RangeError(`text ${index} (${preview(text)}) is ${ids.length} tokens, ${ids.length + 2} with ` +
            `SOT and EOT, over the context length ${length}; shorten it or call with truncate=true`);
        }
        ids = ids.slice(0, length - 2);
      }
      const row = flat.subarray(index * length, (index + 1) * length);
      row[0] = this.sotTokenId;
      row.set(ids, 1);
      row[ids.length + 1] = this.eotTokenId;
      return row;
    });
  }
}

function utf8Bytes(word) {
  const out = [];
  for (let i = 0; i < word.length; i++) {
    let c = word.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdfff) {
      const low = word.charCodeAt(i + 1);
      if (c > 0xdbff || !(low >= 0xdc00 && low <= 0xdfff)) {
        // Python refuses to encode a lone surrogate; cleaning replaces them, so this is only a safeguard
        throw new Error(`text holds an unpaired surrogate U+${c.toString(16).toUpperCase()}, not Unicode text`);
      }
      c = ((c - 0xd800) << 10) + (low - 0xdc00) + 0x10000;
      i++;
    }
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
  }
  return out;
}

function parseHuggingFace(vocabJson, mergesText) {
  const raw = typeof vocabJson === 'string' ? JSON.parse(vocabJson) : vocabJson;
  if (!raw || typeof raw !== 'object' || !Object.values(raw).every(Number.isInteger)) {
    throw new Error(`${HF_VOCAB_FILE} must map each token to an integer id`);
  }
  const lines = mergesText.split('\n');
  const header = lines.length > 0 && lines[0].startsWith('#version') ? 1 : 0;
  const merges = parseMerges(lines.slice(header), HF_MERGES_FILE, 1 + header);
  const special = (names) => {
    const name = names.find((n) => Object.hasOwn(raw, n));
    if (name === undefined) throw new Error(`${HF_VOCAB_FILE} has none of the special tokens ${names.join(', ')}`);
    return raw[name];
  };
  const sot = special(SOT_NAMES);
  const eot = special(EOT_NAMES);
  const specials = new Set([...SOT_NAMES, ...EOT_NAMES]);
  const vocab = new Map(Object.entries(raw).filter(([token]) => !specials.has(token)));
  return { vocab, merges, sot, eot };
}

// ----- loading from a URL or a file -----

const isNode = typeof process !== 'undefined' && process.versions != null && process.versions.node != null;

function isUrl(source) {
  return source instanceof URL || /^(https?|file|blob|data):/i.test(source);
}

class NotFound extends Error {}

/** Bytes at a URL (fetch) or, in Node.js, a file path or file: URL. */
async function readBytes(location) {
  if (isNode && (!isUrl(location) || String(location).startsWith('file:'))) {
    const fs = await import('node:fs/promises');
    const path = location instanceof URL || !String(location).startsWith('file:') ? location : new URL(location);
    try {
      return new Uint8Array(await fs.readFile(path));
    } catch (err) {
      if (err.code === 'ENOENT') throw new NotFound(`no file ${location}`);
      throw err;
    }
  }
  const response = await fetch(location);
  if (response.status === 404) throw new NotFound(`no file at ${location} (404)`);
  if (!response.ok) throw new Error(`cannot fetch ${location}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

/** Gunzip if the bytes are gzip (a server may already have removed the gzip layer with Content-Encoding). */
export async function gunzipIfNeeded(bytes) {
  if (bytes.length < 2 || bytes[0] !== 0x1f || bytes[1] !== 0x8b) return bytes;
  if (isNode) {
    const zlib = await import('node:zlib');
    return new Uint8Array(zlib.gunzipSync(bytes));
  }
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function utf8Text(bytes) {
  return new TextDecoder('utf-8').decode(bytes);
}

function join(directory, name) {
  const base = String(directory);
  return base.endsWith('/') || base.endsWith('\\') ? base + name : `${base}/${name}`;
}

async function isDirectory(source) {
  if (String(source).endsWith('/')) return true;
  if (!isNode || isUrl(source)) return false;
  const fs = await import('node:fs/promises');
  return (await fs.stat(source).catch(() => null))?.isDirectory() ?? false;
}

/**
 * Load a tokenizer the way the Python Tokenizer.from_files does:
 * - a directory (a bundle's `tokenizer/`; a URL must end in '/'): its bpe_simple_vocab_16e6.txt.gz, else its HF
 *   vocab.json + merges.txt;
 * - `.../vocab.json` or `.../merges.txt`: that HF pair;
 * - any other file: OpenAI's gzip'd merges (also accepted already decompressed).
 * `source` is a URL (fetch) or, in Node.js, a path. Options as for the ClipTokenizer constructor.
 */
export async function loadClipTokenizer(source, options = {}) {
  const name = String(source).split(/[/\\]/).pop();
  let directory = null;
  if (name === HF_VOCAB_FILE || name === HF_MERGES_FILE) {
    directory = String(source).slice(0, String(source).length - name.length);
  } else if (await isDirectory(source)) {
    try {
      const bytes = await gunzipIfNeeded(await readBytes(join(source, VOCAB_FILE)));
      return new ClipTokenizer(utf8Text(bytes), options);
    } catch (err) {
      if (!(err instanceof NotFound)) throw err;
    }
    directory = String(source);
  }
  if (directory !== null) {
    let texts;
    try {
      texts = await Promise.all(
        [HF_VOCAB_FILE, HF_MERGES_FILE].map(async (file) => utf8Text(await readBytes(join(directory, file)))),
      );
    } catch (err) {
      if (!(err instanceof NotFound)) throw err;
      throw new Error(`no tokenizer files at ${source}: expected ${VOCAB_FILE}, or ${HF_VOCAB_FILE} + ` +
        `${HF_MERGES_FILE} (${err.message})`);
    }
    return new ClipTokenizer({ vocab: texts[0], merges: texts[1] }, options);
  }
  return new ClipTokenizer(utf8Text(await gunzipIfNeeded(await readBytes(source))), options);
}

ClipTokenizer.load = loadClipTokenizer;
