"""`make readme`: README's result tables, copied from the reports the pipeline wrote, never typed.

The report stages write reports/results.md, reports/causal/results.md and reports/bench/results.md from
metrics/. README.md holds blocks

    <!-- generated from reports/results.md § Memorized secrets -->
    ...
    <!-- end generated -->

whose body is that report's section (the text under the heading that starts with the title, up to the next
heading, figures left out).

    python -m tools.readme            rewrite README.md's generated blocks
    python -m tools.readme --check    exit 1 naming every stale block (the tests run it)
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- generated from (\S+) § (.+?) -->\n)(.*?)(<!-- end generated -->)", re.S)
HEADING = re.compile(r"^(#+) (.*)$")


def section(text: str, title: str, where: str) -> str:
    """The text under the first heading that starts with `title`, up to the next heading, without figures."""
    body = None
    for line in text.splitlines():
        found = HEADING.match(line)
        if body is None:
            if found and found.group(2).startswith(title):
                body = []
            continue
        if found:
            break
        if not line.startswith("!["):
            body.append(line)
    if body is None:
        raise ValueError(f"{where} has no section titled {title!r}")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(body).strip("\n")) + "\n"


def render(readme: str, root: Path = ROOT) -> str:
    """README with every generated block's body read again from its report."""
    def fill(match: re.Match) -> str:
        path, title = match.group(2), match.group(3)
        source = root / path
        if not source.is_file():
            raise ValueError(f"README block names {path}, which does not exist")
        return f"{match.group(1)}{section(source.read_text(encoding='utf-8'), title, path)}{match.group(5)}"

    return BLOCK.sub(fill, readme)


def stale(readme: str, root: Path = ROOT) -> list[str]:
    """'<report> § <title>' of every block whose body differs from its report."""
    fresh = {(m.group(2), m.group(3)): m.group(4) for m in BLOCK.finditer(render(readme, root))}
    return [f"{path} § {title}" for m in BLOCK.finditer(readme)
            for path, title in [(m.group(2), m.group(3))] if fresh[(path, title)] != m.group(4)]


def main(argv: list[str] | None = None) -> int:
    """Rewrite or check README.md's generated blocks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a generated block is stale")
    args = parser.parse_args(argv)
    path = ROOT / "README.md"
    readme = path.read_text(encoding="utf-8")
    if args.check:
        bad = stale(readme)
        if bad:
            print(f"README.md blocks differ from their reports: {'; '.join(bad)}: run `make readme`", file=sys.stderr)
        return 1 if bad else 0
    path.write_text(render(readme), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
