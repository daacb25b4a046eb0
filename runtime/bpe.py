"""The BPE merge step of CLIP's tokenizer (clipedge.runtime.tokenizer), in two forms that give the same result.

`merge` is the reference's loop (openai/CLIP `bpe()`): find the lowest-rank adjacent pair, merge every occurrence
left to right, repeat. Each round scans the whole word, so a word of n symbols costs O(n^2): one 30,000-letter word
took 13 s. `merge_long` keeps the pairs in a heap and the symbols in a linked list, O(n log n), and is used for long
words; `merge` stays for short ones, where it is faster. tests/runtime/test_tokenizer.py holds them to each other and
to OpenCLIP's ids.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

__all__ = ["merge", "merge_head", "merge_long"]

_NOT_A_MERGE = float("inf")  # rank of a symbol pair that no merge joins


def merge(symbols: list[str], ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """Apply merges lowest rank first, each to every non-overlapping occurrence, left to right."""
    while len(symbols) > 1:
        best = min(zip(symbols, symbols[1:], strict=False), key=lambda pair: ranks.get(pair, _NOT_A_MERGE))
        if best not in ranks:
            break
        first, second = best
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def merge_long(symbols: list[str], ranks: Mapping[tuple[str, str], int],
               merges: Sequence[tuple[str, str]]) -> list[str]:
    """`merge`'s result in O(n log n).

    Every adjacent pair a merge joins waits in a heap by (rank, position). Like `merge`, the lowest rank present is
    applied to all its occurrences, left to right (the heap gives them in position order), before the pairs those
    merges create are considered: a new pair of lower rank must not jump ahead of the rest of the round (`x y x y`,
    where (xy, x) ranks below (x, y), gives `xy xy`, not `xyx y`). An entry whose pair has changed since it was
    pushed is dropped when popped: symbols only grow, so a changed pair never comes back.
    """
    sym = list(symbols)
    nxt = [*range(1, len(sym)), -1]
    prv = list(range(-1, len(sym) - 1))
    alive = [True] * len(sym)
    heap = [(ranks[pair], i) for i, pair in enumerate(zip(sym, sym[1:], strict=False)) if pair in ranks]
    heapq.heapify(heap)
    while heap:
        rank = heap[0][0]
        first, second = merges[rank]
        merged = []
        while heap and heap[0][0] == rank:
            i = heapq.heappop(heap)[1]
            j = nxt[i] if alive[i] else -1
            if j < 0 or sym[i] != first or sym[j] != second:
                continue  # stale: one of the two was merged into something else since this entry was pushed
            sym[i], alive[j] = first + second, False
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prv[nxt[j]] = i
            merged.append(i)
        pushed: set[int] = set()
        for i in merged:  # the round is done: now the pairs its merges made
            for left in (prv[i], i):
                right = nxt[left] if left >= 0 else -1
                if right >= 0 and left not in pushed and (sym[left], sym[right]) in ranks:
                    pushed.add(left)
                    heapq.heappush(heap, (ranks[sym[left], sym[right]], left))
    out, i = [], 0
    while i >= 0:
        out.append(sym[i])
        i = nxt[i]
    return out


def merge_head(symbols: list[str], ranks: Mapping[tuple[str, str], int], merges: Sequence[tuple[str, str]],
               count: int, longest: int) -> list[str] | None:
    """The first `count` tokens `merge_long` gives for a word whose first symbols are `symbols` (the word goes on
    past them), or None when that cannot be told from them.

    A word of millions of symbols (issue #33: one 10 MB "word" took 40 s and 2 GB) is cut to its head: the first
    `count` tokens cover at most `count * longest` symbols (`longest`: the longest vocabulary token), so only merges
    near the cut could differ from the whole word's. A merge changes only its own pair's neighbours, so a cut's
    influence moves left one symbol per round, not further; the head is merged at two cuts, one twice as far out as
    the other, and used only when both give the same first `count` tokens: a cut whose influence reached them would
    show as a difference. This is a check, not a proof for every merge table: on a difference (or too few symbols)
    the caller merges the whole word, which is always exact.
    """
    near = count * longest + 64
    if len(symbols) < 2 * near:
        return None
    first = merge_long(symbols[:near], ranks, merges)[:count]
    second = merge_long(symbols[: 2 * near], ranks, merges)[:count]
    return first if first == second and len(first) == count else None
