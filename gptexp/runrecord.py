"""What started each segment of a run, and where: one JSON line per launch in `launches.jsonl`.

A run may be launched once and resumed several times, on different machines: every launch
appends the exact command line, the `--set` overrides it was given, and the facts of the machine
that decide whether two runs are comparable (host, CPU and GPU model, Python, torch and CUDA
versions). The launcher never imports torch: versions are read from the installed package's
metadata and files, the GPU model from `nvidia-smi` when there is one.

    {"time": "2026-11-30T03:20:00+00:00", "argv": ["gptexp", "run", "experiments/clm_char.yaml", "--set", "optim.lr=3e-3"],
     "overrides": ["optim.lr=3e-3"], "resume": false, "host": "node1", "cpu": "AMD EPYC 7B13", "gpus": [],
     "python": "3.11.7", "torch": "2.13.0+cpu", "cuda": null, "gptexp": "0.1.0"}
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from importlib import metadata, util
from pathlib import Path
from typing import Any

from gptexp.contract import LAUNCHES_FILE
from gptexp.redaction import redact


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_models() -> list[str]:
    """One name per GPU that `nvidia-smi` lists; empty without an NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def torch_cuda_version() -> str | None:
    """The CUDA version torch was built with, read from torch/version.py without importing torch."""
    spec = util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^cuda\s*(?::\s*\w[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return match.group(1) if match else None


def launch_facts(overrides: list[str] | None, resume: bool) -> dict[str, Any]:
    """This launch: command line (redacted), overrides, and the machine's facts."""
    argv = [Path(sys.argv[0]).name if sys.argv else "gptexp", *sys.argv[1:]]
    return {
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": [redact(part) for part in argv],
        "cwd": os.getcwd(),
        "overrides": [redact(o) for o in overrides] if overrides is not None else None,
        "resume": resume,
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "gpus": gpu_models(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "cuda": torch_cuda_version(),
        "gptexp": _version("gptexp"),
    }


def append_launch(run_dir: Path, facts: dict[str, Any]) -> None:
    """Append one launch to the run's launches.jsonl."""
    with open(run_dir / LAUNCHES_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(facts) + "\n")


def read_launches(run_dir: Path) -> list[dict[str, Any]]:
    """Every launch of a run, oldest first (lines that do not parse are left out)."""
    try:
        lines = (run_dir / LAUNCHES_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    launches = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            launches.append(value)
    return launches
