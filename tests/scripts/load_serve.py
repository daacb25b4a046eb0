"""Load test of `clipedge serve` (issue #35): sustained text-query throughput, p50/p99 latency, errors and the server's
memory over N requests from C concurrent clients, all on 127.0.0.1.

    python tests/scripts/load_serve.py --bundle BUNDLE [--requests 10000] [--clients 8] [--precision P] [--json]

Starts its own server (`python -m clipedge.runtime.cli serve --port 0`), stops it at the end (also on Ctrl-C). Each
client is a thread with one persistent HTTP connection (httpx.Client), sending `POST /embed/text` with one text,
varied per request (so no cache answers it), the next as soon as the last came back: a closed loop, so the rate is
what the server sustains, not what was offered. The server's RSS is read from /proc at the start (after a warm-up),
after 1,000 requests and at the end: growth between the last two is what a leak would show. The clients run in this
process and take CPU from the server on a 2-core machine: the numbers are the whole machine's, as a phone or a
Raspberry Pi running its own client would see.
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

URL_LINE = re.compile(r"listening on (http://\S+?) ")
ADJECTIVES = ("red", "blue", "small", "old", "shiny", "wet", "striped", "wooden", "bright", "quiet", "broken", "tall")
NOUNS = ("car", "dog", "cat", "house", "boat", "tree", "bicycle", "mountain", "beach", "street", "cup", "bridge")


def query_text(i: int) -> str:
    return (f"a photo of a {ADJECTIVES[i % len(ADJECTIVES)]} {NOUNS[(i // len(ADJECTIVES)) % len(NOUNS)]} "
            f"number {i}")


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` in MiB (Linux /proc; NaN elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "clipedge.runtime.cli", "serve", "--port", "0", "--bundle", args.bundle,
               "--workers", str(args.workers)]
    for flag in ("precision", "format", "threads"):
        if getattr(args, flag) is not None:
            command += [f"--{flag}", str(getattr(args, flag))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        match = URL_LINE.search(lines.get(timeout=300))
    except queue.Empty:
        match = None
    if not match:
        process.kill()
        raise SystemExit("the server did not start")
    return process, match.group(1)


def run_clients(url: str, total: int, clients: int, on_progress) -> tuple[list[float], list[str], float]:
    """`clients` threads sending `total` requests in all; (latencies in s, errors, wall time)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                started = time.perf_counter()
                try:
                    response = http.post("/embed/text", json={"texts": [query_text(i)]})
                    ok = response.status_code == 200 and len(response.json()["embeddings"]) == 1
                    problem = None if ok else f"{response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as err:
                    problem = f"{type(err).__name__}: {err}"
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors.append(problem)
                    done = len(latencies)
                on_progress(done)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--precision")
    parser.add_argument("--format")
    parser.add_argument("--threads", type=int, help="interpreter threads of the server (default: its choice)")
    parser.add_argument("--workers", type=int, default=4, help="the server's --workers (default: 4)")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=200, help="requests before the clock starts (default: 200)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from clipedge.runtime.bench import machine_info

    process, url = start_server(args)
    try:
        health = httpx.get(f"{url}/health", timeout=60).json()
        run_clients(url, args.warmup, args.clients, lambda done: None)
        rss = {"start": rss_mib(process.pid)}

        def on_progress(done: int) -> None:
            if done == min(1000, args.requests):
                rss["after_1000"] = rss_mib(process.pid)

        latencies, errors, wall = run_clients(url, args.requests, args.clients, on_progress)
        rss["end"] = rss_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    ms = np.asarray(latencies) * 1000
    machine = machine_info()
    result = {
        "cpu": machine["cpu"], "usable_cores": machine["usable_cores"], "model": health["model"],
        "requests": len(latencies), "clients": args.clients, "errors": len(errors), "first_errors": errors[:3],
        "throughput_rps": round(len(latencies) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2),
        "rss_mib": {key: round(value, 1) for key, value in rss.items()},
        "rss_growth_after_1000_mib": round(rss["end"] - rss.get("after_1000", rss["start"]), 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        model = result["model"]
        print(f"{result['cpu']}, {result['usable_cores']} usable cores; {model['name']} {model['format']} "
              f"{model['precision']}")
        print("| model | requests | clients | req/s | p50 ms | p99 ms | errors | RSS start / 1k / end MiB |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| {model['name']} {model['precision']} | {result['requests']} | {args.clients} | "
              f"{result['throughput_rps']} | {result['p50_ms']} | {result['p99_ms']} | {result['errors']} | "
              f"{rss['start']:.0f} / {rss.get('after_1000', float('nan')):.0f} / {rss['end']:.0f} |")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
