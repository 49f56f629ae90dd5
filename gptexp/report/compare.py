"""Which runs may be compared, and how: spec fields that differ, groups of runs that differ in the seed alone.

    group_stats(records, by="tokenizer.kind")     # mean ± std of final val/bpb per group
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gptexp.report.values import final_values, finite, group_key
from gptexp.tracking import RunRecord


@dataclass
class GroupStat:
    """Final `metric` of the completed runs sharing one value of a spec field."""

    value: str
    run_ids: list[str]  # completed runs with a finite final metric: the ones counted
    values: list[float]
    excluded: list[str]  # runs of the group left out (not completed, or no final metric)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1) over runs/seeds; None below two runs."""
        return statistics.stdev(self.values) if len(self.values) >= 2 else None


def group_stats(records: Iterable[RunRecord], by: str, metric: str = "val/bpb") -> list[GroupStat]:
    """Group runs by spec field `by` (dotted path); mean ± std of final `metric` per group.

    Only completed runs count: the last value of a crashed or pruned run is not a final value.
    Groups are sorted by value, numerically when every value is a number.
    """
    groups: dict[str, GroupStat] = {}
    for record in records:
        key = group_key(record.field(by))
        stat = groups.setdefault(key, GroupStat(key, [], [], []))
        value = finite(final_values(record)[metric]) if record.status == "completed" else None
        if value is None:
            stat.excluded.append(record.run_id)
        else:
            stat.run_ids.append(record.run_id)
            stat.values.append(value)
    keys = list(groups)
    try:
        keys.sort(key=float)
    except ValueError:
        keys.sort()
    return [groups[key] for key in keys]

