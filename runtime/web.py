"""`clipedge web BUNDLE --out SITE`: a static zero-shot demo site that runs a bundle's `mobile` models in the browser
on MediaPipe Tasks for the web (`@mediapipe/tasks-vision`, WebAssembly: the same C++ task code as Android and iOS).

The site is plain files, served by any static server: the page (`web_page/`, shipped in this package), the two
MediaPipe models (`classifier_mobile_<p>.tflite`, `image_mobile_<p>.tflite`), MediaPipe's JS and SIMD WASM, a
small image gallery (thumbnails: a phone photo of megabytes becomes a JPEG of tens of kB), and text embeddings
computed here with the bundle's own text model at the same precision (the page has no tokenizer or text model: it
searches with these rows, as docs/mobile.md's app does).

MediaPipe's web runtime is not shipped with clipedge (13 MB of WASM per version, Apache-2.0; see docs/web.md):
it is copied from an npm install of the package, found with `--mediapipe` or in the usual places.
Everything is written into a temporary directory beside SITE and renamed into place at the end, so a failure
leaves nothing half-written; the site then has the modes a plain write gives under the user's umask.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipedge.runtime.atomic import publish
from clipedge.runtime.errors import BundleError, InputError
from clipedge.runtime.manifest import Artifact, Manifest
from clipedge.runtime.precisions import PRECISION_NAMES

__all__ = ["MEDIAPIPE_PACKAGE", "MEDIAPIPE_TESTED", "Site", "SiteModels", "GalleryItem", "build_site",
           "find_mediapipe", "pick_models", "read_gallery", "thumbnail_size", "write_gallery"]

log = logging.getLogger(__name__)

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
PAGE_DIR = Path(__file__).resolve().with_name("web_page")
PAGE_FILES = ("index.html", "app.js", "style.css")
SITE_JSON = "site.json"
TEXT_EMBEDS = "text_embeds.f32"
# The page embeds every gallery image when it opens: a few hundred milliseconds for the demo's 40, seconds for 200.
MAX_GALLERY = 200
# What every current browser decodes (Pillow reads TIFF too, browsers do not).
BROWSER_IMAGES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})
# The resize modes app.js turns into MediaPipe's region of interest (the crop window, or the whole image).
WEB_RESIZE_MODES = ("shortest", "squash")
PREFERRED_PRECISION = "dynamic-int8"  # docs/mobile.md: a quarter of fp32's size, the fastest on CPUs measured
# Gallery images go into the site as thumbnails: the page shows tiles, and a phone photo is megabytes. The longest
# side is THUMBNAIL_SIDE or twice the model's input, whichever is larger, and the shortest never goes below the
# model's input (a panorama), so the crop the page embeds is never upsampled.
THUMBNAIL_SIDE = 512
THUMBNAIL_QUALITY = 85
AS_IS_BYTES = 200_000  # an image this small in bytes, and no larger than its thumbnail, goes in unchanged


@dataclass(frozen=True)
class SiteModels:
    """The three models one site is made from, all at one precision."""

    precision: str
    classifier: Artifact  # classifier_mobile_<p>.tflite: MediaPipe's ImageClassifier, labels inside
    embedder: Artifact  # image_mobile_<p>.tflite: MediaPipe's ImageEmbedder
    text: Artifact  # the bundle's text model at <p>: the search texts' embeddings, computed here

    @property
    def image_size(self) -> int:
        return int(self.embedder.inputs[0]["shape"][1])


@dataclass(frozen=True)
class GalleryItem:
    source: Path
    caption: str = ""


@dataclass(frozen=True)
class Site:
    """What `build_site` wrote, for the CLI's summary."""

    path: Path
    precision: str
    bytes: int
    files: int
    texts: int
    gallery: int
    mediapipe_version: str
    sizes: dict[str, int] = field(default_factory=dict)  # by part: models, mediapipe, gallery, page


def pick_models(manifest: Manifest, precision: str | None = None) -> SiteModels:
    """The mobile classifier and embedder (and the text model) at `precision`; None prefers dynamic-int8."""
    if precision is not None and precision not in PRECISION_NAMES:
        raise InputError(f"unknown precision {precision!r}; choose from {', '.join(PRECISION_NAMES)}")
    mobile = [a for a in manifest.artifacts if a.variant == "mobile" and a.format == "tflite"]
    if not mobile:
        raise BundleError(f"{manifest.directory} has no MediaPipe (mobile) models: re-export it with "
                          "`clipedge export --formats tflite --labels FILE --mobile` (see docs/mobile.md)")
    classifiers = {a.precision: a for a in mobile if a.tower == "classifier"}
    embedders = {a.precision: a for a in mobile if a.tower == "image"}
    both = [p for p in dict.fromkeys(a.precision for a in mobile) if p in classifiers and p in embedders]
    if not classifiers:
        raise BundleError(f"{manifest.directory} has mobile image models but no mobile classifier: re-export it "
                          "with --labels FILE (the page's classification needs the labels baked in)")
    if precision is None:
        if not both:
            raise BundleError(f"{manifest.directory} has no precision with both a mobile classifier and a mobile "
                              f"image model (classifiers: {', '.join(classifiers)}; image: {', '.join(embedders)})")
        precision = PREFERRED_PRECISION if PREFERRED_PRECISION in both else both[0]
    elif precision not in both:
        raise BundleError(f"{manifest.directory} has no mobile classifier and image model at precision "
                          f"{precision!r}; it has them at: {', '.join(both) or 'none'}")
    texts = [a for a in manifest.artifacts if a.tower == "text" and a.variant == "default"
             and a.precision == precision]
    if not texts:
        raise BundleError(f"{manifest.directory} has no text model at precision {precision!r}: the page's search "
                          "texts are embedded with it; re-export with the text tower (--towers image,text)")
    return SiteModels(precision, classifiers[precision], embedders[precision], texts[0])


def find_mediapipe(given: str | Path | None = None) -> tuple[Path, str]:
    """(the @mediapipe/tasks-vision package directory, its version). `given` may be that directory, a node_modules
    directory, or a folder with node_modules/ (where `npm install` was run); without it, ./node_modules and the
    clone's runtime/web_page/node_modules (`npm ci --prefix runtime/web_page`) are tried."""
    if given is not None:
        root = Path(given)
        candidates = [root, root / MEDIAPIPE_PACKAGE, root / "node_modules" / MEDIAPIPE_PACKAGE]
    else:
        clone_web = Path(__file__).resolve().parent / "web_page"  # node_modules only exists after npm ci there
        candidates = [Path.cwd() / "node_modules" / MEDIAPIPE_PACKAGE, clone_web / "node_modules" / MEDIAPIPE_PACKAGE]
    for directory in candidates:
        try:
            package = json.loads((directory / "package.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if package.get("name") != MEDIAPIPE_PACKAGE:
            continue
        version = str(package.get("version", "?"))
        missing = [name for name in MEDIAPIPE_FILES if not (directory / name).is_file()]
        if missing:
            raise InputError(f"{directory} is {MEDIAPIPE_PACKAGE} {version} but lacks {', '.join(missing)}: "
                             f"reinstall it (npm install {MEDIAPIPE_PACKAGE}@{MEDIAPIPE_TESTED})")
        if version != MEDIAPIPE_TESTED:
            log.warning("%s is %s %s; the page was tested with %s", directory, MEDIAPIPE_PACKAGE, version,
                        MEDIAPIPE_TESTED)
        return directory, version
    install = (f"in a clone of clipedge run `npm ci --prefix runtime/web_page --omit=dev`; elsewhere `npm install "
               f"{MEDIAPIPE_PACKAGE}@{MEDIAPIPE_TESTED}` and pass --mediapipe node_modules/{MEDIAPIPE_PACKAGE}")
    if given is not None:
        raise InputError(f"--mediapipe {given}: no {MEDIAPIPE_PACKAGE} package there (looked for its package.json "
                         f"in {', '.join(str(c) for c in candidates)}); {install}")
    raise InputError(f"clipedge web needs MediaPipe's web runtime, the npm package {MEDIAPIPE_PACKAGE} "
                     f"(Apache-2.0), which clipedge does not ship: {install}")


def default_gallery() -> list[GalleryItem]:
    """The first shipped eval image of each class, captioned with its class: the demo CLIP's own domain."""
    from clipedge.runtime.datasets import read_eval_folder, shipped_data_dir

    data = shipped_data_dir()
    if data is None or not (data / "eval").is_dir():
        raise InputError("this install has no shipped calibration_data/eval for the default gallery: pass "
                         "--gallery DIR (images) or --gallery FILE.tsv (image path<TAB>caption per line)")
    labelled = read_eval_folder(data / "eval")
    first: dict[int, Path] = {}
    for file, truth in zip(labelled.files, labelled.truth, strict=True):
        first.setdefault(int(truth), file)
    return [GalleryItem(file, labelled.classes[k]) for k, file in sorted(first.items())]


def read_gallery(source: str | Path | None) -> list[GalleryItem]:
    """None: the default gallery; a directory: its images, uncaptioned; a .tsv: image path<TAB>caption lines."""
    from clipedge.runtime.datasets import list_images, read_pairs

    if source is None:
        items = default_gallery()
    elif Path(source).is_dir():
        items = [GalleryItem(path) for path in list_images(source)]
    elif Path(source).is_file():
        pairs = read_pairs(source)
        captions: dict[int, str] = {}
        for caption, image in zip(pairs.captions, pairs.truth, strict=True):
            captions.setdefault(int(image), caption)  # an image listed twice shows its first caption
        items = [GalleryItem(path, captions[i]) for i, path in enumerate(pairs.images)]
    else:
        raise InputError(f"gallery {source} does not exist: pass a directory of images or a TSV of "
                         "image path<TAB>caption lines")
    if not items:
        raise InputError(f"gallery {source} has no images")
    if len(items) > MAX_GALLERY:
        raise InputError(f"gallery {source} has {len(items)} images; the page embeds each one when it opens, so "
                         f"at most {MAX_GALLERY}")
    odd = [str(item.source) for item in items if item.source.suffix.lower() not in BROWSER_IMAGES]
    if odd:
        raise InputError(f"gallery images browsers cannot show ({', '.join(sorted(BROWSER_IMAGES))} only): "
                         f"{', '.join(odd[:3])}{' ...' if len(odd) > 3 else ''}")
    return items


def read_queries(path: str | Path | None) -> list[str]:
    if path is None:
        return []
    from clipedge.runtime.datasets import read_captions

    return read_captions(path)


def search_texts(labels: Sequence[str], template: str, gallery: Sequence[GalleryItem],
                 queries: Sequence[str]) -> list[dict[str, str]]:
    """Every text the page can search with, once each, in order: the labels' prompts, the gallery's captions,
    the extra queries."""
    from clipedge.runtime.prompts import fill_template

    texts: dict[str, dict[str, str]] = {}
    for label in labels:
        prompt = fill_template(template, label)
        texts.setdefault(prompt, {"text": prompt, "kind": "label", "label": label})
    for kind, items in (("caption", [item.caption for item in gallery]), ("query", list(queries))):
        for text in items:
            if text.strip():
                texts.setdefault(text.strip(), {"text": text.strip(), "kind": kind})
    return list(texts.values())


def _copy(source: Path, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target.stat().st_size


def thumbnail_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """The size of a `width` x `height` image in the site's gallery (itself when small enough; see THUMBNAIL_SIDE)."""
    longest = max(THUMBNAIL_SIDE, 2 * image_size)
    scale = min(1.0, max(longest / max(width, height), image_size / min(width, height)))
    return (max(1, round(width * scale)), max(1, round(height * scale))) if scale < 1 else (width, height)


def write_gallery(site: Path, gallery: Sequence[GalleryItem], image_size: int) -> tuple[list[dict[str, str]], int]:
    """Each gallery image into `site`/gallery/: a small file unchanged, else a JPEG thumbnail of the image as the
    runtime reads it (EXIF orientation applied, RGB; clipedge.runtime.preprocess.load_image). The page and the
    browser test embed the site's file, so what is ranked is what is shown. (site.json's rows, bytes written)."""
    from PIL import Image

    from clipedge.runtime.preprocess import load_image

    rows, written = [], 0
    for i, item in enumerate(gallery):
        image = load_image(item.source)  # a file that does not decode is named now, not as a broken tile in the page
        size = thumbnail_size(image.width, image.height, image_size)
        if size == image.size and item.source.stat().st_size <= AS_IS_BYTES:
            name = f"gallery/{i:03d}{item.source.suffix.lower()}"
            written += _copy(item.source, site / name)
        else:
            name = f"gallery/{i:03d}.jpg"
            (site / "gallery").mkdir(parents=True, exist_ok=True)
            if size != image.size:
                image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
            image.save(site / name, "JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
            written += (site / name).stat().st_size
        rows.append({"file": name, "caption": item.caption, "source": f"{item.source.parent.name}/{item.source.name}"})
    return rows, written


def _site_json(manifest: Manifest, models: SiteModels, texts: list[dict[str, str]], gallery: list[dict[str, str]],
               mediapipe_version: str) -> dict[str, Any]:
    def model(artifact: Artifact) -> dict[str, Any]:
        return {"file": f"models/{artifact.file}", "bytes": artifact.bytes, "sha256": artifact.sha256,
                "task": artifact.extra.get("mediapipe", {}).get("task"), "fidelity": artifact.fidelity}

    return {
        "site_format": 1,
        "model": {"name": manifest.data.get("model", {}).get("name", "?"),
                  "sha256": manifest.data.get("model", {}).get("sha256", "")},
        "precision": models.precision,
        "image_size": models.image_size,
        "preprocess": manifest.data["preprocess"],  # the page's region of interest follows its resize and crop
        "embed_dim": manifest.embed_dim,
        "logit_scale": manifest.logit_scale,
        "classifier": {**model(models.classifier), "labels": list(models.classifier.extra.get("labels", [])),
                       "template": models.classifier.extra.get("template")},
        "embedder": model(models.embedder),
        "texts": {"file": TEXT_EMBEDS, "dtype": "float32-le", "text_model": models.text.file, "items": texts},
        "gallery": gallery,
        "mediapipe": {"package": MEDIAPIPE_PACKAGE, "version": mediapipe_version,
                      "files": sorted(MEDIAPIPE_FILES.values())},
    }


def _write(tmp: Path, manifest: Manifest, models: SiteModels, gallery: list[GalleryItem], queries: list[str],
           mediapipe_dir: Path, mediapipe_version: str) -> dict[str, int]:
    """Every file of the site into `tmp`; bytes per part."""
    from clipedge.runtime.clip_runtime import load

    sizes = {"models": 0, "mediapipe": 0, "gallery": 0, "page": 0}
    for artifact in (models.classifier, models.embedder):
        sizes["models"] += _copy(manifest.verified_path(artifact), tmp / "models" / artifact.file)
    for name, target in MEDIAPIPE_FILES.items():
        sizes["mediapipe"] += _copy(mediapipe_dir / name, tmp / target)
    notice = (f"{', '.join(sorted(MEDIAPIPE_FILES.values()))}: from the npm package {MEDIAPIPE_PACKAGE} "
              f"{mediapipe_version} (vision_bundle.mjs renamed .js), Copyright Google LLC, Apache License 2.0 "
              "(https://www.apache.org/licenses/LICENSE-2.0).\n")
    (tmp / "mediapipe" / "NOTICE.txt").write_text(notice, encoding="utf-8")
    gallery_rows, sizes["gallery"] = write_gallery(tmp, gallery, models.image_size)
    labels = list(models.classifier.extra.get("labels", []))
    template = models.classifier.extra.get("template") or "{}"
    texts = search_texts(labels, template, gallery, queries)
    runtime = load(manifest.directory, precision=models.precision, format=models.text.format)
    embeds = runtime.encode_texts([t["text"] for t in texts])
    embeds.astype("<f4").tofile(tmp / TEXT_EMBEDS)
    site = _site_json(manifest, models, texts, gallery_rows, mediapipe_version)
    (tmp / SITE_JSON).write_text(json.dumps(site, indent=1), encoding="utf-8")
    for name in PAGE_FILES:
        sizes["page"] += _copy(PAGE_DIR / name, tmp / name)
    return sizes


def build_site(bundle: str | Path, out: str | Path, precision: str | None = None,
               mediapipe: str | Path | None = None, gallery: str | Path | None = None,
               queries: str | Path | None = None) -> Site:
    """Write the site for `bundle` into the new directory `out` (never over an existing one)."""
    manifest = Manifest.read(bundle)
    mode = manifest.data["preprocess"].get("resize_mode", "shortest")
    if mode not in WEB_RESIZE_MODES:  # MediaPipe crops and resizes; it cannot pad a letterbox or skip the resize
        raise BundleError(f"{manifest.directory}: preprocess resize_mode {mode!r} cannot be done by MediaPipe's "
                          f"region of interest; the page supports {', '.join(WEB_RESIZE_MODES)} "
                          "(docs/preprocessing.md)")
    models = pick_models(manifest, precision)
    out = Path(out).resolve()
    if out.exists() or out.is_symlink():
        raise InputError(f"--out {out} already exists: give a new directory (clipedge web never overwrites)")
    mediapipe_dir, mediapipe_version = find_mediapipe(mediapipe)
    items = read_gallery(gallery)
    extra = read_queries(queries)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        sizes = _write(tmp, manifest, models, items, extra, mediapipe_dir, mediapipe_version)
        files = [p for p in tmp.rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        texts = len(json.loads((tmp / SITE_JSON).read_text(encoding="utf-8"))["texts"]["items"])
        publish(tmp)  # mkdtemp makes it 0700: a web server running as another user must read it, as the umask says
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Site(out, models.precision, total, len(files), texts, len(items), mediapipe_version, sizes)
