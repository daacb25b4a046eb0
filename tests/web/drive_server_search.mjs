// Drives the `clipedge web` page in Debian's Chromium (headless) for tests/web/test_web_server_search.py: opens the
// page, then answers commands, one JSON object a line on stdin, with one JSON object a line on stdout, so that the
// test can stop the `clipedge serve` the page asks between two searches. playwright-core
// (runtime/web_page/package.json) only talks to the system browser: nothing is downloaded. Stops itself after
// config.timeoutMs, and when stdin closes.
//
//   node tests/web/drive_server_search.mjs CONFIG.json
//   CONFIG: {url, chromium, nodeModules, timeoutMs}
//   first line out: {event: "ready", gallery: [{file, embedding}], textRuns, log}
//   in {search: TEXT}: the text typed in the search box and submitted; out {event: "search", search:
//     window.clipedge.lastSearch, note: the #search-note text, textRuns: the texts the page's own text model has
//     embedded so far, log: what the page fetched and said meanwhile}
//   in {quit: true}: out {event: "bye"}, the browser closed, exit 0
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import readline from "node:readline";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const require = createRequire(path.join(config.nodeModules, "..", "package.json"));
const { chromium } = require("playwright-core");

// The flags that work as root on a closed network: no sandbox (root), no GPU, nothing phoning home.
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"];

let log = { console: [], pageErrors: [], requests: [], responses: [], failed: [] };
let browser = null;

async function quit(code, message) {
  if (message) process.stderr.write(`drive_server_search: ${message}\n${log.console.join("\n")}\n`);
  if (browser) await browser.close().catch(() => {});
  process.exit(code);
}

const deadline = setTimeout(() => quit(3, `gave up after ${config.timeoutMs} ms`), config.timeoutMs);

function say(object) {
  object.log = log;
  log = { console: [], pageErrors: [], requests: [], responses: [], failed: [] };
  process.stdout.write(`${JSON.stringify(object)}\n`);
}

// How many texts the page's own text model has embedded so far (one timing each).
const textRuns = (page) => page.evaluate(() => window.clipedge.timings.text.length);

async function search(page, text) {
  await page.evaluate(() => { window.clipedge.lastSearch = null; });  // the same text twice is two searches
  await page.fill("#query", text);
  await page.click("#search-button");
  await page.waitForFunction((t) => window.clipedge.lastSearch && window.clipedge.lastSearch.text === t, text,
                             { timeout: 30000, polling: 50 });
  return { event: "search", search: await page.evaluate(() => window.clipedge.lastSearch),
           note: await page.textContent("#search-note"), textRuns: await textRuns(page) };
}

async function main() {
  browser = await chromium.launch({ executablePath: config.chromium, headless: true, args: FLAGS });
  const page = await browser.newPage({ viewport: { width: 1280, height: 960 } });
  page.on("console", (message) => log.console.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => log.pageErrors.push(String(error)));
  page.on("request", (request) => log.requests.push({ url: request.url(), method: request.method(),
                                                      body: request.postData() }));
  page.on("response", (response) => log.responses.push({ url: response.url(), status: response.status(),
                                                         method: response.request().method(),
                                                         allowOrigin: response.headers()["access-control-allow-origin"] ?? null }));
  page.on("requestfailed", (request) => log.failed.push({ url: request.url(), method: request.method(),
                                                          error: request.failure()?.errorText ?? "" }));
  await page.goto(config.url);
  await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: config.timeoutMs });
  if ((await page.evaluate(() => document.body.dataset.state)) !== "ready") {
    throw new Error(`the page did not become ready: ${await page.textContent("#status")}`);
  }
  say({ event: "ready", textRuns: await textRuns(page), gallery: await page.evaluate(
    () => window.clipedge.gallery.map((g) => ({ file: g.file, embedding: Array.from(g.embedding) }))) });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    if (command.quit) break;
    say(await search(page, command.search));
  }
  say({ event: "bye" });
  clearTimeout(deadline);
  await quit(0);
}

main().catch((error) => quit(1, error.stack || String(error)));
