"""Objectives: how a window of T+1 tokens becomes (inputs, labels), and the evaluation metrics.

clm   inputs = ids[:, :-1], labels = ids[:, 1:]: predict the next token (causal attention).
mlm   BERT masking of the first T tokens; labels = the original token at each chosen position.
mntp  masked as mlm, but the label of a masked token i sits at position i - 1 (LLM2Vec).

Labels are -100 wherever nothing is predicted, so the model never knows which objective it trains
on. Masking is a pure function: ids and a torch.Generator in, new tensors out, no Python loop over
tokens, the generator the only source of randomness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from gptexp.contract import VAL_ACC, VAL_BPB, VAL_LOSS
from gptexp.spec import ObjectiveSpec

IGNORE_INDEX = -100  # a label that is not predicted (F.cross_entropy's ignore_index)

# BERT's split of the chosen positions. The model must predict even where the input looks
# untouched (KEEP) or wrong (RANDOM), so it cannot learn that only <mask> positions matter.
MASK_SHARE = 0.8  # replaced by <mask>
RANDOM_SHARE = 0.1  # replaced by a random non-special token
KEEP_SHARE = 1.0 - MASK_SHARE - RANDOM_SHARE  # left as they are (still predicted)

# metric_sums returns these four sums, in this order, as one float64 tensor.
METRIC_SUM_FIELDS = ("loss_sum", "correct", "count", "bytes")


@dataclass(frozen=True)
class TokenInfo:
    """What masking needs to know about the tokenizer (built by the trainer)."""

    vocab_size: int
    special_ids: tuple[int, ...]  # never masked, never used as a random replacement
    mask_id: int | None
    pad_id: int | None


def token_info(tokenizer: Any) -> TokenInfo:
    """What masking needs from a tokenizer; the <mask> and <pad> roles are found by name (roles.py)."""
    from gptexp.tokenizers.roles import role_ids

    specials = tokenizer.special_tokens
    roles = role_ids(specials)
    return TokenInfo(vocab_size=tokenizer.vocab_size, special_ids=tuple(sorted(specials.values())),
                     mask_id=roles.get("mask"), pad_id=roles.get("pad"))


@dataclass
class Window:
    """T+1 consecutive tokens per row, as the data pipeline samples them."""

    ids: torch.Tensor  # (B, T+1) long
    byte_counts: torch.Tensor  # (B, T+1) long: UTF-8 bytes each token stands for
    word_starts: torch.Tensor  # (B, T+1) bool: True where a pre-split word (regex chunk) begins


@dataclass
class Batch:
    inputs: torch.Tensor  # (B, T) long
    labels: torch.Tensor  # (B, T) long, -100 = not predicted
    label_bytes: torch.Tensor  # (B, T) long: UTF-8 bytes of each label token, 0 where labels == -100


def is_causal(objective: ObjectiveSpec) -> bool:
    """clm needs causal attention; mlm and mntp see the whole window; a custom objective says."""
    from gptexp.components import build_objective

    return build_objective(objective).causal


class BuiltinObjective:
    """clm, mlm and mntp as registry components (gptexp.components): configured by their spec."""

    def __init__(self, spec: ObjectiveSpec) -> None:
        self.spec = spec
        self.causal = spec.kind == "clm"

    @classmethod
    def from_spec(cls, spec: ObjectiveSpec) -> BuiltinObjective:
        return cls(spec)

    def make_batch(self, window: Window, info: TokenInfo, generator: torch.Generator) -> Batch:
        return make_batch(self.spec, window, info, generator)


def special_mask(ids: torch.Tensor, info: TokenInfo) -> torch.Tensor:
    """True where ids is a special token (pad included)."""
    specials = set(info.special_ids) | ({info.pad_id} if info.pad_id is not None else set())
    return torch.isin(ids, torch.tensor(sorted(specials), dtype=ids.dtype, device=ids.device))


def replacement_ids(info: TokenInfo, device: torch.device) -> torch.Tensor:
    """The ids a random replacement may take: every non-special id, ascending."""
    all_ids = torch.arange(info.vocab_size, device=device)
    return all_ids[~special_mask(all_ids, info)]


def word_index(word_starts: torch.Tensor) -> torch.Tensor:
    """Number of the word each position belongs to (B, T), counted row-major over the batch.

    Column 0 always begins a word: a window that starts inside a word has that word's tail as its
    own unit. `word_index([[1, 0, 1], [0, 1, 0]]) -> [[0, 0, 1], [2, 3, 3]]`
    """
    starts = torch.cat((torch.ones_like(word_starts[:, :1]), word_starts[:, 1:]), dim=1)
    return starts.flatten().long().cumsum(0).view(starts.shape) - 1


def position_in_word(word_of: torch.Tensor, n_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(position of each token inside its word (B, T), length of each word in tokens (n_words,)).

    Words are runs of equal `word_index` values. `position_in_word([[0, 0, 1], [2, 3, 3]], 4)
    -> ([[0, 1, 0], [0, 0, 1]], [2, 1, 1, 2])`
    """
    flat = word_of.flatten()
    order = torch.arange(flat.numel(), device=flat.device)
    first = torch.full((n_words,), flat.numel(), dtype=torch.long, device=flat.device)
    first = first.scatter_reduce(0, flat, order, reduce="amin")
    length = torch.bincount(flat, minlength=n_words)
    return (order - first[flat]).view_as(word_of), length


def whole_word_positions(word_starts: torch.Tensor) -> torch.Tensor:
    """True (B, T) where a position belongs to a word that lies wholly inside its row.

    word_starts is (B, T+1): column T says whether the token after the row starts a word, so
    whether the row's last word is complete. A row that starts inside a word (a leading fragment)
    or stops inside one (a trailing fragment) must not mask the fragment as if it were a word.
    `whole_word_positions([[0, 1, 0, 1, 0]]) -> [[False, True, True, False]]`
    """
    starts = word_starts[:, :-1]
    T = starts.size(1)
    columns = torch.arange(T, device=starts.device).expand_as(starts)
    first_start = torch.where(starts, columns, T).amin(dim=1, keepdim=True)
    last_start = torch.where(starts, columns, -1).amax(dim=1, keepdim=True)
    leading = columns < first_start
    trailing = (columns >= last_start) & ~word_starts[:, -1:]
    return ~leading & ~trailing


def mask_tokens(ids: torch.Tensor, maskable: torch.Tensor, info: TokenInfo, mask_prob: float,
                generator: torch.Generator, word_starts: torch.Tensor | None = None, word_tail: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: (new input ids (B, T), chosen positions (B, T) bool); ids is never modified.

    maskable (B, T) says which positions may be chosen; special and pad ids are excluded anyway.
    Token unit (word_starts None): each maskable position is chosen with probability mask_prob.
    Word unit: each word (see `word_index`) is chosen with probability mask_prob, one draw per
    word in order, and all its maskable tokens are chosen; the 80/10/10 decision is also drawn per
    word, so a word is hidden entirely or not at all and a character model and a BPE model of the
    same text hide the same characters. If nothing is chosen in the whole batch, the maskable
    position (word) with the smallest draw is chosen, so the loss is always defined.
    Chosen positions become <mask> (MASK_SHARE), a random non-special id (RANDOM_SHARE) or stay.

    Word tail (word_tail=True, needs word_starts): a chosen word of L tokens keeps a visible prefix
    of k tokens, k uniform in {0..L-1}, and only the rest (the tail, at least one token) is chosen;
    every tail token becomes <mask> (no 80/10/10), so the tail is never shown to the model. This
    trains what PLL-word-l2r scoring asks (the next tokens of a word given its first ones).

    The generator (on ids' device) is drawn in a fixed order whatever the content: choice,
    action, random ids, then (word tail only) the prefix draws; the same generator state gives the
    same result.
    """
    if info.mask_id is None:
        raise ValueError("masking needs a tokenizer with a <mask> token (TokenInfo.mask_id is None)")
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
    device = ids.device
    maskable = maskable & ~special_mask(ids, info)
    if word_starts is None:
        choice_draws = torch.rand(ids.shape, generator=generator, device=device)
        action_draws = torch.rand(ids.shape, generator=generator, device=device)
        chosen = (choice_draws < mask_prob) & maskable
        if not chosen.any() and maskable.any():
            forced = choice_draws.masked_fill(~maskable, 2.0).flatten().argmin()
            chosen = torch.zeros_like(maskable).flatten().index_fill(0, forced, True).view_as(maskable)
    else:
        word_of = word_index(word_starts)  # (B, T)
        n_words = int(word_of[-1, -1]) + 1 if word_of.numel() else 0
        word_draws = torch.rand(n_words, generator=generator, device=device)
        word_actions = torch.rand(n_words, generator=generator, device=device)
        word_maskable = torch.zeros(n_words, dtype=torch.bool, device=device)
        word_maskable[word_of[maskable]] = True  # a word counts if any of its tokens may be masked
        word_chosen = (word_draws < mask_prob) & word_maskable
        if not word_chosen.any() and word_maskable.any():
            forced = word_draws.masked_fill(~word_maskable, 2.0).argmin()
            word_chosen = torch.zeros_like(word_maskable).index_fill(0, forced.view(1), True)
        chosen = word_chosen[word_of] & maskable  # (B, T)
        action_draws = word_actions[word_of]  # (B, T): one decision per word
    candidates = replacement_ids(info, device)
    random_ids = candidates[torch.randint(len(candidates), ids.shape, generator=generator, device=device)]
    if word_tail:
        if word_starts is None:
            raise ValueError("word_tail masking needs word_starts")
        position, length = position_in_word(word_of, n_words)
        prefix = (torch.rand(n_words, generator=generator, device=device) * length).long()  # k in {0..L-1}
        chosen = chosen & (position >= prefix[word_of])
        return ids.masked_fill(chosen, info.mask_id), chosen
    to_mask = chosen & (action_draws < MASK_SHARE)
    to_random = chosen & (action_draws >= MASK_SHARE) & (action_draws < MASK_SHARE + RANDOM_SHARE)
    new_ids = torch.where(to_random, random_ids, ids).masked_fill(to_mask, info.mask_id)
    return new_ids, chosen


def make_batch(objective: ObjectiveSpec, window: Window, info: TokenInfo, generator: torch.Generator) -> Batch:
    """(inputs, labels, label_bytes), each (B, T), from a window of T+1 tokens.

    clm uses all T+1 tokens (shifted by one). mlm and mntp use the first T: the masked tokens must
    be in the inputs so that 80/10/10 applies to every one of them. mntp then moves each label one
    position left (logits at i - 1 predict token i, as LLM2Vec shifts logits[:, :-1] against
    labels[:, 1:]); token 0 is never chosen (no position precedes it) and the last position
    predicts nothing. A clm target that is the pad id is not predicted.
    """
    if objective.kind == "clm":
        labels = window.ids[:, 1:]
        if info.pad_id is not None:
            labels = labels.masked_fill(labels == info.pad_id, IGNORE_INDEX)
        label_bytes = window.byte_counts[:, 1:].masked_fill(labels == IGNORE_INDEX, 0)
        return Batch(inputs=window.ids[:, :-1], labels=labels, label_bytes=label_bytes)
    if objective.kind not in ("mlm", "mntp"):
        raise ValueError(f"unknown objective {objective.kind!r}")

    T = window.ids.size(1) - 1
    ids, byte_counts = window.ids[:, :T], window.byte_counts[:, :T]
    by_word = objective.mask_unit in ("word", "word_tail")
    word_starts = window.word_starts[:, :T] if by_word else None
    maskable = ~special_mask(ids, info)  # a new tensor: editing it leaves the window alone
    if by_word:  # words cut by the window's edges are never masked
        maskable &= whole_word_positions(window.word_starts)
    if objective.kind == "mntp":
        maskable[:, 0] = False
    inputs, chosen = mask_tokens(ids, maskable, info, objective.mask_prob, generator, word_starts,
                                 word_tail=objective.mask_unit == "word_tail")
    labels = ids.masked_fill(~chosen, IGNORE_INDEX)
    label_bytes = byte_counts.masked_fill(~chosen, 0)
    if objective.kind == "mntp":
        labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)  # label of token i at i - 1
        label_bytes = F.pad(label_bytes[:, 1:], (0, 1), value=0)
    return Batch(inputs=inputs, labels=labels, label_bytes=label_bytes)


# ---------------------------------------------------------------------------------------------
# metrics


def metric_sums(logits: torch.Tensor, labels: torch.Tensor, label_bytes: torch.Tensor) -> torch.Tensor:
    """float64 tensor [loss_sum, correct, count, bytes] over the predicted tokens (labels != -100).

    Sums, not means, so batches add with `+` and ranks combine with one all_reduce(SUM); the
    tensor stays on the logits' device (no host sync per batch). See METRIC_SUM_FIELDS.
    """
    predicted = labels != IGNORE_INDEX
    loss_sum = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
    correct = ((logits.argmax(dim=-1) == labels) & predicted).sum()
    n_bytes = label_bytes.masked_fill(~predicted, 0).sum()
    return torch.stack([loss_sum.double(), correct.double(), predicted.sum().double(), n_bytes.double()])


def metrics_from_sums(sums: torch.Tensor) -> dict[str, float]:
    """val/loss (nats per predicted token), val/bpb (bits per UTF-8 byte), val/acc; NaN when empty.

    bpb = loss_sum / (ln 2 * bytes): summed nats over the bytes the predicted tokens stand for,
    the one number comparable across tokenizers.
    """
    loss_sum, correct, count, n_bytes = sums.tolist()
    nan = float("nan")
    return {
        VAL_LOSS: loss_sum / count if count else nan,
        VAL_BPB: loss_sum / (math.log(2) * n_bytes) if n_bytes else nan,
        VAL_ACC: correct / count if count else nan,
    }
