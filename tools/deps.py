"""`make deps`: every DVC stage's code dependencies, generated from the import closure of the code it runs.

For each stage of dvc.yaml (and each foreach / matrix item) the code it runs is its flow module
(`python -m flows.<stage> [args]`) plus the modules the flow imports by name for those arguments (its
`runs(*args)`: the method or suite it dispatches to). The closure of those modules (lib.core.closure)
is everything the stage can execute; it becomes the stage's code deps, beside the data deps written
by hand in dvc.yaml.

DVC cannot give foreach items different dependency lists, so a foreach / matrix stage lists what every
item imports, one `${item}` entry per file named after the item (lib/methods/${item}.py), and the files
that only some items import (a change there reruns every item: too many reruns, never too few).

    python -m tools.deps            rewrite dvc.yaml's code deps (data deps, comments and order kept)
    python -m tools.deps --check    exit 1 naming every stage whose code deps are stale (the tests run it)
    python -m tools.deps --report   each stage's closure size and the files missing from its deps; the median
"""
from __future__ import annotations

import argparse
import importlib
import io
import itertools
import os
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lib.core.io import PACKAGES, closure  # noqa: E402

TEMPLATE = re.compile(r"\$\{([^}]+)\}")


@dataclass(frozen=True)
class Expansion:
    """One concrete stage: its DVC name, its command's module and arguments, the template values behind it."""

    name: str
    module: str
    args: tuple[str, ...]
    values: dict[str, str]  # "item", "key", "item.method", ... -> the value substituted


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    """The params.yaml value at a dotted key."""
    node: Any = params
    for part in dotted.split("."):
        node = node[part]
    return node


def _resolve(text: str, values: dict[str, str]) -> str:
    """A template string with its ${...} values substituted."""
    return TEMPLATE.sub(lambda m: values[m.group(1)], text)


def _items(spec: Any, params: dict[str, Any]) -> list[dict[str, str]]:
    """Template values of each item of a foreach list / dict (`${...}` read from params.yaml)."""
    found = TEMPLATE.fullmatch(spec) if isinstance(spec, str) else None
    items = _lookup(params, found.group(1)) if found else spec
    if isinstance(items, dict):
        return [{"key": str(k), **{f"item.{f}": str(v) for f, v in (item or {}).items()}} for k, item in items.items()]
    return [{"item": str(item)} for item in items]


def _matrix(spec: dict[str, Any], params: dict[str, Any]) -> list[dict[str, str]]:
    """Template values of each combination of a matrix stage."""
    axes = []
    for axis, values in spec.items():
        found = TEMPLATE.fullmatch(values) if isinstance(values, str) else None
        values = _lookup(params, found.group(1)) if found else values
        axes.append([(axis, str(v)) for v in (values.keys() if isinstance(values, dict) else values)])
    return [{f"item.{axis}": value for axis, value in combo} for combo in itertools.product(*axes)]


def expansions(name: str, stage: dict[str, Any], params: dict[str, Any]) -> list[Expansion]:
    """Every concrete stage a dvc.yaml entry stands for."""
    if "foreach" in stage:
        body, combos = stage["do"], _items(stage["foreach"], params)
        label = lambda v: v.get("item") or v["key"]  # noqa: E731
    elif "matrix" in stage:
        body, combos = stage, _matrix(stage["matrix"], params)
        label = lambda v: "-".join(v.values())  # noqa: E731
    else:
        body, combos, label = stage, [{}], lambda v: ""  # noqa: E731
    out = []
    for values in combos:
        words = _resolve(body["cmd"], values).split()
        if words[:2] != ["python", "-m"] or not words[2].startswith("flows."):
            raise ValueError(f"stage {name}: cmd {body['cmd']!r} is not `python -m flows.<stage> [args]`")
        suffix = label(values)
        out.append(Expansion(f"{name}@{suffix}" if suffix else name, words[2], tuple(words[3:]), values))
    return out


def stage_files(exp: Expansion) -> list[str]:
    """The project files one concrete stage can execute: its flow module's closure and what it runs by name."""
    flow = importlib.import_module(exp.module)
    extra = flow.runs(*exp.args) if hasattr(flow, "runs") else []
    return [str(p) for p in closure([exp.module, *extra], ROOT)]


def is_code(entry: str) -> bool:
    """Whether a deps entry is project code (a .py file under one of the packages)."""
    return entry.split("/")[0] in PACKAGES and entry.endswith(".py")


def templated(exps: list[Expansion], files: list[list[str]]) -> tuple[list[str], list[str]]:
    """(entries named after the item, e.g. lib/methods/${item}.py; the other files, as one sorted list)."""
    if len(exps) == 1 and not exps[0].values:
        return [], sorted(files[0])
    keys = list(exps[0].values)
    found: set[str] = set()
    for exp, own in zip(exps, files):
        for path in own:
            for key in keys:
                value = exp.values[key]
                if f"/{value}.py" in path:
                    found.add(path.replace(f"/{value}.py", f"/${{{key}}}.py"))
    # a template is kept when it names a file of every item's closure
    kept = sorted(t for t in found if all(_resolve(t, e.values) in own for e, own in zip(exps, files)))
    covered = [{_resolve(t, e.values) for t in kept} for e in exps]
    rest = sorted({p for own, cov in zip(files, covered) for p in own if p not in cov})
    return kept, rest


def param_sets(params: dict[str, Any]) -> list[dict[str, Any]]:
    """params.yaml and params.yaml with each preset applied: deps must hold whichever a user runs (a preset
    that adds a suite or a run must find its files among the stages' deps, and an item's name that happens to
    equal a file's, like the run `lume` of the suite `lume`, must not pass for a template)."""
    from lib.core.presets import merge

    return [params, *(merge(params, yaml.safe_load(p.read_text(encoding="utf-8")))
                      for p in sorted((ROOT / "presets").glob("*.yaml")))]


def _under(params: dict[str, Any], fn: Any) -> Any:
    """fn() with params.yaml in the working directory being `params` (flows read it there by name)."""
    import tempfile

    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        os.chdir(tmp)
        try:
            return fn()
        finally:
            os.chdir(here)


def code_deps(name: str, stage: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """The generated code deps of one dvc.yaml entry, over params.yaml and every preset."""
    exps: dict[str, tuple[Expansion, list[str]]] = {}
    for variant in param_sets(params):
        found = _under(variant, lambda: [(e, stage_files(e)) for e in expansions(name, stage, variant)])
        for exp, files in found:
            known = exps.get(exp.name)
            exps[exp.name] = (exp, sorted(set(files) | set(known[1] if known else ())))
    kept, rest = templated([e for e, _ in exps.values()], [f for _, f in exps.values()])
    return kept + rest


def _deps_node(stage: dict[str, Any]) -> dict[str, Any]:
    """The mapping that holds the entry's deps (a foreach entry's `do`)."""
    return stage["do"] if "foreach" in stage else stage


def generate(dvc_text: str, params: dict[str, Any]) -> str:
    """dvc.yaml with every stage's code deps regenerated (everything else as it was)."""
    ryaml = YAML()
    ryaml.width = 120
    ryaml.indent(mapping=2, sequence=4, offset=2)
    doc = ryaml.load(dvc_text)
    for name, stage in doc["stages"].items():
        node = _deps_node(stage)
        data = [d for d in node.get("deps") or [] if not is_code(str(d))]
        node["deps"] = data + code_deps(name, stage, params)
    out = io.StringIO()
    ryaml.dump(doc, out)
    return out.getvalue()


def report(dvc: dict[str, Any], params: dict[str, Any]) -> Iterator[tuple[str, int, list[str]]]:
    """Per concrete stage: (name, closure size, closure files missing from its resolved deps)."""
    for name, stage in dvc["stages"].items():
        deps = _deps_node(stage).get("deps") or []
        for exp in expansions(name, stage, params):
            resolved = {_resolve(str(d), exp.values) for d in deps}
            files = stage_files(exp)
            yield exp.name, len(files), [f for f in files if f not in resolved]


def main(argv: list[str] | None = None) -> int:
    """Rewrite, check or report dvc.yaml's code deps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when dvc.yaml's code deps are stale")
    mode.add_argument("--report", action="store_true", help="closure sizes and missing files per stage")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # flows read params.yaml from the working directory
    dvc_path, params = ROOT / "dvc.yaml", yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    text = dvc_path.read_text(encoding="utf-8")
    try:
        yaml.safe_load(text)
    except yaml.YAMLError as err:  # one line naming where, not a parser traceback
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        print(f"dvc.yaml is not valid YAML{where}: {getattr(err, 'problem', err)}", file=sys.stderr)
        return 2
    if args.report:
        rows = list(report(yaml.safe_load(text), params))
        for name, size, missing in rows:
            print(f"{size:3d}  {name}" + (f"  MISSING {missing}" if missing else ""))
        sizes = [size for _, size, _ in rows]
        print(f"{len(rows)} stages; missing (stage, file) pairs: {sum(len(m) for *_, m in rows)}; "
              f"closure median {statistics.median(sizes)}, max {max(sizes)}")
        return 0
    fresh = generate(text, params)
    if args.check:
        if fresh == text:
            return 0
        stale = [name for name, stage in yaml.safe_load(fresh)["stages"].items()
                 if _deps_node(stage).get("deps") != _deps_node(yaml.safe_load(text)["stages"][name]).get("deps")]
        print(f"dvc.yaml code deps are stale for {', '.join(stale) or 'its layout'}: run `make deps`",
              file=sys.stderr)
        return 1
    dvc_path.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
