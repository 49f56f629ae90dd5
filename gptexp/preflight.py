"""Before anything starts: can this machine run the spec at all?

Two questions, answered in the launcher process (no torch import, no CUDA context):

- Is the device there? `train.device: cuda` or `launch.backend: nccl` on a machine without an
  NVIDIA GPU (or with a CPU-only torch build, or with CUDA_VISIBLE_DEVICES hiding every GPU) fails
  in the workers after the run directory exists; here it is a SpecError (exit 2).
- Does it fit? `estimate_training_memory` adds up what one rank holds at its peak — fp32 weights,
  gradients, AdamW's two moments, DDP's gradient buckets, the activations saved for backward, the
  logits and their gradient, the model's constant buffers — and `check` compares it (times the
  ranks sharing a device) with the memory available: MemAvailable (or the cgroup's limit) for CPU
  ranks, each GPU's free memory for CUDA ranks. The estimate is deliberately plain arithmetic, so
  it is a sanity check against impossible specs (a typo'd width, `n_layer: 1e6`), not a promise
  that a spec just under the line trains: allocator slack and the data arrays are not in it.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from gptexp.spec import BigramSpec, ExperimentSpec, GPTSpec, SpecError

GIB = 1024**3
FP32 = 4
# Activations saved for backward, per token per layer, in units of n_embd: 18 without dropout,
# 19.5 with it (measured on this model with torch.autograd.graph.saved_tensors_hooks; the test
# tests/test_preflight.py keeps the estimate within a factor of 2 of that measurement).
ACTIVATION_VALUES_PER_TOKEN_PER_LAYER = 20
# With attention dropout, SDPA's CPU path saves the attention probabilities and the dropout mask:
# 12 bytes per (query, key) pair per head per layer (same measurement). Fused CUDA kernels save none.
ATTENTION_DROPOUT_BYTES_PER_PAIR = 12
RUNTIME_BYTES_PER_RANK = 512 * 1024**2  # torch itself, the interpreter, the data loader (CPU ranks)
CHAR_VOCAB_GUESS = 256  # a char tokenizer's vocabulary is known only after reading the corpus


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    parts: dict[str, int]  # bytes per rank: weights, gradients, optimizer, ddp_buckets, activations, logits, buffers

    @property
    def bytes_per_rank(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        """`"1.2 GiB per rank (params 12.3M: weights 0.05, ... GiB)"`"""
        parts = ", ".join(f"{name} {size / GIB:.2f}" for name, size in self.parts.items())
        return f"{self.bytes_per_rank / GIB:.2f} GiB per rank ({self.parameters / 1e6:.1f}M parameters; GiB: {parts})"


def vocab_size_for(spec: ExperimentSpec) -> int:
    """The vocabulary size the model will get: a bpe spec says it; a char tokenizer's (and a file's
    or a custom class's) is known only later, so this guesses low rather than refuse a real spec."""
    tokenizer = spec.tokenizer
    if tokenizer.kind == "bpe":
        return tokenizer.vocab_size
    return CHAR_VOCAB_GUESS + len(tokenizer.special_tokens)


def count_parameters(model: GPTSpec | BigramSpec, vocab_size: int) -> int:
    """Unique parameters of the model `build_model` makes (a tied matrix counts once).

    `count_parameters(GPTSpec(n_layer=1, n_head=1, n_embd=4, block_size=2), 10) -> 316`
    """
    if isinstance(model, BigramSpec):
        return vocab_size * vocab_size
    C, bias = model.n_embd, model.bias
    norm = C + (C if bias and model.norm == "layernorm" else 0)  # RMSNorm has a scale only
    attention = C * 3 * C + C * C + ((3 * C + C) if bias else 0)
    if model.mlp == "gelu":
        mlp = 2 * 4 * C * C + ((4 * C + C) if bias else 0)
    else:
        H = round(8 * C / 3)  # models.gpt.swiglu_hidden_size (not imported: it would import torch here)
        mlp = C * 2 * H + H * C + ((2 * H + C) if bias else 0)
    per_layer = 2 * norm + attention + mlp
    embeddings = vocab_size * C + (model.block_size * C if model.positions == "learned" else 0)
    head = 0 if model.tie_embeddings else vocab_size * C
    return embeddings + model.n_layer * per_layer + norm + head


def estimate_training_memory(spec: ExperimentSpec, vocab_size: int, device: str, world_size: int) -> MemoryEstimate | None:
    """Peak bytes one training rank holds (see the module docstring for what is counted); None for
    a custom model class, whose size only its own code knows."""
    model, train = spec.model, spec.train
    if not isinstance(model, (GPTSpec, BigramSpec)):
        return None
    parameters = count_parameters(model, vocab_size)
    B, T = train.batch_size, model.block_size
    bf16 = train.precision == "bf16" or (train.precision == "auto" and device == "cuda")
    activation_bytes = 2 if bf16 else FP32
    parts = {
        "weights": parameters * FP32,  # autocast keeps fp32 master weights
        "gradients": parameters * FP32,
        "optimizer": 2 * parameters * FP32,  # AdamW exp_avg and exp_avg_sq
        "ddp_buckets": parameters * FP32 if world_size > 1 else 0,
    }
    if isinstance(model, GPTSpec):
        per_layer = ACTIVATION_VALUES_PER_TOKEN_PER_LAYER * model.n_embd
        parts["activations"] = B * T * model.n_layer * per_layer * activation_bytes
        schedule = spec.dropout_schedule
        dropout = model.dropout > 0 or (schedule.kind == "linear" and max(schedule.start, schedule.end) > 0)
        if dropout and device == "cpu":
            parts["attention"] = model.n_layer * B * model.n_head * T * T * ATTENTION_DROPOUT_BYTES_PER_PAIR
        # causal mask (T, T) bools; rope tables 2 x (T, head size) floats
        parts["buffers"] = T * T + (2 * T * model.head_size * FP32 if model.positions == "rope" else 0)
    else:
        parts["activations"] = 0
        parts["buffers"] = 0
    # logits, their log-softmax inside the loss and the gradient flowing back: (B, T, V) each
    parts["logits"] = 3 * B * T * vocab_size * FP32
    return MemoryEstimate(parameters, parts)


# ---------------------------------------------------------------------------------------------
# what this machine has


@dataclass(frozen=True)
class Gpu:
    index: int
    free_bytes: int
    total_bytes: int


def torch_has_cuda() -> bool:
    """Whether the installed torch build can use CUDA at all, read from its version (no import):
    CPU wheels are tagged `+cpu`; ROCm wheels `+rocm`, which gptexp does not target."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return False
    return "+cpu" not in version and "+rocm" not in version


def visible_gpus() -> list[Gpu]:
    """NVIDIA GPUs this process may use, with their free memory; [] when there are none.

    Asks `nvidia-smi` (a second or less, and no CUDA context in the launcher, which would hold
    GPU memory for the whole run) and honours CUDA_VISIBLE_DEVICES given as indices.
    """
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return []
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        output = subprocess.run([smi, "--query-gpu=index,memory.free,memory.total", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in output.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) == 3 and all(field.isdigit() for field in fields):
            index, free_mib, total_mib = (int(field) for field in fields)
            gpus.append(Gpu(index, free_mib * 1024**2, total_mib * 1024**2))
    if hidden is not None:
        wanted = [int(part) for part in hidden.split(",") if part.strip().isdigit()]
        if len(wanted) == len([part for part in hidden.split(",") if part.strip()]):  # indices, not UUIDs
            by_index = {gpu.index: gpu for gpu in gpus}
            gpus = [by_index[i] for i in wanted if i in by_index]
    return gpus


def available_cpu_memory() -> int | None:
    """Bytes of memory new processes can still use: MemAvailable, capped by a cgroup limit (containers)."""
    available = None
    try:
        match = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
        if match:
            available = int(match.group(1)) * 1024
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit_text, usage_text = Path(limit_file).read_text().strip(), Path(usage_file).read_text().strip()
        except OSError:
            continue
        if limit_text.isdigit() and usage_text.isdigit() and int(limit_text) < 2**60:
            available = min(available, max(int(limit_text) - int(usage_text), 0))
        break
    return available


# ---------------------------------------------------------------------------------------------
# the checks


def training_device(spec: ExperimentSpec, gpus: list[Gpu]) -> str:
    """"cuda" or "cpu", as the trainer will choose it; a SpecError when the spec asks for what is not here."""
    wants_cuda = spec.train.device == "cuda"
    if wants_cuda and not torch_has_cuda():
        raise SpecError("train.device: cuda, but the installed torch is a CPU-only build "
                        f"({importlib.metadata.version('torch')}); use train.device: cpu or auto")
    if wants_cuda and not gpus:
        raise SpecError("train.device: cuda, but this machine has no visible NVIDIA GPU; use train.device: cpu or auto")
    if spec.launch.backend == "nccl" and (not gpus or not torch_has_cuda() or spec.train.device == "cpu"):
        raise SpecError("launch.backend: nccl needs a GPU per rank, and this run has none; use launch.backend: gloo or auto")
    uses_cuda = wants_cuda or (spec.train.device == "auto" and bool(gpus) and torch_has_cuda())
    if uses_cuda and spec.launch.nproc > len(gpus):
        raise SpecError(f"launch.nproc: {spec.launch.nproc} ranks on CUDA, but this machine has {len(gpus)} visible GPU(s); "
                        "one rank per GPU")
    return "cuda" if uses_cuda else "cpu"


def check(spec: ExperimentSpec) -> MemoryEstimate | None:
    """Raise a SpecError (exit 2) when this machine cannot run `spec`: a missing device, or a
    training memory estimate above what is available. Returns the estimate (None: custom model)."""
    gpus = visible_gpus() if (spec.train.device != "cpu" or spec.launch.backend == "nccl") else []
    device = training_device(spec, gpus)
    world_size = spec.launch.nproc * spec.launch.nnodes
    estimate = estimate_training_memory(spec, vocab_size_for(spec), device, world_size)
    if estimate is None:
        return None
    if device == "cuda":
        free = min(gpu.free_bytes for gpu in gpus[: spec.launch.nproc])
        if estimate.bytes_per_rank > free:
            raise SpecError(f"the model cannot fit: training needs about {estimate.describe()}, "
                            f"but a GPU here has {free / GIB:.2f} GiB free; make the model, batch_size or block_size smaller")
        return estimate
    available = available_cpu_memory()
    needed = spec.launch.nproc * (estimate.bytes_per_rank + RUNTIME_BYTES_PER_RANK)
    if available is not None and needed > available:
        ranks = f"{spec.launch.nproc} ranks x " if spec.launch.nproc > 1 else ""
        raise SpecError(f"the model cannot fit: training needs about {ranks}{estimate.describe()} "
                        f"plus {RUNTIME_BYTES_PER_RANK / GIB:.1f} GiB runtime, but this machine has "
                        f"{available / GIB:.2f} GiB available; make the model, batch_size or block_size smaller")
    return estimate
