"""Where a study lives: storage URLs, opening an Optuna storage, and the gate every process of a
study shares (count, then create or take a trial, atomically).

Default: SQLite at `<runs_dir>/optuna.db` (WAL journal, 60 s busy timeout, heartbeats); PostgreSQL
for several machines (`postgresql+psycopg://user:pw@host/db`). A URL may carry a password: it is
printed only through `gptexp.redaction.redact` and travels to trials only in the environment.
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


def default_storage_url(runs_dir: Path) -> str:
    return f"sqlite:///{(Path(runs_dir) / DEFAULT_STORAGE_FILE).resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a `sqlite:///path` URL, None for other storages."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def prepare_sqlite(url: str) -> None:
    """Create the directory and switch the database to WAL (readers never block the writer)."""
    path = sqlite_path(url)
    if path is None:
        return
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def open_storage(url: str, **heartbeat: Any) -> Any:  # -> optuna.storages.RDBStorage
    """An RDBStorage for `url`; SQLite gets a long busy timeout (several processes write to it)."""
    import optuna

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
    or flock on a file beside the SQLite database; other storages: this process only)."""

    def __init__(self, url: str, study_name: str) -> None:
        self._thread_lock = threading.Lock()
        self._local = threading.local()
        self._file = None
        self._connection = None
        self._key = int.from_bytes(sha256(f"gptexp-sweep:{study_name}".encode()).digest()[:8], "big", signed=True)
        db = sqlite_path(url)
        if db is not None:
            self._file = open(db.with_name(db.name + ".lock"), "a+b")  # noqa: SIM115 - held for the sweep
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
