"""Names and numbers that processes and files agree on, each defined exactly once.

Everything here crosses a process or file boundary: metric names (metrics.jsonl, summary.json,
W&B), summary keys, run statuses (status.json), exit codes (the CLI and its callers: sweeps, Slurm,
Kubernetes) and the GPTEXP_* environment variables the launcher, the sweep and the workers read.
Import from here; never spell these strings or numbers elsewhere. This module imports nothing
heavy, so the CLI can use it for free.
"""

from __future__ import annotations

from typing import Final

# ---------------------------------------------------------------------------------------------
# metrics (rows of metrics.jsonl, keys of summary.json, W&B history)

TRAIN_LOSS: Final = "train/loss"  # mean cross-entropy per predicted token (nats)
VAL_LOSS: Final = "val/loss"
VAL_BPB: Final = "val/bpb"  # bits per UTF-8 byte: the only metric comparable across tokenizers
VAL_ACC: Final = "val/acc"  # top-1 over predicted (MLM: masked) tokens
VAL_METRICS: Final = (VAL_LOSS, VAL_BPB, VAL_ACC)
LR: Final = "lr"
DROPOUT: Final = "dropout"
TOKENS_PER_SEC: Final = "tokens_per_sec"
MFU: Final = "mfu"  # model FLOPs utilisation on CUDA devices of known peak (gptexp/mfu.py); absent elsewhere
TOKENS_SEEN: Final = "tokens_seen"
BYTES_SEEN: Final = "bytes_seen"
STEP: Final = "step"
TIME: Final = "time"

# summary.json keys besides the final metrics above. Values are strict JSON: a metric that is not
# finite (NaN, ±inf) is written as null, never as a bare NaN that strict parsers reject.
SUMMARY_RUN_ID: Final = "run_id"
SUMMARY_NAME: Final = "name"
SUMMARY_STATUS: Final = "status"
SUMMARY_GROUP: Final = "group"
SUMMARY_WORLD_SIZE: Final = "world_size"
SUMMARY_PARAMETERS: Final = "parameters"
SUMMARY_STEPS: Final = "steps"
SUMMARY_MAX_STEPS: Final = "max_steps"
SUMMARY_WALL_TIME: Final = "wall_time_s"
SUMMARY_TRAIN_TIME: Final = "train_time_s"
SUMMARY_BEST_BPB: Final = "best/val/bpb"
SUMMARY_BEST_STEP: Final = "best/step"
SUMMARY_GIT_COMMIT: Final = "git_commit"
SUMMARY_VERSIONS: Final = "versions"
SUMMARY_STUDY: Final = "study"
SUMMARY_TRIAL: Final = "trial"
SUMMARY_CORPUS_SHA256: Final = "corpus_sha256"

# ---------------------------------------------------------------------------------------------
# run statuses (status.json "status") and exit codes

RUNNING: Final = "running"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
PRUNED: Final = "pruned"
INTERRUPTED: Final = "interrupted"
CRASHED: Final = "crashed"  # never stored: a "running" run whose processes are gone reads as crashed
RUN_STATUSES: Final = (RUNNING, COMPLETED, FAILED, PRUNED, INTERRUPTED, CRASHED)
FINISHED_STATUSES: Final = (COMPLETED, PRUNED)  # nothing left to resume

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_PRUNED: Final = 3
EXIT_SIGINT: Final = 130  # 128 + SIGINT, the shell convention
EXIT_SIGTERM: Final = 143  # 128 + SIGTERM

SIGINT_NAME: Final = "SIGINT"
SIGTERM_NAME: Final = "SIGTERM"


def exit_code_for_status(status: str, signal_name: str | None = None) -> int:
    """The process exit code for a run's outcome: the one mapping trainer, launcher and sweep use."""
    if status == COMPLETED:
        return EXIT_OK
    if status == PRUNED:
        return EXIT_PRUNED
    if status == INTERRUPTED:
        return EXIT_SIGINT if signal_name == SIGINT_NAME else EXIT_SIGTERM
    return EXIT_FAILED


# ---------------------------------------------------------------------------------------------
# environment variables

ENV_RUNS_DIR: Final = "GPTEXP_RUNS_DIR"  # default --runs-dir
ENV_LAUNCHER_PID: Final = "GPTEXP_LAUNCHER_PID"  # workers stop when this process is gone
ENV_START_DIR: Final = "GPTEXP_START_DIR"  # where `gptexp` started: custom components import from there
ENV_RDZV_TIMEOUT: Final = "GPTEXP_RDZV_TIMEOUT"  # seconds a multi-node rendezvous may take to form
ENV_RDZV_PORT: Final = "GPTEXP_RDZV_PORT"  # generated Slurm scripts: rendezvous port
ENV_CONSOLE_LOG: Final = "GPTEXP_CONSOLE_LOG"  # rank 0 appends its console lines here (output.log)
ENV_REQUIRE_SERVICES: Final = "GPTEXP_REQUIRE_SERVICES"  # tests: a missing service fails, not skips
ENV_PEAK_TFLOPS: Final = "GPTEXP_PEAK_TFLOPS"  # dense bf16 peak of a GPU missing from gptexp/mfu.py's table
# sweep trials (the storage URL may hold a password: it travels in the environment only)
ENV_OPTUNA_STORAGE: Final = "GPTEXP_OPTUNA_STORAGE"
ENV_STUDY: Final = "GPTEXP_STUDY"
ENV_TRIAL: Final = "GPTEXP_TRIAL"
ENV_TRIAL_ID: Final = "GPTEXP_TRIAL_ID"
ENV_METRIC: Final = "GPTEXP_METRIC"
ENV_PRUNER: Final = "GPTEXP_PRUNER"

# ---------------------------------------------------------------------------------------------
# run directory file names (RunStore builds the paths)

SPEC_FILE: Final = "spec.yaml"
STATUS_FILE: Final = "status.json"
METRICS_FILE: Final = "metrics.jsonl"
SUMMARY_FILE: Final = "summary.json"
TOKENIZER_FILE: Final = "tokenizer.json"
LAUNCHES_FILE: Final = "launches.jsonl"  # one line per launch: command line, overrides, machine facts
OUTPUT_LOG: Final = "output.log"  # the run's console: launcher, torchrun and rank 0, every segment appended
CHECKPOINT_DIR: Final = "checkpoints"
LAST_CHECKPOINT: Final = "last.pt"
BEST_CHECKPOINT: Final = "best.pt"
LOCK_PREFIX: Final = ".lock"  # .lock-<slot>: one OS file lock per launcher that may write the run
