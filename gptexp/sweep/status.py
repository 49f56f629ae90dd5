"""What `gptexp sweep status` shows, as plain data (its --json output is this module's dicts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gptexp.sweep.storage import open_storage
from gptexp.redaction import redact_data
from gptexp.tracking import read_json


def format_params(params: dict[str, Any], separator: str = " ") -> str:
    def short(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return separator.join(f"{key}={short(value)}" for key, value in params.items())


def trial_error(trial: FrozenTrial) -> str | None:
    if trial.state != TrialState.FAIL:
        return None
    if "error" in trial.user_attrs:
        return str(trial.user_attrs["error"])
    if trial.user_attrs.get("interrupted"):
        return "interrupted"
    return "worker lost (no heartbeat)"


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    duration = (trial.datetime_complete - trial.datetime_start).total_seconds() \
        if trial.datetime_complete and trial.datetime_start else None
    return {
        "number": trial.number,
        "state": trial.state.name,
        "params": trial.params,
        "value": trial.value,
        "run_id": trial.user_attrs.get("run_id"),
        "run_dir": trial.user_attrs.get("run_dir"),
        "steps": trial.user_attrs.get("steps"),
        "duration_s": duration,
        "retry_of": trial.system_attrs.get("failed_trial"),
        "error": trial_error(trial),
    }


def study_status(storage_url: str, study_name: str) -> dict[str, Any]:
    """Everything `gptexp sweep status` shows, as plain data (the --json output)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    # Trial errors and user attrs may quote the URL: the whole document is redacted, not one field.
    return redact_data({
        "study": study_name,
        "storage": storage_url,
        "direction": study.direction.name.lower(),
        "metric": study.user_attrs.get("metric"),
        "counts": counts,
        "trials": [trial_row(t) for t in trials],
        "best": trial_row(best) if best is not None else None,
    }, known=[storage_url])


def study_names(storage_url: str) -> list[tuple[str, int]]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    summaries = optuna.get_all_study_summaries(storage=open_storage(storage_url), include_best_trial=False)
    return [(s.study_name, s.n_trials) for s in summaries]


def read_trial_summary(trial: FrozenTrial) -> dict[str, Any]:
    """The summary.json of a trial's run ({} if it has none)."""
    run_dir = trial.user_attrs.get("run_dir")
    return (read_json(Path(run_dir) / "summary.json") or {}) if run_dir else {}
