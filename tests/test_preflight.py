"""Pre-flight: the parameter count is exact, the memory estimate tracks what training saves, and a
spec this machine cannot run (no GPU, too big) is a SpecError before any run exists."""

from __future__ import annotations

import itertools

import pytest
import torch

from gptexp import preflight
from gptexp.models import build_model
from gptexp.preflight import count_parameters, estimate_training_memory
from gptexp.spec import GPTSpec, SpecError, validate_spec

GPU_HERE = bool(preflight.visible_gpus()) and preflight.torch_has_cuda()


@pytest.mark.parametrize("layers, width, positions, mlp, tied, bias, norm", list(itertools.product(
    [1, 3], [16, 24], ["learned", "rope"], ["gelu", "swiglu"], [True, False], [True, False], ["layernorm", "rmsnorm"])))
def test_parameter_count_matches_the_built_model(layers, width, positions, mlp, tied, bias, norm) -> None:
    spec = GPTSpec(n_layer=layers, n_head=2, n_embd=width, block_size=8, positions=positions, mlp=mlp,
                   tie_embeddings=tied, bias=bias, norm=norm)
    assert count_parameters(spec, 37) == build_model(spec, 37, causal=True).num_parameters()


def test_bigram_parameter_count() -> None:
    spec = validate_spec({"model": {"kind": "bigram"}}, "x")
    assert count_parameters(spec.model, 50) == build_model(spec.model, 50, causal=True).num_parameters() == 2500


def saved_activation_bytes(raw: dict, vocab: int) -> int:
    """Bytes autograd saves for backward in one training forward (parameters and logits excluded)."""
    spec = validate_spec(raw, "x")
    model = build_model(spec.model, vocab, causal=True).train()
    saved: dict[tuple, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved[(tensor.data_ptr(), tuple(tensor.shape))] = tensor.numel() * tensor.element_size()
        return tensor

    B, T = spec.train.batch_size, spec.model.block_size
    ids = torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(ids, ids)
    return sum(saved.values()) - model.num_parameters() * 4 - B * T * vocab * 4


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_activation_estimate_is_within_a_factor_of_two_of_what_autograd_saves(dropout: float, mlp: str) -> None:
    raw = {"model": {"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 128, "dropout": dropout, "mlp": mlp},
           "train": {"batch_size": 4}}
    measured = saved_activation_bytes(raw, vocab=100)
    parts = estimate_training_memory(validate_spec(raw, "x"), 100, "cpu", 1).parts
    estimated = parts["activations"] + parts.get("attention", 0)
    assert measured / 2 <= estimated <= measured * 2, (measured, estimated)


def test_estimate_counts_optimizer_states_and_ddp_buckets() -> None:
    spec = validate_spec({"model": {"n_layer": 2, "n_embd": 32, "n_head": 2}}, "x")
    one = estimate_training_memory(spec, 100, "cpu", 1)
    two = estimate_training_memory(spec, 100, "cpu", 2)
    P = one.parameters
    assert one.parts["weights"] == one.parts["gradients"] == 4 * P and one.parts["optimizer"] == 8 * P
    assert two.bytes_per_rank - one.bytes_per_rank == 4 * P


def test_a_spec_that_cannot_fit_is_refused_with_the_estimate() -> None:
    spec = validate_spec({"model": {"n_layer": 1024, "n_embd": 65536, "n_head": 64}, "train": {"device": "cpu"}}, "x")
    with pytest.raises(SpecError, match=r"the model cannot fit: training needs about .* GiB per rank \(\d+\.\dM parameters.* available"):
        preflight.check(spec)


def test_a_small_spec_fits() -> None:
    estimate = preflight.check(validate_spec({"train": {"device": "cpu"}}, "x"))
    assert 0 < estimate.bytes_per_rank < 2**30


def test_available_cpu_memory_is_known_on_linux() -> None:
    available = preflight.available_cpu_memory()
    assert available is not None and available > 2**27


@pytest.mark.skipif(GPU_HERE, reason="this machine has a GPU")
@pytest.mark.parametrize("changes, message", [
    ({"train": {"device": "cuda"}}, "train.device: cuda, but"),
    ({"launch": {"backend": "nccl"}}, "launch.backend: nccl needs a GPU"),
])
def test_a_device_or_backend_this_machine_lacks_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        preflight.check(validate_spec(changes, "x"))


def test_cuda_visible_devices_empty_hides_every_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert preflight.visible_gpus() == []
    with pytest.raises(SpecError, match="train.device: cuda"):
        preflight.check(validate_spec({"train": {"device": "cuda"}}, "x"))


@pytest.mark.skipif(not GPU_HERE, reason="needs an NVIDIA GPU and a CUDA build of torch")
def test_gpu_memory_estimate_is_checked_against_free_gpu_memory() -> None:
    gpus = preflight.visible_gpus()
    assert gpus and all(0 < gpu.free_bytes <= gpu.total_bytes for gpu in gpus)
    assert preflight.check(validate_spec({"train": {"device": "cuda"}}, "x")).bytes_per_rank < gpus[0].free_bytes
    huge = validate_spec({"model": {"n_layer": 1024, "n_embd": 32768, "n_head": 64}, "train": {"device": "cuda"}}, "x")
    with pytest.raises(SpecError, match="a GPU here has .* GiB free"):
        preflight.check(huge)
    too_many = validate_spec({"train": {"device": "cuda"}, "launch": {"nproc": len(gpus) + 1}}, "x")
    with pytest.raises(SpecError, match="visible GPU"):
        preflight.check(too_many)


def test_nvidia_smi_output_is_read_and_cuda_visible_devices_honoured(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU on the CI machine: a stand-in `nvidia-smi` prints what the real one prints for
    `--query-gpu=index,memory.free,memory.total --format=csv,noheader,nounits` on a 2-GPU node."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0, 80000, 81559\\n1, 1000, 81559\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{preflight.os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = preflight.visible_gpus()
    assert [(g.index, g.free_bytes, g.total_bytes) for g in gpus] == [
        (0, 80000 * 2**20, 81559 * 2**20), (1, 1000 * 2**20, 81559 * 2**20)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [g.index for g in preflight.visible_gpus()] == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert preflight.visible_gpus() == []
    # The decisions a CUDA build would take with these GPUs (this machine's torch is CPU-only).
    monkeypatch.setattr(preflight, "torch_has_cuda", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert preflight.training_device(validate_spec({}, "x"), preflight.visible_gpus()) == "cuda"  # auto picks the GPU
    big = validate_spec({"model": {"n_layer": 48, "n_embd": 2048, "n_head": 16}, "train": {"device": "cuda"}}, "x")
    with pytest.raises(SpecError, match=r"a GPU here has 0.98 GiB free"):
        preflight.check(big)
    with pytest.raises(SpecError, match="launch.nproc: 2 ranks on CUDA, but this machine has 1 visible GPU"):
        preflight.check(validate_spec({"train": {"device": "cuda"}, "launch": {"nproc": 2}}, "x"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert preflight.check(big).bytes_per_rank < 80000 * 2**20  # fits GPU 0 ... but rank 1 would get GPU 1:
    with pytest.raises(SpecError, match="0.98 GiB free"):
        preflight.check(validate_spec({"model": {"n_layer": 48, "n_embd": 2048, "n_head": 16},
                                       "train": {"device": "cuda"}, "launch": {"nproc": 2}}, "x"))
