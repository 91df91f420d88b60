"""TOFU (Maini et al., 2024): split loaders, CPU-sized subsets, metrics and a model-level evaluation.

Author layout (checked against the released files in tests/test_tofu.py): the full set is 200 fictitious authors x 20
QA pairs, in author order. retain90 = authors 0-179 (rows 0-3599) and forget10 = authors 180-199, so
retain90 + forget10 is the full set; forget05 / forget01 are the LAST 10 / 2 authors of forget10, and retain95 /
retain99 are the first 190 / 198 authors. retain_perturbed is the first 400 retain rows (authors 0-19) with
paraphrased and perturbed answers. Data quirk: the released retain95/retain99 word one question of author 183
(row 3660) differently from forget10; answers agree everywhere.

Metrics follow TOFU's evaluation code, restated in NeuMuter's Appendix D. Divergences, all deliberate:
- Real authors / world facts probability: P(a)/(P(a) + sum P(perturbed)) as in TOFU's code and paper; NeuMuter's
  Eq. 18 prints the sum over the wrong answers only in the denominator.
- Truth ratio: the arithmetic mean of the perturbed answers' normalised probabilities (TOFU paper, NeuMuter Eq. 19);
  TOFU's code averages their per-token losses, i.e. a geometric mean (`truth_ratios(..., geometric=True)`).
- Forget quality: TOFU's code runs the KS test on 1/R; the KS statistic is invariant under that monotone map, so the
  p-value is the same. NeuMuter's Table 13 prints log10 of this p-value; we return the p-value itself.
- Prompt: TOFU uses per-model chat templates; we use its Phi-1.5 template for every model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from scipy.stats import ks_2samp

from lib.bench.suites import AttackPairs
from lib.bench.text import rouge_l_recall
from lib.core.finetune import TrainConfig
from lib.core.io import InputError, json_kind, parse_json, parse_jsonl, read_utf8
from lib.core.params import Count, NonEmpty, check_ranges

QA_PER_AUTHOR = 20
FORGET_SPLITS = ("forget01", "forget05", "forget10")
RETAIN_SPLITS = ("retain99", "retain95", "retain90")
EVAL_SPLITS = ("retain_perturbed", "real_authors_perturbed", "world_facts_perturbed")
SPLITS = FORGET_SPLITS + RETAIN_SPLITS + EVAL_SPLITS
_QA = ("question", "answer")
_TRUTH = _QA + ("paraphrased_answer", "perturbed_answer")
FIELDS: dict[str, tuple[str, ...]] = {
    **{name: _TRUTH for name in FORGET_SPLITS + ("retain_perturbed",)},
    **{name: _QA for name in RETAIN_SPLITS},
    "real_authors_perturbed": _QA + ("perturbed_answer",),
    "world_facts_perturbed": _QA + ("perturbed_answer",),
}
SET_NAMES = ("forget", "retain", "real_authors", "world_facts")


@dataclass(frozen=True)
class Config:
    """`benchmarks.tofu`: which authors are fine-tuned on, how many QA of each utility set are scored."""

    hub: NonEmpty = "locuslab/TOFU"  # the hub dataset, read when benchmarks.data_root is null
    n_retain_authors: Count | None = None  # retain authors in the fine-tuning set (null: all 180 of retain90)
    n_retain_eval: Count | None = None  # retain_perturbed QA scored (of the fine-tuned authors; null: all)
    n_real_authors: Count | None = None  # real_authors_perturbed QA scored (null: all 100)
    n_world_facts: Count | None = None  # world_facts_perturbed QA scored (null: all 117)
    max_len: Count = 256  # tokens per question + answer
    max_new: Count = 128  # tokens generated per answer (ROUGE-L)
    finetune: TrainConfig = TrainConfig(epochs=5, batch_size=16, learning_rate=1e-5, warmup_fraction=0.2)

    def __post_init__(self) -> None:
        """Positive sizes and token budgets, max_new below max_len."""
        if not 1 <= self.max_new < self.max_len:  # the pair first: one message names both budgets
            raise ValueError(f"max_new={self.max_new}, max_len={self.max_len}; allowed: 1 <= max_new < max_len")
        check_ranges(self)


# ---------------------------------------------------------------- loaders

def _check_name(name: str) -> None:
    """ValueError unless `name` is one of TOFU's configs."""
    if name not in SPLITS:
        raise ValueError(f"unknown TOFU split {name!r}; allowed: {', '.join(SPLITS)}")


def _check_row(name: str, index: int, row: Any, where: str) -> None:
    """InputError when a row is not an object, lacks a field its split must have, or holds the wrong type."""
    if not isinstance(row, Mapping):
        raise InputError(f"{where}: TOFU split {name!r} row {index} is {json_kind(row)}; "
                         f"allowed: an object with fields {list(FIELDS[name])}")
    for key in FIELDS[name]:
        value = row.get(key)
        if key == "perturbed_answer":
            ok = isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
        else:
            ok = isinstance(value, str) and bool(value)
        if not ok:  # the value's kind, never its text
            raise InputError(f"{where}: TOFU split {name!r} row {index}: field {key!r} is {json_kind(value)}; "
                             f"allowed: {'a non-empty list of strings' if key == 'perturbed_answer' else 'a string'}")


def _local_rows(path: Path) -> list[tuple[str, Any]]:
    """(where, row) of each row of a local split file: JSON lines (the hub's files) or one JSON array."""
    text = read_utf8(path, missing=f"expected <data_root>/tofu/{path.name}")
    if text.lstrip().startswith("["):
        rows = parse_json(text, path)
        return [(f"{path} item {i}", row) for i, row in enumerate(rows)]
    return [(f"{path} line {n}", row) for n, row in parse_jsonl(text, path)]


def load_split(name: str, data_root: str | Path | None, hub: str = "locuslab/TOFU") -> list[dict]:
    """Rows of one TOFU split: `<data_root>/tofu/<name>.json` (JSON lines or an array), else the hub config."""
    _check_name(name)
    if data_root is None:
        from datasets import load_dataset  # heavy import, only where the hub is read

        found = [(f"{hub} {name}", dict(row)) for row in load_dataset(hub, name, split="train")]
        source = f"{hub} {name}"
    else:
        source = str(Path(data_root) / "tofu" / f"{name}.json")
        found = _local_rows(Path(source))
    if not found:
        raise InputError(f"TOFU split {name!r} is empty ({source}); allowed: a split with at least one row")
    for index, (where, row) in enumerate(found):
        _check_row(name, index, row, where)
    return [row for _, row in found]


# ---------------------------------------------------------------- subsets

@dataclass(frozen=True)
class EvalSets:
    """The four TOFU evaluation sets for one forget split (rows keep paraphrased / perturbed answers)."""

    forget: list[dict]
    retain: list[dict]
    real_authors: list[dict]
    world_facts: list[dict]
    holdout: list[dict] = field(default_factory=list)  # never-fine-tuned authors' QA: the attacks' non-members


@dataclass(frozen=True)
class TofuSets:
    """Fine-tuning rows, per forget split its reference (retrain) rows and forget rows, and the utility sets."""

    finetune: list[dict]
    reference: dict[str, list[dict]]
    forget: dict[str, list[dict]]
    retain_eval: list[dict]
    real_authors: list[dict]
    world_facts: list[dict]
    n_retain_authors: int = 0
    forget_splits: tuple[str, ...] = field(default_factory=tuple)
    holdout: list[dict] = field(default_factory=list)

    def for_split(self, split: str) -> EvalSets:
        """The evaluation sets of one requested forget split (as many held-out QA as it has forget QA)."""
        if split not in self.forget:
            raise ValueError(f"forget split {split!r} was not requested; allowed: {', '.join(self.forget)}")
        return EvalSets(self.forget[split], self.retain_eval, self.real_authors, self.world_facts,
                        self.holdout[:len(self.forget[split])])


def _qa(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Question/answer-only copies of rows (what fine-tuning reads)."""
    return [{"question": r["question"], "answer": r["answer"]} for r in rows]


def _check_count(name: str, value: int | None, minimum: int = 1) -> None:
    """ValueError unless `value` is None or an integer >= minimum."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ValueError(f"{name}={value!r} invalid; allowed: None or an integer >= {minimum}")


def _check_forget_splits(forget_splits: Sequence[str]) -> None:
    """ValueError unless forget_splits is a non-empty list of distinct forget configs."""
    if isinstance(forget_splits, str) or not forget_splits or len(set(forget_splits)) != len(forget_splits):
        raise ValueError(f"forget_splits={forget_splits!r} invalid; allowed: distinct names from {FORGET_SPLITS}")
    for name in forget_splits:
        if name not in FORGET_SPLITS:
            raise ValueError(f"forget split {name!r} unknown; allowed: {', '.join(FORGET_SPLITS)}")


def _largest_forget(splits: Mapping[str, list[dict]], forget_splits: Sequence[str]) -> list[dict]:
    """Rows of the largest requested forget split, after checking every other one is its suffix."""
    largest = max(forget_splits, key=lambda name: len(splits[name]))
    base = [r["question"] for r in splits[largest]]
    for name in forget_splits:
        tail = [r["question"] for r in splits[name]]
        if base[len(base) - len(tail):] != tail:
            raise ValueError(f"forget split {name!r} is not the last authors of {largest!r}; TOFU layout broken")
    return splits[largest]


def build_sets(splits: Mapping[str, list[dict]], forget_splits: Sequence[str] = ("forget01",),
               n_retain_authors: int | None = None, n_retain_eval: int | None = None,
               n_real_authors: int | None = None, n_world_facts: int | None = None,
               qa_per_author: int = QA_PER_AUTHOR) -> TofuSets:
    """TOFU subsets from loaded splits (needs the forget splits, retain90 and the three *_perturbed splits).

    Fine-tuning = the first n_retain_authors authors of retain90 (None = all) + the largest requested forget split,
    in TOFU's order; reference[s] = fine-tuning minus split s (s is a suffix, cut by position); retain-eval = the
    retain_perturbed rows whose question is fine-tuned on, capped at n_retain_eval (None = all); holdout = as many
    QA as the largest forget split of the retain90 authors after the fine-tuned ones (none when all are), QA of
    fictitious authors the model never saw.
    """
    _check_forget_splits(forget_splits)
    for name, value in (("n_retain_authors", n_retain_authors), ("n_retain_eval", n_retain_eval),
                        ("n_real_authors", n_real_authors), ("n_world_facts", n_world_facts),
                        ("qa_per_author", qa_per_author)):
        _check_count(name, value)
    retain = splits["retain90"]
    available = len(retain) // qa_per_author
    if available < 1 or len(retain) % qa_per_author:
        raise ValueError(f"retain90 has {len(retain)} rows; allowed: a positive multiple of qa_per_author="
                         f"{qa_per_author} (whole authors)")
    if n_retain_authors is not None and n_retain_authors > available:
        raise ValueError(f"n_retain_authors={n_retain_authors} invalid; allowed: None or 1..{available}")
    kept = (available if n_retain_authors is None else n_retain_authors) * qa_per_author
    retain = retain[:kept]
    forget_all = _largest_forget(splits, forget_splits)
    holdout = _qa(splits["retain90"][kept:kept + len(forget_all)])
    finetune = _qa(retain) + _qa(forget_all)
    reference = {s: finetune[: len(finetune) - len(splits[s])] for s in forget_splits}
    seen = {r["question"] for r in finetune}
    retain_eval = [r for r in splits["retain_perturbed"] if r["question"] in seen][:n_retain_eval]
    if not retain_eval:
        raise ValueError("no retain_perturbed question is in the fine-tuning set; allowed: a layout where "
                         "retain_perturbed covers the first retain authors")
    return TofuSets(finetune, reference, {s: list(splits[s]) for s in forget_splits}, retain_eval,
                    list(splits["real_authors_perturbed"][:n_real_authors]),
                    list(splits["world_facts_perturbed"][:n_world_facts]),
                    len(retain) // qa_per_author, tuple(forget_splits), holdout)


def load_sets(data_root: str | Path | None, forget_splits: Sequence[str] = ("forget01",),
              n_retain_authors: int | None = None, n_retain_eval: int | None = None,
              n_real_authors: int | None = None, n_world_facts: int | None = None,
              hub: str = "locuslab/TOFU", qa_per_author: int = QA_PER_AUTHOR) -> TofuSets:
    """Load the splits `build_sets` needs (files under data_root, else the hub) and build the subsets."""
    _check_forget_splits(forget_splits)
    names = list(forget_splits) + ["retain90", *EVAL_SPLITS]
    splits = {name: load_split(name, data_root, hub) for name in names}
    return build_sets(splits, forget_splits, n_retain_authors, n_retain_eval, n_real_authors, n_world_facts,
                      qa_per_author)


# ---------------------------------------------------------------- metrics (pure)

def tofu_prompt(question: str) -> str:
    """TOFU's question prompt (its Phi-1.5 template); the answer follows after a space."""
    return f"Question: {question}\nAnswer:"


def _mean(values: Sequence[float], what: str) -> float:
    """Mean of a non-empty sequence; ValueError naming `what` when empty."""
    if len(values) == 0:
        raise ValueError(f"{what}: no values; allowed: at least one")
    return math.fsum(values) / len(values)


def _rows(per_row: Sequence[Sequence[float]], n: int, what: str) -> None:
    """ValueError unless there are n non-empty rows of perturbed log-probabilities."""
    if len(per_row) != n or any(len(row) == 0 for row in per_row):
        raise ValueError(f"{what}: {len(per_row)} perturbed rows for {n} samples; allowed: one non-empty row each")


def answer_probability(logp: Sequence[float]) -> float:
    """Forget / retain probability: mean over samples of P(a|q)^(1/|a|) = exp(mean token log-prob)."""
    return _mean([math.exp(float(x)) for x in logp], "answer_probability")


def choice_probability(logp_true: Sequence[float], logp_perturbed: Sequence[Sequence[float]]) -> float:
    """Real authors / world facts probability: mean of P(a) / (P(a) + sum_k P(perturbed_k)), normalised P."""
    _rows(logp_perturbed, len(logp_true), "choice_probability")
    # 1 / (1 + sum exp(p_k - a)) in log space: normalised probabilities can underflow on long answers
    shares = [1.0 / (1.0 + math.fsum(math.exp(float(p) - float(a)) for p in row))
              for a, row in zip(logp_true, logp_perturbed)]
    return _mean(shares, "choice_probability")


def truth_ratios(logp_base: Sequence[float], logp_perturbed: Sequence[Sequence[float]],
                 geometric: bool = False) -> list[float]:
    """Per-sample R = mean_k P(perturbed_k) / P(base), normalised P (geometric=True: TOFU code's log-mean)."""
    _rows(logp_perturbed, len(logp_base), "truth_ratios")
    out = []
    for base, row in zip(logp_base, logp_perturbed):
        row = [float(p) for p in row]
        top = max(row)  # log-mean-exp, shifted for stability
        log_mean = math.fsum(row) / len(row) if geometric else \
            top + math.log(math.fsum(math.exp(p - top) for p in row) / len(row))
        out.append(math.exp(log_mean - float(base)))
    return out


def truth_ratio_score(ratios: Sequence[float], forget: bool) -> float:
    """Reported truth ratio: mean min(R, 1/R) on the forget set, mean max(0, 1 - R) elsewhere (TOFU's code)."""
    if any(not r > 0 for r in ratios):
        raise ValueError(f"truth ratios must be > 0; got min {min(ratios)}")
    values = [min(r, 1.0 / r) if forget else max(0.0, 1.0 - r) for r in ratios]
    return _mean(values, "truth_ratio_score")


def rouge_score(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L recall of generated answers against the reference answers."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references; allowed: equal counts")
    return _mean([rouge_l_recall(p, r) for p, r in zip(predictions, references)], "rouge_score")


def forget_quality(unlearned_ratios: Sequence[float], reference_ratios: Sequence[float]) -> float:
    """KS two-sample p-value between forget-set truth ratios of the unlearned and reference (retrained) models."""
    if len(unlearned_ratios) == 0 or len(reference_ratios) == 0:
        raise ValueError("forget_quality: empty ratio list; allowed: at least one ratio per model")
    return float(ks_2samp(list(unlearned_ratios), list(reference_ratios)).pvalue)


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean of the nine retain-side values (retain, real authors, world facts x prob, ROUGE, TR); 0 if any 0."""
    if len(values) != 9 or any(not (v >= 0) for v in values):
        raise ValueError(f"model_utility needs 9 values >= 0; got {list(values)}")
    if any(v == 0 for v in values):
        return 0.0
    return len(values) / math.fsum(1.0 / v for v in values)


# ---------------------------------------------------------------- model-level evaluation

def _score_set(model: Any, tokenizer: Any, rows: list[dict], base_key: str, cfg: dict) -> dict:
    """Log-probabilities of answer / base / perturbed answers and greedy answers for one set (no text kept)."""
    from lib.bench.qa import answer_logprob, greedy_answers

    prompts = [tofu_prompt(r["question"]) for r in rows]
    answer = answer_logprob(model, tokenizer, prompts, [r["answer"] for r in rows], cfg["max_len"], cfg["batch_size"])
    base = answer if base_key == "answer" else answer_logprob(
        model, tokenizer, prompts, [r[base_key] for r in rows], cfg["max_len"], cfg["batch_size"])
    flat_prompts = [p for p, r in zip(prompts, rows) for _ in r["perturbed_answer"]]
    flat = answer_logprob(model, tokenizer, flat_prompts, [a for r in rows for a in r["perturbed_answer"]],
                          cfg["max_len"], cfg["batch_size"]).tolist()
    perturbed, start = [], 0
    for r in rows:
        perturbed.append(flat[start: start + len(r["perturbed_answer"])])
        start += len(r["perturbed_answer"])
    greedy = greedy_answers(model, tokenizer, prompts, cfg["max_new"], cfg["max_len"], cfg["batch_size"])
    return {"answer": answer.tolist(), "base": base.tolist(), "perturbed": perturbed,
            "rouge": rouge_score(greedy, [r["answer"] for r in rows])}


def _set_metrics(scored: dict, name: str) -> dict:
    """prob / rouge / truth_ratio / n of one scored set (TOFU's per-set definitions)."""
    ratios = truth_ratios(scored["base"], scored["perturbed"])
    if name in ("forget", "retain"):
        prob = answer_probability(scored["answer"])
    else:
        prob = choice_probability(scored["answer"], scored["perturbed"])
    return {"prob": prob, "rouge": scored["rouge"], "truth_ratio": truth_ratio_score(ratios, name == "forget"),
            "n": len(ratios), "_ratios": ratios}


def evaluate_tofu(model: Any, tokenizer: Any, sets: EvalSets, max_len: int, max_new: int,
                  batch_size: int) -> dict:
    """TOFU metrics of one model on one forget split's EvalSets: per set prob/rouge/truth_ratio/n, model utility,
    and the per-sample forget truth ratios (for forget quality against a reference model's, see with_forget_quality).
    """
    cfg = {"max_len": max_len, "max_new": max_new, "batch_size": batch_size}
    result: dict[str, Any] = {}
    for name in SET_NAMES:
        rows = getattr(sets, name)
        if not rows:
            raise ValueError(f"TOFU set {name!r} is empty; allowed: at least one row")
        base_key = "paraphrased_answer" if name in ("forget", "retain") else "answer"
        result[name] = _set_metrics(_score_set(model, tokenizer, rows, base_key, cfg), name)
    result["forget_truth_ratios"] = result["forget"].pop("_ratios")
    for name in SET_NAMES[1:]:
        result[name].pop("_ratios")
    result["model_utility"] = model_utility(
        [result[name][key] for name in SET_NAMES[1:] for key in ("prob", "rouge", "truth_ratio")])
    return result


def with_forget_quality(result: Mapping[str, Any], reference_ratios: Sequence[float]) -> dict:
    """A copy of an evaluate_tofu result with forget_quality against the reference model's forget truth ratios."""
    if "forget_truth_ratios" not in result:
        raise ValueError("result has no 'forget_truth_ratios'; allowed: an evaluate_tofu result")
    return {**result, "forget_quality": forget_quality(result["forget_truth_ratios"], reference_ratios)}


# ---------------------------------------------------------------- the suite interface (lib.bench.suites)

def prompt_answer_rows(prefix: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Rows {"id", "prompt", "answer"} of QA rows, numbered in order."""
    return [{"id": f"{prefix}-{i}", "prompt": tofu_prompt(r["question"]), "answer": r["answer"]}
            for i, r in enumerate(rows)]


def build_files(cfg: Config, data_root: str | None, runs: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bench_data files of TOFU (relative path -> rows or JSON) and their sizes: one fine-tuning set for every
    requested forget split; per run its forget, retain, reference pairs and evaluation sets."""
    from lib.bench.suites import run_suite  # (a name check; the registry imports this module, not the reverse)

    splits = [run_suite(r)[1] for r in runs]
    sets = load_sets(data_root, splits, cfg.n_retain_authors, cfg.n_retain_eval, cfg.n_real_authors,
                     cfg.n_world_facts, cfg.hub)
    files: dict[str, Any] = {"tofu/train.jsonl": prompt_answer_rows("tofu", sets.finetune)}
    forget_questions = {r["question"] for rows in sets.forget.values() for r in rows}
    retain = [r for r in sets.finetune if r["question"] not in forget_questions]
    for run, split in zip(runs, splits):
        files[f"{run}/forget.jsonl"] = prompt_answer_rows(f"{run}-forget", sets.forget[split])
        files[f"{run}/retain.jsonl"] = prompt_answer_rows(f"{run}-retain", retain)
        files[f"{run}/reference.jsonl"] = prompt_answer_rows(f"{run}-reference", sets.reference[split])
        files[f"{run}/eval.json"] = asdict(sets.for_split(split))
    stats = {"tofu_train": len(sets.finetune), "tofu_retain_authors": sets.n_retain_authors,
             **{f"{run}_forget": len(sets.forget[s]) for run, s in zip(runs, splits)}}
    return files, stats


NO_HOLDOUT = ("no never-trained authors are left to serve as non-members (benchmarks.tofu.n_retain_authors: null "
              "fine-tunes all 180 of retain90); allowed: n_retain_authors below 180")


def check_attackable(cfg: Config) -> None:
    """ValueError when the fine-tuning takes every retain author: no QA is left that the model never saw."""
    if cfg.n_retain_authors is None:
        raise ValueError(NO_HOLDOUT)


def attack_pairs(sets: EvalSets) -> AttackPairs:
    """The attacks' pairs: D_f's QA, QA of authors the model never saw (the membership non-members, the
    unrelated-text attacker's data) and D_f's questions as TOFU paraphrases them (the paraphrase attack)."""
    if not sets.holdout:
        raise ValueError(NO_HOLDOUT)
    paraphrased = tuple((tofu_prompt(r["paraphrased_question"]), r["answer"]) for r in sets.forget
                        if r.get("paraphrased_question"))
    return AttackPairs(forget=tuple((tofu_prompt(r["question"]), r["answer"]) for r in sets.forget),
                       held_out=tuple((tofu_prompt(r["question"]), r["answer"]) for r in sets.holdout),
                       paraphrased=paraphrased or None)


def sets_from_json(raw: dict[str, Any]) -> EvalSets:
    """The evaluation sets written by build_files."""
    return EvalSets(**raw)


def evaluate(model: Any, tokenizer: Any, sets: EvalSets, cfg: Config, batch_size: int) -> dict:
    """Every TOFU score of one model (numbers and counts only, no text)."""
    return evaluate_tofu(model, tokenizer, sets, cfg.max_len, cfg.max_new, batch_size)


def with_reference(scores: Mapping[str, Any], reference: Mapping[str, Any]) -> dict:
    """Scores with forget quality against the reference model's forget truth ratios."""
    return with_forget_quality(scores, reference["forget_truth_ratios"])


def flat(scores: Mapping[str, Any]) -> dict[str, float]:
    """TOFU scalars: prob / rouge / truth ratio per set, model utility, forget quality, N (None dropped)."""
    out = {f"{name}_{key}": scores[name][key] for name in SET_NAMES for key in ("prob", "rouge", "truth_ratio")}
    out |= {"model_utility": scores["model_utility"], "n_forget": scores["forget"]["n"],
            "forget_quality": scores.get("forget_quality")}
    return {k: float(v) for k, v in out.items() if v is not None}


def sizes(scores: Mapping[str, Any]) -> dict[str, int]:
    """N per evaluation set."""
    return {name: scores[name]["n"] for name in SET_NAMES}
