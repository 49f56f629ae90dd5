"""The one way gptexp reads YAML: `yaml.safe_load` semantics, with limits a hostile file cannot pass.

`yaml.safe_load` builds no arbitrary objects, but it still accepts documents that hurt whoever
walks the result: an alias bomb (`a: &a [x, x]`, `b: &b [*a, *a]`, ... nine levels) is a few
hundred bytes that expands to a billion nodes the moment a validator, `deepcopy` or a dump visits
every path; a recursive alias (`&a [*a]`) never ends; a duplicate key silently keeps the last
value; deep nesting overflows Python's stack; and a malformed scalar (`!!float abc`, a 5000-digit
integer, `2001-02-30`) escapes as a ValueError rather than a YAMLError. Here every one of those is
a `YamlInputError` with a one-line message, and a document is refused when it is larger than
MAX_YAML_BYTES, nested deeper than MAX_YAML_DEPTH, or would hold more than MAX_YAML_NODES nodes
once every alias is expanded.

`load_yaml("a: 1\\nb: [2, 3]\\n", "x.yaml") -> {"a": 1, "b": [2, 3]}`
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gptexp.regular_file import FileRefused, read_regular, refusal_message

MAX_YAML_BYTES = 1024 * 1024  # a spec or sweep file is a few KB; 1 MiB leaves room for long lists
MAX_YAML_NODES = 100_000  # scalars + collections after alias expansion
MAX_YAML_DEPTH = 64  # a spec nests 4 levels; Python's stack would give out near 1000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(yaml.YAMLError, ValueError):
    """A YAML text gptexp refuses; the message (one line) names the source and the problem.

    A YAMLError, so callers that already catch `yaml.YAMLError` keep working.
    """


class _LimitedSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing and duplicate keys while constructing."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise YamlInputError(f"nested deeper than {MAX_YAML_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            _refuse_duplicate_keys(self, node)
        return super().construct_mapping(node, deep=deep)


def _refuse_duplicate_keys(loader: _LimitedSafeLoader, node: MappingNode) -> None:
    """A key written twice in one mapping is an error naming the key and both lines.

    Keys brought in by a merge (`<<: *base`) may be overridden: that is what merging is for.
    """
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
            continue  # a collection key is unhashable: SafeConstructor refuses it itself
        key = loader.construct_object(key_node, deep=False)
        line = key_node.start_mark.line + 1
        if key in first_line:
            raise YamlInputError(f"duplicate key {short_repr(key)} on line {line} (first on line {first_line[key]})")
        first_line[key] = line


def _expanded_size(root: Node) -> int:
    """Nodes in `root` with every alias expanded; raises on a recursive alias or past MAX_YAML_NODES.

    The composer gives an alias the very node object its anchor names, so sizes are memoized per
    node: the walk is linear in the document even when the expansion is exponential.
    """
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise YamlInputError(f"recursive alias (line {node.start_mark.line + 1}): a node contains itself")
        in_progress.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                raise YamlInputError(f"more than {MAX_YAML_NODES} nodes once aliases are expanded "
                                     f"(an alias bomb?); line {node.start_mark.line + 1}")
        in_progress.discard(key)
        sizes[key] = total
        return total

    return size(root)


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document like `yaml.safe_load`, within the limits above.

    Every refusal is a YamlInputError `"<source>: <problem>"`; an empty document is None.
    """
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_YAML_BYTES:
        raise YamlInputError(f"{source}: larger than {MAX_YAML_BYTES // 1024} KiB, the limit for YAML input")
    loader = None
    try:
        loader = _LimitedSafeLoader(text)  # the reader already refuses control characters here
        root = loader.get_single_node()
        if root is None:
            return None
        _expanded_size(root)
        return loader.construct_document(root)
    except YamlInputError as error:
        raise YamlInputError(f"{source}: {error}") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = error.problem or error.context or "unreadable"
        if error.context and problem.startswith("but "):  # "expected a single document ..., but found another"
            problem = f"{error.context}, {problem}"
        raise YamlInputError(f"{source}: broken YAML{where}: {one_line(problem)}") from None
    except yaml.YAMLError as error:  # ReaderError (a control character) and friends
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise YamlInputError(f"{source}: broken YAML: {one_line(first_line)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as error:
        # Scalars that pass the scanner but not their constructor: `!!float abc`, a 5000-digit
        # integer, `2001-02-30`, `0x_`.
        raise YamlInputError(f"{source}: a value YAML cannot convert: {one_line(str(error))}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml_file(path: str | os.PathLike[str], what: str = "YAML file") -> Any:
    """The parsed YAML document in `path`: a regular UTF-8 file no larger than MAX_YAML_BYTES.

    FIFOs, devices and directories are refused before anything is read (reading /dev/zero or a
    FIFO would never end). Raises YamlInputError "<path>: <problem>".
    """
    path = Path(path)
    try:
        data = read_regular(path, MAX_YAML_BYTES)
    except FileRefused as refused:
        raise YamlInputError(refusal_message(
            refused, directory=f"{{path}}: is a directory, expected a {what}",
            special=f"{{path}}: not a regular file (a FIFO or device?), expected a {what}",
            too_large=f"{{path}}: {{size}} bytes, larger than the {MAX_YAML_BYTES // 1024} KiB limit for a {what}")) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise YamlInputError(f"{path}: not UTF-8 text (byte {error.start})") from None
    return load_yaml(text, str(path))


def short_repr(value: Any, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters: `short_repr("a" * 100, 10) -> "'aaaaaa..."`."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str, limit: int = 120) -> str:
    """`text` with control characters escaped, cut to `limit`: `one_line("a\\nb") -> "a\\\\nb"`."""
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."
