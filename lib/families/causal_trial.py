"""One calibration trial on a causal LM: a method at given strength from the fine-tuned weights, scored by the
track's forget measure (MA of D_f, the quantity of the Eq. 17 stop rule) and its utility (held-out perplexity).

A trial runs without the stop rule, so the strength alone decides how far the method goes (the search, not the
rule, finds the point of equal forgetting); each trial edits a copy of the fine-tuned model."""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

from torch import nn

from lib.families.causal import Sequences, mean_ma, perplexity
from lib.methods import Inputs, unlearn


def scores(model: nn.Module, forget: Sequences, valid: Sequences, pad_id: int, batch_size: int) -> dict[str, float]:
    """MA and span MA of D_f, perplexity of the held-out texts."""
    has_span = any(span is not None for span in forget.spans)
    return {"ma": mean_ma(model, forget, pad_id, batch_size),
            "span_ma": mean_ma(model, forget, pad_id, batch_size, span=True) if has_span else math.nan,
            "valid_ppl": perplexity(model, valid, pad_id, batch_size)}


def trial(base: nn.Module, name: str, cfg: Any, inputs: Inputs, valid: Sequences, batch_size: int) -> dict[str, float]:
    """Method `name` with `cfg` on a copy of `base` without the stop rule: the copy's scores, the share of weights
    the method changed and its seconds (`base` is left as it is)."""
    model = copy.deepcopy(base)
    outcome = unlearn(name, model, dataclasses.replace(inputs, stop=None), cfg)
    return {**scores(model, inputs.forget, valid, inputs.family.pad_id, batch_size),
            "changed_frac": outcome.changed / outcome.total, "seconds": round(outcome.seconds, 2)}


def gap_ratio(ma: float, before: float, retrained: float) -> float:
    """|MA - the retrained model's| over the fine-tuned model's distance to it (0: as retraining; 1: as before)."""
    return abs(ma - retrained) / (before - retrained)
