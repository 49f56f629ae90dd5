"""Training windows: random windows of consecutive tokens, seeded per step so resume is exact."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from gptexp.data.tokens import TokenSplit

if TYPE_CHECKING:
    import torch

    from gptexp.objectives import Window


def sample_windows(split: TokenSplit, batch_size: int, window: int, generator: torch.Generator) -> Window:
    """`batch_size` random windows of `window` consecutive tokens (window = block_size + 1).

    Only the B × window tokens are read from the split (a memory map in the workers).
    """
    import torch

    if len(split) < window + 1:
        raise ValueError(f"split has {len(split)} tokens, fewer than one window of {window}")
    starts = torch.randint(0, len(split) - window + 1, (batch_size,), generator=generator)
    return split.gather(starts[:, None] + torch.arange(window)[None, :])  # (B, window)


def step_seed(seed: int, rank: int, step: int, micro_step: int = 0, stream: int = 0) -> int:
    """A seed for one (rank, step, micro-step) that does not depend on what ran before.

    Data order, masking and dropout are seeded this way, so a run resumed at step k draws exactly
    the batches and masks the uninterrupted run drew after step k, with no RNG state to restore.
    """
    digest = hashlib.blake2b(f"{seed}:{rank}:{step}:{micro_step}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF
