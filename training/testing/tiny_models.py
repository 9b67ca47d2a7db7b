"""Random-weight Hugging Face classifier checkpoints built offline, for tests and speed benchmarks.

No hub download works on these machines (DESIGN.md section 5), yet the teacher code must handle any
local checkpoint, BERT- and RoBERTa-family alike. So tests build a tiny checkpoint of each family here:
a tokenizer built from a few hundred texts with the ``tokenizers`` library (an uncased WordPiece
vocabulary of frequent words, or a trained byte-level BPE) and a randomly initialised
``*ForSequenceClassification`` model, saved with ``save_pretrained`` so that ``AutoTokenizer`` and
``AutoModelForSequenceClassification`` load it like a real one. ``make_large_shaped_checkpoint`` makes
a RoBERTa-Large-shaped model (355M parameters) whose speed, not accuracy, stands in for the paper's
teacher.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForSequenceClassification,
)

Family = Literal["bert", "roberta"]

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# RoBERTa's own order, so pad = 1 and the position ids start at pad + 1 as in the real checkpoints.
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def _wordpiece_vocab(texts: Sequence[str], vocab_size: int) -> dict[str, int]:
    """Specials, every character (alone and as a ``##`` continuation), then the most frequent words.

    Deterministic on purpose: the ``tokenizers`` WordPiece (and non-byte-level BPE) trainers break
    ties in hash order, so the same texts gave a different vocabulary on each run (measured with
    tokenizers 0.23), hence a different tiny model and flaky tests. With every character in the
    vocabulary, any word still tokenizes: WordPiece splits a rare word into pieces.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in counts for c in word})
    tokens = [*BERT_SPECIALS, *chars, *(f"##{c}" for c in chars)]
    frequent = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1]
    tokens += frequent[: max(0, vocab_size - len(tokens))]
    return {token: i for i, token in enumerate(tokens)}


def _bert_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(_wordpiece_vocab(texts, vocab_size), unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls is None or sep is None:
        raise ValueError("the trained tokenizer lacks [CLS] or [SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def _roberta_tokenizer(texts: Sequence[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=ROBERTA_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    if bos is None or eos is None:
        raise ValueError("the trained tokenizer lacks <s> or </s>")
    tok.post_processor = processors.RobertaProcessing(("</s>", eos), ("<s>", bos), add_prefix_space=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        cls_token="<s>",
        sep_token="</s>",
        mask_token="<mask>",
        # RoBERTa has no segment embeddings worth feeding (type_vocab_size 1).
        model_input_names=["input_ids", "attention_mask"],
    )


def _model(
    family: Family,
    tokenizer: PreTrainedTokenizerFast,
    num_labels: int,
    hidden: int,
    layers: int,
    heads: int,
    intermediate: int,
    max_positions: int,
    embedding_rows: int,
    initializer_range: float,
) -> PreTrainedModel:
    common = {
        "vocab_size": max(len(tokenizer), embedding_rows),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "num_labels": num_labels,
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_range": initializer_range,
        "id2label": {i: f"LABEL_{i}" for i in range(num_labels)},
        "label2id": {f"LABEL_{i}": i for i in range(num_labels)},
    }
    if family == "bert":
        return BertForSequenceClassification(
            BertConfig(**common, max_position_embeddings=max_positions, type_vocab_size=2)
        )
    # RoBERTa numbers positions from pad_token_id + 1, so it needs that many extra rows (514 for 512).
    config = RobertaConfig(
        **common,
        max_position_embeddings=max_positions + tokenizer.pad_token_id + 1,
        type_vocab_size=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return RobertaForSequenceClassification(config)


def make_tiny_checkpoint(
    family: Family,
    out_dir: Path,
    texts: Sequence[str],
    num_labels: int = 2,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 2000,
    max_positions: int = 256,
    seed: int = 0,
    intermediate: int | None = None,
    embedding_rows: int = 0,
    initializer_range: float = 0.02,
) -> Path:
    """Train a tokenizer on ``texts``, build a random classifier and save both into ``out_dir``.

    ``max_positions`` is the longest input in tokens (special tokens included) the model accepts;
    ``intermediate`` defaults to 4 x ``hidden`` as in BERT and RoBERTa; ``embedding_rows`` pads the
    embedding table beyond the trained vocabulary (unused rows), to reach a real model's size.
    """
    if family not in ("bert", "roberta"):
        raise ValueError(f"family must be 'bert' or 'roberta', got {family!r}")
    if not texts:
        raise ValueError("texts is empty: the tokenizer needs texts to train on")
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    torch.manual_seed(seed)
    tokenizer = (_bert_tokenizer if family == "bert" else _roberta_tokenizer)(texts, vocab_size)
    tokenizer.model_max_length = max_positions
    model = _model(
        family,
        tokenizer,
        num_labels,
        hidden,
        layers,
        heads,
        intermediate or 4 * hidden,
        max_positions,
        embedding_rows,
        initializer_range,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def make_large_shaped_checkpoint(
    family: Family,
    out_dir: Path,
    texts: Sequence[str],
    num_labels: int = 2,
    vocab_size: int = 50_265,
    max_positions: int = 512,
    seed: int = 0,
) -> Path:
    """A RoBERTa-Large-shaped random model (24 layers, 1024 hidden, 16 heads, 4096 FFN): speed only.

    The embedding table gets RoBERTa's 50,265 rows even when the tokenizer trained on ``texts`` holds
    fewer tokens, so the model has RoBERTa-Large's 355M parameters.
    """
    return make_tiny_checkpoint(
        family,
        out_dir,
        texts,
        num_labels=num_labels,
        hidden=1024,
        layers=24,
        heads=16,
        vocab_size=vocab_size,
        max_positions=max_positions,
        seed=seed,
        intermediate=4096,
        embedding_rows=vocab_size,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m training.testing.tiny_models OUT``: a tiny teacher base on the MR training sentences, offline.

    For runs that must finish in minutes on a busy CPU (``make compose-test`` trains
    configs/compose-tiny.toml with it inside the train image). Does nothing if OUT already holds one.
    """
    import argparse

    from training.data.task_data import load_mr

    parser = argparse.ArgumentParser(prog="python -m training.testing.tiny_models", description=main.__doc__)
    parser.add_argument("out", type=Path, help="the checkpoint folder to write")
    parser.add_argument("--family", choices=["bert", "roberta"], default="bert")
    parser.add_argument("--data-cache", type=Path, default=Path(".cache/data"), help="where the MR files are")
    parser.add_argument("--max-positions", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=2000)
    args = parser.parse_args(argv)
    if (args.out / "config.json").is_file():
        print(f"{args.out}: a checkpoint is there already")
        return 0
    task = load_mr(args.data_cache)
    make_tiny_checkpoint(args.family, args.out, task.train.texts, num_labels=len(task.label_names),
                         max_positions=args.max_positions, vocab_size=args.vocab_size)
    print(f"{args.out}: tiny {args.family} checkpoint ({len(task.label_names)} labels)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
