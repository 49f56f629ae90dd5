"""Launch files for clusters: a Slurm batch script and a Kubeflow manifest (a Trainer v2 TrainJob, or
the legacy training-operator PyTorchJob) for a spec.

Pure functions from a validated spec and a few facts about the cluster to text; the
`gptexp launch-file` command (gptexp/cli/launch_file.py) writes that text. Every node of a job runs the
same portable entry point,

    gptexp run SPEC --nnodes N --nproc G --rdzv-endpoint HOST:PORT --run-id ID

rather than torchrun itself, because `gptexp run` also prepares the tokenizer and token cache the
workers expect, writes the run store and turns the outcome into gptexp's exit codes, the same way
on every node.

Secrets are never rendered: a W&B key is referenced by name (the job's environment under Slurm,
the Kubernetes Secret `gptexp-secrets` in a pod), and `check_no_secrets` refuses a text holding the
value of a secret environment variable or a URL with a password in it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from gptexp import contract as C
from gptexp import limits
from gptexp.spec import ExperimentSpec, SpecError
from gptexp.sweep.spec import SweepSpec
from gptexp.tracking import secrets_in

# Paths inside the image built by docker/Dockerfile (keep the two in step).
IMAGE_WORKDIR = PurePosixPath("/app")
IMAGE_RUNS_DIR = IMAGE_WORKDIR / "runs"
IMAGE_UID = 10001
POD_SPEC_DIR = PurePosixPath("/etc/gptexp")
POD_SPEC_FILE = POD_SPEC_DIR / "spec.yaml"

K8S_SECRET = "gptexp-secrets"
K8S_SECRET_KEYS = {"WANDB_API_KEY": "wandb-api-key"}  # env var in the pod -> key in the Secret
PYTORCHJOB_CONTAINER = "pytorch"  # the Kubeflow training operator finds the trainer by this name
PYTORCHJOB_PORT = 23456  # the operator's default rendezvous port (MASTER_PORT)
K8S_APIS = ("pytorchjob", "trainjob")
TRAINJOB_API_VERSION = "trainer.kubeflow.org/v1alpha1"
TRAINJOB_RUNTIME = "torch-distributed"  # the ClusterTrainingRuntime Kubeflow Trainer installs for PyTorch
TRAINJOB_NODE = "node"  # the torch runtime's replicated job and trainer container are both called "node"
TRAINJOB_PATCH_MANAGER = "gptexp"  # owner of the runtime patch that adds our volumes
SPEC_HEREDOC_END = "GPTEXP_SPEC_END"

# Matched with fullmatch: `$` alone would also accept a trailing newline ("job\n"), which then
# ends the #SBATCH line and starts a new one.
_SLURM_TIME = re.compile(r"^(\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2})$")  # M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_SLURM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")  # room for the operator's "-worker-N"
_K8S_QUANTITY = re.compile(r"^(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
_URL_WITH_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:[^@\s]+@")


@dataclass(frozen=True)
class SlurmOptions:
    nodes: int
    gpus_per_node: int
    job_name: str
    partition: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None


@dataclass(frozen=True)
class K8sOptions:
    nodes: int
    gpus_per_node: int
    job_name: str
    image: str = "gptexp:latest"
    cpu: str | None = None
    memory: str | None = None
    runs_pvc: str | None = None
    api: str = "pytorchjob"  # or "trainjob" (Kubeflow Trainer v2, trainer.kubeflow.org/v1alpha1)
    runtime: str = TRAINJOB_RUNTIME  # trainjob: the ClusterTrainingRuntime the TrainJob references


# ---------------------------------------------------------------------------------------------
# checks shared by both targets


def nproc_per_node(spec: ExperimentSpec, gpus_per_node: int) -> int:
    """Processes per node: one per GPU, or launch.nproc on CPU-only nodes (gpus_per_node 0)."""
    return gpus_per_node if gpus_per_node > 0 else spec.launch.nproc


def check_shape(spec: ExperimentSpec, nodes: int, gpus_per_node: int) -> None:
    """Raise a SpecError when the cluster shape cannot run `spec`."""
    if not 1 <= nodes <= limits.MAX_NNODES:
        raise SpecError(f"--nodes {nodes}: must be at least 1 and at most {limits.MAX_NNODES}")
    if not 0 <= gpus_per_node <= limits.MAX_NPROC:
        raise SpecError(f"--gpus-per-node {gpus_per_node}: must be 0 (CPU nodes) or more, at most {limits.MAX_NPROC}")
    if gpus_per_node == 0 and spec.launch.backend == "nccl":
        raise SpecError("launch.backend is nccl, which needs GPUs: give --gpus-per-node 1 or more")
    if gpus_per_node == 0 and spec.train.device == "cuda":
        raise SpecError("train.device is cuda: give --gpus-per-node 1 or more")
    if gpus_per_node > 0 and spec.train.device == "cpu":
        raise SpecError(f"train.device is cpu but --gpus-per-node {gpus_per_node} asks for GPUs: give --gpus-per-node 0")


def shipped_spec(spec: ExperimentSpec, nodes: int, nproc: int) -> ExperimentSpec:
    """The spec as it travels with the job: launch shape filled in, per-job fields left to the flags."""
    shipped = spec.model_copy(deep=True)
    shipped.launch.nnodes = nodes
    shipped.launch.nproc = nproc
    shipped.launch.rdzv_endpoint = None  # set per job by --rdzv-endpoint
    shipped.launch.run_id = None  # set per job by --run-id
    return shipped


def dns_label(text: str, max_len: int = 40) -> str:
    """A lowercase name Slurm, Kubernetes and run ids all accept: `"MLM BPE v2!" -> "mlm-bpe-v2"`."""
    label = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-")
    return label or "gptexp"


def check_no_secrets(text: str, what: str) -> None:
    """Refuse to write `text` if it holds a secret: a secret env var's value or a URL password."""
    leaked = secrets_in(text)
    if leaked:
        raise SpecError(f"{what} would contain the value of ${leaked[0]}; secrets are referenced by name, "
                        "never written into launch files (remove it from the spec)")
    if _URL_WITH_PASSWORD.search(text):
        raise SpecError(f"{what} would contain a URL with a password; pass secrets through the environment "
                        f"(Slurm) or the Kubernetes Secret {K8S_SECRET}")


def _quoted(text: str) -> str:
    """`text` safe inside a one-line comment: a newline in a spec name must not start a command."""
    return repr(text)


def run_command(spec_file: str, nodes: int, nproc: int, rdzv_endpoint: str, run_id: str, runs_dir: str) -> list[str]:
    """The `gptexp run` argv every node starts (no rendezvous flags for a single node)."""
    command = ["gptexp", "run", spec_file, "--nnodes", str(nodes), "--nproc", str(nproc)]
    if nodes > 1:
        command += ["--rdzv-endpoint", rdzv_endpoint]
    return command + ["--run-id", run_id, "--runs-dir", runs_dir]


# ---------------------------------------------------------------------------------------------
# Slurm


def check_slurm_options(options: SlurmOptions) -> None:
    if not _SLURM_NAME.fullmatch(options.job_name):
        raise SpecError(f"--job-name {options.job_name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if options.partition is not None and not re.fullmatch(r"[A-Za-z0-9_.,-]+", options.partition):
        raise SpecError(f"--partition {options.partition!r}: expected a partition name (letters, digits, '_', '-', ',')")
    if options.time is not None and not _SLURM_TIME.fullmatch(options.time):
        raise SpecError(f"--time {options.time!r}: expected minutes, HH:MM:SS or D-HH:MM:SS")
    if options.cpus_per_task is not None and options.cpus_per_task < 1:
        raise SpecError(f"--cpus-per-task {options.cpus_per_task}: must be at least 1")


def _resource_directives(gpus: int, cpus_per_task: int | None, partition: str | None, time: str | None) -> list[str]:
    """The optional #SBATCH directives both script kinds share, in sbatch's usual order."""
    directives = [f"--gpus-per-node={gpus}"] if gpus > 0 else []
    if cpus_per_task is not None:
        directives.append(f"--cpus-per-task={cpus_per_task}")
    if partition is not None:
        directives.append(f"--partition={partition}")
    if time is not None:
        directives.append(f"--time={time}")
    return directives


def slurm_script(spec: ExperimentSpec, options: SlurmOptions) -> str:
    """An sbatch script that runs `spec` on `options.nodes` nodes, one `gptexp run` per node.

    The resolved spec travels inside the script (a quoted heredoc, so nothing in it is expanded)
    and is copied to every node's local /tmp with sbcast: no shared filesystem is needed for it.
    """
    check_shape(spec, options.nodes, options.gpus_per_node)
    check_slurm_options(options)
    nproc = nproc_per_node(spec, options.gpus_per_node)
    spec_yaml = shipped_spec(spec, options.nodes, nproc).to_yaml()
    if any(line.strip() == SPEC_HEREDOC_END for line in spec_yaml.splitlines()):
        raise SpecError(f"the spec contains a line {SPEC_HEREDOC_END!r}, which ends the script's heredoc")

    directives = [f"--job-name={options.job_name}", f"--nodes={options.nodes}", "--ntasks-per-node=1",
                  *_resource_directives(options.gpus_per_node, options.cpus_per_task, options.partition, options.time)]
    # SIGTERM two minutes before the time limit: gptexp run forwards it, rank 0 checkpoints.
    directives += ["--signal=TERM@120", "--output=%x-%j.out"]

    srun = ["srun", '--nodes="$SLURM_NNODES"', "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    if options.cpus_per_task is not None:
        srun.append('--cpus-per-task="$SLURM_CPUS_PER_TASK"')  # srun no longer inherits it from sbatch
    run = run_command('"$spec_file"', options.nodes, nproc, '"$head:$port"', '"$run_id"', '"$runs_dir"')
    # `gptexp run` reads --nnodes from the allocation, so editing `#SBATCH --nodes` keeps them in step.
    run[run.index("--nnodes") + 1] = '"$SLURM_NNODES"'
    launch_lines = " \\\n  ".join([" ".join(srun), " ".join(run[:7]), " ".join(run[7:])])

    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH {directive}" for directive in directives),
        "#",
        f"# gptexp experiment {_quoted(spec.name)} on {options.nodes} node(s) x {nproc} process(es); written by",
        "# `gptexp launch-file --slurm`. Submit from the directory whose runs/ should hold the run:",
        "#   sbatch THIS_FILE",
        "#",
        "# Every node starts `gptexp run SPEC --nnodes N --nproc G --rdzv-endpoint HEAD:PORT --run-id ID`;",
        "# torchrun's c10d rendezvous on the first node joins them into one job. gptexp run (rather than",
        "# torchrun) also prepares the tokenizer and token cache and writes the run store.",
        "#",
        "# Before you submit:",
        "#   - gptexp must be on PATH on every node: sbatch passes your environment on, so activate",
        "#     the virtualenv (on a shared filesystem) first.",
        f"#   - data.path is absolute ({_quoted(spec.data.path)}): that file must exist on every node.",
        f"#   - Rank 0 writes the run store under ${C.ENV_RUNS_DIR} (default: runs/ in the submit",
        "#     directory); keep it on a shared filesystem to see the run from every node.",
        "#   - Secrets are not in this file: export WANDB_API_KEY before sbatch for online tracking.",
        "set -eu",
        "",
        'command -v gptexp >/dev/null || { echo "gptexp: not on PATH; activate its environment before sbatch" >&2; exit 2; }',
        'head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)',
        f'port=${{{C.ENV_RDZV_PORT}:-$((20000 + SLURM_JOB_ID % 20000))}}',
        f'run_id={shlex.quote(dns_label(options.job_name, 40))}-slurm-"$SLURM_JOB_ID"',
        f'runs_dir=${{{C.ENV_RUNS_DIR}:-$SLURM_SUBMIT_DIR/runs}}',
        'spec_file=/tmp/gptexp-"$SLURM_JOB_ID".spec.yaml',
        "",
        "# The validated, resolved spec (quoted heredoc: written as is), then copied to every node.",
        f"cat > \"$spec_file.src\" <<'{SPEC_HEREDOC_END}'",
        spec_yaml.rstrip("\n"),
        SPEC_HEREDOC_END,
        'sbcast --force "$spec_file.src" "$spec_file"',
        "",
        'echo "gptexp: run $run_id on $SLURM_NNODES node(s), rendezvous $head:$port, runs in $runs_dir"',
        launch_lines,
        "",
    ])


# ---------------------------------------------------------------------------------------------
# Slurm job array of sweep workers (gptexp launch-file SWEEP --slurm --array N)

# Slurm's default MaxArraySize is 1001 (indices 0-1000); sites may lower it.
MAX_ARRAY_TASKS = 1000


@dataclass(frozen=True)
class SweepArrayOptions:
    tasks: int
    gpus_per_task: int
    job_name: str
    partition: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None


def sweep_array_storage(sweep: SweepSpec) -> str | None:
    """The storage URL the array's tasks share: the sweep's journal or server URL, or None for the
    default (a journal in the runs directory, chosen when the job starts). SQLite is refused."""
    from gptexp.sweep.storage import normalize_url, sqlite_path

    if sweep.storage is None:
        return None
    if sqlite_path(sweep.storage) is not None or sweep.storage.startswith("sqlite"):
        raise SpecError(f"{sweep.source}: storage: a SQLite storage cannot be shared by the tasks of a job array "
                        "(several nodes, no file locking on NFS); use journal:///shared/path/study.journal, "
                        "PostgreSQL, or leave storage out (a journal in the runs directory)")
    return normalize_url(sweep.storage)


def sweep_array_script(sweep: SweepSpec, options: SweepArrayOptions, workdir: Path | None = None) -> str:
    """An sbatch script whose `options.tasks` array tasks each run `gptexp sweep` on one shared study.

    Every task is one process on one node working on the same study through a storage on a shared
    filesystem (a journal file by default) or a database server: the study's trial count is shared,
    so the array ends when the study holds n_trials; a task killed mid-trial (preempted, timed out,
    node lost) leaves a trial whose run lock is gone, which another task fails and runs again.
    """
    check_slurm_options(SlurmOptions(nodes=1, gpus_per_node=options.gpus_per_task, job_name=options.job_name,
                                     partition=options.partition, time=options.time,
                                     cpus_per_task=options.cpus_per_task))
    if not 1 <= options.tasks <= MAX_ARRAY_TASKS:
        raise SpecError(f"--array {options.tasks}: expected 1 to {MAX_ARRAY_TASKS} tasks (Slurm's default MaxArraySize)")
    storage = sweep_array_storage(sweep)
    sweep_file = str(Path(sweep.source).resolve())
    # A sweep's relative paths (experiment, the experiment's data.path) are from the directory it
    # is run in: every task runs from the directory this script was written in.
    workdir = (workdir or Path.cwd()).resolve()
    study = str(sweep.study)
    directives = [f"--job-name={options.job_name}", f"--array=0-{options.tasks - 1}", "--nodes=1", "--ntasks=1",
                  *_resource_directives(options.gpus_per_task, options.cpus_per_task, options.partition, options.time)]
    # SIGTERM to the batch shell (exec'd into gptexp sweep) two minutes before the time limit: the
    # running trials checkpoint, fail as interrupted and are queued again for the other tasks.
    directives += ["--signal=B:TERM@120", "--output=%x-%A_%a.out"]
    default_storage = f'journal://$runs_dir/{dns_label(study, 64)}.journal'
    storage_line = (f"storage=${{{C.ENV_OPTUNA_STORAGE}:-{shlex.quote(storage)}}}" if storage is not None
                    else f'storage=${{{C.ENV_OPTUNA_STORAGE}:-"{default_storage}"}}')
    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH {directive}" for directive in directives),
        "#",
        f"# gptexp sweep {_quoted(sweep_file)} (study {_quoted(study)}, {sweep.n_trials} trials in total) as a job",
        f"# array of {options.tasks} sweep workers, each on one node; written by `gptexp launch-file --slurm --array`.",
        "# Submit from the directory whose runs/ should hold the trials:  sbatch THIS_FILE",
        "#",
        "# Every task runs `gptexp sweep SWEEP --storage URL` on the same study: n_trials counts the study's",
        "# trials, so the tasks share the work and stop when it is done (a task may start after the study is",
        "# full and exit at once). The storage is a journal file (Optuna's JournalStorage, no database server)",
        f"# unless the sweep names a PostgreSQL one or ${C.ENV_OPTUNA_STORAGE} is set.",
        "#",
        "# Before you submit:",
        "#   - gptexp must be on PATH on every node (activate its virtualenv on a shared filesystem first).",
        "#   - The sweep file, its experiment spec and data.path are read by every task from the paths",
        "#     below (relative ones from the directory below): keep them on a shared filesystem. So must",
        f"#     the runs directory (${C.ENV_RUNS_DIR},",
        "#     default runs/ in the submit directory) and the journal: a task that dies is recovered by",
        "#     another one that sees its trial's run directory unlocked.",
        f"#   - Each task runs {sweep.workers} trial(s) at once (the sweep's workers); give it the GPUs they need.",
        "#   - Secrets are not in this file: export PGPASSWORD or WANDB_API_KEY before sbatch.",
        "set -eu",
        "",
        'command -v gptexp >/dev/null || { echo "gptexp: not on PATH; activate its environment before sbatch" >&2; exit 2; }',
        f"sweep_file={shlex.quote(sweep_file)}",
        '[ -f "$sweep_file" ] || { echo "gptexp: $sweep_file is not on this node; keep it on a shared filesystem" >&2; exit 2; }',
        f'runs_dir=$(realpath -m "${{{C.ENV_RUNS_DIR}:-$SLURM_SUBMIT_DIR/runs}}")',
        'mkdir -p "$runs_dir"',
        storage_line,
        f"cd {shlex.quote(str(workdir))}  # the sweep's relative paths (experiment, data.path) are from here",
        "",
        'echo "gptexp: sweep worker $SLURM_ARRAY_TASK_ID of job $SLURM_ARRAY_JOB_ID on $(hostname), runs in $runs_dir"',
        f'exec gptexp sweep "$sweep_file" --study {shlex.quote(study)} --storage "$storage" --runs-dir "$runs_dir"',
        "",
    ])


# ---------------------------------------------------------------------------------------------
# Kubernetes (Kubeflow training operator)


def check_k8s_options(options: K8sOptions) -> None:
    if not _DNS_LABEL.fullmatch(options.job_name):
        raise SpecError(f"--job-name {options.job_name!r}: use 1-40 lowercase letters, digits or '-' "
                        "(a Kubernetes name that is also the run id)")
    if not _IMAGE_REF.fullmatch(options.image):
        raise SpecError(f"--image {options.image!r}: expected an image reference such as registry/gptexp:cuda")
    for flag, value in (("--cpu", options.cpu), ("--memory", options.memory)):
        if value is not None and not _K8S_QUANTITY.fullmatch(value):
            raise SpecError(f"{flag} {value!r}: expected a Kubernetes quantity such as 4, 500m, 16Gi")
    if options.api not in K8S_APIS:
        raise SpecError(f"--k8s-api {options.api!r}: expected one of {', '.join(K8S_APIS)}")
    if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", options.runtime):
        raise SpecError(f"--runtime {options.runtime!r}: expected the name of a ClusterTrainingRuntime such as {TRAINJOB_RUNTIME}")
    if options.runs_pvc is not None and not re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", options.runs_pvc):
        raise SpecError(f"--runs-pvc {options.runs_pvc!r}: expected a PersistentVolumeClaim name")
    if options.nodes > 1 and options.runs_pvc is None:
        # Rank 0 writes the run store (metrics, checkpoints, W&B files) in its own pod's runs
        # directory; without a shared volume it is lost with the pod and a resume finds nothing.
        raise SpecError(f"--nodes {options.nodes} needs --runs-pvc NAME: a ReadWriteMany PersistentVolumeClaim "
                        "every pod mounts as the runs directory (the nodes of a run share its run store)")


def spec_for_image(spec: ExperimentSpec, local_root: Path) -> tuple[ExperimentSpec, str]:
    """The spec with data.path as the pods see it, and a note for the user.

    A corpus under `local_root` (the directory the spec was resolved from, normally the repository)
    moves to the same place under the image's WORKDIR: `<root>/data/x.txt -> /app/data/x.txt`.
    """
    moved = spec.model_copy(deep=True)
    data_path = Path(spec.data.path)
    try:
        relative = data_path.relative_to(local_root.resolve())
    except ValueError:
        return moved, f"data.path {data_path} must exist in every pod (in the image or a mounted volume)"
    moved.data.path = str(IMAGE_WORKDIR / relative.as_posix())
    return moved, f"data.path in the pods: {moved.data.path} (must be in the image; it ships {IMAGE_WORKDIR}/data/)"


class _ManifestDumper(yaml.SafeDumper):
    """Block style for multi-line strings (the shipped spec reads as YAML inside the ConfigMap) and
    no anchors or aliases: Master and Worker are spelled out, as kubectl users expect to read them."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def _limits(options: K8sOptions) -> dict[str, str | int]:
    limits: dict[str, str | int] = {}
    if options.gpus_per_node > 0:
        limits["nvidia.com/gpu"] = options.gpus_per_node
    if options.cpu is not None:
        limits["cpu"] = options.cpu
    if options.memory is not None:
        limits["memory"] = options.memory
    return limits


def _secret_env() -> list[dict]:
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": K8S_SECRET, "key": key, "optional": True}}}
            for env, key in K8S_SECRET_KEYS.items()]


def _volume_mounts() -> list[dict]:
    return [
        {"name": "spec", "mountPath": str(POD_SPEC_DIR), "readOnly": True},
        {"name": "runs", "mountPath": str(IMAGE_RUNS_DIR)},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]


def _volumes(options: K8sOptions, config_map: str) -> list[dict]:
    runs_volume = ({"persistentVolumeClaim": {"claimName": options.runs_pvc}} if options.runs_pvc
                   else {"emptyDir": {}})
    return [
        {"name": "spec", "configMap": {"name": config_map}},
        {"name": "runs", **runs_volume},
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},  # NCCL and workers need more than 64 MB
    ]


def _replica(options: K8sOptions, replicas: int, args: list[str], config_map: str) -> dict:
    container = {
        "name": PYTORCHJOB_CONTAINER,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["gptexp"],
        "args": args,
        "env": _secret_env(),
        "ports": [{"name": "pytorchjob-port", "containerPort": PYTORCHJOB_PORT}],
        "resources": {"limits": _limits(options)},
        "volumeMounts": _volume_mounts(),
    }
    return {
        "replicas": replicas,
        # Never: a restarted container would meet its own run directory; resuming is explicit
        # (`gptexp run --resume RUN`), as on one machine.
        "restartPolicy": "Never",
        "template": {"spec": {
            "securityContext": {"fsGroup": IMAGE_UID},  # the image's non-root user can write the volumes
            "containers": [container],
            "volumes": _volumes(options, config_map),
        }},
    }


def _trainjob(options: K8sOptions, args: list[str], config_map: str, labels: dict[str, str]) -> dict:
    """A Kubeflow Trainer v2 TrainJob: the torch runtime runs `gptexp` in each of numNodes pods.

    The trainer fields (image, command, args, env, numNodes, resourcesPerNode) override the
    runtime's "node" container; our volumes (spec ConfigMap, runs, /dev/shm) and the non-root
    fsGroup come in through a runtime patch owned by gptexp. The runtime's torch plugin gives every
    pod PET_MASTER_ADDR / PET_MASTER_PORT (node 0's service); `gptexp run` passes --nnodes and
    --nproc itself, which torchrun prefers to the PET_* defaults.
    """
    node_pod = {"securityContext": {"fsGroup": IMAGE_UID},
                "volumes": _volumes(options, config_map),
                "containers": [{"name": TRAINJOB_NODE, "volumeMounts": _volume_mounts()}]}
    return {
        "apiVersion": TRAINJOB_API_VERSION,
        "kind": "TrainJob",
        "metadata": {"name": options.job_name, "labels": labels},
        "spec": {
            "runtimeRef": {"name": options.runtime, "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"},
            "trainer": {
                "image": options.image,
                "command": ["gptexp"],
                "args": args,
                "env": _secret_env(),
                "numNodes": options.nodes,
                "resourcesPerNode": {"limits": _limits(options)},
            },
            "runtimePatches": [{"manager": TRAINJOB_PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {
                "replicatedJobs": [{"name": TRAINJOB_NODE, "template": {"spec": {"template": {"spec": node_pod}}}}],
            }}}}],
        },
    }


def k8s_manifest(spec: ExperimentSpec, options: K8sOptions) -> str:
    """A ConfigMap holding the resolved spec and a PyTorchJob or TrainJob running it, as multi-document YAML.

    The operator gives each pod MASTER_ADDR and MASTER_PORT (the master pod's service); they form
    the rendezvous endpoint through Kubernetes' `$(VAR)` expansion in args. --nnodes is written as
    a number: WORLD_SIZE counts processes, not pods, in recent operators (pods x nprocPerNode).
    """
    check_shape(spec, options.nodes, options.gpus_per_node)
    check_k8s_options(options)
    nproc = nproc_per_node(spec, options.gpus_per_node)
    config_map = f"{options.job_name}-spec"
    labels = {"app.kubernetes.io/name": "gptexp", "gptexp/run-id": options.job_name}
    trainjob = options.api == "trainjob"
    endpoint = "$(PET_MASTER_ADDR):$(PET_MASTER_PORT)" if trainjob else "$(MASTER_ADDR):$(MASTER_PORT)"
    args = run_command(str(POD_SPEC_FILE), options.nodes, nproc, endpoint,
                       options.job_name, str(IMAGE_RUNS_DIR))[1:]  # command is "gptexp"
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map, "labels": labels},
        "data": {"spec.yaml": shipped_spec(spec, options.nodes, nproc).to_yaml()},
    }
    if trainjob:
        job = _trainjob(options, args, config_map, labels)
        requirement = (f"Kubeflow Trainer v2 (TrainJob CRD) and its ClusterTrainingRuntime {options.runtime}:",
                       f"kubectl logs -f -l jobset.sigs.k8s.io/jobset-name={options.job_name}")
    else:
        replica_specs = {"Master": _replica(options, 1, args, config_map)}
        if options.nodes > 1:
            replica_specs["Worker"] = _replica(options, options.nodes - 1, args, config_map)
        job = {
            "apiVersion": "kubeflow.org/v1",
            "kind": "PyTorchJob",
            "metadata": {"name": options.job_name, "labels": labels},
            "spec": {"runPolicy": {"cleanPodPolicy": "None"}, "pytorchReplicaSpecs": replica_specs},
        }
        requirement = ("the Kubeflow training operator (PyTorchJob CRD, the legacy API; --k8s-api trainjob for Trainer v2):",
                       f"kubectl logs -f {options.job_name}-master-0")
    runs_note = (f"# Runs go to the PersistentVolumeClaim {options.runs_pvc}, mounted at {IMAGE_RUNS_DIR} in every pod."
                 if options.runs_pvc else
                 f"# Runs go to an emptyDir at {IMAGE_RUNS_DIR}: copy them out before deleting the job, or use --runs-pvc.")
    header = "\n".join([
        f"# gptexp experiment {_quoted(spec.name)} on {options.nodes} pod(s) x {nproc} process(es); written by",
        f"# `gptexp launch-file --k8s`. Needs {requirement[0]}",
        f"#   kubectl apply -f THIS_FILE && {requirement[1]}",
        f"# The run id is the job name ({options.job_name}); a new run needs a new --job-name.",
        f"# data.path in the spec: {_quoted(spec.data.path)} (must exist in every pod).",
        runs_note,
        f"# Secrets are not in this file: W&B reads WANDB_API_KEY from the Secret {K8S_SECRET}, e.g.",
        f"#   kubectl create secret generic {K8S_SECRET} --from-literal=wandb-api-key=\"$WANDB_API_KEY\"",
    ])
    return f"{header}\n{_dump(config)}---\n{_dump(job)}"


def _dump(document: dict) -> str:
    return yaml.dump(document, Dumper=_ManifestDumper, sort_keys=False, width=120)
