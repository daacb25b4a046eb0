"""Speed of the Python tokenizer and its JavaScript (Node.js) and Java (JVM) ports on the same texts.

    python tests/ports/bench_tokenizer_ports.py [--repeats 5]

Prints a Markdown table: per runtime and corpus, the median load time (vocabulary file to ready tokenizer) and the
median texts/second of `tokenize` (77 positions, truncation) over the repeats. Every timed pass uses a fresh
tokenizer, so the per-word cache starts empty as it would in a new process; untimed warm-up passes come first
(the JVM's JIT needs several). Two corpora: the parity corpus of tests/ports/test_tokenizer_ports.py (every kind of
hostile text; most go through the ftfy port) and 10,000 plain captions (the ASCII fast path: what a photo app
sends). Java is compiled into a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))  # run as a script: make `tests.` importable

from clipedge.runtime.tokenizer import Tokenizer  # noqa: E402
from tests.ports.test_tokenizer_ports import (  # noqa: E402
    JAVA_DRIVER,
    JAVA_SOURCES,
    JVM_FLAGS,
    NODE_DRIVER,
    VOCAB,
    build_corpus,
)
from tests.runtime.test_tokenizer import _caption  # noqa: E402

WARM_UP_PASSES = 1  # Python and Node.js; the Java driver does its own three


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def bench_python(texts: list[str], repeats: int) -> tuple[list[float], list[float]]:
    loads, seconds = [], []
    for index in range(WARM_UP_PASSES + repeats):
        start = time.perf_counter()
        tokenizer = Tokenizer.default()
        loaded = time.perf_counter()
        tokenizer(texts)
        if index >= WARM_UP_PASSES:
            loads.append(loaded - start)
            seconds.append(time.perf_counter() - loaded)
    return loads, seconds


def bench_driver(command: list[str], corpus: Path, repeats: int) -> tuple[list[float], list[float]]:
    out = subprocess.run([*command, str(VOCAB), str(corpus), "--bench", str(repeats)], capture_output=True,
                         text=True, timeout=3600, check=True).stdout
    result = json.loads(out)
    return result["load"], result["seconds"]


def tool_version(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    return (result.stdout or result.stderr).strip().splitlines()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per runtime and corpus (default 5)")
    args = parser.parse_args()
    corpora = {
        "parity corpus": build_corpus(),
        "captions": [_caption(random.Random(i)) for i in range(10_000)],
    }
    node, javac, java = shutil.which("node"), shutil.which("javac"), shutil.which("java")
    versions = [f"Python {platform.python_version()}"]
    with tempfile.TemporaryDirectory(prefix="clipedge-bench-") as work:
        runtimes = {"Python": None}
        if node:
            runtimes["Node.js"] = [node, str(NODE_DRIVER)]
            versions.append(f"Node.js {tool_version([node, '--version'])}")
        if javac and java:
            classes = Path(work) / "classes"
            subprocess.run([javac, *(f"-J{f}" for f in JVM_FLAGS), "--release", "17", "-d", str(classes),
                            *map(str, [*JAVA_SOURCES, JAVA_DRIVER])], check=True, timeout=600)
            runtimes["Java"] = [java, *JVM_FLAGS, "-cp", str(classes), "TokenizeCorpus"]
            versions.append(tool_version([java, *JVM_FLAGS, "-version"]))
        rows = []
        for corpus_name, texts in corpora.items():
            corpus_file = Path(work) / f"{corpus_name.replace(' ', '-')}.json"
            corpus_file.write_text(json.dumps(texts, ensure_ascii=True), encoding="ascii")
            for runtime, command in runtimes.items():
                if command is None:
                    loads, seconds = bench_python(texts, args.repeats)
                else:
                    loads, seconds = bench_driver(command, corpus_file, args.repeats)
                rate = len(texts) / statistics.median(seconds)
                rows.append((runtime, corpus_name, len(texts), 1000 * statistics.median(loads), rate))
                print(f"  {runtime:8} {corpus_name:14} {rate:10,.0f} texts/s", file=sys.stderr)
    print(f"CPU: {cpu_name()}; {'; '.join(versions)}; median of {args.repeats} passes after warm-up\n")
    print("| runtime | corpus | texts | load (ms) | texts/s |")
    print("|---|---|---:|---:|---:|")
    for runtime, corpus_name, count, load_ms, rate in rows:
        print(f"| {runtime} | {corpus_name} | {count:,} | {load_ms:,.0f} | {rate:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
