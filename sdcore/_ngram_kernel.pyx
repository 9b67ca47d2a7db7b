# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled hot path of the student: texts -> n-gram rows -> mean-pooled float32 vectors.

Use it through ``sdcore.kernel`` (typed, validated); the key and token spec is written there. In short,
per text, with the GIL released for the whole batch (inputs are converted first, then no Python object
is touched):

1. scan the (already lowercased) str's code points for maximal runs of word characters, exactly as
   Python's ``re`` defines ``\\w`` for str patterns (``Py_UNICODE_ISALNUM(c) or c == '_'``); a run of 2 or
   more code points is a token (what ``\\w\\w+`` and ``\\b\\w\\w+\\b`` find);
2. look each token up in an open-addressing table of the vocabulary's words (hash of its code points,
   then an exact compare): its word id, or -1;
3. make the 64-bit key of every n-gram whose words are all known (the mix of ``service.featurizer``),
   and look it up in an open-addressing table of the vocabulary's keys: its embedding row, or none;
   with subwords (spec v2), hash the character n-grams of each token in scope (unknown words, or all)
   into the rows after the vocabulary's: no lookup, the key modulo the bucket count is the row; a token's
   subword rows are averaged first, so the token counts as one row in the text's mean;
4. add the rows (float16 through F16C when the CPU has it, float32, or int8 times the row's scale) into
   the text's float32 output row, then divide by the number of rows found (repeats counted).

Texts can be split over threads (contiguous parts balanced by length; each part has its own scratch).
"""

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

import numpy as np

cdef extern from "Python.h":
    int PyUnicode_KIND(object)
    void *PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)

cdef extern from "Python.h" nogil:
    bint Py_UNICODE_ISALNUM(Py_UCS4 ch)

cdef extern from "_kernel_simd.h":
    int SD_UNICODE_READY(object) except -1

cdef extern from "_kernel_simd.h" nogil:
    ctypedef void (*sd_part_fn)(void *ctx, int part) noexcept nogil
    void sd_add_f16(float *acc, const uint16_t *row, int64_t n)
    void sd_add_f32(float *acc, const float *row, int64_t n)
    void sd_add_i8(float *acc, const int8_t *row, float scale, int64_t n)
    float sd_half_to_float(uint16_t h)
    void sd_simd_select(int portable)
    const char *sd_simd_name()
    void sd_prefetch(const void *p)
    void sd_run_parts(int parts, sd_part_fn fn, void *ctx)
    int SD_MAX_PARTS

ctypedef fused char_t:
    uint8_t
    uint16_t
    uint32_t

# service.featurizer.mix_keys, step for step.
cdef uint64_t MIX_MUL = 0x9E3779B97F4A7C15ULL
cdef uint64_t MIX_MUL2 = 0xBF58476D1CE4E5B9ULL
# FNV-1a over code points, for the word table only (never stored: the table is rebuilt at load).
cdef uint64_t FNV_OFFSET = 0xCBF29CE484222325ULL
cdef uint64_t FNV_PRIME = 0x100000001B3ULL
cdef uint64_t FIB = 0x9E3779B97F4A7C15ULL  # slot = (hash * FIB) >> shift: the product's top bits
# Spec v2 (sdcore/spec.py, steps 9-10): the boundary marks and the subword seed.
cdef uint64_t SUBWORD_BEGIN = 0x110000ULL
cdef uint64_t SUBWORD_END = 0x110001ULL
cdef uint64_t SUBWORD_SEED = 0x5D5D5D5D5D5D5D5DULL

DTYPE_FLOAT32 = 0
DTYPE_FLOAT16 = 1
DTYPE_INT8 = 2

cdef enum:
    PREFETCH_AHEAD = 4  # rows: the row this many places ahead is fetched while one is added
    KEY_AHEAD = 16  # keys: the slot this many keys ahead is fetched while one is probed

cdef uint8_t WORD_LATIN1[256]  # is_word for code points below 256, filled at import


cdef inline bint is_word(Py_UCS4 c) noexcept nogil:
    if c < 256:
        return WORD_LATIN1[c]
    return Py_UNICODE_ISALNUM(c)


# --- vocabulary tables ----------------------------------------------------------------------------------


cdef struct WordTable:
    int64_t nwords
    int shift  # 64 - log2(slots)
    uint64_t mask
    uint64_t *hashes
    int32_t *ids  # slot -> word id; -1: empty
    Py_UCS4 *chars  # all words' code points, concatenated
    int64_t *starts  # word i is chars[starts[i] : starts[i + 1]]


cdef struct KeySlot:
    uint64_t key
    int64_t row  # -1: empty


cdef struct KeyTable:
    int shift
    uint64_t mask
    KeySlot *slots


cdef int table_bits(int64_t n):
    """log2 of the slot count: a power of two >= 2n, at least 2 slots (load factor <= 1/2)."""
    cdef int bits = 1
    while (<int64_t>1 << bits) < 2 * n:
        bits += 1
    return bits


cdef inline uint64_t fnv_step(uint64_t h, Py_UCS4 c) noexcept nogil:
    return (h ^ <uint64_t>c) * FNV_PRIME


cdef inline int64_t word_lookup(const WordTable *wt, uint64_t h, const char_t *s, Py_ssize_t n) noexcept nogil:
    cdef uint64_t slot = (h * FIB) >> wt.shift
    cdef int32_t wid
    cdef int64_t start
    cdef Py_ssize_t j
    while True:
        wid = wt.ids[slot]
        if wid < 0:
            return -1
        if wt.hashes[slot] == h:
            start = wt.starts[wid]
            if wt.starts[wid + 1] - start == n:
                j = 0
                while j < n and wt.chars[start + j] == <Py_UCS4>s[j]:
                    j += 1
                if j == n:
                    return wid
        slot = (slot + 1) & wt.mask


cdef inline int64_t key_lookup(const KeyTable *kt, uint64_t key) noexcept nogil:
    cdef uint64_t slot = (key * FIB) >> kt.shift
    cdef const KeySlot *entry
    while True:
        entry = &kt.slots[slot]
        if entry.row < 0:
            return -1
        if entry.key == key:
            return entry.row
        slot = (slot + 1) & kt.mask


# --- embedding table ------------------------------------------------------------------------------------


cdef struct Table:
    int dtype
    int nshards
    int64_t dim
    int64_t row_bytes
    int64_t *starts  # nshards + 1: shard s holds rows starts[s] .. starts[s + 1] - 1
    const uint8_t **bases
    const float **scales  # int8 only: one float32 per row


cdef inline void add_row(const Table *tb, int64_t row, float *acc) noexcept nogil:
    cdef int lo = 0, hi = tb.nshards - 1, mid
    while lo < hi:  # the last shard whose start <= row
        mid = (lo + hi + 1) >> 1
        if tb.starts[mid] <= row:
            lo = mid
        else:
            hi = mid - 1
    cdef int64_t local = row - tb.starts[lo]
    cdef const uint8_t *p = tb.bases[lo] + local * tb.row_bytes
    if tb.dtype == 1:
        sd_add_f16(acc, <const uint16_t *>p, tb.dim)
    elif tb.dtype == 0:
        sd_add_f32(acc, <const float *>p, tb.dim)
    else:
        sd_add_i8(acc, <const int8_t *>p, tb.scales[lo][local], tb.dim)


cdef inline void prefetch_row(const Table *tb, int64_t row) noexcept nogil:
    cdef int s = 0
    while s + 1 < tb.nshards and tb.starts[s + 1] <= row:
        s += 1
    cdef const uint8_t *p = tb.bases[s] + (row - tb.starts[s]) * tb.row_bytes
    cdef int64_t off = 0
    while off < tb.row_bytes:
        sd_prefetch(p + off)
        off += 64


cdef class RowTable:
    """Row-range shards of an embedding table, seen by the kernel (see ``sdcore.kernel.KernelTable``)."""

    cdef Table tb
    cdef list _views
    cdef readonly int64_t rows
    cdef readonly int64_t dim
    cdef readonly int dtype

    def __cinit__(self, list shards, list starts, int dtype, int64_t dim, list scales):
        """``shards``: 2-D uint8 views [rows, row bytes] (C-contiguous); ``scales``: float32 [rows] per shard
        for int8, else empty. The caller checked shapes and dtypes; this keeps references to all views."""
        cdef int n = len(shards), s
        cdef int64_t shard_rows = 0
        cdef const uint8_t[:, ::1] view
        cdef const float[::1] scale
        if n < 1:
            raise ValueError("an embedding table needs at least one shard")
        if dtype == DTYPE_INT8 and len(scales) != n:
            raise ValueError("an int8 table needs one scale array per shard")
        self._views = []
        self.tb.dtype = dtype
        self.tb.nshards = n
        self.tb.dim = dim
        self.tb.row_bytes = dim * (4 if dtype == DTYPE_FLOAT32 else 2 if dtype == DTYPE_FLOAT16 else 1)
        self.tb.starts = <int64_t *>malloc((n + 1) * sizeof(int64_t))
        self.tb.bases = <const uint8_t **>malloc(n * sizeof(uint8_t *))
        self.tb.scales = <const float **>malloc(n * sizeof(float *))
        if self.tb.starts == NULL or self.tb.bases == NULL or self.tb.scales == NULL:
            raise MemoryError()
        for s in range(n):
            view = shards[s]
            if view.shape[1] != self.tb.row_bytes:
                raise ValueError(f"shard {s} rows are {view.shape[1]} bytes, expected {self.tb.row_bytes}")
            self._views.append(view)
            self.tb.starts[s] = starts[s]
            if self.tb.starts[s] != (0 if s == 0 else self.tb.starts[s - 1] + shard_rows):
                raise ValueError("shards must cover contiguous row ranges from row 0")
            shard_rows = view.shape[0]
            self.tb.bases[s] = &view[0, 0] if view.shape[0] > 0 else NULL
            self.tb.scales[s] = NULL
            if dtype == DTYPE_INT8:
                scale = scales[s]
                if scale.shape[0] != view.shape[0]:
                    raise ValueError(f"shard {s} has {view.shape[0]} rows but {scale.shape[0]} scales")
                self._views.append(scale)
                self.tb.scales[s] = &scale[0] if scale.shape[0] > 0 else NULL
        self.tb.starts[n] = self.tb.starts[n - 1] + shard_rows
        self.rows = self.tb.starts[n]
        self.dim = dim
        self.dtype = dtype

    def __dealloc__(self):
        free(self.tb.starts)
        free(<void *>self.tb.bases)
        free(<void *>self.tb.scales)


# --- one batch ------------------------------------------------------------------------------------------


cdef struct Text:  # a str's code points, readable without the GIL while the str is alive
    int kind
    const void *data
    Py_ssize_t length


cdef struct Scratch:  # one part's buffers, grown as needed
    int64_t *ids
    int64_t *bounds  # [2 * ids_cap]: token [start, end) offsets, for subwords
    int64_t ids_cap
    uint64_t *keys
    int64_t *rows
    int64_t win_cap
    int64_t *groups  # spec v2: the subword count of each token in scope of the current text, in order
    int64_t ngroups
    int64_t nword  # rows of the current text that are word n-gram rows (the first ones)
    float *tmp  # [dim]: one token's subword rows summed, while pooling


cdef enum Mode:
    MODE_TEXTS = 0  # raw (lowercased) texts
    MODE_IDS = 1  # word ids per text (a non-default token pattern, tokenized in Python)
    MODE_ROWS = 2  # embedding rows per text (pooling alone)


cdef struct Job:
    const WordTable *words
    const KeyTable *keys
    const Table *table  # NULL: rows only, no pooling
    int ngram_min
    int ngram_max
    int sub_min  # spec v2: subword lengths; sub_buckets == 0: v1, no subwords
    int sub_max
    uint64_t sub_buckets
    int64_t sub_base  # the first subword row: the vocabulary's size
    bint sub_all  # every token in scope, not only the unknown ones
    Mode mode
    const Text *texts
    const int64_t *in_values  # MODE_IDS: word ids; MODE_ROWS: rows
    const int64_t *in_offsets  # text t is in_values[in_offsets[t] : in_offsets[t + 1]]
    int64_t ntexts
    int64_t bounds[65]  # part p is texts bounds[p] .. bounds[p + 1] - 1
    float *out  # [ntexts, dim]
    int64_t *found
    int64_t *total
    int64_t *subwords  # [ntexts]: how many of found[t] are subword rows
    int failed


cdef int resize(void **slot, size_t nbytes) noexcept nogil:
    """realloc ``*slot`` to ``nbytes``; -1 (and ``*slot`` left as it was, still owned) when memory is out."""
    cdef void *p = realloc(slot[0], nbytes)
    if p == NULL:
        return -1
    slot[0] = p
    return 0


cdef int grow(Scratch *sc, int64_t ids_needed, int64_t windows_needed) noexcept nogil:
    if ids_needed > sc.ids_cap:
        if (resize(<void **>&sc.ids, ids_needed * sizeof(int64_t))
                or resize(<void **>&sc.bounds, 2 * ids_needed * sizeof(int64_t))
                or resize(<void **>&sc.groups, ids_needed * sizeof(int64_t))):
            return -1
        sc.ids_cap = ids_needed
    if windows_needed > sc.win_cap:
        if (resize(<void **>&sc.keys, windows_needed * sizeof(uint64_t))
                or resize(<void **>&sc.rows, windows_needed * sizeof(int64_t))):
            return -1
        sc.win_cap = windows_needed
    return 0


cdef void release(Scratch *sc) noexcept nogil:
    free(sc.ids)
    free(sc.bounds)
    free(sc.keys)
    free(sc.rows)
    free(sc.groups)
    free(sc.tmp)
    memset(sc, 0, sizeof(Scratch))


cdef int64_t scan(const char_t *s, Py_ssize_t n, const WordTable *wt, int64_t *ids, int64_t *bounds) noexcept nogil:
    """Word ids of the tokens of s[0:n] into ``ids`` (room for n // 2 + 1); their [start, end) code point
    offsets into ``bounds`` when it is not NULL. Returns the number of tokens."""
    cdef Py_ssize_t i = 0, start
    cdef int64_t count = 0
    cdef uint64_t h
    cdef Py_UCS4 c
    while i < n:
        c = s[i]
        if not is_word(c):
            i += 1
            continue
        start = i
        h = fnv_step(FNV_OFFSET, c)
        i += 1
        while i < n:
            c = s[i]
            if not is_word(c):
                break
            h = fnv_step(h, c)
            i += 1
        if i - start >= 2:
            if bounds != NULL:
                bounds[2 * count] = start
                bounds[2 * count + 1] = i
            ids[count] = word_lookup(wt, h, s + start, i - start) if wt.nwords > 0 else -1
            count += 1
    return count


cdef int64_t scan_text(const Text *t, const WordTable *wt, int64_t *ids, int64_t *bounds) noexcept nogil:
    if t.kind == 1:
        return scan(<const uint8_t *>t.data, t.length, wt, ids, bounds)
    if t.kind == 2:
        return scan(<const uint16_t *>t.data, t.length, wt, ids, bounds)
    return scan(<const uint32_t *>t.data, t.length, wt, ids, bounds)


cdef inline int64_t subword_count(const Job *job, int64_t length) noexcept nogil:
    """Subwords of a token of ``length`` code points: windows of sub_min..sub_max over length + 2 values."""
    cdef int64_t framed = length + 2, n, count = 0
    for n in range(job.sub_min, job.sub_max + 1):
        if framed >= n:
            count += framed - n + 1
    return count


cdef int64_t token_subwords(const char_t *s, Py_ssize_t start, Py_ssize_t end, const Job *job,
                            int64_t *out) noexcept nogil:
    """Rows of the subwords of the token s[start:end] (spec v2, steps 9-11), by length then start."""
    cdef int64_t framed = end - start + 2, n, i, j, count = 0
    cdef uint64_t key, c
    for n in range(job.sub_min, job.sub_max + 1):
        for i in range(framed - n + 1):
            key = (<uint64_t>n * MIX_MUL) ^ SUBWORD_SEED
            for j in range(i, i + n):
                if j == 0:
                    c = SUBWORD_BEGIN
                elif j == framed - 1:
                    c = SUBWORD_END
                else:
                    c = <uint64_t>s[start + j - 1]
                key ^= c + 1
                key *= MIX_MUL2
                key ^= key >> 31
            out[count] = job.sub_base + <int64_t>(key % job.sub_buckets)
            count += 1
    return count


cdef int64_t text_subwords(const Text *t, Py_ssize_t start, Py_ssize_t end, const Job *job,
                           int64_t *out) noexcept nogil:
    if t.kind == 1:
        return token_subwords(<const uint8_t *>t.data, start, end, job, out)
    if t.kind == 2:
        return token_subwords(<const uint16_t *>t.data, start, end, job, out)
    return token_subwords(<const uint32_t *>t.data, start, end, job, out)


cdef int text_rows(Job *job, Scratch *sc, int64_t t, const int64_t **rows_out) noexcept nogil:
    """Rows of text t's in-vocabulary n-grams (per n, in window order) into the scratch; sets found[t] and
    total[t]. Returns -1 when a buffer cannot be grown."""
    cdef const int64_t *ids
    cdef int64_t ntok, n, i, j, nk = 0, nf = 0, total = 0, row, w, nsub = 0
    cdef uint64_t key
    cdef bint ok, subwords = job.sub_buckets > 0 and job.mode == MODE_TEXTS
    job.subwords[t] = 0
    sc.ngroups = 0
    if job.mode == MODE_ROWS:
        rows_out[0] = job.in_values + job.in_offsets[t]
        nf = job.in_offsets[t + 1] - job.in_offsets[t]
        job.found[t] = nf
        job.total[t] = nf
        sc.nword = nf
        return 0
    if job.mode == MODE_TEXTS:
        if grow(sc, job.texts[t].length // 2 + 1, 0) < 0:
            return -1
        ntok = scan_text(&job.texts[t], job.words, sc.ids, sc.bounds if subwords else NULL)
        ids = sc.ids
    else:
        ids = job.in_values + job.in_offsets[t]
        ntok = job.in_offsets[t + 1] - job.in_offsets[t]
    for n in range(job.ngram_min, job.ngram_max + 1):
        if ntok >= n:
            total += ntok - n + 1
    if grow(sc, 0, total) < 0:
        return -1
    for n in range(job.ngram_min, job.ngram_max + 1):
        for i in range(ntok - n + 1):
            key = <uint64_t>n * MIX_MUL
            ok = True
            for j in range(n):
                w = ids[i + j]
                if w < 0:
                    ok = False
                    break
                key ^= <uint64_t>w + 1
                key *= MIX_MUL2
                key ^= key >> 31
            if ok:
                sc.keys[nk] = key
                nk += 1
    # Software pipelining: the slot of the key KEY_AHEAD places on is fetched while this one is probed,
    # so about KEY_AHEAD cache misses are in flight (prefetching every key up front, as a first version
    # did, issues thousands for a review and the early ones are evicted before they are probed).
    for i in range(min(nk, KEY_AHEAD)):
        sd_prefetch(&job.keys.slots[(sc.keys[i] * FIB) >> job.keys.shift])
    for i in range(nk):
        if i + KEY_AHEAD < nk:
            sd_prefetch(&job.keys.slots[(sc.keys[i + KEY_AHEAD] * FIB) >> job.keys.shift])
        row = key_lookup(job.keys, sc.keys[i])
        if row >= 0:
            sc.rows[nf] = row
            nf += 1
    sc.nword = nf
    if subwords:
        for i in range(ntok):
            if job.sub_all or ids[i] < 0:
                nsub += subword_count(job, sc.bounds[2 * i + 1] - sc.bounds[2 * i])
        if grow(sc, 0, nf + nsub) < 0:
            return -1
        for i in range(ntok):
            if job.sub_all or ids[i] < 0:
                n = text_subwords(&job.texts[t], sc.bounds[2 * i], sc.bounds[2 * i + 1], job, sc.rows + nf)
                if n > 0:
                    sc.groups[sc.ngroups] = n
                    sc.ngroups += 1
                    nf += n
    job.found[t] = nf
    job.total[t] = total
    job.subwords[t] = nsub
    rows_out[0] = sc.rows
    return 0


cdef void pool_text(const Job *job, int64_t t, const int64_t *rows, int64_t nf, const Scratch *sc) noexcept nogil:
    """The text's mean: its word rows one unit each, then (spec v2) each token's subword rows averaged into
    one unit (sdcore/spec.py, step 13); v1 texts have no groups, and this is the plain mean of v1."""
    cdef const Table *tb = job.table
    cdef float *acc = job.out + t * tb.dim
    cdef int64_t i, j, g, m, pos
    cdef float inv
    memset(acc, 0, tb.dim * sizeof(float))
    for i in range(sc.nword):
        if i + PREFETCH_AHEAD < nf:
            prefetch_row(tb, rows[i + PREFETCH_AHEAD])
        add_row(tb, rows[i], acc)
    pos = sc.nword
    for g in range(sc.ngroups):
        m = sc.groups[g]
        memset(sc.tmp, 0, tb.dim * sizeof(float))
        for i in range(pos, pos + m):
            if i + PREFETCH_AHEAD < nf:
                prefetch_row(tb, rows[i + PREFETCH_AHEAD])
            add_row(tb, rows[i], sc.tmp)
        inv = 1.0 / <float>m
        for j in range(tb.dim):
            acc[j] += sc.tmp[j] * inv
        pos += m
    if sc.nword + sc.ngroups > 0:
        inv = 1.0 / <float>(sc.nword + sc.ngroups)
        for j in range(tb.dim):
            acc[j] *= inv


cdef void run_part(void *ctx, int part) noexcept nogil:
    cdef Job *job = <Job *>ctx
    cdef Scratch sc
    cdef const int64_t *rows
    cdef int64_t t
    memset(&sc, 0, sizeof(Scratch))
    sc.tmp = <float *>malloc((job.table.dim if job.table.dim > 0 else 1) * sizeof(float))
    if sc.tmp == NULL:
        job.failed = 1
        return
    for t in range(job.bounds[part], job.bounds[part + 1]):
        if text_rows(job, &sc, t, &rows) < 0:
            job.failed = 1
            break
        pool_text(job, t, rows, job.found[t], &sc)
    release(&sc)


cdef int plan_parts(Job *job, int threads, const int64_t *cost) noexcept nogil:
    """Split the texts into up to ``threads`` contiguous parts of about equal cost; returns the count."""
    cdef int parts = threads, p
    cdef int64_t t, acc = 0, all_cost = 0
    if parts > SD_MAX_PARTS:
        parts = SD_MAX_PARTS
    if parts > job.ntexts:
        parts = <int>job.ntexts
    if parts < 1:
        parts = 1
    for t in range(job.ntexts):
        all_cost += cost[t]
    job.bounds[0] = 0
    p = 1
    for t in range(job.ntexts):
        acc += cost[t]
        while p < parts and acc * parts >= all_cost * p:
            job.bounds[p] = t + 1
            p += 1
    while p <= parts:
        job.bounds[p] = job.ntexts
        p += 1
    return parts


cdef Text *prepare_texts(list texts, int64_t *cost) except NULL:
    """The code points of every str (kept alive by the caller's list); ``cost`` gets their lengths."""
    cdef int64_t n = len(texts), i
    cdef Text *out = <Text *>malloc((n if n > 0 else 1) * sizeof(Text))
    if out == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            text = texts[i]
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
            SD_UNICODE_READY(text)
            out[i].kind = PyUnicode_KIND(text)
            out[i].data = PyUnicode_DATA(text)
            out[i].length = PyUnicode_GET_LENGTH(text)
            cost[i] = out[i].length + 16
    except BaseException:
        free(out)
        raise
    return out


cdef class NgramIndex:
    """A vocabulary (words, n-gram keys -> rows) as the kernel's hash tables, built once at load."""

    cdef WordTable wt
    cdef KeyTable kt
    cdef readonly int ngram_min
    cdef readonly int ngram_max
    cdef readonly int sub_min
    cdef readonly int sub_max
    cdef readonly int64_t sub_buckets
    cdef readonly bint sub_all
    cdef readonly int64_t vocab_size
    cdef readonly int64_t max_row

    def __cinit__(self, list words, const uint64_t[::1] keys, const int64_t[::1] rows, int ngram_min, int ngram_max,
                  int sub_min=0, int sub_max=0, int64_t sub_buckets=0, bint sub_all=False):
        """``sub_buckets`` > 0: spec v2, the subwords of sub_min..sub_max code points (framed) of the unknown
        tokens (every token with ``sub_all``) in rows vocab_size .. vocab_size + sub_buckets - 1."""
        memset(&self.wt, 0, sizeof(WordTable))
        memset(&self.kt, 0, sizeof(KeyTable))
        if not 1 <= ngram_min <= ngram_max:
            raise ValueError(f"n-gram range must satisfy 1 <= min <= max, got ({ngram_min}, {ngram_max})")
        if keys.shape[0] != rows.shape[0]:
            raise ValueError("vocabulary keys and rows differ in length")
        if sub_buckets < 0 or (sub_buckets > 0 and not 1 <= sub_min <= sub_max):
            raise ValueError(f"subwords need 1 <= min <= max and buckets >= 0, got ({sub_min}, {sub_max}), "
                             f"{sub_buckets}")
        self.ngram_min = ngram_min
        self.ngram_max = ngram_max
        self.sub_min = sub_min
        self.sub_max = sub_max
        self.sub_buckets = sub_buckets
        self.sub_all = sub_all
        self._build_words(words)
        self._build_keys(keys, rows)
        if sub_buckets > 0:
            if self.max_row >= self.vocab_size:
                raise ValueError("with subwords the vocabulary's rows must be 0..size - 1")
            self.max_row = self.vocab_size + sub_buckets - 1

    cdef _build_words(self, list words):
        cdef int64_t n = len(words), i, nchars = 0, pos = 0, start, j
        cdef int bits = table_bits(n)
        cdef uint64_t h, slot
        cdef Py_UCS4 c
        cdef int32_t wid
        cdef bint same
        if n >= 2**31 - 1:
            raise ValueError("too many words for the kernel's 32-bit word ids")
        for i in range(n):
            if not isinstance(words[i], str):
                raise TypeError(f"words[{i}] is not a str")
            nchars += len(<str>words[i])
        cdef WordTable *wt = &self.wt
        wt.nwords = n
        wt.shift = 64 - bits
        wt.mask = ((<uint64_t>1) << bits) - 1
        wt.hashes = <uint64_t *>malloc((wt.mask + 1) * sizeof(uint64_t))
        wt.ids = <int32_t *>malloc((wt.mask + 1) * sizeof(int32_t))
        wt.chars = <Py_UCS4 *>malloc((nchars if nchars > 0 else 1) * sizeof(Py_UCS4))
        wt.starts = <int64_t *>malloc((n + 1) * sizeof(int64_t))
        if wt.hashes == NULL or wt.ids == NULL or wt.chars == NULL or wt.starts == NULL:
            raise MemoryError()
        memset(wt.ids, 0xFF, (wt.mask + 1) * sizeof(int32_t))  # every slot -1
        for i in range(n):
            wt.starts[i] = pos
            h = FNV_OFFSET
            for c in <str>words[i]:
                wt.chars[pos] = c
                pos += 1
                h = fnv_step(h, c)
            slot = (h * FIB) >> wt.shift
            while True:  # a repeated word keeps its last id, as {w: i for i, w in enumerate(words)} does
                wid = wt.ids[slot]
                if wid < 0:
                    break
                if wt.hashes[slot] == h and wt.starts[wid + 1] - wt.starts[wid] == pos - wt.starts[i]:
                    same = True
                    start = wt.starts[wid]
                    for j in range(pos - wt.starts[i]):
                        if wt.chars[start + j] != wt.chars[wt.starts[i] + j]:
                            same = False
                            break
                    if same:
                        break
                slot = (slot + 1) & wt.mask
            wt.hashes[slot] = h
            wt.ids[slot] = <int32_t>i
            wt.starts[i + 1] = pos  # also read by the compare above for later words
        wt.starts[n] = pos

    cdef _build_keys(self, const uint64_t[::1] keys, const int64_t[::1] rows):
        cdef int64_t n = keys.shape[0], i, max_row = -1
        cdef int bits = table_bits(n)
        cdef uint64_t slot
        cdef KeyTable *kt = &self.kt
        kt.shift = 64 - bits
        kt.mask = ((<uint64_t>1) << bits) - 1
        kt.slots = <KeySlot *>malloc((kt.mask + 1) * sizeof(KeySlot))
        if kt.slots == NULL:
            raise MemoryError()
        for i in range(<int64_t>(kt.mask + 1)):
            kt.slots[i].key = 0
            kt.slots[i].row = -1
        for i in range(n):
            if rows[i] < 0:
                raise ValueError(f"vocabulary row {rows[i]} is negative")
            slot = (keys[i] * FIB) >> kt.shift
            while kt.slots[slot].row >= 0:
                if kt.slots[slot].key == keys[i]:
                    raise ValueError("two vocabulary n-grams share a key (damaged or colliding)")
                slot = (slot + 1) & kt.mask
            kt.slots[slot].key = keys[i]
            kt.slots[slot].row = rows[i]
            if rows[i] > max_row:
                max_row = rows[i]
        self.vocab_size = n
        self.max_row = max_row

    def __dealloc__(self):
        free(self.wt.hashes)
        free(self.wt.ids)
        free(self.wt.chars)
        free(self.wt.starts)
        free(self.kt.slots)

    cdef void _job(self, Job *job, Mode mode, int64_t ntexts):
        memset(job, 0, sizeof(Job))
        job.words = &self.wt
        job.keys = &self.kt
        job.ngram_min = self.ngram_min
        job.ngram_max = self.ngram_max
        job.sub_min = self.sub_min
        job.sub_max = self.sub_max
        job.sub_buckets = <uint64_t>self.sub_buckets
        job.sub_base = self.vocab_size
        job.sub_all = self.sub_all
        job.mode = mode
        job.ntexts = ntexts

    def tokens(self, str text):
        """[start, end) code point offsets and word ids of the tokens of one (lowercased) text: the
        kernel's own scan, for tests."""
        cdef int64_t cost = 0
        cdef Text *t = prepare_texts([text], &cost)
        bounds = np.empty(2 * (t.length // 2 + 1), dtype=np.int64)
        ids = np.empty(t.length // 2 + 1, dtype=np.int64)
        cdef int64_t[::1] bv = bounds, iv = ids
        cdef int64_t count = scan_text(t, &self.wt, &iv[0], &bv[0])
        free(t)
        return bounds[: 2 * count].reshape(count, 2), ids[:count]

    def featurize(self, list texts, const int64_t[::1] ids=None, const int64_t[::1] offsets=None):
        """(rows, found, total, subwords) of a batch: every text's rows, concatenated in text order (per
        text: by n, then by window, then its subword rows), its count of rows, of all its word n-grams and
        of its subword rows. ``texts`` are lowercased strs, or None with ``ids``/``offsets`` (word ids per
        text, tokenized in Python: no subwords)."""
        cdef Job job
        cdef Scratch sc
        cdef int64_t n, t, used = 0, cap = 0
        cdef int64_t *out_rows = NULL
        cdef void *p
        cdef const int64_t *rows
        cdef Text *prepared = NULL
        cdef int64_t[::1] cost
        if texts is None:
            _check_offsets(ids, offsets)
        n = len(texts) if texts is not None else offsets.shape[0] - 1
        self._job(&job, MODE_TEXTS if texts is not None else MODE_IDS, n)
        found = np.empty(n, dtype=np.int64)
        total = np.empty(n, dtype=np.int64)
        subwords = np.zeros(n, dtype=np.int64)
        cdef int64_t[::1] fv = found, tv = total, sv = subwords
        if n == 0:
            return np.empty(0, dtype=np.int64), found, total, subwords
        if texts is not None:
            cost = np.empty(n, dtype=np.int64)
            prepared = prepare_texts(texts, &cost[0])
            job.texts = prepared
        else:
            _check_offsets(ids, offsets)
            job.in_values = &ids[0] if ids.shape[0] > 0 else NULL
            job.in_offsets = &offsets[0]
        job.found = &fv[0]
        job.total = &tv[0]
        job.subwords = &sv[0]
        memset(&sc, 0, sizeof(Scratch))
        with nogil:
            for t in range(n):
                if text_rows(&job, &sc, t, &rows) < 0:
                    job.failed = 1
                    break
                if used + job.found[t] > cap:
                    cap = 2 * (used + job.found[t]) + 1024
                    p = realloc(out_rows, cap * sizeof(int64_t))
                    if p == NULL:
                        job.failed = 1
                        break
                    out_rows = <int64_t *>p
                if job.found[t] > 0:
                    memcpy(out_rows + used, rows, job.found[t] * sizeof(int64_t))
                    used += job.found[t]
            release(&sc)
        free(prepared)
        if job.failed:
            free(out_rows)
            raise MemoryError("the n-gram kernel could not allocate its buffers")
        result = np.empty(used, dtype=np.int64)
        cdef int64_t[::1] rv = result
        if used > 0:
            memcpy(&rv[0], out_rows, used * sizeof(int64_t))
        free(out_rows)
        return result, found, total, subwords

    def pool(self, RowTable table, int threads=1, list texts=None, const int64_t[::1] values=None,
             const int64_t[::1] offsets=None, bint values_are_rows=False):
        """(pooled float32 [texts, dim], found, total, subwords). Inputs: ``texts`` (lowercased strs), or ``values``
        + ``offsets``: word ids per text (a non-default token pattern) or, with ``values_are_rows``,
        embedding rows per text (pooling alone, for the benchmark's gather-only time)."""
        cdef Job job
        cdef Mode mode = MODE_TEXTS if texts is not None else (MODE_ROWS if values_are_rows else MODE_IDS)
        cdef int64_t n, t
        if texts is None:
            _check_offsets(values, offsets)
        n = len(texts) if texts is not None else offsets.shape[0] - 1
        cdef int parts
        cdef Text *prepared = NULL
        if mode != MODE_ROWS and self.max_row >= table.rows:
            raise ValueError(f"the vocabulary's rows reach {self.max_row}, the table has {table.rows} rows")
        self._job(&job, mode, n)
        job.table = &table.tb
        out = np.empty((n, table.dim), dtype=np.float32)
        found = np.empty(n, dtype=np.int64)
        total = np.empty(n, dtype=np.int64)
        subwords = np.zeros(n, dtype=np.int64)
        if n == 0:
            return out, found, total, subwords
        cdef float[:, ::1] ov = out
        cdef int64_t[::1] fv = found, tv = total, sv = subwords
        cost_array = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] cost = cost_array
        if mode == MODE_TEXTS:
            prepared = prepare_texts(texts, &cost[0])
            job.texts = prepared
        else:
            _check_offsets(values, offsets)
            if mode == MODE_ROWS and values.shape[0] > 0:
                if np.min(values) < 0 or np.max(values) >= table.rows:
                    raise ValueError(f"rows must lie in [0, {table.rows})")
            job.in_values = &values[0] if values.shape[0] > 0 else NULL
            job.in_offsets = &offsets[0]
            for t in range(n):
                cost[t] = offsets[t + 1] - offsets[t] + 16
        job.out = &ov[0, 0] if table.dim > 0 else NULL
        job.found = &fv[0]
        job.total = &tv[0]
        job.subwords = &sv[0]
        try:
            with nogil:
                parts = plan_parts(&job, threads, &cost[0])
                sd_run_parts(parts, run_part, &job)
        finally:
            free(prepared)
        if job.failed:
            raise MemoryError("the n-gram kernel could not allocate its buffers")
        return out, found, total, subwords


cdef _check_offsets(const int64_t[::1] values, const int64_t[::1] offsets):
    cdef int64_t t
    if offsets is None or values is None or offsets.shape[0] < 1 or offsets[0] != 0:
        raise ValueError("offsets must be an int64 array [texts + 1] starting at 0")
    for t in range(offsets.shape[0] - 1):
        if offsets[t + 1] < offsets[t]:
            raise ValueError("offsets must not decrease")
    if offsets[offsets.shape[0] - 1] != values.shape[0]:
        raise ValueError(f"offsets end at {offsets[offsets.shape[0] - 1]}, values hold {values.shape[0]}")


def simd():
    """Which row accumulation runs: "f16c" (x86 vector forms) or "portable"."""
    return sd_simd_name().decode("ascii")


def select_simd(bint portable):
    """Choose the portable forms (True) or the best this CPU has (False); for tests and benchmarks."""
    sd_simd_select(portable)


def half_to_float_portable(const uint16_t[::1] bits):
    """The software float16 -> float32 conversion applied to raw float16 bit patterns (tests)."""
    out = np.empty(bits.shape[0], dtype=np.float32)
    cdef float[::1] ov = out
    cdef Py_ssize_t i
    for i in range(bits.shape[0]):
        ov[i] = sd_half_to_float(bits[i])
    return out


cdef _init():
    cdef int c
    for c in range(256):
        WORD_LATIN1[c] = 1 if (Py_UNICODE_ISALNUM(<Py_UCS4>c) or c == 0x5F) else 0
    sd_simd_select(0)


_init()
