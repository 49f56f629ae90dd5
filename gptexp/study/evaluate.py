"""`gptexp eval --metric`: PLL scoring of any masked-LM run, outside a study.

A study scores its runs on its own frozen evaluation set (shared by its arms). A single run has
no other arm to share with, so the set is built from the text and this run's tokenizer and window,
with seed EVAL_SEED: the same run and text always get the same hidden words.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from gptexp.evaluate import EVAL_SEED, load_trained_run
from gptexp.evalset import arm_view, build_evalset
from gptexp.scoring import score_spans, span_rows, summarize
from gptexp.spec import SpecError

HIDDEN_FRACTION = 0.15


def score_text(run_dir: Path, text: str | None, scorings: tuple[str, ...], checkpoint: str = "last") -> dict[str, Any]:
    """Metrics of `scorings` on `text` (default: the run's validation split), with the cost."""
    from gptexp.study.runner import corpus_splits

    run = load_trained_run(run_dir, checkpoint)
    if run.spec.objective.kind not in ("mlm", "mntp") or "<mask>" not in run.tokenizer.special_tokens:
        raise SpecError(f"--metric: run {run_dir.name} is not a masked LM (objective {run.spec.objective.kind})")
    if text is None:
        text = corpus_splits(run.spec)["val"]
    pattern = run.tokenizer.pattern if run.tokenizer.pattern != "none" else "gpt4"
    evalset = build_evalset(text, pattern, [(run.tokenizer, run.spec.model.block_size)], EVAL_SEED, HIDDEN_FRACTION,
                            reference=run.tokenizer if run.tokenizer.kind == "bpe" else None)
    spans = arm_view(evalset, text, run.tokenizer)
    started = time.perf_counter()
    scores = score_spans(run.model, spans, run.tokenizer.special_tokens["<mask>"], scorings)
    seconds = time.perf_counter() - started
    reference = [n for span in evalset.spans for n in span.reference_tokens] or None
    rows = sum(len(span_rows(span, scorings)) for span in spans)
    return {**summarize(scores, reference), "spans": len(spans), "skipped_words": evalset.skipped_words,
            "forward_rows": rows, "forward_tokens": sum(len(span_rows(s, scorings)) * len(s.ids) for s in spans),
            "seconds": round(seconds, 3), "step": run.step, "checkpoint": run.checkpoint.name}
