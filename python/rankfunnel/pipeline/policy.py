"""When to merge segments and when to fold them into the main index (a tiered policy).

Every commit that adds or changes documents writes one small segment. After the commit:

1. **Fold** (compaction): when the segments hold more than ``fold_ratio`` (10%) of the rows the
   main index holds, or the main index holds more than ``fold_ratio`` superseded rows
   (tombstones), everything is folded into a new main index (an empty main folds at once, so
   the first commit of a pipeline builds its main index). Each fold rewrites the main index,
   and the main index grows by at least 10% between folds, so a document is rewritten into it
   a bounded number of times (amortised O(1) bytes per document, like Lucene's and LSM stores'
   tiered merging).
2. **Merge**: otherwise, when ``merge_factor`` (10) segments share a size tier (tier ``t`` holds
   segments of ``floor * 10**(t-1) < rows <= floor * 10**t`` rows, ``floor`` = 1,000), they are
   merged into one segment. So at most ``merge_factor - 1`` segments live per tier, and the
   segments of a main index of ``N`` rows number ``O(9 log10(0.1 N / 1000))`` at most.

Searches cover the main index plus one in-memory index of every segment's live rows, so the
number of segment files does not change the cost of a search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union


@dataclass(frozen=True)
class TieredPolicy:
    """The compaction rule (see the module notes).

    Attributes
    ----------
    fold_ratio : float
        Fold when segment rows (or main-index tombstones) exceed this fraction of main rows.
    merge_factor : int
        Merge this many segments of one size tier into one.
    floor : int
        Rows of the smallest tier.
    """

    fold_ratio: float = 0.1
    merge_factor: int = 10
    floor: int = 1000

    def tier(self, rows: int) -> int:
        """Size tier of a segment of ``rows`` rows."""
        return 0 if rows <= self.floor else int(math.ceil(math.log10(rows / self.floor) - 1e-12))

    def plan(
        self, main_rows: int, main_dead: int, segment_rows: Sequence[int]
    ) -> Optional[Union[str, list[int]]]:
        """What to do after a commit: ``"fold"``, a list of segment positions to merge, or None.

        Parameters
        ----------
        main_rows : int
            Rows in the main index file (live or superseded).
        main_dead : int
            Rows of the main index superseded since it was written.
        segment_rows : sequence of int
            Rows of each segment file, oldest first.
        """
        if not segment_rows and main_dead == 0:
            return None
        limit = self.fold_ratio * main_rows
        if sum(segment_rows) > limit or main_dead > limit:
            return "fold"
        tiers: dict[int, list[int]] = {}
        for pos, rows in enumerate(segment_rows):
            tiers.setdefault(self.tier(rows), []).append(pos)
        for t in sorted(tiers):
            if len(tiers[t]) >= self.merge_factor:
                return tiers[t]
        return None
