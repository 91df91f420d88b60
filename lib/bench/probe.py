"""The attacks' probe of a benchmark run (lib.attacks.audit): the causal track's probe with D_f's answers as the secret
spans (LUME: a document's continuation or a question's answer) and the run's never-trained pairs of the same kind
where the causal track has its held-out emails."""
from __future__ import annotations

from typing import Any, Sequence

from lib.attacks.audit import AttacksConfig
from lib.attacks.causal import CausalProbe
from lib.bench.qa import encode_pairs
from lib.bench.suites import AttackPairs
from lib.families.causal import CausalFamily, Sequences


def pairs_probe(tokenizer: Any, pairs: AttackPairs, family: CausalFamily, max_len: int,
                cfg: AttacksConfig) -> CausalProbe:
    """The probe of a benchmark run: each answer of D_f is its secret span, the never-trained pairs are the
    membership non-members and the unrelated attacker's data; sampling looks for an answer's first cfg.max_new
    tokens (a long continuation cannot fit in a sample; a short answer must end with its eos)."""
    def encoded(rows: Sequence[tuple[str, str]]) -> Sequences:
        """Prompt + answer sequences, the answer as the span."""
        return encode_pairs(tokenizer, [p for p, _ in rows], [a for _, a in rows], max_len)

    if not pairs.forget or not pairs.held_out:
        raise ValueError(f"{len(pairs.forget)} forget and {len(pairs.held_out)} held-out pairs; the attacks need at "
                         "least one of each")
    texts = ([f"{p} {a}" for p, a in pairs.forget], [f"{p} {a}" for p, a in pairs.held_out])
    return CausalProbe(encoded(pairs.forget), encoded(pairs.held_out), texts,
                       encoded(pairs.paraphrased) if pairs.paraphrased else None, family, cfg,
                       secret_tokens=cfg.max_new)
