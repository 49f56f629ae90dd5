"""Upper bounds on spec values and the naming limits of Weights & Biases, defined once.

The spec (spec.py) enforces these at validation, before any process starts; anything that derives
a value later (a sweep naming W&B groups and tags after its study) checks it with the same
functions. The bounds are generous sanity limits that catch typos and hostile input (`n_layer:
1e9`), not tuning advice: whether a model fits this machine is preflight.py's question.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

# Sizes (per rank). Real models stay far below: GPT-3 has 96 layers, 96 heads, width 12288.
MAX_LAYERS = 1024
MAX_HEADS = 1024
MAX_WIDTH = 65_536
MAX_BLOCK_SIZE = 1_048_576  # tokens of context
MAX_VOCAB_SIZE = 1_048_576
MAX_BATCH_SIZE = 65_536  # sequences per micro-batch
MAX_GRAD_ACCUM = 65_536
MAX_EVAL_BATCHES = 1_000_000
MAX_STEPS = 1_000_000_000  # max_steps, warmup and every *_every interval
MAX_SPECIAL_TOKENS = 1024
MAX_SPECIAL_TOKEN_LENGTH = 256
MAX_NPROC = 1024  # processes per node
MAX_NNODES = 65_536
MAX_SEED = 2**63 - 1  # a signed 64-bit integer: torch, SQLite, JSON readers and W&B configs all keep it exact
MAX_SAMPLER_SEED = 2**32 - 1  # a sweep's sampler seed: numpy's RandomState (under Optuna's samplers) takes 0 to 2**32 - 1
MAX_NAME_LENGTH = 128  # the experiment name is the W&B run name
MAX_PATH_BYTES = 4096  # Linux PATH_MAX
MAX_PATH_PART_BYTES = 255  # Linux NAME_MAX
# `gptexp generate --max-new-tokens`: 100k tokens take minutes on a CPU for the shipped models;
# more is a typo (1e9 would sample for days).
MAX_NEW_TOKENS = 100_000
# A tokenizer file (gptexp's JSON or a Hugging Face tokenizer.json): the largest public ones (250k
# vocabularies with merges) are tens of MB; a bound keeps /dev/zero or a mistaken path from
# filling memory.
MAX_TOKENIZER_FILE_BYTES = 256 << 20

# Weights & Biases (checked in wandb 0.31's own source and the server's errors):
# - tags: 1 to 64 characters. wandb/sdk/wandb_settings.py validates run tags ("Tags must be between
#   1 and 64 characters"); the server answers 400 "invalid tag ... must be between 1 and 64
#   characters" when an offline run with a longer tag is synced (wandb/wandb issue 4208).
# - project: at most 128 characters, none of / \ # ? % : (wandb_settings.py validate_project).
# - group and run name: at most 128 characters on the server (a late failure reported in
#   NVIDIA-NeMo/Skills issue 842, which added the same pre-submit check in its PR 859).
# A sweep tags trials "study:<name>": a study name over 58 characters makes that tag too long,
# which is the "study names over ~58 fail" seen in issue 10.
WANDB_MAX_TAG_LENGTH = 64
WANDB_MAX_PROJECT_LENGTH = 128
WANDB_MAX_GROUP_LENGTH = 128
WANDB_MAX_NAME_LENGTH = 128
WANDB_PROJECT_FORBIDDEN = "/\\#?%:"


def check_wandb_tags(tags: Iterable[str]) -> None:
    """Raise ValueError naming the first tag W&B would reject (empty, over 64 characters, control characters).

    `check_wandb_tags(["study:" + "x" * 59])` raises: the tag is 65 characters.
    """
    for index, tag in enumerate(tags):
        if not 1 <= len(tag) <= WANDB_MAX_TAG_LENGTH:
            raise ValueError(f"tag {index} ({_short(tag)}) is {len(tag)} characters; "
                             f"W&B accepts 1 to {WANDB_MAX_TAG_LENGTH}")
        _check_printable(tag, f"tag {index}")


def check_wandb_name(value: str, kind: str) -> None:
    """Raise ValueError if W&B would reject `value` as a `kind`: project, entity, group or name (run name)."""
    limit = {"project": WANDB_MAX_PROJECT_LENGTH, "entity": WANDB_MAX_PROJECT_LENGTH,
             "group": WANDB_MAX_GROUP_LENGTH, "name": WANDB_MAX_NAME_LENGTH}[kind]
    if not 1 <= len(value) <= limit:
        raise ValueError(f"{kind} {_short(value)} is {len(value)} characters; W&B accepts 1 to {limit}")
    _check_printable(value, kind)
    if kind in ("project", "entity"):
        found = sorted({c for c in value if c in WANDB_PROJECT_FORBIDDEN})
        if found:
            raise ValueError(f"{kind} {_short(value)} contains {' '.join(found)}; "
                             f"W&B forbids any of {' '.join(WANDB_PROJECT_FORBIDDEN)} in a {kind}")


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a newline, tab, escape or other control/format character (one line it is not)."""
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


def _check_printable(value: str, what: str) -> None:
    if has_control_characters(value):
        raise ValueError(f"{what} {_short(value)} contains a newline or another control character")


def _short(value: str, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
