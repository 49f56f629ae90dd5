"""`gptexp launch-file`: the sbatch script and the PyTorchJob manifest, checked as their users see them.

The Slurm script is run for real with stand-ins for scontrol, sbcast, srun and gptexp on PATH, so
the test reads the `gptexp run` argv and spec file each node would get. Each argv is also handed to
the real `gptexp run` parser with --help appended (every option must exist). No cluster runs here.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from gptexp import launchfiles
from gptexp.spec import load_spec, validate_spec
from tests.conftest import CORPUS, REPO_ROOT

SPEC = REPO_ROOT / "experiments" / "clm_char.yaml"


def cli_app() -> typer.Typer:
    from gptexp.cli import app

    return app


def invoke(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(cli_app(), ["launch-file", *args], env=env)


def assert_valid_run_argv(argv: list[str]) -> None:
    """The real `gptexp run` accepts these options (click rejects an unknown one before --help)."""
    from gptexp.cli import app

    assert argv[0] == "run"
    result = CliRunner().invoke(app, [*argv, "--help"])
    assert result.exit_code == 0, result.output


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_command_table_holds_launch_file() -> None:
    from gptexp.cli import app

    assert "launch-file" in [command.name for command in app.registered_commands], \
        "add launch-file to the command table (gptexp/cli/commands.py)"


# ---------------------------------------------------------------------------------------------
# Slurm


def sbatch_directives(script: str) -> dict[str, str]:
    directives = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            key, _, value = line.removeprefix("#SBATCH ").partition("=")
            directives[key] = value
    return directives


def fake_tools(bin_dir: Path, log_dir: Path) -> None:
    """scontrol, sbcast, srun and gptexp that record what they were asked to do."""
    tools = {
        "scontrol": 'echo node-a; echo node-b',
        "sbcast": 'cp "$2" "$3"',  # sbcast --force SRC DST
        # srun: record its own options, then run the command once (as one node would)
        "srun": f'while [ "${{1#--}}" != "$1" ]; do echo "$1" >> {log_dir}/srun; shift; done; exec "$@"',
        "gptexp": f'printf "%s\\n" "$@" > {log_dir}/argv; cp "$2" {log_dir}/spec.yaml',
    }
    for name, body in tools.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_sbatch_script(script: Path, tmp_path: Path, nodes: int, cpus: str | None = None) -> tuple[list[str], list[str], Path]:
    """Run `script` as sbatch would on the first node; returns gptexp's argv, srun's options, the spec it got."""
    bin_dir, log_dir, submit_dir = tmp_path / "bin", tmp_path / "log", tmp_path / "submit"
    for directory in (bin_dir, log_dir, submit_dir):
        directory.mkdir()
    fake_tools(bin_dir, log_dir)
    job_id = str(10_000 + secrets.randbelow(80_000))
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": job_id, "SLURM_NNODES": str(nodes),
           "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_SUBMIT_DIR": str(submit_dir), "HOME": str(tmp_path)}
    if cpus:
        env["SLURM_CPUS_PER_TASK"] = cpus
    try:
        result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        argv = (log_dir / "argv").read_text().splitlines()
        srun = (log_dir / "srun").read_text().splitlines()
        assert argv[1] == f"/tmp/gptexp-{job_id}.spec.yaml"
        return argv, srun, log_dir / "spec.yaml"
    finally:
        for leftover in Path("/tmp").glob(f"gptexp-{job_id}.spec.yaml*"):
            leftover.unlink()


def test_slurm_script_starts_gptexp_run_on_every_node_with_a_shared_rendezvous(tmp_path: Path) -> None:
    out = tmp_path / "job.sbatch"
    result = invoke([str(SPEC), "--slurm", "--nodes", "2", "--gpus-per-node", "4", "--partition", "gpu",
                     "--time", "04:00:00", "--cpus-per-task", "16", "--set", "train.max_steps=100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    script = out.read_text()
    assert subprocess.run(["bash", "-n", str(out)], capture_output=True).returncode == 0
    assert sbatch_directives(script) == {
        "--job-name": "clm-char", "--nodes": "2", "--ntasks-per-node": "1", "--gpus-per-node": "4",
        "--cpus-per-task": "16", "--partition": "gpu", "--time": "04:00:00", "--signal": "TERM@120",
        "--output": "%x-%j.out"}
    assert 'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)' in script

    argv, srun, spec_file = run_sbatch_script(out, tmp_path, nodes=2, cpus="16")
    job_id = re.search(r"gptexp-(\d+)\.spec", argv[1]).group(1)
    assert argv[0] == "run"
    assert option(argv, "--nnodes") == "2" and option(argv, "--nproc") == "4"
    assert option(argv, "--rdzv-endpoint") == f"node-a:{20000 + int(job_id) % 20000}"
    assert option(argv, "--run-id") == f"clm-char-slurm-{job_id}"
    assert option(argv, "--runs-dir") == str(tmp_path / "submit" / "runs")
    assert srun == ["--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--cpus-per-task=16"]
    assert_valid_run_argv(argv)

    shipped = load_spec(spec_file)  # the heredoc arrived intact and validates
    expected = load_spec(SPEC, ["train.max_steps=100"])
    assert shipped.train.max_steps == 100 and shipped.data.path == expected.data.path == str(CORPUS)
    assert (shipped.launch.nnodes, shipped.launch.nproc) == (2, 4)
    assert shipped.model == expected.model and shipped.optim == expected.optim


def test_slurm_single_cpu_node_uses_no_rendezvous_and_requests_no_gpus(tmp_path: Path) -> None:
    out = tmp_path / "job.sbatch"
    result = invoke([str(SPEC), "--slurm", "--gpus-per-node", "0", "--set", "launch.nproc=2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    script = out.read_text()
    assert "--gpus-per-node" not in sbatch_directives(script) and sbatch_directives(script)["--nodes"] == "1"
    argv, srun, _ = run_sbatch_script(out, tmp_path, nodes=1)
    assert "--rdzv-endpoint" not in argv and option(argv, "--nproc") == "2" and option(argv, "--nnodes") == "1"
    assert_valid_run_argv(argv)


def test_slurm_script_goes_to_stdout_without_out() -> None:
    result = invoke([str(SPEC), "--slurm", "--nodes", "2"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("#!/bin/bash\n#SBATCH ")


def test_a_spec_name_cannot_inject_shell_commands(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    marker = tmp_path / "pwned"
    raw = yaml.safe_load(SPEC.read_text())
    raw["name"] = f"x'; $(touch {marker}) #"
    spec.write_text(yaml.safe_dump(raw))
    out = tmp_path / "job.sbatch"
    assert invoke([str(spec), "--slurm", "--nodes", "2", "--out", str(out)]).exit_code == 0
    run_sbatch_script(out, tmp_path, nodes=2)
    assert not marker.exists()
    # A newline would end the comment line the name is written on: the spec refuses it outright.
    raw["name"] = f"x\ntouch {marker}\n"
    spec.write_text(yaml.safe_dump(raw))
    result = invoke([str(spec), "--slurm", "--nodes", "2", "--out", str(out)])
    assert result.exit_code == 2 and "control character" in result.output


# ---------------------------------------------------------------------------------------------
# Kubernetes


def manifest(args: list[str], env: dict[str, str] | None = None) -> tuple[str, list[dict]]:
    result = invoke([str(SPEC), "--k8s", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout, list(yaml.safe_load_all(result.stdout))


def test_k8s_manifest_is_a_pytorchjob_with_its_spec_in_a_configmap() -> None:
    _, documents = manifest(["--nodes", "3", "--gpus-per-node", "2", "--image", "registry.example/gptexp:cuda",
                             "--cpu", "8", "--memory", "32Gi", "--job-name", "clm-test", "--runs-pvc", "shared-runs"])
    config, job = documents
    assert config["apiVersion"] == "v1" and config["kind"] == "ConfigMap"
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    assert job["metadata"]["name"] == "clm-test"
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    for role in replicas.values():
        assert role["restartPolicy"] in ("Never", "OnFailure", "Always", "ExitCode")
        pod = role["template"]["spec"]
        container = pod["containers"][0]
        assert container["name"] == "pytorch"
        assert container["image"] == "registry.example/gptexp:cuda"
        assert container["command"] == ["gptexp"]
        assert container["resources"]["limits"] == {"nvidia.com/gpu": 2, "cpu": "8", "memory": "32Gi"}
        args = container["args"]
        assert option(args, "--nnodes") == "3" and option(args, "--nproc") == "2"
        assert option(args, "--rdzv-endpoint") == "$(MASTER_ADDR):$(MASTER_PORT)"
        assert option(args, "--run-id") == "clm-test"
        assert_valid_run_argv(args)
        # the spec the pods read is the ConfigMap, mounted where args point
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
        assert volumes["spec"]["configMap"]["name"] == config["metadata"]["name"]
        assert Path(args[1]) == Path(mounts["spec"]) / "spec.yaml" and "spec.yaml" in config["data"]
        assert mounts["runs"] == option(args, "--runs-dir")
        assert volumes["runs"]["persistentVolumeClaim"] == {"claimName": "shared-runs"}  # one run store for all pods

    shipped = validate_spec(yaml.safe_load(config["data"]["spec.yaml"]), "configmap")
    assert shipped.data.path == "/app/data/tinyshakespeare.txt"  # the corpus as the image holds it
    assert (shipped.launch.nnodes, shipped.launch.nproc) == (3, 2)
    assert shipped.model == load_spec(SPEC).model


def test_k8s_single_cpu_pod_has_no_worker_and_no_gpu() -> None:
    _, (_, job) = manifest(["--nodes", "1", "--gpus-per-node", "0", "--runs-pvc", "gptexp-runs"])
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert list(replicas) == ["Master"]
    pod = replicas["Master"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "--rdzv-endpoint" not in pod["containers"][0]["args"]
    runs = next(volume for volume in pod["volumes"] if volume["name"] == "runs")
    assert runs["persistentVolumeClaim"] == {"claimName": "gptexp-runs"}


def test_k8s_default_job_name_is_a_fresh_valid_name_and_run_id() -> None:
    _, (_, job) = manifest(["--nodes", "2", "--runs-pvc", "runs"])
    name = job["metadata"]["name"]
    assert re.fullmatch(r"clm-char-\d{8}-\d{6}", name)
    assert option(job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"], "--run-id") == name


def test_k8s_trainjob_is_a_kubeflow_trainer_v2_job_with_the_same_run_command() -> None:
    _, (config, job) = manifest(["--k8s-api", "trainjob", "--nodes", "3", "--gpus-per-node", "2", "--image",
                                 "registry.example/gptexp:cuda", "--cpu", "8", "--memory", "32Gi", "--job-name",
                                 "clm-test", "--runs-pvc", "shared-runs"])
    assert config["kind"] == "ConfigMap"
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    assert job["metadata"]["name"] == "clm-test"
    spec = job["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    trainer = spec["trainer"]
    assert set(trainer) == {"image", "command", "args", "env", "numNodes", "resourcesPerNode"}
    assert trainer["numNodes"] == 3 and trainer["image"] == "registry.example/gptexp:cuda"
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": 2, "cpu": "8", "memory": "32Gi"}}
    assert trainer["command"] == ["gptexp"]
    args = trainer["args"]
    assert option(args, "--nnodes") == "3" and option(args, "--nproc") == "2" and option(args, "--run-id") == "clm-test"
    assert option(args, "--rdzv-endpoint") == "$(PET_MASTER_ADDR):$(PET_MASTER_PORT)"  # set by the torch runtime
    assert_valid_run_argv(args)
    assert {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "gptexp-secrets", "key": "wandb-api-key",
                                                                    "optional": True}}} in trainer["env"]
    # volumes reach the runtime's "node" pods through one runtime patch owned by gptexp
    (patch,) = spec["runtimePatches"]
    assert patch["manager"] == "gptexp"
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert replicated["name"] == "node"
    pod = replicated["template"]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    (container,) = pod["containers"]
    assert container["name"] == "node" and set(container) == {"name", "volumeMounts"}  # env only via trainer.env
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert volumes["spec"]["configMap"]["name"] == config["metadata"]["name"]
    assert Path(args[1]) == Path(mounts["spec"]) / "spec.yaml"
    assert mounts["runs"] == option(args, "--runs-dir")
    assert volumes["runs"]["persistentVolumeClaim"] == {"claimName": "shared-runs"}
    assert pod["securityContext"] == {"fsGroup": 10001}


def test_k8s_trainjob_runtime_flag_and_the_legacy_default() -> None:
    text, (_, job) = manifest(["--k8s-api", "trainjob", "--runtime", "torch-cuda-251", "--nodes", "1", "--gpus-per-node", "0"])
    assert job["spec"]["runtimeRef"]["name"] == "torch-cuda-251"
    assert "--rdzv-endpoint" not in job["spec"]["trainer"]["args"]
    assert "nvidia.com/gpu" not in job["spec"]["trainer"]["resourcesPerNode"]["limits"]
    assert "Kubeflow Trainer v2" in text
    _, (_, legacy) = manifest(["--nodes", "1", "--gpus-per-node", "0"])
    assert legacy["kind"] == "PyTorchJob"
    _, (_, explicit) = manifest(["--k8s-api", "pytorchjob", "--nodes", "1", "--gpus-per-node", "0"])
    assert explicit["kind"] == "PyTorchJob"


# ---------------------------------------------------------------------------------------------
# secrets


def test_secrets_in_the_environment_are_referenced_never_written(tmp_path: Path) -> None:
    env = {"WANDB_API_KEY": secrets.token_hex(20), "PGPASSWORD": secrets.token_hex(12),
           "GPTEXP_OPTUNA_STORAGE": f"postgresql+psycopg://u:{secrets.token_hex(8)}@db/x"}
    text, (_, job) = manifest(["--nodes", "2", "--runs-pvc", "runs", "--set", "tracking.wandb.mode=online"], env=env)
    out = tmp_path / "job.sbatch"
    assert invoke([str(SPEC), "--slurm", "--nodes", "2", "--out", str(out)], env=env).exit_code == 0
    for generated in (text, out.read_text()):
        for value in env.values():
            assert value not in generated
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "gptexp-secrets", "key": "wandb-api-key",
                                                                    "optional": True}}} in container["env"]


@pytest.mark.parametrize("target", ["--slurm", "--k8s"])
def test_a_spec_holding_a_secret_is_refused_and_the_secret_not_echoed(tmp_path: Path, target: str) -> None:
    key = secrets.token_hex(20)
    out = tmp_path / "launch.txt"
    result = invoke([str(SPEC), target, "--set", f"tracking.wandb.tags=[{key}]", "--out", str(out)],
                    env={"WANDB_API_KEY": key})
    assert result.exit_code == 2
    assert "$WANDB_API_KEY" in result.output and key not in result.output
    assert not out.exists()
    password_url = invoke([str(SPEC), target, "--set", "tracking.wandb.group=postgresql://me:hunter22@db/x"])
    assert password_url.exit_code == 2 and "password" in password_url.output and "hunter22" not in password_url.output


# ---------------------------------------------------------------------------------------------
# bad input: exit 2, one line, no traceback

BAD = [
    ([str(SPEC)], "choose one target"),
    ([str(SPEC), "--slurm", "--k8s"], "choose one target"),
    ([str(SPEC), "--slurm", "--nodes", "0"], "--nodes 0: must be at least 1"),
    ([str(SPEC), "--k8s", "--gpus-per-node", "-1"], "--gpus-per-node -1"),
    ([str(SPEC), "--k8s", "--partition", "gpu"], "--partition is not an option of --k8s"),
    ([str(SPEC), "--slurm", "--image", "x"], "--image is not an option of --slurm"),
    ([str(SPEC), "--slurm", "--time", "soon"], "--time 'soon'"),
    ([str(SPEC), "--slurm", "--cpus-per-task", "0"], "--cpus-per-task 0"),
    ([str(SPEC), "--slurm", "--job-name", "a b"], "--job-name 'a b'"),
    ([str(SPEC), "--k8s", "--memory", "lots"], "--memory 'lots'"),
    ([str(SPEC), "--k8s", "--job-name", "Upper_Case"], "--job-name 'Upper_Case'"),
    ([str(SPEC), "--k8s", "--image", "bad image"], "--image 'bad image'"),
    ([str(SPEC), "--k8s", "--k8s-api", "mpijob"], "--k8s-api 'mpijob': expected one of pytorchjob, trainjob"),
    ([str(SPEC), "--k8s", "--runtime", "torch-distributed"], "--runtime goes with --k8s-api trainjob"),
    ([str(SPEC), "--k8s", "--k8s-api", "trainjob", "--runtime", "Bad_Name"], "--runtime 'Bad_Name'"),
    ([str(SPEC), "--slurm", "--k8s-api", "trainjob"], "--k8s-api is not an option of --slurm"),
    ([str(SPEC), "--k8s", "--nodes", "2"], "--nodes 2 needs --runs-pvc NAME"),
    ([str(SPEC), "--slurm", "--set", "train.device=cpu"], "train.device is cpu"),
    ([str(SPEC), "--k8s", "--gpus-per-node", "0", "--set", "launch.backend=nccl"], "launch.backend is nccl"),
    ([str(SPEC), "--slurm", "--set", "model.n_layer=-1"], "model.n_layer: Input should be greater than 0"),
    (["nope.yaml", "--slurm"], "nope.yaml: file not found"),
    ([str(SPEC), "--slurm", "--out", "/nonexistent-dir/job.sbatch"], "does not exist"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[message for _, message in BAD])
def test_bad_input_exits_2_with_one_message(args: list[str], message: str) -> None:
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# pure helpers


def test_dns_label() -> None:
    assert launchfiles.dns_label("MLM BPE v2!") == "mlm-bpe-v2"
    assert launchfiles.dns_label("___") == "gptexp"
    assert launchfiles.dns_label("a" * 80, 24) == "a" * 24


def test_spec_for_image_moves_a_corpus_under_the_root_into_the_workdir(tmp_path: Path) -> None:
    spec = load_spec(SPEC)
    moved, note = launchfiles.spec_for_image(spec, REPO_ROOT)
    assert moved.data.path == "/app/data/tinyshakespeare.txt" and spec.data.path == str(CORPUS)
    kept, note = launchfiles.spec_for_image(spec, tmp_path)
    assert kept.data.path == str(CORPUS) and "must exist in every pod" in note


def test_the_slurm_run_line_parses_into_the_documented_command() -> None:
    script = launchfiles.slurm_script(load_spec(SPEC), launchfiles.SlurmOptions(nodes=4, gpus_per_node=8, job_name="j"))
    joined = script.replace("\\\n", " ")
    srun_line = next(line for line in joined.splitlines() if line.startswith("srun "))
    argv = shlex.split(srun_line)
    gptexp = argv[argv.index("gptexp"):]
    assert gptexp[:3] == ["gptexp", "run", "$spec_file"]
    assert option(gptexp, "--nnodes") == "$SLURM_NNODES" and option(gptexp, "--nproc") == "8"
    assert option(gptexp, "--rdzv-endpoint") == "$head:$port" and option(gptexp, "--run-id") == "$run_id"


# ---------------------------------------------------------------------------------------------
# two nodes on this machine: the generated files drive a real 2-node run


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_two_node_spec(tmp_path: Path) -> Path:
    from tests.conftest import TINY_SPEC

    raw = yaml.safe_load(yaml.safe_dump(TINY_SPEC))
    raw["train"].update({"max_steps": 20, "eval_every": 10, "checkpoint_every": 20})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def wait_all(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    return [(p.wait(timeout=240), p.stdout.read()) for p in processes]


@pytest.mark.slow
def test_sbatch_script_runs_one_job_across_two_simulated_nodes(tmp_path: Path) -> None:
    """A fake srun starts the script's command twice on this machine, as two nodes with a shared runs dir."""
    script = tmp_path / "job.sbatch"
    assert invoke([str(tiny_two_node_spec(tmp_path)), "--slurm", "--nodes", "2", "--gpus-per-node", "0",
                   "--out", str(script)]).exit_code == 0
    bin_dir, submit = tmp_path / "bin", tmp_path / "submit"
    bin_dir.mkdir()
    submit.mkdir()
    tools = {
        "scontrol": "echo 127.0.0.1; echo 127.0.0.1",
        "sbcast": 'cp "$2" "$3"',
        "srun": 'while [ "${1#--}" != "$1" ]; do shift; done\n'
                '"$@" > node0.log 2>&1 & a=$!\n"$@" > node1.log 2>&1 & b=$!\n'
                'wait $a; ra=$?; wait $b; rb=$?; echo "nodes: $ra $rb"; [ $ra -eq 0 ] && [ $rb -eq 0 ]',
    }
    for name, body in tools.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    job_id = str(10_000 + secrets.randbelow(80_000))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": job_id, "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "x", "SLURM_SUBMIT_DIR": str(submit), "GPTEXP_RDZV_PORT": str(free_port()),
           "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    env.pop("GPTEXP_RUNS_DIR", None)
    try:
        result = subprocess.run(["bash", str(script)], cwd=submit, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for leftover in Path("/tmp").glob(f"gptexp-{job_id}.spec.yaml*"):
            leftover.unlink()
    logs = "".join((submit / f"node{i}.log").read_text() for i in range(2) if (submit / f"node{i}.log").exists())
    assert result.returncode == 0, result.stdout + result.stderr + logs
    status = json.loads((submit / "runs" / f"tiny-slurm-{job_id}" / "status.json").read_text())
    assert status["status"] == "completed" and status["world_size"] == 2


@pytest.mark.slow
def test_pytorchjob_pods_run_one_job_across_two_simulated_pods(tmp_path: Path) -> None:
    """Master and Worker args, with $(MASTER_ADDR):$(MASTER_PORT) expanded as Kubernetes does, on one machine."""
    spec = load_spec(tiny_two_node_spec(tmp_path))
    text = launchfiles.k8s_manifest(spec, launchfiles.K8sOptions(nodes=2, gpus_per_node=0, job_name="two-pods",
                                                                 runs_pvc="shared"))
    config, job = yaml.safe_load_all(text)
    spec_file = tmp_path / "spec.yaml"  # the ConfigMap as mounted
    spec_file.write_text(config["data"]["spec.yaml"])
    pod_env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    runs = tmp_path / "runs"  # the shared PersistentVolumeClaim
    processes = []
    for role in ("Master", "Worker"):
        container = job["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]["containers"][0]
        args = [re.sub(r"\$\((\w+)\)", lambda m: pod_env[m.group(1)], arg) for arg in container["args"]]
        args[args.index(str(launchfiles.POD_SPEC_FILE))] = str(spec_file)
        args[args.index("--runs-dir") + 1] = str(runs)
        from tests.conftest import start_cli

        processes.append(start_cli(args, env={"OMP_NUM_THREADS": "1"}))
    outcomes = wait_all(processes)
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    status = json.loads((runs / "two-pods" / "status.json").read_text())
    assert status["status"] == "completed" and status["world_size"] == 2


# ---------------------------------------------------------------------------------------------
# Slurm job array of sweep workers


def write_array_sweep(tmp_path: Path, **fields: object) -> Path:
    import yaml

    from tests.conftest import TINY_SPEC

    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(TINY_SPEC))
    sweep = {"experiment": "experiment.yaml", "space": {"optim.lr": {"low": 1e-3, "high": 1e-2}},
             "n_trials": 6, "workers": 2, "study": "arr", **fields}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return tmp_path / "sweep.yaml"


def test_a_sweep_array_runs_one_gptexp_sweep_per_task_on_a_shared_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The script is run by bash with Slurm's variables and a stand-in `gptexp` that records its argv."""
    import subprocess

    from gptexp.launchfiles import SweepArrayOptions, sweep_array_script
    from gptexp.sweep.spec import load_sweep_spec

    monkeypatch.chdir(tmp_path)
    sweep = load_sweep_spec(write_array_sweep(tmp_path))
    script = sweep_array_script(sweep, SweepArrayOptions(tasks=3, gpus_per_task=1, job_name="arr", time="02:00:00"))
    assert "#SBATCH --array=0-2\n" in script and "#SBATCH --gpus-per-node=1\n" in script
    assert "#SBATCH --signal=B:TERM@120\n" in script and "#SBATCH --time=02:00:00\n" in script
    bin_dir, submit = tmp_path / "bin", tmp_path / "submit"
    bin_dir.mkdir()
    submit.mkdir()
    (bin_dir / "gptexp").write_text('#!/bin/bash\necho "cwd=$PWD"\nprintf "%s\\n" "$@"\n')
    (bin_dir / "gptexp").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_SUBMIT_DIR": str(submit), "SLURM_ARRAY_TASK_ID": "1",
           "SLURM_ARRAY_JOB_ID": "77"}
    (tmp_path / "job.sh").write_text(script)
    ran = subprocess.run(["bash", str(tmp_path / "job.sh")], env=env, capture_output=True, text=True, cwd=submit)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == f"gptexp: sweep worker 1 of job 77 on {os.uname().nodename}, runs in {submit}/runs"
    assert lines[1] == f"cwd={tmp_path}"  # the sweep's relative experiment path resolves as when it was written
    assert lines[2:] == ["sweep", str(tmp_path / "sweep.yaml"), "--study", "arr", "--storage",
                         f"journal://{submit}/runs/arr.journal", "--runs-dir", f"{submit}/runs"]
    # $GPTEXP_OPTUNA_STORAGE wins over the default journal; a missing sweep file stops the task (exit 2).
    ran = subprocess.run(["bash", str(tmp_path / "job.sh")], env={**env, "GPTEXP_OPTUNA_STORAGE": "postgresql://u@h/db"},
                         capture_output=True, text=True, cwd=submit)
    assert "postgresql://u@h/db" in ran.stdout.splitlines()
    (tmp_path / "sweep.yaml").unlink()
    ran = subprocess.run(["bash", str(tmp_path / "job.sh")], env=env, capture_output=True, text=True, cwd=submit)
    assert ran.returncode == 2 and "is not on this node" in ran.stderr


def test_a_sweep_array_refuses_sqlite_and_too_many_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gptexp.launchfiles import SweepArrayOptions, sweep_array_script
    from gptexp.spec import SpecError
    from gptexp.sweep.spec import load_sweep_spec

    monkeypatch.chdir(tmp_path)
    options = SweepArrayOptions(tasks=2, gpus_per_task=0, job_name="arr")
    with pytest.raises(SpecError, match="storage: a SQLite storage cannot be shared by the tasks of a job array"):
        sweep_array_script(load_sweep_spec(write_array_sweep(tmp_path, storage="sqlite:///x.db")), options)
    sweep = load_sweep_spec(write_array_sweep(tmp_path, storage="journal:shared/s.journal"))
    script = sweep_array_script(sweep, options)
    assert f"storage=${{GPTEXP_OPTUNA_STORAGE:-journal://{tmp_path}/shared/s.journal}}" in script
    assert "--gpus-per-node" not in script
    with pytest.raises(SpecError, match="--array 1001: expected 1 to 1000 tasks"):
        sweep_array_script(sweep, SweepArrayOptions(tasks=1001, gpus_per_task=0, job_name="arr"))


def test_launch_file_array_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = write_array_sweep(tmp_path)
    result = invoke([str(sweep), "--slurm", "--array", "4", "--gpus-per-node", "0", "--out", str(tmp_path / "a.sh")])
    assert result.exit_code == 0, result.output
    assert "#SBATCH --array=0-3" in (tmp_path / "a.sh").read_text() and "sbatch" in result.output
    for args, message in [
        (["--k8s", "--array", "2"], "--array goes with --slurm"),
        (["--slurm", "--array", "2", "--nodes", "2"], "--nodes does not go with --array"),
        (["--slurm", "--array", "2", "--set", "storage=postgresql://u:hunter22@h/db"], "URL with a password"),
    ]:
        result = invoke([str(sweep), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "hunter22" not in result.output
