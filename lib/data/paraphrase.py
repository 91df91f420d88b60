"""Paraphrased prompts: the same secret behind the category's other sentence templates (the paraphrase attack).

Neurons are selected, and forgetting is measured, on the one sentence each secret was planted in. An attacker is
free to ask differently: here every other template of the secret's category (lib.data.corpus), with the same
codename or system filled in, wraps the secret instead, on both tracks (the masked track's records are the
sentence itself; the causal track's samples hold it inside an email, and only the sentence changes). Texts built
from other sources (JSONL candidates, TDEC) hold no known template: they have no paraphrase.
"""
from __future__ import annotations

import re
from functools import cache

from lib.data.corpus import NAME_TEMPLATES, RANDOM_TEMPLATES, TEL_TEMPLATES

TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {"TEL": TEL_TEMPLATES, "NAME": NAME_TEMPLATES,
                                                      "RANDOM": RANDOM_TEMPLATES}
_FIELD = re.compile(r"\{(\w+)\}")


@cache
def _prefix_pattern(prefix: str) -> re.Pattern[str]:
    """A template prefix as a regex anchored at the end of the text before the secret; fields are groups that
    stay inside one sentence."""
    parts = _FIELD.split(prefix)  # literal, field, literal, ...
    body = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^.]+?)" for i, p in enumerate(parts))
    return re.compile(rf"(?:^|(?<=\s)){body}$")


def rewrites(category: str, before: str, after: str) -> list[tuple[str, str]]:
    """(text before, text after) the secret for each other template of `category`, the ones after its own first
    (cyclically, so the first few spread over the templates); [] when the text around the secret is no template
    of it (or the category has none)."""
    templates = TEMPLATES.get(category, ())
    for own, (prefix, suffix) in enumerate(templates):
        found = _prefix_pattern(prefix).search(before)
        if found is None or not after.startswith(suffix):
            continue
        fields, head, tail = found.groupdict(), before[:found.start()], after[len(suffix):]
        others = [templates[(own + step) % len(templates)] for step in range(1, len(templates))]  # the next first
        return [(head + p.format(**fields), s + tail) for p, s in others]
    return []


def paraphrased_texts(category: str | None, text: str, secret: str | None) -> list[str]:
    """`text` with the sentence around the first occurrence of `secret` rewritten by each other template."""
    at = text.find(secret) if secret else -1
    if category is None or at < 0:
        return []
    return [b + secret + a for b, a in rewrites(category, text[:at], text[at + len(secret):])]
