"""params.yaml -> frozen dataclasses; the one place parameters are read and validated.

Unknown keys, missing keys and values of the wrong type are errors that name the key
path, the bad value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from lib.causal.finetune import CausalTrainConfig as _CausalTrainConfig
from lib.causal.methods import (di as _di, fo_graddiff as _fo_graddiff, ga as _ga, ig as _ig, neumuter as _neumuter,
                                sga as _sga, simu as _simu, so_graddiff as _so_graddiff, sp as _sp, ta as _ta)

CATEGORIES = ("TEL", "NAME", "RANDOM")


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key and what is allowed."""


@dataclass(frozen=True)
class DataParams:
    """Corpus source and the generator's knobs."""

    source: str  # "generated" | "enron"
    enron_path: str | None
    seed: int
    n_background_emails: int
    secrets_per_category: dict[str, int]
    repetitions: dict[str, list[int]]  # per category, cycled over its secrets
    n_controls_per_category: int
    valid_fraction: float
    max_secret_token_fraction: float


@dataclass(frozen=True)
class FinetuneParams:
    """Model to fine-tune and its masked-LM recipe."""

    model: str
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    warmup_fraction: float
    mask_prob: float
    max_len: int
    seed: int


@dataclass(frozen=True)
class MemorizedParams:
    """Thresholds that decide which planted secrets count as memorized."""

    thresholds: dict[str, Union[float, str]]
    control_quantile: float
    max_len: int
    batch_size: int


@dataclass(frozen=True)
class AttributionParams:
    """Sharding of the attribution stage (one cached Prefect task per shard)."""

    shard_size: int


@dataclass(frozen=True)
class ClusteringParams:
    """SNKU correlation clustering per layer."""

    threshold: float
    linkage: str


@dataclass(frozen=True)
class EditParams:
    """Decay base and absolute noise scale of one category's edit."""

    alpha: float
    sigma: float


@dataclass(frozen=True)
class SnkuParams:
    """SNKU cluster selection and editing."""

    top_m: int
    k: int
    hyb_alpha: float
    min_avg_frac: float
    rank_by: str
    decay_mode: str
    edit: dict[str, EditParams]


@dataclass(frozen=True)
class RandomParams:
    """The random-neuron control: SNKU's edit on K random neurons."""

    k: int
    decay_mode: str
    edit: dict[str, EditParams]


@dataclass(frozen=True)
class FtmParams:
    """FTM (the fine-tuned model, no edit) has no parameters: `ftm: {}`."""


@dataclass(frozen=True)
class GareParams:
    """GARE: gradient ascent on k random neurons' output weights (SNKU paper, Appendix B)."""

    k: int
    learning_rate: float
    epochs: int
    batch_size: int
    warmup_fraction: float


@dataclass(frozen=True)
class DepnParams:
    """DEPN: per-text IG threshold, aggregation, k neurons zeroed (IG settings: section `ig`)."""

    k: int
    per_text_threshold: float
    aggregate: str


@dataclass(frozen=True)
class ApneapParams:
    """APNEAP: DEPN's top-k neurons steered away from the secret with strength alpha."""

    k: int
    alpha: float
    per_text_threshold: float
    aggregate: str
    placeholder_seed: int


@dataclass(frozen=True)
class MethodsParams:
    """One section per registered method; the key is the method's registry name."""

    ftm: FtmParams
    gare: GareParams
    depn: DepnParams
    apneap: ApneapParams
    snku: SnkuParams
    random: RandomParams


@dataclass(frozen=True)
class IgParams:
    """The `ig` stage: Integrated Gradients of every memorized secret token (DEPN's detector)."""

    steps: int
    grid: str
    objective: str
    max_rows_per_batch: int


@dataclass(frozen=True)
class BudgetParams:
    """Neuron-budget sweep (SNKU paper Fig 2/3): these methods at each K, every category."""

    methods: list[str]
    ks: list[int]


@dataclass(frozen=True)
class NoiseParams:
    """Noise ablation (Fig 4): SNKU on one category at fixed k and alpha, sigma swept."""

    category: str
    k: int
    alpha: float
    sigmas: list[float]


@dataclass(frozen=True)
class DecayParams:
    """Decay ablation (Fig 5): SNKU on one category at fixed k and sigma, alpha swept."""

    category: str
    k: int
    sigma: float
    alphas: list[float]


@dataclass(frozen=True)
class SeesawParams:
    """Privacy seesaw: forget this seeded fraction of each category's memorized secrets."""

    forget_fraction: float
    seed: int


@dataclass(frozen=True)
class ExperimentsParams:
    """The paper's experiments, run in memory on the cached statistics (stage `experiments`)."""

    seeds: list[int]
    budget: BudgetParams
    noise: NoiseParams
    decay: DecayParams
    scoring: list[str]
    seesaw: SeesawParams


@dataclass(frozen=True)
class EvaluateParams:
    """Utility and privacy evaluation settings."""

    valid_mask_prob: float
    valid_seed: int
    max_valid_texts: int
    batch_size: int
    log_private_text: bool


@dataclass(frozen=True)
class PipelineParams:
    """Which methods and categories the pipeline runs."""

    methods: list[str]
    categories: list[str]


@dataclass(frozen=True)
class MlflowParams:
    """Where runs are recorded."""

    tracking_uri: str
    experiment: str
    artifact_location: str


@dataclass(frozen=True)
class CausalDataParams:
    """The causal track's text: generated private emails (default), a JSONL of candidates, or TDEC arrays."""

    source: str  # "generated" | "jsonl" | "tdec"
    path: str | None  # the JSONL file or TDEC folder (source jsonl / tdec)
    tdec_tokenizer: str  # tokenizer the TDEC token arrays were made with (GPT-Neo's)
    tdec_limit: int | None  # first N TDEC samples (None: all)
    seed: int
    n_background_emails: int
    secrets_per_category: dict[str, int]
    copies: list[int]  # verbatim copies of each private email in the training text, cycled
    valid_fraction: float
    max_len: int  # tokens per sample (a window holding the secret)
    n_public: int  # public-domain passages for the second perplexity corpus
    public_words: int


@dataclass(frozen=True)
class CausalMemorizedParams:
    """Which candidates form the unlearned set D_f (Eq. 17 thresholds from held-out text)."""

    n_forget: int
    margin: float  # a candidate's MA must exceed the MA threshold by this much
    el_n: int
    el_max_new: int | None  # cap on each greedy continuation (None: the whole remaining suffix)
    n_valid: int  # held-out samples that set the thresholds
    batch_size: int
    seed: int


@dataclass(frozen=True)
class NeighbourParams:
    """NeuMuter's neighbours: an MLM fine-tuned on the corpus minus D_f rewrites each forget sample."""

    mlm: str
    k: int
    ratio: float
    seed: int
    mlm_epochs: int
    mlm_batch_size: int
    mlm_learning_rate: float


@dataclass(frozen=True)
class CausalMethodsParams:
    """One section per causal method; each is that method's Config (lib/causal/methods/<name>.py)."""

    neumuter: "_neumuter.Config"
    ga: "_ga.Config"
    sga: "_sga.Config"
    ta: "_ta.Config"
    di: "_di.Config"
    ig: "_ig.Config"
    simu: "_simu.Config"
    fo_graddiff: "_fo_graddiff.Config"
    so_graddiff: "_so_graddiff.Config"
    sp: "_sp.Config"


@dataclass(frozen=True)
class CausalEvaluateParams:
    """Metrics of every unlearned model: EL_n, MIA, two perplexity corpora, an extraction example."""

    el_n: int
    el_max_new: int | None
    batch_size: int
    example_tokens: int
    log_private_text: bool


@dataclass(frozen=True)
class CausalParams:
    """The causal-LM track (params.yaml section `causal`)."""

    model: str
    data: CausalDataParams
    finetune: "_CausalTrainConfig"  # epochs = 0 keeps the base model (pretraining memorization)
    memorized: CausalMemorizedParams
    neighbours: NeighbourParams
    methods: CausalMethodsParams
    evaluate: CausalEvaluateParams
    retain_samples: int  # D_r of methods with a retain term (SIMU, GradDiff, SP): first N background emails
    pipeline: list[str]  # the causal methods to run (DVC foreach items)


@dataclass(frozen=True)
class TofuParams:
    """TOFU (locuslab/TOFU): which authors are fine-tuned on and how many QA of each utility set are scored."""

    hub: str  # the hub dataset, read when benchmarks.data_root is null
    n_retain_authors: int | None  # retain authors in the fine-tuning set (null: all 180 of retain90)
    n_retain_eval: int | None  # retain_perturbed QA scored (of the fine-tuned authors; null: all)
    n_real_authors: int | None  # real_authors_perturbed QA scored (null: all 100)
    n_world_facts: int | None  # world_facts_perturbed QA scored (null: all 117)
    max_len: int  # tokens per question + answer
    max_new: int  # tokens generated per answer (ROUGE-L)
    finetune: "_CausalTrainConfig"


@dataclass(frozen=True)
class LumeParams:
    """LUME (SemEval-2025 Task 4): a stratified subset of forget and retain rows, a tenth of each held out."""

    hub: str
    n_forget: int | None  # forget rows drawn (null: all)
    n_retain: int | None
    holdout_fraction: float  # non-members: never fine-tuned on, the MIA's negatives
    seed: int
    max_len: int
    max_new: int
    finetune: "_CausalTrainConfig"


@dataclass(frozen=True)
class BenchRunParams:
    """One scored benchmark run; the name says the TOFU forget split (tofu_forget05) or lume."""

    suite: str  # whose fine-tuned model the run unlearns from (a DVC dependency path segment)


@dataclass(frozen=True)
class BenchmarksParams:
    """Every causal-LM method scored on TOFU and LUME (params.yaml section `benchmarks`)."""

    data_root: str | None  # folder with tofu/ and lume/ copies of the hub datasets; null: the hub
    suites: list[str]  # benchmarks whose model is fine-tuned (DVC foreach items of bench_finetune)
    runs: dict[str, BenchRunParams]  # tofu_forget01 | tofu_forget05 | tofu_forget10 | lume (DVC matrix keys)
    pipeline: list[str]  # causal methods scored on every run
    batch_size: int
    tofu: TofuParams
    lume: LumeParams
    neighbours: NeighbourParams
    methods: CausalMethodsParams


@dataclass(frozen=True)
class Params:
    """Everything in params.yaml."""

    seed: int
    data: DataParams
    finetune: FinetuneParams
    memorized: MemorizedParams
    attribution: AttributionParams
    clustering: ClusteringParams
    ig: IgParams
    methods: MethodsParams
    evaluate: EvaluateParams
    pipeline: PipelineParams
    experiments: ExperimentsParams
    mlflow: MlflowParams
    causal: CausalParams
    benchmarks: BenchmarksParams


def _coerce_scalar(value: Any, kind: type, where: str) -> Any:
    """Check one scalar against its declared type; numbers written as strings are parsed."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ParamsError(f"{where} = {value!r} is not a boolean (allowed: true/false)")
    if kind in (int, float) and not isinstance(value, bool):
        if isinstance(value, str):
            try:  # YAML 1.1 reads 3e-4 as a string
                value = float(value) if kind is float else int(value)
            except ValueError:
                raise ParamsError(f"{where} = {value!r} is not a number ({kind.__name__} expected)") from None
        if isinstance(value, int) or (kind is float and isinstance(value, float)):
            return kind(value)
        raise ParamsError(f"{where} = {value!r} is not a {kind.__name__}")
    if kind is str and isinstance(value, str):
        return value
    raise ParamsError(f"{where} = {value!r} is not a {getattr(kind, '__name__', kind)}")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert `value` to the type `hint`, recursing into dataclasses, lists and dicts."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ParamsError as err:
                errors.append(str(err))
        raise ParamsError(f"{where} = {value!r} matches none of the allowed types: " + "; ".join(errors))
    if origin is tuple:  # tuple[int, ...] fields of method configs, written as YAML lists
        if not isinstance(value, list):
            raise ParamsError(f"{where} = {value!r} is not a list")
        return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{where} = {value!r} is not a list")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where} = {value!r} is not a mapping")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    return _coerce_scalar(value, hint, where)


def build(cls: type, mapping: Any, where: str = "params") -> Any:
    """Build dataclass `cls` from a mapping; unknown or missing keys are errors."""
    if not isinstance(mapping, dict):
        raise ParamsError(f"{where} = {mapping!r} is not a mapping of {cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ParamsError(f"unknown key {where}.{unknown[0]}; allowed keys: {fields}")
    missing = [f for f in fields if f not in mapping]
    if missing:
        raise ParamsError(f"missing key {where}.{missing[0]}")
    values = {f: _coerce(mapping[f], hints[f], f"{where}.{f}") for f in fields}
    try:
        return cls(**values)
    except ParamsError:
        raise
    except ValueError as err:  # a Config's own range checks
        raise ParamsError(f"{where}: {err}") from None


def _check_categories(mapping: dict[str, Any], where: str) -> None:
    """Per-category mappings must name exactly the known categories."""
    if set(mapping) != set(CATEGORIES):
        raise ParamsError(f"{where} has keys {sorted(mapping)}; exactly {list(CATEGORIES)} are required")


def _check_threshold(value: float | str, where: str) -> None:
    """A threshold is a number or 'auto'."""
    if isinstance(value, str) and value != "auto":
        raise ParamsError(f"{where} = {value!r}; allowed: a number or 'auto'")


def validate(params: Params) -> Params:
    """Cross-field checks that types alone cannot express."""
    from lib.methods import METHODS  # registry names are the allowed method keys

    for name in params.pipeline.methods:
        if name not in METHODS:
            raise ParamsError(f"pipeline.methods contains {name!r}; registered methods: {sorted(METHODS)}")
    for cat in params.pipeline.categories:
        if cat not in CATEGORIES:
            raise ParamsError(f"pipeline.categories contains {cat!r}; allowed: {list(CATEGORIES)}")
    if params.data.source not in ("generated", "enron"):
        raise ParamsError(f"data.source = {params.data.source!r}; allowed: 'generated', 'enron'")
    _check_categories(params.memorized.thresholds, "memorized.thresholds")
    for cat, value in params.memorized.thresholds.items():
        _check_threshold(value, f"memorized.thresholds.{cat}")
    _check_categories(params.methods.snku.edit, "methods.snku.edit")
    _check_categories(params.methods.random.edit, "methods.random.edit")
    _check_positive(params)
    _check_method_configs(params)
    _check_experiments(params)
    _check_causal(params.causal)
    _check_benchmarks(params.benchmarks)
    return params


def _check_method_configs(params: Params) -> None:
    """Every method section (per category) and the IG settings must build their Config."""
    from lib.ig import IGConfig
    from lib.methods import METHODS, make_config

    try:
        IGConfig(**section(params, "ig"))
        for name in METHODS:
            values = section(params, f"methods.{name}")
            edits = values.pop("edit", {c: {} for c in CATEGORIES})
            for cat, edit in edits.items():
                make_config(METHODS[name].Config, {**values, **edit})
    except ValueError as err:
        raise ParamsError(f"params invalid for a method config: {err}") from None


def _check_experiments(params: Params) -> None:
    """Experiment sweeps name registered methods with a `k`, known categories and scorings."""
    from lib.methods import METHODS

    exp = params.experiments
    for name in exp.budget.methods:
        if name not in METHODS or "k" not in section(params, f"methods.{name}"):
            raise ParamsError(f"experiments.budget.methods contains {name!r}; allowed: registered "
                              f"methods with a k: {sorted(m for m in METHODS if 'k' in section(params, f'methods.{m}'))}")
    for where, cat in (("noise", exp.noise.category), ("decay", exp.decay.category)):
        if cat not in CATEGORIES:
            raise ParamsError(f"experiments.{where}.category = {cat!r}; allowed: {list(CATEGORIES)}")
    bad = [r for r in exp.scoring if r not in ("hyb", "sum", "avg")]
    if bad:
        raise ParamsError(f"experiments.scoring contains {bad}; allowed: hyb, sum, avg")
    if not 0.0 < exp.seesaw.forget_fraction < 1.0:
        raise ParamsError(f"experiments.seesaw.forget_fraction = {exp.seesaw.forget_fraction}; allowed range (0, 1)")
    if not exp.seeds or any(k <= 0 for k in exp.budget.ks):
        raise ParamsError(f"experiments.seeds = {exp.seeds} must be non-empty and budget.ks = {exp.budget.ks} positive")


def _check_causal(causal: CausalParams) -> None:
    """The causal track: registered methods, a known source with its path, positive sizes."""
    from lib.causal.methods import CAUSAL_METHODS

    for name in causal.pipeline:
        if name not in CAUSAL_METHODS:
            raise ParamsError(f"causal.pipeline contains {name!r}; registered causal methods: {sorted(CAUSAL_METHODS)}")
    data = causal.data
    if data.source not in ("generated", "jsonl", "tdec"):
        raise ParamsError(f"causal.data.source = {data.source!r}; allowed: 'generated', 'jsonl', 'tdec'")
    if data.source != "generated" and not data.path:
        raise ParamsError(f"causal.data.path is required when causal.data.source = {data.source!r}")
    sizes = {"causal.data.max_len": data.max_len, "causal.memorized.n_forget": causal.memorized.n_forget,
             "causal.memorized.n_valid": causal.memorized.n_valid, "causal.memorized.el_n": causal.memorized.el_n,
             "causal.evaluate.el_n": causal.evaluate.el_n, "causal.neighbours.k": causal.neighbours.k,
             "causal.finetune.batch_size": causal.finetune.batch_size, "causal.data.n_public": data.n_public,
             "causal.retain_samples": causal.retain_samples}
    for where, value in sizes.items():
        if value <= 0:
            raise ParamsError(f"{where} = {value}; must be a positive integer")
    if not 0.0 < causal.neighbours.ratio <= 1.0:
        raise ParamsError(f"causal.neighbours.ratio = {causal.neighbours.ratio}; allowed range (0, 1]")


SUITES = ("tofu", "lume")  # lib.bench.suites.SUITES; repeated here so params loading never imports the scorers
TOFU_SPLITS = ("forget01", "forget05", "forget10")  # lib.bench.tofu.FORGET_SPLITS


def run_suite(run: str) -> tuple[str, str | None]:
    """(suite, forget split) of a benchmark run name: 'tofu_forget05' -> ('tofu', 'forget05'), 'lume' -> ('lume', None)."""
    if run == "lume":
        return "lume", None
    suite, _, split = run.partition("_")
    if suite != "tofu" or split not in TOFU_SPLITS:
        raise ParamsError(f"benchmark run {run!r} unknown; allowed: "
                          f"{', '.join(f'tofu_{s}' for s in TOFU_SPLITS)}, lume")
    return suite, split


def _check_benchmarks(bench: BenchmarksParams) -> None:
    """Known suites and runs (each run's suite fine-tuned), registered methods, sane sizes."""
    from lib.causal.methods import CAUSAL_METHODS

    for suite in bench.suites:
        if suite not in SUITES:
            raise ParamsError(f"benchmarks.suites contains {suite!r}; allowed: {list(SUITES)}")
    for run, cfg in bench.runs.items():
        try:
            run_suite(run)
        except ParamsError as err:
            raise ParamsError(f"benchmarks.runs: {err}") from None
        if run_suite(run)[0] != cfg.suite or cfg.suite not in bench.suites:
            raise ParamsError(f"benchmarks.runs.{run}.suite = {cfg.suite!r}; allowed: {run_suite(run)[0]!r}, "
                              f"which benchmarks.suites = {bench.suites} must list")
    for name in bench.pipeline:
        if name not in CAUSAL_METHODS:
            raise ParamsError(f"benchmarks.pipeline contains {name!r}; registered causal methods: "
                              f"{sorted(CAUSAL_METHODS)}")
    sizes = {"benchmarks.batch_size": bench.batch_size, "benchmarks.tofu.max_len": bench.tofu.max_len,
             "benchmarks.tofu.max_new": bench.tofu.max_new, "benchmarks.lume.max_len": bench.lume.max_len,
             "benchmarks.lume.max_new": bench.lume.max_new}
    for where, value in sizes.items():
        if value <= 0:
            raise ParamsError(f"{where} = {value}; must be a positive integer")
    if not 0.0 < bench.lume.holdout_fraction < 1.0:
        raise ParamsError(f"benchmarks.lume.holdout_fraction = {bench.lume.holdout_fraction}; allowed range (0, 1)")


def _check_positive(params: Params) -> None:
    """Counts and sizes must be positive."""
    checks = {
        "finetune.epochs": params.finetune.epochs, "finetune.batch_size": params.finetune.batch_size,
        "finetune.max_len": params.finetune.max_len, "attribution.shard_size": params.attribution.shard_size,
"methods.snku.k": params.methods.snku.k,
        "methods.snku.top_m": params.methods.snku.top_m, "methods.random.k": params.methods.random.k,
    }
    for where, value in checks.items():
        if value <= 0:
            raise ParamsError(f"{where} = {value}; must be a positive integer")
    if not 0.0 < params.finetune.mask_prob < 1.0:
        raise ParamsError(f"finetune.mask_prob = {params.finetune.mask_prob}; allowed range (0, 1)")


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"params file {path} is not valid YAML: {err}") from None
    return validate(build(Params, raw))


def section(params: Params, name: str) -> Any:
    """A params section as plain data (for cache keys and MLflow)."""
    node: Any = params
    for part in name.split("."):
        node = getattr(node, part) if dataclasses.is_dataclass(node) else node[part]
    return dataclasses.asdict(node) if dataclasses.is_dataclass(node) else node
