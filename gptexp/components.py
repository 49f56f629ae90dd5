"""The one registry of model, objective and tokenizer kinds: built-in, installed, or by import path.

Every kind names a class by import path ("package.module:Name"):

    built-in      model gpt -> gptexp.models.gpt:GPT, objective clm -> gptexp.objectives:BuiltinObjective, ...
    entry point   an installed package declares `model.mamba = mylab.models:TinyMamba` in the
                  `gptexp.components` entry-point group; `model: {kind: mamba, args: {...}}` then
                  means `model: {kind: custom, target: "mylab.models:TinyMamba", args: {...}}`
    custom        `model: {kind: custom, target: "mylab.models:TinyMamba", block_size: 256, args: {d_state: 16}}`

A target module is imported from the installed packages, else from the directory gptexp was
started in (the launcher hands that directory to its torchrun workers in GPTEXP_START_DIR).
Built-in classes are built from their spec section (`from_spec`); a custom class from keyword
arguments, as the protocols in gptexp.protocols describe:

    model      Cls(vocab_size=..., block_size=..., causal=..., **args)
    objective  Cls(**args)
    tokenizer  Cls(**args), then .train(text) on the training split when it has that method

`args` must bind to the class's signature, or, when the class declares a Pydantic model as
`Args`, validate against it (the validated values are passed). Problems raise ComponentError (a
ValueError, so a spec reports it as `model: ...` and the CLI exits 2).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from gptexp.contract import ENV_START_DIR as START_DIR_ENV  # the directory `gptexp` was started in

ENTRY_POINT_GROUP = "gptexp.components"
COMPONENTS_FILE = "components.json"  # in a run dir: where each custom component came from

SECTIONS = ("model", "objective", "tokenizer")
BUILTIN_KINDS: dict[str, dict[str, str]] = {
    "model": {"gpt": "gptexp.models.gpt:GPT", "bigram": "gptexp.models.bigram:Bigram"},
    "objective": {kind: "gptexp.objectives:BuiltinObjective" for kind in ("clm", "mlm", "mntp")},
    "tokenizer": {"char": "gptexp.tokenizers.char:CharTokenizer", "bpe": "gptexp.tokenizers.bpe:BPETokenizer",
                  "hf": "gptexp.tokenizers.hf_file:HFFileTokenizer"},
}
# The keyword arguments gptexp itself passes to a custom model; `args` must not repeat them.
MODEL_CONTEXT_ARGS = ("vocab_size", "block_size", "causal")

_TARGET_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class ComponentError(ValueError):
    """A component that cannot be used: bad target, failing import, protocol or args mismatch."""


# ---------------------------------------------------------------------------------------------
# importing


def start_dir() -> Path:
    """Where user modules are looked for after the installed packages."""
    return Path(os.environ.get(START_DIR_ENV) or os.getcwd()).resolve()


def import_target(target: str) -> Any:
    """The object "package.module:Name" names; installed packages first, then the start directory."""
    if not isinstance(target, str) or not _TARGET_RE.match(target):
        raise ComponentError(f"target {target!r}: expected \"package.module:Name\"")
    module_name, _, attribute = target.partition(":")
    where = str(start_dir())
    if where not in sys.path:
        sys.path.append(where)  # after the installed packages: a local file never shadows one
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise ComponentError(f"target {target!r}: no module {error.name!r} among the installed packages or in {where}") from None
        raise ComponentError(f"target {target!r}: importing {module_name} failed: {error}") from None
    except Exception as error:  # the user's module raised while importing: report it, one line
        raise ComponentError(f"target {target!r}: importing {module_name} failed: {type(error).__name__}: {error}") from None
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ComponentError(f"target {target!r}: module {module_name} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    return obj


def entry_point_kinds(section: str) -> dict[str, str]:
    """Kinds installed packages register for `section`: {"mamba": "mylab.models:TinyMamba"}."""
    kinds = {}
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry_section, _, kind = entry.name.partition(".")
        if entry_section == section and kind:
            kinds[kind] = entry.value
    return kinds


def expand_entry_point(section: str, raw: dict[str, Any]) -> dict[str, Any]:
    """`{kind: mamba, ...}` -> `{kind: custom, target: <its entry point>, ...}`; other kinds unchanged."""
    if section not in SECTIONS:
        return raw
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind == "custom" or kind in BUILTIN_KINDS[section]:
        return raw
    target = entry_point_kinds(section).get(kind)
    if target is None:
        return raw  # the spec reports the unknown kind
    return {**{k: v for k, v in raw.items() if k != "kind"}, "kind": "custom", "target": target}


# ---------------------------------------------------------------------------------------------
# checking


def _declared_args_model(cls: Any) -> Any:
    from pydantic import BaseModel

    declared = getattr(cls, "Args", None)
    return declared if isinstance(declared, type) and issubclass(declared, BaseModel) else None


def bind_args(section: str, target: str, cls: Any, args: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `args` become for cls (validated by its `Args` model when it has one)."""
    if section == "model":
        repeated = sorted(set(args) & set(MODEL_CONTEXT_ARGS))
        if repeated:
            raise ComponentError(f"args: {', '.join(repeated)} is set by gptexp (use model.block_size; vocab_size comes from the tokenizer)")
    declared = _declared_args_model(cls)
    if declared is not None:
        from pydantic import ValidationError

        try:
            return dict(declared.model_validate(args))
        except ValidationError as error:
            problem = error.errors()[0]
            path = ".".join(str(p) for p in problem["loc"])
            raise ComponentError(f"args{'.' + path if path else ''}: {problem['msg']} ({target}.Args)") from None
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return dict(args)  # no signature to check against (a builtin or C type): the call will tell
    context = {name: None for name in MODEL_CONTEXT_ARGS} if section == "model" else {}
    try:
        signature.bind(**context, **args)
    except TypeError as error:
        raise ComponentError(f"args {dict(args)} do not fit {target}{signature}: {error}") from None
    return dict(args)


def _require_methods(section: str, target: str, cls: Any, names: tuple[str, ...]) -> None:
    missing = [name for name in names if not callable(getattr(cls, name, None))]
    if missing:
        raise ComponentError(f"target {target!r} is not a {section}: it has no {', '.join(missing)} method "
                             f"(see the {section} protocol in gptexp.protocols)")


REQUIRED_METHODS = {
    "model": ("forward", "parameters", "state_dict", "load_state_dict"),  # an nn.Module with our forward
    "objective": ("make_batch",),
    "tokenizer": ("encode", "decode", "encode_for_training", "to_dict", "from_dict"),
}


def check_custom(section: str, target: str, args: dict[str, Any]) -> Any:
    """Import target, check it against the section's protocol and args; returns the class."""
    cls = import_target(target)
    if not callable(cls):
        raise ComponentError(f"target {target!r} is not a class or callable")
    _require_methods(section, target, cls, REQUIRED_METHODS[section])
    kwargs = bind_args(section, target, cls, args)
    if section == "objective":  # cheap to build: its `causal` is checked now, not in the workers
        objective = cls(**kwargs)
        if not isinstance(getattr(objective, "causal", None), bool):
            raise ComponentError(f"objective {target}: needs a boolean `causal` attribute (attention the model must use)")
    return cls


# ---------------------------------------------------------------------------------------------
# building


def _checked(section: str, target: str, instance: Any) -> Any:
    """instance, if it satisfies the section's protocol (gptexp.protocols); ComponentError otherwise."""
    from gptexp import protocols

    protocol = {"model": protocols.LanguageModel, "objective": protocols.Objective,
                "tokenizer": protocols.TokenizerLike}[section]
    if not isinstance(instance, protocol):
        raise ComponentError(f"{target}: the {section} it built does not satisfy gptexp.protocols.{protocol.__name__}")
    return instance


def component_class(section: str, spec: Any) -> Any:
    """The class a spec section names (built-in kinds through the same import as custom ones)."""
    if spec.kind == "custom":
        return import_target(spec.target)
    return import_target(BUILTIN_KINDS[section][spec.kind])


def build_model(spec: Any, vocab_size: int, causal: bool) -> Any:
    """The model a model spec describes; causal=False asks for bidirectional attention (mlm, mntp)."""
    cls = component_class("model", spec)
    if spec.kind != "custom":
        return cls.from_spec(spec, vocab_size=vocab_size, causal=causal)
    kwargs = bind_args("model", spec.target, cls, spec.args)
    return _checked("model", spec.target, cls(vocab_size=vocab_size, block_size=spec.block_size, causal=causal, **kwargs))


def build_objective(spec: Any) -> Any:
    """The objective object: `.causal` (bool) and `.make_batch(window, info, generator) -> Batch`."""
    cls = component_class("objective", spec)
    if spec.kind != "custom":
        return cls.from_spec(spec)
    objective = cls(**bind_args("objective", spec.target, cls, spec.args))
    if not isinstance(getattr(objective, "causal", None), bool):
        raise ComponentError(f"objective {spec.target}: needs a boolean `causal` attribute (attention the model must use)")
    _checked("objective", spec.target, objective)
    return objective


def build_tokenizer(spec: Any, train_text: str) -> Any:
    """The tokenizer a tokenizer spec describes, trained on train_text when its kind trains."""
    cls = component_class("tokenizer", spec)
    if spec.kind != "custom":
        return cls.from_spec(spec, train_text)
    tokenizer = _checked("tokenizer", spec.target, cls(**bind_args("tokenizer", spec.target, cls, spec.args)))
    if callable(getattr(tokenizer, "train", None)):
        tokenizer.train(train_text)
    return tokenizer


# ---------------------------------------------------------------------------------------------
# provenance


def custom_targets(spec: Any) -> dict[str, str]:
    """{"model": "mylab.models:TinyMamba", ...} for each section of an ExperimentSpec that is custom."""
    return {section: getattr(spec, section).target for section in SECTIONS if getattr(spec, section).kind == "custom"}


def module_origin(target: str) -> dict[str, Any]:
    """Where target's module came from: its file and sha256, and the installed version if any."""
    import_target(target)
    module_name = target.partition(":")[0]
    module = sys.modules[module_name]
    record: dict[str, Any] = {"target": target, "module": module_name, "file": None, "sha256": None, "version": None,
                              "start_dir": str(start_dir())}
    file = getattr(module, "__file__", None)
    if file:
        record["file"] = str(Path(file).resolve())
        record["sha256"] = hashlib.sha256(Path(file).read_bytes()).hexdigest()
    top = module_name.split(".")[0]
    for distribution in metadata.packages_distributions().get(top, []):
        try:
            record["version"] = f"{distribution} {metadata.version(distribution)}"
            break
        except metadata.PackageNotFoundError:
            continue
    return record


def components_record(spec: Any) -> dict[str, Any]:
    """What a run records about its custom components (COMPONENTS_FILE); empty when it has none."""
    return {section: module_origin(target) for section, target in custom_targets(spec).items()}


def changed_components(recorded: dict[str, Any], spec: Any) -> list[str]:
    """Sections whose module file differs from the one the run recorded (for a resume warning)."""
    now = components_record(spec)
    return [section for section, origin in recorded.items()
            if section in now and origin.get("sha256") != now[section].get("sha256")]


def check_runnable(spec: Any) -> None:
    """What a spec cannot check without reading files: an hf tokenizer file loads, and a masked
    objective finds a mask token in it. Raises ComponentError naming the field."""
    if spec.tokenizer.kind != "hf":
        return
    from gptexp.tokenizers import TokenizerFileError
    from gptexp.tokenizers.hf_file import HFFileTokenizer
    from gptexp.tokenizers.roles import ROLE_TEXTS, role_ids

    try:
        tokenizer = HFFileTokenizer.from_file(spec.tokenizer.path)
    except TokenizerFileError as error:
        raise ComponentError(f"tokenizer.path: {error}") from None
    if spec.objective.kind in ("mlm", "mntp") and "mask" not in role_ids(tokenizer.special_tokens):
        raise ComponentError(f"objective {spec.objective.kind} needs a mask token; {spec.tokenizer.path} has none of "
                             f"{', '.join(ROLE_TEXTS['mask'])} among its special tokens")


def record_components(spec: Any, run_dir: Path, resume: bool, warn: Any = lambda message: None) -> None:
    """Write where each custom component came from into the run dir (COMPONENTS_FILE); on resume,
    warn about a module whose file changed since the run started."""
    import json

    path = run_dir / COMPONENTS_FILE
    if resume and path.exists():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        for section in changed_components(recorded, spec):
            warn(f"{section} {recorded[section]['target']}: its module changed since the run started "
                 f"(sha256 {str(recorded[section].get('sha256'))[:12]}...); resuming with the new code")
        return
    record = components_record(spec)
    if record:
        path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def recorded_start_dir(run_dir: Path) -> str | None:
    """The start directory a run's custom components were imported from, if it recorded one."""
    import json

    path = run_dir / COMPONENTS_FILE
    if not path.exists():
        return None
    recorded = json.loads(path.read_text(encoding="utf-8"))
    return next((origin.get("start_dir") for origin in recorded.values() if origin.get("start_dir")), None)
