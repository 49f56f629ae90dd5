"""gptexp.report against a fixture run store: the numbers shown are the fixture's numbers."""

from __future__ import annotations

import base64
import html
import math
import os
import re
import signal
import socket
import statistics

import pytest
from rich.console import Console

from gptexp import report
from gptexp.tracking import list_runs

try:
    from fixtures_runs import (GROUP, HOSTILE_ERROR, HOSTILE_NAME, make_run_store, make_study,
                               table_cells, write_run)
except ImportError:  # tests/ imported as a package
    from tests.fixtures_runs import (GROUP, HOSTILE_ERROR, HOSTILE_NAME, make_run_store, make_study,
                                     table_cells, write_run)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_run_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def records(store):
    return list_runs(store.runs_dir)


@pytest.fixture(scope="module")
def full_report(records, tmp_path_factory):
    """The report of all six runs, grouped by tokenizer, with the fixture study."""
    out = tmp_path_factory.mktemp("report") / "bpe_vs_char.html"
    paths = report.build_report(records, out, by="tokenizer.kind", study=make_study())
    return paths, paths.html.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# gptexp runs


def test_fixture_statuses_are_effective_statuses(store, records):
    assert {r.run_id: r.status for r in records} == {
        run_id: run.expected_status for run_id, run in store.runs.items()}
    assert store.runs["bpe-live"].expected_status == "crashed"  # 'running' with its pid gone
    assert store.runs["char-bad"].expected_status == "failed"


def test_filter_runs_by_group_status_and_study(store, records, tmp_path):
    assert len(report.filter_runs(records, group=GROUP)) == 6
    assert report.filter_runs(records, group="other") == []
    unfinished = report.filter_runs(records, statuses=["crashed", "failed"])
    assert sorted(r.run_id for r in unfinished) == ["bpe-live", "char-bad"]
    # A sweep trial: study in summary.json, or only in the W&B tags when there is no summary yet.
    runs_dir = tmp_path / "runs"
    write_run(runs_dir, "t0", name="mlm_bpe", tokenizer="bpe", seed=1, final_bpb=1.9,
              study="s1", trial=0)
    write_run(runs_dir, "t1", name="mlm_bpe", tokenizer="bpe", seed=1, final_bpb=1.9,
              study="s1", trial=1, last_step=60, status="running", pid=os.getpid(), summary=False)
    write_run(runs_dir, "other", name="mlm_bpe", tokenizer="bpe", seed=1, final_bpb=1.9)
    trial_runs = list_runs(runs_dir)
    assert sorted(r.run_id for r in report.filter_runs(trial_runs, study="s1")) == ["t0", "t1"]
    assert [r.run_id for r in report.filter_runs(trial_runs, group="s1", statuses={"running"})] == ["t1"]


def test_runs_rows_take_summary_then_last_metrics(store, records):
    rows = {row["id"]: row for row in report.runs_rows(records)}
    assert set(rows) == set(store.runs)
    for run_id, run in store.runs.items():
        row = rows[run_id]
        assert list(row) == list(report.RUNS_COLUMNS)
        assert row["status"] == run.expected_status
        assert (row["tokenizer"], row["objective"]) == (run.tokenizer, "mlm")
        assert row["val/bpb"] == pytest.approx(run.final["val/bpb"])
        assert row["val/acc"] == pytest.approx(run.final["val/acc"])
        assert row["steps"] == run.final["steps"]
        assert row["parameters"] == run.final["parameters"]
        assert row["tokens/s"] == pytest.approx(run.final["tokens_per_sec"])
        assert row["wall time"] == pytest.approx(run.final["wall_time_s"])
    crashed = rows["bpe-live"]  # no summary.json: last eval row, last train row, time span
    assert (crashed["steps"], crashed["parameters"]) == (170, None)
    assert crashed["val/bpb"] == pytest.approx(store.runs["bpe-live"].final["val/bpb"])
    assert crashed["wall time"] == pytest.approx(170 * 0.25)
    assert crashed["tokens/s"] == pytest.approx(30170.0)


def test_runs_rows_are_strict_json(tmp_path):
    import json

    write_run(tmp_path, "nan-run", name="x", tokenizer="char", seed=1, final_bpb=2.0)
    (tmp_path / "nan-run" / "summary.json").write_text('{"val/bpb": NaN, "steps": 300}')
    (row,) = report.runs_rows(list_runs(tmp_path))
    assert row["val/bpb"] is None and row["steps"] == 300
    assert json.loads(json.dumps([row], allow_nan=False))[0]["id"] == "nan-run"


def test_runs_table_prints_names_literally(records):
    console = Console(record=True, width=300, color_system=None)
    console.print(report.runs_table(report.runs_rows(records)))
    text = console.export_text()
    assert "[link](javascript:1)" in text  # not eaten as rich markup
    for expected in ("crashed", "failed", "completed", "2.1400", "1.9000", "208.6k", "1m18s", "42s"):
        assert expected in text


@pytest.mark.parametrize("value, text", [(1.9, "1.9000"), (None, "—"), (float("nan"), "nan")])
def test_fmt_metric(value, text):
    assert report.fmt_metric(value) == text


@pytest.mark.parametrize("fn, value, text", [
    (report.fmt_count, 339_200, "339.2k"), (report.fmt_count, 1_234_567, "1.23M"),
    (report.fmt_count, 950, "950"), (report.fmt_bytes, 7_864_320, "7.9 MB"),
    (report.fmt_duration, 42.3, "42s"), (report.fmt_duration, 185, "3m05s"),
    (report.fmt_duration, 3725, "1h02m"), (report.fmt_rate, 12345.6, "12,346"),
])
def test_number_formats(fn, value, text):
    assert fn(value) == text


# ---------------------------------------------------------------------------------------------
# grouped comparison


def test_group_stats_mean_and_sample_std_over_completed_runs(store, records):
    stats = {s.value: s for s in report.group_stats(records, "tokenizer.kind")}
    assert list(stats) == ["bpe", "char"]
    for kind, unfinished in (("bpe", "bpe-live"), ("char", "char-bad")):
        finals = [r.final["val/bpb"] for r in store.completed(kind)]
        assert stats[kind].n == 2
        assert stats[kind].mean == pytest.approx(statistics.fmean(finals))
        assert stats[kind].std == pytest.approx(statistics.stdev(finals))
        assert stats[kind].excluded == [unfinished]
    assert stats["bpe"].mean == pytest.approx(1.93) and stats["char"].mean == pytest.approx(2.12)
    assert stats["char"].std == pytest.approx(math.sqrt(((2.10 - 2.12) ** 2 + (2.14 - 2.12) ** 2) / 1))


def test_group_stats_numeric_field_and_single_run(records):
    # Runs of one seed differ in their tokenizer: only --ignore tokenizer lets them share a group.
    stats = report.group_stats(records, "seed", ignore=["tokenizer"])
    assert [s.value for s in stats] == ["1", "2", "3"]  # numeric order
    assert stats[2].n == 0 and stats[2].mean is None  # seed 3: only unfinished runs
    assert report.group_stats(records[:1], "seed")[0].std is None  # one run: no spread


def test_group_stats_split_runs_that_differ_in_more_than_the_seed(tmp_path):
    """Two char runs at another step count are not seeds of the char configuration."""
    runs = tmp_path / "runs"
    for run_id, seed, bpb in (("a1", 1, 2.10), ("a2", 2, 2.14)):
        write_run(runs, run_id, name="c", tokenizer="char", seed=seed, final_bpb=bpb)
    for run_id, seed, bpb in (("b1", 1, 2.00), ("b2", 2, 2.02)):
        write_run(runs, run_id, name="c", tokenizer="char", seed=seed, final_bpb=bpb, max_steps=400)
    records = list_runs(runs)
    stats = report.group_stats(records, "tokenizer.kind")
    assert [(s.label, s.run_ids, s.n) for s in stats] == [
        ("char (train.max_steps=300)", ["a1", "a2"], 2), ("char (train.max_steps=400)", ["b1", "b2"], 2)]
    assert stats[0].mean == pytest.approx(2.12) and stats[1].mean == pytest.approx(2.01)
    # The user may say that the step count does not matter: then all four are averaged.
    (merged,) = report.group_stats(records, "tokenizer.kind", ignore=["train.max_steps"])
    assert merged.n == 4 and merged.mean == pytest.approx((2.10 + 2.14 + 2.00 + 2.02) / 4)
    page = report.build_report(records, tmp_path / "r.html", by="tokenizer.kind").html.read_text()
    groups = table_cells(page, "groups", "data-group")
    assert set(groups) == {"char (train.max_steps=300)", "char (train.max_steps=400)"}
    assert "split into separate groups" in page


def test_an_unknown_field_names_the_nearest_paths(records):
    with pytest.raises(report.UnknownFieldError, match=r"optim\.lr"):
        report.check_field("optim.lrr", records)
    with pytest.raises(report.UnknownFieldError, match=r"did you mean .*optim\.weight_decay"):
        report.check_field("optim.weight_decy", records)
    report.check_field("tokenizer.kind", records)
    report.check_field("tokenizer", records)  # a whole section is a field too


def test_differing_fields_and_the_derived_title(records):
    char = [r for r in records if r.run_id in ("char-s1", "char-s2")]
    assert report.differing_fields(char) == ["name", "seed"]
    title, lead = report.describe(char)
    assert "BPE" not in title + lead and "2 seeds" in title
    mixed = [r for r in records if r.run_id in ("char-s1", "bpe-s1")]
    assert report.describe(mixed)[1].startswith("Does a BPE tokenizer beat a character tokenizer?")
    assert "tokenizer.kind" in report.describe(mixed)[0]


def test_partial_curves_are_drawn_dashed(store, records):
    metrics = {r.run_id: r.metrics() for r in records}
    fig = report.curve_figure(records, metrics, "val/bpb", "step", "step")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()
             if not line.get_label().startswith("_")}
    assert set(lines) == {"char-s1", "char-s2", "bpe-s1", "bpe-s2", "bpe-live (crashed)",
                          "char-bad (failed)"}
    crashed = lines["bpe-live (crashed)"]
    assert crashed.get_linestyle() == "--" and max(crashed.get_xdata()) == 150  # last eval step
    assert lines["bpe-s1"].get_ydata()[-1] == pytest.approx(1.90)
    by_bytes = report.curve_figure(records, metrics, "train/loss", "bytes_seen", "bytes", by="tokenizer.kind")
    labels = [line.get_label() for line in by_bytes.axes[0].get_lines()]
    assert "bpe: bpe-live (crashed)" in labels
    x_end = {line.get_label(): max(line.get_xdata()) for line in by_bytes.axes[0].get_lines()}
    assert x_end["char: char-s1"] == store.runs["char-s1"].final["bytes_seen"]


# ---------------------------------------------------------------------------------------------
# the HTML report and its Markdown twin


def test_report_table_shows_fixture_numbers_and_every_status(store, full_report):
    paths, page = full_report
    cells = table_cells(page)
    assert set(cells) == set(store.runs)  # nobody silently dropped
    for run_id, run in store.runs.items():
        row = cells[run_id]
        assert row["val/bpb"] == f"{run.final['val/bpb']:.4f}"
        assert row["val/loss"] == f"{run.final['val/loss']:.4f}"
        assert row["val/acc"] == f"{run.final['val/acc']:.4f}"
        assert row["steps"] == str(run.final["steps"])
        assert row["status"] == run.expected_status
        assert row["parameters"] == report.fmt_count(run.final["parameters"])
        assert row["bytes seen"] == report.fmt_bytes(run.final["bytes_seen"])
    assert cells["char-s2"]["name"] == HOSTILE_NAME
    assert cells["bpe-s1"]["tokenizer"] == "bpe (2048)" and cells["char-s1"]["tokenizer"] == "char"
    # best val/bpb first among completed runs, then the unfinished ones
    assert list(cells) == ["bpe-s1", "bpe-s2", "char-s1", "char-s2", "bpe-live", "char-bad"]
    header = re.search(r"<thead><tr>(.*?)</tr>", page).group(1)
    assert re.findall(r">([^<]+)</th>", header)[:4] == ["id", "name", "val/bpb", "val/loss"]


def test_report_group_table(full_report):
    _, page = full_report
    groups = table_cells(page, "groups", "data-group")
    assert groups["bpe"]["mean"] == "1.9300" and groups["bpe"]["std"] == f"{statistics.stdev([1.90, 1.96]):.4f}"
    assert groups["char"]["mean"] == "2.1200" and groups["char"]["n"] == "2"
    assert groups["char"]["excluded"] == "char-bad"


def test_report_embeds_every_plot_and_nothing_external(full_report):
    paths, page = full_report
    assert paths.plots == ["val_bpb_vs_step", "val_bpb_vs_bytes_seen", "train_loss_vs_step",
                           "train_loss_vs_bytes_seen", "val_bpb_by_tokenizer_kind",
                           "study_optimization_history", "study_param_importances",
                           "study_parallel_coordinate"]
    assert paths.notes == []
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(paths.plots) == page.count("<img")
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert not re.search(r"(?:src|href)=\"(?!data:)", page)  # no external resource
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert f'content="{report.CONTENT_SECURITY_POLICY}"' in page
    assert "BPE" in page and "bits per byte" in page  # the question the report answers
    # the study's trials, pruned and failed included
    trials = table_cells(page, "trials", "data-trial")
    assert [t["state"] for t in trials.values()] == ["complete"] * 5 + ["pruned", "fail"]


def test_report_escapes_user_strings(full_report):
    _, page = full_report
    assert "<b onmouseover" not in page and "&lt;b onmouseover=&quot;x()&quot;&gt;&amp;amp;" in page
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; &amp; more" in page
    assert "crashed at step 170" in page


def test_markdown_twin(store, full_report):
    paths, _ = full_report
    assert paths.markdown == paths.html.with_suffix(".md")
    text = paths.markdown.read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(linked) == len(paths.plots)
    for link in linked:
        assert (paths.html.parent / link).read_bytes().startswith(b"\x89PNG")
    assert "| bpe-s1 | mlm\\_bpe | 1.9000 |" in text
    assert "| bpe | 2 | 1.9300 | 0.0424 |" in text
    assert "<script>" not in text and "<b " not in text and "\\[link\\]" in text
    assert "RuntimeError: loss is NaN" in text and HOSTILE_ERROR not in text


def test_report_without_grouping_or_study(records, tmp_path):
    paths = report.build_report(records[:2], tmp_path / "sub" / "r.html")
    page = paths.html.read_text(encoding="utf-8")
    assert len(paths.plots) == 4 and page.count("<img") == 4
    assert 'id="groups"' not in page and 'id="trials"' not in page
    assert set(table_cells(page)) == {r.run_id for r in records[:2]}


def test_report_of_no_runs(tmp_path):
    paths = report.build_report([], tmp_path / "empty.html", by="tokenizer.kind")
    page = paths.html.read_text(encoding="utf-8")
    assert "no runs" in page and page.count("<img") == 5


def test_study_too_small_for_importances_gets_a_note(records, tmp_path):
    study = make_study(name="tiny", n_complete=1)
    paths = report.build_report(records[:1], tmp_path / "tiny.html", study=study)
    assert "study_param_importances" not in paths.plots
    assert "study_optimization_history" in paths.plots and "study_parallel_coordinate" in paths.plots
    assert len(paths.plots) == 6 and len(paths.notes) == 1
    assert paths.notes[0].startswith("parameter importances: not drawn, needs at least 2 completed")
    page = paths.html.read_text(encoding="utf-8")
    assert "parameter importances: not drawn" in page and page.count("<img") == 6


def test_study_in_sqlite_storage(records, tmp_path):
    study = make_study(storage=f"sqlite:///{tmp_path / 'study.db'}", name="on disk")
    plots, notes = report.study_plots(study)
    assert [p.name for p in plots] == ["study_optimization_history", "study_param_importances",
                                       "study_parallel_coordinate"] and notes == []


# ---------------------------------------------------------------------------------------------
# W&B report, built offline


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test; the whole test is bounded by a 60 s alarm."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network call attempted: {args!r}")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

    def timeout(signum, frame):
        raise TimeoutError("building the W&B report took over 60 s (a network wait?)")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _panel_grids(spec):
    return [b["metadata"] for b in spec["spec"]["blocks"] if b["type"] == "panel-grid"]


def test_wandb_report_offline(records, no_network):
    pytest.importorskip("wandb_workspaces")
    built = report.build_wandb_report(records, entity="team", project="gptexp", by="tokenizer.kind")
    spec = built._to_model().model_dump(by_alias=True, exclude_none=True)
    assert spec["project"] == {"name": "gptexp", "entityName": "team"}
    assert spec["displayName"] == report.describe(records, by="tokenizer.kind")[0] == "val/bpb by tokenizer.kind (6 runs over 3 seeds)"
    curves, comparison = _panel_grids(spec)
    panels = [(p["viewType"], p["config"].get("xAxis"), p["config"]["metrics"])
              for p in curves["panelBankSectionConfig"]["panels"]]
    assert panels == [("Run History Line Plot", "_step", ["val/bpb"]),
                      ("Run History Line Plot", "bytes_seen", ["val/bpb"]),
                      ("Run History Line Plot", "_step", ["train/loss"]),
                      ("Run History Line Plot", "bytes_seen", ["train/loss"])]
    bar, scalar = comparison["panelBankSectionConfig"]["panels"]
    assert bar["viewType"] == "Bar Chart" and bar["config"]["metrics"] == ["val/bpb"]
    assert (bar["config"]["groupBy"], bar["config"]["groupAgg"], bar["config"]["groupArea"]) == (
        "tokenizer.value.kind", "mean", "stddev")
    assert scalar["viewType"] == "Scalar Chart"
    for grid in (curves, comparison):
        (runset,) = grid["runSets"]
        assert "project" not in runset  # entity/project only on the Report: builds offline
        (run_filter,) = runset["filters"]["filters"]
        assert run_filter["key"] == {"section": "run", "name": "name"} and run_filter["op"] == "IN"
        assert sorted(run_filter["value"]) == sorted(r.run_id for r in records)
    markdown = [b["content"] for b in spec["spec"]["blocks"] if b["type"] == "markdown-block"]
    assert any("| bpe | 2 | 1.9300 | 0.0424 |" in text for text in markdown)


def test_wandb_report_by_group(records, no_network):
    pytest.importorskip("wandb_workspaces")
    built = report.build_wandb_report(records, entity="team", project="gptexp", group=GROUP)
    spec = built._to_model().model_dump(by_alias=True, exclude_none=True)
    for grid in _panel_grids(spec):
        (run_filter,) = grid["runSets"][0]["filters"]["filters"]
        assert run_filter["key"] == {"section": "run", "name": "group"}
        assert (run_filter["op"], run_filter["value"]) == ("=", GROUP)
    with pytest.raises(ValueError):
        report.build_wandb_report([], entity="team", project="gptexp")


def test_importances_optuna_cannot_separate_get_a_note():
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import create_trial

    study = optuna.create_study(study_name="flat")
    for x in (1.0, 2.0, 3.0):  # every trial scores the same: Optuna would draw equal bars
        study.add_trial(create_trial(params={"x": x}, distributions={"x": FloatDistribution(0, 5)},
                                     value=1.0))
    plots, notes = report.study_plots(study)
    assert [p.name for p in plots] == ["study_optimization_history", "study_parallel_coordinate"]
    assert notes == ["parameter importances: not drawn, Optuna says: Target and region quantiles "
                     "select the same set of trials. Parameter importances will be equal."]
    from matplotlib import pyplot

    assert pyplot.get_fignums() == []  # Optuna's figures are closed


def test_study_without_completed_trials():
    import optuna

    plots, notes = report.study_plots(optuna.create_study(study_name="empty"))
    assert plots == [] and len(notes) == 3 and all("not drawn" in note for note in notes)


HOSTILE_STATUS = 'completed" autofocus onfocus="x()"><meta http-equiv="refresh" content="0;url=http://evil"><form action="http://evil">'
HOSTILE_VALUE = '</td><script>alert(1)</script>[x](javascript:1) | *b*'


def test_values_from_run_files_are_escaped_in_html_and_markdown(tmp_path):
    """A crafted status.json error and spec value stay text: in attributes, cells and Markdown;
    a status.json whose status is not a status leaves that run out (named), not the report."""
    import json

    import yaml

    runs = tmp_path / "runs"
    write_run(runs, "ok", name="plain", tokenizer="char", seed=1, final_bpb=2.0)
    write_run(runs, "evil", name="plain", tokenizer="char", seed=2, final_bpb=2.1)
    write_run(runs, "forged", name="plain", tokenizer="char", seed=3, final_bpb=2.1)
    (runs / "evil" / "status.json").write_text(json.dumps({"status": "failed", "step": 300, "error": HOSTILE_STATUS}))
    (runs / "forged" / "status.json").write_text(json.dumps({"status": HOSTILE_STATUS, "step": 300}))
    spec = yaml.safe_load((runs / "evil" / "spec.yaml").read_text())
    spec["optim"]["schedule"] = HOSTILE_VALUE
    (runs / "evil" / "spec.yaml").write_text(yaml.safe_dump(spec))
    skipped = []
    records = list_runs(runs, on_skip=lambda run_dir, reason: skipped.append(run_dir.name))
    assert skipped == ["forged"] and [r.run_id for r in records] == ["ok", "evil"]
    paths = report.build_report(records, tmp_path / "r.html")
    page = paths.html.read_text()
    assert page.count("<meta http-equiv") == 1  # the Content-Security-Policy, nothing injected
    assert "<form" not in page and "<script" not in page and 'onfocus="' not in page
    assert HOSTILE_STATUS in html.unescape(page)  # the error is shown, as the text it is
    assert table_cells(page, "differs")["evil"]["optim.schedule"] == HOSTILE_VALUE
    markdown = paths.markdown.read_text()
    assert "<script" not in markdown and "<meta" not in markdown and "[x](javascript" not in markdown
    assert r"\[x\](javascript:1) \| \*b\*" in markdown  # a link, a cell break and emphasis, all escaped


def test_an_unknown_status_never_becomes_a_class_name(tmp_path):
    """A run without status.json reads as 'unknown': its cell gets a fixed class, not its text."""
    runs = tmp_path / "runs"
    write_run(runs, "ok", name="plain", tokenizer="char", seed=1, final_bpb=2.0)
    (runs / "ok" / "status.json").unlink()
    page = report.build_report(list_runs(runs), tmp_path / "r.html").html.read_text()
    assert 'class="status-other"' in page and "status-unknown" not in page
