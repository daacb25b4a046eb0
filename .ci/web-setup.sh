#!/usr/bin/env bash
# What the browser test (tests/web/test_web_page.py) needs, installed by name from Debian and npm; nothing is
# downloaded at test time. Debian's chromium (the browser playwright-core drives: no `playwright install`), fonts
# for the page's text, and runtime/web_page/package-lock.json's exact @mediapipe/tasks-vision, @litertjs/core (with
# @litertjs/wasm-utils) and playwright-core in runtime/web_page/node_modules. Node.js >= 20 and npm come with the machine (playwright-core 1.65 refuses older Node).
# The tokenizer ports' test (tests/ports) also runs the Java port: a JDK (javac) from Debian when the machine lacks one.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for package in chromium fonts-dejavu-core; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
command -v javac >/dev/null || missing+=(default-jdk-headless)
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "web-setup: Node.js >= 20 is needed (found: $(node --version 2>/dev/null || echo none))" >&2
    exit 1
fi
npm ci --prefix runtime/web_page --no-audit --no-fund --loglevel=error
echo "web-setup: $(chromium --version 2>/dev/null), node $(node --version)," \
     "$(node -p 'require("./runtime/web_page/node_modules/@mediapipe/tasks-vision/package.json").version' ) tasks-vision," \
     "$(node -p 'require("./runtime/web_page/node_modules/@litertjs/core/package.json").version' ) litertjs/core," \
     "$(node -p 'require("./runtime/web_page/node_modules/playwright-core/package.json").version') playwright-core"
