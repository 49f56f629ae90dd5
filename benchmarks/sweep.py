"""Sweep benchmark: what a trial costs besides training, and what the median pruner saves.

    python benchmarks/sweep.py [--n-trials 16] [--workers 2] [--sweep sweeps/smoke.yaml]

Runs the sweep twice in a temporary runs directory (default storage, SQLite), once with
`pruner: none` and once with the sweep's median pruner, same sampler and seed, and prints a
Markdown report:

- per-trial overhead = trial wall time (Optuna's datetime_start .. datetime_complete) minus the
  run's train_time_s (summary.json), split into launch (trial wall time minus the run's own
  wall_time_s: data cache, torchrun, Python and torch imports) and in-run (wall_time_s minus
  train_time_s: model set-up, evals, checkpoints, the pruning bridge);
- training steps summed over trials, with and without pruning, and the best value each reached.

Not part of the test suite; the machine is shared, so compare numbers taken in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from gptexp.sweep.spec import load_sweep_spec  # noqa: E402
from gptexp.sweep.runner import Sweep, open_study  # noqa: E402
from gptexp.sweep.status import read_trial_summary  # noqa: E402


def run_sweep(path: Path, runs_dir: Path, pruner: str | None, n_trials: int, workers: int, study: str) -> dict:
    overrides = [f"n_trials={n_trials}", f"workers={workers}"]
    if pruner == "none":
        overrides.append("pruner={kind: none}")
    spec = load_sweep_spec(path, overrides)
    spec.study = study
    started = time.perf_counter()
    result = Sweep(spec, runs_dir, log=lambda m: print(f"  [{study}] {m}", file=sys.stderr, flush=True)).run()
    wall = time.perf_counter() - started
    trials = open_study(spec, result.storage_url).get_trials(deepcopy=False)
    rows = []
    for trial in trials:
        summary = read_trial_summary(trial)
        if not summary or trial.datetime_complete is None:
            continue
        trial_wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        rows.append({
            "number": trial.number, "state": trial.state.name, "value": trial.value,
            "steps": summary["steps"], "trial_wall": trial_wall,
            "run_wall": summary["wall_time_s"], "train": summary["train_time_s"],
        })
    complete = [r["value"] for r in rows if r["state"] == "COMPLETE"]
    return {"study": study, "wall": wall, "rows": rows, "exit": result.exit_code,
            "best": min(complete) if complete else None,
            "steps": sum(r["steps"] for r in rows),
            "pruned": sum(r["state"] == "PRUNED" for r in rows)}


BRIDGE_PROBE = """
import time
t0 = time.perf_counter()
from gptexp.sweep.pruning import PruningBridge
bridge = PruningBridge.from_environment(is_main=True)
t1 = time.perf_counter()
for step in range(1, 21):
    bridge.should_prune(10 * step, {"val/bpb": 3.0})
print(t1 - t0, (time.perf_counter() - t1) / 20)
"""


def bridge_cost(runs_dir: Path, repeats: int = 3) -> tuple[float, float]:
    """Seconds for rank 0's PruningBridge.from_environment (in a fresh process) and per report."""
    import json
    import os
    import subprocess

    import optuna

    from gptexp.sweep.storage import default_storage_url, open_storage

    url = default_storage_url(runs_dir)
    study = optuna.create_study(study_name=f"bridge-probe-{time.time_ns()}", storage=open_storage(url))
    setups, reports = [], []
    for _ in range(repeats):
        trial = study.ask()
        env = {**os.environ, "GPTEXP_OPTUNA_STORAGE": url, "GPTEXP_STUDY": study.study_name,
               "GPTEXP_TRIAL_ID": str(trial._trial_id), "GPTEXP_PRUNER": json.dumps({"kind": "median"}),
               "PYTHONPATH": str(REPO_ROOT)}
        out = subprocess.run([sys.executable, "-c", BRIDGE_PROBE], env=env, capture_output=True, text=True, check=True)
        setup, report = map(float, out.stdout.split())
        setups.append(setup)
        reports.append(report)
        study.tell(trial, 1.0)
    return statistics.median(setups), statistics.median(reports)


def stats(values: list[float]) -> str:
    return (f"{statistics.median(values):.2f} (mean {statistics.mean(values):.2f}, "
            f"min {min(values):.2f}, max {max(values):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=REPO_ROOT / "sweeps" / "smoke.yaml")
    parser.add_argument("--n-trials", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    tag = time.strftime("%H%M%S")
    with tempfile.TemporaryDirectory(prefix="gptexp-sweep-bench-") as tmp:
        runs_dir = Path(tmp) / "runs"
        results = [run_sweep(args.sweep, runs_dir, pruner, args.n_trials, args.workers, f"bench-{name}-{tag}")
                   for pruner, name in (("none", "nopruner"), (None, "median"))]
        bridge_setup, bridge_report = bridge_cost(runs_dir)

    rows = [r for result in results for r in result["rows"]]
    print(f"sweep {args.sweep.relative_to(REPO_ROOT) if args.sweep.is_relative_to(REPO_ROOT) else args.sweep}, "
          f"{args.n_trials} trials, {args.workers} workers, {len(rows)} trials measured\n")
    print("| per-trial seconds | median (mean, min, max) |")
    print("|---|---|")
    print(f"| overhead = trial wall - train_time_s | {stats([r['trial_wall'] - r['train'] for r in rows])} |")
    print(f"| launch = trial wall - run wall_time_s | {stats([r['trial_wall'] - r['run_wall'] for r in rows])} |")
    print(f"| in-run = run wall_time_s - train_time_s | {stats([r['run_wall'] - r['train'] for r in rows])} |")
    print(f"| train_time_s | {stats([r['train'] for r in rows])} |")
    print(f"| pruning bridge set-up on rank 0 (import optuna, open SQLite, load study, Trial) | {bridge_setup:.3f} |")
    print(f"| pruning bridge report + should_prune, per eval | {bridge_report:.4f} |")
    print()
    print("| pruner | trials complete / pruned | training steps (sum) | best val/bpb | sweep wall s |")
    print("|---|---|---|---|---|")
    for result, name in zip(results, ("none", "median")):
        n = len(result["rows"])
        best = f"{result['best']:.4f}" if result["best"] is not None else "-"
        print(f"| {name} | {n - result['pruned']} / {result['pruned']} | {result['steps']} | {best} | {result['wall']:.0f} |")
    saved = results[0]["steps"] - results[1]["steps"]
    print(f"\nmedian pruner saved {saved} of {results[0]['steps']} training steps "
          f"({100 * saved / max(results[0]['steps'], 1):.0f}%)")


if __name__ == "__main__":
    main()
