"""The web runtimes `clipedge web` copies into a site from npm installs (clipedge ships neither; docs/web.md):
MediaPipe Tasks for the web (`@mediapipe/tasks-vision`, the `mobile` models) and LiteRT.js (`@litertjs/core`, the
bundle's plain text and image .tflite models). Both are found in the same places: `--mediapipe DIR` (the
tasks-vision package directory, a node_modules directory, or a folder with node_modules/), else ./node_modules,
else the clone's runtime/web_page/node_modules (`npm ci --prefix runtime/web_page --omit=dev`).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from clipedge.runtime.errors import InputError

__all__ = ["LITERT_FILES", "LITERT_PACKAGE", "LITERT_TESTED", "MEDIAPIPE_FILES", "MEDIAPIPE_PACKAGE",
           "MEDIAPIPE_TESTED", "NpmPackage", "copy_package", "find_litert", "find_mediapipe"]

log = logging.getLogger("clipedge.runtime.web")

MEDIAPIPE_PACKAGE = "@mediapipe/tasks-vision"
MEDIAPIPE_TESTED = "1.1.0"  # runtime/web_page/package.json pins it; the browser test measured the page with it
# package file -> site file. Only the SIMD WASM: every current browser has WebAssembly SIMD, and the non-SIMD
# build would add 12 MB; the page says so when a browser lacks it. The ES module is renamed .js so that any static
# server sends it with a JavaScript MIME type (some map .mjs to nothing, and browsers refuse such a module).
MEDIAPIPE_FILES = {
    "vision_bundle.mjs": "mediapipe/vision_bundle.js",
    "wasm/vision_wasm_internal.js": "mediapipe/wasm/vision_wasm_internal.js",
    "wasm/vision_wasm_internal.wasm": "mediapipe/wasm/vision_wasm_internal.wasm",
}
LITERT_PACKAGE = "@litertjs/core"
LITERT_TESTED = "2.5.3"
LITERT_UTILS = "@litertjs/wasm-utils"  # the one module @litertjs/core imports (index.html's import map names it)
# Only the "compat" WASM (plain WebAssembly SIMD, one thread), loaded by its full path: the relaxed-SIMD, threaded
# and JSPI builds would add 9.4 MB each, and relaxed SIMD's fused multiply-adds would move the numbers off the
# Python runtime's.
LITERT_FILES = {
    "dist/index.js": "litert/litert_core.js",
    "wasm/litert_wasm_compat_internal.js": "litert/wasm/litert_wasm_compat_internal.js",
    "wasm/litert_wasm_compat_internal.wasm": "litert/wasm/litert_wasm_compat_internal.wasm",
}
LITERT_UTILS_FILES = {"dist/index.js": "litert/wasm_utils.js"}
INSTALL = "in a clone of clipedge run `npm ci --prefix runtime/web_page --omit=dev`"


@dataclass(frozen=True)
class NpmPackage:
    name: str
    directory: Path
    version: str
    files: dict[str, str]  # package file -> site file


def _roots(given: str | Path | None) -> list[Path]:
    """node_modules directories to look in, in order."""
    if given is None:
        clone_web = Path(__file__).resolve().parent / "web_page"  # node_modules only exists after npm ci there
        return [Path.cwd() / "node_modules", clone_web / "node_modules"]
    root = Path(given)
    # the tasks-vision package directory itself: its node_modules is two levels up (@mediapipe/tasks-vision)
    return [root, root / "node_modules", root.parent.parent]


def _read_package(directory: Path, name: str) -> str | None:
    try:
        package = json.loads((directory / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(package.get("version", "?")) if package.get("name") == name else None


def _checked(directory: Path, name: str, version: str, files: dict[str, str], tested: str) -> NpmPackage:
    missing = [file for file in files if not (directory / file).is_file()]
    if missing:
        raise InputError(f"{directory} is {name} {version} but lacks {', '.join(missing)}: reinstall it "
                         f"(npm install {name}@{tested})")
    if version != tested:
        log.warning("%s is %s %s; the page was tested with %s", directory, name, version, tested)
    return NpmPackage(name, directory, version, files)


def find_mediapipe(given: str | Path | None = None) -> tuple[Path, str]:
    """(the @mediapipe/tasks-vision package directory, its version). `given` may be that directory, a node_modules
    directory, or a folder with node_modules/ (where `npm install` was run); without it, ./node_modules and the
    clone's runtime/web_page/node_modules (`npm ci --prefix runtime/web_page`) are tried."""
    if given is not None:
        root = Path(given)
        candidates = [root, root / MEDIAPIPE_PACKAGE, root / "node_modules" / MEDIAPIPE_PACKAGE]
    else:
        candidates = [root / MEDIAPIPE_PACKAGE for root in _roots(None)]
    for directory in candidates:
        version = _read_package(directory, MEDIAPIPE_PACKAGE)
        if version is not None:
            _checked(directory, MEDIAPIPE_PACKAGE, version, MEDIAPIPE_FILES, MEDIAPIPE_TESTED)
            return directory, version
    install = (f"{INSTALL}; elsewhere `npm install {MEDIAPIPE_PACKAGE}@{MEDIAPIPE_TESTED}` and pass --mediapipe "
               f"node_modules/{MEDIAPIPE_PACKAGE}")
    if given is not None:
        raise InputError(f"--mediapipe {given}: no {MEDIAPIPE_PACKAGE} package there (looked for its package.json "
                         f"in {', '.join(str(c) for c in candidates)}); {install}")
    raise InputError(f"clipedge web needs MediaPipe's web runtime, the npm package {MEDIAPIPE_PACKAGE} "
                     f"(Apache-2.0), which clipedge does not ship: {install}")


def find_litert(given: str | Path | None = None) -> list[NpmPackage]:
    """@litertjs/core and the @litertjs/wasm-utils it imports, from the first node_modules that has the core
    package (`given` as for find_mediapipe: LiteRT.js is installed beside MediaPipe by the same `npm ci`)."""
    roots = _roots(given)
    for root in roots:
        core = root / LITERT_PACKAGE
        version = _read_package(core, LITERT_PACKAGE)
        if version is None:
            continue
        found = _checked(core, LITERT_PACKAGE, version, LITERT_FILES, LITERT_TESTED)
        for utils in (root / LITERT_UTILS, core / "node_modules" / LITERT_UTILS):  # hoisted, or nested
            utils_version = _read_package(utils, LITERT_UTILS)
            if utils_version is not None:
                return [found, _checked(utils, LITERT_UTILS, utils_version, LITERT_UTILS_FILES, LITERT_TESTED)]
        raise InputError(f"{core} is {LITERT_PACKAGE} {version} but {LITERT_UTILS}, which it imports, is not "
                         f"installed beside it: reinstall it (npm install {LITERT_PACKAGE}@{LITERT_TESTED})")
    where = f"--mediapipe {given}" if given is not None else "./node_modules or runtime/web_page/node_modules"
    raise InputError(f"clipedge web needs LiteRT.js, the npm package {LITERT_PACKAGE} (Apache-2.0), for the page's "
                     f"text model, and found none in {where}: {INSTALL}; elsewhere `npm install "
                     f"{LITERT_PACKAGE}@{LITERT_TESTED}` beside {MEDIAPIPE_PACKAGE}")


def copy_package(package: NpmPackage, site: Path) -> int:
    """The package's files into `site`; bytes written."""
    written = 0
    for name, target in package.files.items():
        (site / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package.directory / name, site / target)
        written += (site / target).stat().st_size
    return written


def notice(packages: list[NpmPackage]) -> str:
    """NOTICE.txt of a runtime's folder in the site."""
    return "".join(f"{', '.join(sorted(p.files.values()))}: from the npm package {p.name} {p.version}, Copyright "
                   "Google LLC, Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0).\n"
                   for p in packages)
