"""Every kind of bad input exits 2 with one short message naming the file or field; no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import CORPUS, TINY_SPEC, run_cli


def write_spec(path: Path, **changes: object) -> Path:
    spec = yaml.safe_load(yaml.safe_dump(TINY_SPEC))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = spec
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def bad_files(tmp: Path) -> dict[str, Path]:
    (tmp / "a_directory").mkdir()
    (tmp / "empty.yaml").write_text("")
    (tmp / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp / "broken.yaml").write_text("model: {n_layer: 2\ntrain: [\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "empty.txt").write_text("")
    (tmp / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 100)
    return {"dir": tmp / "a_directory", "empty_txt": tmp / "empty.txt", "latin1_txt": tmp / "latin1.txt"}


# (case id, args builder, text the message must contain)
CASES = [
    ("missing spec", lambda t: ["run", str(t / "nope.yaml")], "nope.yaml: file not found"),
    ("spec is a directory", lambda t: ["run", str(t / "a_directory")], "is a directory"),
    ("empty spec", lambda t: ["run", str(t / "empty.yaml")], "empty.yaml: file is empty"),
    ("spec not utf-8", lambda t: ["run", str(t / "latin1.yaml")], "latin1.yaml: not UTF-8"),
    ("broken yaml", lambda t: ["run", str(t / "broken.yaml")], "broken.yaml: broken YAML (line"),
    ("not a mapping", lambda t: ["run", str(t / "list.yaml")], "expected a YAML mapping"),
    ("wrong type", lambda t: ["run", str(write_spec(t / "s.yaml", train__batch_size="many"))], "train.batch_size: Input should be a valid integer"),
    ("out of range", lambda t: ["run", str(write_spec(t / "s.yaml", objective={"kind": "mlm", "mask_prob": 1.5}))], "objective.mask_prob: Input should be less than 1"),
    ("negative size", lambda t: ["run", str(write_spec(t / "s.yaml", model__n_layer=-1))], "model.n_layer: Input should be greater than 0"),
    ("unknown key", lambda t: ["run", str(write_spec(t / "s.yaml", model__n_layers=3))], "model.n_layers: unknown field"),
    ("unknown kind", lambda t: ["run", str(write_spec(t / "s.yaml", model__kind="transformer"))], "model: unknown kind 'transformer'"),
    ("heads do not divide width", lambda t: ["run", str(write_spec(t / "s.yaml", model__n_embd=30, model__n_head=4))], "n_embd (30) must be divisible by n_head (4)"),
    ("bpe vocab too small", lambda t: ["run", str(write_spec(t / "s.yaml", tokenizer={"kind": "bpe", "vocab_size": 200}))], "vocab_size must be at least 256"),
    ("fractions out of range", lambda t: ["run", str(write_spec(t / "s.yaml", data__val_fraction=1.2))], "data.val_fraction: Input should be less than 1"),
    ("nproc below 1", lambda t: ["run", str(write_spec(t / "s.yaml")), "--nproc", "0"], "--nproc"),
    ("override without =", lambda t: ["run", str(write_spec(t / "s.yaml")), "--set", "train.max_steps"], "expected KEY=VALUE"),
    ("override into a value", lambda t: ["run", str(write_spec(t / "s.yaml")), "--set", "train.max_steps.x=1"], "train.max_steps is a value"),
    ("override with bad yaml", lambda t: ["run", str(write_spec(t / "s.yaml")), "--set", "train.max_steps=[1"], "--set 'train.max_steps=[1': the value is not valid YAML"),
    ("override of a wrong type", lambda t: ["run", str(write_spec(t / "s.yaml")), "--set", "optim.lr=fast"], "optim.lr: Input should be a valid number"),
    ("data file missing", lambda t: ["run", str(write_spec(t / "s.yaml", data__path=str(t / "no.txt")))], "data.path: " ),
    ("data is a directory", lambda t: ["run", str(write_spec(t / "s.yaml", data__path=str(t / "a_directory")))], "a_directory: is a directory"),
    ("data file empty", lambda t: ["run", str(write_spec(t / "s.yaml", data__path=str(t / "empty.txt")))], "empty.txt: file is empty"),
    ("data not utf-8", lambda t: ["run", str(write_spec(t / "s.yaml", data__path=str(t / "latin1.txt")))], "latin1.txt: not UTF-8"),
    ("no spec at all", lambda t: ["run"], "missing SPEC"),
    ("unknown flag", lambda t: ["run", str(write_spec(t / "s.yaml")), "--frobnicate"], "No such option"),
    ("resume unknown run", lambda t: ["run", "--resume", "no-such-run"], "no such run"),
    ("resume outside the runs dir", lambda t: ["run", "--resume", "../../etc"], "not a run id"),
    ("bad run id", lambda t: ["run", str(write_spec(t / "s.yaml")), "--run-id", "../escape"], "--run-id '../escape'"),
    ("runs dir is a file", lambda t: ["run", str(write_spec(t / "s.yaml")), "--runs-dir", str(CORPUS)], "not a directory"),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_input_exits_2_with_a_message_naming_the_problem(case, tmp_path: Path) -> None:
    _, build_args, expected = case
    bad_files(tmp_path)
    args = build_args(tmp_path)
    if "--runs-dir" not in args:
        args += ["--runs-dir", str(tmp_path / "runs")]
    result = run_cli(args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert expected in " ".join(output.split()), output  # rich may wrap long lines
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) <= 8, output
    runs = tmp_path / "runs"
    if runs.exists():  # nothing left marked running
        for status in runs.glob("*/status.json"):
            assert json.loads(status.read_text())["status"] != "running"


def test_validation_split_too_small_fails_the_run_it_created(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", data__val_fraction=0.00001)
    result = run_cli(["run", str(spec), "--runs-dir", str(tmp_path / "runs")], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "data.val_fraction: the val split has" in " ".join(result.stderr.split())
    (status,) = (tmp_path / "runs").glob("*/status.json")
    assert json.loads(status.read_text())["status"] == "failed"


def test_a_hostile_name_stays_inside_the_runs_dir(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", train__max_steps=1, train__eval_batches=1)
    runs = tmp_path / "deep" / "runs"
    result = run_cli(["run", str(spec), "--name", "../../../escaped/..", "--runs-dir", str(runs), "--nproc", "1"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = [d for d in runs.iterdir() if not d.name.startswith(".")]
    assert run_dir.name.startswith("escaped-")
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["runs"]
    assert yaml.safe_load((run_dir / "spec.yaml").read_text())["name"] == "../../../escaped/.."


def test_resume_of_a_completed_run_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", train__max_steps=1, train__eval_batches=1)
    runs = tmp_path / "runs"
    assert run_cli(["run", str(spec), "--runs-dir", str(runs)], cwd=tmp_path).returncode == 0
    (run_dir,) = [d for d in runs.iterdir() if not d.name.startswith(".")]
    result = run_cli(["run", "--resume", run_dir.name, "--runs-dir", str(runs)], cwd=tmp_path)
    assert result.returncode == 2 and "already completed" in result.stderr
