"""The attacks on a benchmark run (lib.bench.probe, lib.bench.suites.attackable, LUME's attack_pairs): D_f's answers
are the secret spans, the forget split's held-out rows the never-trained texts, and the extraction attack looks for
an answer's first tokens (a long answer cannot fit in a sample)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from flows.check import check_params

from lib.attacks.audit import AttacksConfig, audit
from lib.attacks.causal import CausalProbe
from lib.bench import lume, tofu
from lib.bench.probe import pairs_probe
from lib.bench.suites import AttackPairs, BenchConfig, attack_pairs, attackable
from lib.core.params import ParamsError
from lib.families.causal import CausalFamily
from tests.tiny_models import memorise_ffn, tiny_llama, tiny_word_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CFG = AttacksConfig(n_samples=8, max_new=4, relearn_steps=(5,), relearn_batch_size=4)
WORDS = ["the", "thing", "item", "place", "time", "work", "day", "note", "part", "way"]
NAMES = ["John", "Mary", "James", "Anna", "David", "Paul", "Peter", "Susan", "Mark", "Linda"]


def sc_row(i: int, member: bool) -> dict[str, str]:
    """A LUME sentence-completion row of in-vocabulary words: a prompt of 4 words, an answer of 6 tokens."""
    g = torch.Generator().manual_seed(i + (0 if member else 100))
    pick = lambda pool, n: " ".join(pool[j] for j in torch.randint(0, len(pool), (n,), generator=g))  # noqa: E731
    return {"id": f"doc{i}sc1", "input": pick(WORDS, 4), "output": f"{pick(NAMES, 2)} {pick(list('0123456789'), 4)}",
            "task": "Task2"}


def test_lume_attack_pairs_are_the_forget_members_and_its_held_out_rows() -> None:
    members = (sc_row(0, True), {"id": "doc1qa1", "input": "who", "output": "Mary", "task": "Task2"})
    sets = {"forget": lume.Subset(members, (sc_row(2, False),)), "retain": lume.Subset((sc_row(3, True),), ())}
    pairs = attack_pairs("lume", sets)
    assert pairs.forget == ((members[0]["input"], members[0]["output"]), ("Question: who\nAnswer:", "Mary"))
    assert pairs.held_out == ((sc_row(2, False)["input"], sc_row(2, False)["output"]),)
    assert pairs.paraphrased is None  # the retain rows are never read


def test_every_suite_offers_its_pairs_and_an_unknown_run_is_refused_by_name() -> None:
    assert attackable("lume") is lume and attackable("tofu_forget01") is tofu
    with pytest.raises(ValueError, match="benchmark run 'nope' unknown"):
        attackable("nope")


@pytest.fixture(scope="module")
def audited() -> dict[str, Any]:
    """The audit of a tiny LLaMA that memorised 6 answers and of a random one that never saw them; the probe."""
    tokenizer = tiny_word_tokenizer()
    rows = [sc_row(i, True) for i in range(6)]
    pairs = AttackPairs(forget=tuple((r["input"], r["output"]) for r in rows),
                        held_out=tuple((r["input"], r["output"]) for r in (sc_row(i, False) for i in range(4))))
    probe = pairs_probe(tokenizer, pairs, CausalFamily(tokenizer, 8), 32, CFG)
    torch.manual_seed(0)
    memorised = memorise_ffn(tiny_llama(seed=0), probe.forget, nll=0.1, steps=600)
    reference = tiny_llama(seed=0).eval()
    return {"probe": probe, "memorised": memorised,
            "results": {name: audit(m, probe.membership_stats(reference), memorised, probe, CFG)
                        for name, m in (("memorised", memorised), ("reference", reference))}}


def test_the_answers_are_the_spans_and_the_never_trained_pairs_the_holdout(audited: dict[str, Any]) -> None:
    probe: CausalProbe = audited["probe"]
    assert len(probe.forget) == 6 and len(probe.holdout) == 4 and probe.paraphrased is None
    for ids, (start, end) in zip(probe.forget.ids, probe.forget.spans):
        assert (start, end) == (4, 11) and ids[-1] == 2  # 4 prompt words; 6 answer tokens and the eos
    assert probe.secret_tokens == CFG.max_new and probe.texts[0][0].count(" ") == 9
    # the lens reads the answers' first max_new tokens, a row each: 6 x 4, not 6 x 7
    assert len(probe.lens_rows().gold_ids) == 6 * CFG.max_new and probe.capped().spans == ((4, 8),) * 6
    assert [row[4:8] for row in probe.forget.ids] == [row[4:8] for row in probe.capped().ids]


def test_sampling_finds_the_memorised_answers_first_tokens_and_nothing_on_the_reference(
        audited: dict[str, Any]) -> None:
    memorised, reference = audited["results"]["memorised"], audited["results"]["reference"]
    assert memorised["direct"]["span_ma"] == 1.0 and reference["direct"]["span_ma"] < 0.3
    assert memorised["sampling"]["leak@8"] >= 0.5 and reference["sampling"]["leak@8"] == 0.0
    assert memorised["mia"]["auc_loss"] >= 0.9 and "paraphrase" not in memorised
    assert set(memorised["relearn"]) == {"0", "5"} and set(memorised["relearn_unrelated"]) == {"0", "5"}


def test_without_the_cap_a_sample_cannot_hold_an_answer(audited: dict[str, Any]) -> None:
    """The 7-token spans never fit in 4 sampled tokens: the uncapped extraction finds nothing on the same model."""
    probe: CausalProbe = audited["probe"]
    uncapped = CausalProbe(probe.forget, probe.holdout, probe.texts, None, probe.family, CFG)
    assert set(uncapped.extraction(audited["memorised"]).values()) == {0.0}


def test_a_pairs_probe_needs_both_sides() -> None:
    tokenizer = tiny_word_tokenizer()
    with pytest.raises(ValueError, match="0 held-out pairs"):
        pairs_probe(tokenizer, AttackPairs(forget=(("the", "John"),), held_out=()), CausalFamily(tokenizer), 16, CFG)


def test_params_name_a_run_the_attacks_cannot_read_or_the_track_does_not_run(tmp_path: Path) -> None:
    """benchmarks.attack_runs: a TOFU run whose fine-tuning takes every author (no non-member left) is refused by
    flows.check and by the stage; a run benchmarks.runs does not list by flows.check; both in one line; a TOFU
    run with authors left out is accepted."""
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    base["benchmarks"]["runs"] = {"tofu_forget01": {"suite": "tofu"}}
    base["benchmarks"]["suites"] = ["tofu"]
    path = tmp_path / "params.yaml"
    for runs, authors, message in ((["tofu_forget01"], None, "benchmarks.attack_runs contains 'tofu_forget01': no "
                                    "never-trained authors are left"), (["lume"], 2, "benchmarks: attack_runs contains "
                                    "'lume', which runs does not list; allowed: tofu_forget01")):
        base["benchmarks"]["attack_runs"], base["benchmarks"]["tofu"]["n_retain_authors"] = runs, authors
        path.write_text(yaml.safe_dump(base))
        with pytest.raises(ParamsError) as err:
            check_params(str(path))
        assert "\n" not in str(err.value) and str(err.value).startswith(message), str(err.value)
    base["benchmarks"]["attack_runs"] = ["tofu_forget01"]
    path.write_text(yaml.safe_dump(base))
    assert check_params(str(path)).get("benchmarks", BenchConfig).attack_runs == ("tofu_forget01",)


TOFU_RUN = {"runs": {"tofu_forget01": {"suite": "tofu"}, "lume": {"suite": "lume"}}, "suites": ["tofu", "lume"]}


@pytest.mark.parametrize("args, bench, needle", [
    (["tofu_forget01", "ga"], {}, "benchmark run 'tofu_forget01' is not in benchmarks.runs; allowed: lume"),
    (["tofu_forget01", "ga"], {**TOFU_RUN, "tofu": {"n_retain_authors": None}},
     "benchmark run 'tofu_forget01' cannot be attacked: no never-trained authors"),
    (["lume", "ga"], {}, "data/bench/lume/finetuned/model.safetensors not found; allowed: run the benchmark track "
                         "first"),
])
def test_the_attack_stage_stops_in_one_line(tmp_path: Path, args: list[str], bench: dict, needle: str) -> None:
    """A run the project does not run, a TOFU run with no author left out, or a run not prepared: exit code 2, one
    `error:` line, nothing written."""
    import os
    import subprocess
    import sys

    from lib.core.presets import merge

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merge(base, {"benchmarks": bench})))
    env = {**os.environ, "UNLEARN_PARAMS": str(tmp_path / "params.yaml"), "PREFECT_HOME": str(tmp_path / "pf"),
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "flows.bench_attack", *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert needle in lines[0] and "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "metrics").exists()
