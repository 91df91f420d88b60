"""Text-overlap scores shared by the benchmarks: ROUGE-L recall and exact match."""
from __future__ import annotations

import re

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens (the rouge_score package's default tokenisation, without stemming)."""
    return [w for w in _NON_ALNUM.split(text.lower()) if w]


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a) * len(b)), one row of memory)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diag = 0
        for j, y in enumerate(b, start=1):
            diag, row[j] = row[j], diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall: LCS(prediction, reference) / reference length (0.0 for an empty reference)."""
    ref = words(reference)
    return lcs_length(words(prediction), ref) / len(ref) if ref else 0.0


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the reference's words appear, in order and contiguous, in the prediction; else 0.0."""
    ref, pred = " ".join(words(reference)), " ".join(words(prediction))
    return float(bool(ref) and f" {ref} " in f" {pred} ")
