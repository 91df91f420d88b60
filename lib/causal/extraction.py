"""A before/after greedy extraction example that shows forget-set text only when allowed.

The whole forget sample is private (it is the document being unlearned), not only its secret. So
by default the example keeps no text: it reports whether the continuation holds a secret, how many
of its words repeat the true continuation, and a word-by-word pattern ('=' same word as the true
text at that position, 'x' another word). With `allow_private` the prefix and the continuation are
included verbatim.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from lib.causal.metrics import extraction_example


def match_pattern(generated: Sequence[str], truth: Sequence[str]) -> str:
    """'=' where a generated word equals the true word at the same position, 'x' otherwise."""
    return "".join("=" if i < len(truth) and word == truth[i] else "x" for i, word in enumerate(generated))


def private_safe_example(model: nn.Module, tokenizer: Any, prefix_text: str, true_text: str, n_tokens: int,
                         secrets: Sequence[str], allow_private: bool) -> dict[str, Any]:
    """Greedy continuation of `prefix_text` scored against `true_text`; text only when allowed."""
    raw = extraction_example(model, tokenizer, prefix_text, n_tokens, secrets, allow_private=True)
    generated, truth = raw["continuation"].split(), true_text.split()
    pattern = match_pattern(generated, truth)
    out = {"contains_secret": raw["contains_secret"], "words_generated": len(generated),
           "words_matching": pattern.count("="), "pattern": pattern}
    if allow_private:
        out.update(prefix=raw["prefix"], continuation=raw["continuation"], true_continuation=true_text)
    return out
