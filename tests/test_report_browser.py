"""The HTML report rendered by headless Chromium: not blank, every plot decoded, numbers right.

Needs Chromium (/usr/bin/chromium, or `chromium` on PATH). Without it the tests skip, unless
GPTEXP_REQUIRE_SERVICES=1 (CI), where a missing browser is a failure.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gptexp import report
from gptexp.tracking import list_runs

try:
    from fixtures_runs import VOCAB, make_run_store, make_study, table_cells
except ImportError:  # tests/ imported as a package
    from tests.fixtures_runs import VOCAB, make_run_store, make_study, table_cells

WINDOW = (1280, 4000)
# Counts, once the page has loaded, the images that decoded (complete and with a width), and
# the script elements (only this one: any other would be a user string that escaped escaping).
PROBE = """window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var loaded = images.filter(function (im) { return im.complete && im.naturalWidth > 0; });
  document.body.setAttribute('data-images', String(images.length));
  document.body.setAttribute('data-images-loaded', String(loaded.length));
  document.body.setAttribute('data-scripts', String(document.scripts.length));
});"""


def find_chromium() -> str:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    reason = ("Chromium not found (looked for /usr/bin/chromium and chromium on PATH); "
              "install it to render the report")
    if os.environ.get("GPTEXP_REQUIRE_SERVICES") == "1":
        pytest.fail(f"GPTEXP_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def run_chromium(chromium: str, profile: Path, page: Path, *mode: str) -> subprocess.CompletedProcess:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
               *mode, page.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, f"chromium exited {result.returncode}: {result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    chromium = find_chromium()
    root = tmp_path_factory.mktemp("browser")
    store = make_run_store(root)
    paths = report.build_report(list_runs(store.runs_dir), root / "report.html",
                                by="tokenizer.kind", study=make_study())
    return chromium, root, store, paths


def test_screenshot_is_not_blank(rendered):
    from matplotlib.image import imread

    chromium, root, _, paths = rendered
    shot = root / "report.png"
    run_chromium(chromium, root / "profile-shot", paths.html, f"--screenshot={shot}")
    pixels = imread(shot)[..., :3]  # floats in [0, 1]
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    assert pixels.std() > 0.1  # a blank page has none
    non_white = (pixels.min(axis=2) < 0.9).mean()
    assert non_white > 0.05, f"only {non_white:.1%} of the page is drawn"


def test_every_plot_loads_and_table_matches_fixture(rendered):
    chromium, root, store, paths = rendered
    # The report forbids every script (CSP); a copy allows exactly the probe, by its hash.
    html = paths.html.read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(PROBE.encode()).digest()).decode()
    policy = report.CONTENT_SECURITY_POLICY
    assert policy in html
    probed = html.replace(policy, f"{policy}; script-src 'sha256-{digest}'", 1)
    probed = probed.replace("</body>", f"<script>{PROBE}</script></body>", 1)
    probe_page = root / "report_probe.html"
    probe_page.write_text(probed, encoding="utf-8")

    dom = run_chromium(chromium, root / "profile-dom", probe_page, "--dump-dom").stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attributes = dict(re.findall(r'(data-[a-z-]+)="(\d+)"', body.group(1)))
    assert attributes.get("data-images") == str(len(paths.plots)) == "8", attributes
    assert attributes["data-images-loaded"] == attributes["data-images"]
    assert attributes["data-scripts"] == "1"  # the probe alone: no user string became a script

    cells = table_cells(dom)  # the table as the browser built it
    assert set(cells) == set(store.runs)
    for run_id, run in store.runs.items():
        assert cells[run_id]["val/bpb"] == f"{run.final['val/bpb']:.4f}"
        assert cells[run_id]["val/acc"] == f"{run.final['val/acc']:.4f}"
        assert cells[run_id]["steps"] == str(run.final["steps"])
        assert cells[run_id]["status"] == run.expected_status
    groups = table_cells(dom, "groups", "data-group")
    assert (groups["bpe"]["mean"], groups["char"]["mean"]) == ("1.9300", "2.1200")
    differs = table_cells(dom, "differs")  # what differs between the runs, one row per run
    assert set(differs) == set(store.runs)
    for run_id, run in store.runs.items():
        assert differs[run_id] == {"id": run_id, "seed": str(run.seed), "tokenizer.kind": run.tokenizer,
                                   "tokenizer.vocab_size": str(VOCAB[run.tokenizer])}
    trials = table_cells(dom, "trials", "data-trial")  # one column per hyperparameter
    assert set(trials["0"]) == {"trial", "state", "value", "model.n_layer", "optim.lr", "tokenizer.kind", "run"}
    assert (trials["0"]["tokenizer.kind"], trials["0"]["model.n_layer"], trials["0"]["optim.lr"]) == ("char", "2", "0.0001")
