"""The run store (local files of one run) and the W&B logger, behind one small interface.

Layout of a run directory (DESIGN.md):

    runs/<run_id>/spec.yaml status.json metrics.jsonl summary.json tokenizer.json checkpoints/ wandb/

This module never imports torch, and imports wandb only when a W&B run is actually started, so
the CLI can list runs (and the launcher can create them) without paying for either.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gptexp.redaction import redact_data

RUN_STATUSES = ("running", "completed", "failed", "pruned", "interrupted", "crashed")
# W&B run ids allow letters, digits, '-' and '_' (and at most 64 characters in practice).
_RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SECRET_ENV_NAMES = ("WANDB_API_KEY", "GPTEXP_OPTUNA_STORAGE", "PGPASSWORD", "DATABASE_URL")


class RunStoreError(ValueError):
    """A run that cannot be found or used (bad id, missing directory); the message is for the user."""


# ---------------------------------------------------------------------------------------------
# small file helpers


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temp file in the same directory, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
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
    if candidate.is_dir() and (candidate / "spec.yaml").exists():
        return candidate.resolve()
    if not _RUN_ID_PATTERN.match(run):
        raise RunStoreError(f"run {run!r}: not a run id (letters, digits, '-', '_') nor a run directory")
    path = (runs_dir / run).resolve()
    if path.parent != runs_dir.resolve():
        raise RunStoreError(f"run {run!r}: outside the runs directory {runs_dir}")
    if not (path / "spec.yaml").exists():
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


class RunStore:
    """Files of one run. Only the launcher and the trainer's rank 0 create one."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        self.spec_path = self.dir / "spec.yaml"
        self.status_path = self.dir / "status.json"
        self.metrics_path = self.dir / "metrics.jsonl"
        self.summary_path = self.dir / "summary.json"
        self.tokenizer_path = self.dir / "tokenizer.json"
        self.checkpoint_dir = self.dir / "checkpoints"
        self.last_checkpoint = self.checkpoint_dir / "last.pt"
        self.best_checkpoint = self.checkpoint_dir / "best.pt"
        self.wandb_dir = self.dir  # W&B adds its own "wandb/" below the dir it is given

    @property
    def run_id(self) -> str:
        return self.dir.name

    # status -------------------------------------------------------------------------------
    def read_status(self) -> dict[str, Any]:
        return read_json(self.status_path) or {"status": "unknown", "step": 0}

    def write_status(self, status: str, **fields: Any) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        current = self.read_status()
        current.update(fields)
        current["status"] = status
        current["host"] = socket.gethostname()
        current["updated"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        # An error may quote a storage URL (a sweep trial's pruning bridge): no password in run files.
        write_json_atomic(self.status_path, redact_data(current))

    def effective_status(self) -> str:
        """The stored status, except that a 'running' run whose processes are all gone is 'crashed'."""
        status = self.read_status()
        if status.get("status") != "running":
            return str(status.get("status", "unknown"))
        if status.get("host") not in (None, socket.gethostname()):
            return "running"  # cannot check another machine's processes
        alive = pid_alive(status.get("launcher_pid")) or pid_alive(status.get("worker_pid"))
        return "running" if alive else "crashed"

    # metrics and summary ------------------------------------------------------------------
    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        rows = []
        try:
            lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return rows
        for line in lines:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
        return rows

    def truncate_metrics_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint's step: they will be logged again."""
        rows = [row for row in self.read_metrics() if row.get("step", 0) <= step]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        os.replace(tmp, self.metrics_path)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json_atomic(self.summary_path, summary)

    def read_summary(self) -> dict[str, Any]:
        return read_json(self.summary_path) or {}


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
    import yaml

    store = RunStore(run_dir)
    try:
        spec = yaml.safe_load(store.spec_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        spec = {}
    return RunRecord(
        run_id=store.run_id,
        dir=store.dir,
        spec=spec if isinstance(spec, dict) else {},
        status=store.effective_status(),
        status_info=store.read_status(),
        summary=store.read_summary(),
    )


def list_runs(runs_dir: Path) -> list[RunRecord]:
    """Every run under `runs_dir`, oldest first (hidden directories such as .cache are skipped)."""
    if not runs_dir.is_dir():
        return []
    dirs = [d for d in runs_dir.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / "spec.yaml").exists()]
    dirs.sort(key=lambda d: (d / "spec.yaml").stat().st_mtime)
    return [load_run(d) for d in dirs]


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
            settings=wandb.Settings(console="off", quiet=True, x_disable_stats=True, **lean),
        )

    def log(self, row: dict[str, Any]) -> None:
        values = {k: v for k, v in row.items() if k not in ("step", "time")}
        self.run.log(values, step=int(row["step"]))

    def finish(self, summary: dict[str, Any], exit_code: int) -> None:
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
