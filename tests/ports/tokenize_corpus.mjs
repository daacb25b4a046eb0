// Driver for tests/ports/test_tokenizer_ports.py and bench_tokenizer_ports.py: tokenize a JSON corpus with the
// JavaScript port and print the ids as JSON.
//
//   node tokenize_corpus.mjs VOCABULARY CORPUS.json            -> {"encode", "tokenize", "tokenize16", "strict"}
//   node tokenize_corpus.mjs VOCABULARY CORPUS.json --bench N  -> {"load": [...], "seconds": [...]}: N timed passes
//
// VOCABULARY is anything loadClipTokenizer accepts (the .txt.gz, a tokenizer/ folder, vocab.json). "strict" holds,
// per text, its row with truncate=false, or null where the tokenizer refused the text.

import { loadClipTokenizer } from '../../runtime/web_page/clip_tokenizer.mjs';
import { readFileSync } from 'node:fs';

const [vocabulary, corpusPath, mode, repeats] = process.argv.slice(2);
const texts = JSON.parse(readFileSync(corpusPath, 'utf8'));

if (mode === '--bench') {
  const load = [];
  const seconds = [];
  for (let pass = -1; pass < Number(repeats); pass++) {
    // a fresh tokenizer per pass, so the word cache does not carry over: the first pass (-1) warms the JIT
    const start = process.hrtime.bigint();
    const tokenizer = await loadClipTokenizer(vocabulary);
    const loaded = process.hrtime.bigint();
    tokenizer.tokenize(texts);
    if (pass >= 0) {
      load.push(Number(loaded - start) / 1e9);
      seconds.push(Number(process.hrtime.bigint() - loaded) / 1e9);
    }
  }
  process.stdout.write(JSON.stringify({ load, seconds }));
} else {
  const tokenizer = await loadClipTokenizer(vocabulary);
  const rows = (batch) => batch.map((row) => Array.from(row));
  const encode = texts.map((text) => tokenizer.encode(text));
  const tokenize = rows(tokenizer.tokenize(texts));
  const tokenize16 = rows(tokenizer.tokenize(texts, 16));
  const strict = texts.map((text) => {
    try {
      return Array.from(tokenizer.tokenize([text], 77, false)[0]);
    } catch (err) {
      if (err instanceof RangeError) return null; // too long for the context
      throw err;
    }
  });
  process.stdout.write(JSON.stringify({ encode, tokenize, tokenize16, strict }));
}
