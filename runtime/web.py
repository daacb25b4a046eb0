"""`clipedge web BUNDLE --out SITE`: a static zero-shot demo site that runs a bundle's models in the browser.

The page embeds any typed text with the bundle's own text model (`text_<p>.tflite`) on LiteRT.js (`@litertjs/core`,
WebAssembly), with the JavaScript port of the tokenizer reading the bundle's own `tokenizer/` files, which the site
copies. Images go through MediaPipe Tasks for the web (`@mediapipe/tasks-vision`) when the bundle was exported with
`--mobile` (`classifier_mobile_<p>.tflite`, `image_mobile_<p>.tflite`: the same C++ task code as Android and iOS);
otherwise through the plain `image_<p>.tflite` on LiteRT.js, with CLIP's resize, crop and normalization done in the
page, and zero-shot classification against the label prompts' embeddings.

The site is plain files, served by any static server: the page (`web_page/`, shipped in this package), the models,
the web runtimes' JS and WASM (copied from npm installs, not shipped with clipedge: runtime/web_npm.py), a small
image gallery (thumbnails: a phone photo of megabytes becomes a JPEG of tens of kB), and the embeddings of the
labels' prompts, the gallery's captions and `--queries`, computed here with the bundle's text model at the same
precision (the search box's suggestions; the page embeds what is typed itself). Everything is written into a
temporary directory beside SITE and renamed into place at the end, so a failure leaves nothing half-written; the
site then has the modes a plain write gives under the user's umask. With `server` (`--server URL`), the page's
search embeds the text on that `clipedge serve` first, in the page when it cannot (docs/serve.md).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipedge.runtime.atomic import publish
from clipedge.runtime.errors import BundleError, InputError
from clipedge.runtime.manifest import Artifact, Manifest
from clipedge.runtime.precisions import PRECISION_NAMES
from clipedge.runtime.web_npm import (
    LITERT_PACKAGE,
    MEDIAPIPE_FILES,
    MEDIAPIPE_PACKAGE,
    MEDIAPIPE_TESTED,
    NpmPackage,
    copy_package,
    find_litert,
    find_mediapipe,
    notice,
)

__all__ = ["MEDIAPIPE_FILES", "MEDIAPIPE_PACKAGE", "MEDIAPIPE_TESTED", "Site", "SiteModels", "GalleryItem",
           "build_site", "server_url", "find_litert", "find_mediapipe", "pick_models", "read_gallery", "thumbnail_size",
           "write_gallery"]

log = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).resolve().with_name("web_page")
PAGE_FILES = ("index.html", "app.js", "style.css")
# The tokenizer port the page imports, renamed .js (and its import of the tables with it) so that any static server
# sends it with a JavaScript MIME type, as MediaPipe's module (web_npm.MEDIAPIPE_FILES).
TOKENIZER_JS = {"clip_tokenizer.mjs": "clip_tokenizer.js", "clip_tokenizer_tables.mjs": "clip_tokenizer_tables.js"}
SITE_JSON = "site.json"
TEXT_EMBEDS = "text_embeds.f32"
TOKENIZER_DIR = "tokenizer"
# What a bundle without tokenizer files is tokenized with (clipedge.runtime.tokenizer's built-in OpenAI vocabulary).
BUILTIN_TOKENIZER = (Path(__file__).resolve().with_name("bpe_simple_vocab_16e6.txt.gz"),
                     Path(__file__).resolve().with_name("LICENSE-openai-clip.txt"))
# The page embeds every gallery image when it opens: a few hundred milliseconds for the demo's 40, seconds for 200.
MAX_GALLERY = 200
# What every current browser decodes (Pillow reads TIFF too, browsers do not).
BROWSER_IMAGES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})
# The resize modes app.js turns into a crop window (MediaPipe's region of interest, or the canvas's source rectangle).
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
    """The models one site is made from, all at one precision."""

    precision: str
    classifier: Artifact | None  # classifier_mobile_<p>.tflite (MediaPipe, labels inside); None: zero-shot in the page
    embedder: Artifact  # image_mobile_<p>.tflite (MediaPipe's ImageEmbedder), or the plain image_<p>.tflite (LiteRT.js)
    text: Artifact  # text_<p>.tflite: in the page on LiteRT.js, and here for the suggestions' embeddings
    labels: tuple[str, ...] = ()
    template: str = "{}"

    @property
    def mediapipe(self) -> bool:
        return self.embedder.variant == "mobile"

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
    mediapipe_version: str  # "" when the bundle has no mobile models (the page runs its image model on LiteRT.js)
    sizes: dict[str, int] = field(default_factory=dict)  # by part: models, mediapipe, litert, tokenizer, gallery, page
    litert_version: str = ""


def _check_precision(precision: str | None) -> None:
    if precision is not None and precision not in PRECISION_NAMES:
        raise InputError(f"unknown precision {precision!r}; choose from {', '.join(PRECISION_NAMES)}")


def _text_model(manifest: Manifest, precision: str) -> Artifact:
    texts = [a for a in manifest.artifacts if a.tower == "text" and a.variant == "default" and a.format == "tflite"
             and a.precision == precision]
    if not texts:
        raise BundleError(f"{manifest.directory} has no TFLite text model at precision {precision!r}: the page "
                          "embeds texts with it; re-export with the text tower (--towers image,text)")
    return texts[0]


def _pick_mobile(manifest: Manifest, mobile: list[Artifact], precision: str | None) -> SiteModels:
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
    classifier = classifiers[precision]
    return SiteModels(precision, classifier, embedders[precision], _text_model(manifest, precision),
                      tuple(classifier.extra.get("labels", [])), classifier.extra.get("template") or "{}")


def _pick_plain(manifest: Manifest, precision: str | None) -> SiteModels:
    """The plain image_<p>.tflite and text_<p>.tflite; labels from a classifier the bundle has, if any (else the
    page classifies among the gallery's captions: build_site)."""
    images = {a.precision: a for a in manifest.artifacts
              if a.tower == "image" and a.variant == "default" and a.format == "tflite"}
    texts = {a.precision for a in manifest.artifacts
             if a.tower == "text" and a.variant == "default" and a.format == "tflite"}
    both = [p for p in images if p in texts]
    if not both:
        raise BundleError(f"{manifest.directory} has no precision with both a TFLite image and a TFLite text model "
                          f"(image: {', '.join(images) or 'none'}; text: {', '.join(sorted(texts)) or 'none'}): "
                          "export it with `clipedge export --formats tflite` (both towers)")
    if precision is None:
        precision = PREFERRED_PRECISION if PREFERRED_PRECISION in both else both[0]
    elif precision not in both:
        raise BundleError(f"{manifest.directory} has no TFLite image and text model at precision {precision!r}; "
                          f"it has them at: {', '.join(both)}")
    dtypes = (images[precision].inputs[0].get("dtype"), _text_model(manifest, precision).inputs[0].get("dtype"))
    if dtypes != ("float32", "int32"):  # the page feeds float pixels and int32 ids (no quantized input/output)
        raise BundleError(f"{manifest.directory}: the page feeds float32 pixels and int32 ids, and the {precision} "
                          f"models take {dtypes[0]} and {dtypes[1]} (--int8-io): pick another --precision")
    classifier = next((a for a in manifest.artifacts if a.tower == "classifier" and a.extra.get("labels")), None)
    labels = tuple(classifier.extra["labels"]) if classifier is not None else ()
    template = (classifier.extra.get("template") if classifier is not None else None) or "{}"
    return SiteModels(precision, None, images[precision], _text_model(manifest, precision), labels, template)


def pick_models(manifest: Manifest, precision: str | None = None) -> SiteModels:
    """The models at `precision` (None prefers dynamic-int8): the MediaPipe classifier and embedder when the bundle
    has mobile models, else the plain TFLite image model; the TFLite text model either way."""
    _check_precision(precision)
    mobile = [a for a in manifest.artifacts if a.variant == "mobile" and a.format == "tflite"]
    return _pick_mobile(manifest, mobile, precision) if mobile else _pick_plain(manifest, precision)


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


def _gallery_labels(models: SiteModels, gallery: Sequence[GalleryItem]) -> SiteModels:
    """A plain bundle without labels classifies among the gallery's distinct captions, with the runtime's default
    prompt template (the default gallery: the demo's 40 classes, as `--labels calibration_data/demo_labels.txt`)."""
    if models.mediapipe or models.labels:
        return models
    from dataclasses import replace

    from clipedge.runtime.prompts import DEFAULT_TEMPLATE

    captions = tuple(dict.fromkeys(item.caption.strip() for item in gallery if item.caption.strip()))
    return replace(models, labels=captions, template=DEFAULT_TEMPLATE)


def _model_json(artifact: Artifact | None) -> dict[str, Any] | None:
    if artifact is None:
        return None
    return {"file": f"models/{artifact.file}", "bytes": artifact.bytes, "sha256": artifact.sha256,
            "task": artifact.extra.get("mediapipe", {}).get("task"), "fidelity": artifact.fidelity,
            "inputs": artifact.inputs}


def _site_json(manifest: Manifest, models: SiteModels, texts: list[dict[str, str]], gallery: list[dict[str, str]],
               runtimes: dict[str, Any], tokenizer: list[str]) -> dict[str, Any]:
    return {
        "site_format": 2,
        "model": {"name": manifest.data.get("model", {}).get("name", "?"),
                  "sha256": manifest.data.get("model", {}).get("sha256", "")},
        "precision": models.precision,
        "image_runtime": "mediapipe" if models.mediapipe else "litert",
        "image_size": models.image_size,
        "preprocess": manifest.data["preprocess"],  # the page's crop window follows its resize and crop
        "embed_dim": manifest.embed_dim,
        "logit_scale": manifest.logit_scale,
        "classifier": {**(_model_json(models.classifier) or {"file": None, "task": "zero-shot"}),
                       "labels": list(models.labels), "template": models.template},
        "embedder": _model_json(models.embedder),
        "text_model": _model_json(models.text),
        "tokenizer": {"dir": f"{TOKENIZER_DIR}/", "files": tokenizer,
                      "context_length": int(manifest.data["tokenizer"].get("context_length", 77))},
        "texts": {"file": TEXT_EMBEDS, "dtype": "float32-le", "text_model": models.text.file, "items": texts},
        "gallery": gallery,
        **runtimes,
    }


def _write_tokenizer(tmp: Path, manifest: Manifest) -> tuple[list[str], int]:
    """The bundle's tokenizer files (sha256 checked), the ones the Python runtime reads, into the site's tokenizer/;
    clipedge's built-in OpenAI vocabulary when the bundle has none. (file names, bytes)."""
    names = manifest.data["tokenizer"].get("files") or []
    sources = [manifest.verified_extra_file(name) for name in names] if names else list(BUILTIN_TOKENIZER)
    written = sum(_copy(source, tmp / TOKENIZER_DIR / source.name) for source in sources)
    return [source.name for source in sources], written


def _write_runtimes(tmp: Path, mediapipe: NpmPackage | None, litert: list[NpmPackage],
                    sizes: dict[str, int]) -> dict[str, Any]:
    """The web runtimes' files and NOTICE.txt into `tmp`; site.json's entries for them."""
    out: dict[str, Any] = {"mediapipe": None}
    if mediapipe is not None:
        sizes["mediapipe"] = copy_package(mediapipe, tmp)
        (tmp / "mediapipe" / "NOTICE.txt").write_text(notice([mediapipe]).replace(
            ": from the npm", " (vision_bundle.mjs renamed .js): from the npm"), encoding="utf-8")
        out["mediapipe"] = {"package": MEDIAPIPE_PACKAGE, "version": mediapipe.version,
                            "files": sorted(MEDIAPIPE_FILES.values())}
    sizes["litert"] = sum(copy_package(package, tmp) for package in litert)
    (tmp / "litert" / "NOTICE.txt").write_text(notice(litert), encoding="utf-8")
    out["litert"] = {"package": LITERT_PACKAGE, "version": litert[0].version,
                     "files": sorted(target for package in litert for target in package.files.values())}
    return out


def _write(tmp: Path, manifest: Manifest, models: SiteModels, gallery: list[GalleryItem], queries: list[str],
           mediapipe: NpmPackage | None, litert: list[NpmPackage], server: str | None = None) -> dict[str, int]:
    """Every file of the site into `tmp`; bytes per part."""
    from clipedge.runtime.clip_runtime import load

    sizes = {"models": 0, "mediapipe": 0, "litert": 0, "tokenizer": 0, "gallery": 0, "page": 0}
    for artifact in (models.classifier, models.embedder, models.text):
        if artifact is not None:
            sizes["models"] += _copy(manifest.verified_path(artifact), tmp / "models" / artifact.file)
    runtimes = _write_runtimes(tmp, mediapipe, litert, sizes)
    tokenizer, sizes["tokenizer"] = _write_tokenizer(tmp, manifest)
    gallery_rows, sizes["gallery"] = write_gallery(tmp, gallery, models.image_size)
    texts = search_texts(models.labels, models.template, gallery, queries)
    runtime = load(manifest.directory, precision=models.precision, format=models.text.format)
    embeds = runtime.encode_texts([t["text"] for t in texts])
    embeds.astype("<f4").tofile(tmp / TEXT_EMBEDS)
    site = {**_site_json(manifest, models, texts, gallery_rows, runtimes, tokenizer), "server": server}
    (tmp / SITE_JSON).write_text(json.dumps(site, indent=1), encoding="utf-8")
    for name in PAGE_FILES:
        sizes["page"] += _copy(PAGE_DIR / name, tmp / name)
    for name, target in TOKENIZER_JS.items():
        code = (PAGE_DIR / name).read_text(encoding="utf-8")
        for old, new in TOKENIZER_JS.items():
            code = code.replace(f"'./{old}'", f"'./{new}'")
        (tmp / target).write_text(code, encoding="utf-8")
        sizes["page"] += (tmp / target).stat().st_size
    return sizes


def server_url(url: str | None) -> str | None:
    """`--server`: an http(s) base URL without query or fragment, no trailing slash; None stays None (no server)."""
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise InputError(f"--server {url!r} must be the http(s) URL of a clipedge serve, such as http://127.0.0.1:8000")
    return url.strip().rstrip("/")


def build_site(bundle: str | Path, out: str | Path, precision: str | None = None,
               mediapipe: str | Path | None = None, gallery: str | Path | None = None,
               queries: str | Path | None = None, server: str | None = None) -> Site:
    """Write the site for `bundle` into the new directory `out` (never over an existing one). `mediapipe`: where the
    npm packages are (web_npm.find_mediapipe; LiteRT.js is looked for there too). `server`: the URL of a `clipedge
    serve` of the same model that the page's search asks first (POST /embed/text), its own text model if that fails."""
    server = server_url(server)
    manifest = Manifest.read(bundle)
    mode = manifest.data["preprocess"].get("resize_mode", "shortest")
    if mode not in WEB_RESIZE_MODES:  # a crop window cannot pad a letterbox or skip the resize
        raise BundleError(f"{manifest.directory}: preprocess resize_mode {mode!r} cannot be done by the page's crop "
                          f"window; the page supports {', '.join(WEB_RESIZE_MODES)} (docs/preprocessing.md)")
    models = pick_models(manifest, precision)
    out = Path(out).resolve()
    if out.exists() or out.is_symlink():
        raise InputError(f"--out {out} already exists: give a new directory (clipedge web never overwrites)")
    mediapipe_package = None
    if models.mediapipe:
        directory, version = find_mediapipe(mediapipe)
        mediapipe_package = NpmPackage(MEDIAPIPE_PACKAGE, directory, version, MEDIAPIPE_FILES)
    litert = find_litert(mediapipe)
    items = read_gallery(gallery)
    models = _gallery_labels(models, items)
    extra = read_queries(queries)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        sizes = _write(tmp, manifest, models, items, extra, mediapipe_package, litert, server)
        files = [p for p in tmp.rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        texts = len(json.loads((tmp / SITE_JSON).read_text(encoding="utf-8"))["texts"]["items"])
        publish(tmp)  # mkdtemp makes it 0700: a web server running as another user must read it, as the umask says
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Site(out, models.precision, total, len(files), texts, len(items),
                mediapipe_package.version if mediapipe_package else "", sizes, litert[0].version)
