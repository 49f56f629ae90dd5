"""Sweeps: an Optuna study whose trials are gptexp runs.

Modules: `spec` (the sweep file, SweepSpec, load_sweep_spec), `storage` (URLs, opening a storage,
the cross-process gate), `runner` (the Sweep loop), `status` (`gptexp sweep status`), `pruning`
(the bridge from a trial's trainer to its Optuna trial). This module imports nothing heavy.

`gptexp sweep SWEEP` creates the study, or loads it (`load_if_exists`), and runs trials until the
study holds `n_trials` of them. Each trial samples the space (`suggest`, the one place the YAML
space turns into `trial.suggest_*`), builds its experiment by overrides on the base spec, and is
launched by `launch.start_run` as a normal run: its own run directory, its output in
`<run_dir>/output.log`, W&B group = study name, tags `study:<name>` and `trial:<n>`. The trial's
value is the run's final metric from summary.json; user attrs `run_id` and `run_dir` point to it.

n_trials is a TOTAL: a second `gptexp sweep` on the same study resumes it and adds trials up to
n_trials (raise n_trials to add more). Every trial counts once, whatever its end (complete, pruned,
failed), except a failed trial that was queued again: its retry counts in its place. Several
processes may work on one study: a gate (a PostgreSQL advisory lock, a file lock for SQLite, plus a
thread lock) makes "count, then create or take a trial" atomic, so the study never overshoots, and
a process leaves only when no trial of the study is still running anywhere (it waits, so a trial
whose worker died is failed after its grace period and its retry is run here).

Failures. A run that fails (exit 1) makes its trial FAIL with the run's redacted error in the
`error` user attr; bad input (exit 2) too. Failed runs are queued again with the same params up to
`retries` times, and so are trials whose worker died (SIGKILL, lost machine): the storage's
heartbeat (heartbeat_interval, grace_period; RDBStorage only, inside `study.optimize`) lets the
next process fail them, and the stale-trial callback queues them again. The retry protocol is
Optuna's RetryHeartbeatStaleTrialCallback's (system attrs `failed_trial`, `retry_history`), except
that the dead run's user attrs are not copied. Ctrl-C (SIGINT/SIGTERM) is forwarded once to every
running torchrun; those runs checkpoint and stop, their trials end FAIL with `interrupted` and are
queued again (not counted against `retries`), and `gptexp sweep` exits 130 (143). Run it again to
resume.

Storage. Default: SQLite at `<runs_dir>/optuna.db` (WAL journal, 60 s busy timeout, heartbeats).
It serves any --workers in one process and the trial processes' pruning reports on the same
machine; several `gptexp sweep` processes on one machine also work (file lock), but SQLite needs a
local filesystem (no NFS) and serializes every write, so for several machines or many workers use
PostgreSQL: `--storage postgresql+psycopg://user:pw@host/db` (`pip install gptexp[postgres]`), or,
on a cluster with a shared filesystem and no database server, a journal file:
`--storage journal:///shared/path/study.journal` (Optuna's JournalStorage; storage.py). A journal
has no heartbeats: a RUNNING trial is failed and queued again once its run directory is no longer
locked (the launcher's and trainer's OS locks, gptexp.runlock) and its sweep process is gone
(runner.fail_orphaned_trials). The URL travels to trials only in the environment (GPTEXP_OPTUNA_STORAGE), never in
a spec, run directory, log or W&B config; printed URLs are redacted.

Workers. `--workers K` runs K trials at once (threads, each waiting on its own torchrun). If
K × launch.nproc exceeds this machine's CPUs, each trial's nproc is lowered to max(1, CPUs // K),
and OMP_NUM_THREADS is set to max(1, CPUs // (K × nproc)) so trials do not fight over cores.
"""

