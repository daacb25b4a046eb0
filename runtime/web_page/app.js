// The page of `clipedge web`: a bundle's MediaPipe models (ImageClassifier, ImageEmbedder) in MediaPipe Tasks for
// the web. site.json (written by clipedge) says which files to load; nothing is fetched from outside the site.
// window.clipedge holds every result and timing, for scripts (the browser test reads it) and the JSON download.
import { FilesetResolver, ImageClassifier, ImageEmbedder } from "./mediapipe/vision_bundle.js";

const TOP = 5; // labels shown per image
const SEARCH_TOP = 8; // gallery tiles marked as hits
const $ = (id) => document.getElementById(id);
const state = {
  site: null, classifier: null, embedder: null, texts: [], textEmbeds: null, gallery: [], results: [],
  timings: { classify: [], embed: [] }, loadMs: null, pending: 0, lastSearch: null, error: null,
};
window.clipedge = state;
let queue = Promise.resolve();
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

function embed(bitmap, roi) {
  const start = performance.now();
  const result = state.embedder.embed(bitmap, { regionOfInterest: roi });
  state.timings.embed.push(performance.now() - start);
  return Float32Array.from(result.embeddings[0].floatEmbedding);
}

function showLatency() {
  const show = (values) => (values.length ? `${median(values).toFixed(1)} ms median (${values.length} images)` : "-");
  $("info-classify-ms").textContent = show(state.timings.classify);
  $("info-embed-ms").textContent = show(state.timings.embed);
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
  $("info-model").textContent = site.model.name;
  $("info-precision").textContent = site.precision;
  $("info-classifier").textContent = `${site.classifier.file.split("/").pop()}, ${megabytes(site.classifier.bytes)}`;
  $("info-embedder").textContent = `${site.embedder.file.split("/").pop()}, ${megabytes(site.embedder.bytes)}`;
  $("info-mediapipe").textContent = `${site.mediapipe.package} ${site.mediapipe.version}`;
  for (const text of state.texts) $("query-list").append(new Option(text.text));
  return site;
}

async function loadModels(site) {
  if (!(await FilesetResolver.isSimdSupported())) {
    throw new Error("this browser lacks WebAssembly SIMD, which the site's MediaPipe build needs (current Chrome, "
                    + "Edge, Firefox and Safari 16.4+ have it)");
  }
  const base = new URL("mediapipe/wasm/", location.href).href;
  const fileset = { wasmLoaderPath: `${base}vision_wasm_internal.js`, wasmBinaryPath: `${base}vision_wasm_internal.wasm` };
  const start = performance.now();
  state.classifier = await ImageClassifier.createFromOptions(fileset, {
    baseOptions: { modelAssetPath: site.classifier.file, delegate: "CPU" },
    runningMode: "IMAGE", maxResults: site.classifier.labels.length,
  });
  state.embedder = await ImageEmbedder.createFromOptions(fileset, {
    baseOptions: { modelAssetPath: site.embedder.file, delegate: "CPU" },
    runningMode: "IMAGE", l2Normalize: true, quantize: false,
  });
  state.loadMs = performance.now() - start;
  $("info-load").textContent = `${state.loadMs.toFixed(0)} ms (WASM + both models)`;
}

async function loadGallery(site) {
  const grid = $("gallery");
  for (const item of site.gallery) {
    const blob = await (await fetch(item.file)).blob();
    const bitmap = await decode(blob);
    const embedding = embed(bitmap, regionOfInterest(bitmap));
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

async function classifyOne(file) {
  const bitmap = await decode(file);
  const roi = regionOfInterest(bitmap);
  const start = performance.now();
  const categories = state.classifier.classify(bitmap, { regionOfInterest: roi }).classifications[0].categories;
  const classifyMs = performance.now() - start;
  state.timings.classify.push(classifyMs);
  const embedStart = performance.now();
  const embedding = embed(bitmap, roi);
  const embedMs = performance.now() - embedStart;
  const probabilities = new Array(state.site.classifier.labels.length).fill(0);
  for (const c of categories) probabilities[c.index] = c.score;
  const result = {
    name: file.name, width: bitmap.width, height: bitmap.height, roi,
    top: categories.slice(0, TOP).map((c) => ({ label: c.categoryName, index: c.index, score: c.score })),
    probabilities, embedding: Array.from(embedding), ms: { classify: classifyMs, embed: embedMs },
    nearest: nearestGallery(embedding),
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

function search(text) {
  const wanted = text.trim().toLowerCase();
  const index = state.texts.findIndex((t) => t.text.toLowerCase() === wanted);
  const note = $("search-note");
  if (index < 0) {
    note.textContent = `No embedding for "${text.trim()}": this page has no text model, only the ${state.texts.length} `
      + "texts clipedge precomputed (pick one from the list; clipedge web --queries FILE adds more).";
    state.lastSearch = { text, ranking: null };
    return;
  }
  const dim = state.site.embed_dim;
  const row = state.textEmbeds.subarray(index * dim, (index + 1) * dim);
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
  note.textContent = `"${state.texts[index].text}": gallery ranked by cosine to its text embedding.`;
  state.lastSearch = {
    text: state.texts[index].text,
    ranking: ranked.map(({ item, cosine }) => ({ file: item.file, caption: item.caption, cosine })),
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
  $("search-form").addEventListener("submit", (event) => { event.preventDefault(); search($("query").value); });
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
    setStatus(`Ready: ${site.classifier.labels.length} labels, ${site.gallery.length} gallery images, `
              + `${state.texts.length} search texts.`, "ready");
  } catch (err) {
    state.error = String(err && err.message ? err.message : err);
    setStatus(`Error: ${state.error}`, "error");
    console.error(err);
  }
}

main();
