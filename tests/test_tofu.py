"""TOFU: loaders (shared files + fixtures), the author layout, subsets, metrics by hand, evaluate_tofu plumbing."""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import ks_2samp

from lib.bench import tofu
from lib.bench.tofu import (EvalSets, answer_probability, build_sets, choice_probability, evaluate_tofu, forget_quality,
                            load_sets, load_split, model_utility, rouge_score, tofu_prompt, truth_ratio_score,
                            truth_ratios, with_forget_quality)

SHARED = Path(__file__).parents[2] / "shared" / "datasets"
FIXTURES = Path(__file__).parent / "fixtures"
SIZES = {"forget01": 40, "forget05": 200, "forget10": 400, "retain99": 3960, "retain95": 3800, "retain90": 3600,
         "retain_perturbed": 400, "real_authors_perturbed": 100, "world_facts_perturbed": 117}
FIXTURE_SIZES = {"forget01": 2, "forget05": 3, "forget10": 4, "retain99": 4, "retain95": 3, "retain90": 2,
                 "retain_perturbed": 2, "real_authors_perturbed": 3, "world_facts_perturbed": 3}
needs_shared = pytest.mark.skipif(not (SHARED / "tofu" / "forget01.json").is_file(),
                                  reason=f"shared TOFU files absent at {SHARED / 'tofu'}")


@pytest.fixture(scope="module")
def shared() -> dict[str, list[dict]]:
    """Every TOFU split, loaded once from the shared files."""
    return {name: load_split(name, SHARED) for name in tofu.SPLITS}


@pytest.fixture(scope="module")
def fixture_splits() -> dict[str, list[dict]]:
    """Every TOFU split from tests/fixtures/tofu (hub JSON-lines layout, made-up text)."""
    return {name: load_split(name, FIXTURES) for name in tofu.SPLITS}


def _questions(rows: list[dict]) -> list[str]:
    return [r["question"] for r in rows]


def _answers(rows: list[dict]) -> list[str]:
    return [r["answer"] for r in rows]


# ---------------------------------------------------------------- loaders

@needs_shared
def test_shared_splits_load_with_sizes_and_fields(shared):
    for name, rows in shared.items():
        assert len(rows) == SIZES[name], name
        assert set(tofu.FIELDS[name]) <= set(rows[0]), name
    assert {len(r["perturbed_answer"]) for r in shared["forget10"]} == {5}
    assert {len(r["perturbed_answer"]) for r in shared["world_facts_perturbed"]} == {3}


def test_fixture_splits_load(fixture_splits):
    assert {n: len(rows) for n, rows in fixture_splits.items()} == FIXTURE_SIZES
    for name, rows in fixture_splits.items():
        assert all(set(tofu.FIELDS[name]) <= set(r) for r in rows), name
    assert isinstance(fixture_splits["forget01"][0]["perturbed_answer"], list)


def test_bad_name_missing_file_and_missing_field(tmp_path):
    with pytest.raises(ValueError, match=r"'forget02'.*forget01, forget05"):
        load_split("forget02", FIXTURES)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "tofu" / "forget01.json"))):
        load_split("forget01", tmp_path)
    (tmp_path / "tofu").mkdir()
    row = json.loads((FIXTURES / "tofu" / "forget01.json").read_text().splitlines()[0])
    del row["paraphrased_answer"]
    (tmp_path / "tofu" / "forget01.json").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=r"'forget01' row 0: field 'paraphrased_answer'"):
        load_split("forget01", tmp_path)
    row["paraphrased_answer"], row["perturbed_answer"] = "x", []
    (tmp_path / "tofu" / "forget01.json").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="perturbed_answer"):
        load_split("forget01", tmp_path)


def test_without_data_root_calls_the_hub(monkeypatch):
    import datasets

    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"question": "q?", "answer": "a."}]

    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert load_split("retain90", None, hub="me/TOFU") == [{"question": "q?", "answer": "a."}]
    assert calls == [(("me/TOFU", "retain90"), {"split": "train"})]


# ---------------------------------------------------------------- author layout

@needs_shared
def test_author_layout_of_the_released_files(shared):
    full = shared["retain90"] + shared["forget10"]
    assert len(full) == 200 * tofu.QA_PER_AUTHOR
    q = _questions(full)
    assert _questions(shared["forget05"]) == q[-10 * 20:] and _questions(shared["forget01"]) == q[-2 * 20:]
    assert _questions(shared["retain_perturbed"]) == q[:400]  # authors 0-19
    for name, n_authors in (("retain95", 190), ("retain99", 198)):
        rows = shared[name]
        assert _answers(rows) == _answers(full)[: n_authors * 20], name
        # the one known wording difference (author 183); everything else is identical
        assert [i for i, x in enumerate(_questions(rows)) if x != q[i]] == [3660], name


def _block_names_ok(rows: list[dict], offset: int) -> int:
    """Count 20-row blocks (starting at offset) whose most frequent capitalised word stays inside the block."""
    stop = {"What", "Who", "How", "The", "Which", "Can", "Does", "Did", "Has", "Have", "Are", "Is", "Was", "Were",
            "In", "His", "Her", "Their", "This", "Yes", "Could", "Award", "Book", "Books", "When", "Where", "Why"}
    words = [set(re.findall(r"[A-Z][\w'-]+", r["question"] + " " + r["answer"])) - stop for r in rows[offset:]]
    ok = 0
    for b in range(len(words) // 20 - 1):
        name, count = Counter(w for t in words[b * 20:(b + 1) * 20] for w in t).most_common(1)[0]
        neighbours = sum(name in t for t in words[max(0, b - 1) * 20: b * 20] + words[(b + 1) * 20:(b + 2) * 20])
        ok += count >= 5 and neighbours <= 2
    return ok


@needs_shared
def test_blocks_of_20_rows_are_authors(shared):
    full = shared["retain90"] + shared["forget10"]
    assert _block_names_ok(full, 0) == 199  # every block but the last (its next neighbour is missing) ...
    assert _block_names_ok(full, 10) < 100  # ... while blocks shifted by half an author fail the check


# ---------------------------------------------------------------- subsets

@needs_shared
def test_subsets_on_shared_files(shared):
    sets = build_sets(shared, ["forget01", "forget05"], n_retain_authors=5, n_retain_eval=30, n_real_authors=10)
    assert len(sets.finetune) == 5 * 20 + 200 and set(sets.finetune[0]) == {"question", "answer"}
    assert _questions(sets.finetune) == _questions(shared["retain90"][:100] + shared["forget05"])
    assert _questions(sets.reference["forget01"]) == _questions(sets.finetune)[:260]
    assert not set(_questions(sets.reference["forget01"])) & set(_questions(shared["forget01"]))
    assert _questions(sets.reference["forget05"]) == _questions(shared["retain90"][:100])
    assert sets.forget["forget01"] == shared["forget01"]
    assert len(sets.retain_eval) == 30 and set(_questions(sets.retain_eval)) <= set(_questions(sets.finetune))
    assert "paraphrased_answer" in sets.retain_eval[0]
    assert len(sets.real_authors) == 10 and len(sets.world_facts) == 117 and sets.n_retain_authors == 5
    assert build_sets(shared, ["forget01"], n_retain_authors=5).retain_eval == shared["retain_perturbed"][:100]
    split = sets.for_split("forget05")
    assert split.forget == shared["forget05"] and split.retain == sets.retain_eval
    with pytest.raises(ValueError, match="forget10"):
        sets.for_split("forget10")


@needs_shared
def test_the_attacks_read_never_seen_authors_as_non_members_and_tofus_paraphrased_questions(shared):
    """Held out: as many QA as the forget split, of the retain authors after the fine-tuned ones (never trained
    on); the paraphrase attack asks D_f's paraphrased questions for the same answers; fine-tuning every author
    leaves no non-member, refused in one line by the params check and by the pairs."""
    from lib.bench.suites import attack_pairs

    sets = build_sets(shared, ["forget01", "forget05"], n_retain_authors=5)
    assert _questions(sets.holdout) == _questions(shared["retain90"][100:300])  # the largest split's 200 QA
    assert not set(_questions(sets.holdout)) & set(_questions(sets.finetune))
    split = sets.for_split("forget01")
    assert _questions(split.holdout) == _questions(shared["retain90"][100:140])
    pairs = attack_pairs("tofu_forget01", split)
    assert pairs.forget[0] == (tofu.tofu_prompt(shared["forget01"][0]["question"]), shared["forget01"][0]["answer"])
    assert len(pairs.forget) == len(pairs.held_out) == len(pairs.paraphrased) == 40
    assert pairs.paraphrased[0] == (tofu.tofu_prompt(shared["forget01"][0]["paraphrased_question"]),
                                    shared["forget01"][0]["answer"])
    everyone = build_sets(shared, ["forget01"]).for_split("forget01")
    assert everyone.holdout == []
    with pytest.raises(ValueError, match="no never-trained authors.*allowed: n_retain_authors below 180"):
        attack_pairs("tofu_forget01", everyone)
    with pytest.raises(ValueError, match="n_retain_authors: null"):
        tofu.check_attackable(tofu.Config())
    tofu.check_attackable(tofu.Config(n_retain_authors=179))


@needs_shared
def test_reference_for_forget01_is_retain99_with_all_authors(shared):
    sets = build_sets(shared, ["forget01", "forget10"])
    assert _answers(sets.finetune) == _answers(shared["retain90"] + shared["forget10"])
    assert _answers(sets.reference["forget01"]) == _answers(shared["retain99"])
    assert _answers(sets.reference["forget10"]) == _answers(shared["retain90"])


def test_subsets_on_fixtures_and_load_sets(fixture_splits):
    sets = build_sets(fixture_splits, ["forget05", "forget01"], n_retain_authors=1, qa_per_author=1)
    assert _questions(sets.finetune) == _questions(fixture_splits["retain90"][:1] + fixture_splits["forget05"])
    assert _questions(sets.reference["forget01"]) == _questions(sets.finetune)[:2]
    assert sets.retain_eval == fixture_splits["retain_perturbed"][:1]
    loaded = load_sets(FIXTURES, ["forget01"], n_real_authors=2, n_world_facts=1, qa_per_author=1)
    assert len(loaded.real_authors) == 2 and len(loaded.world_facts) == 1 and loaded.forget_splits == ("forget01",)


@pytest.mark.parametrize("kwargs, match", [
    ({"forget_splits": ["forget02"]}, "forget02"),
    ({"forget_splits": []}, "forget_splits"),
    ({"forget_splits": "forget01"}, "forget_splits"),
    ({"forget_splits": ["forget01", "forget01"]}, "forget_splits"),
    ({"n_retain_authors": 0}, "n_retain_authors=0"),
    ({"n_retain_authors": True}, "n_retain_authors=True"),
    ({"n_retain_authors": 3}, r"n_retain_authors=3.*1\.\.2"),
    ({"n_retain_eval": -1}, "n_retain_eval=-1"),
    ({"qa_per_author": 3}, r"retain90 has 2 rows.*qa_per_author=3"),
])
def test_subset_validation(fixture_splits, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_sets(fixture_splits, **{"forget_splits": ["forget01"], "qa_per_author": 1, **kwargs})


def test_subsets_reject_a_forget_split_that_is_not_a_suffix(fixture_splits):
    broken = {**fixture_splits, "forget01": fixture_splits["forget10"][:2]}
    with pytest.raises(ValueError, match="not the last authors"):
        build_sets(broken, ["forget01", "forget10"], qa_per_author=1)


# ---------------------------------------------------------------- metrics by hand

def test_prompt_and_probabilities():
    assert tofu_prompt("Who?") == "Question: Who?\nAnswer:"
    assert answer_probability([math.log(0.5), math.log(0.25)]) == pytest.approx(0.375)
    # 0.4 / (0.4 + 0.1 + 0.1) and 0.2 / (0.2 + 0.6)
    value = choice_probability([math.log(0.4), math.log(0.2)], [[math.log(0.1)] * 2, [math.log(0.6)]])
    assert value == pytest.approx((0.4 / 0.6 + 0.2 / 0.8) / 2)
    assert choice_probability([-1000.0], [[-1000.0, -1000.0]]) == pytest.approx(1 / 3)  # no underflow NaN
    with pytest.raises(ValueError, match="perturbed rows"):
        choice_probability([0.0, 0.0], [[0.0]])
    with pytest.raises(ValueError, match="no values"):
        answer_probability([])


def test_truth_ratios_and_reported_values():
    ratios = truth_ratios([math.log(0.5), math.log(0.1)], [[math.log(0.2), math.log(0.4)], [math.log(0.3)]])
    assert ratios == pytest.approx([0.3 / 0.5, 3.0])
    geometric = truth_ratios([math.log(0.5)], [[math.log(0.2), math.log(0.4)]], geometric=True)
    assert geometric == pytest.approx([math.sqrt(0.08) / 0.5])
    assert truth_ratios([-900.0], [[-901.0, -899.0]]) == pytest.approx([(math.exp(-1) + math.exp(1)) / 2])
    assert truth_ratio_score([0.5, 2.0, 1.0], forget=True) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert truth_ratio_score([0.5, 2.0], forget=False) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="> 0"):
        truth_ratio_score([0.0], forget=True)


def test_rouge_score():
    assert rouge_score(["the cat sat", "nothing"], ["the cat sat down", "dog"]) == pytest.approx((3 / 4 + 0) / 2)
    with pytest.raises(ValueError, match="equal counts"):
        rouge_score(["a"], [])


def test_forget_quality():
    sample = [0.2, 0.5, 0.9, 1.3, 2.0]
    assert forget_quality(sample, list(sample)) == pytest.approx(1.0)
    low, high = [0.1 + 0.01 * i for i in range(20)], [5.0 + 0.1 * i for i in range(20)]
    assert forget_quality(low, high) < 1e-9  # exact two-sided p = 2 / C(40, 20)
    # TOFU's code tests 1/R; the KS p-value is unchanged by that monotone map
    a, b = [0.3, 0.8, 1.1, 0.45, 2.2, 0.9], [0.5, 1.6, 0.7, 3.0, 1.2]
    assert forget_quality(a, b) == pytest.approx(ks_2samp([1 / x for x in a], [1 / x for x in b]).pvalue)
    assert 0.0 < forget_quality(a, b) < 1.0
    with pytest.raises(ValueError, match="empty"):
        forget_quality([], b)


def test_model_utility():
    assert model_utility([0.5] * 9) == pytest.approx(0.5)
    assert model_utility([1.0] * 8 + [0.5]) == pytest.approx(9 / (8 + 2))
    assert model_utility([0.9] * 8 + [0.0]) == 0.0
    with pytest.raises(ValueError, match="9 values"):
        model_utility([0.5] * 8)
    with pytest.raises(ValueError, match="9 values"):
        model_utility([0.5] * 8 + [-0.1])


# ---------------------------------------------------------------- evaluate_tofu

@pytest.fixture(scope="module")
def eval_sets(fixture_splits) -> EvalSets:
    sets = build_sets(fixture_splits, ["forget01"], qa_per_author=1)
    return sets.for_split("forget01")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from lib.core.models import load_model
    from tests.tiny_models import save_tiny_causal_checkpoint

    return load_model(str(save_tiny_causal_checkpoint(tmp_path_factory.mktemp("tiny_tofu"))), "causal")


def test_evaluate_tofu_on_a_tiny_model(tiny, eval_sets):
    model, tokenizer = tiny
    result = evaluate_tofu(model, tokenizer, eval_sets, max_len=48, max_new=6, batch_size=3)
    assert set(result) == {"forget", "retain", "real_authors", "world_facts", "model_utility", "forget_truth_ratios"}
    for name, n in (("forget", 2), ("retain", 2), ("real_authors", 3), ("world_facts", 3)):
        assert set(result[name]) == {"prob", "rouge", "truth_ratio", "n"} and result[name]["n"] == n
        assert all(0.0 <= result[name][k] <= 1.0 for k in ("prob", "rouge", "truth_ratio")), name
    assert 0.0 < result["forget"]["prob"] < 0.5  # a random model spreads mass over ~30k tokens
    assert len(result["forget_truth_ratios"]) == 2 and all(r > 0 for r in result["forget_truth_ratios"])
    assert 0.0 <= result["model_utility"] <= 1.0
    text = json.dumps(result)  # JSON-serialisable, and no question/answer text leaks into it
    assert not any(w in text for w in ("Okonkwo", "Lindqvist", "Venn", "Tessmoor", "Pruitt"))
    again = evaluate_tofu(model, tokenizer, eval_sets, max_len=48, max_new=6, batch_size=2)
    # batch size does not matter: other padding takes other kernels, so equal up to float rounding, not bit for bit
    assert set(again) == set(result)
    for name in ("forget", "retain", "real_authors", "world_facts"):
        assert again[name]["n"] == result[name]["n"] and again[name]["rouge"] == result[name]["rouge"], name
        for key in ("prob", "truth_ratio"):
            assert again[name][key] == pytest.approx(result[name][key], rel=1e-4, abs=1e-9), (name, key)
    assert again["forget_truth_ratios"] == pytest.approx(result["forget_truth_ratios"], rel=1e-4)
    assert again["model_utility"] == pytest.approx(result["model_utility"], rel=1e-4, abs=1e-9)
    assert with_forget_quality(result, again["forget_truth_ratios"])["forget_quality"] == pytest.approx(1.0)


def test_evaluate_tofu_formulas_through_stubbed_scores(monkeypatch, eval_sets):
    import lib.bench.qa as qa

    def fake_logprob(model, tokenizer, prompts, answers, max_len, batch_size=16):
        import torch

        # depends on the answer only: -0.1 per character, so every value is computable by hand
        return torch.tensor([-0.1 * len(a) for a in answers], dtype=torch.float64)

    monkeypatch.setattr(qa, "answer_logprob", fake_logprob)
    monkeypatch.setattr(qa, "greedy_answers", lambda m, t, prompts, max_new, max_len, batch_size=16:
                        ["is known for" for _ in prompts])
    result = evaluate_tofu(None, None, eval_sets, max_len=48, max_new=6, batch_size=2)
    lp = lambda text: -0.1 * len(text)  # noqa: E731
    forget = eval_sets.forget
    assert result["forget"]["prob"] == pytest.approx(sum(math.exp(lp(r["answer"])) for r in forget) / 2)
    ratios = [sum(math.exp(lp(p)) for p in r["perturbed_answer"]) / len(r["perturbed_answer"])
              / math.exp(lp(r["paraphrased_answer"])) for r in forget]
    assert result["forget_truth_ratios"] == pytest.approx(ratios)
    assert result["forget"]["truth_ratio"] == pytest.approx(sum(min(r, 1 / r) for r in ratios) / 2)
    world = eval_sets.world_facts
    shares = [math.exp(lp(r["answer"])) / (math.exp(lp(r["answer"])) + sum(math.exp(lp(p))
              for p in r["perturbed_answer"])) for r in world]
    assert result["world_facts"]["prob"] == pytest.approx(sum(shares) / 3)
    w_ratios = [sum(math.exp(lp(p)) for p in r["perturbed_answer"]) / 3 / math.exp(lp(r["answer"])) for r in world]
    assert result["world_facts"]["truth_ratio"] == pytest.approx(sum(max(0, 1 - r) for r in w_ratios) / 3)
    retain_rouge = sum(3 / len(re.findall(r"\w+", r["answer"].lower())) for r in eval_sets.retain) / 2
    assert result["retain"]["rouge"] == pytest.approx(retain_rouge)
    values = [result[n][k] for n in ("retain", "real_authors", "world_facts") for k in ("prob", "rouge", "truth_ratio")]
    assert result["model_utility"] == pytest.approx(model_utility(values))
    with pytest.raises(ValueError, match="'retain' is empty"):
        evaluate_tofu(None, None, EvalSets(forget, [], world, world), 48, 6, 2)


# ---------------------------------------------------------------- the suite interface (lib.bench.suites)

@needs_shared
def test_build_files_on_shared_files(shared):
    """What the bench_data stage writes for TOFU: one fine-tuning set, per run its forget / retain / reference / eval."""
    cfg = tofu.Config(n_retain_authors=2, n_retain_eval=5, n_real_authors=3, n_world_facts=4, max_len=64, max_new=8)
    runs = ["tofu_forget01", "tofu_forget05"]
    files, stats = tofu.build_files(cfg, SHARED, runs)
    assert set(files) == {"tofu/train.jsonl"} | {f"{r}/{f}" for r in runs
                                                 for f in ("forget.jsonl", "retain.jsonl", "reference.jsonl",
                                                           "eval.json")}
    train = files["tofu/train.jsonl"]
    expected = shared["retain90"][:40] + shared["forget05"]
    assert [r["id"] for r in train] == [f"tofu-{i}" for i in range(len(expected))]
    assert [(r["prompt"], r["answer"]) for r in train] == [(tofu_prompt(r["question"]), r["answer"]) for r in expected]
    for run, split in (("tofu_forget01", "forget01"), ("tofu_forget05", "forget05")):
        forget = files[f"{run}/forget.jsonl"]
        assert [r["answer"] for r in forget] == _answers(shared[split]) and forget[0]["id"] == f"{run}-forget-0"
        assert [r["prompt"] for r in files[f"{run}/retain.jsonl"]] == [tofu_prompt(q) for q in
                                                                        _questions(shared["retain90"][:40])]
        reference = files[f"{run}/reference.jsonl"]
        assert [r["prompt"] for r in reference] == [r["prompt"] for r in train][: len(train) - len(shared[split])]
        assert not {r["prompt"] for r in reference} & {r["prompt"] for r in forget}
        sets = tofu.sets_from_json(json.loads(json.dumps(files[f"{run}/eval.json"])))  # as written and read back
        assert isinstance(sets, EvalSets) and sets.forget == shared[split]
        assert (len(sets.retain), len(sets.real_authors), len(sets.world_facts)) == (5, 3, 4)
        assert "perturbed_answer" in sets.retain[0]
    assert stats == {"tofu_train": 240, "tofu_retain_authors": 2, "tofu_forget01_forget": 40,
                     "tofu_forget05_forget": 200}
    with pytest.raises(ValueError, match="tofu_forget02"):
        tofu.build_files(cfg, SHARED, ["tofu_forget02"])


def test_config_checks_token_budgets():
    assert tofu.Config().finetune.epochs == 5
    for max_len, max_new in ((64, 64), (64, 0), (8, 16)):
        with pytest.raises(ValueError, match=f"max_new={max_new}, max_len={max_len}"):
            tofu.Config(max_len=max_len, max_new=max_new)


def test_suite_evaluate_passes_the_config(monkeypatch, eval_sets):
    seen = {}

    def fake(model, tokenizer, sets, max_len, max_new, batch_size):
        seen.update(model=model, tokenizer=tokenizer, sets=sets, max_len=max_len, max_new=max_new, batch=batch_size)
        return {"ok": True}

    monkeypatch.setattr(tofu, "evaluate_tofu", fake)
    cfg = tofu.Config(max_len=48, max_new=6)
    assert tofu.evaluate("m", "t", eval_sets, cfg, batch_size=3) == {"ok": True}
    assert seen == {"model": "m", "tokenizer": "t", "sets": eval_sets, "max_len": 48, "max_new": 6, "batch": 3}


def test_suite_interface_on_a_tiny_model(tiny, eval_sets):
    """evaluate -> with_reference -> flat / sizes, as bench_prepare and bench_unlearn chain them."""
    model, tokenizer = tiny
    sets = tofu.sets_from_json(json.loads(json.dumps({k: getattr(eval_sets, k) for k in tofu.SET_NAMES})))
    scores = tofu.evaluate(model, tokenizer, sets, tofu.Config(max_len=48, max_new=6), batch_size=3)
    assert json.dumps(scores) == json.dumps(evaluate_tofu(model, tokenizer, eval_sets, 48, 6, 3))
    reference = tofu.with_reference(scores, scores)  # the reference model against itself
    assert reference["forget_quality"] == pytest.approx(1.0) and "forget_quality" not in scores
    flat = tofu.flat(reference)
    assert flat["forget_quality"] == pytest.approx(1.0) and flat["n_forget"] == 2.0
    assert all(type(v) is float for v in flat.values())
    assert tofu.sizes(scores) == {"forget": 2, "retain": 2, "real_authors": 3, "world_facts": 3}
