"""Which runs may be compared, and how: spec fields that differ, groups of runs that differ in the seed alone.

    differing_fields(records)                      # ["optim.lr", "seed"]: the resolved-spec fields that differ
    group_stats(records, by="tokenizer.kind")      # mean ± std of final val/bpb per group of like runs
    check_field("optim.lr", records)               # UnknownFieldError naming the nearest valid paths

A mean ± std is taken only over runs whose resolved specs differ in the seed alone (and in the
fields the user names with `ignore`): runs that share a `by` value but differ in anything else are
split into separate groups, each labelled by the fields that tell it apart, never averaged.
"""

from __future__ import annotations

import difflib
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptexp import contract as C
from gptexp.report.values import best_values, final_values, finite, group_key
from gptexp.tracking import RunRecord

SEED = "seed"
# Fields that never make two runs different experiments: a label, where results go, how nodes meet.
NOT_COMPARED = ("name", "tracking", "launch.run_id", "launch.rdzv_endpoint")


class UnknownFieldError(ValueError):
    """A dotted spec path that no run has; the message names the nearest valid paths."""


def flat_spec(spec: Any, prefix: str = "") -> dict[str, Any]:
    """A nested spec as dotted leaf paths: `{"optim": {"lr": 0.001}, "seed": 1} -> {"optim.lr": 0.001, "seed": 1}`.

    Lists are values (`optim.betas: [0.9, 0.95]`); an empty mapping is a value too.
    """
    if not isinstance(spec, dict) or (not spec and prefix):
        return {prefix: spec}
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        flat.update(flat_spec(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _covered(path: str, prefixes: Iterable[str]) -> bool:
    """`path` is one of `prefixes` or lies under one: `_covered("tracking.wandb.tags", ["tracking"]) -> True`."""
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def field_paths(records: Iterable[RunRecord]) -> list[str]:
    """Every dotted leaf path of the runs' resolved specs, in spec order."""
    paths: dict[str, None] = {}
    for record in records:
        paths.update(dict.fromkeys(flat_spec(record.spec)))
    return list(paths)


def check_field(path: str, records: Sequence[RunRecord], flag: str = "--by") -> None:
    """Raise UnknownFieldError unless `path` is (or holds) a field of at least one run's spec."""
    paths = field_paths(records)
    if _covered_by_any(path, paths):
        return
    nearest = difflib.get_close_matches(path, paths, n=3, cutoff=0.5) or \
        difflib.get_close_matches(path.rsplit(".", 1)[-1], [p.rsplit(".", 1)[-1] for p in paths], n=3, cutoff=0.6)
    if nearest and not all(n in paths for n in nearest):  # matched on the last part: show whole paths
        nearest = [p for p in paths if p.rsplit(".", 1)[-1] in nearest][:3]
    hint = f"; did you mean {', '.join(nearest)}?" if nearest else f"; fields look like {', '.join(paths[:3])}"
    raise UnknownFieldError(f"{flag} {path!r}: no run's spec has this field{hint}")


def _covered_by_any(path: str, paths: Iterable[str]) -> bool:
    return any(p == path or p.startswith(path + ".") for p in paths)


def differing_fields(records: Sequence[RunRecord], leave_out: Iterable[str] = ()) -> list[str]:
    """The dotted spec paths whose values are not the same in every run (a missing field is None),
    in spec order, leaving out `leave_out` and everything under it."""
    leave_out = list(leave_out)
    flats = [flat_spec(r.spec) for r in records]
    paths = [p for p in field_paths(records) if not _covered(p, leave_out)]
    return [p for p in paths if len({_hashable(flat.get(p)) for flat in flats}) > 1]


def _hashable(value: Any) -> Any:
    """A value as a dict key: lists become tuples, so `[0.9, 0.95]` compares by content."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def show(value: Any) -> str:
    """A spec value in a label or table cell: `None -> '—'` (unset), `[0.9, 0.95] -> '[0.9, 0.95]'`, `True -> 'true'`."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@dataclass
class GroupStat:
    """Final `metric` of the completed runs sharing one value of a spec field."""

    value: str
    run_ids: list[str]  # completed runs with a finite final metric: the ones counted
    values: list[float]
    excluded: list[str]  # runs of the group left out (not completed, or no final metric)
    # The fields (other than `by`, the seed and ignored ones) that tell this group apart from the
    # other groups of the same value; empty unless runs of one value had to be split.
    setting: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """`bpe`, or `bpe (optim.lr=0.003, train.max_steps=400)` for one part of a split value."""
        if not self.setting:
            return self.value
        return f"{self.value} (" + ", ".join(f"{k}={show(v)}" for k, v in self.setting.items()) + ")"

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


def group_stats(records: Iterable[RunRecord], by: str, metric: str = C.VAL_BPB,
                ignore: Sequence[str] = ()) -> list[GroupStat]:
    """Group runs by spec field `by` (dotted path); mean ± std of final `metric` per group.

    Runs of one `by` value whose specs differ in more than the seed (and `ignore`) are split into
    separate groups labelled by the fields that differ: a mean never mixes unlike runs. Only
    completed runs count: the last value of a crashed or pruned run is not a final value.
    Groups are sorted by value, numerically when every value is a number, then by label.
    """
    records = list(records)
    leave_out = [SEED, by, *NOT_COMPARED, *ignore]
    settings = {r.run_id: {p: v for p, v in flat_spec(r.spec).items() if not _covered(p, leave_out)}
                for r in records}
    by_value: dict[str, list[RunRecord]] = {}
    for record in records:
        by_value.setdefault(group_key(record.field(by)), []).append(record)
    stats: list[GroupStat] = []
    for value, members in by_value.items():
        apart = differing_fields_of([settings[r.run_id] for r in members])
        parts: dict[Any, GroupStat] = {}
        for record in members:
            setting = {p: settings[record.run_id].get(p) for p in apart}
            stat = parts.setdefault(_hashable(setting), GroupStat(value, [], [], [], setting))
            final = finite(final_values(record)[metric]) if record.status == C.COMPLETED else None
            if final is None:
                stat.excluded.append(record.run_id)
            else:
                stat.run_ids.append(record.run_id)
                stat.values.append(final)
        stats += parts.values()
    try:
        stats.sort(key=lambda s: (float(s.value), s.label))
    except ValueError:
        stats.sort(key=lambda s: (s.value, s.label))
    return stats


def differing_fields_of(flats: Sequence[dict[str, Any]]) -> list[str]:
    """The keys whose values differ among flat specs: `[{"a": 1, "b": 2}, {"a": 1, "b": 3}] -> ["b"]`."""
    keys: dict[str, None] = {}
    for flat in flats:
        keys.update(dict.fromkeys(flat))
    return [k for k in keys if len({_hashable(flat.get(k)) for flat in flats}) > 1]


def across_groups(records: Sequence[RunRecord], by: str, ignore: Sequence[str] = ()) -> list[str]:
    """Fields besides `by` (and the seed, and `ignore`) in which the runs being compared differ:
    what a reader must know before believing that `by` alone explains the gap.

    Grouping by a section's `kind` leaves out the rest of that section: a char and a BPE tokenizer
    necessarily differ in their vocabulary (runs of one kind that differ there are split instead).
    """
    section = [by.rsplit(".", 1)[0]] if by.endswith(".kind") else []
    return differing_fields(records, leave_out=[SEED, by, *section, *NOT_COMPARED, *ignore])


TOKENIZER_QUESTION = "Does a BPE tokenizer beat a character tokenizer? Compared on bits per byte (val/bpb)."


def _listed(paths: Sequence[str], most: int = 4) -> str:
    """`["a", "b"] -> "a and b"`; more than `most` end in "and N more"."""
    shown = list(paths[:most]) + ([f"{len(paths) - most} more"] if len(paths) > most else [])
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def describe(records: Sequence[RunRecord], by: str | None = None, study: str | None = None,
             ignore: Sequence[str] = ()) -> tuple[str, str]:
    """A title and a lead sentence that say what these runs compare, derived from their specs.

    The BPE-vs-char question leads only when the runs differ in tokenizer.kind.
        3 runs differing in optim.lr -> ("val/bpb across optim.lr (3 runs)", "3 runs that differ in optim.lr, ...")
    """
    n = len(records)
    differs = differing_fields(records, leave_out=[*NOT_COMPARED, *ignore])
    named = [p for p in differs if p != SEED]
    seeds = f" over {len({show(r.field(SEED)) for r in records})} seeds" if SEED in differs else ""
    if study is not None:
        title = f"Study {study}: {n} trial run(s) on val/bpb"
    elif by is not None:
        title = f"val/bpb by {by} ({n} runs{seeds})"
    elif named:
        title = f"val/bpb across {_listed(named, 3)} ({n} runs{seeds})"
    elif n == 1:
        title = f"Run {records[0].run_id}: val/bpb"
    else:
        names = sorted({r.name for r in records})
        title = f"{names[0] if len(names) == 1 else f'{n} runs'}: val/bpb{seeds or ' of identical specs'}"
    if "tokenizer.kind" in differs:
        lead = TOKENIZER_QUESTION
    elif named:
        lead = f"{n} runs that differ in {_listed(named)}{seeds}, compared on bits per byte (val/bpb)."
    elif n > 1:
        lead = f"{n} runs of one configuration{seeds}, compared on bits per byte (val/bpb)."
    else:
        lead = "One run, measured in bits per byte (val/bpb)."
    return title, lead


# The metrics rows of `gptexp diff`: label -> where the value comes from.
DIFF_METRICS = ("status", C.VAL_BPB, C.SUMMARY_BEST_BPB, C.SUMMARY_BEST_STEP, C.VAL_LOSS, C.VAL_ACC,
                C.SUMMARY_STEPS, C.SUMMARY_WALL_TIME)


def run_diff(records: Sequence[RunRecord]) -> dict[str, Any]:
    """What differs between runs: every resolved-spec field whose values are not all equal (one
    value per run, in order), then their final and best metrics. The form of `gptexp diff --json`.

        {"runs": ["a", "b"], "fields": {"optim.lr": [0.001, 0.003]}, "metrics": {"val/bpb": [2.1, 2.0], ...}}
    """
    fields = differing_fields(records)
    metrics: dict[str, list[Any]] = {key: [] for key in DIFF_METRICS}
    for record in records:
        rows = record.metrics()
        values = {**final_values(record, rows), **best_values(record, rows), "status": record.status}
        for key in DIFF_METRICS:
            value = values.get(key)
            metrics[key].append(None if isinstance(value, float) and not finite(value) else value)
    return {"runs": [r.run_id for r in records],
            "fields": {f: [r.field(f) for r in records] for f in fields},
            "metrics": metrics}
