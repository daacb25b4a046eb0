"""Benchmark of nearest-neighbour search for the image index (issue #35): exact numpy against usearch, faiss and
hnswlib, on synthetic unit vectors of the model's width, one query at a time (the way `clipedge search` runs).

Not a test: a script that prints a markdown table (docs/search-scale.md quotes it).

    python tests/scripts/bench_ann.py --sizes 10000 100000 1000000 --dim 512 --queries 200
    python tests/scripts/bench_ann.py --sizes 100000 --libs usearch-i8 --photos /tmp/photos.npy

Each (method, size) runs in a child process so that its resident-memory delta is its own: the vectors are made
first, RSS is read, the index is built, RSS is read again ("RSS delta"). usearch also reports its own size
(`memory_usage`). The exact methods' memory is the matrix they search (float32 or float16).

Data: `--data clustered` (default) draws unit vectors around 1,000 random centres, which is what image embeddings
look like (photos of the same things sit together); `--data uniform` draws them uniformly on the sphere, the worst
case for any graph index (every neighbour is almost as far as every other). Queries are fresh draws from the same
distribution, not rows of the index.

`--photos FILE.npy|DIR`: recall for real photo embeddings: those vectors are the queries, and they are also mixed
into the synthetic rows (so each query's own photo and its neighbours are in the index).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ["exact-f32", "exact-f16", "usearch-i8s", "usearch-i8", "usearch-f16", "faiss-hnsw-sq8", "faiss-hnsw-f32",
           "hnswlib-f32"]
# HNSW settings shared by every graph library, so their numbers compare: M (links per node) 16, efConstruction 128;
# the search breadth `ef` is swept on one built index.
M, EF_ADD, EF_SEARCH = 16, 128, (64, 128, 256, 512)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_data(n: int, dim: int, queries: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` rows and `queries` queries, float32 unit vectors, made in blocks to keep the peak low."""
    rng = np.random.default_rng(seed)
    data = np.empty((n, dim), np.float32)
    centres = unit(rng.standard_normal((1000, dim), dtype=np.float32)) if kind == "clustered" else None

    def draw(count: int) -> np.ndarray:
        noise = rng.standard_normal((count, dim), dtype=np.float32)
        if centres is None:
            return unit(noise)
        # noise of norm ~1.1 around a unit centre: cos to the centre ~0.67, as photos of one subject are
        return unit(centres[rng.integers(0, len(centres), count)] + noise * np.float32(0.05))

    for start in range(0, n, 100_000):
        data[start:start + 100_000] = draw(min(100_000, n - start))
    return data, draw(queries)


def exact_truth(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), np.int64)
    for i in range(0, len(queries), 50):
        scores = queries[i:i + 50] @ data.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
        out[i:i + 50] = np.take_along_axis(part, order, 1)
    return out


def recall(found: list[np.ndarray], truth: np.ndarray, k: int) -> float:
    pairs = zip(found, truth, strict=True)
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in pairs]))


def time_queries(search, queries: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
    search(queries[0])  # warm caches and lazy allocations
    found, ms = [], []
    for q in queries:
        t0 = time.perf_counter()
        found.append(np.asarray(search(q)))
        ms.append((time.perf_counter() - t0) * 1000)
    return found, ms


def exact_search(matrix: np.ndarray, k: int):
    """The runtime's own exact search (float16 widened to float32 a block at a time)."""
    from clipedge.runtime.library.vectors import exact_top_k

    def search(q: np.ndarray) -> np.ndarray:
        return exact_top_k(matrix, q, k)[0]
    return search


def scale_i8(x: np.ndarray) -> np.ndarray:
    return np.round(x / np.abs(x).max(axis=1, keepdims=True) * 127).astype(np.int8)


def build(method: str, data: np.ndarray, dim: int, tmp: str):
    """(index, {ef: search function}, library's own size or None, on-disk bytes)."""
    k = 10
    if method.startswith("exact"):
        matrix = data.astype(np.float16) if method.endswith("f16") else data
        path = os.path.join(tmp, "m.npy")
        np.save(path, matrix)
        return matrix, {None: exact_search(matrix, k)}, matrix.nbytes, os.path.getsize(path)
    if method.startswith("usearch"):
        from usearch.index import Index

        # i8s: each vector scaled so its largest component is +-127 before the cast (cosine ignores the scale);
        # plain i8 is usearch's own cast, x * 127, which leaves a 512-wide unit vector about 11 levels of 255
        prep = scale_i8 if method == "usearch-i8s" else (lambda x: x)
        dtype = "i8" if method == "usearch-i8s" else method.split("-")[1]
        index = Index(ndim=dim, metric="cos", dtype=dtype, connectivity=M, expansion_add=EF_ADD)
        for start in range(0, len(data), 100_000):
            index.add(np.arange(start, min(start + 100_000, len(data)), dtype=np.int64),
                      prep(data[start:start + 100_000]), threads=os.cpu_count() or 1)
        path = os.path.join(tmp, "u.usearch")
        index.save(path)

        def searcher(ef):
            def search(q):
                index.expansion_search = ef
                return index.search(prep(q[None, :])[0], k, threads=1).keys
            return search
        return index, {ef: searcher(ef) for ef in EF_SEARCH}, index.memory_usage, os.path.getsize(path)
    if method.startswith("faiss"):
        import faiss

        if method.endswith("sq8"):
            index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, M, faiss.METRIC_INNER_PRODUCT)
            index.train(data[: min(len(data), 100_000)])
        else:
            index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = EF_ADD
        index.add(data)
        path = os.path.join(tmp, "f.faiss")
        faiss.write_index(index, path)

        def searcher(ef):
            def search(q):
                faiss.omp_set_num_threads(1)
                index.hnsw.efSearch = ef
                return index.search(q[None, :], k)[1][0]
            return search
        return index, {ef: searcher(ef) for ef in EF_SEARCH}, None, os.path.getsize(path)
    if method.startswith("hnswlib"):
        import hnswlib

        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=len(data), ef_construction=EF_ADD, M=M, random_seed=0)
        index.add_items(data, np.arange(len(data)), num_threads=os.cpu_count() or 1)
        path = os.path.join(tmp, "h.bin")
        index.save_index(path)

        def searcher(ef):
            def search(q):
                index.set_ef(ef)
                return index.knn_query(q, k, num_threads=1)[0][0]
            return search
        return index, {ef: searcher(ef) for ef in EF_SEARCH}, None, os.path.getsize(path)
    raise SystemExit(f"unknown method {method}")


def load_photos(source: str, dim: int) -> np.ndarray:
    path = Path(source)
    if path.is_dir():
        raise SystemExit("--photos wants the .npy that `clipedge embed DIR -o FILE.npy` wrote")
    vectors = np.load(path).astype(np.float32)
    if vectors.shape[1] != dim:
        raise SystemExit(f"--photos: vectors have {vectors.shape[1]} dimensions, --dim is {dim}")
    return unit(vectors)


def run_one(args: argparse.Namespace) -> None:
    """Child process: one method at one size; prints JSON lines, one per search breadth."""
    data, queries = make_data(args.size, args.dim, args.queries, args.data)
    if args.photos:
        photos = load_photos(args.photos, args.dim)
        # the photos replace rows spread over the index, and they are the queries
        rows = np.linspace(0, len(data) - 1, len(photos)).astype(np.int64)
        data[rows] = photos
        queries = photos
    truth = exact_truth(data, queries, 10)
    before = rss_bytes()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        index, searchers, own, disk = build(args.method, data, args.dim, tmp)
        build_s = time.perf_counter() - t0
        delta = rss_bytes() - before
        for ef, search in searchers.items():
            found, ms = time_queries(search, queries)
            print(json.dumps({
                "method": args.method, "size": args.size, "ef": ef, "build_s": build_s,
                "recall": recall(found, truth, 10), "median_ms": statistics.median(ms),
                "p99_ms": float(np.percentile(ms, 99)), "rss_delta": delta, "own_bytes": own, "disk": disk,
            }), flush=True)
    del index


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--libs", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--max-size", nargs="*", default=[], metavar="METHOD=N",
                        help="skip METHOD above N rows (slow builds on small machines)")
    parser.add_argument("--data", choices=["clustered", "uniform"], default="clustered")
    parser.add_argument("--photos", help="real embeddings (.npy from `clipedge embed`): queries, mixed into the rows")
    parser.add_argument("--tmp", default=None, help="where indexes are saved to measure their size")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.method = args.one
        run_one(args)
        return
    caps = {m: int(n) for m, n in (item.split("=") for item in args.max_size)}
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; dim {args.dim}; {args.queries} queries one at a time; "
          f"data {args.data}{'; queries are the photos in ' + args.photos if args.photos else ''}")
    print(f"HNSW: M={M}, ef_construction={EF_ADD}; memory: library's own figure where it has one, else RSS delta\n")
    print("| method | rows | ef | build s | recall@10 | median ms | p99 ms | memory MiB (own) | RSS delta MiB "
          "| disk MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for method in args.libs:
            if size > caps.get(method, size):
                print(f"| {method} | {size} | skipped (--max-size) | | | | | | | |", flush=True)
                continue
            command = [sys.executable, __file__, "--one", method, "--size", str(size), "--dim", str(args.dim),
                       "--queries", str(args.queries), "--data", args.data]
            command += ["--photos", args.photos] if args.photos else []
            command += ["--tmp", args.tmp] if args.tmp else []
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(f"| {method} | {size} | failed: {done.stderr.strip().splitlines()[-1:]} | | | | | | | |")
                continue
            for line in done.stdout.splitlines():
                r = json.loads(line)
                print(f"| {r['method']} | {r['size']:,} | {r['ef'] or '-'} | {r['build_s']:.1f} | {r['recall']:.3f} "
                      f"| {r['median_ms']:.2f} | {r['p99_ms']:.2f} | {mib(r['own_bytes'])} | {mib(r['rss_delta'])} "
                      f"| {mib(r['disk'])} |", flush=True)


if __name__ == "__main__":
    main()
