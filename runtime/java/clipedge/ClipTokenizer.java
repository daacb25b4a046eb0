package clipedge;

import java.io.ByteArrayOutputStream;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.zip.GZIPInputStream;

/**
 * CLIP's byte-level BPE tokenizer in plain Java 17 (no dependencies; callable from Kotlin and Android): the ids of
 * clipedge's Python tokenizer (runtime/tokenizer.py, itself held to OpenCLIP's SimpleTokenizer) for every text.
 *
 * <p>Credit: the vocabulary layout (256 byte symbols, the same with {@code </w>}, 48894 merges, SOT, EOT), the
 * byte-to-unicode table (the standard GPT-2 mapping) and the pre-tokenization regex come from openai/CLIP
 * {@code clip/simple_tokenizer.py} (MIT, Copyright (c) 2021 OpenAI; see runtime/LICENSE-openai-clip.txt). The
 * special-token spellings matched inside text ({@code <start_of_text>}, {@code <end_of_text>}) follow
 * mlfoundations/open_clip {@code src/open_clip/tokenizer.py}. The text cleaning ({@link ClipTextCleaner}) ports
 * ftfy's fix_text (MIT, Copyright (c) 2023 Robyn Speer) and Python's html.unescape. Written for clipedge;
 * tests/ports/test_tokenizer_ports.py holds it to the Python tokenizer's ids on thousands of texts.
 *
 * <p>Text pipeline (the Python tokenizer's, step for step): ftfy.fix_text, html.unescape twice, collapse
 * whitespace, lower-case, regex pre-tokens, UTF-8 bytes as unicode symbols, BPE merges by rank, ids.
 *
 * <pre>{@code
 * ClipTokenizer tokenizer = ClipTokenizer.fromFiles(Paths.get("bundle/tokenizer"));
 * int[] row = tokenizer.tokenize("a photo of a cat");   // 77 ids: SOT, ids, EOT, zeros
 * }</pre>
 *
 * Thread-safe: the word cache is concurrent, everything else is immutable after construction.
 */
public final class ClipTokenizer {
    public static final int CONTEXT_LENGTH = 77; // every OpenAI/OpenCLIP CLIP text tower has 77 positions
    public static final String VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz";
    public static final String HF_VOCAB_FILE = "vocab.json";
    public static final String HF_MERGES_FILE = "merges.txt";

    // OpenAI keeps only the first merges of the 262k-line file: 49408 ids = 2 * 256 byte symbols + merges + SOT + EOT.
    private static final int N_MERGES = 49408 - 2 * 256 - 2;
    private static final String END_OF_WORD = "</w>";
    private static final int SHORT_WORD = 48; // symbols; longer words take the heap BPE (same ids, O(n log n))
    // Literal special-token strings in a text become SOT/EOT (OpenCLIP's spellings; "<|startoftext|>" is plain text).
    private static final String SOT_TEXT = "<start_of_text>";
    private static final String EOT_TEXT = "<end_of_text>";
    private static final String[] CONTRACTIONS = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    // Names the special tokens carry in vocabularies (HF vocab.json uses OpenAI's; OpenCLIP's are accepted too).
    private static final List<String> SOT_NAMES = Arrays.asList("<|startoftext|>", SOT_TEXT);
    private static final List<String> EOT_NAMES = Arrays.asList("<|endoftext|>", EOT_TEXT);

    // Pre-token classes of the reference pattern '[\p{L}]+', '[\p{N}]', '[^\s\p{L}\p{N}]+' (IGNORECASE), generated
    // from the Python regex module; 0: no class (skipped by the pattern, as whitespace is).
    private static final byte LETTER = 1;
    private static final byte NUMBER = 2;
    private static final byte OTHER = 3;
    private static final int[] LETTERS = ClipTextCleaner.ranges("pretokenLetter");
    private static final int[] NUMBERS = ClipTextCleaner.ranges("pretokenNumber");
    private static final int[] OTHERS = ClipTextCleaner.ranges("pretokenOther");
    private static final byte[] BMP_CLASS = new byte[0x10000];
    // Per literal character of the pattern, the code points IGNORECASE lets match it ('ſ' for 's').
    private static final Map<Character, int[]> CASELESS = new HashMap<>();

    static {
        int[][] sets = {LETTERS, NUMBERS, OTHERS};
        byte[] classes = {LETTER, NUMBER, OTHER};
        for (int s = 0; s < sets.length; s++) {
            for (int i = 0; i < sets[s].length && sets[s][i] < 0x10000; i += 2) {
                Arrays.fill(BMP_CLASS, sets[s][i], Math.min(sets[s][i + 1], 0xffff) + 1, classes[s]);
            }
        }
        for (Map.Entry<String, String> e : ClipTextCleaner.map("pretokenCaseless").entrySet()) {
            CASELESS.put(e.getKey().charAt(0), e.getValue().codePoints().sorted().toArray());
        }
    }

    private final Map<String, Integer> vocab;
    private final int sotTokenId;
    private final int eotTokenId;
    private final int vocabSize;
    private final int[] byteIds = new int[256];
    private final int[] byteEndIds = new int[256];
    private final PairRanks ranks;
    private final int[] first;
    private final int[] second;
    private final int[] merged;
    private final int cacheSize;
    private final Map<String, int[]> cache = new ConcurrentHashMap<>();

    private ClipTokenizer(Map<String, Integer> vocab, List<String[]> merges, int sot, int eot, int cacheSize) {
        this.vocab = vocab;
        this.sotTokenId = sot;
        this.eotTokenId = eot;
        this.cacheSize = cacheSize;
        int maxId = Math.max(sot, eot);
        for (int id : vocab.values()) maxId = Math.max(maxId, id);
        this.vocabSize = maxId + 1;
        checkVocab(merges);
        Map<Integer, String> symbols = bytesToUnicode();
        for (Map.Entry<Integer, String> e : symbols.entrySet()) {
            byteIds[e.getKey()] = vocab.get(e.getValue());
            byteEndIds[e.getKey()] = vocab.get(e.getValue() + END_OF_WORD);
        }
        // rank of each mergeable pair of ids (a later duplicate pair wins, as in the Python dict), and per rank the
        // pair and the id it merges into. A pair whose half is no token can never occur in a word: left out.
        ranks = new PairRanks(merges.size());
        first = new int[merges.size()];
        second = new int[merges.size()];
        merged = new int[merges.size()];
        for (int rank = 0; rank < merges.size(); rank++) {
            String[] pair = merges.get(rank);
            merged[rank] = vocab.get(pair[0] + pair[1]);
            Integer a = vocab.get(pair[0]);
            Integer b = vocab.get(pair[1]);
            if (a == null || b == null) continue;
            first[rank] = a;
            second[rank] = b;
            ranks.put(a, b, rank);
        }
    }

    // ----- construction -----

    /** OpenAI's format: the text of bpe_simple_vocab_16e6.txt.gz, decompressed (line 1 is a header). */
    public static ClipTokenizer fromMergesText(String text) {
        String[] lines = text.split("\n", -1); // lines end at '\n' only, as Python reads the file
        List<String[]> merges = parseMerges(Arrays.asList(lines).subList(1, Math.min(lines.length, 1 + N_MERGES)),
                VOCAB_FILE, 2);
        if (merges.isEmpty()) throw new IllegalArgumentException(VOCAB_FILE + " holds no BPE merges");
        Map<String, Integer> vocab = new HashMap<>();
        List<String> tokens = baseSymbols();
        for (String[] pair : merges) tokens.add(pair[0] + pair[1]);
        for (int i = 0; i < tokens.size(); i++) vocab.put(tokens.get(i), i); // a later duplicate wins, as in Python
        return new ClipTokenizer(vocab, merges, vocab.size(), vocab.size() + 1, 1 << 16);
    }

    /** OpenAI's gzip'd merges file, e.g. from an Android asset: {@code fromGzip(context.getAssets().open(...))}. */
    public static ClipTokenizer fromGzip(InputStream gzip) throws IOException {
        try (InputStream in = new GZIPInputStream(gzip)) {
            ByteArrayOutputStream bytes = new ByteArrayOutputStream(1 << 20);
            byte[] buffer = new byte[1 << 16];
            for (int n; (n = in.read(buffer)) != -1; ) bytes.write(buffer, 0, n); // readAllBytes: Android API 33+
            return fromMergesText(utf8(bytes.toByteArray(), VOCAB_FILE));
        }
    }

    /** HF's layout: the text of vocab.json (token to id) and of merges.txt ('#version' header, one merge a line). */
    public static ClipTokenizer fromHuggingFace(String vocabJson, String mergesText) {
        Map<String, Integer> raw = MiniJson.parseIdObject(vocabJson);
        String[] lines = mergesText.split("\n", -1);
        int header = lines.length > 0 && lines[0].startsWith("#version") ? 1 : 0;
        List<String[]> merges = parseMerges(Arrays.asList(lines).subList(header, lines.length), HF_MERGES_FILE,
                1 + header);
        int sot = special(raw, SOT_NAMES);
        int eot = special(raw, EOT_NAMES);
        Map<String, Integer> vocab = new HashMap<>(raw);
        vocab.keySet().removeAll(SOT_NAMES);
        vocab.keySet().removeAll(EOT_NAMES);
        return new ClipTokenizer(vocab, merges, sot, eot, 1 << 16);
    }

    /**
     * Load a vocabulary as the Python Tokenizer.from_files does: a directory (a bundle's tokenizer/) holding
     * bpe_simple_vocab_16e6.txt.gz (preferred) or HF's vocab.json + merges.txt; the path of vocab.json or
     * merges.txt (that pair); or any other file, read as OpenAI's gzip'd merges.
     */
    public static ClipTokenizer fromFiles(Path directoryOrFile) throws IOException {
        Path path = directoryOrFile;
        String name = path.getFileName() == null ? "" : path.getFileName().toString();
        if (name.equals(HF_VOCAB_FILE) || name.equals(HF_MERGES_FILE)) {
            path = path.toAbsolutePath().getParent();
            if (hasHuggingFaceFiles(path)) return readHuggingFace(path);
        }
        if (Files.isDirectory(path) && Files.isRegularFile(path.resolve(VOCAB_FILE))) path = path.resolve(VOCAB_FILE);
        if (Files.isRegularFile(path)) {
            try (InputStream in = Files.newInputStream(path)) {
                return fromGzip(in);
            }
        }
        if (Files.isDirectory(path) && hasHuggingFaceFiles(path)) return readHuggingFace(path);
        throw new FileNotFoundException("no tokenizer files at " + path + ": expected " + VOCAB_FILE + ", or "
                + HF_VOCAB_FILE + " + " + HF_MERGES_FILE + ", or the path of a .txt.gz merges file");
    }

    private static boolean hasHuggingFaceFiles(Path directory) {
        return Files.isRegularFile(directory.resolve(HF_VOCAB_FILE))
                && Files.isRegularFile(directory.resolve(HF_MERGES_FILE));
    }

    private static ClipTokenizer readHuggingFace(Path directory) throws IOException {
        return fromHuggingFace(utf8(Files.readAllBytes(directory.resolve(HF_VOCAB_FILE)), HF_VOCAB_FILE),
                utf8(Files.readAllBytes(directory.resolve(HF_MERGES_FILE)), HF_MERGES_FILE));
    }

    private static String utf8(byte[] bytes, String source) throws IOException {
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(bytes)).toString();
        } catch (CharacterCodingException e) {
            throw new IOException(source + " is not UTF-8 text: " + e, e);
        }
    }

    private static int special(Map<String, Integer> vocab, List<String> names) {
        for (String name : names) {
            if (vocab.containsKey(name)) return vocab.get(name);
        }
        throw new IllegalArgumentException(HF_VOCAB_FILE + " has none of the special tokens " + names);
    }

    private static List<String[]> parseMerges(List<String> lines, String source, int firstLine) {
        List<String[]> merges = new ArrayList<>();
        for (int i = 0; i < lines.size(); i++) {
            // Python's line.split(): its whitespace, leading and trailing runs dropped
            String collapsed = ClipTextCleaner.collapseWhitespace(lines.get(i));
            if (collapsed.isEmpty()) continue;
            String[] parts = collapsed.split(" ");
            if (parts.length != 2) {
                throw new IllegalArgumentException(source + ": line " + (firstLine + i) + " '" + lines.get(i)
                        + "' is not a merge of two symbols; the file is damaged");
            }
            merges.add(parts);
        }
        return merges;
    }

    private void checkVocab(List<String[]> merges) {
        List<String> missing = new ArrayList<>();
        for (String symbol : baseSymbols()) if (!vocab.containsKey(symbol)) missing.add(symbol);
        for (String[] pair : merges) if (!vocab.containsKey(pair[0] + pair[1])) missing.add(pair[0] + pair[1]);
        if (!missing.isEmpty()) {
            throw new IllegalArgumentException("the vocabulary lacks " + missing.size() + " tokens the merges can "
                    + "produce (first: '" + missing.get(0) + "'); vocab and merges files do not belong together");
        }
    }

    /** The GPT-2 byte -> printable character table, in the order that fixes ids 0..255 (see runtime/tokenizer.py):
     * printable Latin-1 bytes stand for themselves, the other 68 are shifted to U+0100 and up. */
    private static Map<Integer, String> bytesToUnicode() {
        Map<Integer, String> table = new LinkedHashMap<>();
        int[][] printable = {{'!', '~'}, {0xa1, 0xac}, {0xae, 0xff}};
        for (int[] range : printable) {
            for (int b = range[0]; b <= range[1]; b++) table.put(b, String.valueOf((char) b));
        }
        int offset = 0;
        for (int b = 0; b < 256; b++) {
            if (!table.containsKey(b)) table.put(b, String.valueOf((char) (256 + offset++)));
        }
        return table;
    }

    private static List<String> baseSymbols() {
        List<String> symbols = new ArrayList<>(bytesToUnicode().values());
        List<String> out = new ArrayList<>(symbols);
        for (String symbol : symbols) out.add(symbol + END_OF_WORD);
        return out;
    }

    // ----- accessors -----

    public int sotTokenId() {
        return sotTokenId;
    }

    public int eotTokenId() {
        return eotTokenId;
    }

    public int vocabSize() {
        return vocabSize;
    }

    // ----- pre-tokenization: the reference pattern, scanned by hand -----

    private static byte classOf(int cp) {
        if (cp < 0x10000) return BMP_CLASS[cp];
        if (ClipTextCleaner.inRanges(LETTERS, cp)) return LETTER;
        if (ClipTextCleaner.inRanges(NUMBERS, cp)) return NUMBER;
        return ClipTextCleaner.inRanges(OTHERS, cp) ? OTHER : 0;
    }

    /** End of {@code literal} matched at i the way IGNORECASE does ('ſ' matches 's'), or -1. */
    private static int matchLiteral(String text, int i, String literal) {
        for (int k = 0; k < literal.length(); k++) {
            if (i >= text.length()) return -1;
            int cp = text.codePointAt(i);
            if (Arrays.binarySearch(CASELESS.get(literal.charAt(k)), cp) < 0) return -1;
            i += Character.charCount(cp);
        }
        return i;
    }

    /**
     * End of the pre-token regex.finditer would match at i, or -1 where none starts (it then moves one code point
     * on). Alternatives in the pattern's order: {@code <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|
     * [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+} with IGNORECASE.
     */
    private static int pretokenEnd(String text, int i) {
        char c = text.charAt(i);
        if (c == '<') {
            for (String special : new String[] {SOT_TEXT, EOT_TEXT}) {
                int end = matchLiteral(text, i, special);
                if (end >= 0) return end;
            }
        } else if (c == '\'') {
            for (String contraction : CONTRACTIONS) {
                int end = matchLiteral(text, i, contraction);
                if (end >= 0) return end;
            }
        }
        int cp = text.codePointAt(i);
        byte cls = classOf(cp);
        if (cls == 0) return -1;
        int end = i + Character.charCount(cp);
        if (cls == NUMBER) return end;
        while (end < text.length()) {
            int next = text.codePointAt(end);
            if (classOf(next) != cls) break;
            end += Character.charCount(next);
        }
        return end;
    }

    // ----- BPE -----

    /** The reference's merge loop: merge the lowest-rank pair everywhere, left to right; repeat. */
    private int[] merge(int[] symbols) {
        int n = symbols.length;
        while (n > 1) {
            int best = Integer.MAX_VALUE;
            for (int i = 0; i + 1 < n; i++) {
                int rank = ranks.get(symbols[i], symbols[i + 1]);
                if (rank >= 0 && rank < best) best = rank;
            }
            if (best == Integer.MAX_VALUE) break;
            int w = 0;
            for (int i = 0; i < n; ) {
                if (i + 1 < n && symbols[i] == first[best] && symbols[i + 1] == second[best]) {
                    symbols[w++] = merged[best];
                    i += 2;
                } else {
                    symbols[w++] = symbols[i++];
                }
            }
            n = w;
        }
        return Arrays.copyOf(symbols, n);
    }

    /** The same merges in O(n log n) (runtime/bpe.py merge_long): pairs in a heap by (rank, position), symbols in
     * a linked list; one rank's merges all happen before the pairs they create are considered. */
    private int[] mergeLong(int[] sym) {
        int n = sym.length;
        int[] next = new int[n];
        int[] prev = new int[n];
        boolean[] dead = new boolean[n];
        PriorityQueue<Long> heap = new PriorityQueue<>(); // rank << 32 | position: the Python heap's order
        for (int i = 0; i < n; i++) {
            next[i] = i + 1 < n ? i + 1 : -1;
            prev[i] = i - 1;
            if (i + 1 < n) {
                int rank = ranks.get(sym[i], sym[i + 1]);
                if (rank >= 0) heap.add(((long) rank << 32) | i);
            }
        }
        int[] pushedRound = new int[n];
        Arrays.fill(pushedRound, -1);
        int round = 0;
        List<Integer> mergedAt = new ArrayList<>();
        while (!heap.isEmpty()) {
            int rank = (int) (heap.peek() >>> 32);
            mergedAt.clear();
            while (!heap.isEmpty() && (int) (heap.peek() >>> 32) == rank) {
                int i = (int) (heap.poll() & 0xffffffffL);
                int j = dead[i] ? -1 : next[i];
                if (j < 0 || sym[i] != first[rank] || sym[j] != second[rank]) continue; // stale entry
                sym[i] = merged[rank];
                dead[j] = true;
                next[i] = next[j];
                if (next[j] >= 0) prev[next[j]] = i;
                mergedAt.add(i);
            }
            round++;
            for (int i : mergedAt) {
                for (int left : new int[] {prev[i], i}) {
                    int right = left >= 0 ? next[left] : -1;
                    if (right < 0 || pushedRound[left] == round) continue;
                    int pairRank = ranks.get(sym[left], sym[right]);
                    if (pairRank < 0) continue;
                    pushedRound[left] = round;
                    heap.add(((long) pairRank << 32) | left);
                }
            }
        }
        int count = 0;
        for (int i = 0; i >= 0; i = next[i]) count++;
        int[] out = new int[count];
        count = 0;
        for (int i = 0; i >= 0; i = next[i]) out[count++] = sym[i];
        return out;
    }

    /** Ids of one pre-token: its UTF-8 bytes as symbols, the last marked as a word end, then merged. */
    private int[] wordIds(String word) {
        if (word.equals(SOT_TEXT)) return new int[] {sotTokenId};
        if (word.equals(EOT_TEXT)) return new int[] {eotTokenId};
        for (int i = 0; i < word.length(); i++) {
            // Python refuses to encode a lone surrogate; cleaning replaces them, so this is only a safeguard
            char c = word.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < word.length() && Character.isLowSurrogate(word.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                throw new IllegalArgumentException(String.format("text holds an unpaired surrogate U+%04X", (int) c));
            }
        }
        byte[] bytes = word.getBytes(StandardCharsets.UTF_8);
        int[] symbols = new int[bytes.length];
        for (int i = 0; i < bytes.length; i++) symbols[i] = byteIds[bytes[i] & 0xff];
        symbols[bytes.length - 1] = byteEndIds[bytes[bytes.length - 1] & 0xff];
        return symbols.length <= SHORT_WORD ? merge(symbols) : mergeLong(symbols);
    }

    /** BPE ids of a text; with limit >= 0, stop once that many are known (the rest would be cut off anyway). */
    private int[] encode(String text, int limit) {
        String cleaned = ClipTextCleaner.clean(text);
        IntList ids = new IntList();
        for (int i = 0; i < cleaned.length(); ) {
            int end = pretokenEnd(cleaned, i);
            if (end < 0) {
                i += Character.charCount(cleaned.codePointAt(i));
                continue;
            }
            String word = cleaned.substring(i, end);
            int[] wordIds = cache.get(word);
            if (wordIds == null) {
                wordIds = wordIds(word);
                if (cache.size() >= cacheSize) cache.clear(); // bounded memory on a device that tokenizes forever
                cache.put(word, wordIds);
            }
            ids.addAll(wordIds);
            i = end;
            if (limit >= 0 && ids.size >= limit) break;
        }
        return ids.toArray();
    }

    // ----- public encode / tokenize -----

    /** BPE ids of one text, without SOT/EOT and without truncation. */
    public int[] encode(String text) {
        if (text == null) throw new NullPointerException("encode() needs a String, got null");
        return encode(text, -1);
    }

    /**
     * Tokenize a batch: rows of {@code contextLength} ids, SOT, the text's ids, EOT, then zeros, exactly as the
     * Python Tokenizer. A text too long for the context is cut so that EOT stays the last token; with
     * {@code truncate == false} it throws IllegalArgumentException naming the text instead.
     */
    public int[][] tokenize(List<String> texts, int contextLength, boolean truncate) {
        if (contextLength < 2) {
            throw new IllegalArgumentException("contextLength must be >= 2 (room for SOT and EOT), got " + contextLength);
        }
        int[][] out = new int[texts.size()][];
        for (int index = 0; index < out.length; index++) {
            String text = texts.get(index);
            if (text == null) throw new NullPointerException("text " + index + " is null, not a String");
            int[] ids = encode(text, truncate ? contextLength - 2 : -1);
            if (ids.length + 2 > contextLength) {
                if (!truncate) {
                    throw new IllegalArgumentException("text " + index + " (" + preview(text) + ") is " + ids.length
                            + " tokens, " + (ids.length + 2) + " with SOT and EOT, over the context length "
                            + contextLength + "; shorten it or call with truncate=true");
                }
                ids = Arrays.copyOf(ids, contextLength - 2);
            }
            int[] row = new int[contextLength];
            row[0] = sotTokenId;
            System.arraycopy(ids, 0, row, 1, ids.length);
            row[ids.length + 1] = eotTokenId;
            out[index] = row;
        }
        return out;
    }

    /** {@link #tokenize(List, int, boolean)} with 77 positions and truncation. */
    public int[][] tokenize(List<String> texts) {
        return tokenize(texts, CONTEXT_LENGTH, true);
    }

    /** One text's row of 77 ids, truncated if need be. */
    public int[] tokenize(String text) {
        return tokenize(Collections.singletonList(text), CONTEXT_LENGTH, true)[0];
    }

    private static String preview(String text) {
        return text.length() > 60 ? "\"" + text.substring(0, 57) + "...\"" : "\"" + text + "\"";
    }

    // ----- small helpers -----

    /** Growable int array (no boxing on the per-text hot path). */
    private static final class IntList {
        int[] items = new int[32];
        int size;

        void addAll(int[] values) {
            if (size + values.length > items.length) items = Arrays.copyOf(items, Math.max(2 * items.length,
                    size + values.length));
            System.arraycopy(values, 0, items, size, values.length);
            size += values.length;
        }

        int[] toArray() {
            return Arrays.copyOf(items, size);
        }
    }

    /** (id, id) -> rank, open addressing on long keys: the BPE loop's lookup, without boxing. */
    private static final class PairRanks {
        private final long[] keys;
        private final int[] values;
        private final int mask;

        PairRanks(int expected) {
            int capacity = Integer.highestOneBit(Math.max(4, expected * 2 - 1)) << 1;
            keys = new long[capacity];
            values = new int[capacity];
            Arrays.fill(keys, -1L);
            mask = capacity - 1;
        }

        private int slot(long key) {
            long h = key * 0x9E3779B97F4A7C15L;
            int i = (int) (h >>> 40) & mask;
            while (keys[i] != -1L && keys[i] != key) i = (i + 1) & mask;
            return i;
        }

        void put(int a, int b, int rank) {
            long key = ((long) a << 32) | (b & 0xffffffffL);
            int i = slot(key);
            keys[i] = key;
            values[i] = rank;
        }

        int get(int a, int b) {
            long key = ((long) a << 32) | (b & 0xffffffffL);
            int i = slot(key);
            return keys[i] == key ? values[i] : -1;
        }
    }

    /** Just enough JSON for HF's vocab.json: one object of string keys and integer values. */
    private static final class MiniJson {
        private final String s;
        private int i;

        private MiniJson(String s) {
            this.s = s;
        }

        static Map<String, Integer> parseIdObject(String json) {
            MiniJson p = new MiniJson(json);
            Map<String, Integer> out = new LinkedHashMap<>();
            p.expect('{');
            if (p.peek() != '}') {
                do {
                    String key = p.string();
                    p.expect(':');
                    out.put(key, p.integer()); // a later duplicate key wins, as in Python's json
                } while (p.accept(','));
            }
            p.expect('}');
            p.skipSpace();
            if (p.i != json.length()) throw p.error("trailing text");
            return out;
        }

        private void skipSpace() {
            while (i < s.length() && " \t\r\n".indexOf(s.charAt(i)) >= 0) i++;
        }

        private char peek() {
            skipSpace();
            if (i >= s.length()) throw error("unexpected end");
            return s.charAt(i);
        }

        private boolean accept(char c) {
            if (peek() != c) return false;
            i++;
            return true;
        }

        private void expect(char c) {
            if (!accept(c)) throw error("expected '" + c + "'");
        }

        private IllegalArgumentException error(String what) {
            return new IllegalArgumentException(HF_VOCAB_FILE + " must map each token to an integer id: " + what
                    + " at character " + i);
        }

        private String string() {
            expect('"');
            StringBuilder out = new StringBuilder();
            while (true) {
                if (i >= s.length()) throw error("unterminated string");
                char c = s.charAt(i++);
                if (c == '"') return out.toString();
                if (c != '\\') {
                    out.append(c);
                    continue;
                }
                char e = s.charAt(i++);
                switch (e) {
                    case 'b' -> out.append('\b');
                    case 'f' -> out.append('\f');
                    case 'n' -> out.append('\n');
                    case 'r' -> out.append('\r');
                    case 't' -> out.append('\t');
                    case 'u' -> {
                        out.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        i += 4;
                    }
                    default -> out.append(e); // \" \\ \/
                }
            }
        }

        private int integer() {
            skipSpace();
            int start = i;
            if (i < s.length() && s.charAt(i) == '-') i++;
            while (i < s.length() && Character.isDigit(s.charAt(i)) && s.charAt(i) < 0x80) i++;
            if (i == start || (i < s.length() && ".eE".indexOf(s.charAt(i)) >= 0)) throw error("not an integer");
            return Integer.parseInt(s.substring(start, i));
        }
    }
}
