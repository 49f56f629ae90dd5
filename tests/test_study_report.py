"""The study report: the lead paragraph states differences with intervals, claims only what they support."""

from __future__ import annotations

import math

from gptexp.study.report import answer, html_page, markdown, without_nan


def interval(mean, low, high, n=3):
    return {"mean": mean, "std": 0.1, "low": low, "high": high, "n": n}


def arm(tokenizer, unit, metrics):
    return {"tokenizer": tokenizer, "objective": "mlm", "mask_unit": unit, "best_params": {"optim.lr": 0.002},
            "runs": [{"seed": 1, "run_id": f"s-{tokenizer}-{unit}-s1", "metrics": metrics}], "mean": metrics,
            "std": {}, "ci95": {k: [v - 0.1, v + 0.1] for k, v in metrics.items()},
            "budget": {"params": 1000, "non_embedding_params": 800, "steps": 10, "block_size": 8,
                       "context_bytes": 8.0, "bytes_per_token": 1.0, "bytes_seen": 80.0, "train_flops": 1e6,
                       "flops_per_token": 1e4}}


def results():
    comparisons = [
        {"metric": "val/bpb", "a": "cw", "b": "bw", "seeds": [1, 2, 3], "difference": 0.85,
         "by_seed": interval(0.85, 0.80, 0.90), "by_word": interval(0.85, 0.82, 0.88), "claim": True},
        {"metric": "val/pll_l2r_bpb", "a": "ct", "b": "bt", "seeds": [1, 2, 3], "difference": 0.05,
         "by_seed": interval(0.05, -0.02, 0.12), "by_word": interval(0.05, 0.01, 0.09), "claim": False},
        {"metric": "gap(val/bpb, word) - gap(val/pll_l2r_bpb, word_tail)", "a": "cw-bw", "b": "ct-bt", "seeds": [1, 2, 3],
         "difference": 0.80, "by_seed": interval(0.80, 0.70, 0.90), "by_word": interval(0.80, 0.75, 0.85), "claim": True},
    ]
    arms = {"cw": arm("char", "word", {"val/bpb": 3.2, "val/loss": 2.1}), "bw": arm("bpe", "word", {"val/bpb": 2.35}),
            "ct": arm("char", "word_tail", {"val/pll_l2r_bpb": 2.5}), "bt": arm("bpe", "word_tail", {"val/pll_l2r_bpb": 2.45})}
    return {"study": "s<script>", "arms": arms, "comparisons": comparisons, "answer": "", "evaluation": {}}


def test_the_answer_states_each_part_with_its_intervals_and_claims_only_what_they_support():
    text = answer(results())
    assert "0.850 bpb (95% over seeds [0.800, 0.900], over words [0.820, 0.880])" in text
    assert "reduces the char − BPE gap by 0.800 bpb" in text and "about 94% of the word-mask gap" in text
    remains = text[text.index("What remains"):]
    assert "0.050 bpb" in remains and "not claimed" in remains


def test_markdown_and_html_escape_and_show_the_tables():
    data = results()
    data["answer"] = answer(data)
    md = markdown(data, ["curves_bytes.png"])
    assert "| cw | char | word | 1 | 0.002 | 3.200 [3.100, 3.300]" in md
    page = html_page(md, "Study s<script>")
    assert "<script>" not in page and "&lt;script&gt;" in page and "<table>" in page


def test_results_json_has_no_nan():
    assert without_nan({"a": [math.nan, 1.0], "b": {"c": math.inf}}) == {"a": [None, 1.0], "b": {"c": None}}
