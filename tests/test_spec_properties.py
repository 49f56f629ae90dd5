"""Property: whatever YAML document and `--set` values `gptexp run` is given, it either accepts the
spec or refuses it with one short message (exit 2), never a traceback.

Most examples go in-process through what the command runs before it creates a run directory:
the CLI's own spec loader (`gptexp.cli.run._load_spec_with_flags`), then the launcher's checks
(`check_supported`, `preflight.check`, `check_data_file`). A handful go through the real CLI in
a subprocess, for inputs the in-process path refuses, to see the exit code and the output a user
sees.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gptexp import preflight
from gptexp.cli.run import _load_spec_with_flags
from gptexp.launch import check_supported
from gptexp.limits import has_control_characters
from gptexp.spec import MAX_PROBLEMS_SHOWN, ExperimentSpec, SpecError, check_data_file, validate_spec
from tests.conftest import TINY_SPEC, run_cli


def dotted_leaves(mapping: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            paths += dotted_leaves(value, f"{prefix}{key}.")
        else:
            paths.append(f"{prefix}{key}")
    return paths


# Every field of a default spec and of TINY_SPEC, plus a few that are not fields.
FIELD_PATHS = sorted(set(dotted_leaves(validate_spec({}, "x").model_dump(mode="json")) + dotted_leaves(TINY_SPEC)
                         + ["model.kind", "tokenizer.kind", "objective.kind", "dropout_schedule.kind", "model.n_layers",
                            "nonsense", "train.max_steps.deeper"]))
KINDS = ["gpt", "bigram", "char", "bpe", "clm", "mlm", "mntp", "linear", "constant", "rope", "swiglu", "word",
         "cuda", "cpu", "nccl", "gloo", "bf16", "disabled"]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=0, max_value=4096),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 0.999, 1.0, 1e-3, 1e9, 2**63, 2**64, -1]),
    st.text(max_size=30),
    st.sampled_from(KINDS),
)
yaml_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=10), st.sampled_from(KINDS)), inner, max_size=4)),
    max_leaves=12)


def set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


@st.composite
def mutated_specs(draw: st.DrawFn) -> str:
    """TINY_SPEC with 1-4 fields set to random values, as YAML text (sometimes with a raw line added)."""
    raw = yaml.safe_load(yaml.safe_dump(TINY_SPEC))
    raw["train"]["device"] = "cpu"
    for _ in range(draw(st.integers(1, 4))):
        set_path(raw, draw(st.sampled_from(FIELD_PATHS)), draw(yaml_values))
    text = yaml.safe_dump(raw, allow_unicode=True)
    if draw(st.booleans()):
        text += draw(st.sampled_from(["seed: 5\n", "model: &m {n_layer: 1}\nalias: *m\n", "x: [1\n", "train:\n  max_steps: 2\n",
                                      "name: !!python/object/apply:os.system [true]\n", "a: &a [*a]\n"]))
    return text


documents = st.one_of(
    mutated_specs(),
    st.text(max_size=200),  # anything at all
    yaml_values.map(lambda value: yaml.safe_dump(value, allow_unicode=True)),
)


@st.composite
def set_flags(draw: st.DrawFn) -> list[str]:
    """0-3 `--set KEY=VALUE` flags: known or odd keys, values as YAML text or random text."""
    flags = []
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.one_of(st.sampled_from(FIELD_PATHS), st.text(max_size=12)))
        value = draw(st.one_of(yaml_values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()
                                               .removesuffix("...").strip()),
                               st.text(max_size=40)))
        flags.append(f"{key}={value}" if draw(st.integers(0, 9)) else key)  # now and then no '='
    return flags


def validate_as_run_does(text: str, flags: list[str]) -> ExperimentSpec | SpecError:
    """What `gptexp run SPEC --set ...` does before anything starts: the spec or the SpecError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            spec = _load_spec_with_flags(path, flags, None, None, None, None, None)
            check_supported(spec)
            preflight.check(spec)
            check_data_file(spec)
        except SpecError as error:
            return error
    return spec


def assert_one_message(error: SpecError) -> None:
    lines = str(error).splitlines()
    assert 1 <= len(lines) <= MAX_PROBLEMS_SHOWN + 1, str(error)
    for line in lines:
        assert line.strip() and not has_control_characters(line), repr(line)
        assert len(line) <= 600, line
    assert "Traceback" not in str(error)


PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(text=documents, flags=set_flags())
def test_any_document_and_overrides_validate_or_give_one_message(text: str, flags: list[str]) -> None:
    outcome = validate_as_run_does(text, flags)  # any other exception fails the test: it would be a traceback
    if isinstance(outcome, SpecError):
        assert_one_message(outcome)
    else:
        assert isinstance(outcome, ExperimentSpec)
        values = outcome.model_dump()
        assert all(math.isfinite(v) for v in _floats(values)), values  # nothing infinite got through


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, (list, tuple)):
        return [f for v in value for f in _floats(v)]
    return []


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(text=mutated_specs(), flags=set_flags())
def test_the_real_command_exits_2_with_one_message_and_starts_nothing(text: str, flags: list[str]) -> None:
    assume(all("\x00" not in flag for flag in flags))  # argv cannot carry NUL
    assume(isinstance(validate_as_run_does(text, flags), SpecError))  # never train here
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(text, encoding="utf-8")
        args = ["run", str(spec), "--runs-dir", str(Path(tmp) / "runs")]
        for flag in flags:
            args += ["--set", flag]
        result = run_cli(args, cwd=Path(tmp), timeout=60)
        output = result.stdout + result.stderr
        assert result.returncode == 2, output
        assert "Traceback" not in output
        assert 1 <= len(result.stderr.strip().splitlines()) <= MAX_PROBLEMS_SHOWN + 1, result.stderr
        assert not (Path(tmp) / "runs").exists() or not [p for p in (Path(tmp) / "runs").iterdir() if not p.name.startswith(".")]
