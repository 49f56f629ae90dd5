from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gptexp.data import PreparedData
from gptexp.launch import EXIT_FAILED, EXIT_OK, EXIT_PRUNED, EXIT_SIGINT, EXIT_SIGTERM, create_run, exit_code_for, torchrun_command
from gptexp.spec import SpecError, load_spec, resolve_paths, validate_spec
from gptexp.tracking import RunStore


def test_torchrun_command_single_node(tmp_path: Path) -> None:
    spec = validate_spec({"launch": {"nproc": 3}}, "x")
    store = create_run(spec, tmp_path)
    prepared = PreparedData(Path("/c/tok.json"), Path("/c/arr.npz"), "abc")
    command = torchrun_command(spec, store, prepared, resume=True)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[command.index("--nproc-per-node") + 1] == "3"
    assert "--standalone" in command
    tail = command[command.index("-m", 3):]
    assert tail[:2] == ["-m", "gptexp.train"]
    assert tail[tail.index("--run-dir") + 1] == str(store.dir)
    assert tail[-1] == "--resume"


def test_torchrun_command_multi_node_uses_c10d_rendezvous(tmp_path: Path) -> None:
    spec = validate_spec({"launch": {"nproc": 2, "nnodes": 2, "rdzv_endpoint": "10.0.0.1:29500", "run_id": "shared"}}, "x")
    store = create_run(spec, tmp_path, run_id="shared")
    command = torchrun_command(spec, store, PreparedData(Path("t"), Path("a"), ""), resume=False)
    assert "--standalone" not in command
    assert command[command.index("--rdzv-backend") + 1] == "c10d"
    assert command[command.index("--rdzv-endpoint") + 1] == "10.0.0.1:29500"
    assert command[command.index("--rdzv-id") + 1] == "shared"
    assert command[command.index("--nnodes") + 1] == "2"


@pytest.mark.parametrize("status, extra, code", [
    ("completed", {}, EXIT_OK),
    ("pruned", {}, EXIT_PRUNED),
    ("failed", {}, EXIT_FAILED),
    ("interrupted", {"signal": "SIGINT"}, EXIT_SIGINT),
    ("interrupted", {"signal": "SIGTERM"}, EXIT_SIGTERM),
    ("interrupted", {"signal": "launcher gone"}, EXIT_SIGTERM),
])
def test_exit_code_comes_from_the_status_file(tmp_path: Path, status: str, extra: dict, code: int) -> None:
    store = create_run(validate_spec({}, "x"), tmp_path)
    store.write_status(status, **extra)
    assert exit_code_for(store) == (code, status)


def test_create_run_writes_the_resolved_spec_and_refuses_duplicate_ids(tmp_path: Path) -> None:
    spec = resolve_paths(validate_spec({"name": "my run"}, "x"))
    store = create_run(spec, tmp_path, run_id="fixed-id")
    assert load_spec(store.spec_path) == spec
    with pytest.raises(SpecError, match="already exists"):
        create_run(spec, tmp_path, run_id="fixed-id")
    assert isinstance(RunStore(store.dir).read_status(), dict)
