"""DVC stage `causal_neighbours`: NeuMuter's neighbours, the forget samples rewritten by an MLM that never saw them."""
from __future__ import annotations

from prefect import flow

from flows import CAUSAL_CORPUS, CAUSAL_FINETUNED, CAUSAL_MEMORIZED, NEIGHBOURS, main
from lib.core.io import read_jsonl, write_json, write_jsonl
from lib.core.models import load_tokenizer
from lib.core.params import Count, load_params
from lib.data.neighbours import NeighbourConfig, neighbours
from lib.data.records import forget_candidates
from lib.families.causal import encode_all
from tasks import save_model_task, use_compute
from tasks.finetune import neighbour_mlm


def config(params_file: str) -> tuple[NeighbourConfig, int]:
    """The stage's params: `causal.neighbours` and `causal.data.max_len`."""
    params = load_params(params_file)
    return params.get("causal.neighbours", NeighbourConfig), params.get("causal.data.max_len", Count)


@flow(name="causal-neighbours")
def neighbours_flow(params_file: str = "params.yaml") -> dict:
    """Fine-tune the MLM on the training text minus D_f, then rewrite each forget sample K times."""
    use_compute(params_file)
    nb, max_len = config(params_file)
    forget = forget_candidates(CAUSAL_CORPUS / "candidates.jsonl", CAUSAL_MEMORIZED / "forget.json")
    drop = {c.id for c in forget}
    texts = [r["text"] for r in read_jsonl(CAUSAL_CORPUS / "train.jsonl") if r["id"] not in drop]
    source = "training text minus D_f" if texts else "public-domain text"  # dumps bring no training text
    texts = texts or [r["text"] for r in read_jsonl(CAUSAL_CORPUS / "public.jsonl")]
    mlm, mlm_tok, steps = neighbour_mlm(nb, texts, max_len=128)
    tokenizer = load_tokenizer(str(CAUSAL_FINETUNED))  # only the causal model's tokenizer: its windows
    windows = [tokenizer.decode(ids) for ids in encode_all(tokenizer, [(c.text, c.secret) for c in forget],
                                                           max_len).ids]
    rewritten = neighbours(mlm, mlm_tok, windows, nb.k, nb.ratio, nb.seed)
    write_jsonl(NEIGHBOURS / "neighbours.jsonl",
                ({"forget_id": forget[i // nb.k].id, "text": t} for i, t in enumerate(rewritten)))
    save_model_task(mlm, mlm_tok, NEIGHBOURS / "mlm")
    stats = {"mlm_trained_on": source, "mlm_texts": len(texts),
             "mlm_steps": steps, "neighbours": len(rewritten)}
    write_json(NEIGHBOURS / "stats.json", stats)
    return stats


if __name__ == "__main__":
    main(neighbours_flow, check=config)
