"""The pruning bridge: a sweep trial's trainer reports its evals to the Optuna trial it runs for.

A trial is a launched run (`gptexp sweep` → launch → torchrun → trainer); the bridge between the
study and the trainer is the storage, not a Python object. The sweep passes everything through the
environment of the run (never through the spec, the run directory or W&B):

    GPTEXP_OPTUNA_STORAGE   storage URL (may hold a password: env only)
    GPTEXP_STUDY            study name              GPTEXP_TRIAL      trial number (summary.json)
    GPTEXP_TRIAL_ID         the storage's trial id  GPTEXP_METRIC     metric reported, e.g. val/bpb
    GPTEXP_PRUNER           the sweep's pruner as JSON ({"kind": "median", "n_startup_trials": 5, ...})

Optuna does not store the pruner with the study, so rank 0 rebuilds the sweep's pruner from
GPTEXP_PRUNER, loads the study and reaches the trial with `optuna.trial.Trial(study, trial_id)`.
Other ranks never import optuna nor open a connection; the trainer broadcasts rank 0's decision.
Steps are training steps: n_warmup_steps, interval_steps, min_resource and max_resource count them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from gptexp import contract as C
from gptexp.redaction import redact
from gptexp.sweep.storage import open_storage

# The environment names are the contract's (defined once in gptexp.contract).
ENV_STORAGE = C.ENV_OPTUNA_STORAGE
ENV_STUDY, ENV_TRIAL, ENV_TRIAL_ID = C.ENV_STUDY, C.ENV_TRIAL, C.ENV_TRIAL_ID
ENV_METRIC, ENV_PRUNER = C.ENV_METRIC, C.ENV_PRUNER

def build_pruner(settings: dict[str, Any]) -> Any:  # -> optuna.pruners.BasePruner
    """The Optuna pruner for a PrunerSpec dump: `{"kind": "median", "n_startup_trials": 2}` -> MedianPruner."""
    import optuna

    settings = dict(settings)
    kind = settings.pop("kind", "median")
    if kind == "median":
        return optuna.pruners.MedianPruner(**settings)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**settings)
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner kind {kind!r}")


class PruningBridge:
    """Rank 0: report `metrics[metric]` at every eval and ask the trial whether to stop."""

    def __init__(self, trial: Any | None, metric: str) -> None:
        self.trial = trial  # optuna.trial.Trial on rank 0, None elsewhere
        self.metric = metric

    @classmethod
    def from_environment(cls, is_main: bool) -> PruningBridge:
        metric = os.environ.get(ENV_METRIC, C.VAL_BPB)
        if not is_main:
            return cls(None, metric)  # no DB connection on other ranks
        missing = [name for name in (ENV_STORAGE, ENV_STUDY, ENV_TRIAL_ID) if not os.environ.get(name)]
        if missing:
            raise RuntimeError(f"sweep trial without {', '.join(missing)} in the environment")
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            storage = open_storage(os.environ[ENV_STORAGE])
            study = optuna.load_study(
                study_name=os.environ[ENV_STUDY],
                storage=storage,
                # The sampler is not used here; a random one keeps Trial() from fitting TPE.
                sampler=optuna.samplers.RandomSampler(),
                pruner=build_pruner(json.loads(os.environ.get(ENV_PRUNER) or '{"kind": "median"}')),
            )
            trial = optuna.trial.Trial(study, int(os.environ[ENV_TRIAL_ID]))
        except Exception as error:  # noqa: BLE001 - never let the URL reach a log or status.json
            raise RuntimeError(f"cannot reach the sweep's trial: {redact(f'{type(error).__name__}: {error}')}") from None
        return cls(trial, metric)

    def should_prune(self, step: int, metrics: dict[str, float]) -> bool:
        """Report the metric at `step`; True if the study's pruner says stop. Never raises."""
        if self.trial is None:
            return False
        for attempt in range(3):
            try:
                self.trial.report(float(metrics[self.metric]), step)
                return bool(self.trial.should_prune())
            except Exception as error:  # noqa: BLE001 - a storage hiccup must not kill the run
                message = redact(f"{type(error).__name__}: {error}")
                time.sleep(0.5 * (attempt + 1))
        print(f"pruning bridge: could not report step {step} ({message}); going on unpruned", file=sys.stderr, flush=True)
        return False
