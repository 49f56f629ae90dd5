"""Data-pipeline scale benchmark (issue 14; run on demand, not a test).

    python benchmarks/scale.py [--sizes 100MB 1GB] [--work DIR] [--vocab 8192] [--workers N]
                               [--skip-hf] [--skip-run] [--json results.json]

For each size it builds a corpus of real text from files already on this machine: the .py, .pyi,
.md, .rst, .txt, .h and .c files of the installed packages and of the Python installation (then
.html documentation, then other source, data and markup files — .js, .json, .xml, .yaml, ... —,
then files without a suffix, then gzipped text such as manual pages, as long as that is not enough), each file once (deduplicated by content, never a
repeated copy), skipping files that are not UTF-8 text or are larger than 4 MB. The corpus is a
directory of those files (one document each), built once per size under --work and reused.

Then, each measurement in its own process so that peak memory is its own:
  * gptexp preparation (`prepare_data`, BPE with --vocab tokens, GPT-4 split, all cores or
    --workers): scan, chunk counting, merge learning, encoding; wall times, encode MB/s (and per
    worker), peak resident memory of the preparing process and of its pool, and the peak of their
    summed PSS (sampled every 0.1 s; PSS shares the pages a forked pool shares with its parent,
    so the sum is the memory the preparation really holds);
  * Hugging Face `tokenizers` doing the same work: BpeTrainer (--vocab) from an iterator of the
    documents with the GPT-4 split + byte-level alphabet, then encode_batch of every document;
  * `gptexp run` on the corpus with an empty cache (one rank, a small GPT, 5 steps):
    prepare-to-first-step time (launch to the first logged training step) and the peak resident
    memory of the training worker (VmHWM, and its anonymous / file-backed parts at the end).
The machine may be shared: say so when quoting the numbers (ratios from one run are the robust part).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
# benchmarks/tokenizers.py would shadow Hugging Face's package: keep this folder off sys.path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

TEXT_SUFFIXES = (".py", ".pyi", ".md", ".rst", ".txt", ".h", ".c")
MORE_SUFFIXES = (".html",)
# still short of the size asked (this machine has about 740 MB of the two tiers above): other
# kinds of text that programmers' corpora hold too — source in other languages, data and markup
EVEN_MORE_SUFFIXES = (".js", ".json", ".xml", ".yaml", ".yml", ".pm", ".pl", ".vim", ".el", ".lua", ".tex",
                      ".css", ".sh", ".cfg", ".ini", ".toml", ".pxd", ".pyx", ".cpp", ".hpp", ".cc", ".cu",
                      ".cuh", ".java", ".go", ".rs", ".ts", ".rb", ".php", ".sql", ".csv", ".tsv", ".po")
# and last: files without a suffix (scripts, READMEs, licences; binaries fail the UTF-8 check) and
# gzipped text (manual pages, changelogs), read decompressed
NO_SUFFIX = ("",)
GZIPPED = (".gz",)
TIERS = (TEXT_SUFFIXES, MORE_SUFFIXES, EVEN_MORE_SUFFIXES, NO_SUFFIX, GZIPPED)
MAX_FILE_BYTES = 4 << 20
SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(KB|MB|GB)", text.strip().upper())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size such as 20MB or 1GB")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2)])


def source_roots() -> list[Path]:
    """Where the installed packages and the Python installation keep their files, in a fixed order."""
    roots = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], sysconfig.get_paths()["stdlib"],
             "/usr/lib/python3", "/usr/share/doc", "/usr/include", "/usr/lib", "/usr/share", "/usr/local/lib", "/opt"]
    seen, result = set(), []
    for root in roots:
        path = Path(root)
        if path.is_dir() and path.resolve() not in seen:
            seen.add(path.resolve())
            result.append(path)
    return result


def candidate_files(suffixes: tuple[str, ...]):
    for root in source_roots():
        for directory, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                if (suffixes == NO_SUFFIX and "." not in name) or (suffixes != NO_SUFFIX and name.endswith(suffixes)):
                    yield Path(directory) / name


def read_candidate(path: Path) -> bytes:
    """A candidate file's text bytes (decompressed for .gz); raises OSError/ValueError if unusable."""
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError("not a small regular file")
    if path.suffix == ".gz":
        with gzip.open(path) as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ValueError("too large decompressed")
    else:
        data = path.read_bytes()
    data.decode("utf-8")
    return data


def build_corpus(target_bytes: int, work: Path) -> Path:
    """A directory of distinct real text files totalling about target_bytes (built once, reused)."""
    corpus = work / f"corpus-{target_bytes // 10**6}MB"
    done = corpus / ".complete"
    if done.exists():
        return corpus
    corpus.mkdir(parents=True, exist_ok=True)
    seen: set[bytes] = set()
    total, count = 0, 0
    for suffixes in TIERS:
        for path in candidate_files(suffixes):
            if total >= target_bytes:
                break
            try:
                data = read_candidate(path)
            except (OSError, ValueError, EOFError, zlib.error):  # UnicodeDecodeError, gzip.BadGzipFile too
                continue
            digest = hashlib.sha1(data).digest()
            if not data.strip() or b"\x00" in data or digest in seen:
                continue
            seen.add(digest)
            data = data[: target_bytes - total] if total + len(data) > target_bytes else data
            # cut a truncated last file back to whole characters
            data = data.decode("utf-8", errors="ignore").encode("utf-8")
            (corpus / f"{count:07d}.txt").write_bytes(data)
            total += len(data)
            count += 1
    if total < target_bytes * 0.95:
        print(f"note: only {total / 1e6:,.0f} MB of distinct text found on this machine (asked {target_bytes / 1e6:,.0f} MB)")
    done.write_text(json.dumps({"bytes": total, "files": count}))
    return corpus


def corpus_stats(corpus: Path) -> dict:
    return json.loads((corpus / ".complete").read_text())


def peak_mb() -> dict[str, float]:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"peak_rss_mb": self_kb / 1024, "peak_rss_children_mb": children_kb / 1024}


def descendants(pid: int) -> list[int]:
    """pid and every process below it (from /proc/*/task/*/children)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                pass
    return found


def pss_kb(pid: int) -> int:
    """Proportional set size: resident memory with pages shared between processes (a forked pool
    shares its parent's heap) divided among them, so a process tree's PSS adds up to what it uses."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Samples the summed PSS of this process and its descendants every 0.1 s in a thread; `peak_mb`."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_kb = max(self.peak_kb, sum(pss_kb(pid) for pid in descendants(os.getpid())))

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


# ---------------------------------------------------------------------------------------------
# the measured jobs (each runs in its own process: `scale.py --job NAME ...`)


def job_gptexp_prepare(corpus: Path, cache: Path, vocab: int, workers: int | None) -> dict:
    from gptexp.data import prepare_data
    from gptexp.spec import validate_spec

    data = {"path": str(corpus)}
    if workers:
        data["workers"] = workers
    spec = validate_spec({"data": data, "tokenizer": {"kind": "bpe", "vocab_size": vocab, "pattern": "gpt4"}}, "bench")
    marks: list[tuple[float, str]] = []
    start = time.perf_counter()
    with TreeMemory() as tree:
        prepared = prepare_data(spec, cache, progress=lambda m: marks.append((time.perf_counter() - start, m)))
    total = time.perf_counter() - start

    def first(prefix: str) -> float:
        return next(t for t, m in marks if m.startswith(prefix))

    counted = first("learning")
    encode_start = next(t for t, m in marks if m.startswith("encoding") and "done" not in m)
    encode_end = next(t for t, m in marks if m.startswith("encoding") and "done" in m)
    match = re.search(r"encoding with (\d+) process", next(m for _, m in marks if m.startswith("encoding")))
    n_workers = int(match.group(1)) if match else 1
    mb = corpus_stats(corpus)["bytes"] / 1e6
    return {"scan_s": first("training"), "count_s": counted - first("training"), "merges_s": encode_start - counted,
            "train_s": encode_start, "encode_s": encode_end - encode_start, "total_s": total, "workers": n_workers,
            "encode_mb_s": mb / (encode_end - encode_start), "encode_mb_s_per_worker": mb / (encode_end - encode_start) / n_workers,
            "tokens_dir_mb": sum(f.stat().st_size for f in prepared.tokens_dir.iterdir()) / 1e6,
            "peak_tree_pss_mb": tree.peak_mb, **peak_mb()}


def job_hf(corpus: Path, vocab: int) -> dict:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from gptexp.tokenizers import DEFAULT_SPECIAL_TOKENS, SPLIT_PATTERNS

    files = sorted(p for p in corpus.iterdir() if p.suffix == ".txt")

    def documents():
        for path in files:
            yield path.read_text(encoding="utf-8")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERNS["gpt4"]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=list(DEFAULT_SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    with TreeMemory() as tree:
        start = time.perf_counter()
        tok.train_from_iterator(documents(), trainer=trainer, length=len(files))
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        n_tokens, batch = 0, []
        for doc in documents():
            batch.append(doc)
            if len(batch) == 1000:
                n_tokens += sum(len(e.ids) for e in tok.encode_batch(batch))
                batch = []
        if batch:
            n_tokens += sum(len(e.ids) for e in tok.encode_batch(batch))
        encode_s = time.perf_counter() - start
    mb = corpus_stats(corpus)["bytes"] / 1e6
    return {"train_s": train_s, "encode_s": encode_s, "total_s": train_s + encode_s, "encode_mb_s": mb / encode_s,
            "tokens": n_tokens, "threads": os.cpu_count(), "peak_tree_pss_mb": tree.peak_mb, **peak_mb()}


def proc_status(pid: int) -> dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0])  # kB
    except OSError:
        pass
    return values


def job_run(corpus: Path, work: Path, vocab: int, workers: int | None) -> dict:
    """`gptexp run` with an empty cache: launch → first training step, and the worker's peak memory."""
    runs = Path(tempfile.mkdtemp(dir=work, prefix="runs-"))
    data = {"path": str(corpus), "val_fraction": 0.01, **({"workers": workers} if workers else {})}
    spec = {"name": "scale", "seed": 1, "data": data, "tokenizer": {"kind": "bpe", "vocab_size": vocab},
            "model": {"kind": "gpt", "n_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 256, "dropout": 0.0},
            "train": {"batch_size": 16, "max_steps": 5, "eval_every": 5, "eval_batches": 2, "log_every": 1,
                      "checkpoint_every": 100},
            "tracking": {"wandb": {"mode": "disabled"}}}
    spec_path = runs / "spec.yaml"
    spec_path.write_text(json.dumps(spec))  # JSON is YAML
    start_wall, start = time.time(), time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "gptexp.cli", "run", str(spec_path), "--nproc", "1",
                                "--runs-dir", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worst: dict[str, int] = {}
    last: dict[str, int] = {}
    while process.poll() is None:
        for status_file in runs.glob("scale-*/status.json"):
            try:
                pid = json.loads(status_file.read_text()).get("worker_pid")
            except (OSError, ValueError):
                pid = None
            if pid:
                now = proc_status(int(pid))
                if now:
                    last = now
                    worst = {k: max(worst.get(k, 0), v) for k, v in now.items()}
        time.sleep(0.2)
    output = process.stdout.read()
    elapsed = time.perf_counter() - start
    if process.returncode != 0:
        return {"error": f"gptexp run exited {process.returncode}: {output[-2000:]}"}
    run_dir = next(runs.glob("scale-*"))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first_step = next(r["time"] for r in rows if "train/loss" in r)
    return {"prepare_to_first_step_s": first_step - start_wall, "run_total_s": elapsed,
            "worker_peak_rss_mb": worst.get("VmHWM", 0) / 1024, "worker_rss_anon_mb": last.get("RssAnon", 0) / 1024,
            "worker_rss_file_mb": last.get("RssFile", 0) / 1024}


JOBS = {"prepare": job_gptexp_prepare, "hf": job_hf, "run": job_run}


def run_job(name: str, *args: str) -> dict:
    """Run one job in a fresh process; its last stdout line is the JSON result."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run([sys.executable, __file__, "--job", name, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"error": (result.stderr or result.stdout)[-2000:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[parse_size("100MB"), parse_size("1GB")])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gptexp-scale")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=None, help="data.workers (default: all cores)")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--skip-run", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("job_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.job:  # inside a measured child process
        a = args.job_args
        if args.job == "prepare":
            result = job_gptexp_prepare(Path(a[0]), Path(a[1]), int(a[2]), int(a[3]) or None)
        elif args.job == "hf":
            result = job_hf(Path(a[0]), int(a[1]))
        else:
            result = job_run(Path(a[0]), Path(a[1]), int(a[2]), int(a[3]) or None)
        print(json.dumps(result))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]}, "vocab": args.vocab, "sizes": {}}
    for size in args.sizes:
        label = f"{size / 1e6:,.0f} MB"
        print(f"== {label}: building the corpus under {args.work}", flush=True)
        corpus = build_corpus(size, args.work)
        stats = corpus_stats(corpus)
        entry: dict = {"corpus": {"path": str(corpus), **stats}}
        cache = Path(tempfile.mkdtemp(dir=args.work, prefix="cache-"))
        print(f"   {stats['files']:,} files, {stats['bytes'] / 1e6:,.1f} MB; gptexp preparation ...", flush=True)
        entry["gptexp"] = run_job("prepare", str(corpus), str(cache), str(args.vocab), str(args.workers or 0))
        print(f"   {json.dumps(entry['gptexp'])}", flush=True)
        if not args.skip_hf:
            print("   Hugging Face tokenizers ...", flush=True)
            entry["hf"] = run_job("hf", str(corpus), str(args.vocab))
            print(f"   {json.dumps(entry['hf'])}", flush=True)
            if "error" not in entry["hf"] and "error" not in entry["gptexp"]:
                entry["ratio_total_gptexp_over_hf"] = entry["gptexp"]["total_s"] / entry["hf"]["total_s"]
        if not args.skip_run:
            print("   gptexp run (empty cache) ...", flush=True)
            entry["run"] = run_job("run", str(corpus), str(args.work), str(args.vocab), str(args.workers or 0))
            print(f"   {json.dumps(entry['run'])}", flush=True)
        results["sizes"][label] = entry
    results["machine"]["load_1min_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
