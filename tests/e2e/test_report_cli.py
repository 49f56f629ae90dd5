"""`gptexp runs` and `gptexp report` as a user runs them, on the fixture run store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_cli
from tests.fixtures_runs import GROUP, make_run_store, make_study, table_cells


@pytest.fixture
def store(tmp_path: Path):
    return make_run_store(tmp_path)


def test_runs_json_lists_every_run_with_its_status(store) -> None:
    result = run_cli(["runs", "--json", "--runs-dir", str(store.runs_dir)])
    assert result.returncode == 0, result.stderr
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(store.runs)
    for run_id, fixture in store.runs.items():
        assert rows[run_id]["status"] == fixture.expected_status
        if fixture.expected_status == "completed":
            assert rows[run_id]["val/bpb"] == pytest.approx(fixture.final["val/bpb"])
            assert rows[run_id]["tokenizer"] == fixture.tokenizer


def test_runs_filters_and_table(store) -> None:
    completed = run_cli(["runs", "--json", "--status", "completed", "--runs-dir", str(store.runs_dir)])
    expected = {run_id for run_id, run in store.runs.items() if run.expected_status == "completed"}
    assert {row["id"] for row in json.loads(completed.stdout)} == expected
    crashed = run_cli(["runs", "--json", "--status", "crashed", "--runs-dir", str(store.runs_dir)])
    assert [row["status"] for row in json.loads(crashed.stdout)] == ["crashed"]
    # Piped output is printed whole, not squeezed to 80 columns.
    table = run_cli(["runs", "--group", GROUP, "--runs-dir", str(store.runs_dir)], env={"COLUMNS": ""})
    assert table.returncode == 0 and "…" not in table.stdout
    for run_id in expected:
        assert run_id in table.stdout
        assert f"{store.runs[run_id].final['val/bpb']:.4f}" in table.stdout
    empty = run_cli(["runs", "--group", "no-such-group", "--runs-dir", str(store.runs_dir)])
    assert empty.returncode == 0 and "no runs" in empty.stderr


def test_report_by_tokenizer_writes_html_and_markdown(store, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    result = run_cli(["report", "--by", "tokenizer.kind", "--out", str(out), "--runs-dir", str(store.runs_dir)])
    assert result.returncode == 0, result.stderr
    html = out.read_text(encoding="utf-8")
    assert out.with_suffix(".md").exists()
    rows = table_cells(html)
    assert len(rows) == len(store.runs)  # unfinished runs are shown, never dropped
    assert "Grouped by tokenizer.kind" in html or "tokenizer.kind" in html
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # self-contained


def test_report_of_a_study_and_of_named_runs(store, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    make_study(storage=storage)
    trial_runs = sorted(run_id for run_id, run in store.runs.items() if run.expected_status == "completed")[:2]
    for run_id in trial_runs:  # as a sweep tags its trials' runs
        spec_path = store.runs_dir / run_id / "spec.yaml"
        spec = yaml.safe_load(spec_path.read_text())
        spec["tracking"]["wandb"]["tags"] = [f"study:{GROUP}", "trial:0"]
        spec_path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "study.html"
    result = run_cli(["report", "--study", GROUP, "--storage", storage, "--out", str(out),
                      "--runs-dir", str(store.runs_dir)])
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert "optimization history" in html.lower() and "parallel coordinate" in html.lower()
    assert set(table_cells(html)) == set(trial_runs)

    some = sorted(store.runs)[:2]
    named = run_cli(["report", *some, "--out", str(tmp_path / "two.html"), "--runs-dir", str(store.runs_dir)])
    assert named.returncode == 0, named.stderr
    assert len(table_cells((tmp_path / "two.html").read_text())) == 2


@pytest.mark.parametrize("args, message", [
    (["report", "no-such-run"], "no such run"),
    (["report", "--group", "nothing-here"], "no runs to report"),
    (["report", "--by", "tokenizer kind!"], "no run's spec has this field"),
    (["report", "--by", "optim.foo"], "no run's spec has this field"),
    (["report", "--by", "tokenizer.knd"], "did you mean tokenizer.kind"),
    (["report", "--by", "tokenizer.kind", "--ignore", "optim.lrr"], "did you mean optim.lr"),
    (["report", "--ignore", "optim.lr"], "--ignore goes with --by"),
    (["report", "x", "--group", "g"], "not several"),
])
def test_report_bad_input(store, args: list[str], message: str) -> None:
    result = run_cli([*args, "--runs-dir", str(store.runs_dir)])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_diff_of_three_runs_shows_exactly_the_fields_that_differ(tmp_path: Path) -> None:
    import yaml

    from tests.fixtures_runs import write_run

    runs = tmp_path / "runs"
    for run_id, seed, bpb in (("a", 1, 2.10), ("b", 2, 2.14), ("c", 1, 2.00)):
        write_run(runs, run_id, name="same", tokenizer="char", seed=seed, final_bpb=bpb)
    spec_path = runs / "c" / "spec.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["optim"]["lr"] = 3e-3
    spec_path.write_text(yaml.safe_dump(spec))

    result = run_cli(["diff", "a", "b", "c", "--json", "--runs-dir", str(runs)])
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["runs"] == ["a", "b", "c"]
    assert shown["fields"] == {"seed": [1, 2, 1], "optim.lr": [1e-3, 1e-3, 3e-3]}
    assert shown["metrics"]["val/bpb"] == [2.10, 2.14, 2.00]
    assert shown["metrics"]["best/val/bpb"] == [2.10, 2.14, 2.00]
    assert shown["metrics"]["status"] == ["completed"] * 3

    table = run_cli(["diff", "a", "b", "c", "--runs-dir", str(runs)]).stdout
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines() if line.strip()}
    assert rows["seed"] == ["1", "2", "1"] and rows["optim.lr"] == ["0.001", "0.001", "0.003"]
    assert "name" not in rows and "tokenizer.kind" not in rows  # equal fields are not shown

    for args, message in ((["a"], "at least two runs"), (["a", "zz"], "no such run"), (["a", "a"], "named twice")):
        bad = run_cli(["diff", *args, "--runs-dir", str(runs)])
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


def test_listing_commands_skip_and_name_a_malformed_run(store, tmp_path: Path) -> None:
    broken = store.runs_dir / "zz-broken"
    broken.mkdir()
    (broken / "spec.yaml").write_text("name: [unclosed\n")
    (store.runs_dir / "char-s1" / "summary.json").write_text("[1, 2, 3]")  # JSON of the wrong shape
    listed = run_cli(["runs", "--json", "--runs-dir", str(store.runs_dir)])
    assert listed.returncode == 0, listed.stderr
    assert {row["id"] for row in json.loads(listed.stdout)} == set(store.runs) - {"char-s1"}
    assert "zz-broken" in listed.stderr and "char-s1" in listed.stderr and "Traceback" not in listed.stderr
    reported = run_cli(["report", "--out", str(tmp_path / "r.html"), "--runs-dir", str(store.runs_dir)])
    assert reported.returncode == 0 and "zz-broken" in reported.stderr
    assert set(table_cells((tmp_path / "r.html").read_text())) == set(store.runs) - {"char-s1"}


def test_runs_watch_redraws_in_place_on_a_terminal_and_exits_0_on_ctrl_c(store) -> None:
    """Under a pseudo-terminal: the table is drawn, redrawn (cursor moved back up over it), and
    Ctrl-C ends the watch with exit 0 and no traceback."""
    import os
    import pty
    import select
    import signal
    import subprocess
    import time

    from tests.conftest import gptexp_command

    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "50", "TERM": "xterm"}
    process = subprocess.Popen(gptexp_command() + ["runs", "--watch", "--interval", "0.2", "--runs-dir", str(store.runs_dir)],
                               stdin=follower, stdout=follower, stderr=follower, env=env, start_new_session=True)
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 60
    while output.count(b"Ctrl-C stops") < 3 and time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                output += os.read(leader, 65536)
            except OSError:
                break
    assert output.count(b"Ctrl-C stops") >= 3, output[-2000:]
    assert b"\x1b[1A" in output and b"\x1b[2K" in output  # cursor up and erase: redrawn in place
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=20) == 0
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if not ready:
            break
        try:
            output += os.read(leader, 65536)
        except OSError:
            break
    os.close(leader)
    text = output.decode(errors="replace")
    assert "Traceback" not in text and "bpe-s1" in text and "char-s1" in text


def test_runs_watch_refuses_json(store) -> None:
    result = run_cli(["runs", "--watch", "--json", "--runs-dir", str(store.runs_dir)])
    assert result.returncode == 2 and "--watch draws a table" in result.stderr


def test_sweep_status_prints_markup_looking_values_as_text(tmp_path: Path) -> None:
    """A sweep choice "[/oops]" (rich's closing-tag syntax) used to crash `gptexp sweep status`."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from gptexp.sweep.storage import default_storage_url

    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="[red]s", storage=default_storage_url(runs_dir))
    choices = CategoricalDistribution(["[/oops]", "[bold]b"])
    for number, (choice, value) in enumerate((("[/oops]", 2.0), ("[bold]b", 2.5))):
        study.add_trial(create_trial(params={"tokenizer.pattern": choice}, distributions={"tokenizer.pattern": choices},
                                     value=value, user_attrs={"run_id": f"[link=x]run-{number}"}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"tokenizer.pattern": "[/oops]"},
                                 distributions={"tokenizer.pattern": choices}, user_attrs={"error": "[/] broke"}))
    result = run_cli(["sweep", "status", "--runs-dir", str(runs_dir)], env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for text in ("study [red]s", "tokenizer.pattern=[/oops]", "[link=x]run-0", "[/] broke"):
        assert text in result.stdout, (text, result.stdout)
