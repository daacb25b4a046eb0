"""`clipedge index build | update | dupes` and `clipedge search`: the photo-library commands (issue #35).

`build` makes an index or brings an existing one up to date (it is `update` with the folders given); `update`
rescans what the index was built from, with the bundle, format and precision that made it, so a nightly cron line
is `clipedge index update ~/photo-index`. Only new and changed files are embedded (clipedge.runtime.library.update).

Standard library only at import, like the other CLI modules.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from clipedge.runtime.cli.arg_types import positive_int
from clipedge.runtime.cli.batches import ON_ERROR_OPTION, counted, say_skipped
from clipedge.runtime.cli.commands import DEFAULT_BUNDLE, Progress, emit, load_runtime
from clipedge.runtime.errors import ClipEdgeError, InputError

__all__ = ["add_index_parsers", "index_defaults", "recorded_bundle"]

CONVERTING = "catalogue-converting.sqlite"  # the catalogue replacing a version-2 index, until it is whole


def add_index_parsers(sub, run: argparse.ArgumentParser, verbosity: argparse.ArgumentParser) -> None:
    p = sub.add_parser("index", parents=[verbosity], help="build, update or search an image index")
    index_sub = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = index_sub.add_parser("build", parents=[run], help="embed images into an index directory (only new and "
                                                          "changed files when it is an index already)")
    b.add_argument("images", nargs="+", help="image files or directories")
    b.add_argument("-o", "--output", required=True, help="index directory to write (new, empty, or an index)")
    _scan_options(b)
    b.set_defaults(func=cmd_index_build)
    u = index_sub.add_parser("update", parents=[run],
                             help="rescan what an index was built from: embed new and changed files, drop deleted")
    u.add_argument("index", help="index directory")
    u.add_argument("images", nargs="*", help="folders to scan instead of the ones the index was built from")
    _scan_options(u, defaults_recorded=True)
    u.set_defaults(func=cmd_index_update)
    d = index_sub.add_parser("dupes", parents=[verbosity], help="groups of near-duplicate images in an index")
    d.add_argument("index", help="index directory")
    d.add_argument("--threshold", type=float, help="cosine at or above which two images are one group "
                                                   "(default: see docs/library.md)")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(func=cmd_index_dupes)
    for target in (index_sub, sub):
        s = target.add_parser("search", parents=[run], help="search an index with a text or an image")
        s.add_argument("index", help="index directory")
        s.add_argument("query", nargs="?", help="a text (always a text, even when a file has that name)")
        s.add_argument("--image", help="search with this image instead of a text")
        s.add_argument("-k", type=positive_int, default=5, help="results to show")
        s.add_argument("--paths-only", action="store_true", help="print only the paths, one per line (for pipes: "
                                                                 "`... | xargs -d '\\n' feh`)")
        s.set_defaults(func=cmd_search)


def index_defaults(args: argparse.Namespace, model: dict[str, Any], bundle: str | None) -> None:
    """What `search`, `update` and `serve` run when --bundle, --format and --precision are not given: the bundle that
    built the index (recorded in it, where it still is) and the format and precision of its rows."""
    if args.bundle == DEFAULT_BUNDLE and bundle and Path(bundle).is_dir():
        args.bundle = bundle
    if args.precision is None and args.format is None:
        args.precision, args.format = model.get("precision"), model.get("format")


def recorded_bundle(index: Any) -> str | None:
    """The bundle a catalogue recorded (version-2 indexes record none)."""
    catalogue = getattr(index, "catalogue", None)
    return None if catalogue is None else catalogue.meta("bundle")


def _scan_options(p: argparse.ArgumentParser, defaults_recorded: bool = False) -> None:
    recorded = " (default: as the index was built)" if defaults_recorded else ""
    p.add_argument("--exclude", action="append", metavar="GLOB",
                   help="leave out files or folders matching GLOB (a name like '*.tmp' or a path like "
                        f"'2019/raw/*'); repeatable{recorded}")
    p.add_argument("--no-default-excludes", action="store_true",
                   help="also index hidden folders and thumbnail caches (.thumbnails, @eaDir, .git, node_modules, ...)")
    p.add_argument("--follow-symlinks", action="store_true", default=None,
                   help=f"descend into symlinked folders (loops are detected){recorded}")
    p.add_argument("--on-error", **ON_ERROR_OPTION)


# ---- build / update ---------------------------------------------------------------------------------------------
def cmd_index_build(args: argparse.Namespace) -> int:
    from clipedge.runtime.index import check_target

    check_target(Path(args.output))  # a file or a folder of other things: refused before anything is embedded
    return _update(args, Path(args.output), args.images, args.exclude or [], not args.no_default_excludes,
                   bool(args.follow_symlinks))


def cmd_index_update(args: argparse.Namespace) -> int:
    from clipedge.runtime.library.catalogue import Catalogue
    from clipedge.runtime.library.update import recorded_sources

    directory = Path(args.index)
    with Catalogue.open(directory) as catalogue:
        recorded = recorded_sources(catalogue)
        model = catalogue.model
        bundle = catalogue.meta("bundle")
    index_defaults(args, model, bundle)  # no silent re-embedding of it all with another precision
    exclude = args.exclude if args.exclude is not None else recorded.get("exclude", [])
    defaults = recorded.get("default_excludes", True) and not args.no_default_excludes
    follow = args.follow_symlinks if args.follow_symlinks is not None else recorded.get("follow_symlinks", False)
    return _update(args, directory, args.images or recorded["sources"], exclude, defaults, bool(follow))


def _update(args: argparse.Namespace, directory: Path, sources: list[str], exclude: list[str], default_excludes: bool,
            follow_symlinks: bool) -> int:
    from clipedge.runtime.index import META_FILE
    from clipedge.runtime.library.catalogue import CATALOGUE_FILE, Catalogue
    from clipedge.runtime.library.scan import scan_images
    from clipedge.runtime.library.update import sources_record

    scan = scan_images(sources, exclude=exclude, use_default_excludes=default_excludes,
                       follow_symlinks=follow_symlinks)
    _say_scan(scan, follow_symlinks)
    if not scan.files:
        raise InputError(f"no image files found in {', '.join(sources)}")
    runtime = load_runtime(args)
    legacy = (directory / META_FILE).is_file()  # a version-2 index: it stays the index until the catalogue is whole
    name = CONVERTING if legacy else CATALOGUE_FILE
    record = sources_record(directory, sources, exclude, default_excludes, follow_symlinks)
    try:
        with Catalogue.open(directory, create=True, file_name=name) as catalogue:
            summary, search = _update_open(catalogue, args, runtime, scan.files, record)
            total = catalogue.count
    except BaseException:
        if legacy:  # the version-2 index stays the index, whole, and nothing half-made is left beside it
            for leftover in (CONVERTING, CONVERTING + "-journal"):
                (directory / leftover).unlink(missing_ok=True)
        raise
    if legacy:
        os.replace(directory / CONVERTING, directory / CATALOGUE_FILE)
        _drop_legacy_index(directory)
    payload = {"index": str(directory), "items": total, "added": summary.added, "changed": summary.changed,
               "reused": summary.reused, "touched": summary.touched, "removed": summary.removed,
               "unchanged": summary.unchanged,
               "skipped": summary.skipped, "approximate_index": search}
    emit(args, payload, f"indexed {counted(total, 'image')} in {directory}: {summary.added} new, {summary.changed} "
         f"changed, {summary.reused} renamed or copied, {summary.removed} removed, "
         f"{summary.unchanged + summary.touched} unchanged"
         + (f"; {counted(len(summary.skipped), 'unreadable image')} left out" if summary.skipped else ""))
    say_skipped(summary.skipped, len(scan.files))
    return 0


def _update_open(catalogue, args: argparse.Namespace, runtime, files: list, record: dict[str, Any]):
    """The update and the search index's refresh, with a progress bar over the files that need a look."""
    from clipedge.runtime.index import model_identity
    from clipedge.runtime.library.search import refresh_search_index
    from clipedge.runtime.library.update import update_catalogue

    before = catalogue.generation
    catalogue.set_meta("bundle", os.path.abspath(args.bundle))
    bar: list[Progress] = []  # made when the update knows how many files it has to look at

    def progress(done: int, total: int) -> None:
        if not bar:
            bar.append(Progress(total, "index", args.progress))
        bar[0].update(done)

    try:
        summary = update_catalogue(catalogue, runtime, files, model_identity(runtime), args.on_error, progress,
                                   record)
    finally:
        if bar:
            bar[0].close()
    return summary, refresh_search_index(catalogue, before, summary.removed_ids, summary.changed_ids)


def _say_scan(scan: Any, follow_symlinks: bool) -> None:
    if scan.skipped_links and not follow_symlinks:
        print(f"clipedge: {counted(len(scan.skipped_links), 'symlinked folder')} not followed (first: "
              f"{scan.skipped_links[0]}); --follow-symlinks descends into them", file=sys.stderr)
    if scan.loops:
        print(f"clipedge: {counted(len(scan.loops), 'symlink loop')} not followed again (first: {scan.loops[0]})",
              file=sys.stderr)


def _drop_legacy_index(directory: Path) -> None:
    """A version-2 index (index.json + its matrix) that this build replaced with a catalogue."""
    from clipedge.runtime.index import META_FILE, own_matrix

    legacy = directory / META_FILE
    if legacy.is_file():
        matrix = own_matrix(directory)
        legacy.unlink()
        if matrix:
            (directory / matrix).unlink(missing_ok=True)


# ---- dupes and search -------------------------------------------------------------------------------------------
def cmd_index_dupes(args: argparse.Namespace) -> int:
    from clipedge.runtime.library.dupes import DEFAULT_DUPLICATE_COSINE, near_duplicate_groups
    from clipedge.runtime.library.search import LibraryIndex

    threshold = DEFAULT_DUPLICATE_COSINE if args.threshold is None else args.threshold
    if not -1.0 <= threshold <= 1.0:
        raise InputError(f"--threshold is a cosine, from -1 to 1; got {threshold}")
    index = LibraryIndex.open(args.index)
    matrix, _, paths, absolute = index.catalogue.embeddings()
    groups = [[index.catalogue.shown_path(paths[i], absolute[i]) for i in group]
              for group in near_duplicate_groups(matrix, threshold)]
    if args.json:
        print(json.dumps({"threshold": threshold, "groups": groups}, indent=2))
    else:
        print("\n\n".join("\n".join(group) for group in groups) if groups else
              f"no near duplicates at cosine >= {threshold}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from clipedge.runtime.library import open_index

    if (args.query is None) == (args.image is None):
        raise ClipEdgeError("search takes a text query or --image PATH, not both and not neither")
    index = open_index(args.index)
    index_defaults(args, index.model, recorded_bundle(index))  # its own model: its scores, no cross-model shift
    runtime = load_runtime(args)
    hits = index.search(runtime, args.query if args.image is None else Path(args.image), k=args.k)
    if args.paths_only:
        print("\n".join(h.item for h in hits))
        return 0
    payload = [{"rank": h.rank, "item": h.item, "score": round(h.score, 6)} for h in hits]
    emit(args, payload, "\n".join(f"{h.rank:>3}  {h.score:.4f}  {h.item}" for h in hits))
    return 0
