// Drives the `clipedge web` page in Debian's Chromium (headless) through its UI, for tests/web/test_web_page.py:
// picks the images with the page's file input, waits for every result, embeds config.texts with the page's text model
// (window.clipedge.embedTexts), searches the gallery with the search box (config.query, then config.freeQuery: any
// text, embedded in the page), and takes the screenshot. playwright-core (runtime/web_page/package.json) only talks to the system browser: nothing is
// downloaded. Prints one JSON object; exits non-zero on a failure, and stops itself after config.timeoutMs.
//
//   node tests/web/drive_page.mjs CONFIG.json
//   CONFIG: {url, chromium, nodeModules, images: [{name, path}], showcase: [{name, path}], query, freeQuery,
//            texts: [string], screenshot, out, timeoutMs}
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const require = createRequire(path.join(config.nodeModules, "..", "package.json"));
const { chromium } = require("playwright-core");

// The flags that work as root on a closed network: no sandbox (root), no GPU, nothing phoning home.
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"];

const log = { console: [], pageErrors: [], requests: [] };
let browser = null;
const deadline = setTimeout(async () => {
  process.stderr.write(`drive_page: gave up after ${config.timeoutMs} ms\n`);
  if (browser) await browser.close().catch(() => {});
  process.exit(3);
}, config.timeoutMs);

const MIME = { ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp" };

function payloads(images) {
  return images.map((image) => ({ name: image.name, mimeType: MIME[path.extname(image.path).toLowerCase()],
                                  buffer: readFileSync(image.path) }));
}

async function pick(page, images) {
  const before = await page.evaluate(() => window.clipedge.results.length);
  await page.setInputFiles("#file-input", payloads(images));
  await page.waitForFunction(
    (n) => window.clipedge.results.length === n && document.body.dataset.busy === "false",
    before + images.length, { timeout: config.timeoutMs, polling: 100 });
}

async function search(page, text) {
  await page.fill("#query", text);
  await page.click("#search-button");
  await page.waitForFunction((t) => window.clipedge.lastSearch && window.clipedge.lastSearch.text === t, text,
                             { timeout: 30000 });
  return page.evaluate(() => window.clipedge.lastSearch);
}

async function main() {
  browser = await chromium.launch({ executablePath: config.chromium, headless: true, args: FLAGS });
  const page = await browser.newPage({ viewport: { width: 1280, height: 960 } });
  page.on("console", (message) => log.console.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => log.pageErrors.push(String(error)));
  page.on("request", (request) => log.requests.push(request.url()));
  const started = Date.now();
  await page.goto(config.url);
  await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: config.timeoutMs });
  const ready = { state: await page.evaluate(() => document.body.dataset.state), ms: Date.now() - started };
  if (ready.state !== "ready") {
    const status = await page.textContent("#status");
    throw new Error(`the page did not become ready: ${status}\n${log.console.join("\n")}`);
  }
  const classifyStarted = Date.now();
  await pick(page, config.images);
  const classifyWallMs = Date.now() - classifyStarted;
  const state = await page.evaluate(() => ({
    results: window.clipedge.results, timings: window.clipedge.timings, loadMs: window.clipedge.loadMs,
    info: Object.fromEntries([...document.querySelectorAll("#model-info dd")].map((dd) => [dd.id, dd.textContent])),
    cards: document.querySelectorAll("#results .card").length,
    gallery: window.clipedge.gallery.map((g) => ({ file: g.file, embedding: Array.from(g.embedding) })),
  }));
  const textsStarted = Date.now();
  const texts = await page.evaluate((t) => window.clipedge.embedTexts(t), config.texts ?? []);
  const textsWallMs = Date.now() - textsStarted;
  const searched = await search(page, config.query);
  const freeSearch = config.freeQuery ? await search(page, config.freeQuery) : null;
  // The screenshot: a clean page with a few classified images and one search.
  await page.click("#clear");
  await pick(page, config.showcase);
  await search(page, config.freeQuery ?? config.query);
  await page.screenshot({ path: config.screenshot });
  const textTimings = await page.evaluate(() => window.clipedge.timings.text);
  const textMsShown = await page.textContent("#info-text-ms");  // the page's own figure, after the searches
  const out = { ready, classifyWallMs, ...state, texts, textsWallMs, textTimings, textMsShown, search: searched,
                freeSearch, log };
  writeFileSync(config.out, JSON.stringify(out));
  await browser.close();
  clearTimeout(deadline);
}

main().catch(async (error) => {
  process.stderr.write(`drive_page: ${error.stack || error}\n${log.console.join("\n")}\n`);
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
});
