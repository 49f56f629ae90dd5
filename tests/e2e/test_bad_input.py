"""Every kind of bad input exits 2 with one short message naming the file or field; no traceback."""

from __future__ import annotations

import json
import os
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


# ---------------------------------------------------------------------------------------------
# Hostile input (issue 10, point 6): refused at validation, before a run directory or a process
# exists, in one line. Each of these used to hang, fail late with exit 1, or pass validation.


def alias_bomb_yaml() -> str:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "\n".join(lines) + "\n"


def hostile_files(tmp: Path) -> None:
    (tmp / "bomb.yaml").write_text(yaml.safe_dump(TINY_SPEC) + alias_bomb_yaml())
    (tmp / "dup.yaml").write_text(yaml.safe_dump(TINY_SPEC) + "seed: 7\n")
    (tmp / "huge.yaml").write_text(yaml.safe_dump(TINY_SPEC) + "# " + "x" * (1024 * 1024) + "\n")
    os.mkfifo(tmp / "fifo.yaml")
    overrides = "\n".join(f"  {line}" for line in alias_bomb_yaml().splitlines())
    (tmp / "sweep_bomb.yaml").write_text(
        f"experiment: {tmp / 's.yaml'}\noverrides:\n{overrides}\nspace:\n  optim.lr: {{low: 1.0e-3, high: 1.0e-2}}\n")
    (tmp / "sweep_ok.yaml").write_text(f"experiment: {tmp / 's.yaml'}\nspace:\n  optim.lr: {{low: 1.0e-3, high: 1.0e-2}}\n")


GPU_HERE = Path("/dev/nvidia0").exists()

# (case id, args builder, text the one-line message must contain)
HOSTILE = [
    ("n_layer 1e9", lambda t: ["run", str(write_spec(t / "s.yaml", model__n_layer=1.0e9))],
     "model.n_layer: Input should be less than or equal to 1024"),
    ("width that cannot fit", lambda t: ["run", str(write_spec(t / "s.yaml", model__n_layer=1024, model__n_embd=65536, model__n_head=64))],
     "the model cannot fit: training needs about"),
    ("batch that cannot fit", lambda t: ["run", str(write_spec(t / "s.yaml", train__batch_size=65536, model__block_size=65536))],
     "the model cannot fit: training needs about"),
    ("nan learning rate", lambda t: ["run", str(write_spec(t / "s.yaml")), "--set", "optim.lr=.nan"],
     "optim.lr: Input should be a finite number"),
    ("infinite weight decay", lambda t: ["run", str(write_spec(t / "s.yaml", optim__weight_decay=float("inf")))],
     "optim.weight_decay: Input should be a finite number"),
    ("seed beyond 64 bits", lambda t: ["run", str(write_spec(t / "s.yaml", seed=2**64))],
     "seed: Input should be less than or equal to 9223372036854775807"),
    ("cuda without a GPU", lambda t: ["run", str(write_spec(t / "s.yaml", train__device="cuda"))],
     "train.device: cuda, but"),
    ("nccl without a GPU", lambda t: ["run", str(write_spec(t / "s.yaml", launch__backend="nccl"))],
     "launch.backend: nccl needs a GPU"),
    ("W&B tag over 64 characters", lambda t: ["run", str(write_spec(t / "s.yaml", tracking__wandb__tags=["t" * 65]))],
     "tracking.wandb.tags: tag 0"),
    ("W&B project with a slash", lambda t: ["run", str(write_spec(t / "s.yaml", tracking__wandb__project="team/p"))],
     "tracking.wandb.project: project 'team/p' contains /"),
    ("W&B group over 128 characters", lambda t: ["run", str(write_spec(t / "s.yaml", tracking__wandb__group="g" * 129))],
     "tracking.wandb.group: group"),
    ("name with a newline", lambda t: ["run", str(write_spec(t / "s.yaml")), "--name", "two\nlines"],
     "name: name 'two\\nlines' contains a newline"),
    ("alias bomb in the spec", lambda t: ["run", str(t / "bomb.yaml")], "bomb.yaml: more than 100000 nodes"),
    ("alias bomb in --set", lambda t: ["run", str(write_spec(t / "s.yaml")), "--set",
                                       "tracking.wandb.tags={a: &a [x,x,x,x,x,x,x,x,x], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
                                       "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], "
                                       "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]}"],
     "the value is not valid YAML (more than 100000 nodes"),
    ("duplicate key", lambda t: ["run", str(t / "dup.yaml")], "dup.yaml: duplicate key 'seed' on line"),
    ("spec over 1 MiB", lambda t: ["run", str(t / "huge.yaml")], "larger than the 1024 KiB limit"),
    ("spec is a FIFO", lambda t: ["run", str(t / "fifo.yaml")], "fifo.yaml: not a regular file"),
    ("alias bomb in a sweep's overrides", lambda t: (write_spec(t / "s.yaml"), ["sweep", str(t / "sweep_bomb.yaml")])[1],
     "sweep_bomb.yaml: more than 100000 nodes"),
    ("sweep of a cuda experiment without a GPU", lambda t: (write_spec(t / "s.yaml", train__device="cuda"),
                                                          ["sweep", str(t / "sweep_ok.yaml")])[1], "train.device: cuda, but"),
    ("launch-file job name with a trailing newline", lambda t: ["launch-file", str(write_spec(t / "s.yaml")), "--slurm",
                                                               "--job-name", "job\n"], "--job-name 'job\\n'"),
    ("launch-file time with a trailing newline", lambda t: ["launch-file", str(write_spec(t / "s.yaml")), "--slurm",
                                                           "--time", "10:00\n"], "--time '10:00\\n'"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_input_exits_2_in_one_line_before_anything_starts(case, tmp_path: Path) -> None:
    name, build_args, expected = case
    if GPU_HERE and "without a GPU" in name:
        pytest.skip("this machine has a GPU")
    hostile_files(tmp_path)
    args = build_args(tmp_path)
    if args[0] != "launch-file":
        args += ["--runs-dir", str(tmp_path / "runs")]
    result = run_cli(args, cwd=tmp_path, timeout=60)  # the n_layer 1e9 and FIFO cases used to hang
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()  # one line
    assert expected in line, line
    runs = tmp_path / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.name not in (".cache", "optuna.db")], "a run was created"


def test_unwritable_runs_dir_and_report_out_exit_2_in_one_line(tmp_path: Path) -> None:
    """A path under a regular file cannot be created, even by root (chmod would not stop root)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    from tests.fixtures_runs import make_run_store

    spec = write_spec(tmp_path / "s.yaml")
    store = make_run_store(tmp_path / "store")
    for args, flag in ((["run", str(spec), "--runs-dir", str(blocker / "runs")], "--runs-dir"),
                       (["report", "--out", str(blocker / "r.html"), "--runs-dir", str(store.runs_dir)], "--out")):
        result = run_cli(args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"error: {flag} ") and "cannot write there" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_generate_max_new_tokens_is_bounded(tmp_path: Path) -> None:
    from gptexp.limits import MAX_NEW_TOKENS

    result = run_cli(["generate", "any-run", "--max-new-tokens", str(MAX_NEW_TOKENS + 1), "--runs-dir", str(tmp_path)])
    assert result.returncode == 2 and f"expected 1 to {MAX_NEW_TOKENS}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
