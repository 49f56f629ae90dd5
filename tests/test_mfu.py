"""MFU arithmetic: FLOPs per token, the peak table, the utilisation."""

from __future__ import annotations

import pytest

from gptexp import contract as C
from gptexp.mfu import flops_per_token, mfu, peak_flops


def test_flops_per_token_of_gpt2_small_matches_the_6n_plus_attention_estimate() -> None:
    # GPT-2 small as nanoGPT counts it (124M without the position table): 6N + 12·L·T·d.
    per_token = flops_per_token(123_653_376, n_layer=12, block_size=1024, n_embd=768)
    assert per_token == 741_920_256 + 113_246_208 == 855_166_464


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.4e12), ("NVIDIA H200", 989.4e12), ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA H100 PCIe", None), ("NVIDIA H200 NVL", None), ("NVIDIA GeForce RTX 4090", None),
])
def test_the_peak_table_knows_sxm_hoppers_and_a100_and_nothing_else(name: str, peak: float | None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(C.ENV_PEAK_TFLOPS, raising=False)
    assert peak_flops(name) == peak


def test_an_unknown_gpu_gets_its_peak_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(C.ENV_PEAK_TFLOPS, "756")
    assert peak_flops("NVIDIA H100 PCIe") == 756e12
    monkeypatch.setenv(C.ENV_PEAK_TFLOPS, "fast")
    assert peak_flops("NVIDIA H100 PCIe") is None


def test_mfu_is_achieved_over_peak_across_devices() -> None:
    # 500k tokens/s of GPT-2 small on one H100: 0.5e6 × 855.17e6 / 989.4e12 = 43.2%.
    assert mfu(500_000, 855.166464e6, 1, 989.4e12) == pytest.approx(0.43216, rel=1e-4)
    assert mfu(1_000_000, 855.166464e6, 2, 989.4e12) == pytest.approx(0.43216, rel=1e-4)  # tokens/s of both ranks
    assert mfu(500_000, 855.166464e6, 1, None) is None and mfu(0, 1.0, 1, 1.0) is None
