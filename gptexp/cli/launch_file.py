"""`gptexp launch-file`: write a Slurm batch script or a Kubeflow PyTorchJob for a spec.

The rendering itself lives in gptexp/launchfiles.py (pure functions); this module reads the flags.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from gptexp.cli.console import note
from gptexp.cli.errors import fail

if TYPE_CHECKING:
    from gptexp.spec import ExperimentSpec


def launch_file(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC|SWEEP", help="experiment spec (YAML); with --array, a sweep file", show_default=False)],
    slurm: Annotated[bool, typer.Option("--slurm", help="write an sbatch script")] = False,
    k8s: Annotated[bool, typer.Option("--k8s", help="write a Kubeflow manifest, PyTorchJob or TrainJob (--k8s-api), with a ConfigMap holding the spec")] = False,
    nodes: Annotated[Optional[int], typer.Option("--nodes", help="nodes (pods); default: the spec's launch.nnodes", show_default=False)] = None,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", help="GPUs per node, one process each; 0 = CPU nodes running launch.nproc processes")] = 1,
    job_name: Annotated[Optional[str], typer.Option("--job-name", help="job name; default from the spec's name (--k8s: plus a timestamp; it is the run id)", show_default=False)] = None,
    partition: Annotated[Optional[str], typer.Option("--partition", help="--slurm: partition", show_default=False)] = None,
    time: Annotated[Optional[str], typer.Option("--time", help="--slurm: time limit, e.g. 04:00:00 or 1-00:00:00", show_default=False)] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option("--cpus-per-task", help="--slurm: CPUs for each node's task", show_default=False)] = None,
    image: Annotated[Optional[str], typer.Option("--image", help="--k8s: container image built from docker/Dockerfile (default gptexp:latest)", show_default=False)] = None,
    cpu: Annotated[Optional[str], typer.Option("--cpu", help="--k8s: CPU limit per pod, e.g. 8 or 500m", show_default=False)] = None,
    memory: Annotated[Optional[str], typer.Option("--memory", help="--k8s: memory limit per pod, e.g. 32Gi", show_default=False)] = None,
    k8s_api: Annotated[Optional[str], typer.Option("--k8s-api", help="--k8s: trainjob (Kubeflow Trainer v2 TrainJob) or pytorchjob (the legacy training operator; default)", show_default=False)] = None,
    runtime: Annotated[Optional[str], typer.Option("--runtime", help="--k8s-api trainjob: the ClusterTrainingRuntime to use (default torch-distributed)", show_default=False)] = None,
    runs_pvc: Annotated[Optional[str], typer.Option("--runs-pvc", help="--k8s: PersistentVolumeClaim (ReadWriteMany) mounted as the runs directory of every pod; needed for --nodes > 1 (default: an emptyDir)", show_default=False)] = None,
    array: Annotated[Optional[int], typer.Option("--array", min=1, help="--slurm: a Slurm job array of N `gptexp sweep` workers on one study; the file is a sweep file (its storage: a journal on the shared filesystem by default, or PostgreSQL)", show_default=False)] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="override a spec field: --set train.max_steps=100 (value parsed as YAML); repeatable")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="file to write (default: standard output)", show_default=False)] = None,
) -> None:
    """Write a Slurm sbatch script (--slurm) or a Kubeflow manifest (--k8s: a PyTorchJob, or a Trainer v2
    TrainJob with --k8s-api trainjob) for SPEC.

    Each node runs `gptexp run` with a shared rendezvous and run id; the validated spec travels
    with the file; secrets never do.

    gptexp launch-file SWEEP --slurm --array N writes a job array of N sweep workers, one node each,
    sharing one study through a journal file (or PostgreSQL); the sweep file, its experiment, the
    data and the runs directory must be on a shared filesystem.
    """
    from gptexp import launchfiles

    if slurm == k8s:
        fail("choose one target: --slurm or --k8s")
    given = {"--partition": partition, "--time": time, "--cpus-per-task": cpus_per_task} if k8s else \
        {"--image": image, "--cpu": cpu, "--memory": memory, "--runs-pvc": runs_pvc, "--k8s-api": k8s_api, "--runtime": runtime}
    misplaced = [flag for flag, value in given.items() if value is not None]
    if misplaced:
        fail(f"{misplaced[0]} is not an option of --{'k8s' if k8s else 'slurm'}")
    if runtime is not None and k8s_api != "trainjob":
        fail("--runtime goes with --k8s-api trainjob")
    if out is not None and out.is_dir():
        fail(f"--out {out}: is a directory, expected a file path")
    if out is not None and not out.parent.is_dir():
        fail(f"--out {out}: directory {out.parent} does not exist")
    if array is not None:
        if not slurm:
            fail("--array goes with --slurm (a Slurm job array of sweep workers)")
        if nodes is not None:
            fail("--nodes does not go with --array: every array task is one sweep worker on one node")
        _write(_sweep_array(spec_path, array, gpus_per_node, job_name, partition, time, cpus_per_task, overrides or []),
               [], out, f"sbatch {out}")
        return
    spec = _load(spec_path, overrides or [])
    nodes = spec.launch.nnodes if nodes is None else nodes
    name = launchfiles.dns_label(spec.name, 24)
    if slurm:
        notes = [] if Path(spec.data.path).is_file() else \
            [f"data.path {spec.data.path} is not on this machine; it must exist on every node"]
        options = launchfiles.SlurmOptions(nodes=nodes, gpus_per_node=gpus_per_node, job_name=job_name or name,
                                           partition=partition, time=time, cpus_per_task=cpus_per_task)
        text = launchfiles.slurm_script(spec, options)
        next_step = f"sbatch {out}"
    else:
        spec, k8s_note = launchfiles.spec_for_image(spec, Path.cwd())
        notes = [k8s_note]
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        options = launchfiles.K8sOptions(nodes=nodes, gpus_per_node=gpus_per_node,
                                         job_name=job_name or f"{name}-{stamp}", image=image or "gptexp:latest",
                                         cpu=cpu, memory=memory, runs_pvc=runs_pvc, api=k8s_api or "pytorchjob",
                                         runtime=runtime or launchfiles.TRAINJOB_RUNTIME)
        text = launchfiles.k8s_manifest(spec, options)
        next_step = f"kubectl apply -f {out}"
    _write(text, notes, out, next_step)


def _write(text: str, notes: list[str], out: Path | None, next_step: str) -> None:
    from gptexp.launchfiles import check_no_secrets

    check_no_secrets(text, "the launch file")  # SpecError: exit 2
    for message in notes:
        note(f"note: {message}", style="yellow")
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as error:
        fail(f"--out {out}: cannot write ({error.strerror})")
    note(f"wrote {out}; next: {next_step}", style="")


def _sweep_array(sweep_path: Path, tasks: int, gpus: int, job_name: str | None, partition: str | None,
                 time: str | None, cpus_per_task: int | None, overrides: list[str]) -> str:
    """The job array script for a sweep file (validated as `gptexp sweep` would)."""
    from gptexp import launchfiles
    from gptexp.sweep.spec import load_sweep_spec

    sweep = load_sweep_spec(sweep_path, overrides)
    options = launchfiles.SweepArrayOptions(tasks=tasks, gpus_per_task=gpus,
                                            job_name=job_name or launchfiles.dns_label(str(sweep.study), 24),
                                            partition=partition, time=time, cpus_per_task=cpus_per_task)
    return launchfiles.sweep_array_script(sweep, options)


def _load(spec_path: Path, overrides: list[str]) -> ExperimentSpec:
    """Load and validate the spec as `gptexp run` would, refusing kinds this version cannot run."""
    from gptexp.launch import check_supported
    from gptexp.spec import load_spec

    spec = load_spec(spec_path, overrides)
    check_supported(spec)
    return spec
