/* Row accumulation for the n-gram kernel (sdcore/_ngram_kernel.pyx): acc[0:n] += row, as float32.
 *
 * The build never uses -march=native (a wheel or image built on one machine must run on another): the
 * x86 vector forms are compiled for their own target only (__attribute__((target(...)))) and chosen at
 * run time from what the CPU reports (sd_simd_init). Everywhere else, or on a CPU without them, the
 * portable forms run: a software float16 -> float32 conversion (IEEE 754 binary16, subnormals, inf and
 * NaN included) and plain loops the compiler may vectorise for the baseline target.
 *
 * Also here: a tiny "run these parts on threads" helper (pthreads; the calling thread runs part 0).
 */
#ifndef SD_KERNEL_SIMD_H
#define SD_KERNEL_SIMD_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define SD_X86 1
#include <immintrin.h>
#endif

#if !defined(_WIN32)
#include <pthread.h>
#define SD_HAVE_PTHREADS 1
#endif

/* --- float16 -> float32 in software ----------------------------------------------------------------- */

static inline float sd_half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    float out;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else { /* subnormal: mantissa * 2^-24, exact in float32 */
            out = (float)mantissa * (1.0f / 16777216.0f);
            memcpy(&bits, &out, 4);
            bits |= sign;
        }
    } else if (exponent == 31) { /* inf, NaN (payload kept) */
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    }
    memcpy(&out, &bits, 4);
    return out;
}

static void sd_add_f16_soft(float *acc, const uint16_t *row, int64_t n) {
    for (int64_t j = 0; j < n; j++) acc[j] += sd_half_to_float(row[j]);
}

static void sd_add_f32_plain(float *acc, const float *row, int64_t n) {
    for (int64_t j = 0; j < n; j++) acc[j] += row[j];
}

static void sd_add_i8_plain(float *acc, const int8_t *row, float scale, int64_t n) {
    for (int64_t j = 0; j < n; j++) acc[j] += scale * (float)row[j];
}

/* --- x86 vector forms, each compiled for its own target --------------------------------------------- */

#ifdef SD_X86
__attribute__((target("avx,f16c"))) static void sd_add_f16_f16c(float *acc, const uint16_t *row, int64_t n) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m256 r0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + j)));
        __m256 r1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + j + 8)));
        _mm256_storeu_ps(acc + j, _mm256_add_ps(_mm256_loadu_ps(acc + j), r0));
        _mm256_storeu_ps(acc + j + 8, _mm256_add_ps(_mm256_loadu_ps(acc + j + 8), r1));
    }
    for (; j + 8 <= n; j += 8) {
        __m256 r = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + j)));
        _mm256_storeu_ps(acc + j, _mm256_add_ps(_mm256_loadu_ps(acc + j), r));
    }
    for (; j < n; j++) acc[j] += _cvtsh_ss(row[j]);
}

__attribute__((target("avx"))) static void sd_add_f32_avx(float *acc, const float *row, int64_t n) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(acc + j, _mm256_add_ps(_mm256_loadu_ps(acc + j), _mm256_loadu_ps(row + j)));
    for (; j < n; j++) acc[j] += row[j];
}

__attribute__((target("avx2"))) static void sd_add_i8_avx2(float *acc, const int8_t *row, float scale, int64_t n) {
    __m256 s = _mm256_set1_ps(scale);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(row + j)));
        __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(q), s);
        _mm256_storeu_ps(acc + j, _mm256_add_ps(_mm256_loadu_ps(acc + j), v));
    }
    for (; j < n; j++) acc[j] += scale * (float)row[j];
}
#endif

/* --- run-time dispatch ---------------------------------------------------------------------------------- */

typedef void (*sd_add_f16_fn)(float *, const uint16_t *, int64_t);
typedef void (*sd_add_f32_fn)(float *, const float *, int64_t);
typedef void (*sd_add_i8_fn)(float *, const int8_t *, float, int64_t);

static sd_add_f16_fn sd_add_f16 = sd_add_f16_soft;
static sd_add_f32_fn sd_add_f32 = sd_add_f32_plain;
static sd_add_i8_fn sd_add_i8 = sd_add_i8_plain;
static int sd_cpu_f16c = 0, sd_cpu_avx = 0, sd_cpu_avx2 = 0;

/* Detects the CPU's features once; ``portable`` != 0 selects the portable forms (tests compare both). */
static void sd_simd_select(int portable) {
#ifdef SD_X86
    static int probed = 0;
    if (!probed) {
        __builtin_cpu_init();
        sd_cpu_avx = __builtin_cpu_supports("avx") ? 1 : 0;
        sd_cpu_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
        /* F16C has no __builtin_cpu_supports name in every gcc: CPUID leaf 1, ECX bit 29. AVX's check
         * above includes the OS's saving of the YMM registers (XGETBV), which F16C's 256-bit form needs. */
        unsigned int eax, ebx, ecx, edx;
        __asm__ __volatile__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
        sd_cpu_f16c = (sd_cpu_avx && ((ecx >> 29) & 1u)) ? 1 : 0;
        probed = 1;
    }
    sd_add_f16 = (!portable && sd_cpu_f16c) ? sd_add_f16_f16c : sd_add_f16_soft;
    sd_add_f32 = (!portable && sd_cpu_avx) ? sd_add_f32_avx : sd_add_f32_plain;
    sd_add_i8 = (!portable && sd_cpu_avx2) ? sd_add_i8_avx2 : sd_add_i8_plain;
#else
    (void)portable;
#endif
}

static const char *sd_simd_name(void) {
    return sd_add_f16 == sd_add_f16_soft ? "portable" : "f16c";
}

static inline void sd_prefetch(const void *p) {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p, 0, 1);
#else
    (void)p;
#endif
}

/* --- parts on threads ------------------------------------------------------------------------------------ */

typedef void (*sd_part_fn)(void *ctx, int part);

typedef struct {
    sd_part_fn fn;
    void *ctx;
    int part;
} sd_part_arg;

#ifdef SD_HAVE_PTHREADS
static void *sd_part_main(void *p) {
    sd_part_arg *a = (sd_part_arg *)p;
    a->fn(a->ctx, a->part);
    return NULL;
}
#endif

#define SD_MAX_PARTS 64

/* Runs fn(ctx, 0..parts-1): part 0 on the calling thread, the others on new threads. A thread that
 * cannot be started has its part run on the calling thread, so every part always runs exactly once. */
static void sd_run_parts(int parts, sd_part_fn fn, void *ctx) {
    if (parts > SD_MAX_PARTS) parts = SD_MAX_PARTS;
#ifdef SD_HAVE_PTHREADS
    pthread_t threads[SD_MAX_PARTS];
    sd_part_arg args[SD_MAX_PARTS];
    int started[SD_MAX_PARTS];
    for (int p = 1; p < parts; p++) {
        args[p].fn = fn;
        args[p].ctx = ctx;
        args[p].part = p;
        started[p] = pthread_create(&threads[p], NULL, sd_part_main, &args[p]) == 0;
    }
    if (parts > 0) fn(ctx, 0);
    for (int p = 1; p < parts; p++) {
        if (started[p]) pthread_join(threads[p], NULL);
        else fn(ctx, p);
    }
#else
    for (int p = 0; p < parts; p++) fn(ctx, p);
#endif
}

/* PyUnicode_READY is needed before PyUnicode_KIND on 3.11 (legacy strings); from 3.12 on it is a no-op. */
#if PY_VERSION_HEX < 0x030C0000
#define SD_UNICODE_READY(o) PyUnicode_READY(o)
#else
#define SD_UNICODE_READY(o) 0
#endif

#endif
