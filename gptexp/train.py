"""The Trainer: one process of a torchrun DDP job (`python -m gptexp.train --run-dir D`).

Lifecycle: set up (process group, data, model, optimizer, maybe a checkpoint) → train → save →
clean up. Rank 0 alone writes files and talks to W&B; other ranks get no tracker at all.

Reproducibility: the data windows, the masks and the dropout RNG of every (rank, step, micro-step)
are seeded from `step_seed(seed, rank, step, ...)`, not from a running RNG. A run resumed from a
checkpoint at step k therefore draws exactly what the uninterrupted run drew after step k.

Stopping: SIGINT/SIGTERM (forwarded by torchrun) and the death of the launcher set local flags;
the flags are summed across ranks with the step's one all_reduce, so every rank stops after the
same step, rank 0 writes a checkpoint, and the run is marked interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
import math
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gptexp import contract as C
from gptexp.checkpoint import CheckpointError, load_checkpoint, remove_stale_temp_files, save_checkpoint
from gptexp.data import PreparedData, TokenSplit, load_splits, sample_windows, step_seed
from gptexp.components import build_objective
from gptexp.models import build_model, num_parameters, set_dropout
from gptexp.objectives import metric_sums, metrics_from_sums, token_info
from gptexp.mfu import flops_per_token, mfu, peak_flops
from gptexp.optim import build_optimizer, dropout_rate, learning_rate
from gptexp.redaction import redact
from gptexp.runlock import RunInUse, RunLock, acquire_writer
from gptexp.spec import ExperimentSpec
from gptexp.tokenizers import load_tokenizer
from gptexp.tracking import NullLogger, RunStore, Tracker, WandbLogger, pid_alive, wandb_mode

# Streams of step_seed: independent random numbers for data/masking, dropout and evaluation.
DATA_STREAM, DROPOUT_STREAM, EVAL_STREAM = 0, 1, 2
# Indices into the per-step all_reduce vector.
LOSS, BYTES, SIGINT_FLAG, SIGTERM_FLAG, ORPHAN_FLAG, PRUNE_FLAG = range(6)


class RunFailed(RuntimeError):
    """The run cannot go on (NaN loss, bad data); rank 0 records it as failed."""


@dataclass
class DistContext:
    """DDP facts, detected once from torchrun's environment and passed down."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(spec: ExperimentSpec) -> DistContext:
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = spec.train.device == "cuda" or (spec.train.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    backend = spec.launch.backend if spec.launch.backend != "auto" else ("nccl" if use_cuda else "gloo")
    if "RANK" in os.environ:  # started by torchrun: always a process group, even of one
        dist.init_process_group(backend=backend)
    return DistContext(rank, local_rank, world_size, device, backend)


@dataclass
class Counters:
    """Progress that a checkpoint must carry besides the weights."""

    step: int = 0
    tokens_seen: int = 0
    bytes_seen: int = 0
    train_time_s: float = 0.0
    earlier_wall_time_s: float = 0.0  # wall time of the segments before a resume
    best_val_bpb: float = math.inf
    best_step: int = -1
    last_eval: dict[str, float] = field(default_factory=dict)
    last_train_loss: float = math.nan


class Trainer:
    def __init__(self, run_dir: Path, prepared: PreparedData, resume: bool) -> None:
        self.run_dir = run_dir
        self.store = RunStore(run_dir)
        self.spec = ExperimentSpec.model_validate(self.store.read_spec())
        self.prepared = prepared
        self.resume = resume
        self.counters = Counters()
        self.stop_flags = {SIGINT_FLAG: 0.0, SIGTERM_FLAG: 0.0}
        self.launcher_pid = int(os.environ.get(C.ENV_LAUNCHER_PID, "0")) or None
        self.started = time.time()
        self.is_main = int(os.environ.get("RANK", "0")) == 0
        self.tracker: Tracker | None = None
        self.stop_reason = ""
        self.writer_lock: RunLock | None = None

    # -- set up -----------------------------------------------------------------------------
    def setup(self) -> None:
        spec = self.spec
        self._install_signal_handlers()
        if self.is_main:
            # Held until this process exits: a launcher that finds it taken knows a trainer still
            # writes the run (workers outlive a killed launcher by up to a step).
            self.writer_lock = acquire_writer(self.run_dir)
        self.ctx = setup_distributed(spec)
        # Starting W&B (import + service start, about 0.8 s) overlaps with the rest of the set-up.
        self.logger_future = self._start_logger() if self.ctx.is_main else None
        self.tokenizer = load_tokenizer(self.prepared.tokenizer_path)
        self.splits: dict[str, TokenSplit] = load_splits(self.prepared, self.tokenizer)  # memory maps
        self.token_info = token_info(self.tokenizer)
        self.objective = build_objective(spec.objective)
        torch.manual_seed(spec.seed)  # identical initial weights on every rank (DDP also broadcasts)
        self.model = build_model(spec.model, self.tokenizer.vocab_size, causal=self.objective.causal).to(self.ctx.device)
        self.optimizer = build_optimizer(self.model, spec.optim, self.ctx.device.type)
        if self.ctx.is_main:
            remove_stale_temp_files(self.store.checkpoint_dir)  # left by a writer killed mid-save
        if self.resume and self.store.last_checkpoint.exists():
            self._load_checkpoint(self.store.last_checkpoint)
        wrapped: nn.Module = self.model
        if spec.train.compile is True or (spec.train.compile == "auto" and self.ctx.device.type == "cuda"):
            wrapped = torch.compile(wrapped)
        if self.ctx.distributed:
            device_ids = [self.ctx.local_rank] if self.ctx.device.type == "cuda" else None
            # The model's buffers (causal mask, RoPE tables) are constants: no per-step broadcast.
            # (forward_sync_buffers, not the deprecated broadcast_buffers that warns in every rank.)
            wrapped = DistributedDataParallel(wrapped, device_ids=device_ids, forward_sync_buffers=False)
        self.train_model = wrapped
        self.autocast_dtype = self._autocast_dtype()
        self.cuda = self.ctx.device.type == "cuda"
        # MFU (gptexp/mfu.py) where the device's peak is known; rank 0 logs it with tokens/s.
        self.flops_per_token = flops_per_token(num_parameters(self.model), getattr(spec.model, "n_layer", 0),
                                               getattr(spec.model, "block_size", 0), getattr(spec.model, "n_embd", 0))
        self.peak_flops = peak_flops(torch.cuda.get_device_name(self.ctx.device)) if self.cuda else None
        # The per-step flags go host -> device through one pinned buffer (no pageable copy, which
        # would wait for the GPU inside the step).
        self.flags_host = torch.zeros(6, dtype=torch.float64, pin_memory=self.cuda)
        self.tracker = self._make_tracker() if self.ctx.is_main else None
        self.pruner = self._make_pruning_bridge()

    def _autocast_dtype(self) -> torch.dtype | None:
        precision = self.spec.train.precision
        if precision == "bf16" or (precision == "auto" and self.ctx.device.type == "cuda"):
            return torch.bfloat16
        return None

    def _install_signal_handlers(self) -> None:
        def on_signal(signum: int, frame: Any) -> None:
            self.stop_flags[SIGINT_FLAG if signum == signal.SIGINT else SIGTERM_FLAG] = 1.0

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    def _start_logger(self) -> Future:
        spec = self.spec
        mode = wandb_mode(spec.tracking.wandb.mode)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandb-init")
        if mode == "disabled":
            future = executor.submit(NullLogger)
        else:
            wb = spec.tracking.wandb
            config = spec.model_dump(mode="json")
            if os.environ.get(C.ENV_TRIAL):  # a sweep trial: say which, for W&B's filters and tables
                config["sweep"] = {"study": os.environ.get(C.ENV_STUDY), "trial": int(os.environ[C.ENV_TRIAL])}
            future = executor.submit(WandbLogger, self.store, config=config, mode=mode,
                                     project=wb.project, entity=wb.entity, group=wb.group, tags=wb.tags, name=spec.name)
        executor.shutdown(wait=False)
        return future

    def _make_tracker(self) -> Tracker:
        logger = self.logger_future.result()
        if self.resume:
            self.store.truncate_metrics_after(self.counters.step)
        self.store.write_status(C.RUNNING, step=self.counters.step, worker_pid=os.getpid(), error=None,
                                world_size=self.ctx.world_size, launcher_pid=self.launcher_pid,
                                corpus_sha256=self.prepared.corpus_sha256 or None)
        return Tracker(self.store, logger)

    def _make_pruning_bridge(self) -> Any:
        if not os.environ.get(C.ENV_TRIAL):
            return None
        from gptexp.sweep.pruning import PruningBridge

        return PruningBridge.from_environment(is_main=self.ctx.is_main)

    # -- one step ---------------------------------------------------------------------------
    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A batch tensor on the device: on CUDA from pinned memory, without blocking the host."""
        if not self.cuda:
            return tensor.to(self.ctx.device)
        return tensor.pin_memory().to(self.ctx.device, non_blocking=True)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=self.autocast_dtype)

    def train_step(self, step: int) -> torch.Tensor:
        """One optimizer step (grad_accum micro-steps); returns the per-step all_reduce vector."""
        spec, ctx = self.spec, self.ctx
        lr = learning_rate(step, spec.optim, spec.train.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        base_dropout = getattr(spec.model, "dropout", 0.0)
        set_dropout(self.model, dropout_rate(step, spec.dropout_schedule, base_dropout, spec.train.max_steps))
        torch.manual_seed(step_seed(spec.seed, ctx.rank, step, stream=DROPOUT_STREAM))

        accum = spec.train.grad_accum
        loss_sum, bytes_sum = torch.zeros((), device=ctx.device), 0
        for micro in range(accum):
            generator = torch.Generator().manual_seed(step_seed(spec.seed, ctx.rank, step, micro, DATA_STREAM))
            window = sample_windows(self.splits["train"], spec.train.batch_size, spec.model.block_size + 1, generator)
            batch = self.objective.make_batch(window, self.token_info, generator)
            inputs, labels = self._to_device(batch.inputs), self._to_device(batch.labels)
            # Only the last micro-step all-reduces gradients; the others accumulate locally.
            skip_grad_sync = ctx.distributed and micro < accum - 1
            with self.train_model.no_sync() if skip_grad_sync else contextlib.nullcontext(), self._autocast():
                _, loss = self.train_model(inputs, labels)
                (loss / accum).backward()
            loss_sum += loss.detach().float()  # no host sync per micro-step
            bytes_sum += int(window.byte_counts[:, : spec.model.block_size].sum())
        if spec.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), spec.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

        orphaned = 1.0 if self.launcher_pid and not pid_alive(self.launcher_pid) else 0.0
        # The step's only host sync is flags.cpu() below, after the optimizer step: the loss and the
        # stop flags every rank must agree on. nccl reduces device tensors only.
        self.flags_host.copy_(torch.tensor([0.0, bytes_sum, self.stop_flags[SIGINT_FLAG],
                                            self.stop_flags[SIGTERM_FLAG], orphaned, 0.0], dtype=torch.float64))
        flags = self.flags_host.to(ctx.device, non_blocking=True) if self.cuda else self.flags_host.clone()
        flags[LOSS] = loss_sum.double() / accum
        if ctx.distributed:
            dist.all_reduce(flags)
        shared = flags.cpu()
        shared[LOSS] /= ctx.world_size
        return shared

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """val/loss, val/bpb, val/acc on the same eval_batches windows every time, summed over ranks."""
        spec, ctx = self.spec, self.ctx
        self.model.eval()
        generator = torch.Generator().manual_seed(step_seed(spec.seed, ctx.rank, 0, stream=EVAL_STREAM))
        totals = torch.zeros(4, dtype=torch.float64, device=ctx.device)
        for _ in range(spec.train.eval_batches):
            window = sample_windows(self.splits["val"], spec.train.batch_size, spec.model.block_size + 1, generator)
            batch = self.objective.make_batch(window, self.token_info, generator)
            with self._autocast():
                logits, _ = self.model(self._to_device(batch.inputs))
            totals += metric_sums(logits.float(), self._to_device(batch.labels), self._to_device(batch.label_bytes))
        if ctx.distributed:
            dist.all_reduce(totals)
        self.model.train()
        return metrics_from_sums(totals.cpu())

    # -- the loop ---------------------------------------------------------------------------
    def train(self) -> str:
        """Train until max_steps or a stop; returns the final status."""
        spec, counters = self.spec, self.counters
        tokens_per_step = spec.train.batch_size * spec.model.block_size * spec.train.grad_accum * self.ctx.world_size
        progress = TrainingProgress(spec.train.max_steps, counters.step, enabled=self.ctx.is_main)
        if counters.step == 0:
            self._log_eval(self.evaluate())
            progress.evaluated(counters.step, counters.last_eval, counters.best_val_bpb)
        # tokens/s counts training steps only (evals and checkpoints in between are left out)
        interval_time, interval_tokens = 0.0, 0
        status = C.COMPLETED
        with progress:
            while counters.step < spec.train.max_steps:
                step_start = time.perf_counter()
                shared = self.train_step(counters.step)
                step_time = time.perf_counter() - step_start
                counters.train_time_s += step_time
                interval_time += step_time
                counters.step += 1
                counters.tokens_seen += tokens_per_step
                counters.bytes_seen += int(shared[BYTES])
                counters.last_train_loss = float(shared[LOSS])
                interval_tokens += tokens_per_step
                if not math.isfinite(counters.last_train_loss):
                    raise RunFailed(f"train/loss became {counters.last_train_loss} at step {counters.step}")

                step, last = counters.step, counters.step == spec.train.max_steps
                if step % spec.train.log_every == 0 or last:
                    tokens_per_sec = interval_tokens / interval_time if interval_time > 0 else 0.0
                    self._log_train(tokens_per_sec)
                    progress.update(step, counters.last_train_loss, tokens_per_sec)
                    interval_time, interval_tokens = 0.0, 0
                if step % spec.train.eval_every == 0 or last:
                    metrics = self.evaluate()
                    self._log_eval(metrics)
                    progress.evaluated(step, metrics, counters.best_val_bpb)
                    if self.pruner is not None and self._should_prune(metrics):
                        status = C.PRUNED
                        break
                if shared[SIGINT_FLAG] or shared[SIGTERM_FLAG] or shared[ORPHAN_FLAG]:
                    status = C.INTERRUPTED
                    self.stop_reason = (C.SIGINT_NAME if shared[SIGINT_FLAG]
                                        else C.SIGTERM_NAME if shared[SIGTERM_FLAG] else "launcher gone")
                    break
                if step % spec.train.checkpoint_every == 0 and not last:
                    self.save_checkpoint()
        self.save_checkpoint()
        return status

    def _should_prune(self, metrics: dict[str, float]) -> bool:
        decision = torch.tensor([1.0 if self.ctx.is_main and self.pruner.should_prune(self.counters.step, metrics) else 0.0],
                                device=self.ctx.device)
        if self.ctx.distributed:
            dist.broadcast(decision, src=0)  # rank 0 asked the study; every rank follows its answer
        return bool(decision.item())

    def _row(self, **values: Any) -> dict[str, Any]:
        return {C.STEP: self.counters.step, C.TIME: round(time.time(), 3), **values,
                C.TOKENS_SEEN: self.counters.tokens_seen, C.BYTES_SEEN: self.counters.bytes_seen}

    def _log_train(self, tokens_per_sec: float) -> None:
        if self.tracker is None:
            return
        spec, step = self.spec, self.counters.step - 1  # lr/dropout of the step just taken
        self.tracker.log(self._row(**{
            C.TRAIN_LOSS: self.counters.last_train_loss,
            C.LR: learning_rate(step, spec.optim, spec.train.max_steps),
            C.DROPOUT: dropout_rate(step, spec.dropout_schedule, getattr(spec.model, "dropout", 0.0), spec.train.max_steps),
            C.TOKENS_PER_SEC: round(tokens_per_sec, 1),
            **self._mfu(tokens_per_sec),
        }))

    def _mfu(self, tokens_per_sec: float) -> dict[str, float]:
        """{mfu: fraction} on a device of known peak, {} elsewhere (tokens/s is over all ranks)."""
        value = mfu(tokens_per_sec, self.flops_per_token, self.ctx.world_size, self.peak_flops)
        return {C.MFU: round(value, 4)} if value is not None else {}

    def _log_eval(self, metrics: dict[str, float]) -> None:
        counters = self.counters
        counters.last_eval = metrics
        improved = metrics[C.VAL_BPB] < counters.best_val_bpb
        if improved:
            counters.best_val_bpb, counters.best_step = metrics[C.VAL_BPB], counters.step
        if self.tracker is None:
            return
        self.tracker.log(self._row(**metrics))
        self.store.write_status(C.RUNNING, step=counters.step)
        if improved and counters.step > 0:
            save_checkpoint({"step": counters.step, "model": self.model.state_dict(), C.VAL_BPB: metrics[C.VAL_BPB]},
                            self.store.best_checkpoint)

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Every rank calls this (RNG states are gathered); rank 0 writes last.pt atomically."""
        rng_state = torch.get_rng_state()
        if self.ctx.distributed:
            gathered: list[Any] = [None] * self.ctx.world_size
            dist.all_gather_object(gathered, rng_state)
        else:
            gathered = [rng_state]
        if not self.ctx.is_main:
            return
        c = self.counters
        state = {
            "step": c.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            # LR and dropout are pure functions of the step; the values are kept for inspection.
            "schedule": {"step": c.step, "lr": self.optimizer.param_groups[0]["lr"]},
            # Data windows and masks are drawn from step_seed(seed, rank, step): the step is the position.
            "data_position": {"step": c.step, "seed": self.spec.seed, "world_size": self.ctx.world_size},
            "rng": {"torch_per_rank": gathered,
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "counters": {"tokens_seen": c.tokens_seen, "bytes_seen": c.bytes_seen, "train_time_s": c.train_time_s,
                         "wall_time_s": self.wall_time(),
                         "best_val_bpb": c.best_val_bpb, "best_step": c.best_step,
                         "last_train_loss": c.last_train_loss},
            "last_eval": dict(c.last_eval),
        }
        save_checkpoint(state, self.store.last_checkpoint)
        self.store.write_status(C.RUNNING, step=c.step, checkpoint_step=c.step)

    def _load_checkpoint(self, path: Path) -> None:
        try:
            state = load_checkpoint(path)
        except CheckpointError as error:
            raise RunFailed(str(error)) from None
        if state["data_position"]["world_size"] != self.ctx.world_size:
            raise RunFailed(f"checkpoint was written with {state['data_position']['world_size']} ranks; "
                            f"resume with the same --nproc (now {self.ctx.world_size})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        per_rank = state["rng"]["torch_per_rank"]
        torch.set_rng_state(per_rank[self.ctx.rank])
        c = self.counters
        counters = state["counters"]
        c.step = int(state["step"])
        c.tokens_seen, c.bytes_seen = int(counters["tokens_seen"]), int(counters["bytes_seen"])
        c.train_time_s = float(counters["train_time_s"])
        c.earlier_wall_time_s = float(counters.get("wall_time_s", 0.0))  # absent in older checkpoints
        c.best_val_bpb, c.best_step = float(counters["best_val_bpb"]), int(counters["best_step"])
        c.last_train_loss = float(counters["last_train_loss"])
        c.last_eval = dict(state.get("last_eval", {}))

    # -- clean up ---------------------------------------------------------------------------
    def wall_time(self) -> float:
        """Seconds this run has trained in all its segments: earlier ones (up to their last
        checkpoint) plus this process's since it started."""
        return self.counters.earlier_wall_time_s + time.time() - self.started

    def summary(self, status: str) -> dict[str, Any]:
        c, spec = self.counters, self.spec
        wall = self.wall_time()
        trial = os.environ.get(C.ENV_TRIAL)
        return {
            C.SUMMARY_RUN_ID: self.store.run_id,
            C.SUMMARY_NAME: spec.name,
            C.SUMMARY_STATUS: status,
            C.SUMMARY_GROUP: spec.tracking.wandb.group,
            C.SUMMARY_WORLD_SIZE: self.ctx.world_size,
            C.SUMMARY_PARAMETERS: num_parameters(self.model),
            C.SUMMARY_STEPS: c.step,
            C.SUMMARY_MAX_STEPS: spec.train.max_steps,
            C.TOKENS_SEEN: c.tokens_seen,
            C.BYTES_SEEN: c.bytes_seen,
            C.SUMMARY_WALL_TIME: round(wall, 3),
            C.SUMMARY_TRAIN_TIME: round(c.train_time_s, 3),
            C.TOKENS_PER_SEC: round(c.tokens_seen / c.train_time_s, 1) if c.train_time_s else None,
            **(self._mfu(c.tokens_seen / c.train_time_s) if c.train_time_s else {}),
            C.TRAIN_LOSS: c.last_train_loss,
            **{k: v for k, v in c.last_eval.items()},
            C.SUMMARY_BEST_BPB: c.best_val_bpb,
            C.SUMMARY_BEST_STEP: c.best_step,
            C.SUMMARY_CORPUS_SHA256: self.prepared.corpus_sha256 or None,
            C.SUMMARY_GIT_COMMIT: git_commit(),
            C.SUMMARY_VERSIONS: package_versions(),
            C.SUMMARY_STUDY: os.environ.get(C.ENV_STUDY) or None,
            C.SUMMARY_TRIAL: int(trial) if trial else None,
        }

    def finish(self, status: str, error: str | None = None) -> None:
        """Rank 0: summary, W&B finish, then the final status (last, so 'completed' implies the rest)."""
        if not self.is_main:
            return
        fields: dict[str, Any] = {"step": self.counters.step, "error": error}
        if status == C.INTERRUPTED:
            fields["signal"] = self.stop_reason or C.SIGTERM_NAME
        if self.tracker is not None:
            exit_code = C.exit_code_for_status(status, fields.get("signal"))
            try:
                self.tracker.finish(self.summary(status), exit_code)
            finally:
                self.store.write_status(status, **fields)
        else:  # failed before the tracker existed (bad checkpoint, process group, ...)
            self.store.write_status(status, **fields)


class TrainingProgress:
    """A rich progress bar on a terminal; plain log lines otherwise (CI logs, files, pipes)."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.interactive = enabled and sys.stdout.isatty()
        self.log_path = os.environ.get(C.ENV_CONSOLE_LOG) if enabled else None
        self.started = time.perf_counter()
        self.start_step = start
        self.bar: Any = None
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(),
                                TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
                                TextColumn("eta"), TimeRemainingColumn())
            self.task = self.bar.add_task("train", total=total, completed=start, loss="-", speed="-")

    def __enter__(self) -> TrainingProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, step: int, loss: float, tokens_per_sec: float) -> None:
        if not self.enabled:
            return
        done = step - self.start_step
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.total - step) if done else 0.0
        line = f"step {step}/{self.total} | loss {loss:.4f} | {tokens_per_sec:,.0f} tok/s | eta {eta:.0f}s"
        self._keep(line)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", speed=f"{tokens_per_sec:,.0f}")
        else:
            print(line, flush=True)

    def _keep(self, line: str) -> None:
        """Append a console line to the run's output.log (when the launcher asked for it)."""
        if self.log_path is None:
            return
        try:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(line + "\n")
        except OSError:
            self.log_path = None  # a full disk must not stop training; metrics.jsonl has the numbers

    def evaluated(self, step: int, metrics: dict[str, float], best_bpb: float) -> None:
        """One line per eval: the numbers that matter, val/bpb first among them, and the best so far."""
        if not self.enabled:
            return
        line = (f"eval step {step}/{self.total} | val/loss {metrics[C.VAL_LOSS]:.4f} | val/bpb {metrics[C.VAL_BPB]:.4f}"
                f" | val/acc {metrics[C.VAL_ACC]:.4f} | best val/bpb {best_bpb:.4f}")
        self._keep(line)
        if self.bar is not None:
            self.bar.console.print(line, markup=False, highlight=False)  # above the bar, which stays
        else:
            print(line, flush=True)


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("gptexp", "torch", "numpy", "wandb", "optuna", "pydantic"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gptexp.train", description="One DDP worker of a gptexp run (started by torchrun).")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--tokenizer", required=True, type=Path)
    parser.add_argument("--tokens", required=True, type=Path, help="the verified token cache entry (a directory)")
    parser.add_argument("--corpus-sha256", default="")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    trainer = Trainer(args.run_dir, PreparedData(args.tokenizer, args.tokens, args.corpus_sha256), args.resume)
    status, error = C.FAILED, None
    try:
        trainer.setup()
        status = trainer.train()
    except RunInUse as exc:
        # Another trainer owns the run: its status is not ours to write.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return C.EXIT_BAD_INPUT
    except BaseException as exc:  # noqa: BLE001 - every failure must reach status.json
        error = redact(f"{type(exc).__name__}: {exc}")
        traceback.print_exc()
        status = C.FAILED
    try:
        trainer.finish(status, error)
    except Exception:  # noqa: BLE001 - finish wrote the status in its finally; show why W&B failed
        traceback.print_exc()
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    return C.exit_code_for_status(status, trainer.stop_reason or None)


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: gloo's background threads sometimes abort the process while C++
    # destructors run ("terminate called without an active exception"), after the outcome is
    # already recorded. Everything worth keeping was flushed and closed above.
    os._exit(exit_code)
