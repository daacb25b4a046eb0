package clipedge;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import java.util.regex.MatchResult;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The text cleaning of clipedge's Python tokenizer, ported: ftfy.fix_text (ftfy 6.3, MIT, Copyright (c) 2023 Robyn
 * Speer) with its default configuration, Python's html.unescape, and Python's str.split() and str.lower().
 *
 * <p>Java's own Unicode data (Character, String.toLowerCase, regex \s \w \d) is another Unicode version than the
 * Python reference's, and Android's differs again, so every table comes from {@link ClipTokenizerTables}, generated
 * from the Python reference by tests/ports/make_entity_table.py, NFC's included (java.text.Normalizer is Unicode 13
 * in Java 17, older on older Android). Stateless and thread-safe.
 */
final class ClipTextCleaner {
    private ClipTextCleaner() {}

    private static final String FIELD = "\ue000";
    private static final String RECORD = "\ue001";
    private static final int MAX_DECODE_LENGTH = 1_000_000; // ftfy fixes a line in pieces of this many code points

    // ----- tables -----

    static int[] ranges(String name) {
        return parseRanges(ClipTokenizerTables.TABLES.get(name));
    }

    private static int[] parseRanges(String packed) {
        if (packed.isEmpty()) return new int[0];
        String[] parts = packed.split(",");
        int[] out = new int[parts.length * 2];
        for (int i = 0; i < parts.length; i++) {
            int dash = parts[i].indexOf('-');
            out[2 * i] = Integer.parseInt(dash < 0 ? parts[i] : parts[i].substring(0, dash), 16);
            out[2 * i + 1] = Integer.parseInt(dash < 0 ? parts[i] : parts[i].substring(dash + 1), 16);
        }
        return out;
    }

    static boolean inRanges(int[] ranges, int cp) {
        int lo = 0;
        int hi = ranges.length / 2 - 1;
        while (lo <= hi) {
            int mid = (lo + hi) >>> 1;
            if (cp < ranges[2 * mid]) hi = mid - 1;
            else if (cp > ranges[2 * mid + 1]) lo = mid + 1;
            else return true;
        }
        return false;
    }

    static Map<String, String> map(String name) {
        Map<String, String> out = new HashMap<>();
        String packed = ClipTokenizerTables.TABLES.get(name);
        if (packed.isEmpty()) return out;
        for (String record : packed.split(RECORD, -1)) {
            int field = record.indexOf(FIELD);
            out.put(record.substring(0, field), record.substring(field + 1));
        }
        return out;
    }

    private static Pattern regex(String name) {
        return Pattern.compile(ClipTokenizerTables.REGEXES.get(name));
    }

    private static String rangesClass(int[] ranges) {
        StringBuilder out = new StringBuilder("[");
        for (int i = 0; i < ranges.length; i += 2) {
            out.append(String.format("\\x{%X}", ranges[i]));
            if (ranges[i + 1] != ranges[i]) out.append(String.format("-\\x{%X}", ranges[i + 1]));
        }
        return out.append(']').toString();
    }

    /** The class of a map's (single code point) keys, as ranges: java.util.regex tests a class's parts one by one. */
    private static String keysClass(Map<String, String> map) {
        int[] keys = map.keySet().stream().mapToInt(key -> key.codePointAt(0)).sorted().toArray();
        List<Integer> ranges = new ArrayList<>();
        for (int key : keys) {
            if (!ranges.isEmpty() && ranges.get(ranges.size() - 1) == key - 1) ranges.set(ranges.size() - 1, key);
            else {
                ranges.add(key);
                ranges.add(key);
            }
        }
        return rangesClass(ranges.stream().mapToInt(Integer::intValue).toArray());
    }

    private static final Map<String, String> HTML5 = map("html5Entities");
    private static final Map<String, String> FTFY_UPPER = map("ftfyUpperEntities");
    private static final Map<Integer, String> INVALID_CHARREFS = new HashMap<>();
    private static final int[] INVALID_CODE_POINTS = ranges("htmlInvalidCodePoints");
    private static final String[] ENCODINGS = ClipTokenizerTables.TABLES.get("charmapEncodings").split(",");
    private static final Map<String, String> DECODE = new HashMap<>();
    private static final Map<String, Map<Character, Character>> ENCODE = new HashMap<>();
    private static final int[] CP1252_UNDEFINED = ranges("cp1252Undefined");
    private static final Map<String, String> LIGATURES = map("ligatures");
    private static final Map<String, String> WIDTH_MAP = map("widthMap");
    private static final Pattern LIGATURE_RE = Pattern.compile(keysClass(LIGATURES));
    private static final Pattern WIDTH_RE = Pattern.compile(keysClass(WIDTH_MAP));
    private static final Pattern CONTROL_RE = Pattern.compile(rangesClass(ranges("controlChars")));
    private static final Map<Integer, String> LOWER = new HashMap<>();
    private static final int[] CASE_IGNORABLE = ranges("caseIgnorable");
    private static final int[] CASED = ranges("cased");
    private static final boolean[] PYTHON_SPACE = new boolean[0x10000];
    private static final int[] BADNESS_REQUIRED = ranges("badnessRequired");
    private static final byte[] COMBINING = new byte[0x10000]; // canonical combining class (all below 256)
    private static final List<int[]> ASTRAL_COMBINING = new ArrayList<>(); // {start, end, class}
    private static final Map<Integer, int[]> DECOMPOSITIONS = new HashMap<>();
    private static final Map<Long, Integer> COMPOSITES = new HashMap<>();
    private static final int[] NFC_MAYBE = ranges("nfcMaybe");
    // ftfy's BADNESS_RE as alternatives of character classes (generated and checked against it): java.util.regex
    // tests a class's ranges one by one, and this regex's classes have hundreds, so it is matched by hand.
    private static final int[][] BADNESS_CLASSES;
    private static final int[][] BADNESS_STEPS; // per alternative: class index, | OPTIONAL for '?', or START for '^'
    private static final int OPTIONAL = 1 << 16;
    private static final int START = -1;
    // BMP characters a match can begin with (the classes up to each alternative's first required step): the
    // matcher skips every other position without trying the alternatives.
    private static final boolean[] BADNESS_BMP_START = new boolean[0x10000];

    private static final Pattern NO_OP = regex("ftfyNoOp");
    private static final Pattern UTF8_DETECTOR = regex("utf8Detector");
    private static final Pattern ALTERED_UTF8 = regex("alteredUtf8");
    private static final Pattern LOSSY_UTF8 = regex("lossyUtf8");
    private static final Pattern A_GRAVE_WORD = regex("aGraveWord");
    private static final Pattern C1_CONTROL = regex("c1Control");
    private static final Pattern SINGLE_QUOTE = regex("singleQuote");
    private static final Pattern DOUBLE_QUOTE = regex("doubleQuote");
    private static final Pattern ANSI_ESCAPE = regex("ansiEscape");
    private static final Pattern FTFY_ENTITY = regex("ftfyEntity");
    private static final Pattern HTML_CHARREF = regex("htmlCharref");
    private static final Pattern ASCII = Pattern.compile("[\\x00-\\x7f]*");
    private static final Pattern LONE_SURROGATE =
            Pattern.compile("[\\ud800-\\udbff](?![\\udc00-\\udfff])|(?<![\\ud800-\\udbff])[\\udc00-\\udfff]");

    static {
        for (Map.Entry<String, String> e : map("htmlInvalidCharrefs").entrySet()) {
            INVALID_CHARREFS.put(Integer.parseInt(e.getKey()), e.getValue());
        }
        String charmaps = ClipTokenizerTables.TABLES.get("charmaps");
        for (int i = 0; i < ENCODINGS.length; i++) {
            String decode = charmaps.substring(256 * i, 256 * (i + 1));
            Map<Character, Character> encode = new HashMap<>();
            for (int b = 0; b < 256; b++) encode.put(decode.charAt(b), (char) b);
            DECODE.put(ENCODINGS[i], decode);
            ENCODE.put(ENCODINGS[i], encode);
        }
        for (Map.Entry<String, String> e : map("lower").entrySet()) LOWER.put(e.getKey().codePointAt(0), e.getValue());
        String[] classes = ClipTokenizerTables.TABLES.get("badnessClasses").split(";", -1);
        BADNESS_CLASSES = new int[classes.length][];
        for (int k = 0; k < classes.length; k++) BADNESS_CLASSES[k] = parseRanges(classes[k]);
        String[] alternatives = ClipTokenizerTables.TABLES.get("badnessSequences").split("\\|");
        BADNESS_STEPS = new int[alternatives.length][];
        for (int a = 0; a < alternatives.length; a++) {
            String[] steps = alternatives[a].split(",");
            BADNESS_STEPS[a] = new int[steps.length];
            for (int k = 0; k < steps.length; k++) {
                String step = steps[k];
                BADNESS_STEPS[a][k] = step.equals("^") ? START : step.endsWith("?")
                        ? Integer.parseInt(step.substring(0, step.length() - 1)) | OPTIONAL : Integer.parseInt(step);
            }
        }
        for (String run : ClipTokenizerTables.TABLES.get("combiningClasses").split(",")) {
            String[] spanValue = run.split(":");
            String[] span = spanValue[0].split("-");
            int low = Integer.parseInt(span[0], 16);
            int high = Integer.parseInt(span[span.length - 1], 16);
            int value = Integer.parseInt(spanValue[1]);
            if (low >= 0x10000) ASTRAL_COMBINING.add(new int[] {low, high, value});
            else Arrays.fill(COMBINING, low, high + 1, (byte) value);
        }
        for (Map.Entry<String, String> e : map("decompositions").entrySet()) {
            DECOMPOSITIONS.put(e.getKey().codePointAt(0), e.getValue().codePoints().toArray());
        }
        for (Map.Entry<String, String> e : map("composites").entrySet()) {
            int[] pair = e.getKey().codePoints().toArray();
            COMPOSITES.put(pairKey(pair[0], pair[1]), e.getValue().codePointAt(0));
        }
        for (int[] steps : BADNESS_STEPS) {
            for (int step : steps) {
                if (step == START) continue;
                int[] members = BADNESS_CLASSES[step & ~OPTIONAL];
                for (int i = 0; i < members.length && members[i] < 0x10000; i += 2) {
                    Arrays.fill(BADNESS_BMP_START, members[i], Math.min(members[i + 1], 0xffff) + 1, true);
                }
                if ((step & OPTIONAL) == 0) break;
            }
        }
        int[] space = ranges("pythonSpace");
        for (int i = 0; i < space.length; i += 2) {
            for (int c = space[i]; c <= space[i + 1]; c++) PYTHON_SPACE[c] = true; // all in the BMP
        }
    }

    /** Python's pattern.sub(function, text): each match replaced by the function's result, taken literally.
     * (Matcher.replaceAll(Function) would do, but Android has it only from API level 34.) */
    private static String replace(Pattern pattern, String text, Function<MatchResult, String> replacement) {
        Matcher matcher = pattern.matcher(text);
        if (!matcher.find()) return text;
        StringBuilder out = new StringBuilder(text.length());
        int last = 0;
        do {
            out.append(text, last, matcher.start()).append(replacement.apply(matcher));
            last = matcher.end();
        } while (matcher.find());
        return out.append(text, last, text.length()).toString();
    }

    // ----- NFC, with Python's unicodedata tables (Unicode chapter 3.11; Hangul by arithmetic, chapter 3.12) -----

    private static final int S_BASE = 0xac00;
    private static final int L_BASE = 0x1100;
    private static final int V_BASE = 0x1161;
    private static final int T_BASE = 0x11a7;
    private static final int L_COUNT = 19;
    private static final int V_COUNT = 21;
    private static final int T_COUNT = 28;
    private static final int S_COUNT = L_COUNT * V_COUNT * T_COUNT;

    private static long pairKey(int first, int second) {
        return ((long) first << 21) | second;
    }

    private static int combiningClass(int cp) {
        if (cp < 0x10000) return COMBINING[cp] & 0xff;
        for (int[] run : ASTRAL_COMBINING) if (cp >= run[0] && cp <= run[1]) return run[2];
        return 0;
    }

    /** The primary composite of two code points, or -1. */
    private static int compose(int first, int second) {
        if (first >= L_BASE && first < L_BASE + L_COUNT && second >= V_BASE && second < V_BASE + V_COUNT) {
            return S_BASE + ((first - L_BASE) * V_COUNT + second - V_BASE) * T_COUNT;
        }
        int s = first - S_BASE;
        if (s >= 0 && s < S_COUNT && s % T_COUNT == 0 && second > T_BASE && second < T_BASE + T_COUNT) {
            return first + second - T_BASE;
        }
        return COMPOSITES.getOrDefault(pairKey(first, second), -1);
    }

    /** Python's unicodedata.normalize('NFC', text): decompose, order marks by combining class, compose. */
    static String nfc(String text) {
        boolean maybe = false;
        for (int i = 0; i < text.length() && !maybe; i++) {
            // a text without any character NFC can change or combine is NFC already (the generator checks this)
            maybe = text.charAt(i) >= 0x300 && inRanges(NFC_MAYBE, text.codePointAt(i));
        }
        if (!maybe) return text;
        int[] decomposed = new int[text.length() * 4 + 4];
        int n = 0;
        for (int i = 0; i < text.length(); ) {
            int cp = text.codePointAt(i);
            i += Character.charCount(cp);
            int s = cp - S_BASE;
            int[] mapping = s >= 0 && s < S_COUNT ? null : DECOMPOSITIONS.get(cp);
            if (n + 18 > decomposed.length) decomposed = Arrays.copyOf(decomposed, 2 * decomposed.length + 18);
            if (s >= 0 && s < S_COUNT) {
                decomposed[n++] = L_BASE + s / (V_COUNT * T_COUNT);
                decomposed[n++] = V_BASE + s % (V_COUNT * T_COUNT) / T_COUNT;
                if (s % T_COUNT != 0) decomposed[n++] = T_BASE + s % T_COUNT;
            } else if (mapping != null) {
                for (int m : mapping) decomposed[n++] = m;
            } else {
                decomposed[n++] = cp;
            }
        }
        // canonical ordering: a stable insertion sort of each run of marks by combining class
        for (int i = 1; i < n; i++) {
            for (int j = i; j > 0; j--) {
                int klass = combiningClass(decomposed[j]);
                if (!(klass > 0 && klass < combiningClass(decomposed[j - 1]))) break;
                int swap = decomposed[j];
                decomposed[j] = decomposed[j - 1];
                decomposed[j - 1] = swap;
            }
        }
        int[] out = new int[n];
        int size = 0;
        int starter = -1; // index in out of the last starter
        int lastClass = -1;
        for (int k = 0; k < n; k++) {
            int cp = decomposed[k];
            int klass = combiningClass(cp);
            // not blocked: adjacent to the starter, or every mark since has a lower class
            if (starter >= 0 && (lastClass < klass || (lastClass == 0 && starter == size - 1))) {
                int composite = compose(out[starter], cp);
                if (composite >= 0) {
                    out[starter] = composite;
                    continue;
                }
            }
            if (klass == 0) starter = size;
            lastClass = klass;
            out[size++] = cp;
        }
        return new String(out, 0, size);
    }

    // ----- Python's html.unescape (Lib/html/__init__.py) -----

    private static String replaceCharref(String s) {
        if (s.charAt(0) == '#') {
            boolean hex = s.length() > 1 && (s.charAt(1) == 'x' || s.charAt(1) == 'X');
            String digits = s.substring(hex ? 2 : 1);
            if (digits.endsWith(";")) digits = digits.substring(0, digits.length() - 1);
            // Saturate: any value over 0x10FFFF gives U+FFFD, however many digits it has.
            long num = 0;
            for (int i = 0; i < digits.length() && num <= 0x10FFFF; i++) {
                num = num * (hex ? 16 : 10) + Character.digit(digits.charAt(i), hex ? 16 : 10);
            }
            if (num <= Integer.MAX_VALUE && INVALID_CHARREFS.containsKey((int) num)) {
                return INVALID_CHARREFS.get((int) num);
            }
            if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return "\ufffd";
            if (inRanges(INVALID_CODE_POINTS, (int) num)) return "";
            return new String(Character.toChars((int) num));
        }
        String named = HTML5.get(s);
        if (named != null) return named;
        // the longest name that prefixes it; names are ASCII, so UTF-16 prefixes find what code point prefixes do
        for (int x = s.length() - 1; x > 1; x--) {
            String prefix = HTML5.get(s.substring(0, x));
            if (prefix != null) return prefix + s.substring(x);
        }
        return "&" + s;
    }

    /** Python's html.unescape: named (HTML5 table, legacy names without ';' too) and numeric references. */
    static String htmlUnescape(String s) {
        if (s.indexOf('&') < 0) return s;
        return replace(HTML_CHARREF, s, m -> replaceCharref(m.group(1)));
    }

    // ----- ftfy.fix_text -----

    /** ftfy's unescape_html: only entities with ';', plus upper-case spellings such as '&EACUTE;'. */
    private static String ftfyUnescapeHtml(String text) {
        return replace(FTFY_ENTITY, text, m -> {
            String match = m.group();
            String entity = HTML5.get(match.substring(1));
            if (entity == null) entity = FTFY_UPPER.get(match);
            if (entity != null) return entity;
            if (match.startsWith("&#")) {
                String unescaped = htmlUnescape(match);
                return unescaped.contains(";") ? match : unescaped; // only a reference that consumed its ';'
            }
            return match;
        });
    }

    /** ftfy's badness.is_bad: BADNESS_RE.search(text). Every match holds one of the badnessRequired characters (the
     * generator proves it per alternative), so a text without any is not bad. */
    private static boolean isBad(String text) {
        boolean suspect = false;
        for (int i = 0; i < text.length() && !suspect; i++) {
            suspect = text.charAt(i) >= 0x80 && inRanges(BADNESS_REQUIRED, text.codePointAt(i));
        }
        if (!suspect) return false;
        int[] cps = text.codePoints().toArray();
        for (int at = 0; at < cps.length; at++) {
            if (cps[at] < 0x10000 && !BADNESS_BMP_START[cps[at]]) continue;
            for (int[] steps : BADNESS_STEPS) {
                if (matchesAt(steps, 0, cps, at)) return true;
            }
        }
        return false; // every alternative needs a character, so none matches at the end
    }

    private static boolean matchesAt(int[] steps, int step, int[] cps, int at) {
        if (step == steps.length) return true;
        int s = steps[step];
        if (s == START) return at == 0 && matchesAt(steps, step + 1, cps, at);
        int[] members = BADNESS_CLASSES[s & ~OPTIONAL];
        if (at < cps.length && inRanges(members, cps[at]) && matchesAt(steps, step + 1, cps, at + 1)) return true;
        return (s & OPTIONAL) != 0 && matchesAt(steps, step + 1, cps, at);
    }

    private static boolean possibleEncoding(String text, String encoding) {
        Map<Character, Character> encode = ENCODE.get(encoding);
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            // ftfy's class: \x00-\x19 and \x1b-\x7f (each codec maps them to themselves), and whatever the bytes
            // 0x80-0xff and 0x1a decode to (0x1a is U+FFFD in the sloppy codecs, so there \x1a is not encodable)
            if ((c >= 0x80 || c == 0x1a) && !encode.containsKey(c)) return false;
        }
        return true;
    }

    /** text.encode(encoding) as a "binary string" (one char per byte); the caller checked possibleEncoding. */
    private static String encodeCharmap(String text, String encoding) {
        Map<Character, Character> encode = ENCODE.get(encoding);
        char[] out = new char[text.length()];
        for (int i = 0; i < out.length; i++) out[i] = encode.get(text.charAt(i));
        return new String(out);
    }

    /** Strict UTF-8 of bytes [from, to) of a binary string, as Python decodes it; null where Python raises. */
    static String decodeUtf8Strict(String b, int from, int to) {
        StringBuilder out = new StringBuilder(to - from);
        int i = from;
        while (i < to) {
            int c0 = b.charAt(i);
            int size;
            int cp;
            if (c0 < 0x80) {
                out.append((char) c0);
                i++;
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
            int c1 = b.charAt(i + 1);
            int low = c0 == 0xe0 ? 0xa0 : c0 == 0xf0 ? 0x90 : 0x80;
            int high = c0 == 0xed ? 0x9f : c0 == 0xf4 ? 0x8f : 0xbf;
            if (c1 < low || c1 > high) return null;
            for (int k = 1; k < size; k++) {
                int ck = b.charAt(i + k);
                if (ck < 0x80 || ck > 0xbf) return null;
                cp = (cp << 6) | (ck & 0x3f);
            }
            out.appendCodePoint(cp);
            i += size;
        }
        return out.toString();
    }

    /**
     * ftfy's 'utf-8-variants' codec: UTF-8 plus Java's C0 80 for NUL and CESU-8 surrogate pairs; null on error.
     * Follows its IncrementalDecoder step for step, including what its bytes regexes' '$' does: in Python it also
     * matches before a final '\n', so a trailing "\xc0\n" decodes to NUL.
     */
    private static String decodeUtf8Variants(String b) {
        int n = b.length();
        StringBuilder out = new StringBuilder(n);
        int pos = 0;
        while (pos < n) {
            int k = pos;
            while (k < n && !isSpecial(b, k)) k++;
            if (k > pos) {
                String plain = decodeUtf8Strict(b, pos, k);
                if (plain == null) return null;
                out.append(plain);
                pos = k;
                continue;
            }
            if (b.charAt(pos) == 0xc0) {
                if (n - pos < 2) return null;
                out.append('\0'); // two bytes consumed whatever the second is (it is \x80, or a final \n)
                pos += 2;
                continue;
            }
            if (n - pos < 6) {
                String rest = decodeUtf8Strict(b, pos, n); // what Python does here; it always fails on the \xed
                return rest == null ? null : out.append(rest).toString();
            }
            boolean cesu = within(b, pos + 1, 0xa0, 0xaf) && within(b, pos + 2, 0x80, 0xbf)
                    && byteAt(b, pos + 3) == 0xed && within(b, pos + 4, 0xb0, 0xbf)
                    && (within(b, pos + 5, 0x80, 0xbf) || atEnd(b, pos + 5));
            if (!cesu) return null; // a lone surrogate: Python's UTF-8 decoder raises
            int cp = ((byteAt(b, pos + 1) & 0x0f) << 16) + ((byteAt(b, pos + 2) & 0x3f) << 10)
                    + ((byteAt(b, pos + 4) & 0x0f) << 6) + (byteAt(b, pos + 5) & 0x3f) + 0x10000;
            out.appendCodePoint(cp);
            pos += 6;
        }
        return out.toString();
    }

    private static int byteAt(String b, int k) {
        return k < b.length() ? b.charAt(k) : -1;
    }

    private static boolean atEnd(String b, int k) {
        return k == b.length() || (k == b.length() - 1 && b.charAt(k) == '\n');
    }

    private static boolean within(String b, int k, int low, int high) {
        int c = byteAt(b, k);
        return c >= low && c <= high;
    }

    /** SPECIAL_BYTES_RE at k: \xc0(\x80|$) | CESU-8 | \xed([\xa0-\xbf]|$)([\x80-\xbf]|$); CESU-8 starts as the last. */
    private static boolean isSpecial(String b, int k) {
        int c = b.charAt(k);
        if (c == 0xc0) return byteAt(b, k + 1) == 0x80 || atEnd(b, k + 1);
        if (c != 0xed) return false;
        if (atEnd(b, k + 1)) return true;
        return within(b, k + 1, 0xa0, 0xbf) && (within(b, k + 2, 0x80, 0xbf) || atEnd(b, k + 2));
    }

    private static String restoreByteA0(String bytes) {
        String aGrave = replace(A_GRAVE_WORD, bytes, m -> "\u00c3\u00a0 ");
        return replace(ALTERED_UTF8, aGrave, m -> m.group().replace(' ', '\u00a0'));
    }

    private static String replaceLossySequences(String bytes) {
        return replace(LOSSY_UTF8, bytes, m -> "\u00ef\u00bf\u00bd");
    }

    private static String decodeInconsistentUtf8(String text) {
        // substrings of text: fewer UTF-16 units exactly when fewer code points, the length ftfy compares
        return replace(UTF8_DETECTOR, text, m -> {
            String sub = m.group();
            return sub.length() < text.length() && isBad(sub) ? fixEncoding(sub) : sub;
        });
    }

    private static String fixC1Controls(String text) {
        String sloppy1252 = DECODE.get("sloppy-windows-1252");
        return replace(C1_CONTROL, text, m -> String.valueOf(sloppy1252.charAt(m.group().charAt(0))));
    }

    private static String fixEncodingOneStep(String text) {
        if (text.isEmpty()) return text;
        if (ASCII.matcher(text).matches() || !isBad(text)) return text;
        List<String> possible = new ArrayList<>();
        for (String encoding : ENCODINGS) {
            if (!possibleEncoding(text, encoding)) continue;
            possible.add(encoding);
            String bytes = encodeCharmap(text, encoding);
            if (!encoding.equals("macroman") && ALTERED_UTF8.matcher(bytes).find()) bytes = restoreByteA0(bytes);
            if (encoding.startsWith("sloppy")) bytes = replaceLossySequences(bytes);
            boolean variants = bytes.indexOf('\u00ed') >= 0 || bytes.indexOf('\u00c0') >= 0;
            String fixed = variants ? decodeUtf8Variants(bytes) : decodeUtf8Strict(bytes, 0, bytes.length());
            if (fixed != null) return fixed;
        }
        if (UTF8_DETECTOR.matcher(text).find()) {
            String fixed = decodeInconsistentUtf8(text);
            if (!fixed.equals(text)) return fixed;
        }
        // ftfy asks whether 'windows-1252' is among the possible encodings, which are named 'sloppy-windows-1252',
        // so the answer is always no: Latin-1 text is re-decoded as strict windows-1252 (unless it holds one of the
        // five bytes windows-1252 leaves undefined).
        if (possible.contains("latin-1")) {
            boolean defined = true;
            for (int i = 0; i < text.length() && defined; i++) defined = !inRanges(CP1252_UNDEFINED, text.charAt(i));
            if (defined) {
                String fixed = fixC1Controls(text); // latin-1 bytes read as windows-1252 differ only in 0x80-0x9f
                if (!fixed.equals(text)) return fixed;
            }
        }
        if (C1_CONTROL.matcher(text).find()) return fixC1Controls(text);
        return text;
    }

    /** ftfy.fix_encoding: undo mojibake until nothing changes. */
    private static String fixEncoding(String text) {
        while (true) {
            String fixed = fixEncodingOneStep(text);
            if (fixed.equals(text)) return text;
            text = fixed;
        }
    }

    /** ftfy.fix_and_explain on one line, with fix_text's default configuration. */
    private static String fixSegment(String text, boolean unescapeHtml) {
        while (true) {
            String original = text;
            if (unescapeHtml) text = ftfyUnescapeHtml(text);
            text = fixEncoding(text);
            text = fixC1Controls(text);
            text = replace(LIGATURE_RE, text, m -> LIGATURES.get(m.group()));
            text = replace(WIDTH_RE, text, m -> WIDTH_MAP.get(m.group()));
            text = SINGLE_QUOTE.matcher(DOUBLE_QUOTE.matcher(text).replaceAll("\"")).replaceAll("'");
            text = text.replace("\r\n", "\n").replace('\r', '\n').replace('\u2028', '\n').replace('\u2029', '\n')
                    .replace('\u0085', '\n');
            // Python pairs surrogate code points itself; a Java string is already paired, leaving the unpaired ones
            text = LONE_SURROGATE.matcher(text).replaceAll("\ufffd");
            text = ANSI_ESCAPE.matcher(text).replaceAll("");
            text = CONTROL_RE.matcher(text).replaceAll("");
            text = nfc(text);
            if (text.equals(original)) return text;
        }
    }

    /** ftfy.fix_text with its defaults: line by line; HTML entities are left alone from the first line with a '<'. */
    static String fixText(String text) {
        boolean unescapeHtml = true;
        StringBuilder out = new StringBuilder(text.length());
        int pos = 0;
        while (pos < text.length()) {
            int end = text.indexOf('\n', pos) + 1;
            if (end == 0) end = text.length();
            if (end - pos > MAX_DECODE_LENGTH && text.codePointCount(pos, end) > MAX_DECODE_LENGTH) {
                end = text.offsetByCodePoints(pos, MAX_DECODE_LENGTH);
            }
            String segment = text.substring(pos, end);
            if (unescapeHtml && segment.indexOf('<') >= 0) unescapeHtml = false;
            out.append(fixSegment(segment, unescapeHtml));
            pos = end;
        }
        return out.toString();
    }

    // ----- Python's str.lower() and str.split() -----

    /** CPython's Final_Sigma test for the 'Σ' at i: a cased letter before it, none after, case-ignorables skipped. */
    private static boolean isFinalSigma(String text, int i) {
        int j = i;
        int before = -1;
        while (j > 0) {
            int cp = text.codePointBefore(j);
            j -= Character.charCount(cp);
            if (!inRanges(CASE_IGNORABLE, cp)) {
                before = cp;
                break;
            }
        }
        if (before < 0 || !inRanges(CASED, before)) return false;
        for (j = i + 1; j < text.length(); ) {
            int cp = text.codePointAt(j);
            if (!inRanges(CASE_IGNORABLE, cp)) return !inRanges(CASED, cp);
            j += Character.charCount(cp);
        }
        return true;
    }

    /** Python's str.lower(): full (SpecialCasing) mappings and Final_Sigma, in Python's Unicode version; no locale. */
    static String pythonLower(String text) {
        StringBuilder out = new StringBuilder(text.length());
        for (int i = 0; i < text.length(); ) {
            int cp = text.codePointAt(i);
            if (cp < 0x80) {
                out.append((char) (cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
            } else if (cp == 0x3a3) {
                out.append(isFinalSigma(text, i) ? '\u03c2' : '\u03c3');
            } else {
                String lower = LOWER.get(cp);
                if (lower != null) out.append(lower);
                else out.appendCodePoint(cp);
            }
            i += Character.charCount(cp);
        }
        return out.toString();
    }

    /** Python's " ".join(text.split()). Python's whitespace (\x1c-\x1f and \x85 are; U+FEFF is not) is all BMP. */
    static String collapseWhitespace(String text) {
        StringBuilder out = new StringBuilder(text.length());
        boolean pendingSpace = false;
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (PYTHON_SPACE[c]) {
                pendingSpace = out.length() > 0;
            } else {
                if (pendingSpace) out.append(' ');
                pendingSpace = false;
                out.append(c);
            }
        }
        return out.toString();
    }

    /** The Python tokenizer's _clean: ftfy and html.unescape twice (skipped where they are no-ops), then
     * " ".join(text.split()).lower(). */
    static String clean(String text) {
        if (!NO_OP.matcher(text).matches()) text = htmlUnescape(htmlUnescape(fixText(text)));
        return pythonLower(collapseWhitespace(text));
    }
}
