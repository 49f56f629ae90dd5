#!/usr/bin/env bash
# Download, on a machine with a package index, the wheels benchmarks/gpu_session.sh installs on an
# offline GPU machine whose image already holds torch (CUDA), numpy, PyYAML, regex, rich, typer,
# pytest and hypothesis but not pydantic (Python 3.12, x86-64). They land in .whl/ (git-ignored),
# which travels with the working tree.
#   bash benchmarks/gpu_wheels.sh [PYTHON_VERSION]      (default 3.12)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.12}
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl pydantic==2.13.4 pydantic_core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 \
  typing_extensions==4.16.0
ls -1 .whl
