import clipedge.ClipTokenizer;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Driver for tests/ports/test_tokenizer_ports.py and bench_tokenizer_ports.py: tokenize a JSON corpus with the
 * Java port and print the ids as JSON.
 *
 * <pre>
 * java TokenizeCorpus VOCABULARY CORPUS.json            -> {"encode": ..., "tokenize": ..., "tokenize16": ..., "strict": ...}
 * java TokenizeCorpus VOCABULARY CORPUS.json --bench N  -> {"load": [...], "seconds": [...]}: N timed passes
 * </pre>
 *
 * VOCABULARY is anything ClipTokenizer.fromFiles accepts (the .txt.gz, a tokenizer/ folder, vocab.json).
 * "strict" holds, per text, its row with truncate=false, or null where the tokenizer refused the text.
 */
public final class TokenizeCorpus {
    private static final int WARM_UP_PASSES = 3; // the JIT compiles the hot paths during these

    public static void main(String[] args) throws Exception {
        Path vocabulary = Path.of(args[0]);
        List<String> texts = parseStringArray(Files.readString(Path.of(args[1]), StandardCharsets.UTF_8));
        StringBuilder out = new StringBuilder();
        if (args.length > 2 && args[2].equals("--bench")) {
            int repeats = Integer.parseInt(args[3]);
            List<Double> load = new ArrayList<>();
            List<Double> seconds = new ArrayList<>();
            for (int pass = -WARM_UP_PASSES; pass < repeats; pass++) {
                long start = System.nanoTime();
                ClipTokenizer tokenizer = ClipTokenizer.fromFiles(vocabulary); // fresh: no word cache carried over
                long loaded = System.nanoTime();
                tokenizer.tokenize(texts);
                if (pass >= 0) {
                    load.add((loaded - start) / 1e9);
                    seconds.add((System.nanoTime() - loaded) / 1e9);
                }
            }
            out.append("{\"load\": ").append(load).append(", \"seconds\": ").append(seconds).append('}');
        } else {
            ClipTokenizer tokenizer = ClipTokenizer.fromFiles(vocabulary);
            List<int[]> encode = new ArrayList<>();
            List<int[]> strict = new ArrayList<>();
            for (String text : texts) {
                encode.add(tokenizer.encode(text));
                try {
                    strict.add(tokenizer.tokenize(List.of(text), ClipTokenizer.CONTEXT_LENGTH, false)[0]);
                } catch (IllegalArgumentException tooLong) {
                    strict.add(null);
                }
            }
            out.append("{\"encode\": ");
            appendRows(out, encode);
            out.append(", \"tokenize\": ");
            appendRows(out, List.of(tokenizer.tokenize(texts)));
            out.append(", \"tokenize16\": ");
            appendRows(out, List.of(tokenizer.tokenize(texts, 16, true)));
            out.append(", \"strict\": ");
            appendRows(out, strict);
            out.append('}');
        }
        System.out.write(out.toString().getBytes(StandardCharsets.UTF_8));
        System.out.flush();
    }

    private static void appendRows(StringBuilder out, List<int[]> rows) {
        out.append('[');
        for (int r = 0; r < rows.size(); r++) {
            if (r > 0) out.append(',');
            int[] row = rows.get(r);
            if (row == null) {
                out.append("null");
                continue;
            }
            out.append('[');
            for (int k = 0; k < row.length; k++) {
                if (k > 0) out.append(',');
                out.append(row[k]);
            }
            out.append(']');
        }
        out.append(']');
    }

    /** A JSON array of strings, as Python's json.dump writes it (ASCII, \\uXXXX escapes, lone surrogates kept). */
    static List<String> parseStringArray(String json) {
        List<String> out = new ArrayList<>();
        int i = json.indexOf('[') + 1;
        while (true) {
            while (" \t\r\n,".indexOf(json.charAt(i)) >= 0) i++;
            if (json.charAt(i) == ']') return out;
            if (json.charAt(i) != '"') throw new IllegalArgumentException("expected a string at " + i);
            StringBuilder text = new StringBuilder();
            i++;
            while (json.charAt(i) != '"') {
                char c = json.charAt(i++);
                if (c != '\\') {
                    text.append(c);
                    continue;
                }
                char e = json.charAt(i++);
                switch (e) {
                    case 'b' -> text.append('\b');
                    case 'f' -> text.append('\f');
                    case 'n' -> text.append('\n');
                    case 'r' -> text.append('\r');
                    case 't' -> text.append('\t');
                    case 'u' -> {
                        text.append((char) Integer.parseInt(json.substring(i, i + 4), 16));
                        i += 4;
                    }
                    default -> text.append(e);
                }
            }
            out.add(text.toString());
            i++;
        }
    }
}
