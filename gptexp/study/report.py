"""A study's results: results.json (a contract), report.md, report.html and plots.

results.json:
    {"study": name,
     "arms": {arm: {"tokenizer": kind, "objective": kind, "mask_unit": unit, "best_params": {...},
                    "runs": [{"seed": s, "run_id": id, "metrics": {"val/bpb": x, "val/pll_bpb": y, ...}}],
                    "mean": {...}, "std": {...}, "ci95": {metric: [low, high]}, "budget": {...}}},
     "comparisons": [{"metric", "a", "b", "seeds", "difference", "by_seed", "by_word", "claim"}, ...],
     "answer": text, "evaluation": {...}}
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

from gptexp import contract as C
from gptexp.scoring import EXACT_NAME, METRIC_PREFIX, SCORINGS, rename
from gptexp.study.runner import arm_seeds, final_run_id, study_dir
from gptexp.study.spec import StudySpec
from gptexp.study.stats import paired_difference, seed_interval
from gptexp.tracking import RunStore, read_json, write_json_atomic

HEADLINE = tuple(METRIC_PREFIX[s] for s in SCORINGS)  # val/bpb, val/hw_l2r_bpb, val/pll_bpb, val/pll_l2r_bpb
PLL_L2R = METRIC_PREFIX["pll_l2r"]  # the headline metric
SCORING_OF = {METRIC_PREFIX[s]: s for s in SCORINGS}
TABLE_METRICS = HEADLINE + (C.VAL_LOSS, EXACT_NAME["pll_l2r"], rename(PLL_L2R, "test/"))


def _finite(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else math.nan


def fmt(x: Any, digits: int = 3) -> str:
    x = _finite(x)
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def fmt_interval(low: Any, high: Any) -> str:
    return "–" if math.isnan(_finite(low)) else f"[{fmt(low)}, {fmt(high)}]"


def collect(study: StudySpec, runs_dir: Path) -> dict[str, Any]:
    """results.json's content from the study directory and the runs."""
    directory = study_dir(runs_dir, study.name)
    arms_info = read_json(directory / "arms.json") or {}
    tuned = read_json(directory / "tune.json") or {}
    arms: dict[str, Any] = {}
    words: dict[str, dict[int, Any]] = {}
    for arm in study.arms:
        info = arms_info.get(arm, {})
        runs, words[arm] = [], {}
        for seed in arm_seeds(study, arm):
            run_id = final_run_id(study, arm, seed)
            record = read_json(directory / "scores" / f"{run_id}.json")
            if record is None:
                continue
            summary = RunStore(runs_dir / run_id).read_summary()
            runs.append({"seed": seed, "run_id": run_id, "metrics": record["metrics"],
                         C.BYTES_SEEN: summary.get(C.BYTES_SEEN), C.TOKENS_SEEN: summary.get(C.TOKENS_SEEN),
                         C.SUMMARY_WALL_TIME: summary.get(C.SUMMARY_WALL_TIME)})
            words[arm][seed] = record["words"]
        names = sorted({k for run in runs for k in run["metrics"]})
        intervals = {name: seed_interval([_finite(run["metrics"].get(name)) for run in runs]) for name in names}
        bytes_seen = [r[C.BYTES_SEEN] for r in runs if r.get(C.BYTES_SEEN)]
        tokens_seen = [r[C.TOKENS_SEEN] for r in runs if r.get(C.TOKENS_SEEN)]
        arms[arm] = {
            "tokenizer": info.get("tokenizer"), "objective": info.get("objective"), "mask_unit": info.get("mask_unit"),
            "best_params": tuned.get(arm, {}).get("params", {}),
            "tuning": tuned.get(arm, {}).get("trials", []),
            "runs": runs,
            "mean": {k: iv.mean for k, iv in intervals.items()},
            "std": {k: iv.std for k, iv in intervals.items()},
            "ci95": {k: [iv.low, iv.high] for k, iv in intervals.items()},
            "budget": {
                "params": info.get("params"), "non_embedding_params": info.get("non_embedding_params"),
                "steps": info.get("steps"), "block_size": info.get("block_size"),
                "context_bytes": info.get("context_bytes"), "bytes_per_token": info.get("bytes_per_token"),
                C.BYTES_SEEN: float(np.mean(bytes_seen)) if bytes_seen else None,
                "train_flops": info.get("flops_per_token", 0) * float(np.mean(tokens_seen)) if tokens_seen else info.get("train_flops"),
                "flops_per_token": info.get("flops_per_token"),
            },
        }
    comparisons = compare(study, arms, words)
    evaluation = {}
    for path in sorted((directory / "evalsets").glob("*.json")):
        raw = read_json(path) or {}
        spans = raw.get("spans", [])
        evaluation[path.stem] = {"spans": len(spans), "hidden_words": sum(len(s["hidden"]) for s in spans),
                                 "hidden_bytes": sum(b - a for s in spans for a, b in s["hidden"]),
                                 "skipped_words": raw.get("skipped_words", 0), "dropped_spans": raw.get("dropped_spans", 0)}
    results = {"study": study.name, "arms": arms, "comparisons": [c.to_dict() for c in comparisons],
               "answer": "", "evaluation": evaluation}
    results["answer"] = answer(results)
    return results


def arms_by(arms: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(tokenizer kind, mask unit) -> arm name (the first arm of each combination)."""
    found: dict[tuple[str, str], str] = {}
    for arm, info in arms.items():
        found.setdefault((info["tokenizer"], info["mask_unit"]), arm)
    return found


def _bits(words: dict[int, Any], seeds: list[int], scoring: str, evalset: str = "val") -> np.ndarray:
    return np.array([words[s][evalset]["bits"][scoring] for s in seeds], dtype=np.float64)


def compare(study: StudySpec, arms: dict[str, Any], words: dict[str, dict[int, Any]]) -> list[Any]:
    """char minus BPE, paired, for each mask unit and metric; and the factorisation's share."""
    index = arms_by(arms)
    out = []
    for unit in ("token", "word", "word_tail"):
        a, b = index.get(("char", unit)), index.get(("bpe", unit))
        if not a or not b:
            continue
        seeds = sorted(set(words[a]) & set(words[b]))
        if not seeds:
            continue
        word_bytes = np.array(words[a][seeds[0]]["val"]["word_bytes"])
        for metric in HEADLINE:
            scoring = SCORING_OF[metric]
            out.append(paired_difference(metric, a, b, seeds, _bits(words[a], seeds, scoring), _bits(words[b], seeds, scoring), word_bytes))
    # How much of the word-mask gap the output factorisation explains: (char - bpe) on val/bpb with
    # word masks minus (char - bpe) on val/pll_l2r_bpb with word_tail masks, same words and seeds.
    cw, bw, ct, bt = (index.get(k) for k in (("char", "word"), ("bpe", "word"), ("char", "word_tail"), ("bpe", "word_tail")))
    if cw and bw and ct and bt:
        seeds = sorted(set(words[cw]) & set(words[bw]) & set(words[ct]) & set(words[bt]))
        if seeds:
            word_bytes = np.array(words[cw][seeds[0]]["val"]["word_bytes"])
            gap_word_plus = _bits(words[cw], seeds, "masked") + _bits(words[bt], seeds, "pll_l2r")
            gap_tail_plus = _bits(words[bw], seeds, "masked") + _bits(words[ct], seeds, "pll_l2r")
            out.append(paired_difference(f"gap({C.VAL_BPB}, word) - gap({PLL_L2R}, word_tail)", f"{cw}-{bw}",
                                         f"{ct}-{bt}", seeds, gap_word_plus, gap_tail_plus, word_bytes))
    return out


def _find(results: dict[str, Any], metric: str, a: str, b: str) -> dict[str, Any] | None:
    return next((c for c in results["comparisons"] if c["metric"] == metric and c["a"] == a and c["b"] == b), None)


def _said(c: dict[str, Any] | None) -> str:
    if c is None:
        return "not measured"
    seed, word = c["by_seed"], c["by_word"]
    text = f"{fmt(c['difference'])} bpb (95% over seeds {fmt_interval(seed['low'], seed['high'])}, over words {fmt_interval(word['low'], word['high'])})"
    return text + ("" if c["claim"] else "; not claimed: an interval includes zero or there is one seed")


def answer(results: dict[str, Any]) -> str:
    """The lead paragraph: the char-vs-BPE difference split into its parts, with intervals."""
    arms = results["arms"]
    index = arms_by(arms)
    parts = []

    def mean(arm: str | None, metric: str) -> float:
        return _finite(arms[arm]["mean"].get(metric)) if arm else math.nan

    ct, bt = index.get(("char", "token")), index.get(("bpe", "token"))
    if ct and bt:
        parts.append(
            f"Unit of the loss: with token masks, char scores {fmt(mean(ct, C.VAL_LOSS))} nats per hidden token against "
            f"BPE's {fmt(mean(bt, C.VAL_LOSS))}, but a char token mask hides one character and a BPE token mask "
            f"several; per byte the two are {fmt(mean(ct, C.VAL_BPB))} and {fmt(mean(bt, C.VAL_BPB))} bpb "
            f"(char − BPE {_said(_find(results, C.VAL_BPB, ct, bt))}).")
    cw, bw = index.get(("char", "word")), index.get(("bpe", "word"))
    if cw and bw:
        parts.append(
            f"Masking unit: with whole-word masks both arms hide the same words; char − BPE on val/bpb is "
            f"{_said(_find(results, C.VAL_BPB, cw, bw))}.")
    ctl, btl = index.get(("char", "word_tail")), index.get(("bpe", "word_tail"))
    factor = next((c for c in results["comparisons"] if c["metric"].startswith("gap(")), None)
    if factor is not None:
        whole = _finite(_find(results, C.VAL_BPB, cw, bw)["difference"]) if _find(results, C.VAL_BPB, cw, bw) else math.nan
        share = factor["difference"] / whole if whole and not math.isnan(whole) else math.nan
        share_text = f" (about {share:.0%} of the word-mask gap)" if not math.isnan(share) else ""
        parts.append(
            f"Factorisation of the output: training with word_tail masks and scoring each word by the chain rule "
            f"(PLL-word-l2r) instead of letter by letter independently reduces the char − BPE gap by "
            f"{_said(factor)}{share_text}.")
    if ctl and btl:
        parts.append(f"What remains: char − BPE on val/pll_l2r_bpb (word_tail arms) is "
                     f"{_said(_find(results, PLL_L2R, ctl, btl))}.")
    if not parts:
        return "The study has no pair of char and BPE arms with the same mask unit; nothing to compare."
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# files


def markdown(results: dict[str, Any], plots: list[str], wall_time: str | None = None) -> str:
    arms = results["arms"]
    lines = [f"# Study {results['study']}", "", results["answer"], ""]
    lines += ["## Arms × metrics (mean over seeds [95% interval]; bits per byte of the hidden words)", ""]
    header = ["arm", "tokenizer", "mask unit", "seeds", "lr"] + list(TABLE_METRICS)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for arm, info in arms.items():
        cells = [arm, str(info["tokenizer"]), str(info["mask_unit"]), str(len(info["runs"])),
                 str(info["best_params"].get("optim.lr", "–"))]
        for metric in TABLE_METRICS:
            low, high = info["ci95"].get(metric, [math.nan, math.nan])
            cells.append(f"{fmt(info['mean'].get(metric))} {fmt_interval(low, high)}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Budgets", "", "| arm | params | non-embedding params | steps | block | bytes of context | bytes seen | training FLOPs |",
              "|---|---|---|---|---|---|---|---|"]
    for arm, info in arms.items():
        b = info["budget"]
        lines.append(f"| {arm} | {b['params']:,} | {b['non_embedding_params']:,} | {b['steps']} | {b['block_size']} | "
                     f"{fmt(b['context_bytes'], 0)} | {fmt(b[C.BYTES_SEEN], 0)} | {_finite(b['train_flops']):.3g} |"
                     if b.get("params") else f"| {arm} | – | – | – | – | – | – | – |")
    lines += ["", "## Paired differences (a − b, same hidden words and seeds)", "",
              "| metric | a | b | seeds | difference | 95% over seeds | 95% over words | claimed |", "|---|---|---|---|---|---|---|---|"]
    for c in results["comparisons"]:
        lines.append(f"| {c['metric']} | {c['a']} | {c['b']} | {len(c['seeds'])} | {fmt(c['difference'])} | "
                     f"{fmt_interval(c['by_seed']['low'], c['by_seed']['high'])} | "
                     f"{fmt_interval(c['by_word']['low'], c['by_word']['high'])} | {'yes' if c['claim'] else 'no'} |")
    lines += ["", "## Bits per byte by byte position inside the word (val/pll_l2r_bpb, mean over seeds)", ""]
    positions = [f"byte{i}" for i in range(7)] + ["byte7+"]
    lines.append("| arm | " + " | ".join(positions) + " |")
    lines.append("|" + "---|" * (len(positions) + 1))
    for arm, info in arms.items():
        lines.append(f"| {arm} | " + " | ".join(fmt(info["mean"].get(f"{PLL_L2R}/{p}"), 2) for p in positions) + " |")
    lines += ["", "## One-BPE-token versus multi-token hidden words (mean over seeds)", "",
              "| arm | share one-token | val/bpb one | val/bpb multi | val/pll_l2r_bpb one | val/pll_l2r_bpb multi |",
              "|---|---|---|---|---|---|"]
    for arm, info in arms.items():
        m = info["mean"]
        lines.append(f"| {arm} | {fmt(m.get('val/one_token_share'), 2)} | {fmt(m.get(C.VAL_BPB + '/one_token'))} | "
                     f"{fmt(m.get(C.VAL_BPB + '/multi_token'))} | {fmt(m.get(PLL_L2R + '/one_token'))} | "
                     f"{fmt(m.get(PLL_L2R + '/multi_token'))} |")
    held = sorted({k.split("/")[0] + ("/" + k.split("/")[1] if k.startswith("heldout/") else "")
                   for info in arms.values() for k in info["mean"] if k.startswith(("test/", "heldout/"))})
    lines += ["", "## Held-out texts (scored once, at the end)", ""]
    if held:
        lines.append("| arm | " + " | ".join(f"{h} bpb | {h} pll_l2r_bpb" for h in held) + " |")
        lines.append("|" + "---|" * (2 * len(held) + 1))
        for arm, info in arms.items():
            m = info["mean"]
            lines.append(f"| {arm} | " + " | ".join(f"{fmt(m.get(h + '/bpb'))} | {fmt(m.get(h + '/pll_l2r_bpb'))}" for h in held) + " |")
    else:
        lines.append("No test split or held-out text in this study.")
    lines += ["", "## Evaluation sets", ""]
    for name, ev in results["evaluation"].items():
        lines.append(f"- {name}: {ev['spans']} spans, {ev['hidden_words']} hidden words ({ev['hidden_bytes']} bytes), "
                     f"{ev['skipped_words']} drawn words skipped in every arm (characters outside a vocabulary), "
                     f"{ev['dropped_spans']} words longer than a window left out")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}](plots/{p})" for p in plots]
    return "\n".join(lines) + "\n"


def html_page(markdown_text: str, title: str) -> str:
    """The markdown report as a plain HTML page: tables become tables, every text is escaped."""
    body, table = [], []

    def flush_table() -> None:
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[html.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rest}</tbody></table>")
            table.clear()

    for line in markdown_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            target = line[line.index("(") + 1 : -1]
            body.append(f'<p><img src="{html.escape(target, quote=True)}" alt="{html.escape(target, quote=True)}"></p>')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_plots(study: StudySpec, runs_dir: Path, results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    names = []
    arms = results["arms"]
    for x_key, label, stem in ((C.BYTES_SEEN, "training bytes", "curves_bytes.png"), ("flops", "training FLOPs", "curves_flops.png")):
        fig, ax = plt.subplots(figsize=(7, 4))
        for arm, info in arms.items():
            per_token = info["budget"].get("flops_per_token") or 0
            for n, run in enumerate(info["runs"]):
                rows = [r for r in RunStore(runs_dir / run["run_id"]).read_metrics() if C.VAL_BPB in r]
                xs = [r.get(C.BYTES_SEEN, 0) if x_key == C.BYTES_SEEN else r.get(C.TOKENS_SEEN, 0) * per_token for r in rows]
                ax.plot(xs, [r[C.VAL_BPB] for r in rows], color=f"C{list(arms).index(arm)}", alpha=0.8,
                        label=arm if n == 0 else None)
        ax.set_xlabel(label)
        ax.set_ylabel("val/bpb during training (the arm's own masks)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / stem, dpi=90)
        plt.close(fig)
        names.append(stem)
    fig, ax = plt.subplots(figsize=(7, 4))
    positions = [f"byte{i}" for i in range(7)] + ["byte7+"]
    for arm, info in arms.items():
        ax.plot(range(len(positions)), [_finite(info["mean"].get(f"{PLL_L2R}/{p}")) for p in positions], marker="o", label=arm)
    ax.set_xticks(range(len(positions)), [p.removeprefix("byte") for p in positions])
    ax.set_xlabel("byte position inside the hidden word")
    ax.set_ylabel("bits per byte (PLL-word-l2r)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "bits_by_position.png", dpi=90)
    plt.close(fig)
    names.append("bits_by_position.png")
    return names


def without_nan(value: Any) -> Any:
    """NaN and infinities become null: results.json stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(v) for v in value]
    if isinstance(value, np.generic):
        return without_nan(value.item())
    return value


def write_report(study: StudySpec, runs_dir: Path) -> dict[str, Path]:
    directory = study_dir(runs_dir, study.name)
    results = collect(study, runs_dir)
    plots = write_plots(study, runs_dir, results, directory / "plots")
    text = markdown(results, plots)
    paths = {"results.json": directory / "results.json", "report.md": directory / "report.md",
             "report.html": directory / "report.html"}
    (directory / "report.md").write_text(text, encoding="utf-8")
    (directory / "report.html").write_text(html_page(text, f"Study {study.name}"), encoding="utf-8")
    write_json_atomic(paths["results.json"], without_nan(results))
    return paths
