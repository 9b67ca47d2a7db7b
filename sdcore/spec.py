"""The featurizer specs: how text becomes n-gram keys, rows and a pooled vector (``FEATURIZER_SPEC``,
``SUBWORD_SPEC``).

A student's manifest records the spec of the featurizer that made it (``featurizer.spec``); a loader
refuses a spec it does not implement. Settings with ``subword_buckets == 0`` are v1; any other are
v2. ``sdcore.featurizer`` (numpy, the reference) and
``sdcore.kernel`` (compiled) both implement it; tests/unit/test_kernel_parity.py holds them to it.
Change anything below and the spec needs a new name: old models would otherwise be served wrong ids.

Spec ``sd-ngram-v1``:

1. Lowercase: Python's ``str.lower()`` of the whole text (full Unicode case mapping, final sigma
   included), when the settings say ``lowercase``.
2. Tokens: for the default token pattern ``(?u)\\b\\w\\w+\\b`` (scikit-learn's), the maximal runs of two or
   more word characters, left to right, where a word character is a code point ``c`` for which Python's
   ``re`` matches ``\\w`` in a str pattern: ``chr(c).isalnum() or c == "_"`` (so ``unicodedata``
   letters, decimals, digits and numerics; every code point is checked against ``re`` in the tests).
   Any other pattern: the tokens ``re.findall(pattern, text)`` gives.
3. Word ids: the line number of the token in the vocabulary's ``words.txt``; a token not listed is
   unknown, and every n-gram containing an unknown word is out of the vocabulary.
4. N-grams: for n in ngram_min..ngram_max, every window of n consecutive tokens of one text.
5. Key of an n-gram of word ids w1..wn, in 64-bit unsigned arithmetic modulo 2**64:
   ``k = n * 0x9E3779B97F4A7C15``; then for each w: ``k ^= w + 1; k *= 0xBF58476D1CE4E5B9; k ^= k >> 31``.
   Known values, checked in tests/unit/test_kernel_parity.py: key([0]) = 0x171BCA5761961ADA,
   key([1]) = 0x5524A09E0C197EA2, key([0, 1]) = 0xC96AB413D5BEB18E, key([0, 1, 2, 3]) = 0x1BE51FD2847E1937.
6. Row: the key's row in the vocabulary (``vocab/keys.npy`` sorted, ``vocab/rows.npy`` beside it).
7. Pooling: the mean of the rows found, repeats counted, accumulated in float32 (an int8 row is its
   int8 values times its float32 scale); a text with no row found pools to zeros. Coverage is rows
   found over all n-grams of the text (known or not).

Spec ``sd-ngram-v2``: v1's steps 1-6 unchanged (the vocabulary rows stay exact), plus hashed subword
rows for the words the vocabulary does not know, fastText's answer to unknown words:

8. Scope: each token of step 2, in token order, that is unknown (not in ``words.txt``) when
   ``subword_scope`` is ``"unknown"`` (the default), or every token when it is ``"all"``.
9. Subwords of a token in scope: its code points framed by two boundary marks, ``0x110000`` before and
   ``0x110001`` after (past the last Unicode code point, so no text can hold them); for n in
   ``subword_min..subword_max``, every window of n consecutive values of that sequence, by n, then start.
   So "cat" with 3..4 gives ``<ca``, ``cat``, ``at>``, ``<cat``, ``cat>`` (``<`` and ``>`` the marks).
10. Key of a subword of values c1..cn: as step 5, over ``c + 1`` instead of ``w + 1``, from the seed
    ``(n * 0x9E3779B97F4A7C15) ^ 0x5D5D5D5D5D5D5D5D``. Known values: subword_key("<ca") =
    0xB73967F8074FF07C (checked in tests/unit/test_subwords.py).
11. Row: ``vocab_size + key % subword_buckets``, where ``vocab_size`` counts the vocabulary's n-grams
    (whose rows are 0..vocab_size - 1): the table has ``vocab_size + subword_buckets`` rows.
12. A text's rows: its word n-gram rows (v1's order), then its subword rows, token by token.
13. Pooling: each token in scope counts as one unit, the mean of its subword rows (as fastText makes a
    word's vector from its character n-grams), beside the word n-gram rows found, one unit each:
    ``pooled = (sum of word rows + sum over tokens of mean of the token's subword rows) / units``, with
    ``units`` = word rows found + tokens in scope with a subword; zeros when there is none. So a row of a token with m
    subwords weighs 1/m: an unknown word weighs what a known one does, however long it is.
14. Token pattern: the kernel's own (the default and its equivalent forms, ``COMPILED_PATTERNS``); subwords
    are made from the code points the kernel scans.

Coverage stays word n-grams found over all word n-grams, so it means the same for v1 and v2 models.
"""

FEATURIZER_SPEC = "sd-ngram-v1"
SUBWORD_SPEC = "sd-ngram-v2"
SPECS = (FEATURIZER_SPEC, SUBWORD_SPEC)
# Token patterns the kernel tokenizes itself: scikit-learn's default and its equivalent forms
# (sdcore.featurizer explains why ``\w\w+`` finds the same tokens); v2 needs one of them (step 14).
COMPILED_PATTERNS = frozenset({r"(?u)\b\w\w+\b", r"\b\w\w+\b", r"\w\w+", r"(?u)\w\w+"})
# Step 9's boundary marks and step 10's seed.
SUBWORD_BEGIN = 0x110000
SUBWORD_END = 0x110001
SUBWORD_SEED = 0x5D5D5D5D5D5D5D5D
