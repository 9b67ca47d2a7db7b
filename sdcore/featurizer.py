"""Text -> n-gram rows: the one featurizer shared by training and serving.

Training (vocabulary counting, student inputs) and serving import this module, so the ids a student
was trained on are exactly the ids it is served with (DESIGN.md section 2, "One featurizer").

How a batch is featurized, with no Python loop per n-gram:
1. each text is lowercased and split with the token pattern (a C-level regex call per text);
2. every token becomes a word id through one dict lookup (-1 when the word is in no vocabulary n-gram,
   which makes every n-gram containing it out of vocabulary);
3. the n-grams of the whole batch become 64-bit keys with vectorized numpy arithmetic on shifted
   views of the word-id array (windows that cross a text boundary are masked out);
4. keys become table rows by a lookup in the vocabulary's sorted key array: the keys are cut into
   buckets by their top bits (about one key a bucket, since keys are hash-mixed), so a lookup reads a
   bucket's start and a few keys instead of binary-searching the whole array. It returns exactly what
   ``np.searchsorted`` would, several times faster on a 1M-n-gram vocabulary (reports/bench.md).

This numpy path is the reference implementation of the featurizer spec (sdcore/spec.py). The serving hot
path runs the same spec compiled (``NgramFeaturizer.kernel()``, sdcore/kernel.py), which must give the
same rows (tests/unit/test_kernel_parity.py).

With subwords (spec v2, ``FeaturizerSettings.subword_buckets`` > 0), the tokens in scope (the unknown
ones, by default) also give their character n-grams: the tokens' code points, framed by boundary marks,
become one flat array, and the windows of each length are keyed by the same shifted-view arithmetic as
word n-grams (windows that cross a token boundary masked out), then hashed into the extra rows.

The key of an n-gram is a 64-bit mix of its length and its word ids. Distinct vocabulary n-grams are
checked to have distinct keys when a vocabulary is built; an out-of-vocabulary n-gram could in
principle share a key with a vocabulary one, with odds of about |V| / 2**64 (5e-14 for 1M n-grams)
per lookup.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from sdcore.coverage import coverage_of
from sdcore.errors import ProjectError
from sdcore.spec import COMPILED_PATTERNS, FEATURIZER_SPEC, SUBWORD_BEGIN, SUBWORD_END, SUBWORD_SEED, SUBWORD_SPEC

if TYPE_CHECKING:
    from sdcore.kernel import NgramKernel

# scikit-learn CountVectorizer's default token pattern, as the paper uses (DESIGN.md section 1.3).
DEFAULT_TOKEN_PATTERN = r"(?u)\b\w\w+\b"

_MIX_MUL = np.uint64(0x9E3779B97F4A7C15)
_MIX_MUL2 = np.uint64(0xBF58476D1CE4E5B9)
_SHIFT = np.uint64(31)

IntArray = npt.NDArray[np.int64]
KeyArray = npt.NDArray[np.uint64]
FloatArray = npt.NDArray[np.float32]

SubwordScope = Literal["unknown", "all"]
SUBWORD_SCOPES: tuple[SubwordScope, ...] = ("unknown", "all")
MAX_SUBWORD_LENGTH = 16
MAX_SUBWORD_BUCKETS = 1 << 30
_V1_FIELDS = ("lowercase", "token_pattern", "ngram_min", "ngram_max")
_SUBWORD_FIELDS = ("subword_min", "subword_max", "subword_buckets", "subword_scope")


class FeaturizerError(ProjectError, ValueError):
    """Featurizer settings or vocabulary files that cannot be used."""


@dataclass(frozen=True)
class FeaturizerSettings:
    """How text is cut into n-grams; recorded in every manifest."""

    lowercase: bool = True
    token_pattern: str = DEFAULT_TOKEN_PATTERN
    ngram_min: int = 1
    ngram_max: int = 4
    # Spec v2's hashed subword rows (sdcore/spec.py, steps 8-12); 0 buckets = v1, no subwords.
    subword_min: int = 3
    subword_max: int = 5
    subword_buckets: int = 0
    subword_scope: SubwordScope = "unknown"

    def __post_init__(self) -> None:
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise FeaturizerError(
                f"n-gram range must satisfy 1 <= min <= max, got ({self.ngram_min}, {self.ngram_max})"
            )
        if not 0 <= self.subword_buckets <= MAX_SUBWORD_BUCKETS:
            raise FeaturizerError(f"subword_buckets must be in 0..{MAX_SUBWORD_BUCKETS}, got {self.subword_buckets}")
        if self.subword_buckets and not 2 <= self.subword_min <= self.subword_max <= MAX_SUBWORD_LENGTH:
            raise FeaturizerError(f"subword range must satisfy 2 <= min <= max <= {MAX_SUBWORD_LENGTH}, got "
                                  f"({self.subword_min}, {self.subword_max})")
        if self.subword_scope not in SUBWORD_SCOPES:
            raise FeaturizerError(f"subword_scope must be one of {SUBWORD_SCOPES}, got {self.subword_scope!r}")
        if self.subword_buckets and self.token_pattern not in COMPILED_PATTERNS:
            raise FeaturizerError(f"subwords need the default token pattern (or an equivalent form: "
                                  f"{sorted(COMPILED_PATTERNS)}), got {self.token_pattern!r}")
        try:
            compiled = re.compile(self.token_pattern)
        except re.error as exc:
            raise FeaturizerError(f"invalid token pattern {self.token_pattern!r}: {exc}") from exc
        if compiled.groups > 1:  # findall would return tuples, not tokens (scikit-learn refuses it too)
            raise FeaturizerError(f"token pattern {self.token_pattern!r} has more than 1 capturing group")

    @property
    def subwords(self) -> bool:
        return self.subword_buckets > 0

    @property
    def spec(self) -> str:
        """The featurizer spec these settings follow (sdcore/spec.py)."""
        return SUBWORD_SPEC if self.subwords else FEATURIZER_SPEC

    def table_rows(self, vocab_size: int) -> int:
        """Rows of the embedding table for a vocabulary of ``vocab_size`` n-grams (v2 adds the buckets)."""
        return vocab_size + self.subword_buckets

    def to_dict(self) -> dict[str, Any]:
        """The settings as a manifest records them: v1 settings without the subword fields, so a v1
        model's manifest (and every fingerprint made of it) is what it was before v2 existed."""
        data = asdict(self)
        if not self.subwords:
            for key in _SUBWORD_FIELDS:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeaturizerSettings:
        known = {k: data[k] for k in (*_V1_FIELDS, *_SUBWORD_FIELDS) if k in data}
        return cls(**known)


# The default pattern's matches are exactly the runs of 2+ word characters, and a greedy ``\w\w+``
# finds the same runs without testing two word boundaries at each one (11-28% faster on reviews). Its
# scan never starts inside a run: a run is matched whole from its first character, and a run of one
# character fails there and leaves a non-word character next. tests/unit/test_featurizer.py checks it.
_FAST_EQUIVALENT = {DEFAULT_TOKEN_PATTERN: r"\w\w+"}


class Tokenizer:
    """Lowercase + regex token split, as scikit-learn's CountVectorizer does by default."""

    def __init__(self, settings: FeaturizerSettings) -> None:
        self.settings = settings
        compiled = re.compile(_FAST_EQUIVALENT.get(settings.token_pattern, settings.token_pattern))
        self._findall = compiled.findall
        self._finditer = compiled.finditer
        self._group = 1 if compiled.groups == 1 else 0  # findall gives the one group's text when there is one

    def lowered(self, text: str) -> str:
        """The text the pattern runs on: lowercased when the settings say so."""
        return text.lower() if self.settings.lowercase else text

    def __call__(self, text: str) -> list[str]:
        return self._findall(self.lowered(text))

    def spans(self, text: str) -> tuple[list[str], list[int], list[int]]:
        """The tokens ``self(text)`` gives, with their [start, end) offsets in ``self.lowered(text)``."""
        matches = list(self._finditer(self.lowered(text)))
        g = self._group
        return [m.group(g) or "" for m in matches], [m.start(g) for m in matches], [m.end(g) for m in matches]


def mix_keys(columns: Sequence[npt.NDArray[np.uint64]], seed_xor: int = 0) -> KeyArray:
    """64-bit keys of n-grams given as columns of 64-bit word codes (one column per position).

    The n-gram length is mixed in first, so "a" and "a a" never share a key by construction of
    the inputs alone. Arithmetic wraps modulo 2**64, which is what we want for a hash. Subword keys
    (spec v2) start from the same seed xor ``SUBWORD_SEED``.
    """
    n = len(columns)
    seed = np.uint64(((n * int(_MIX_MUL)) % (1 << 64)) ^ seed_xor)
    key = np.full(columns[0].shape, seed, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            key ^= column + np.uint64(1)
            key *= _MIX_MUL2
            key ^= key >> _SHIFT
    return key


@dataclass
class NgramOccurrences:
    """Every n-gram occurrence of a batch that is in the vocabulary, in text order.

    ``text_index[i]`` is the text of occurrence i and ``rows[i]`` its embedding row; ``total[t]`` counts
    all n-grams of text t, in the vocabulary or not (the denominator of coverage).
    """

    text_index: IntArray
    rows: IntArray
    total: IntArray
    num_texts: int
    # Spec v2: how many of each text's rows are subword rows (they come after its word n-gram rows), and
    # each row's weight in the text's mean: 1 for a word n-gram, 1/m for one of a token's m subwords.
    subwords: IntArray | None = None
    weights: FloatArray | None = None

    @property
    def found(self) -> IntArray:
        """Rows of each text, word n-grams and subwords: what its mean is taken over."""
        return np.bincount(self.text_index, minlength=self.num_texts).astype(np.int64)

    @property
    def units(self) -> npt.NDArray[np.float64]:
        """What each text's pooled vector is divided by: its rows' weights summed (v1: its rows)."""
        if self.weights is None:
            return self.found.astype(np.float64)
        return np.asarray(np.bincount(self.text_index, weights=self.weights, minlength=self.num_texts),
                          dtype=np.float64)

    @property
    def words_found(self) -> IntArray:
        """Word n-grams of each text found in the vocabulary (its rows less its subword rows)."""
        return self.found if self.subwords is None else self.found - self.subwords

    @property
    def coverage(self) -> npt.NDArray[np.float64]:
        """Share of each text's word n-grams found in the vocabulary (0.0 for a text with no n-gram)."""
        return coverage_of(self.found, self.total, self.subwords)

    def offsets(self) -> IntArray:
        """Start of each text's occurrences in ``rows`` (EmbeddingBag-style offsets)."""
        counts = self.found
        return np.concatenate(([0], np.cumsum(counts)))[:-1].astype(np.int64)  # none for no text


def batch_ngram_columns(
    word_codes: npt.NDArray[np.uint64], text_index: IntArray, valid: npt.NDArray[np.bool_], n: int
) -> tuple[list[npt.NDArray[np.uint64]], IntArray, npt.NDArray[np.bool_]]:
    """Columns of the n-grams of length n over a flat batch of tokens.

    A window is kept when it stays within one text; ``ok`` says whether all its words are valid.
    Returns (columns, text of each window, ok).
    """
    count = word_codes.shape[0] - n + 1
    if count <= 0:
        empty = np.empty(0, dtype=np.uint64)
        return [empty] * n, np.empty(0, dtype=np.int64), np.empty(0, dtype=bool)
    same_text = text_index[: count] == text_index[n - 1 : n - 1 + count]
    columns = [word_codes[i : i + count][same_text] for i in range(n)]
    ok = np.ones(int(same_text.sum()), dtype=bool)
    for i in range(n):
        ok &= valid[i : i + count][same_text]
    return columns, text_index[:count][same_text], ok


def framed_code_points(tokens: Sequence[str]) -> tuple[npt.NDArray[np.uint64], IntArray]:
    """The tokens' code points, each token framed by the boundary marks (spec v2, step 9), as one flat
    array, with the index of the token each value belongs to."""
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    # utf-32 holds one unit per code point; surrogatepass keeps a lone surrogate one code point as str does.
    points = np.frombuffer("".join(tokens).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)
    owner = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths + 2)
    framed = np.empty(owner.size, dtype=np.uint64)
    begins = np.concatenate(([0], np.cumsum(lengths + 2)[:-1])).astype(np.int64) if lengths.size else lengths
    ends = begins + lengths + 1
    inner = np.ones(owner.size, dtype=bool)
    inner[begins] = False
    inner[ends] = False
    framed[begins] = SUBWORD_BEGIN
    framed[ends] = SUBWORD_END
    framed[inner] = points
    return framed, owner


def subword_weights(owner: IntArray) -> FloatArray:
    """1/m for each subword of a token with m of them (``owner``: the token of each subword, sorted)."""
    counts = np.bincount(owner) if owner.size else np.zeros(0, dtype=np.int64)
    return (1.0 / counts[owner]).astype(np.float32) if owner.size else np.zeros(0, dtype=np.float32)


def subword_rows(tokens: Sequence[str], settings: FeaturizerSettings, vocab_size: int) -> tuple[IntArray, IntArray]:
    """(token of each subword, its row) for ``tokens``: per token, by length, then start (spec v2)."""
    framed, owner = framed_code_points(tokens)
    valid = np.ones(framed.size, dtype=bool)
    owners: list[IntArray] = []
    rows: list[IntArray] = []
    buckets = np.uint64(settings.subword_buckets)
    for n in range(settings.subword_min, settings.subword_max + 1):
        columns, window_owner, _ = batch_ngram_columns(framed, owner, valid, n)
        if window_owner.size == 0:
            continue
        owners.append(window_owner)
        rows.append((mix_keys(columns, SUBWORD_SEED) % buckets).astype(np.int64) + vocab_size)
    if not rows:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy()
    token = np.concatenate(owners)
    order = np.argsort(token, kind="stable")
    return token[order], np.concatenate(rows)[order]


class NgramFeaturizer:
    """Turns texts into vocabulary rows, for a vocabulary given as words + sorted keys + rows."""

    def __init__(
        self,
        settings: FeaturizerSettings,
        words: Sequence[str],
        sorted_keys: KeyArray,
        key_rows: IntArray,
    ) -> None:
        if sorted_keys.shape != key_rows.shape:
            raise FeaturizerError("vocabulary keys and rows differ in length")
        if sorted_keys.size > 1 and not bool(np.all(sorted_keys[1:] > sorted_keys[:-1])):
            raise FeaturizerError("vocabulary keys are not strictly increasing (damaged or colliding)")
        if settings.subwords and key_rows.size and not 0 <= int(key_rows.min()) <= int(key_rows.max()) < key_rows.size:
            raise FeaturizerError("with subwords the vocabulary's rows must be 0..size - 1 (spec v2, step 11)")
        self.settings = settings
        self.tokenize = Tokenizer(settings)
        self.words = list(words)
        self.word_ids: dict[str, int] = {w: i for i, w in enumerate(self.words)}
        self.sorted_keys = np.ascontiguousarray(sorted_keys, dtype=np.uint64)
        self.key_rows = np.ascontiguousarray(key_rows, dtype=np.int64)
        # Bucket b holds sorted_keys[bucket_starts[b] : bucket_starts[b + 1]], the keys whose top
        # ``bits`` bits equal b; 2**bits is 2 to 4 times the vocabulary size (16 MB of starts for 1M
        # n-grams), so buckets hold at most about 7 keys and a lookup loops that many times.
        bits = min(int(self.sorted_keys.size).bit_length() + 1, 32)
        self._shift = np.uint64(64 - bits)
        bounds = np.arange(1 << bits, dtype=np.uint64) << self._shift
        self._bucket_starts = np.append(np.searchsorted(self.sorted_keys, bounds), self.sorted_keys.size)
        self._bucket_max = int(np.diff(self._bucket_starts).max(initial=0))
        self._kernel: NgramKernel | None = None

    @property
    def vocab_size(self) -> int:
        return int(self.key_rows.size)

    @property
    def table_rows(self) -> int:
        """Rows the embedding table needs: the vocabulary's, plus the subword buckets of spec v2."""
        return self.settings.table_rows(self.vocab_size)

    def kernel(self) -> NgramKernel:
        """This vocabulary in the compiled kernel (sdcore.kernel), built on first use and kept."""
        if self._kernel is None:
            from sdcore.kernel import NgramKernel

            s = self.settings
            self._kernel = NgramKernel(
                self.words, self.sorted_keys, self.key_rows, lowercase=s.lowercase, token_pattern=s.token_pattern,
                ngram_min=s.ngram_min, ngram_max=s.ngram_max, subword_min=s.subword_min, subword_max=s.subword_max,
                subword_buckets=s.subword_buckets, subword_all=s.subword_scope == "all")
        return self._kernel

    def word_codes(self, tokens: Iterable[str], count: int = -1) -> IntArray:
        # map() with a repeated default runs the dict lookups without a Python frame per token.
        return np.fromiter(map(self.word_ids.get, tokens, itertools.repeat(-1)), dtype=np.int64, count=count)

    def lower_bound(self, keys: KeyArray) -> IntArray:
        """``np.searchsorted(self.sorted_keys, keys)``, by the bucket index (see the module docstring)."""
        # A few keys (one short text) are found faster by searchsorted than by the vectorised loop; and
        # keys that are not hash-spread (hand-made test vocabularies) would make buckets too long.
        if keys.size < 256 or self._bucket_max > 64:
            return np.searchsorted(self.sorted_keys, keys).astype(np.int64)
        top = (keys >> self._shift).astype(np.intp)
        lo = self._bucket_starts[top]
        hi = self._bucket_starts[top + 1]
        pos = lo.copy()
        # lower bound = lo + the keys of the bucket below key. Each pass steps the keys still below
        # their bucket's next key; most buckets hold 0 to 2 keys, so the active set empties fast (half
        # the time of stepping every key through the longest bucket).
        active = np.flatnonzero(lo < hi)
        while active.size:
            active = active[self.sorted_keys[pos[active]] < keys[active]]
            pos[active] += 1
            active = active[pos[active] < hi[active]]
        return pos

    def find(self, keys: KeyArray) -> tuple[npt.NDArray[np.bool_], IntArray]:
        """Which ``keys`` are in the vocabulary (a mask) and the table rows of those that are."""
        pos = self.lower_bound(keys)
        clipped = np.minimum(pos, max(self.sorted_keys.size - 1, 0))
        hit = (pos < self.sorted_keys.size) & (self.sorted_keys[clipped] == keys)
        return hit, self.key_rows[clipped[hit]]

    def occurrences(self, texts: Sequence[str]) -> NgramOccurrences:
        """All in-vocabulary n-gram occurrences of a batch, and with subwords (spec v2) the subword rows of
        the tokens in scope after each text's n-grams (see module docstring for how)."""
        token_lists = [self.tokenize(t) for t in texts]
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
        ids = self.word_codes(itertools.chain.from_iterable(token_lists), int(lengths.sum()))
        text_index = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        words = self.occurrences_from_ids(ids, text_index, lengths)
        if not self.settings.subwords:
            return words
        in_scope = ids < 0 if self.settings.subword_scope == "unknown" else np.ones(ids.size, dtype=bool)
        tokens = list(itertools.compress(itertools.chain.from_iterable(token_lists), in_scope))
        token, rows = subword_rows(tokens, self.settings, self.vocab_size)
        sub_text = text_index[in_scope][token]
        # A stable sort by text keeps each text's word rows (first) and subword rows in their order.
        all_text = np.concatenate((words.text_index, sub_text))
        order = np.argsort(all_text, kind="stable")
        weights = np.concatenate((np.ones(words.rows.size, dtype=np.float32), subword_weights(token)))
        return NgramOccurrences(all_text[order], np.concatenate((words.rows, rows))[order], words.total,
                                words.num_texts, np.bincount(sub_text, minlength=words.num_texts).astype(np.int64),
                                weights[order])

    def occurrences_from_ids(self, ids: IntArray, text_index: IntArray, lengths: IntArray) -> NgramOccurrences:
        """The word n-gram occurrences (spec steps 4-6) of a batch given as word ids: no subwords, which
        need the tokens' characters (``occurrences`` adds them)."""
        num_texts = int(lengths.size)
        valid = ids >= 0
        codes = ids.astype(np.uint64)
        s = self.settings
        total = np.zeros(num_texts, dtype=np.int64)
        found_text: list[IntArray] = []
        found_rows: list[IntArray] = []
        for n in range(s.ngram_min, s.ngram_max + 1):
            total += np.maximum(lengths - n + 1, 0)
            columns, window_text, ok = batch_ngram_columns(codes, text_index, valid, n)
            if not ok.any():
                continue
            hit, rows = self.find(mix_keys([c[ok] for c in columns]))
            found_text.append(window_text[ok][hit])
            found_rows.append(rows)
        if not found_rows:
            empty = np.empty(0, dtype=np.int64)
            return NgramOccurrences(empty, empty.copy(), total, num_texts)
        text_idx = np.concatenate(found_text)
        rows = np.concatenate(found_rows)
        # Stable sort by text so each text's occurrences are contiguous (offsets work).
        order = np.argsort(text_idx, kind="stable")
        return NgramOccurrences(text_idx[order], rows[order], total, num_texts)

    def rows_per_text(self, texts: Sequence[str]) -> list[IntArray]:
        """Rows of each text's in-vocabulary n-grams, with multiplicity (a readable reference form)."""
        occ = self.occurrences(texts)
        bounds = np.concatenate(([0], np.cumsum(occ.found)))
        return [occ.rows[bounds[i] : bounds[i + 1]] for i in range(len(texts))]


def reference_ngrams(tokens: Sequence[str], ngram_min: int, ngram_max: int) -> list[str]:
    """The n-gram strings of one token list, joined by spaces as scikit-learn does.

    A slow, obviously-correct form, used to build vocabularies' string lists and in tests.
    """
    out: list[str] = []
    for n in range(ngram_min, ngram_max + 1):
        out.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return out


def keys_of_ngram_strings(ngrams: Sequence[str], word_ids: dict[str, int]) -> KeyArray:
    """Keys of n-grams given as space-joined strings whose words are all in ``word_ids``.

    Used when a vocabulary is built or checked: one Python loop over vocabulary entries, never on the
    serving path.
    """
    keys = np.empty(len(ngrams), dtype=np.uint64)
    by_length: dict[int, list[int]] = {}
    split = [g.split(" ") for g in ngrams]
    for i, parts in enumerate(split):
        by_length.setdefault(len(parts), []).append(i)
    for n, idx in by_length.items():
        columns = [
            np.fromiter((word_ids[split[i][p]] for i in idx), dtype=np.int64, count=len(idx)).astype(np.uint64)
            for p in range(n)
        ]
        keys[np.asarray(idx, dtype=np.int64)] = mix_keys(columns)
    return keys
