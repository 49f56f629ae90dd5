"""Start-up overhead of `gptexp run`: a 1-step run of a tiny model, split into its parts.

    python benchmarks/overhead.py [--repeats 3]

Parts, each the median of --repeats runs in fresh processes (the data cache is warm, as it is
for every run after the first on a corpus):
  * CLI import: `import gptexp.cli` (the parent never imports torch or wandb)
  * import torch: what every worker pays
  * bare torchrun: torchrun starting one worker that imports torch and exits
  * gptexp run, W&B disabled / offline: the whole command, max_steps=1
  * trainer wall time: from the worker's Trainer() to its summary (summary.json)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "name": "overhead",
    "data": {"path": str(ROOT / "data" / "tinyshakespeare.txt")},
    "tokenizer": {"kind": "char"},
    "model": {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32},
    "train": {"batch_size": 4, "max_steps": 1, "eval_batches": 1, "eval_every": 1},
}


def timed(command: list[str], cwd: Path = ROOT) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def median_of(repeats: int, command: list[str]) -> float:
    return statistics.median(timed(command) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gptexp = [sys.executable, "-m", "gptexp.cli"]

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        spec_path = tmp_path / "overhead.yaml"
        spec_path.write_text(yaml.safe_dump(SPEC))
        runs = tmp_path / "runs"
        run = gptexp + ["run", str(spec_path), "--runs-dir", str(runs)]
        timed(run + ["--set", "tracking.wandb.mode=disabled"])  # warm the data cache

        worker = tmp_path / "worker.py"
        worker.write_text("import torch\n")
        rows = [
            ("CLI import (parent: no torch, no wandb)", median_of(args.repeats, [sys.executable, "-c", "import gptexp.cli"])),
            ("python + import torch", median_of(args.repeats, [sys.executable, "-c", "import torch"])),
            ("python + import wandb", median_of(args.repeats, [sys.executable, "-c", "import wandb"])),
            ("bare torchrun, 1 worker importing torch",
             median_of(args.repeats, [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", str(worker)])),
            ("gptexp run, 1 step, W&B disabled", median_of(args.repeats, run + ["--set", "tracking.wandb.mode=disabled"])),
            ("gptexp run, 1 step, W&B offline", median_of(args.repeats, run + ["--set", "tracking.wandb.mode=offline"])),
        ]
        trainer_walls = [json.loads(p.read_text())["wall_time_s"] for p in runs.glob("*/summary.json")]
        rows.append(("trainer: Trainer() to summary (median over those runs)", statistics.median(trainer_walls)))

    print("| part | seconds |\n|---|---:|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} |")
    offline = rows[5][1]
    print(f"\nW&B offline adds {rows[5][1] - rows[4][1]:.2f} s; whole command {offline:.2f} s (goal: at most 5 s).")


if __name__ == "__main__":
    main()
