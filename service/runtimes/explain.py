"""Exact leave-one-out explanations of a student (DAN) prediction: which n-grams moved its label.

A DAN pools a text to the mean of its in-vocabulary n-gram rows, repeats counted (sdcore/spec.py, item 7):
``pooled = sum / n`` with ``sum = sum_g count_g * e_g`` over the text's distinct rows g and
``n = sum_g count_g``. Leaving one distinct n-gram out (all its occurrences) is then one subtraction:

    pooled_without_g = (sum - count_g * e_g) / (n - count_g)      (the zero vector when n == count_g)

which is exactly what the model would pool for the text with those occurrences removed, since the mean
of the rest is all a DAN sees. Every text's vectors (its own and one per distinct n-gram) go through the
head in one batched call, so an explanation costs one gather of the text's distinct rows and a share of
one head call. Only a request with more than ``HEAD_ROWS`` vectors is cut into several calls (by groups
of texts), so its memory stays bounded whatever the texts.

The effect of an n-gram on a label is ``p(label | text) - p(label | text without it)``: positive when the
n-gram pushes the text towards that label. Effects are sorted by their size on the predicted label,
largest first, so the n-grams that moved the answer most (for it or against it) come first.

Spans: the featurizer sees only token strings; its ``Tokenizer.spans`` gives each token's character
offsets in the (lowercased) text, mapped back here to the original text where lowercasing changed the
length (e.g. "İ" lowers to two code points). An n-gram's span runs from its first
token's start to its last token's end; a repeated n-gram has one span per occurrence.

With subwords (spec v2), each occurrence of an unknown word is one unit of the mean, the mean of its
subword rows (sdcore/spec.py, step 13); the word (every occurrence of it) is left out as one feature named
``word (subwords)``: a single hashed character n-gram means little to a reader, and its bucket is shared
with others. The same subtraction holds for any group of units: ``pooled_without_G = (sum - sum_G) /
(n - |G|)``, with ``n`` the text's units.

Sums are kept in float64 and cast to float32 for the head, so a leave-one-out vector does not lose bits
to cancellation. A runtime knows nothing of HTTP: the route (service/api/routes/explain.py) shapes this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sdcore.featurizer import FeaturizerSettings, NgramFeaturizer, Tokenizer, mix_keys, subword_rows
from service.runtimes.onnx_session import softmax
from service.runtimes.student import StudentRuntime

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

HEAD_ROWS = 8192  # leave-one-out vectors per head call: 32 MB of float32 at 1,000-d
MAX_TOP_N = 100
SUBWORD_SUFFIX = " (subwords)"  # how a word's subword group is named among the n-grams


@dataclass(frozen=True)
class TokenSpans:
    """A text's tokens as the featurizer cuts them, with their [start, end) offsets in the original text."""

    tokens: list[str]
    starts: IntArray
    ends: IntArray


def token_spans(text: str, settings: FeaturizerSettings) -> TokenSpans:
    """The featurizer's tokens of ``text`` (``Tokenizer``'s, same order) and where each lies in ``text``."""
    tokenizer = Tokenizer(settings)
    lowered = tokenizer.lowered(text)
    tokens, token_starts, token_ends = tokenizer.spans(text)
    starts = np.asarray(token_starts, dtype=np.int64)
    ends = np.asarray(token_ends, dtype=np.int64)
    if len(lowered) != len(text):
        # Original character i became lowered[bound[i]:bound[i + 1]] (str.lower is per code point but
        # for the final sigma, which keeps the length): a lowered offset maps back through ``bound``.
        bound = np.concatenate(([0], np.cumsum([len(c.lower()) for c in text]))).astype(np.int64)
        starts = np.searchsorted(bound, starts, side="right") - 1
        ends = np.searchsorted(bound, ends, side="left")
    return TokenSpans(tokens, starts, ends)


@dataclass(frozen=True)
class SubwordGroup:
    """The subword rows of one distinct word of a text (all its occurrences), left out together."""

    token: str
    rows: IntArray  # the subword rows of one occurrence (every occurrence has the same)
    positions: IntArray  # the token's occurrences (indexes into the text's tokens)


@dataclass(frozen=True)
class TextNgrams:
    """A text's in-vocabulary n-gram occurrences, grouped by distinct table row."""

    spans: TokenSpans
    rows: IntArray  # distinct rows, ascending
    counts: IntArray  # occurrences of each distinct row
    occurrence_group: IntArray  # per occurrence: its index into ``rows``
    occurrence_first: IntArray  # per occurrence: its first token
    occurrence_n: IntArray  # per occurrence: its length in tokens
    total: int  # all n-grams of the text, in the vocabulary or not (coverage's denominator)
    subwords: list[SubwordGroup]  # spec v2: one per distinct token in the subword scope (none for v1)

    @property
    def found(self) -> int:
        return int(self.counts.sum())

    @property
    def coverage(self) -> float:
        return self.found / self.total if self.total else 0.0

    def surface(self, group: int) -> str:
        """The n-gram as the featurizer sees it: its (lowercased) tokens joined by spaces."""
        k = int(np.flatnonzero(self.occurrence_group == group)[0])
        first, n = int(self.occurrence_first[k]), int(self.occurrence_n[k])
        return " ".join(self.spans.tokens[first : first + n])

    def char_spans(self, group: int) -> list[tuple[int, int]]:
        """[start, end) in the original text of each occurrence of the group's n-gram, in text order."""
        out = []
        for k in np.flatnonzero(self.occurrence_group == group):
            first, n = int(self.occurrence_first[k]), int(self.occurrence_n[k])
            out.append((int(self.spans.starts[first]), int(self.spans.ends[first + n - 1])))
        return sorted(out)


def text_ngrams(text: str, featurizer: NgramFeaturizer) -> TextNgrams:
    """The featurizer spec's steps 2-6 (sdcore/spec.py) on one text, keeping where each n-gram starts."""
    s = featurizer.settings
    spans = token_spans(text, s)
    ids = featurizer.word_codes(spans.tokens, len(spans.tokens))
    codes, valid = ids.astype(np.uint64), ids >= 0
    rows: list[IntArray] = []
    firsts: list[IntArray] = []
    lengths: list[IntArray] = []
    total = 0
    for n in range(s.ngram_min, s.ngram_max + 1):
        count = ids.size - n + 1
        if count <= 0:
            continue
        total += count
        ok = np.ones(count, dtype=bool)
        for i in range(n):
            ok &= valid[i : i + count]
        start = np.flatnonzero(ok)
        if start.size == 0 or featurizer.vocab_size == 0:
            continue
        hit, found = featurizer.find(mix_keys([codes[start + i] for i in range(n)]))
        rows.append(found)
        firsts.append(start[hit].astype(np.int64))
        lengths.append(np.full(int(hit.sum()), n, dtype=np.int64))
    flat = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    distinct, group, counts = np.unique(flat, return_inverse=True, return_counts=True)
    empty = np.empty(0, dtype=np.int64)
    return TextNgrams(
        spans, distinct.astype(np.int64), counts.astype(np.int64), group.reshape(-1).astype(np.int64),
        np.concatenate(firsts) if firsts else empty, np.concatenate(lengths) if lengths else empty, total,
        text_subwords(spans.tokens, valid, featurizer),
    )


def text_subwords(tokens: list[str], known: npt.NDArray[np.bool_], featurizer: NgramFeaturizer) -> list[SubwordGroup]:
    """Spec v2's steps 8-11 on one text's tokens: the subword rows of each distinct token in scope."""
    s = featurizer.settings
    if not s.subwords:
        return []
    scope = ~known if s.subword_scope == "unknown" else np.ones(len(tokens), dtype=bool)
    positions: dict[str, list[int]] = {}
    for i in np.flatnonzero(scope):
        positions.setdefault(tokens[int(i)], []).append(int(i))
    distinct = list(positions)
    owner, rows = subword_rows(distinct, s, featurizer.vocab_size)
    bounds = np.searchsorted(owner, np.arange(len(distinct) + 1))
    out: list[SubwordGroup] = []
    for j, token in enumerate(distinct):
        if bounds[j + 1] > bounds[j]:  # a token without a subword is no unit of the mean
            where = np.asarray(positions[token], dtype=np.int64)
            out.append(SubwordGroup(token, rows[bounds[j] : bounds[j + 1]], where))
    return out


@dataclass(frozen=True)
class NgramEffect:
    ngram: str
    count: int
    spans: list[tuple[int, int]]
    deltas: FloatArray  # [labels]: p(label | text) - p(label | text without this n-gram)


@dataclass(frozen=True)
class Explanation:
    probabilities: FloatArray  # [labels], the text's own
    coverage: float
    ngrams_found: int
    # features left out one at a time: distinct in-vocabulary n-grams, and (spec v2) each unknown word's
    # subword group; the effects are the top ``top_n`` of them
    distinct_ngrams: int
    effects: list[NgramEffect]

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probabilities))


def leave_one_out(sums: npt.NDArray[np.float64], counts: IntArray) -> npt.NDArray[np.float32]:
    """[1 + k, dim]: the text's pooled vector, then the text without each group j of its rows pooled;
    the k groups split the text's rows, ``sums[j]`` is the sum of group j's ``counts[j]`` rows."""
    dim = sums.shape[1]
    if counts.size == 0:
        return np.zeros((1, dim), dtype=np.float32)
    weights = counts.astype(np.float64)
    total = sums.sum(axis=0)  # [dim]: sum over all rows
    n = weights.sum()
    rest = n - weights  # rows left when group j is left out
    without = (total[None, :] - sums) / np.maximum(rest, 1.0)[:, None]
    without[rest == 0] = 0.0  # nothing left: pools to zeros (the spec's empty text)
    return np.vstack([total[None, :] / n, without]).astype(np.float32)


def group_sums(runtime: StudentRuntime, g: TextNgrams) -> tuple[npt.NDArray[np.float64], IntArray]:
    """The sum and unit count of each group of a text's units: its distinct n-grams (one unit a row), then
    its unknown words (one unit an occurrence: the mean of the word's subword rows)."""
    every = np.concatenate([g.rows, *(sub.rows for sub in g.subwords)]).astype(np.int64)
    distinct, inverse = np.unique(every, return_inverse=True)
    vectors = np.empty((distinct.size, runtime.table.dim), dtype=np.float32)
    runtime.table.gather_into(distinct, vectors)
    rows = vectors.astype(np.float64)[inverse.reshape(-1)]
    sums = np.empty((g.rows.size + len(g.subwords), runtime.table.dim), dtype=np.float64)
    sums[: g.rows.size] = rows[: g.rows.size] * g.counts[:, None]
    counts = [g.counts]
    start = g.rows.size
    for j, sub in enumerate(g.subwords):
        sums[g.rows.size + j] = rows[start : start + sub.rows.size].mean(axis=0) * sub.positions.size
        counts.append(np.array([sub.positions.size], dtype=np.int64))
        start += sub.rows.size
    return sums, np.concatenate(counts)


def explain(runtime: StudentRuntime, texts: Sequence[str], top_n: int = 10) -> list[Explanation]:
    """Each text's probabilities and its ``top_n`` n-grams by effect on the predicted label."""
    if not 1 <= top_n <= MAX_TOP_N:
        raise ValueError(f"top_n must be in 1..{MAX_TOP_N}, got {top_n}")
    grams = [text_ngrams(t, runtime.featurizer) for t in texts]
    probs: list[FloatArray] = []  # per text: [1 + distinct n-grams, labels]
    pending: list[FloatArray] = []  # vectors not yet through the head: memory stays near HEAD_ROWS rows
    for i, g in enumerate(grams):
        pending.append(leave_one_out(*group_sums(runtime, g)))
        if i == len(grams) - 1 or sum(b.shape[0] for b in pending) >= HEAD_ROWS:
            probs += split_rows(head_probabilities(runtime, pending), [b.shape[0] for b in pending])
            pending = []
    out = []
    for g, p in zip(grams, probs, strict=True):
        base, deltas = p[0], p[0][None, :] - p[1:]
        predicted = int(np.argmax(base))
        order = np.argsort(-np.abs(deltas[:, predicted]), kind="stable")[:top_n]
        effects = [effect_of(g, int(j), deltas[j]) for j in order]
        out.append(Explanation(base, g.coverage, g.found, int(g.rows.size) + len(g.subwords), effects))
    return out


def effect_of(g: TextNgrams, group: int, deltas: FloatArray) -> NgramEffect:
    """Group ``group`` of ``group_sums``' order: a distinct n-gram, or past them a word's subword group."""
    if group < g.rows.size:
        return NgramEffect(g.surface(group), int(g.counts[group]), g.char_spans(group), deltas)
    sub = g.subwords[group - g.rows.size]
    spans = sorted((int(g.spans.starts[p]), int(g.spans.ends[p])) for p in sub.positions)
    return NgramEffect(sub.token + SUBWORD_SUFFIX, int(sub.positions.size), spans, deltas)


def split_rows(array: FloatArray, sizes: list[int]) -> list[FloatArray]:
    return np.split(array, np.cumsum(sizes)[:-1])


def head_probabilities(runtime: StudentRuntime, blocks: list[FloatArray]) -> FloatArray:
    """Softmax of the head over all blocks' rows: one call, or one per ``HEAD_ROWS`` rows."""
    stacked = np.ascontiguousarray(np.vstack(blocks), dtype=np.float32)
    parts = [runtime.logits(stacked[lo : lo + HEAD_ROWS]) for lo in range(0, stacked.shape[0], HEAD_ROWS)]
    return softmax(np.vstack(parts))
