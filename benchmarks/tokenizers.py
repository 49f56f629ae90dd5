"""Tokenizer speed benchmark (run on demand, not a test).

    python benchmarks/tokenizers.py [--corpus data/tinyshakespeare.txt] [--vocab-size 2048]
                                    [--naive-vocab-size 300] [--repeats 3]

In one process, on the corpus with the GPT-4 split pattern:
  * training wall time: ours vs Hugging Face BpeTrainer (train_from_iterator([text]))
    vs the naive trainer (recount every pair after every merge, minbpe style),
    the latter timed at a small vocab and extrapolated linearly per merge;
  * encoding the whole corpus, cold (fresh tokenizer, empty cache) and cached
    (second call), against tiktoken built from our merges and HF from our export;
  * tokens per byte for the char and the bpe tokenizer.
Timings are the best of --repeats runs (the machine is shared). Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# this file is named tokenizers.py: keep its folder off sys.path so that
# `import tokenizers` finds Hugging Face's package, not this script
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

from gptexp.tokenizers import SPLIT_PATTERNS, train_tokenizer  # noqa: E402
from gptexp.tokenizers.bpe import BPETokenizer  # noqa: E402
from gptexp.tokenizers.hf import export_hf  # noqa: E402
from tests.test_tokenizers import naive_merges as naive_train  # noqa: E402 - the one naive reference trainer


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def hf_train(text: str, vocab_size: int, special_tokens: list[str]):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERNS["gpt4"]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)
    return tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(ROOT / "data" / "tinyshakespeare.txt"))
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--naive-vocab-size", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import tiktoken
    import tokenizers

    text = Path(args.corpus).read_text(encoding="utf-8")
    n_bytes = len(text.encode("utf-8"))
    mb = n_bytes / 1e6
    reps = args.repeats
    rows: list[tuple[str, str, str]] = []

    # -- training ---------------------------------------------------------------
    t_ours, tok = best_time(lambda: train_tokenizer(text, kind="bpe", vocab_size=args.vocab_size, pattern="gpt4"), reps)
    special = list(tok.special_tokens)
    t_hf, hf_trained = best_time(lambda: hf_train(text, args.vocab_size, special), reps)
    n_merges = len(tok.merges)
    small = train_tokenizer(text, kind="bpe", vocab_size=args.naive_vocab_size, pattern="gpt4")
    n_small = len(small.merges)
    t_naive_small, naive = best_time(lambda: naive_train(text, "gpt4", n_small), 1)
    assert naive == small.merges == tok.merges[:n_small], "naive and incremental trainers disagree"
    t_naive = t_naive_small / n_small * n_merges
    # Each naive merge scans every token left, and fewer are left as merges go on,
    # so scale by tokens scanned: count the tokens after k merges at a few k and
    # integrate piecewise linearly.
    checkpoints = sorted(k for k in {0, n_small, 100, 200, 400, 800, 1200, n_merges} if k <= n_merges)
    left = {k: len(BPETokenizer(tok.merges[:k], pattern="gpt4").encode(text)) for k in checkpoints}

    def scanned(upto: int) -> float:
        total = 0.0
        for k0, k1 in zip(checkpoints, checkpoints[1:]):
            if k0 >= upto:
                break
            hi = min(k1, upto)
            slope = (left[k1] - left[k0]) / (k1 - k0)
            total += (hi - k0) * (left[k0] + slope * (hi - k0) / 2)
        return total

    t_naive_scaled = t_naive_small * scanned(n_merges) / scanned(n_small)
    t_ours_small, _ = best_time(lambda: train_tokenizer(text, kind="bpe", vocab_size=args.naive_vocab_size, pattern="gpt4"), reps)

    rows.append(("train: ours (incremental, pure Python)", f"{t_ours:.3f} s", f"{n_merges} merges"))
    rows.append(("train: HF BpeTrainer, train_from_iterator([text])", f"{t_hf:.3f} s", f"ours / HF = {t_ours / t_hf:.2f}x"))
    rows.append((
        f"train: naive recount, {n_small} merges (measured)",
        f"{t_naive_small:.2f} s",
        f"ours at {n_small} merges: {t_ours_small:.3f} s ({t_naive_small / t_ours_small:.0f}x faster)",
    ))
    rows.append((
        f"train: naive recount, {n_merges} merges (extrapolated by tokens scanned)",
        f"≈ {t_naive_scaled:.0f} s",
        f"naive / ours ≈ {t_naive_scaled / t_ours:.0f}x (linear per merge, an upper bound: ≈ {t_naive:.0f} s)",
    ))

    # -- encoding -----------------------------------------------------------------
    def cold_encode():
        fresh = BPETokenizer(tok.merges, pattern="gpt4", special_tokens=special)
        return fresh.encode(text)

    t_cold, ids = best_time(cold_encode, reps)
    t_warm, ids_warm = best_time(lambda: tok.encode(text), reps + 1)  # tok's cache is filled by the first call
    assert ids == ids_warm

    def cold_training():
        fresh = BPETokenizer(tok.merges, pattern="gpt4", special_tokens=special)
        return fresh.encode_for_training(text)

    t_eft, _ = best_time(cold_training, reps)

    ranks = {tok.token_bytes(i): i for i in range(256 + n_merges)}
    enc = tiktoken.Encoding(name="gptexp-bench", pat_str=SPLIT_PATTERNS["gpt4"], mergeable_ranks=ranks, special_tokens={})
    t_tt, tt_ids = best_time(lambda: enc.encode_ordinary(text), reps)
    assert tt_ids == ids, "tiktoken disagrees"

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        export_hf(tok, path)

        def hf_cold():
            return tokenizers.Tokenizer.from_file(path).encode(text, add_special_tokens=False).ids

        t_hf_cold, hf_ids = best_time(hf_cold, reps)
        hf = tokenizers.Tokenizer.from_file(path)
        hf.encode(text, add_special_tokens=False)
        t_hf_warm, hf_ids2 = best_time(lambda: hf.encode(text, add_special_tokens=False).ids, reps)
    assert hf_ids == hf_ids2 == ids, "HF export disagrees"

    def speed(t: float) -> str:
        return f"{t:.3f} s ({mb / t:.1f} MB/s)"

    rows.append(("encode corpus: ours, cold (fresh tokenizer, empty cache)", speed(t_cold), f"ours / tiktoken = {t_cold / t_tt:.1f}x"))
    rows.append(("encode corpus: ours, cached (second call)", speed(t_warm), f"ours / tiktoken = {t_warm / t_tt:.1f}x"))
    rows.append(("encode_for_training corpus: ours, cold", speed(t_eft), "ids + byte_counts + word_starts"))
    rows.append(("encode corpus: tiktoken (from our merges)", speed(t_tt), "same ids"))
    rows.append(("encode corpus: HF tokenizers (our export), cold (fresh load)", speed(t_hf_cold), "same ids"))
    rows.append(("encode corpus: HF tokenizers (our export), second call", speed(t_hf_warm), "same ids"))

    # -- compression --------------------------------------------------------------
    char = train_tokenizer(text, kind="char")
    rows.append(("tokens per byte: char", f"{len(char.encode(text)) / n_bytes:.3f}", f"vocab {char.vocab_size}"))
    rows.append(("tokens per byte: bpe (ours)", f"{len(ids) / n_bytes:.3f}", f"vocab {tok.vocab_size}"))
    hf_self = hf_trained.encode(text, add_special_tokens=False).ids
    rows.append(("tokens per byte: bpe (HF-trained, same settings)", f"{len(hf_self) / n_bytes:.3f}", f"vocab {hf_trained.get_vocab_size()}"))

    # how far the two trainers' merge lists agree (they differ in tie-breaking)
    from gptexp.tokenizers.hf import byte_alphabet

    unbyte = {c: b for b, c in enumerate(byte_alphabet())}
    hf_merges = hf_trained.to_str()
    import json

    hf_pairs = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in json.loads(hf_merges)["model"]["merges"]]
    ours_pairs = [(tok.token_bytes(a), tok.token_bytes(b)) for a, b in tok.merges]
    agree = 0
    for (x, y), (a, b) in zip(hf_pairs, ours_pairs):
        if bytes(unbyte[c] for c in x) != a or bytes(unbyte[c] for c in y) != b:
            break
        agree += 1

    print(f"corpus: {args.corpus} ({n_bytes:,} bytes), vocab {args.vocab_size}, pattern gpt4, best of {reps}")
    print(f"python {sys.version.split()[0]}, tiktoken {tiktoken.__version__}, tokenizers {tokenizers.__version__}, "
          f"cpus {os.cpu_count()}")
    print()
    print("| measurement | time / value | note |")
    print("|---|---|---|")
    for name, value, note in rows:
        print(f"| {name} | {value} | {note} |")
    print()
    print(f"Our first {agree} merges equal HF's (tie-breaking differs after that).")


if __name__ == "__main__":
    main()
