"""D_r of the causal track: the first `retain_samples` background (secret-free) training emails."""
from __future__ import annotations

from pathlib import Path

from tasks.causal_inputs import retain_sequences
from lib.core.io import write_jsonl
from lib.core.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def max_len() -> int:
    """The causal track's token window (params.yaml causal.data.max_len)."""
    return load_params(ROOT / "params.yaml").get("causal.data.max_len", int)


class WordTokenizer:
    """One id per whitespace word (enough for encode_all's offsets)."""

    def __call__(self, text: str, **_kwargs) -> dict:
        words = text.split()
        offsets, start = [], 0
        for word in words:
            start = text.index(word, start)
            offsets.append((start, start + len(word)))
            start += len(word)
        return {"input_ids": [len(w) for w in words], "offset_mapping": offsets}


def _corpus(tmp_path: Path, train: list[dict], public: list[dict]) -> Path:
    """Write {train,public}.jsonl into a corpus folder under tmp_path; the folder."""
    write_jsonl(tmp_path / "corpus/train.jsonl", train)
    write_jsonl(tmp_path / "corpus/public.jsonl", public)
    return tmp_path / "corpus"


def test_retain_is_the_first_background_emails(tmp_path: Path) -> None:
    train = [{"id": "a", "text": "private one two three", "copies": 8, "secret": "two"},
             {"id": "b", "text": "bg alpha beta", "copies": 1, "secret": None},
             {"id": "c", "text": "bg gamma delta epsilon", "copies": 1, "secret": None},
             {"id": "d", "text": "bg zeta eta", "copies": 1, "secret": None}]
    corpus = _corpus(tmp_path, train, [{"id": "p", "text": "public text here"}])
    seqs = retain_sequences(WordTokenizer(), corpus, max_len(), 2)
    assert [list(ids) for ids in seqs.ids] == [[2, 5, 4], [2, 5, 5, 7]]  # b and c; never the private email
    assert all(span is None for span in seqs.spans)


def test_retain_falls_back_to_public_text_for_dumps(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, [], [{"id": "p", "text": "public text here"}, {"id": "q", "text": "more public words"}])
    assert len(retain_sequences(WordTokenizer(), corpus, max_len(), 5)) == 2
