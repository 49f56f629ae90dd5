"""What gptexp calls on a model, an objective and a tokenizer: the contract of custom components.

A custom class satisfies one of these (structurally; no base class needed) and is named in a spec
by import path (see gptexp.components). Methods marked optional are used when present.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from gptexp.objectives import Batch, TokenInfo, Window
    from gptexp.tokenizers.base import EncodedText


@runtime_checkable
class LanguageModel(Protocol):
    """A torch.nn.Module built as Cls(vocab_size=V, block_size=T, causal=bool, **args).

    forward(idx (B, T) long, targets (B, T) long or None) -> (logits (B, T, V), loss or None);
    the loss is the mean cross-entropy over targets != -100 (gptexp.models.gpt.language_model_loss).
    causal=False is asked for by the masked objectives (mlm, mntp): attend in both directions.

    Optional, used when present:
      set_dropout(p: float)    the dropout schedule sets the rate before each step
      num_parameters() -> int  reported in summary.json (default: sum of parameters' sizes)
      generate(idx, max_new_tokens, temperature=1.0, top_k=None, generator=None, use_cache=True)
                               KV-cache generation; without it gptexp samples with forward calls
    """

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def parameters(self, recurse: bool = True) -> Iterable[torch.nn.Parameter]: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any: ...


@runtime_checkable
class Objective(Protocol):
    """Built as Cls(**args). `causal`: whether the model attends only backwards.

    make_batch turns a window of T+1 tokens (ids, byte_counts, word_starts, each (B, T+1)) into
    inputs (B, T), labels (B, T) with -100 where nothing is predicted, and label_bytes (B, T): the
    UTF-8 bytes of each label token (0 where not predicted), from which val/bpb is computed.
    The generator is the only source of randomness (resume draws the same batches).
    """

    causal: bool

    def make_batch(self, window: Window, info: TokenInfo, generator: torch.Generator) -> Batch: ...


@runtime_checkable
class TokenizerLike(Protocol):
    """Built as Cls(**args); `train(text)` (optional) is called with the training split.

    vocab_size and special_tokens ({"<mask>": id, ...}; roles found by name, see
    gptexp.tokenizers.roles) size the model and drive masking. encode_for_training returns the
    ids with the UTF-8 bytes of the original text each token stands for (their sum is the text's
    byte length: that is what makes val/bpb comparable) and word starts. to_dict / from_dict
    (a classmethod) save and restore it as JSON inside the run's tokenizer.json.
    """

    @property
    def vocab_size(self) -> int: ...

    @property
    def special_tokens(self) -> dict[str, int]: ...

    def encode(self, text: str, allow_special: bool = False) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def encode_for_training(self, text: str) -> EncodedText: ...

    def to_dict(self) -> dict[str, Any]: ...
