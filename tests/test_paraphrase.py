"""lib.data.paraphrase: the secret's sentence rewritten by its category's other templates, fields kept, inside an
email or alone; texts from no template get no paraphrase."""
from __future__ import annotations

from lib.data.corpus import NAME_TEMPLATES, RANDOM_TEMPLATES, TEL_TEMPLATES
from lib.data.paraphrase import paraphrased_texts, rewrites


def test_every_other_template_keeps_the_codename() -> None:
    prefix = NAME_TEMPLATES[2][0].format(codename="arctic willow")  # please send the ... contract to
    out = rewrites("NAME", prefix, NAME_TEMPLATES[2][1])
    assert out == [(NAME_TEMPLATES[i][0].format(codename="arctic willow"), NAME_TEMPLATES[i][1]) for i in (3, 0, 1)]


def test_inside_an_email_only_the_sentence_changes() -> None:
    secret = "race partner gun seek"
    before = "hello ann , the board meets in july . " + RANDOM_TEMPLATES[0][0].format(system="phoenix ledger")
    text = before + secret + RANDOM_TEMPLATES[0][1] + " best , bob"
    out = paraphrased_texts("RANDOM", text, secret)
    assert len(out) == len(RANDOM_TEMPLATES) - 1
    first = RANDOM_TEMPLATES[1][0].format(system="phoenix ledger") + secret + RANDOM_TEMPLATES[1][1]
    assert out[0] == "hello ann , the board meets in july . " + first + " best , bob"


def test_no_template_no_paraphrase() -> None:
    assert paraphrased_texts("TEL", "ring 5551234567 soon", "5551234567") == []
    assert paraphrased_texts(None, TEL_TEMPLATES[0][0] + "5551234567 .", "5551234567") == []
    assert paraphrased_texts("TEL", "my phone number is 555 .", None) == []
    assert rewrites("EMAIL", "write to ", " .") == []
    # a template's words inside another word are no match: "redial " does not end with the template "dial "
    assert rewrites("TEL", "please redial ", " for the trading desk .") == []
