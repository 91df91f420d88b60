"""LUME benchmark: loaders (shared files, hub layout), member / non-member subsets, metrics, evaluate_lume plumbing."""
from __future__ import annotations

import collections
import json
import math
from pathlib import Path
from typing import Any

import pytest

from lib.bench import lume

SHARED = Path(__file__).parents[2] / "shared" / "datasets"
FIXTURES = Path(__file__).parent / "fixtures" / "lume"  # the hub's layout: data/<name>_<fold>-00000-of-00001.parquet
needs_shared = pytest.mark.skipif(not (SHARED / "lume" / "forget.jsonl").is_file(),
                                  reason=f"shared LUME files absent under {SHARED / 'lume'}")
pytestmark = pytest.mark.usefixtures("one_thread")


def make_rows(docs_per_task: int = 10, qa_per_doc: tuple[int, ...] = (1, 3, 1)) -> list[dict[str, str]]:
    """Synthetic LUME rows: per document one sc row and some qa rows."""
    rows = []
    for task, n_qa in zip(lume.TASKS, qa_per_doc):
        for d in range(docs_per_task):
            doc = f"{task}-doc{d}"
            rows.append({"id": f"{doc}sc1", "input": f"prefix {doc}", "output": f"continuation {d}", "task": task})
            rows += [{"id": f"{doc}qa{k}", "input": f"q {k} {doc}?", "output": f"a{k}", "task": task}
                     for k in range(n_qa)]
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Rows as JSON lines (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ---------------------------------------------------------------- loaders

@needs_shared
@pytest.mark.parametrize("name", lume.NAMES)
def test_load_split_shared_files(name: str) -> None:
    rows = lume.load_split(name, SHARED)
    assert len(rows) > 2000
    assert all(tuple(r) == lume.FIELDS for r in rows)
    assert {r["task"] for r in rows} == set(lume.TASKS)
    assert {lume.stratum(r) for r in rows} == {(t, k) for t in lume.TASKS for k in lume.KINDS}
    assert len({r["id"] for r in rows}) == len(rows)


def test_load_split_hub_layout_joins_folds() -> None:
    both = lume.load_split("forget", hub=str(FIXTURES))
    train = lume.load_split("forget", hub=str(FIXTURES), folds=("train",))
    retain = lume.load_split("retain", hub=str(FIXTURES), folds=("validation",))
    assert (len(both), len(train), len(retain)) == (32, 24, 8)
    assert [r["id"] for r in train] == [r["id"] for r in both[:24]]
    assert all(tuple(r) == lume.FIELDS for r in both)
    assert both[0]["id"].startswith('"') and lume.kind(both[0]["id"]) == "sc"  # quoted uuid ids, as in LUME
    assert not {r["id"] for r in both} & {r["id"] for r in retain}


def test_load_split_local_json(tmp_path: Path) -> None:
    rows = make_rows(2)
    write_jsonl(tmp_path / "lume" / "retain.jsonl", rows)
    assert lume.load_split("retain", tmp_path) == rows


@pytest.mark.parametrize("bad, match", [
    ({"task": "Task9"}, "Task9"), ({"id": "doc7xx1"}, "doc7xx1"), ({"id": "qa1"}, "qa1"),
    ({"output": ""}, "output"), ({"input": 3}, "input")])
def test_load_split_rejects_bad_rows(tmp_path: Path, bad: dict, match: str) -> None:
    rows = make_rows(1)
    rows[1] = {**rows[1], **bad}
    write_jsonl(tmp_path / "lume" / "forget.jsonl", rows)
    with pytest.raises(ValueError, match=match):
        lume.load_split("forget", tmp_path)


def test_load_split_rejects_names_missing_files_fields_duplicates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allowed: \\['forget', 'retain'\\]"):
        lume.load_split("holdout", tmp_path)
    with pytest.raises(ValueError, match="not found"):
        lume.load_split("forget", tmp_path)
    with pytest.raises(ValueError, match="empty"):
        lume.load_split("forget", hub=str(FIXTURES), folds=())
    rows = make_rows(1)
    with pytest.raises(ValueError, match="duplicate id"):
        lume.validate(rows + rows[:1])
    with pytest.raises(ValueError, match="lacks fields \\['task'\\]"):
        lume.validate([{k: v for k, v in rows[0].items() if k != "task"}])


def test_kind_and_document() -> None:
    assert (lume.kind('"8f24-c5"sc1'), lume.document('"8f24-c5"sc1')) == ("sc", '"8f24-c5"')
    assert (lume.kind("36307590qa12"), lume.document("36307590qa12")) == ("qa", "36307590")
    with pytest.raises(ValueError, match="36307590"):
        lume.kind("36307590")


# ---------------------------------------------------------------- select

def test_select_stratifies_and_holds_out_per_stratum() -> None:
    rows = make_rows(10)  # strata sizes: sc 10/10/10, qa 10/30/10 (80 rows)
    sub = lume.select(rows, 40, 0.2, seed=0)
    chosen = collections.Counter(lume.stratum(r) for r in sub.rows)
    held = collections.Counter(lume.stratum(r) for r in sub.non_members)
    assert len(sub.rows) == 40 and chosen[("Task2", "qa")] == 15 and chosen[("Task1", "sc")] == 5
    assert all(held[k] == max(1, round(0.2 * m)) for k, m in chosen.items())
    small = lume.select(rows, 12, 0.01, seed=0)  # one-percent share still leaves a non-member where m >= 2
    per = collections.Counter(lume.stratum(r) for r in small.rows)
    assert all(collections.Counter(lume.stratum(r) for r in small.non_members)[k] == (1 if m >= 2 else 0)
               for k, m in per.items())


def test_select_disjoint_deterministic_and_document_coherent() -> None:
    rows = make_rows(10, qa_per_doc=(1, 1, 1))
    a, b, c = (lume.select(rows, None, 0.3, seed=s) for s in (7, 7, 8))
    ids_m, ids_n = {r["id"] for r in a.members}, {r["id"] for r in a.non_members}
    assert a == b and a != c
    assert not ids_m & ids_n and ids_m | ids_n == {r["id"] for r in rows}
    assert len(a.non_members) == 18  # 0.3 of each of the six 10-row strata
    docs = lambda part: {lume.document(r["id"]) for r in part}  # noqa: E731
    assert not docs(a.members) & docs(a.non_members)  # a document's sc and qa rows stay on one side
    none = lume.select(rows, 10, 0.0, seed=1)
    assert len(none.members) == 10 and none.non_members == ()


def test_select_rejects_bad_arguments() -> None:
    rows = make_rows(2)
    for n in (0, len(rows) + 1, 2.5, True):
        with pytest.raises(ValueError, match="n="):
            lume.select(rows, n, 0.1, 0)
    for f in (-0.1, 1.0):
        with pytest.raises(ValueError, match="holdout_fraction"):
            lume.select(rows, None, f, 0)


# ---------------------------------------------------------------- pure metrics

SC = {"id": "d1sc1", "input": "Once upon a", "output": "time the cat sat on the mat", "task": "Task1"}
QA = {"id": "d1qa0", "input": "Where did the cat sit?", "output": "the mat", "task": "Task1"}


def test_prompt_and_row_scores() -> None:
    assert lume.prompt(SC) == "Once upon a"
    assert lume.prompt(QA) == "Question: Where did the cat sit?\nAnswer:"
    assert lume.row_score(SC, "time the cat sat on the mat and slept") == 1.0
    assert lume.row_score(SC, "time the dog sat") == pytest.approx(3 / 7)  # LCS "time the sat" over 7 reference words
    assert lume.row_score(QA, "On The Mat.") == 1.0 and lume.row_score(QA, "the rug") == 0.0


def test_summarize_per_task_with_nulls() -> None:
    rows = [SC, QA, {**SC, "id": "d2sc1", "task": "Task2"}, {**SC, "id": "d3sc1", "task": "Task2"}]
    out = lume.summarize(rows, [0.5, 1.0, 0.25, 0.75])
    assert out["Task1"] == {"regurgitation": {"mean": 0.5, "n": 1}, "knowledge": {"mean": 1.0, "n": 1}}
    assert out["Task2"]["knowledge"] == {"mean": None, "n": 0}
    assert out["Task3"]["regurgitation"] == {"mean": None, "n": 0}
    assert out["overall"]["regurgitation"] == {"mean": 0.5, "n": 3}
    with pytest.raises(ValueError, match="one score per row"):
        lume.summarize(rows, [1.0])


def test_mia_auc_cases_and_official_score() -> None:
    assert lume.mia_auc([0.1, 0.2], [0.9, 1.5, 2.0]) == 1.0  # members: lower loss
    assert lume.mia_auc([3.0, 2.0], [0.5]) == 0.0
    assert lume.mia_auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert lume.mia_auc([0.1, 1.0], [0.5, 2.0]) == 0.75  # 3 of 4 pairs ordered
    assert [lume.mia_official(a) for a in (0.5, 1.0, 0.0, 0.75)] == [1.0, 0.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="non-members"):
        lume.mia_auc([0.1], [])
    with pytest.raises(ValueError, match="NaN"):
        lume.mia_auc([math.nan], [1.0])


def test_aggregate_matches_simu_table2_row_and_nulls() -> None:
    # SIMU Table 2, LLaMA2-7B Original: forget (0.9885; 0.7984), retain (0.9859; 0.7741), MIA 0.458 -> 0.504
    assert lume.aggregate(0.9885, 0.7984, 0.9859, 0.7741, 0.458) == pytest.approx(0.50302)
    assert lume.aggregate(0.0, 0.0, 1.0, 1.0, 0.0) == 1.0
    assert lume.aggregate(1.0, 1.0, 0.0, 0.0, 1.0) == 0.0
    assert lume.aggregate(0.2, None, 1.0, 1.0, 0.5) is None


def test_official_task_aggregate_is_harmonic_mean() -> None:
    cell = lambda reg, kno: {"regurgitation": {"mean": reg, "n": 1}, "knowledge": {"mean": kno, "n": 1}}  # noqa: E731
    forget = {t: cell(0.5, 0.5) for t in lume.TASKS}
    retain = {t: cell(1.0, 1.0) for t in lume.TASKS}
    assert lume.official_task_aggregate(forget, retain) == pytest.approx(12 / (6 * 2 + 6 * 1))
    assert lume.official_task_aggregate({**forget, "Task3": cell(1.0, 0.0)}, retain) == 0.0
    assert lume.official_task_aggregate({**forget, "Task2": cell(None, 0.5)}, retain) is None


# ---------------------------------------------------------------- evaluate_lume plumbing

@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random LLaMA with the MiniLM word-piece tokenizer."""
    from lib.core.models import load_model
    from tests.tiny_models import save_tiny_causal_checkpoint

    return load_model(str(save_tiny_causal_checkpoint(tmp_path_factory.mktemp("tiny_lume"))), "causal")


@pytest.fixture(scope="module")
def sets() -> dict[str, lume.Subset]:
    """Forget and retain subsets of the hub-layout fixtures (a quarter of each stratum held out)."""
    return {name: lume.select(lume.load_split(name, hub=str(FIXTURES)), None, 0.25, seed=0) for name in lume.NAMES}


def flat(tree: Any, prefix: str = "") -> dict[str, float]:
    """A nested result as {dotted key: number}, so pytest.approx can compare it."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): float(tree)}


def test_evaluate_lume_plumbing(tiny, sets) -> None:
    model, tokenizer = tiny
    result = lume.evaluate_lume(model, tokenizer, sets, max_len=40, max_new=4, batch_size=4)
    again = lume.evaluate_lume(model, tokenizer, sets, max_len=40, max_new=4, batch_size=3)
    assert flat(again) == pytest.approx(flat(result), rel=1e-4, abs=1e-9)  # other padding: equal up to rounding
    members = sets["forget"].members
    for group in ("overall",) + lume.TASKS:
        for k, metric in lume.METRICS.items():
            cell = result["forget"][group][metric]
            expected_n = sum(1 for r in members if lume.kind(r["id"]) == k and group in ("overall", r["task"]))
            assert cell["n"] == expected_n > 0 and 0.0 <= cell["mean"] <= 1.0
    mia = result["mia"]
    assert (mia["n_members"], mia["n_non_members"]) == (len(members), len(sets["forget"].non_members))
    assert 0.0 <= mia["auc"] <= 1.0 and mia["official"] == pytest.approx(1 - 2 * abs(mia["auc"] - 0.5))
    parts = [result[s]["overall"][m]["mean"] for s in lume.NAMES for m in ("regurgitation", "knowledge")]
    assert result["aggregate"] == pytest.approx(lume.aggregate(*parts, mia["auc"]))
    text = json.dumps(result)  # numbers only: no forget (or retain) text leaks into the result
    assert all(r["output"] not in text and r["input"] not in text for s in sets.values() for r in s.rows)


def test_evaluate_lume_hand_computed_through_stubs(tiny, sets, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = tiny
    member_ids = {r["id"] for r in sets["forget"].members}
    monkeypatch.setattr(lume, "generations", lambda m, t, rows, *a: [r["output"] for r in rows])  # perfect recall
    monkeypatch.setattr(lume, "losses", lambda m, t, rows, *a: [0.1 if r["id"] in member_ids else 2.0 for r in rows])
    result = lume.evaluate_lume(model, tokenizer, sets, max_len=40, max_new=4)
    assert result["forget"]["overall"]["knowledge"]["mean"] == 1.0 == result["retain"]["Task2"]["regurgitation"]["mean"]
    assert result["mia"]["auc"] == 1.0 and result["mia"]["official"] == 0.0
    assert result["aggregate"] == pytest.approx((0 + 0 + 1 + 1 + 0) / 5)
    assert result["official_task_aggregate"] == 0.0  # forget terms 1 - 1 = 0 zero the harmonic mean


def test_evaluate_lume_rejects_bad_sets(tiny, sets) -> None:
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="retain"):
        lume.evaluate_lume(model, tokenizer, {"forget": sets["forget"]}, max_len=40, max_new=4)


def test_continuations_cut_at_eos_only(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = tiny
    ids = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    eos = lume.eos_id(tokenizer)
    monkeypatch.setattr(lume, "greedy_continuations", lambda m, heads, lengths, pad, bs, stop=():
                        [ids("hello world") + [eos] + ids("extra") for _ in heads])
    assert lume.continuations(model, tokenizer, ["a", "b"], max_new=8, max_len=20) == ["hello world"] * 2
    with pytest.raises(ValueError, match="max_new"):
        lume.continuations(model, tokenizer, ["a"], max_new=20, max_len=20)


def test_losses_are_negative_answer_logprob(tiny, sets) -> None:
    model, tokenizer = tiny
    rows = list(sets["forget"].members[:3])
    got = lume.losses(model, tokenizer, rows, max_len=40, batch_size=2)
    ref = lume.answer_logprob(model, tokenizer, [lume.prompt(r) for r in rows], [r["output"] for r in rows], 40)
    assert got == pytest.approx((-ref).tolist()) and all(x > 0 for x in got)
    assert lume.losses(model, tokenizer, [], max_len=40, batch_size=2) == []


# ---------------------------------------------------------------- the suite interface (lib.bench.suites)

def test_build_files_and_sets_from_json(tmp_path: Path) -> None:
    """What the bench_data stage writes for LUME: stratified members / non-members, train = both splits' members."""
    forget_rows = make_rows(10)
    retain_rows = [{**r, "id": f"R{r['id']}", "output": f"kept {r['output']}"} for r in make_rows(8)]
    write_jsonl(tmp_path / "lume" / "forget.jsonl", forget_rows)
    write_jsonl(tmp_path / "lume" / "retain.jsonl", retain_rows)
    cfg = lume.Config(n_forget=20, n_retain=16, holdout_fraction=0.2, seed=3, max_len=40, max_new=4)
    files, stats = lume.build_files(cfg, str(tmp_path), ["lume"])
    forget = lume.select(forget_rows, 20, 0.2, 3)
    retain = lume.select(retain_rows, 16, 0.2, 4)  # the retain draw is seeded seed + 1
    assert set(files) == {f"lume/{n}" for n in ("train.jsonl", "forget.jsonl", "retain.jsonl", "reference.jsonl",
                                                "eval.json")}
    pairs = lambda rows: [(lume.prompt(r), r["output"]) for r in rows]  # noqa: E731
    got = lambda name: [(r["prompt"], r["answer"]) for r in files[f"lume/{name}.jsonl"]]  # noqa: E731
    assert got("forget") == pairs(forget.members) and files["lume/forget.jsonl"][0]["id"] == "lume-forget-0"
    assert got("retain") == got("reference") == pairs(retain.members)
    assert got("train") == pairs(forget.members + retain.members)
    assert not set(got("train")) & set(pairs(forget.non_members))  # non-members are never fine-tuned on
    sets = lume.sets_from_json(json.loads(json.dumps(files["lume/eval.json"])))  # as written and read back
    assert sets == {"forget": forget, "retain": retain}
    assert stats == {"lume_forget_members": len(forget.members), "lume_forget_non_members": len(forget.non_members),
                     "lume_retain_members": len(retain.members), "lume_retain_non_members": len(retain.non_members)}
    assert len(forget.rows) == 20 and len(forget.non_members) > 0


def test_config_checks_holdout_and_token_budgets() -> None:
    with pytest.raises(ValueError, match="holdout_fraction"):
        lume.Config(holdout_fraction=0.0)
    with pytest.raises(ValueError, match="max_new=40, max_len=40"):
        lume.Config(max_len=40, max_new=40)


def test_suite_evaluate_with_reference_flat_and_sizes(sets, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    result = {"forget": lume.summarize([], []), "retain": lume.summarize([], []),
              "mia": lume.mia_block([0.1, 0.2], [1.0]), "aggregate": None, "official_task_aggregate": None}

    def fake(model, tokenizer, sets_, max_len, max_new, batch_size):
        seen.update(sets=sets_, max_len=max_len, max_new=max_new, batch=batch_size)
        return result

    monkeypatch.setattr(lume, "evaluate_lume", fake)
    scores = lume.evaluate(None, None, sets, lume.Config(max_len=40, max_new=4), batch_size=2)
    assert scores is result and seen == {"sets": sets, "max_len": 40, "max_new": 4, "batch": 2}
    assert lume.with_reference(scores, {"anything": 1}) == scores  # LUME needs no reference model
    assert lume.flat(scores) == {"n_forget": 2.0, "mia_auc": 1.0, "mia_official": 0.0}  # None means dropped
    assert lume.sizes(scores) == {"forget members (D_f)": 2, "forget non-members": 1, "retain members": 0}
