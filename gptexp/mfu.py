"""Model FLOPs utilisation: how much of a GPU's peak bf16 matrix throughput training uses.

FLOPs per trained token follow the PaLM appendix B / nanoGPT estimate: 6·N for the forward and
backward matmuls of N parameters, plus 12·L·T·d for attention scores and their weighted sums
(L layers, context T, width d). MFU = tokens/s × FLOPs per token / (devices × peak FLOP/s).

The peak is dense bf16 tensor-core throughput (no 2:4 sparsity), per device:
- H100 SXM5 and H200 (the same GH100 compute; the H200 changes memory only): 989.4 TFLOP/s
  (NVIDIA Hopper whitepaper figures as tabulated at https://glennklockwood.com/garden/processors/h100:
  BF16 matrix 989.4, sparse 1978.9; NVIDIA's datasheets print the sparse 1,979 with a footnote).
- A100 (SXM4 and PCIe): 312 TFLOP/s (NVIDIA A100 datasheet: BF16 Tensor Core 312, 624 with sparsity).
A device not in the table (H100 PCIe and NVL, H200 NVL run lower clocks) gets no MFU rather than a
wrong one; `peak_flops` reads GPTEXP_PEAK_TFLOPS (contract.ENV_PEAK_TFLOPS) to supply it.
"""

from __future__ import annotations

import os

from gptexp import contract as C

# (substring of torch.cuda.get_device_name(), dense bf16 FLOP/s); the first match wins, so the
# variants with other clocks come first and map to None.
PEAK_BF16_FLOPS: tuple[tuple[str, float | None], ...] = (
    ("H100 PCIe", None),
    ("H100 NVL", None),
    ("H200 NVL", None),
    ("H100", 989.4e12),  # "NVIDIA H100 80GB HBM3" (SXM5)
    ("H200", 989.4e12),  # "NVIDIA H200" (SXM)
    ("A100", 312e12),
)


def flops_per_token(n_params: int, n_layer: int, block_size: int, n_embd: int) -> float:
    """Training FLOPs per token: 6·N + 12·L·T·d (forward + backward, attention included)."""
    return 6.0 * n_params + 12.0 * n_layer * block_size * n_embd


def peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of one device named `device_name`, or None if it is not known."""
    override = os.environ.get(C.ENV_PEAK_TFLOPS)
    if override:
        try:
            value = float(override)
        except ValueError:
            return None
        return value * 1e12 if value > 0 else None
    for fragment, peak in PEAK_BF16_FLOPS:
        if fragment in device_name:
            return peak
    return None


def mfu(tokens_per_sec: float, per_token_flops: float, devices: int, peak: float | None) -> float | None:
    """The fraction of `devices` × `peak` that `tokens_per_sec` uses (None without a peak)."""
    if peak is None or devices < 1 or tokens_per_sec <= 0:
        return None
    return tokens_per_sec * per_token_flops / (devices * peak)
