"""safe_yaml: safe_load semantics, and every hostile document is a one-line YamlInputError, fast."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from gptexp.safe_yaml import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, YamlInputError, load_yaml, read_yaml_file


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level's list holds `width` aliases of the previous one (9^9 leaves)."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_plain_documents_load_like_safe_load() -> None:
    text = "a: 1\nb: [2.5, x, null, true]\nc: {d: '3'}\ne: 2001-02-03\nf: .inf\n"
    assert load_yaml(text, "t.yaml") == yaml.safe_load(text)
    assert load_yaml("", "t.yaml") is None and load_yaml("# only a comment\n", "t.yaml") is None


def test_an_alias_bomb_is_refused_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(YamlInputError, match=rf"bomb.yaml: more than {MAX_YAML_NODES} nodes once aliases are expanded"):
        load_yaml(alias_bomb(), "bomb.yaml")
    assert time.monotonic() - started < 2


def test_small_aliases_and_merge_keys_still_work() -> None:
    text = "base: &b {lr: 0.1, steps: 5}\nrun:\n  <<: *b\n  steps: 7\nboth: [*b, *b]\n"
    loaded = load_yaml(text, "t.yaml")
    assert loaded["run"] == {"lr": 0.1, "steps": 7}  # a merged key may be overridden
    assert loaded["both"] == [{"lr": 0.1, "steps": 5}] * 2


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(YamlInputError, match="recursive alias"):
        load_yaml("a: &a [1, *a]\n", "t.yaml")


@pytest.mark.parametrize("text, line, first", [
    ("a: 1\nb: 2\na: 3\n", 3, 1),
    ("model:\n  n_layer: 2\n  n_head: 2\n  n_layer: 4\n", 4, 2),
    ("x: {k: 1, k: 2}\n", 1, 1),
    ("yes: 1\ntrue: 2\n", 2, 1),  # both keys are the boolean True in YAML 1.1
])
def test_duplicate_keys_are_refused_naming_key_and_lines(text: str, line: int, first: int) -> None:
    with pytest.raises(YamlInputError, match=rf"duplicate key .* on line {line} \(first on line {first}\)"):
        load_yaml(text, "t.yaml")


def test_deep_nesting_is_refused_before_the_stack_overflows() -> None:
    with pytest.raises(YamlInputError, match=f"nested deeper than {MAX_YAML_DEPTH} levels"):
        load_yaml("a: " + "[" * 5000 + "]" * 5000, "t.yaml")
    assert load_yaml("a: " + "[" * 20 + "]" * 20, "t.yaml") is not None


@pytest.mark.parametrize("text, message", [
    ("a: !!float abc\n", "a value YAML cannot convert"),
    ("a: " + "1" * 5000 + "\n", "a value YAML cannot convert"),
    ("a: 2001-02-30\n", "a value YAML cannot convert"),
    ("a: 0x_\n", "a value YAML cannot convert"),
    ("a: !!python/object/apply:os.system [echo]\n", "could not determine a constructor"),
    ("a: \x07\n", "unacceptable character"),
    ("a: [1\n", "broken YAML (line 2, column 1)"),
    ("a: 1\n---\nb: 2\n", "expected a single document"),
])
def test_malformed_values_are_yaml_input_errors(text: str, message: str) -> None:
    with pytest.raises(YamlInputError) as caught:
        load_yaml(text, "t.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("t.yaml: ") and "\n" not in str(caught.value)
    assert isinstance(caught.value, yaml.YAMLError)  # old `except yaml.YAMLError` handlers still catch it


def test_size_cap_on_text_and_files(tmp_path: Path) -> None:
    big = "a: [" + "1, " * (MAX_YAML_BYTES // 3) + "1]\n"
    with pytest.raises(YamlInputError, match="larger than 1024 KiB"):
        load_yaml(big, "t.yaml")
    path = tmp_path / "big.yaml"
    path.write_text(big)
    with pytest.raises(YamlInputError, match=r"big.yaml: \d+ bytes, larger than the 1024 KiB limit"):
        read_yaml_file(path)


def test_fifos_devices_and_directories_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)  # reading it would block for ever
    with pytest.raises(YamlInputError, match="not a regular file"):
        read_yaml_file(fifo)
    with pytest.raises(YamlInputError, match="not a regular file"):
        read_yaml_file("/dev/zero")
    with pytest.raises(YamlInputError, match="is a directory"):
        read_yaml_file(tmp_path)
    with pytest.raises(YamlInputError, match="file not found"):
        read_yaml_file(tmp_path / "missing.yaml")


def test_files_must_be_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(YamlInputError, match=r"not UTF-8 text \(byte 9\)"):
        read_yaml_file(path)


def test_no_module_but_safe_yaml_parses_yaml() -> None:
    """Every YAML read in the package goes through load_yaml, so the limits hold everywhere."""
    import re

    import gptexp

    package = Path(gptexp.__file__).parent
    parse_call = re.compile(r"\byaml\.(safe_load|load|full_load|unsafe_load|compose|parse|load_all|safe_load_all)\b|SafeLoader")
    offenders = [f"{path.relative_to(package)}:{number}"
                 for path in sorted(package.rglob("*.py")) if path.name != "safe_yaml.py"
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if parse_call.search(line)]
    assert offenders == []
