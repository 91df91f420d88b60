"""Memorized-set selection: per-category thresholds (fixed or from never-seen controls) and a report.

A secret counts as memorized when its score beats the threshold strictly: above it for
higher-is-memorized metrics (exposure, MRR), below it for lower-is-memorized ones
(pseudo-perplexity). The report carries ids and numbers only, never secret strings.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lib.core.params import Count, OpenFraction, check_ranges
from lib.data.records import SecretRecord
from lib.families.masked import HIGHER_IS_MEMORIZED

AUTO = "auto"


@dataclass(frozen=True)
class MemorizedConfig:
    """The masked-LM track's `memorized` section: per-category thresholds and how records are scored."""

    # a number, or "auto" = the controls' quantile (see resolve_threshold); any number: one below every score
    # (-1) marks every secret memorized, as the integration tests' tiny config does
    thresholds: dict[str, float | str]
    control_quantile: OpenFraction = 0.95
    max_len: Count = 128  # tokens per encoded record
    batch_size: Count = 64

    def __post_init__(self) -> None:
        """One threshold per category, each a number or 'auto'; a quantile in (0, 1); positive sizes."""
        check_ranges(self)
        if set(self.thresholds) != set(HIGHER_IS_MEMORIZED):
            raise ValueError(f"thresholds has keys {sorted(self.thresholds)}; exactly {list(HIGHER_IS_MEMORIZED)} "
                             "are required")
        bad = {c: v for c, v in self.thresholds.items() if isinstance(v, str) and v != AUTO}
        if bad:
            raise ValueError(f"thresholds {bad}; allowed: a number or {AUTO!r}")
        if self.max_len < 3:  # [CLS], one token, [SEP]
            raise ValueError(f"max_len={self.max_len} invalid; allowed: an integer >= 3")


SUMMARY_QUANTILES = {"p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}


@dataclass(frozen=True)
class ScoreSummary:
    """Distribution of a set of scores."""

    min: float
    p5: float
    p25: float
    p50: float
    p75: float
    p95: float
    max: float
    mean: float

    @classmethod
    def of(cls, scores: np.ndarray) -> "ScoreSummary | None":
        """Summary of non-empty scores; None for an empty set."""
        if scores.size == 0:
            return None
        quantiles = {name: float(np.quantile(scores, q)) for name, q in SUMMARY_QUANTILES.items()}
        return cls(min=float(scores.min()), max=float(scores.max()), mean=float(scores.mean()), **quantiles)


@dataclass(frozen=True)
class CategoryReport:
    """Memorization of one category's secrets against its threshold."""

    category: str
    threshold_spec: float | str  # the number given, or "auto"
    threshold: float
    higher_is_memorized: bool
    n_secrets: int
    n_controls: int
    n_memorized: int
    memorized_ids: tuple[str, ...]  # most memorized first
    control_pass_rate: float | None  # fraction of controls beating the threshold; None without controls
    secret_scores: ScoreSummary | None
    control_scores: ScoreSummary | None
    secrets_by_repetitions: dict[int, int]  # repetitions -> number of secrets
    memorized_by_repetitions: dict[int, int]  # repetitions -> number memorized


@dataclass(frozen=True)
class MemorizationReport:
    """Per-category memorization reports, keyed by category."""

    categories: dict[str, CategoryReport]

    def memorized_ids(self, category: str | None = None) -> tuple[str, ...]:
        """Memorized secret ids of one category, or of all categories in report order."""
        chosen = self.categories.values() if category is None else [self.get(category)]
        return tuple(i for report in chosen for i in report.memorized_ids)

    def get(self, category: str) -> CategoryReport:
        """The category's report, naming the category when it is absent."""
        if category not in self.categories:
            raise ValueError(f"category {category!r} was not scored; scored: {sorted(self.categories)}")
        return self.categories[category]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of ids and numbers (no secret strings)."""
        return {name: asdict(report) for name, report in self.categories.items()}


def resolve_threshold(
    spec: float | str, control_scores: np.ndarray, higher_is_memorized: bool, quantile: float = 0.95
) -> float:
    """A number as is; "auto" = the controls' `quantile` (higher is memorized) or 1 - quantile (lower)."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if not np.isfinite(spec):
            raise ValueError(f"threshold {spec!r} is not finite; a finite number or 'auto' is allowed")
        return float(spec)
    if spec != AUTO:
        raise ValueError(f"threshold {spec!r} is not allowed; a number or 'auto' is allowed")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile={quantile} is outside (0, 1)")
    controls = np.asarray(control_scores, dtype=np.float64)
    if controls.size == 0:
        raise ValueError("threshold 'auto' needs control scores, but none were given")
    return float(np.quantile(controls, quantile if higher_is_memorized else 1.0 - quantile))


def is_memorized(scores: np.ndarray, threshold: float, higher: bool) -> np.ndarray:
    """Boolean mask: strictly above the threshold when higher is memorized, strictly below otherwise."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores > threshold if higher else scores < threshold


def _by_repetitions(records: Iterable[SecretRecord]) -> dict[int, int]:
    """Number of records per repetition count, sorted by count."""
    return dict(sorted(Counter(r.repetitions for r in records).items()))


def _ranked_ids(records: Sequence[SecretRecord], scores: np.ndarray, higher: bool) -> tuple[str, ...]:
    """Ids ordered most memorized first (ties keep input order)."""
    order = np.argsort(-scores if higher else scores, kind="stable")
    return tuple(records[i].id for i in order)


def category_report(category: str, spec: float | str, secrets: Sequence[SecretRecord], secret_scores: np.ndarray,
                    control_scores: np.ndarray, quantile: float = 0.95) -> CategoryReport:
    """Report of one category: its threshold, memorized set and score distributions."""
    higher = HIGHER_IS_MEMORIZED[category]
    threshold = resolve_threshold(spec, control_scores, higher, quantile)
    hit = is_memorized(secret_scores, threshold, higher)  # (n_secrets,)
    memorized = [s for s, h in zip(secrets, hit) if h]
    passed = is_memorized(control_scores, threshold, higher)
    return CategoryReport(
        category=category, threshold_spec=spec, threshold=threshold, higher_is_memorized=higher,
        n_secrets=len(secrets), n_controls=int(control_scores.size), n_memorized=len(memorized),
        memorized_ids=_ranked_ids(memorized, secret_scores[hit], higher),
        control_pass_rate=float(passed.mean()) if passed.size else None,
        secret_scores=ScoreSummary.of(secret_scores), control_scores=ScoreSummary.of(control_scores),
        secrets_by_repetitions=_by_repetitions(secrets), memorized_by_repetitions=_by_repetitions(memorized),
    )


def _check_inputs(records: Sequence[SecretRecord], scores: np.ndarray, controls: bool) -> None:
    """Scores must match records one to one, and records must be of the expected kind."""
    kind = "control" if controls else "secret"
    if scores.shape != (len(records),):
        raise ValueError(f"{len(records)} {kind} records but {kind} scores of shape {scores.shape}")
    wrong = [r.id for r in records if r.is_control != controls]
    if wrong:
        raise ValueError(f"records {wrong[:5]} are not {kind} records (is_control={not controls})")


def _of_category(
    records: Sequence[SecretRecord], scores: np.ndarray, category: str
) -> tuple[list[SecretRecord], np.ndarray]:
    """The records of one category and their scores."""
    keep = np.array([r.category == category for r in records], dtype=bool)
    return [r for r, k in zip(records, keep) if k], scores[keep] if keep.size else np.zeros(0)


def memorization_report(secrets: Sequence[SecretRecord], secret_scores: np.ndarray, controls: Sequence[SecretRecord],
                        control_scores: np.ndarray, threshold_specs: Mapping[str, float | str],
                        quantile: float = 0.95) -> MemorizationReport:
    """Per-category memorized sets of the secrets, thresholds resolved against same-category controls."""
    secret_scores, control_scores = np.asarray(secret_scores, float), np.asarray(control_scores, float)
    _check_inputs(secrets, secret_scores, controls=False)
    _check_inputs(controls, control_scores, controls=True)
    present = {s.category for s in secrets}
    unknown = sorted(present - set(HIGHER_IS_MEMORIZED))
    if unknown:
        raise ValueError(f"categories {unknown} are not scored; allowed: {list(HIGHER_IS_MEMORIZED)}")
    reports = {}
    for category in [c for c in HIGHER_IS_MEMORIZED if c in present]:
        if category not in threshold_specs:
            raise ValueError(f"no threshold given for category {category}; give a number or 'auto'")
        members, member_scores = _of_category(secrets, secret_scores, category)
        _, their_scores = _of_category(controls, control_scores, category)
        reports[category] = category_report(category, threshold_specs[category], members, member_scores,
                                             their_scores, quantile)
    return MemorizationReport(reports)


def require_memorized(report: MemorizationReport, categories: Iterable[str]) -> None:
    """Raise when any of the categories has an empty memorized set."""
    for category in categories:
        entry = report.get(category)
        if entry.n_memorized == 0:
            side, fix = ("above", "lower") if entry.higher_is_memorized else ("below", "raise")
            raise ValueError(f"no memorized {category} secrets {side} threshold {entry.threshold:.6g}: "
                             f"train longer or {fix} the threshold")
