"""runrecord: the facts one launch records, without importing torch in the launcher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gptexp import runrecord


def test_versions_are_read_without_importing_torch() -> None:
    code = ("import sys, json; from gptexp.runrecord import launch_facts; "
            "facts = launch_facts(['train.max_steps=5'], resume=False); "
            "print(json.dumps({'torch_imported': 'torch' in sys.modules, **facts}))")
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert out["torch_imported"] is False
    import torch

    assert out["torch"] == torch.__version__ and out["cuda"] == torch.version.cuda
    assert out["overrides"] == ["train.max_steps=5"] and out["resume"] is False
    assert out["host"] and out["python"] and out["cpus"] >= 1


def test_the_command_line_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/bin/gptexp", "sweep", "s.yaml", "--storage", "postgresql://u:hunter2secret@h/db"])
    facts = runrecord.launch_facts(None, resume=False)
    assert facts["argv"][:3] == ["gptexp", "sweep", "s.yaml"]
    assert "hunter2secret" not in json.dumps(facts)


def test_launches_append_one_line_each(tmp_path: Path) -> None:
    runrecord.append_launch(tmp_path, {"resume": False})
    runrecord.append_launch(tmp_path, {"resume": True})
    (tmp_path / "launches.jsonl").open("a").write("not json\n")
    assert runrecord.read_launches(tmp_path) == [{"resume": False}, {"resume": True}]


def test_cpu_model_names_this_machine() -> None:
    model = runrecord.cpu_model()
    assert model is None or (isinstance(model, str) and model.strip() == model and model)
