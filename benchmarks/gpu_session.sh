#!/usr/bin/env bash
# One GPU session, one command: install gptexp, run the CUDA tests and the GPT-2-small benchmark,
# and leave every result in $OUT (default ./gpu-results). About 5 minutes on an H100/H200; every
# stage has its own time limit so that the whole stays under 10.
#
#   bash benchmarks/gpu_session.sh
#
# Install: on a machine with a package index, `pip install -e '.[test]'` (torch's CUDA build comes
# from PyPI). On an offline machine whose image holds torch with CUDA (the lent H200 machines), only
# the packages the image lacks are installed, from wheels in .whl/ (benchmarks/gpu_wheels.sh fetches
# them beforehand; carry .whl with the working tree), into /tmp/site; gptexp runs from this checkout.
#
# Results ($OUT): gpu.csv (nvidia-smi), session.log (everything printed), pytest.log (tests/test_gpu.py
# and tests/test_mfu.py), gpu_bench.json (compiled), gpu_bench_eager.json (torch.compile off).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled WANDB_SILENT=true
PY=${PYTHON:-python3}
started=$(date +%s)
stage() { echo "=== $(( $(date +%s) - started ))s: $*"; }

stage "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.csv"

stage "install"
if ! $PY -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  $PY -m pip install -e '.[test]' || { echo "install failed"; exit 1; }
elif ! $PY -c "import pydantic, typer, rich, regex, yaml, numpy, pytest, hypothesis" 2>/dev/null; then
  if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site
  else
    $PY -m pip install -e '.[test]' || { echo "install failed (offline? run benchmarks/gpu_wheels.sh and carry .whl)"; exit 1; }
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
$PY -c "import torch, gptexp; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'gptexp', gptexp.__file__)" \
  || { echo "gptexp does not import"; exit 1; }

status=0
stage "CUDA tests (tests/test_gpu.py, tests/test_mfu.py)"
timeout 300 $PY -m pytest tests/test_gpu.py tests/test_mfu.py -v -rs -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

stage "benchmark: GPT-2 small (124M, block 1024), bf16, torch.compile"
timeout 240 $PY benchmarks/gpu.py --steps 50 --warmup 10 --batch-size 32 --out "$OUT/gpu_bench.json" || status=1

stage "benchmark: the same, eager (train.compile: false)"
timeout 120 $PY benchmarks/gpu.py --steps 20 --warmup 3 --batch-size 32 --no-compile --out "$OUT/gpu_bench_eager.json" || status=1

stage "done (exit $status)"
exit $status
