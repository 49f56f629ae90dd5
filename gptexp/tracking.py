"""The run store (local files of one run) and the W&B logger, behind one small interface.

Layout of a run directory (DESIGN.md):

    runs/<run_id>/spec.yaml status.json metrics.jsonl summary.json tokenizer.json checkpoints/ wandb/

This module never imports torch, and imports wandb only when a W&B run is actually started, so
the CLI can list runs (and the launcher can create them) without paying for either.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import math
import os
import re
import secrets
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from gptexp import contract as C
from gptexp.redaction import redact_data
from gptexp.regular_file import FileRefused, Refusal, read_regular, refusal_message

RUN_STATUSES = C.RUN_STATUSES
# Upper bounds on what a read of a run file accepts: a run file larger than this is not one
# gptexp wrote (or a device such as /dev/zero put in its place), and reading it whole would hang.
MAX_SPEC_BYTES = 1 << 20
MAX_STATUS_BYTES = 1 << 20
MAX_SUMMARY_BYTES = 4 << 20
MAX_METRICS_BYTES = 512 << 20
# W&B run ids allow letters, digits, '-' and '_' (and at most 64 characters in practice).
_RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SECRET_ENV_NAMES = ("WANDB_API_KEY", C.ENV_OPTUNA_STORAGE, "PGPASSWORD", "DATABASE_URL")


class RunStoreError(ValueError):
    """A run that cannot be found or used (bad id, missing directory, a malformed run file).

    The message is one line for the user and names the file or run.
    """


# ---------------------------------------------------------------------------------------------
# small file helpers


def strict_json_value(value: Any) -> Any:
    """`value` with every non-finite float (NaN, ±inf) replaced by None, for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(item) for item in value]
    return value


def strict_json(data: Any, **kwargs: Any) -> str:
    """JSON that every parser accepts: NaN and infinities become null (see contract.py)."""
    return json.dumps(strict_json_value(data), allow_nan=False, **kwargs)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write strict JSON to a temp file in the same directory, fsync, rename: readers never see half a file.

    On a full disk (no room for the temp file) the file is overwritten in place instead: a small
    file such as status.json still fits its existing blocks, and a truthful status matters more
    than an atomic one when the alternative is a stale "running".
    """
    text = strict_json(data, indent=2, sort_keys=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if error.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.is_file():
            raise
        with open(path, "r+", encoding="utf-8") as f:
            f.write(text)
            f.truncate()
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `max_bytes` (regular_file.py).
    Raises FileNotFoundError when the file is missing and RunStoreError for everything else.
    """
    try:
        return read_regular(path, max_bytes)
    except FileRefused as refused:
        if refused.refusal is Refusal.MISSING:
            raise FileNotFoundError(errno.ENOENT, "file not found", str(path)) from None
        raise RunStoreError(refusal_message(
            refused, too_large=f"{{path}}: {{size}} bytes, more than the {max_bytes} a run file may have")) from None


def read_json_object(path: Path, max_bytes: int) -> dict[str, Any]:
    """A JSON object from a regular file; FileNotFoundError if missing, RunStoreError if malformed."""
    data = read_regular_file(path, max_bytes)
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunStoreError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        raise RunStoreError(f"{path}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise RunStoreError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object, or None when the file is missing or malformed (for best-effort callers)."""
    try:
        return read_json_object(path, MAX_SUMMARY_BYTES)
    except (OSError, RunStoreError):
        return None


# ---------------------------------------------------------------------------------------------
# run ids and directories


def new_run_id(name: str) -> str:
    """A unique, filesystem- and W&B-safe id: `<slug of name>-<UTC time>-<4 hex>`."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32] or "run"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{slug}-{stamp}-{secrets.token_hex(2)}"


def run_dir_for(runs_dir: Path, run: str) -> Path:
    """The directory of run `run` (an id, or a path to a run directory); never outside `runs_dir`."""
    candidate = Path(run)
    if candidate.is_dir() and (candidate / C.SPEC_FILE).exists():
        return candidate.resolve()
    if not _RUN_ID_PATTERN.match(run):
        raise RunStoreError(f"run {run!r}: not a run id (letters, digits, '-', '_') nor a run directory")
    path = (runs_dir / run).resolve()
    if path.parent != runs_dir.resolve():
        raise RunStoreError(f"run {run!r}: outside the runs directory {runs_dir}")
    if not (path / C.SPEC_FILE).exists():
        raise RunStoreError(f"run {run!r}: no such run in {runs_dir}")
    return path


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed process whose parent is gone too may stay a zombie (an init that does not reap).
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


# ---------------------------------------------------------------------------------------------
# the run store


def _check_type(path: Path, data: dict[str, Any], key: str, types: tuple[type, ...], what: str) -> None:
    value = data.get(key)
    if value is not None and (not isinstance(value, types) or isinstance(value, bool) and bool not in types):
        raise RunStoreError(f"{path}: {key!r} must be {what}, found {type(value).__name__}")


class RunStore:
    """Files of one run. Only the launcher and the trainer's rank 0 write them (see runlock.py).

    The `read_*` methods validate what they read (regular files, size caps, shapes) and raise
    RunStoreError with a one-line message naming the file; a missing file reads as "nothing yet".
    """

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self.spec_path = self.dir / C.SPEC_FILE
        self.status_path = self.dir / C.STATUS_FILE
        self.metrics_path = self.dir / C.METRICS_FILE
        self.summary_path = self.dir / C.SUMMARY_FILE
        self.tokenizer_path = self.dir / C.TOKENIZER_FILE
        self.output_log = self.dir / C.OUTPUT_LOG
        self.checkpoint_dir = self.dir / C.CHECKPOINT_DIR
        self.last_checkpoint = self.checkpoint_dir / C.LAST_CHECKPOINT
        self.best_checkpoint = self.checkpoint_dir / C.BEST_CHECKPOINT
        self.wandb_dir = self.dir  # W&B adds its own "wandb/" below the dir it is given

    @property
    def run_id(self) -> str:
        return self.dir.name

    # spec ---------------------------------------------------------------------------------
    def read_spec(self) -> dict[str, Any]:
        """spec.yaml as a mapping (validate it with gptexp.spec to get an ExperimentSpec)."""
        from gptexp.safe_yaml import YamlInputError, load_yaml

        try:
            text = read_regular_file(self.spec_path, MAX_SPEC_BYTES).decode("utf-8")
        except FileNotFoundError:
            raise RunStoreError(f"run {self.run_id}: no {C.SPEC_FILE}") from None
        except UnicodeDecodeError:
            raise RunStoreError(f"{self.spec_path}: not UTF-8 text") from None
        try:  # safe_yaml: alias bombs, duplicate keys and deep nesting are refused too
            spec = load_yaml(text, str(self.spec_path))
        except YamlInputError as error:
            raise RunStoreError(f"{self.spec_path}: not valid YAML ({str(error).removeprefix(f'{self.spec_path}: ')})") from None
        if not isinstance(spec, dict):
            raise RunStoreError(f"{self.spec_path}: expected a mapping, found {type(spec).__name__}")
        return spec

    # status -------------------------------------------------------------------------------
    def read_status(self) -> dict[str, Any]:
        """status.json, checked: a known status, an integer step and pids, text host and error."""
        try:
            status = read_json_object(self.status_path, MAX_STATUS_BYTES)
        except FileNotFoundError:
            return {"status": "unknown", "step": 0}
        path = self.status_path
        if status.get("status") not in RUN_STATUSES:
            raise RunStoreError(f"{path}: 'status' must be one of {', '.join(RUN_STATUSES)}, found {status.get('status')!r}")
        for key in ("step", "launcher_pid", "worker_pid", "checkpoint_step", "world_size"):
            _check_type(path, status, key, (int,), "an integer")
        for key in ("host", "error", "signal", "updated"):
            _check_type(path, status, key, (str,), "text")
        return status

    def write_status(self, status: str, **fields: Any) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        try:
            current = self.read_status()
        except RunStoreError:
            current = {}  # a malformed status is replaced, not merged
        current.update(fields)
        current["status"] = status
        current["host"] = socket.gethostname()
        current["updated"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        # An error may quote a storage URL (a sweep trial's pruning bridge): no password in run files.
        write_json_atomic(self.status_path, redact_data(current))

    def effective_status(self) -> str:
        """The stored status, except that a 'running' run that nothing owns any more is 'crashed'.

        A run is owned while a process holds one of its OS locks (runlock.py): that answer is
        exact on this machine and immune to pid reuse. Runs written before locks existed fall
        back to checking the recorded pids. A run recorded as running on another host cannot be
        checked from here and stays 'running'.
        """
        from gptexp.runlock import lock_files, run_is_locked

        status = self.read_status()
        if run_is_locked(self.dir):
            return C.RUNNING
        if status.get("status") != C.RUNNING:
            return str(status.get("status", "unknown"))
        if status.get("host") not in (None, socket.gethostname()):
            return C.RUNNING  # cannot check another machine's processes
        if lock_files(self.dir):
            return C.CRASHED
        alive = pid_alive(status.get("launcher_pid")) or pid_alive(status.get("worker_pid"))
        return C.RUNNING if alive else C.CRASHED

    # metrics and summary ------------------------------------------------------------------
    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(strict_json(row) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl; a line cut short by a crash (or not an object) is skipped."""
        try:
            data = read_regular_file(self.metrics_path, MAX_METRICS_BYTES)
        except FileNotFoundError:
            return []
        rows = []
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(row, dict) and isinstance(row.get(C.STEP, 0), int):
                rows.append(row)
        return rows

    def truncate_metrics_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint's step: they will be logged again."""
        rows = [row for row in self.read_metrics() if row.get(C.STEP, 0) <= step]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(strict_json(row) + "\n" for row in rows), encoding="utf-8")
        os.replace(tmp, self.metrics_path)

    def write_summary(self, summary: dict[str, Any]) -> None:
        """summary.json in strict JSON: a metric that is NaN or infinite is written as null."""
        write_json_atomic(self.summary_path, summary)

    def read_summary(self) -> dict[str, Any]:
        """summary.json ({} before a run finishes); metric values must be numbers or null."""
        try:
            summary = read_json_object(self.summary_path, MAX_SUMMARY_BYTES)
        except FileNotFoundError:
            return {}
        path = self.summary_path
        for key in (*C.VAL_METRICS, C.TRAIN_LOSS, C.SUMMARY_BEST_BPB, C.TOKENS_PER_SEC, C.SUMMARY_WALL_TIME,
                    C.SUMMARY_TRAIN_TIME):
            _check_type(path, summary, key, (int, float), "a number or null")
        for key in (C.SUMMARY_STEPS, C.SUMMARY_PARAMETERS, C.SUMMARY_WORLD_SIZE, C.TOKENS_SEEN, C.BYTES_SEEN,
                    C.SUMMARY_TRIAL):
            _check_type(path, summary, key, (int,), "an integer or null")
        for key in (C.SUMMARY_STUDY, C.SUMMARY_GROUP, C.SUMMARY_NAME, C.SUMMARY_STATUS):
            _check_type(path, summary, key, (str,), "text or null")
        return summary


# ---------------------------------------------------------------------------------------------
# listing runs (gptexp runs, report, sweep)


@dataclass
class RunRecord:
    """What the run store says about one run, for tables and reports."""

    run_id: str
    dir: Path
    spec: dict[str, Any]
    status: str
    status_info: dict[str, Any]
    summary: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.spec.get("name", ""))

    def field(self, dotted: str) -> Any:
        """A spec field by dotted path (`tokenizer.kind`), or None."""
        node: Any = self.spec
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def metrics(self) -> list[dict[str, Any]]:
        return RunStore(self.dir).read_metrics()


def load_run(run_dir: Path) -> RunRecord:
    """One run's record; RunStoreError (naming the file) when a run file is malformed."""
    store = RunStore(run_dir)
    spec = store.read_spec()
    status_info = store.read_status()
    return RunRecord(
        run_id=store.run_id,
        dir=store.dir,
        spec=spec,
        status=store.effective_status(),
        status_info=status_info,
        summary=store.read_summary(),
    )


def _say_skipped(run_dir: Path, reason: str) -> None:
    print(f"note: skipped run {run_dir.name}: {reason}", file=sys.stderr)


def list_runs(runs_dir: Path, on_skip: Callable[[Path, str], None] | None = _say_skipped) -> list[RunRecord]:
    """Every run under `runs_dir`, oldest first (hidden directories such as .cache are skipped).

    A malformed run (a broken spec.yaml, JSON of the wrong shape, a FIFO in place of a file) is
    left out and named through `on_skip(run_dir, reason)` (default: one line on stderr), so one bad
    directory never hides the others.
    """
    if not runs_dir.is_dir():
        return []
    dirs = []
    for entry in runs_dir.iterdir():
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        spec_path = entry / C.SPEC_FILE
        if spec_path.exists() or spec_path.is_symlink():
            dirs.append((spec_path.lstat().st_mtime, entry.name, entry))
    dirs.sort()
    records = []
    for _, _, run_dir in dirs:
        try:
            records.append(load_run(run_dir))
        except RunStoreError as error:
            if on_skip is not None:
                on_skip(run_dir, str(error))
    return records


# ---------------------------------------------------------------------------------------------
# loggers (rank 0 only; other ranks never construct one)


class MetricLogger(Protocol):
    def log(self, row: dict[str, Any]) -> None: ...
    def finish(self, summary: dict[str, Any], exit_code: int) -> None: ...


class WandbLogger:
    """A W&B run whose id is the run id, so a resumed run continues the same W&B run."""

    def __init__(self, store: RunStore, config: dict[str, Any], mode: str, project: str,
                 entity: str | None, group: str | None, tags: list[str], name: str) -> None:
        import wandb  # only here: mode "disabled" never pays for the import

        # Offline runs skip what only the W&B web app shows (pip freeze, hardware probe); the run
        # store's summary.json keeps package versions and the git commit anyway.
        lean = {"x_save_requirements": False, "x_disable_machine_info": True} if mode == "offline" else {}
        self.run = wandb.init(
            id=store.run_id,
            resume="allow",
            mode=mode,
            dir=str(store.wandb_dir),
            project=project,
            entity=entity,
            group=group,
            tags=tags,
            name=name,
            config=config,
            # silent: W&B's banner ("syncing is set to offline", the run's path) says nothing the
            # launcher does not say itself. System metrics (CPU, memory, GPU every ~15 s) stay on:
            # they cost no measurable start-up time (init + 20 logs + finish, offline: 0.067 s with
            # them, 0.065 s without, medians of 5 on this 2-core machine).
            settings=wandb.Settings(console="off", quiet=True, silent=True, **lean),
        )

    def log(self, row: dict[str, Any]) -> None:
        values = {k: v for k, v in row.items() if k not in (C.STEP, C.TIME)}
        self.run.log(values, step=int(row[C.STEP]))

    def finish(self, summary: dict[str, Any], exit_code: int) -> None:
        # Commit the last step's row first: W&B copies each committed row into the summary, so a
        # row still pending at finish would overwrite these values (tokens/s of the last interval
        # in place of the run's average).
        self.run.log({}, commit=True)
        for key, value in summary.items():
            if isinstance(value, (int, float, str)):
                self.run.summary[key] = value
        self.run.finish(exit_code=exit_code)

    @property
    def directory(self) -> str:
        return str(Path(self.run.dir).parent)


class NullLogger:
    def log(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, summary: dict[str, Any], exit_code: int) -> None:
        pass


def wandb_mode(spec_mode: str) -> str:
    """WANDB_MODE in the environment wins over the spec (the usual W&B convention)."""
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("offline", "online", "disabled"):
        return env_mode
    if env_mode == "dryrun":
        return "offline"
    return spec_mode


class Tracker:
    """Rank 0's single sink: every row goes to metrics.jsonl (flushed per line) and to W&B."""

    def __init__(self, store: RunStore, logger: MetricLogger) -> None:
        self.store = store
        self.logger = logger

    def log(self, row: dict[str, Any]) -> None:
        self.store.append_metrics(row)
        self.logger.log(row)

    def finish(self, summary: dict[str, Any], exit_code: int) -> None:
        self.store.write_summary(summary)
        self.logger.finish(summary, exit_code)


def secrets_in(text: str) -> list[str]:
    """Names of secret environment values that occur verbatim in `text` (used by tests and checks)."""
    found = []
    for name in _SECRET_ENV_NAMES:
        value = os.environ.get(name)
        if value and len(value) >= 6 and value in text:
            found.append(name)
    return found
