"""Run inside the arm64 runtime venv (no PYTHONPATH): import and use clipedge.runtime, then prove every module it
pulled in comes from the standard library or from a distribution in clipedge's declared dependency closure.

Usage: python hygiene.py BUNDLE IMAGE  -> prints one JSON object; exit 1 on an undeclared or forbidden import.
"""

from __future__ import annotations

import sys

BEFORE = set(sys.modules)  # what the interpreter (site, .pth files) loaded before any clipedge code

import importlib.util  # noqa: E402
import json  # noqa: E402
import pkgutil  # noqa: E402

SERVE_APP = ("clipedge.runtime.serve.app", "clipedge.runtime.serve.requests")
FORBIDDEN = ("tensorflow", "torch", "onnxruntime", "tflite_runtime", "keras", "jax", "transformers")


def use_runtime(bundle: str, image: str) -> None:
    import clipedge.runtime
    from clipedge.runtime.clip_runtime import load

    # every runtime module, including the CLI and the index, as an app or `clipedge --help` would
    for module in pkgutil.walk_packages(clipedge.runtime.__path__, "clipedge.runtime."):
        if module.name.endswith(".__main__"):  # `python -m` entry points run when imported
            continue
        if module.name.startswith(SERVE_APP) and importlib.util.find_spec("starlette") is None:
            continue  # the server's app is the `serve` extra's (`clipedge serve` says so without it)
        __import__(module.name)
    runtime = load(bundle)
    runtime.classify(image, ["dog", "cat"])
    runtime.encode_texts(["a photo of a dog", "na\u00efve caf\u00e9 &amp; \ufb01sh"])
    from clipedge.runtime.cli.main import build_parser

    build_parser()


def dependency_closure() -> dict[str, set[str]]:
    """clipedge's installed requirements, recursively, markers evaluated, extras not taken but the photo library's
    (index, heif): {dist: top-level names}."""
    from importlib import metadata

    from pip._vendor.packaging.requirements import Requirement  # pip is in every venv; imported after the check
    from pip._vendor.packaging.utils import canonicalize_name

    top_levels: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for dist in dists:
            top_levels.setdefault(canonicalize_name(dist), set()).add(module)
    closure: dict[str, set[str]] = {}
    todo = ["clipedge"]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in closure:
            continue
        dist = metadata.distribution(name)
        closure[name] = top_levels.get(name, set())
        for line in dist.requires or []:
            requirement = Requirement(line)
            # clipedge's own photo-library extras are installed by inside.sh (after the footprint): pillow-heif is
            # imported when an image is opened where it is installed
            extras = ("", "index", "heif") if name == "clipedge" else ("",)
            if requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in extras):
                todo.append(requirement.name)
    return closure


def main() -> int:
    bundle, image = sys.argv[1:3]
    use_runtime(bundle, image)
    imported = {name.split(".")[0] for name in set(sys.modules) - BEFORE}

    import importlib.util
    from importlib import metadata

    closure = dependency_closure()
    declared = set().union(*closure.values()) | {"clipedge"}
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    third_party = sorted(imported - stdlib)
    undeclared = sorted(name for name in third_party if name not in declared)
    forbidden_imported = sorted(name for name in FORBIDDEN if name in sys.modules)
    forbidden_importable = sorted(name for name in FORBIDDEN if importlib.util.find_spec(name) is not None)
    installed = sorted({_canonical(metadata.Distribution.at(p).metadata["Name"]) for p in _dist_infos()})
    extra_dists = sorted(d for d in installed if d not in closure and d not in ("pip", "setuptools"))
    import clipedge.runtime

    report = {
        "clipedge_runtime_file": clipedge.runtime.__file__,
        "prefix": sys.prefix,
        "system_site_packages": sys.base_prefix != sys.prefix and _system_site_packages(),
        "dependency_closure": {name: sorted(mods) for name, mods in sorted(closure.items())},
        "third_party_imported": third_party,
        "undeclared_imported": undeclared,
        "forbidden_imported": forbidden_imported,
        "forbidden_importable": forbidden_importable,
        "installed_distributions": installed,
        "installed_outside_closure": extra_dists,
    }
    print(json.dumps(report, indent=2))
    ok = not (undeclared or forbidden_imported or forbidden_importable or extra_dists or report["system_site_packages"])
    return 0 if ok else 1


def _canonical(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _dist_infos():
    import site
    from pathlib import Path

    for directory in site.getsitepackages():
        yield from Path(directory).glob("*.dist-info")


def _system_site_packages() -> bool:
    from pathlib import Path

    cfg = Path(sys.prefix) / "pyvenv.cfg"
    return "include-system-site-packages = true" in cfg.read_text().lower()


if __name__ == "__main__":
    sys.exit(main())
