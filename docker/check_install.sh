#!/usr/bin/env bash
# Slow check of docker/Dockerfile without a Docker engine (not part of pytest): replay the image's
# install steps in a fresh virtualenv under /tmp and run `gptexp --help` from it.
#
#   docker/check_install.sh
#
# The Dockerfile's COPY steps are replayed into a scratch WORKDIR and its RUN steps that install
# (pip / python) are run there, with the ARG defaults of the Dockerfile as their environment, in
# order. System steps (useradd, chown) are listed and skipped. Torch is the one deviation: it is
# taken as TORCH_SPEC=torch==2.13.0 from this machine's package index (a CPU build on disk)
# instead of the Dockerfile's download index; override with TORCH_SPEC / TORCH_INDEX.
# KEEP=1 keeps the scratch directory. Exit 0 when every step and the final checks pass.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3.11}
work=$(mktemp -d /tmp/gptexp-check-install.XXXXXX)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
echo "check_install: scratch $work"

"$python" -m venv "$work/venv"
export PATH="$work/venv/bin:$PATH"
export VIRTUAL_ENV="$work/venv"
mkdir -p "$work/app"

# Steps of the Dockerfile, one per line: ARG name=default | COPY src dst | RUN command.
steps=$("$python" - "$repo/docker/Dockerfile" <<'EOF'
import shlex, sys
text = open(sys.argv[1], encoding="utf-8").read()
logical, current = [], ""
for line in text.splitlines():
    if not current and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if line.rstrip().endswith("\\"):
        current += line.rstrip()[:-1] + " "
        continue
    logical.append(current + line)
    current = ""
for line in logical:
    keyword, _, rest = line.strip().partition(" ")
    keyword, rest = keyword.upper(), rest.strip()
    if keyword == "ARG" and "=" in rest:
        name, _, default = rest.partition("=")
        print("ARG", name, shlex.split(default)[0] if default else "")
    elif keyword == "COPY":
        print("COPY", rest)
    elif keyword == "RUN":
        print("RUN", rest.replace("\n", " "))
EOF
)

export TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
export TORCH_INDEX=${TORCH_INDEX:-}
while IFS= read -r step; do
  kind=${step%% *}; body=${step#* }
  case "$kind" in
    ARG)
      name=${body%% *}; default=${body#* }; [ "$default" = "$name" ] && default=""
      if [ -z "${!name+set}" ]; then export "$name=$default"; fi
      echo "check_install: ARG $name=${!name}" ;;
    COPY)
      read -r src dst <<<"$body"
      if [ -d "$repo/$src" ]; then
        mkdir -p "$work/app/$dst" && cp -a "$repo/$src/." "$work/app/$dst"
      else
        cp -a "$repo/$src" "$work/app/$dst"
      fi
      find "$work/app" -name __pycache__ -type d -prune -exec rm -rf {} +
      echo "check_install: COPY $src -> /app/$dst" ;;
    RUN)
      if [[ "$body" == pip\ * || "$body" == python\ * ]]; then
        echo "check_install: RUN ${body:0:100}..."
        (cd "$work/app" && sh -ec "$body") </dev/null
      else
        echo "check_install: skip system step: RUN $body"
      fi ;;
  esac
done <<<"$steps"

cd "$work"  # not the app directory: the installed package must work on its own
gptexp --help >/dev/null
installed=$(python -c "import gptexp, torch; print(gptexp.__file__, torch.__version__)")
optuna-dashboard --version >/dev/null
python -c "import psycopg, optuna, wandb" 2>/dev/null
case "$installed" in
  "$work/venv/"*) ;;
  *) echo "check_install: gptexp imported from outside the virtualenv: $installed" >&2; exit 1 ;;
esac
echo "check_install: gptexp --help OK; installed: $installed; optuna-dashboard OK; psycopg OK"
echo "check_install: virtualenv size $(du -sh "$work/venv" | cut -f1)"
