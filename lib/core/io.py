"""Files: atomic writing, small readers, and digests of files, JSON, tensors and code.

Every output is written to a temporary file in the destination folder and renamed into
place, so a killed process never leaves a half-written file behind.

Every reader checks what it reads (a file, not a folder; UTF-8; valid JSON) and fails with an
InputError: one line naming the file and line and what is allowed, never the file's content,
so neither the terminal nor Prefect's logs ever show a row's text or raw bytes.

The digest of code is the digest of an import closure: every project file a module can
execute, read statically from the source (nothing is imported): the module itself, every
project module it imports (at module level or inside a function: either may run),
transitively, and the package `__init__.py` files Python executes on the way. DVC stage
dependencies (tools/deps.py) and Prefect cache keys (tasks.code_digest) come from it, so a
code change reruns exactly what it can affect.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

PRODUCED = "run the stage that produces it first"  # the hint for a missing pipeline output


class InputError(ValueError):
    """Bad input: one line naming the file, the line or row where there is one, and what is allowed.

    Never the row's text, a secret or raw bytes: Prefect logs the message of a failed task or flow.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).splitlines()))


class MissingInput(InputError, FileNotFoundError):
    """An input file or folder that does not exist (also a FileNotFoundError, which callers catch)."""


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix + ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically with stable key order."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def input_file(path: str | Path, missing: str = PRODUCED) -> Path:
    """`path` when it is an existing file; else an InputError naming it (`missing`: what to do about it)."""
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"missing file {path}: {missing}")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise InputError(f"{path} is {kind}; allowed: a file")
    return path


def read_bytes(path: str | Path, missing: str = PRODUCED) -> bytes:
    """A file's bytes; InputError when it is missing, a folder or unreadable."""
    path = input_file(path, missing)
    try:
        return path.read_bytes()
    except PermissionError:
        raise InputError(f"{path} is not readable (permission denied)") from None


def read_utf8(path: str | Path, missing: str = PRODUCED) -> str:
    """A file's text; InputError naming the line and byte offset of the first byte that is not UTF-8."""
    data = read_bytes(path, missing)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        offset = err.start
    # raised outside the except block: the decode error, whose repr holds the file's bytes, is not its context
    line = data.count(b"\n", 0, offset) + 1
    raise InputError(f"{path} line {line} is not UTF-8 (byte offset {offset}); allowed: UTF-8 text")


def parse_json(text: str, path: str | Path) -> Any:
    """One JSON document; InputError naming the file, line and column of a syntax error (never the text)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path} line {err.lineno} column {err.colno}: not valid JSON ({err.msg}); "
                         "allowed: one JSON document") from None


def parse_jsonl(text: str, path: str | Path) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank line; InputError naming the line of a malformed one."""
    rows = []
    # "\n" only, as read_utf8 counts lines: str.splitlines would also split at U+2028, which JSON strings may hold
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise InputError(f"{path} line {number} column {err.colno}: not valid JSON ({err.msg}); "
                             "allowed: one JSON value per line") from None
    return rows


def read_json(path: str | Path, missing: str = PRODUCED) -> Any:
    """Read a JSON file, naming the file in the error when it is missing or malformed."""
    return parse_json(read_utf8(path, missing), path)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically."""
    write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def read_jsonl_lines(path: str | Path, missing: str = PRODUCED) -> list[tuple[int, Any]]:
    """(line number, value) of each row of a JSONL file: the number that errors about the row name."""
    return parse_jsonl(read_utf8(path, missing), path)


def read_jsonl(path: str | Path, missing: str = PRODUCED) -> list[Any]:
    """Read a JSONL file; the error names the file and line of a malformed row."""
    return [row for _, row in read_jsonl_lines(path, missing)]


def json_kind(value: Any) -> str:
    """What a JSON value is, for messages that must not show it: 'missing', 'a number', 'an empty string' ..."""
    if value is None:
        return "missing or null"
    if isinstance(value, str):
        return "a string" if value.strip() else "an empty string"
    kinds = ((bool, "a boolean"), ((int, float), "a number"), (list, "a list"), (dict, "an object"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _is(value: Any, kind: type) -> bool:
    """isinstance, with booleans not counted as integers."""
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def read_records(path: str | Path, fields: dict[str, tuple[type, ...]], missing: str = PRODUCED,
                 choices: dict[str, tuple[str, ...]] | None = None) -> list[dict]:
    """JSONL rows that are objects holding `fields` of the given JSON types (and `choices` for enumerated
    fields); InputError naming file, line and field, never a value (a row may be private)."""
    rows = []
    for line, row in read_jsonl_lines(path, missing):
        if not isinstance(row, dict):
            raise InputError(f"{path} line {line}: {json_kind(row)}; allowed: an object with fields {sorted(fields)}")
        for name, kinds in fields.items():
            if not any(_is(row.get(name), kind) for kind in kinds):
                allowed = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise InputError(f"{path} line {line}: field {name!r} is {json_kind(row.get(name))}; "
                                 f"allowed: {allowed}")
        for name, allowed_values in (choices or {}).items():
            if row[name] not in allowed_values:
                raise InputError(f"{path} line {line}: field {name!r} is not an allowed value; "
                                 f"allowed: one of {list(allowed_values)}")
        rows.append({name: row.get(name) for name in fields})
    return rows


def unique_ids(ids: Iterable[tuple[int, str]], path: str | Path) -> None:
    """InputError naming both lines when an id occurs twice ((line, id) pairs): the wrong rows would be used."""
    first: dict[str, int] = {}
    for line, key in ids:
        if key in first:
            raise InputError(f"{path} line {line}: id {key!r} repeats the id of line {first[key]}; "
                             "allowed: unique ids")
        first[key] = line


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors atomically (never pickle)."""
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(contiguous, str(tmp), metadata=meta)


def check_safetensors(path: str | Path) -> Path:
    """`path` when it is a complete safetensors file; else an InputError naming it (truncated or corrupt)."""
    path = input_file(path)
    try:
        with safe_open(str(path), framework="pt"):
            pass  # opening parses the header and checks that the data it describes covers the file exactly
    except SafetensorError:
        raise InputError(f"{path} is not a complete safetensors file (truncated or corrupt); "
                         "allowed: a file written by safetensors") from None
    return path


def saved_seconds(path: str | Path) -> float:
    """The compute time a statistic's safetensors file records in its metadata ("seconds"; 0 when absent)."""
    with safe_open(str(check_safetensors(path)), framework="pt") as handle:
        return float((handle.metadata() or {}).get("seconds", 0.0))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, naming it when missing, truncated or corrupt."""
    return load_file(str(check_safetensors(path)))


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (names and bytes, sorted)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def json_digest(obj: Any) -> str:
    """SHA-256 of an object's canonical JSON form (for param subsets in cache keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors' names, dtypes, shapes and bytes (an in-memory model's content key)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


# ---------------------------------------------------------------- import closures (the code a result depends on)

ROOT = Path(__file__).resolve().parents[2]  # the repository: lib/core/io.py -> lib/core -> lib -> root
PACKAGES = ("lib", "tasks", "flows")  # top-level packages whose files count as project code


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The project file of module `name` (a package's __init__.py), or None outside the project."""
    parts = name.split(".")
    if not parts or parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _package_of(name: str, path: Path) -> list[str]:
    """The package a module's relative imports start from, as name parts."""
    parts = name.split(".")
    return parts if path.name == "__init__.py" else parts[:-1]


def _type_checking(node: ast.AST) -> bool:
    """An `if TYPE_CHECKING:` block: imports only a type checker reads, never executed."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def _executed(tree: ast.AST) -> list[ast.AST]:
    """Every node of the tree outside `if TYPE_CHECKING:` blocks."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        todo += [child for child in ast.iter_child_nodes(node) if not _type_checking(child)]
    return out


@lru_cache(maxsize=None)
def imported_names(path: Path, name: str) -> tuple[str, ...]:
    """Every module name an import statement of the file may load (`from a import b`: a and a.b)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    for node in _executed(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package_of(name, path)[: len(_package_of(name, path)) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(module)
            found += [f"{module}.{alias.name}" for alias in node.names]
    return tuple(found)


def _parents(name: str) -> list[str]:
    """The packages Python imports before `name`: a, a.b for a.b.c."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(modules: Iterable[str], root: Path = ROOT) -> list[Path]:
    """Sorted project files (relative to `root`) executed when `modules` are imported."""
    todo, seen, files = list(modules), set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name, root)
        if path is None:
            continue
        files.add(path)
        todo += _parents(name) + list(imported_names(path, name))
    return sorted(p.relative_to(root) for p in files)


def closure_digest(modules: Iterable[str], root: Path = ROOT) -> str:
    """SHA-256 over the names and bytes of the closure's files: the code version of a cached result."""
    sha = hashlib.sha256()
    for rel in closure(modules, root):
        sha.update(str(rel).encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return sha.hexdigest()
