// The page of `clipedge web`. Texts: the bundle's text model (text_<p>.tflite) on LiteRT.js, fed by the tokenizer
// port reading the bundle's own tokenizer files, so any typed text is embedded here. Images: the bundle's MediaPipe
// models (ImageClassifier, ImageEmbedder) in MediaPipe Tasks for the web when it has them (site.image_runtime
// "mediapipe"), else its plain image_<p>.tflite on LiteRT.js with CLIP's resize, crop and normalization done here
// ("litert") and zero-shot classification against the label prompts' embeddings. site.json (written by clipedge)
// says which files to load; nothing is fetched from outside the site, except the search texts' embeddings from the
// `clipedge serve` that site.server names (clipedge web --server URL). window.clipedge holds every result and timing,
// for scripts (the browser test reads it, and calls window.clipedge.embedTexts) and the JSON download.
import { loadClipTokenizer } from "./clip_tokenizer.js"; // clip_tokenizer.mjs, renamed by clipedge web

const TOP = 5; // labels shown per image
const SEARCH_TOP = 8; // gallery tiles marked as hits
const LITERT_WASM = "litert/wasm/litert_wasm_compat_internal.js"; // the one LiteRT.js build the site has
const $ = (id) => document.getElementById(id);
const state = {
  site: null, classifier: null, embedder: null, texts: [], textEmbeds: null, gallery: [], results: [],
  timings: { classify: [], embed: [], text: [] }, loadMs: null, pending: 0, lastSearch: null,
  error: null, tokenizer: null, textModel: null, imageModel: null, labelRows: [], embedTexts: null,
};
window.clipedge = state;
let queue = Promise.resolve();
let textQueue = Promise.resolve(); // one LiteRT.js call at a time
let Tensor = null; // LiteRT.js's, once loaded
const objectUrls = []; // the result cards' thumbnails, released by Clear

function setStatus(text, kind) {
  $("status").textContent = text;
  if (kind) document.body.dataset.state = kind;
}

function median(values) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function megabytes(bytes) {
  return `${(bytes / 1e6).toFixed(2)} MB`;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Python's round(): half to even, as torchvision's center crop places its window (crop_rule "torchvision").
function roundHalfEven(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest !== 0.5) return Math.round(x);
  return floor % 2 === 0 ? floor : floor + 1;
}

// The window of the original image that the bundle's preprocessing keeps (runtime/resize_modes.py, the manifest's
// `preprocess`, docs/preprocessing.md), passed as MediaPipe's region of interest so that the model gets nearly the
// pixels clipedge's runtime gives it (docs/mobile.md): the crop of a shortest-side resize (either crop rule), or of
// a squash (the whole image when the crop is the resize). Default: shortest side resized to `image_size`, the long
// side truncated, the centre crop at offset (resized - crop) // 2. clipedge web refuses the other resize modes
// (longest pads, which a region of interest cannot; none does not resize).
export function preprocessWindow(width, height, preprocess) {
  const size = preprocess.image_size;
  const crop = preprocess.crop_size ?? size;
  const offset = (side) => (preprocess.crop_rule === "torchvision" ? roundHalfEven((side - crop) / 2)
                                                                    : Math.floor((side - crop) / 2));
  let rh, rw;
  if ((preprocess.resize_mode ?? "shortest") === "squash") {
    [rh, rw] = [size, size];
  } else if ((preprocess.resize_mode ?? "shortest") === "shortest") {
    const newLong = Math.floor((size * Math.max(width, height)) / Math.min(width, height));
    [rh, rw] = width <= height ? [newLong, size] : [size, newLong];
  } else {
    throw new Error(`resize_mode ${preprocess.resize_mode} is not supported by the page`);
  }
  const top = offset(rh);
  const left = offset(rw);
  return { left: left / rw, top: top / rh, right: (left + crop) / rw, bottom: (top + crop) / rh };
}

function regionOfInterest(bitmap) {
  const preprocess = state.site.preprocess ?? { image_size: state.site.image_size };
  return preprocessWindow(bitmap.width, bitmap.height, preprocess);
}

// Decoded as Pillow decodes for the runtime: EXIF orientation applied, no colour management, alpha not premultiplied.
function decode(blob) {
  return createImageBitmap(blob, { imageOrientation: "from-image", colorSpaceConversion: "none",
                                   premultiplyAlpha: "none" });
}

function dot(a, b) {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

function normalize(values) {
  const norm = Math.sqrt(dot(values, values)) || 1;
  return values.map((v) => v / norm);
}

// One call of a LiteRT.js model: a typed array of `shape` in, its first output out (a copy), every tensor freed.
async function runModel(model, data, shape) {
  const input = new Tensor(data, shape);
  try {
    const outputs = await model.run([input]);
    try {
      return Float32Array.from(outputs[0].toTypedArray());
    } finally {
      outputs.forEach((tensor) => tensor.delete());
    }
  } finally {
    input.delete();
  }
}

// Texts -> unit vectors, one text model call each (its input is [1, context]), as clipedge's encode_texts does.
async function embedTexts(texts) {
  const run = async () => {
    const out = [];
    for (const text of texts) {
      const start = performance.now();
      const [ids] = state.tokenizer.tokenize([text]);
      out.push(normalize(await runModel(state.textModel, Int32Array.from(ids), [1, ids.length])));
      state.timings.text.push(performance.now() - start);
    }
    showLatency();
    return out;
  };
  const result = textQueue.then(run);
  textQueue = result.catch(() => {});
  return result;
}
state.embedTexts = async (texts) => (await embedTexts(texts)).map((row) => Array.from(row));

// CLIP's preprocessing for the plain image model (site.image_runtime "litert"): the crop window of the bundle's
// resize (preprocessWindow) drawn into a canvas of the model's input size, which resizes and crops in one step
// (the browser's "high" smoothing, not Pillow's bicubic: docs/web.md measures the gap), then (x / 255 - mean) / std
// per channel, NHWC float32.
function pixelValues(bitmap, roi) {
  const size = state.site.image_size;
  const { mean, std } = state.site.preprocess;
  const canvas = new OffscreenCanvas(size, size);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingEnabled = true;
  context.imageSmoothingQuality = "high";
  const [w, h] = [bitmap.width, bitmap.height];
  context.drawImage(bitmap, roi.left * w, roi.top * h, (roi.right - roi.left) * w, (roi.bottom - roi.top) * h,
                    0, 0, size, size);
  const rgba = context.getImageData(0, 0, size, size).data;
  const out = new Float32Array(size * size * 3);
  for (let i = 0; i < size * size; i++) {
    for (let c = 0; c < 3; c++) out[3 * i + c] = (rgba[4 * i + c] / 255 - mean[c]) / std[c];
  }
  return out;
}

async function embed(bitmap, roi) {
  const start = performance.now();
  let embedding;
  if (state.imageModel) {
    const size = state.site.image_size;
    embedding = normalize(await runModel(state.imageModel, pixelValues(bitmap, roi), [1, size, size, 3]));
  } else {
    const result = state.embedder.embed(bitmap, { regionOfInterest: roi });
    embedding = Float32Array.from(result.embeddings[0].floatEmbedding);
  }
  state.timings.embed.push(performance.now() - start);
  return embedding;
}

// Zero-shot as clipedge's classify: softmax over labels of logit_scale * cosine(image, label prompt).
function zeroShot(embedding) {
  const logits = state.labelRows.map((row) => state.site.logit_scale * dot(embedding, row));
  const top = Math.max(...logits);
  const exps = logits.map((x) => Math.exp(x - top));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((x) => x / sum);
}

function showLatency() {
  const show = (values, what) => (values.length ? `${median(values).toFixed(1)} ms median (${values.length} ${what})` : "-");
  $("info-classify-ms").textContent = show(state.timings.classify, "images");
  $("info-embed-ms").textContent = show(state.timings.embed, "images");
  $("info-text-ms").textContent = show(state.timings.text, "texts");
}

function fileInfo(model) {
  return `${model.file.split("/").pop()}, ${megabytes(model.bytes)}`;
}

async function loadSite() {
  const response = await fetch("site.json");
  if (!response.ok) throw new Error(`site.json: HTTP ${response.status}`);
  const site = await response.json();
  const raw = await (await fetch(site.texts.file)).arrayBuffer();
  const expected = site.texts.items.length * site.embed_dim * 4;
  if (raw.byteLength !== expected) throw new Error(`${site.texts.file}: ${raw.byteLength} bytes, expected ${expected}`);
  state.site = site;
  state.texts = site.texts.items;
  state.textEmbeds = new Float32Array(raw); // little-endian float32, as every browser platform is
  const row = (index) => state.textEmbeds.subarray(index * site.embed_dim, (index + 1) * site.embed_dim);
  // The label prompts' rows, in the labels' order: the zero-shot classifier of a bundle without MediaPipe models.
  state.labelRows = site.classifier.labels.map((label) => row(state.texts.findIndex((t) => t.label === label)));
  $("info-model").textContent = site.model.name;
  $("info-precision").textContent = site.precision;
  $("info-classifier").textContent = site.classifier.file ? fileInfo(site.classifier)
    : `zero-shot: ${site.classifier.labels.length} label prompts`;
  $("info-embedder").textContent = fileInfo(site.embedder);
  $("info-text").textContent = fileInfo(site.text_model);
  $("info-mediapipe").textContent = site.mediapipe ? `${site.mediapipe.package} ${site.mediapipe.version}`
    : "not used (no mobile models)";
  $("info-litert").textContent = `${site.litert.package} ${site.litert.version}`;
  for (const text of state.texts) $("query-list").append(new Option(text.text));
  return site;
}

async function loadMediaPipe(site) {
  const { FilesetResolver, ImageClassifier, ImageEmbedder } = await import("./mediapipe/vision_bundle.js");
  if (!(await FilesetResolver.isSimdSupported())) {
    throw new Error("this browser lacks WebAssembly SIMD, which the site's MediaPipe build needs (current Chrome, "
                    + "Edge, Firefox and Safari 16.4+ have it)");
  }
  const base = new URL("mediapipe/wasm/", location.href).href;
  const fileset = { wasmLoaderPath: `${base}vision_wasm_internal.js`, wasmBinaryPath: `${base}vision_wasm_internal.wasm` };
  state.classifier = await ImageClassifier.createFromOptions(fileset, {
    baseOptions: { modelAssetPath: site.classifier.file, delegate: "CPU" },
    runningMode: "IMAGE", maxResults: site.classifier.labels.length,
  });
  state.embedder = await ImageEmbedder.createFromOptions(fileset, {
    baseOptions: { modelAssetPath: site.embedder.file, delegate: "CPU" },
    runningMode: "IMAGE", l2Normalize: true, quantize: false,
  });
}

// LiteRT.js (after MediaPipe: both loaders pass their WASM module through the global ModuleFactory, one at a time),
// the tokenizer from the site's copy of the bundle's tokenizer files, the text model, and the plain image model.
async function loadLiteRt(site) {
  const litert = await import("./litert/litert_core.js");
  Tensor = litert.Tensor;
  await litert.loadLiteRt(new URL(LITERT_WASM, location.href).href);
  state.tokenizer = await loadClipTokenizer(new URL(site.tokenizer.dir, location.href).href,
                                            { contextLength: site.tokenizer.context_length });
  state.textModel = await litert.loadAndCompile(site.text_model.file, { accelerator: "wasm" });
  if (site.image_runtime === "litert") {
    state.imageModel = await litert.loadAndCompile(site.embedder.file, { accelerator: "wasm" });
  }
}

async function loadModels(site) {
  const start = performance.now();
  if (site.image_runtime === "mediapipe") await loadMediaPipe(site);
  await loadLiteRt(site);
  state.loadMs = performance.now() - start;
  const what = site.image_runtime === "mediapipe" ? "MediaPipe + LiteRT.js WASM, 3 models" : "LiteRT.js WASM, 2 models";
  $("info-load").textContent = `${state.loadMs.toFixed(0)} ms (${what})`;
}

async function loadGallery(site) {
  const grid = $("gallery");
  for (const item of site.gallery) {
    const blob = await (await fetch(item.file)).blob();
    const bitmap = await decode(blob);
    const embedding = await embed(bitmap, regionOfInterest(bitmap));
    bitmap.close();
    const tile = element("figure", "tile");
    const img = element("img");
    img.src = item.file;
    img.alt = item.caption || item.source;
    const caption = element("figcaption", "", item.caption || item.source);
    const score = element("span", "score");
    tile.append(img, caption, score);
    grid.append(tile);
    state.gallery.push({ ...item, embedding, tile });
  }
}

function nearestGallery(embedding) {
  let best = null;
  for (const item of state.gallery) {
    const cosine = dot(embedding, item.embedding);
    if (!best || cosine > best.cosine) best = { file: item.file, caption: item.caption || item.source, cosine };
  }
  return best;
}

function renderResult(result, url) {
  const card = element("article", "card");
  card.dataset.name = result.name;
  const img = element("img", "thumb");
  img.src = url;
  img.alt = result.name;
  const body = element("div", "card-body");
  body.append(element("h3", "", result.name));
  const list = element("ol", "bars");
  for (const top of result.top) {
    const row = element("li");
    const bar = element("span", "bar");
    const fill = element("span", "fill");
    fill.style.width = `${(100 * top.score).toFixed(1)}%`;
    bar.append(fill);
    row.append(element("span", "label", top.label), bar, element("span", "prob", `${(100 * top.score).toFixed(1)}%`));
    list.append(row);
  }
  body.append(list);
  const near = result.nearest ? ` · closest gallery image: ${result.nearest.caption} (cos ${result.nearest.cosine.toFixed(3)})` : "";
  body.append(element("p", "meta", `classify ${result.ms.classify.toFixed(1)} ms · embed ${result.ms.embed.toFixed(1)} ms${near}`));
  card.append(img, body);
  $("results").prepend(card);
}

// MediaPipe's ImageClassifier (labels inside the model), or zero-shot against the label prompts (no mobile models).
async function classify(bitmap, roi) {
  const start = performance.now();
  const labels = state.site.classifier.labels;
  const probabilities = new Array(labels.length).fill(0);
  let embedding = null;
  if (state.classifier) {
    const categories = state.classifier.classify(bitmap, { regionOfInterest: roi }).classifications[0].categories;
    for (const c of categories) probabilities[c.index] = c.score;
  } else {
    embedding = await embed(bitmap, roi);
    zeroShot(embedding).forEach((p, i) => { probabilities[i] = p; });
  }
  const order = probabilities.map((p, i) => i).sort((i, j) => probabilities[j] - probabilities[i]);
  const top = order.slice(0, TOP).map((i) => ({ label: labels[i], index: i, score: probabilities[i] }));
  const ms = performance.now() - start;
  state.timings.classify.push(ms);
  return { top, probabilities, embedding, ms };
}

async function classifyOne(file) {
  const bitmap = await decode(file);
  const roi = regionOfInterest(bitmap);
  const classified = await classify(bitmap, roi);
  let embedding = classified.embedding;
  let embedMs = state.timings.embed[state.timings.embed.length - 1];
  if (!embedding) {
    const embedStart = performance.now();
    embedding = await embed(bitmap, roi);
    embedMs = performance.now() - embedStart;
  }
  const result = {
    name: file.name, width: bitmap.width, height: bitmap.height, roi, top: classified.top,
    probabilities: classified.probabilities, embedding: Array.from(embedding),
    ms: { classify: classified.ms, embed: embedMs }, nearest: nearestGallery(embedding),
  };
  bitmap.close();
  state.results.push(result);
  const url = URL.createObjectURL(file);
  objectUrls.push(url);
  renderResult(result, url);
}

function enqueue(files) {
  const images = [...files].filter((f) => f.type.startsWith("image/") || /\.(jpe?g|png|webp|gif|bmp)$/i.test(f.name));
  if (!images.length) return;
  state.pending += images.length;
  document.body.dataset.busy = "true";
  for (const file of images) {
    queue = queue.then(() => classifyOne(file)).catch((err) => {
      setStatus(`${file.name}: ${err.message || err}`);
    }).finally(() => {
      state.pending -= 1;
      $("count").textContent = `${state.results.length} classified`;
      showLatency();
      if (state.pending === 0) document.body.dataset.busy = "false";
    });
  }
}

// With site.server (`clipedge web --server URL`): the text embedded by that `clipedge serve` (POST /embed/text), which
// must run the same checkpoint (its sha256); if it cannot answer, the page's own text model does, and says why.
async function embedQuery(text) {
  const server = state.site.server;
  if (server) {
    try {
      const response = await fetch(`${server}/embed/text`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ texts: [text] }),
      });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
      const sha = state.site.model.sha256;
      if (sha && body.model.sha256 !== sha) throw new Error(`it serves another model (${body.model.sha256.slice(0, 12)})`);
      return { row: Float32Array.from(body.embeddings[0]), where: `by ${server} (${body.model.precision})` };
    } catch (err) {
      state.serverError = String(err && err.message ? err.message : err);
      const [row] = await embedTexts([text]);
      return { row, where: `in this page (${server}: ${state.serverError})` };
    }
  }
  const [row] = await embedTexts([text]);
  return { row, where: "in this page" };
}

// Any text: embedded here with the bundle's text model (or by site.server), then the gallery ranked by cosine to it.
async function search(text) {
  const wanted = text.trim();
  if (!wanted) return;
  const note = $("search-note");
  const start = performance.now();
  const { row, where } = await embedQuery(wanted);
  const ms = performance.now() - start;
  const ranked = state.gallery.map((item) => ({ item, cosine: dot(item.embedding, row) }))
    .sort((a, b) => b.cosine - a.cosine);
  const low = ranked[ranked.length - 1].cosine;
  const span = Math.max(ranked[0].cosine - low, 1e-6);
  ranked.forEach(({ item, cosine }, rank) => {
    item.tile.classList.toggle("hit", rank < SEARCH_TOP);
    item.tile.style.setProperty("--score", `${(100 * (cosine - low)) / span}%`);
    item.tile.querySelector(".score").textContent = cosine.toFixed(3);
    $("gallery").append(item.tile); // appended in rank order
  });
  let dropped = "";
  if (state.results.length) {
    const best = state.results.map((r) => ({ name: r.name, cosine: dot(r.embedding, row) }))
      .sort((a, b) => b.cosine - a.cosine)[0];
    dropped = ` Closest of your images: ${best.name} (cos ${best.cosine.toFixed(3)}).`;
    for (const card of $("results").children) card.classList.toggle("hit", card.dataset.name === best.name);
  }
  note.textContent = `"${wanted}": embedded ${where} in ${ms.toFixed(1)} ms; gallery ranked by cosine.${dropped}`;
  state.lastSearch = {
    text: wanted, ms, where, embedding: Array.from(row),
    ranking: ranked.map(({ item, cosine }) => ({ file: item.file, caption: item.caption, cosine })),
    results: state.results.map((r) => ({ name: r.name, cosine: dot(r.embedding, row) })),
  };
}

function download() {
  const payload = { site: state.site, loadMs: state.loadMs, timings: state.timings, results: state.results };
  const link = element("a");
  link.href = URL.createObjectURL(new Blob([JSON.stringify(payload)], { type: "application/json" }));
  link.download = "clipedge-web-results.json";
  link.click();
}

function wire() {
  $("file-input").addEventListener("change", (event) => enqueue(event.target.files));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    enqueue(event.dataTransfer.files);
  });
  $("clear").addEventListener("click", () => {
    state.results = [];
    $("results").replaceChildren();
    $("count").textContent = "";
    objectUrls.splice(0).forEach((url) => URL.revokeObjectURL(url));
  });
  $("download").addEventListener("click", download);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search($("query").value).catch((err) => setStatus(`search: ${err.message || err}`));
  });
  for (const id of ["file-input", "clear", "download", "query", "search-button"]) $(id).disabled = false;
}

async function main() {
  try {
    const site = await loadSite();
    await loadModels(site);
    setStatus(`Embedding the gallery (${site.gallery.length} images)...`);
    await loadGallery(site);
    showLatency();
    wire();
    setStatus(`Ready: ${site.classifier.labels.length} labels, ${site.gallery.length} gallery images; search `
              + "for any text.", "ready");
  } catch (err) {
    state.error = String(err && err.message ? err.message : err);
    setStatus(`Error: ${state.error}`, "error");
    console.error(err);
  }
}

main();
