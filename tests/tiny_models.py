"""Tiny random-config models shared by the test-suite (no downloads, seconds to build)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from transformers import (BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM,
                          LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast)

from lib.families.causal import Sequences, accuracy, pad, token_nll

VOCAB = 101
HIDDEN = 24
D_FF = 37
N_LAYERS = 2
MAX_POS = 64


def tiny_word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny models' 101 ids: 0 [PAD], 1 [BOS], 2 [EOS], 3-12 the digits, then
    lower-case neutral words, capitalised names, and w<i> for the rest (so any id decodes to a word)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = ["[PAD]", "[BOS]", "[EOS]", *"0123456789", "the", "thing", "item", "place", "time", "work", "day", "note",
             "part", "way", "John", "Mary", "James", "Anna", "David", "Paul", "Peter", "Susan", "Mark", "Linda", ","]
    words += [f"w{i}" for i in range(len(words), VOCAB)]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[PAD]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]")


def _finish(model: PreTrainedModel) -> PreTrainedModel:
    """Put a freshly built model in eval mode (no dropout) and return it."""
    return model.eval()


def tiny_bert_mlm(seed: int = 0) -> BertForMaskedLM:
    """Tiny BERT masked LM: 2 layers, hidden 24, intermediate 37, 3 heads, vocab 101."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=N_LAYERS,
        num_attention_heads=3, intermediate_size=D_FF, max_position_embeddings=MAX_POS,
        type_vocab_size=2, pad_token_id=0,
    )
    return _finish(BertForMaskedLM(config))


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """Tiny GPT-2: 2 layers, n_embd 24, n_inner 37, 3 heads, vocab 101."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_embd=HIDDEN, n_layer=N_LAYERS, n_head=3, n_inner=D_FF,
        n_positions=MAX_POS, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return _finish(GPT2LMHeadModel(config))


def tiny_gpt_neo(seed: int = 0) -> GPTNeoForCausalLM:
    """Tiny GPT-Neo: one global + one local (window 4) layer, hidden 24, d_ff 37."""
    torch.manual_seed(seed)
    config = GPTNeoConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=N_LAYERS, num_heads=3,
        intermediate_size=D_FF, max_position_embeddings=MAX_POS, window_size=4,
        attention_types=[[["global", "local"], 1]], bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return _finish(GPTNeoForCausalLM(config))


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """Tiny LLaMA (gated MLP): 2 layers, hidden 24, intermediate 37, 3 heads (1 KV head)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=N_LAYERS,
        num_attention_heads=3, num_key_value_heads=1, intermediate_size=D_FF,
        max_position_embeddings=MAX_POS, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return _finish(LlamaForCausalLM(config))


ALL_TINY: dict[str, Callable[..., PreTrainedModel]] = {
    "bert": tiny_bert_mlm,
    "gpt2": tiny_gpt2,
    "gpt_neo": tiny_gpt_neo,
    "llama": tiny_llama,
}


def save_tiny_bert_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny random BERT MLM with the embedded MiniLM tokenizer, saved as a checkpoint folder."""

    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from lib.core.models import resolve_model_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("embedded:minilm"))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, num_hidden_layers=N_LAYERS,
                        num_attention_heads=3, intermediate_size=D_FF, max_position_embeddings=160)
    out = Path(out_dir)
    BertForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_tiny_causal_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny random LLaMA (gated MLP, d_ff 37) with the embedded MiniLM fast tokenizer, saved as a folder.

    Any fast tokenizer works for a causal LM here; MiniLM's ships offline and gives character offsets.
    """

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lib.core.models import resolve_model_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source("embedded:minilm"))
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, num_hidden_layers=N_LAYERS,
                         num_attention_heads=3, num_key_value_heads=1, intermediate_size=D_FF,
                         max_position_embeddings=160, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    out = Path(out_dir)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# the final norm of each tiny causal architecture (its gain is raised before FFN-only memorisation)
FINAL_NORM = {"gpt2": "transformer.ln_f.weight", "gpt_neo": "transformer.ln_f.weight", "llama": "model.norm.weight"}


def memorise_ffn(model: PreTrainedModel, seqs: Sequences, pad_id: int = 0, steps: int = 300, nll: float = 0.5) -> PreTrainedModel:
    """Adam (lr 1e-2) on the MLP weights only until every token of `seqs` is the argmax and the mean NLL < `nll`.

    Only the MLPs learn, so the memory lives in FFN neurons, where neuron methods can find it (in a 2-layer
    model trained end to end, attention and embeddings alone keep MA above 0.5 with every FFN neuron zeroed).
    The final norm's gain is raised 30x first: with the tiny init the logits span ~0.1 and the FFNs alone
    could not make the memorised tokens confident (NLL stalls near log V).
    """
    with torch.no_grad():
        dict(model.named_parameters())[FINAL_NORM[model.config.model_type]].mul_(30.0)
    optimizer = torch.optim.Adam([p for n, p in model.named_parameters() if ".mlp." in n], lr=1e-2)
    ids, mask = pad(seqs.ids, pad_id)
    for step in range(steps):
        optimizer.zero_grad()
        token, valid = token_nll(model, ids, mask)
        loss = token.sum() / valid.sum()
        loss.backward()
        optimizer.step()
        if step % 5 == 4 and float(loss.detach()) < nll and bool((accuracy(model, seqs, pad_id) == 1).all()):
            model.zero_grad(set_to_none=True)
            return model
    raise AssertionError(f"not memorised after {steps} steps: MA {accuracy(model, seqs, pad_id).tolist()}")


def random_neighbours(rows: list[list[int]], k: int, seed: int) -> list[list[int]]:
    """K rewrites per row, grouped by row: each inner token replaced (ids >= 3) with probability 1/2."""
    gen, out = torch.Generator().manual_seed(seed), []
    for row in rows:
        for _ in range(k):
            new = list(row)
            for i in range(1, len(new) - 1):
                if torch.rand((), generator=gen) < 0.5:
                    new[i] = int(torch.randint(3, VOCAB, (), generator=gen))
            out.append(new)
    return out


def memorise_all(model: torch.nn.Module, rows: list[list[int]], pad_id: int = 0, steps: int = 150,
                 lr: float = 0.02) -> torch.nn.Module:
    """Train every parameter of a tiny causal LM on `rows` until it predicts every token (seeded; eval mode after)."""
    torch.manual_seed(0)
    model.train()
    ids, mask = pad(rows, pad_id)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        nll, valid = token_nll(model, ids, mask)
        opt.zero_grad()
        (nll.sum() / valid.sum()).backward()
        opt.step()
    return model.eval()
