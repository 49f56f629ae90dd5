"""Where a study lives: storage URLs, opening an Optuna storage, and the gate every process of a
study shares (count, then create or take a trial, atomically).

Three kinds of URL:
- `sqlite:///path/optuna.db` (the default, under the runs directory): WAL journal, 60 s busy
  timeout, heartbeats; one machine, local filesystem.
- `postgresql+psycopg://user@host/db`: several machines, heartbeats, an advisory lock as the gate.
- `journal:///abs/path/study.journal` (or `journal:relative/path`, made absolute): Optuna's
  JournalStorage with its file backend, for clusters with a shared filesystem and no database
  server (SQLite on NFS is what Optuna's FAQ warns against). The journal is an append-only log
  guarded by Optuna's symlink lock (`<path>.lock`, NFS-safe, broken after 30 s if its holder
  died); the gate is the same kind of lock on `<path>.gate`. JournalStorage has no heartbeats: a
  trial whose worker died is found by its run lock instead (runner.fail_orphaned_trials).
A URL may carry a password: it is printed only through `gptexp.redaction.redact` and travels to
trials only in the environment.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from hashlib import sha256
from pathlib import Path
from typing import Any, Iterator

import optuna

DEFAULT_STORAGE_FILE = "optuna.db"
SQLITE_TIMEOUT_S = 60  # trial processes and the sweep's heartbeats share one SQLite file
JOURNAL_SCHEME = "journal:"
GATE_SUFFIX = ".gate"


def default_storage_url(runs_dir: Path) -> str:
    return f"sqlite:///{(Path(runs_dir) / DEFAULT_STORAGE_FILE).resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a `sqlite:///path` URL, None for other storages."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def journal_path(url: str) -> Path | None:
    """The log file of a `journal:///abs/path` or `journal:rel/path` URL, None for other storages."""
    if not url.startswith(JOURNAL_SCHEME):
        return None
    rest = url.removeprefix(JOURNAL_SCHEME)
    path = "/" + rest.removeprefix("///") if rest.startswith("///") else rest.removeprefix("//")
    return Path(path).expanduser() if path.strip() else None


def storage_file(url: str) -> Path | None:
    """The file a SQLite or journal storage lives in (None for a server)."""
    return sqlite_path(url) or journal_path(url)


def normalize_url(url: str) -> str:
    """`url` with a relative journal path made absolute: trials and other processes get the same file."""
    path = journal_path(url)
    return f"{JOURNAL_SCHEME}//{path.resolve()}" if path is not None else url


def check_url(url: str, where: str = "storage") -> None:
    """A SpecError (exit 2) for a URL gptexp cannot open: a journal URL without a path or inside a
    missing directory."""
    from gptexp.spec import SpecError

    if url.startswith(JOURNAL_SCHEME):
        path = journal_path(url)
        if path is None:
            raise SpecError(f"{where}: {url!r}: expected journal:///absolute/path/study.journal")
        if not path.parent.is_dir():
            raise SpecError(f"{where}: {url}: directory {path.parent} does not exist")
        if path.exists() and not path.is_file():
            raise SpecError(f"{where}: {url}: {path} is not a regular file")


def prepare_sqlite(url: str) -> None:
    """Create the directory and switch the database to WAL (readers never block the writer)."""
    path = sqlite_path(url)
    if path is None:
        return
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def open_storage(url: str, **heartbeat: Any) -> Any:  # -> optuna.storages.BaseStorage
    """The Optuna storage for `url`: a JournalStorage on a file for `journal:` URLs (heartbeat
    settings do not apply: it has none), else an RDBStorage; SQLite gets a long busy timeout
    (several processes write to it)."""
    import optuna

    path = journal_path(url)
    if path is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return JournalStorage(JournalFileBackend(str(path)))  # link-based lock: NFS-safe
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        except Exception as error:  # noqa: BLE001
            # Processes that start together on an empty database race to create Optuna's tables
            # (a unique violation on a type or table); once one has made them, the rest load.
            if attempt == 4 or type(error).__name__ not in ("IntegrityError", "ProgrammingError"):
                raise
            time.sleep(0.2 + 0.3 * attempt)
    raise AssertionError("unreachable")


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


# ---------------------------------------------------------------------------------------------
# the gate: count, then create or take a trial, atomically across threads and processes


class StudyGate:
    """A thread lock plus a lock shared by every process of the study (PostgreSQL advisory lock,
    flock on a file beside the SQLite database, Optuna's NFS-safe link lock beside a journal)."""

    def __init__(self, url: str, study_name: str, stale_after_s: int = 30) -> None:
        self._thread_lock = threading.Lock()
        self._local = threading.local()
        self._file = None
        self._connection = None
        self._link_lock = None
        self._key = int.from_bytes(sha256(f"gptexp-sweep:{study_name}".encode()).digest()[:8], "big", signed=True)
        db = sqlite_path(url)
        if db is not None:
            self._file = open(db.with_name(db.name + ".lock"), "a+b")  # noqa: SIM115 - held for the sweep
        elif journal_path(url) is not None:
            from optuna.storages.journal import JournalFileSymlinkLock

            # flock is unreliable on NFS; this lock is a symlink `<gate>.lock` -> `<gate>` made
            # atomically (any NFS version). One left by a killed process is broken by a waiter that
            # has waited `stale_after_s` (Optuna stats the link's target: the target must exist).
            # The gate is held for milliseconds (count, create or take a trial), never that long.
            gate = Path(str(journal_path(url)) + GATE_SUFFIX)
            gate.touch(exist_ok=True)
            self._link_lock = JournalFileSymlinkLock(str(gate), grace_period=stale_after_s)
        elif url.startswith("postgresql"):
            import sqlalchemy

            engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            self._connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    @property
    def held(self) -> bool:
        return getattr(self._local, "held", False)

    def acquire(self) -> None:
        self._thread_lock.acquire()
        try:
            if self._file is not None:
                import fcntl

                fcntl.flock(self._file, fcntl.LOCK_EX)
            elif self._link_lock is not None:
                self._link_lock.acquire()
            elif self._connection is not None:
                import sqlalchemy

                self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
        except BaseException:
            self._thread_lock.release()
            raise
        self._local.held = True

    def release(self) -> None:
        if not self.held:
            return
        self._local.held = False
        try:
            if self._file is not None:
                import fcntl

                fcntl.flock(self._file, fcntl.LOCK_UN)
            elif self._link_lock is not None:
                self._link_lock.release()
            elif self._connection is not None:
                import sqlalchemy

                self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
        finally:
            self._thread_lock.release()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._connection is not None:
            self._connection.close()
