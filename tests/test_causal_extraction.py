"""The extraction example keeps forget-set text out unless allowed."""
from __future__ import annotations

import torch

from lib.families.extraction import match_pattern, private_safe_example
from lib.reports.causal import example_markdown
from tests.tiny_models import tiny_gpt2


class CharTokenizer:
    """One token per lowercase letter or space (ids 3..), pad 0: enough for greedy decoding."""

    pad_token_id = 0
    alphabet = " abcdefghijklmnopqrstuvwxyz"

    def encode(self, text: str) -> list[int]:
        """Characters to ids."""
        return [3 + self.alphabet.index(c) for c in text.lower() if c in self.alphabet]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Ids to characters (ids outside the alphabet become 'z')."""
        return "".join(self.alphabet[i - 3] if 3 <= i < 3 + len(self.alphabet) else "z" for i in ids)


def test_match_pattern_marks_same_position_words() -> None:
    assert match_pattern(["a", "b", "c"], ["a", "x", "c"]) == "=x="
    assert match_pattern(["a", "b"], ["a"]) == "=x"
    assert match_pattern([], ["a"]) == ""


def test_no_text_unless_allowed() -> None:
    torch.manual_seed(0)
    model, tok = tiny_gpt2(), CharTokenizer()
    hidden = private_safe_example(model, tok, "call me at", "secret words here", 8, ["secret"], allow_private=False)
    assert set(hidden) == {"contains_secret", "words_generated", "words_matching", "pattern"}
    assert len(hidden["pattern"]) == hidden["words_generated"] and hidden["words_matching"] <= hidden["words_generated"]
    shown = private_safe_example(model, tok, "call me at", "secret words here", 8, ["secret"], allow_private=True)
    assert shown["prefix"] == "call me at" and shown["true_continuation"] == "secret words here"
    assert shown["pattern"] == hidden["pattern"]


def test_example_markdown_lists_references_then_methods() -> None:
    ex = {"contains_secret": True, "words_generated": 3, "words_matching": 2, "pattern": "==x"}
    result = {"models": {"original": {"example": ex}, "retrain": {"example": {**ex, "contains_secret": False}},
                         "ga": {"example": {**ex, "pattern": ""}}}}
    text = example_markdown({"ga": result})
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Model" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| Original (fine-tuned)", "| Retrain without D_f", "| GA"]
    assert "| yes | 2 / 3 | `==x` |" in rows[0] and "| no |" in rows[1] and "`-`" in rows[2]
