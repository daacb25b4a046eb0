"""Images decoded in worker threads, ahead of the model, handed over in input order.

Why: on a 2- or 4-core device indexing a photo library, decoding a photo costs more than running the model on it
(issue #18: a 12 MP JPEG took 62 ms to decode, the model 10 ms). Decoding one image after another between model calls
leaves the cores idle half the time. Pillow's decoders and resize release the GIL, so a few threads decode the next
images while the interpreter (which also releases it) runs the current group: the two overlap.

The guarantees, each tested in tests/runtime/test_prefetch.py:
- Order: groups come out in input order, whatever order the threads finish in.
- Errors: the first bad image *in input order* raises, with the same message and `index` the sequential path gives
  (`image 7 'photos/x.jpg': ...`); images after it may have been decoded and are thrown away.
- Bounded memory: at most `lookahead` images are decoded or waiting at any time, and the threads together hold at
  most the decode budget's bytes of decoded pixels (clipedge.runtime.decode.DECODE_BUDGET, issue #33): a thread whose
  next image does not fit waits before decoding it.
- No thread outlives the iteration: the pool is shut down when the generator finishes, raises or is closed
  (pending work cancelled, running decodes waited for).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

__all__ = ["THREAD_PREFIX", "default_workers", "prefetched"]

THREAD_PREFIX = "clipedge-decode"


def default_workers() -> int:
    """Decode threads when none are asked for: the usable cores, at most 4 (more decode faster than any model
    on a small device consumes, and each holds a decoded image in memory)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def prefetched(items: Sequence[Any], group: int, load: Callable[[list[Any], int], np.ndarray], workers: int,
               lookahead: int | None = None) -> Iterator[np.ndarray]:
    """`load(items[i:i+1], i)` (one image's pixels, [1, ...]) for every item, in `workers` threads, yielded as
    arrays of up to `group` rows in input order. `workers` <= 1 loads in the caller's thread, one group at a time.
    `lookahead` (default: two groups plus the workers) bounds how many images are in flight."""
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    if workers <= 1 or len(items) <= 1:
        for start in range(0, len(items), group):
            yield load(list(items[start : start + group]), start)
        return
    limit = max(lookahead or 2 * group + workers, group)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=THREAD_PREFIX)
    pending: deque[Future[np.ndarray]] = deque()
    try:
        submitted = 0
        while submitted < len(items) or pending:
            while submitted < len(items) and len(pending) < limit:
                pending.append(pool.submit(load, [items[submitted]], submitted))
                submitted += 1
            rows = [pending.popleft().result() for _ in range(min(group, len(pending)))]
            yield rows[0] if len(rows) == 1 else np.concatenate(rows)
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
