"""The project's structural rules, checked on its source: code deps from import closures, flows that never
import each other, a pure lib/, and architecture knowledge only in the adapter."""
from __future__ import annotations

import ast
import re
import statistics
from pathlib import Path

import yaml

from lib.core.adapter import ARCHITECTURES, UNSUPPORTED
from lib.core.io import closure, closure_digest

ROOT = Path(__file__).resolve().parents[1]
# module classes and architecture names: a branch on them belongs in lib/core/adapter.py, as data
ARCHITECTURE = re.compile(r"Conv1D|Linear|Embedding|LayerNorm|PreTrained|For(Masked|Causal)LM|Bert|GPT|Llama|Roberta|"
                          r"Electra|Deberta|Albert|Distil|Neo|Qwen|Mistral|Phi", re.I)
ARCHITECTURES = {*ARCHITECTURES, *UNSUPPORTED}
ADAPTER_FILES = {"lib/core/adapter.py", "lib/core/models.py"}  # the adapter's table and the loader that reads it


def sources(*folders: str) -> dict[str, ast.AST]:
    """Relative path -> parsed tree of every .py file under the folders."""
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text(encoding="utf-8"))
            for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))}


def imports(tree: ast.AST) -> list[str]:
    """Every module an import statement of the tree names (`from a import b`: a.b and a)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


def write_package(root: Path, files: dict[str, str]) -> None:
    """Write a tiny project (paths relative to `root`)."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_closure_follows_every_executed_import_and_nothing_else(tmp_path: Path) -> None:
    """Module-level, function-level and `from package import module` imports count; TYPE_CHECKING ones do not."""
    write_package(tmp_path, {
        "lib/__init__.py": "", "lib/core/b.py": "X = 1\n", "lib/core/c.py": "Y = 2\n", "lib/core/d.py": "Z = 3\n",
        "lib/core/unrelated.py": "W = 4\n", "lib/core/e.py": "",
        "lib/core/a.py": ("from typing import TYPE_CHECKING\nfrom lib.core import b\nimport json\n"
                          "if TYPE_CHECKING:\n    from lib.core.d import Z\n"
                          "def f():\n    from lib.core.c import Y\n    return Y\n"
                          "def g():\n    import lib.core.e\n"),
    })
    files = [str(p) for p in closure(["lib.core.a"], tmp_path)]
    assert files == ["lib/__init__.py", "lib/core/a.py", "lib/core/b.py", "lib/core/c.py", "lib/core/e.py"]
    digest = closure_digest(["lib.core.a"], tmp_path)
    (tmp_path / "lib/core/unrelated.py").write_text("W = 5\n")
    (tmp_path / "lib/core/d.py").write_text("Z = 6\n")
    assert closure_digest(["lib.core.a"], tmp_path) == digest  # files outside the closure do not count
    (tmp_path / "lib/core/c.py").write_text("Y = 7\n")
    assert closure_digest(["lib.core.a"], tmp_path) != digest  # a lazily imported file does


def test_dvc_code_deps_are_the_generated_closures() -> None:
    """dvc.yaml's code deps are what `make deps` generates, and every executed file is declared."""
    from tools import deps

    text = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    assert deps.generate(text, params) == text, "dvc.yaml code deps are stale: run `make deps`"
    rows = list(deps.report(yaml.safe_load(text), params))
    missing = [(name, files) for name, _, files in rows if files]
    assert not missing, missing
    sizes = {name: size for name, size, _ in rows}
    # precise deps: a stage executes a fraction of the project, not all of it
    project = sum(1 for folder in ("lib", "tasks", "flows") for _ in (ROOT / folder).rglob("*.py"))
    assert statistics.median(sizes.values()) < project / 3, sizes
    edits = {e.name: e for e in deps.expansions("edit", yaml.safe_load(text)["stages"]["edit"], params)}
    assert sizes["data"] < sizes["edit@snku"] and "lib/methods/snku.py" not in deps.stage_files(edits["edit@random"])


def test_flows_never_import_another_flow() -> None:
    """A stage's flow imports tasks and lib only: no other stage, no helper module of flows/ (check, preset)."""
    stages = {m for m in re.findall(r"python -m (flows\.\w+)", (ROOT / "dvc.yaml").read_text(encoding="utf-8"))}
    helpers = {f"flows.{p.stem}" for p in (ROOT / "flows").glob("*.py") if p.stem != "__init__"} - stages
    assert len(stages) > 20 and {"flows.check", "flows.serve"} <= helpers
    bad = {}
    for path, tree in sources("flows").items():
        module = "flows." + Path(path).stem
        forbidden = stages | helpers if module in stages else stages  # serve and preset may run the checker
        bad[path] = sorted((set(imports(tree)) & forbidden) - {module})
    assert not {path: names for path, names in bad.items() if names}


def test_lib_is_pure() -> None:
    """lib/ imports no orchestration or tracking library and never reads argv."""
    banned = ("prefect", "mlflow", "dvc", "ray", "tasks", "flows")
    for path, tree in sources("lib").items():
        names = imports(tree)
        assert not [n for n in names if n.split(".")[0] in banned], (path, names)
        argv = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "argv"]
        assert not argv, f"{path} reads sys.argv"


def test_params_schemas_live_with_their_code() -> None:
    """The params loader knows no section: every schema is a dataclass next to the code that reads it."""
    tree = ast.parse((ROOT / "lib/core/params.py").read_text(encoding="utf-8"))
    assert not [n for n in imports(tree) if n.split(".")[0] in ("lib", "tasks", "flows")]


def test_no_architecture_branch_outside_the_adapter() -> None:
    """No isinstance on module classes and no branch on class or model_type names outside the adapter."""
    found = []
    for path, tree in sources("lib", "tasks", "flows").items():
        if path in ADAPTER_FILES:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
                if ARCHITECTURE.search(ast.unparse(node.args[1])):
                    found.append(f"{path}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.Compare) and (text := ast.unparse(node)) != "__name__ == '__main__'":
                if re.search(r"__name__|__class__|model_type", text) or any(
                        isinstance(c, ast.Constant) and c.value in ARCHITECTURES for c in ast.walk(node)):
                    found.append(f"{path}:{node.lineno} {text}")
    assert not found, found


def test_readme_tables_are_copied_from_the_reports(tmp_path: Path) -> None:
    """README's generated blocks equal their report sections; a block is refilled from its source."""
    from tools import readme

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count("<!-- generated from ") >= 6
    assert readme.stale(text) == [], "README tables differ from reports/: run `make readme`"
    (tmp_path / "r.md").write_text("## A\nold\n## Table 1 (x)\n\n| a |\n|---|\n| 2 |\n![fig](f.png)\n\nnote\n## C\n")
    doc = "intro\n<!-- generated from r.md § Table 1 -->\n| a |\n| 1 |\n<!-- end generated -->\nend\n"
    assert readme.stale(doc, tmp_path) == ["r.md § Table 1"]
    assert readme.render(doc, tmp_path) == ("intro\n<!-- generated from r.md § Table 1 -->\n| a |\n|---|\n| 2 |\n\n"
                                            "note\n<!-- end generated -->\nend\n")


def test_metrics_diff_reports_changes_beyond_tolerance_only() -> None:
    """Last-bit float noise and wall clocks are not differences; a moved number or a new key is."""
    from tools.metrics_diff import differences

    old = {"a": {"ppl": 2.28, "time_s": 3.0, "neurons": [1, 2]}, "b": 1.0, "gone": 1}
    new = {"a": {"ppl": 2.28 * (1 + 1e-9), "time_s": 9.0, "neurons": [1, 3]}, "b": 1.5, "added": 2}
    found = list(differences(old, new, "m.json", 1e-6, ("time_s",)))
    assert found == ["m.json.a.neurons[1]: 2 -> 3", "m.json.added: only now", "m.json.b: 1.0 -> 1.5",
                     "m.json.gone: only before"]


def test_compare_runs_finds_a_changed_bit_and_ignores_wall_clocks(tmp_path: Path) -> None:
    """Two checkouts' outputs: one flipped tensor element and one moved number are reported, durations are not."""
    import json
    import os

    import torch
    from safetensors.torch import save_file

    from tools.compare_runs import compare

    for side, bump in (("old", 0.0), ("new", 1e-7)):
        (tmp_path / side / "data" / "m").mkdir(parents=True)
        (tmp_path / side / "metrics").mkdir()
        save_file({"w": torch.ones(3, 5)}, tmp_path / side / "data" / "same.safetensors")
        save_file({"w": torch.ones(3, 5) + torch.tensor([0.0, bump, 0.0]).view(3, 1)},
                  tmp_path / side / "data" / "m" / "model.safetensors")
        (tmp_path / side / "metrics" / "a.json").write_text(json.dumps({"loss": 1.0 + bump, "seconds": 9 + bump * 1e9}))
        (tmp_path / side / "metrics" / "b.json").write_text(json.dumps({"n": 3, "time_s": 1 + bump * 1e9}))
    rows = dict(compare(tmp_path / "old", tmp_path / "new"))
    assert rows["data/same.safetensors"] is None and rows["metrics/b.json"] is None
    assert "1 tensors differ" in rows["data/m/model.safetensors"] and ".loss" in rows["metrics/a.json"]
    old_file = tmp_path / "old" / "metrics" / "a.json"
    os.utime(old_file, (1.0, 1.0))  # written before the cut-off: not part of this run's outputs
    assert "metrics/a.json" not in dict(compare(tmp_path / "old", tmp_path / "new", only_newer_than=10.0))
