"""Which special token plays which role (pad, unk, bos, eos, mask), found by its text.

gptexp's own tokenizers name them "<pad>", "<unk>", "<bos>", "<eos>", "<mask>"; pretrained files
use other conventions ("[MASK]" in BERT's WordPiece, "<|endoftext|>" in GPT-2's, "</s>" in
SentencePiece ones). Masking, padding and the Hugging Face export all ask here.

    role_ids({"<|endoftext|>": 50256})  -> {"eos": 50256}
    role_ids({"<pad>": 9, "<mask>": 13}) -> {"pad": 9, "mask": 13}
"""

from __future__ import annotations

ROLES = ("pad", "unk", "bos", "eos", "mask")
ROLE_TEXTS: dict[str, tuple[str, ...]] = {  # first match wins
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
    "bos": ("<bos>", "<s>", "[CLS]", "<|startoftext|>", "<|begin_of_text|>"),
    "eos": ("<eos>", "</s>", "[SEP]", "<|endoftext|>", "<|end_of_text|>"),
    "mask": ("<mask>", "[MASK]", "<|mask|>"),
}


def role_tokens(special_tokens: dict[str, int]) -> dict[str, str]:
    """role -> the special token's text, for the roles this vocabulary has."""
    found = {}
    for role in ROLES:
        text = next((t for t in ROLE_TEXTS[role] if t in special_tokens), None)
        if text is not None:
            found[role] = text
    return found


def role_ids(special_tokens: dict[str, int]) -> dict[str, int]:
    """role -> the special token's id, for the roles this vocabulary has."""
    return {role: special_tokens[text] for role, text in role_tokens(special_tokens).items()}
