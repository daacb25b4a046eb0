"""Tokenizer throughput, clipedge vs OpenCLIP's `SimpleTokenizer` (the reference), in texts per second.

Run from the repository root:  python tests/runtime/bench_tokenizer.py [--repeats 5]

Two corpora: the parity test's mixed corpus (every script, emoji, HTML, ftfy case, long texts) and plain English
captions, the common workload. "cold" empties both tokenizers' word caches before each timed pass; "warm" times
passes after one untimed pass over the same texts. Each number is the median of the repeats; both tokenizers
produce the full [B, 77] id matrix (numpy int32 for clipedge, a torch tensor for OpenCLIP). Not a test: pytest
does not collect it (the name does not start with test_).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from clipedge.runtime.tokenizer import Tokenizer


def _load_test_module() -> ModuleType:
    """The parity test module, for its corpus and its reference loader (works however this script is run)."""
    path = Path(__file__).with_name("test_tokenizer.py")
    spec = importlib.util.spec_from_file_location("_tokenizer_parity_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _median_rate(run: Callable[[], object], reset: Callable[[], None] | None, n_texts: int, repeats: int) -> float:
    """Median texts/s over `repeats` timed passes; `reset` (if given) runs untimed before each pass."""
    rates = []
    for _ in range(repeats):
        if reset is not None:
            reset()
        start = time.perf_counter()
        run()
        rates.append(n_texts / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per cell (median reported)")
    args = parser.parse_args(argv)

    tests = _load_test_module()
    try:
        reference_module = tests.load_reference_module()
    except ModuleNotFoundError as err:
        print(err, file=sys.stderr)
        return 1
    import torch  # the reference returns torch tensors; one thread keeps the comparison about tokenizing

    torch.set_num_threads(1)
    ours = Tokenizer.default()
    theirs = reference_module.SimpleTokenizer()
    their_initial_cache = dict(theirs.cache)  # holds only its special tokens

    def reset_ours() -> None:
        ours._cache.clear()

    def reset_theirs() -> None:
        theirs.cache = dict(their_initial_cache)

    rng = random.Random(1)
    corpora = {
        "mixed parity corpus": tests.build_corpus(),
        "plain captions": [tests._caption(rng) for _ in range(5000)],
    }
    header = f"{'corpus':<22} {'texts':>6} {'cache':<5} {'clipedge texts/s':>17} {'openclip texts/s':>17} {'ratio':>6}"
    print(f"median of {args.repeats} passes, Python {sys.version.split()[0]}")
    print(header)
    print("-" * len(header))
    for name, texts in corpora.items():
        for cache in ("cold", "warm"):
            if cache == "warm":
                ours(texts)
                theirs(texts)
            ours_rate = _median_rate(
                lambda t=texts: ours(t), reset_ours if cache == "cold" else None, len(texts), args.repeats
            )
            theirs_rate = _median_rate(
                lambda t=texts: theirs(t, context_length=77),
                reset_theirs if cache == "cold" else None,
                len(texts),
                args.repeats,
            )
            print(
                f"{name:<22} {len(texts):>6} {cache:<5} {ours_rate:>17,.0f} {theirs_rate:>17,.0f} "
                f"{ours_rate / theirs_rate:>5.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
