"""docker/Dockerfile, docker/compose.yaml and /.dockerignore, checked without a Docker engine.

What an engine would catch first is checked here: the Dockerfile's instruction order (cache-friendly
layers, non-root user, `gptexp` entry point), the compose services and their wiring, that no
password is written anywhere, and that every command a container runs is accepted by the real CLI
parser (gptexp's, optuna-dashboard's). The install steps themselves are replayed by the slower
docker/check_install.sh, which is not part of this suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from gptexp import launchfiles
from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
COMPOSE = REPO_ROOT / "docker" / "compose.yaml"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
URL_WITH_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:[^@\s]+@")


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; comments dropped, backslash continuations joined."""
    instructions, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (current + line).strip().partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def index_of(instructions: list[tuple[str, str]], keyword: str, containing: str = "") -> int:
    for i, (kw, rest) in enumerate(instructions):
        if kw == keyword and containing in rest:
            return i
    raise AssertionError(f"no {keyword} {containing!r} in the Dockerfile")


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with an empty environment, and `$$` as a literal `$`."""
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)
    return value.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Dockerfile


def test_base_image_and_torch_index_are_build_args() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("ARG", "BASE=python:3.11-slim")
    assert instructions[1] == ("FROM", "${BASE}")
    args = dict(rest.split("=", 1) for kw, rest in instructions if kw == "ARG")
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    torch_step = index_of(instructions, "RUN", "$TORCH_SPEC")
    assert "TORCH_INDEX" in instructions[torch_step][1]


def test_layers_are_cache_friendly() -> None:
    """torch, then dependencies from pyproject.toml alone, then the sources: a code edit reinstalls only gptexp."""
    instructions = dockerfile_instructions()
    torch_step = index_of(instructions, "RUN", "$TORCH_SPEC")
    copy_pyproject = index_of(instructions, "COPY", "pyproject.toml")
    dependencies = index_of(instructions, "RUN", "requirements")
    copy_sources = index_of(instructions, "COPY", "gptexp/")
    install_self = index_of(instructions, "RUN", "--no-deps .")
    assert torch_step < copy_pyproject < dependencies < copy_sources < install_self
    assert instructions[copy_pyproject][1].split()[0] == "pyproject.toml"  # nothing else in that layer
    for kw, rest in instructions:
        if kw == "RUN" and "pip install" in rest:
            assert rest.count("pip install") == rest.count("pip install --no-cache-dir"), rest


def test_runs_as_a_non_root_user_with_gptexp_as_entry_point_and_runs_as_a_volume() -> None:
    instructions = dockerfile_instructions()
    user = index_of(instructions, "USER")
    assert instructions[user][1] not in ("root", "0", "0:0")
    assert all(kw != "RUN" for kw, _ in instructions[user:]), "everything the container runs comes after USER"
    assert f"--uid {launchfiles.IMAGE_UID}" in instructions[index_of(instructions, "RUN", "useradd")][1]
    assert json.loads(instructions[index_of(instructions, "ENTRYPOINT")][1]) == ["gptexp"]
    assert instructions[index_of(instructions, "WORKDIR")][1] == str(launchfiles.IMAGE_WORKDIR)
    assert json.loads(instructions[index_of(instructions, "VOLUME")][1]) == [str(launchfiles.IMAGE_RUNS_DIR)]
    env = instructions[index_of(instructions, "ENV", "GPTEXP_RUNS_DIR")][1]
    assert f"GPTEXP_RUNS_DIR={launchfiles.IMAGE_RUNS_DIR}" in env


def test_the_corpus_and_the_ready_specs_are_shipped() -> None:
    copied = [rest.split()[0] for kw, rest in dockerfile_instructions() if kw == "COPY"]
    assert "data/" in copied and (REPO_ROOT / "data" / "tinyshakespeare.txt").is_file()
    for source in copied:
        assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_no_secret_is_built_into_the_image() -> None:
    for kw, rest in dockerfile_instructions():
        if kw in ("ARG", "ENV"):
            assert not re.search(r"PASSWORD|API_KEY|TOKEN|SECRET", rest, re.IGNORECASE), rest


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "an allowlist: nothing enters the build context unless listed"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {rest.split()[0].rstrip("/") for kw, rest in dockerfile_instructions() if kw == "COPY"}
    assert copied <= allowed
    assert not any(entry.startswith("docker") or "secret" in entry for entry in allowed)


# ---------------------------------------------------------------------------------------------
# compose


def test_compose_has_postgres_sweep_workers_and_a_dashboard(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "sweep-worker", "optuna-dashboard"}
    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:\d+", postgres["image"])  # the official image, a pinned major version
    volume, _, mount = postgres["volumes"][0].partition(":")
    assert volume in compose["volumes"] and mount == "/var/lib/postgresql/data"
    test = postgres["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL" and "pg_isready" in test[1]
    for name in ("sweep-worker", "optuna-dashboard"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert (COMPOSE.parent / build["context"] / ".dockerignore").resolve() == DOCKERIGNORE
    assert services["sweep-worker"]["deploy"]["replicas"] >= 1
    assert "8080:8080" in services["optuna-dashboard"]["ports"][0]


def test_no_password_is_written_in_the_compose_file(compose: dict) -> None:
    text = COMPOSE.read_text()
    assert not URL_WITH_PASSWORD.search(text)
    postgres_env = compose["services"]["postgres"]["environment"]
    assert "POSTGRES_PASSWORD" not in postgres_env
    assert postgres_env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    # PGPASSWORD is only ever set from the secret file, at run time
    from_secret = 'PGPASSWORD="$$(cat "$$PGPASSWORD_FILE")"'
    assert text.count("PGPASSWORD=") == text.count(from_secret) == 2
    assert compose["secrets"]["postgres_password"] == {"file": "./secrets/postgres_password"}
    for name, service in compose["services"].items():
        assert service.get("secrets") == ["postgres_password"], name
        environment = service.get("environment", {})
        pairs = environment.items() if isinstance(environment, dict) else (e.partition("=")[::2] for e in environment)
        for key, value in pairs:
            if re.search(r"PASSWORD|KEY|SECRET|TOKEN", key) and value:
                assert str(value).startswith("/run/secrets/"), f"{name}: {key} has a literal value"


def storage_url(command: list[str]) -> str:
    urls = [interpolate(part) for part in command if part.startswith("postgresql")]
    assert len(urls) == 1
    return urls[0]


def test_workers_and_dashboard_share_one_storage_without_a_password(compose: dict) -> None:
    worker = compose["services"]["sweep-worker"]["command"]
    dashboard = compose["services"]["optuna-dashboard"]["command"]
    assert storage_url(worker) == storage_url(dashboard) == "postgresql+psycopg://gptexp@postgres:5432/gptexp"
    postgres = compose["services"]["postgres"]["environment"]
    assert f"//{postgres['POSTGRES_USER']}@" in storage_url(worker) and storage_url(worker).endswith(f"/{postgres['POSTGRES_DB']}")


def app_with(command: str) -> typer.Typer:
    """The real CLI, which must hold `command` in its table."""
    from gptexp.cli import app

    names = {c.name for c in app.registered_commands}
    assert command in names, f"gptexp has no {command!r} command"
    return app


def test_the_sweep_worker_command_is_a_valid_gptexp_invocation(compose: dict) -> None:
    argv = [interpolate(part) for part in compose["services"]["sweep-worker"]["command"]]
    assert argv[0] == "sweep"
    result = CliRunner().invoke(app_with("sweep"), [*argv, "--help"])  # unknown options fail before --help
    assert result.exit_code == 0, result.output
    sweep_file = REPO_ROOT / argv[1]
    assert sweep_file.is_file(), f"{argv[1]}: the default sweep is not in the repository"
    from gptexp.sweep.spec import load_sweep_spec

    cwd = os.getcwd()
    os.chdir(REPO_ROOT)  # the image's WORKDIR holds the repository layout; sweep paths are relative to it
    try:
        load_sweep_spec(sweep_file)
    finally:
        os.chdir(cwd)


class _Parsed(Exception):
    pass


def test_the_dashboard_command_is_a_valid_optuna_dashboard_invocation(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = pytest.importorskip("optuna_dashboard._cli", reason="optuna-dashboard is not installed here (the image has it)")
    service = compose["services"]["optuna-dashboard"]
    argv = [interpolate(part) for part in service["command"]]
    parsed = {}
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        parsed["args"] = original(self, args, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", ["optuna-dashboard", *argv])
    with pytest.raises(_Parsed):
        cli.main()
    args = parsed["args"]
    assert args.host == "0.0.0.0" and int(args.port) == 8080 and args.storage == storage_url(argv)


@pytest.mark.parametrize("service,program", [("sweep-worker", "gptexp"), ("optuna-dashboard", "optuna-dashboard")])
def test_entrypoint_reads_the_password_secret_and_execs_the_program(compose: dict, tmp_path: Path, service: str, program: str) -> None:
    """Run the service's entrypoint with sh, a secret file and a stand-in program that reports what it got."""
    entrypoint = [interpolate(part) for part in compose["services"][service]["entrypoint"]]
    command = [interpolate(part) for part in compose["services"][service]["command"]]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = bin_dir / program
    stand_in.write_text('#!/bin/sh\necho "PGPASSWORD=$PGPASSWORD"\nprintf "%s\\n" "$@"\n')
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    secret = tmp_path / "postgres_password"
    secret.write_text("s3cret-value\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PGPASSWORD_FILE": str(secret)}
    result = subprocess.run(["sh", *entrypoint[1:], *command], env=env, capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "PGPASSWORD=s3cret-value"  # $(cat) drops the file's trailing newline
    assert lines[1:] == command
    environment = compose["services"][service]["environment"]
    assert "PGPASSWORD_FILE=/run/secrets/postgres_password" in environment


def test_compose_command_lines_in_comments_use_this_file() -> None:
    commands = [line for line in COMPOSE.read_text().splitlines() if "docker compose" in line]
    assert commands and all("-f docker/compose.yaml" in line for line in commands)
    up = shlex.split(commands[0].lstrip("# "))
    assert "--scale" in up and up[up.index("--scale") + 1].startswith("sweep-worker=")
