"""The featurizer spec: how text becomes n-gram keys, rows and a pooled vector (``FEATURIZER_SPEC``).

A student's manifest records the spec of the featurizer that made it (``featurizer.spec``); a loader
refuses a spec it does not implement. ``sdcore.featurizer`` (numpy, the reference) and
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
"""

FEATURIZER_SPEC = "sd-ngram-v1"
