/* Masked linear layer for K straight-through Gumbel-sigmoid mask samples at temperature 1, on the CPU
 * (modmask.fused_linear builds and calls it).
 *
 * The default path samples K masked copies of a weight (K x OUT x IN in memory) and multiplies each with
 * its chunk of 16-32 rows, and in the backward writes each sample's weight gradient before the mask kernel
 * sums them. Here blocks of rows of the masked weight are sampled into a panel that stays in cache and
 * multiplied at once, and each sample's weight gradient is summed from a buffer that stays in cache: the
 * K copies never reach memory. The noise is modmask.gumbel's counter hash; the mask bits and the saved
 * factors are those of gumbel's kernels (the same expressions; sample_row is compiled without FMA
 * contraction). Only the order of the sums in the products differs from the batched matmuls.
 *
 * Layouts (all row-major, contiguous, float32): x (K, B, IN), weight/p/q (OUT, IN) with p = sigmoid(l),
 * q = sigmoid(-l), keys (K, 2) int32, y (K, B, OUT), factors (K, OUT, IN): u(1-u)/d^2 with the sign bit
 * set where the sample drops the weight (the format of gumbel's saved factors).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define LANES 16
#else
#define LANES 8
#endif
typedef float vf __attribute__((vector_size(4 * LANES)));
typedef uint32_t vu __attribute__((vector_size(4 * LANES)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));

#define ALWAYS_INLINE static inline __attribute__((always_inline))
/* No contraction of a * b + c into one FMA in the functions whose results must have gumbel's bits: GCC takes
 * the attribute, clang the pragma at the top of the function body. */
#if defined(__clang__)
#define NO_FMA_CONTRACTION
#define NO_FMA_CONTRACTION_BODY _Pragma("STDC FP_CONTRACT OFF")
#else
#define NO_FMA_CONTRACTION __attribute__((optimize("fp-contract=off")))
#define NO_FMA_CONTRACTION_BODY
#endif

ALWAYS_INLINE vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
ALWAYS_INLINE vi loadi(const float *p) { vi v; memcpy(&v, p, sizeof v); return v; }
ALWAYS_INLINE void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
ALWAYS_INLINE float hsum(vf v) { float s = 0.0f; for (int j = 0; j < LANES; j++) s += v[j]; return s; }

ALWAYS_INLINE uint32_t hash32(uint32_t x) {
    x ^= x >> 16; x *= 0x7FEB352Du; x ^= x >> 15; x *= 0x846CA68Bu; return x ^ (x >> 16);
}
ALWAYS_INLINE vu hash32v(vu x) {
    x ^= x >> 16; x *= 0x7FEB352Du; x ^= x >> 15; x *= 0x846CA68Bu; return x ^ (x >> 16);
}
/* gumbel._counter_uniform: the top 23 bits of the hash as (j + 0.5) / 2^23 */
ALWAYS_INLINE float uniform1(uint32_t index, uint32_t ka, uint32_t kb) {
    uint32_t h = hash32(hash32(index ^ ka) ^ kb);
    return ((float)(int32_t)((h >> 9) & 0x7FFFFFu) + 0.5f) * (1.0f / 8388608.0f);
}
ALWAYS_INLINE vf uniformv(vu index, uint32_t ka, uint32_t kb) {
    vu h = hash32v(hash32v(index ^ ka) ^ kb);
    vf j = __builtin_convertvector((vi)((h >> 9) & 0x7FFFFFu), vf);
    return (j + 0.5f) * (1.0f / 8388608.0f);
}

/* One masked row of sample k: panel[i] = bit ? w[i] : 0 and, unless factors is NULL, the backward's
 * factor u(1-u)/d^2 with d = q + (p - q) u, negated where the bit is 0 (gumbel's saved factors). Compiled
 * without FMA contraction so that the factors have gumbel's bits. */
NO_FMA_CONTRACTION
static void sample_row(const float *w, const float *p, const float *q, uint32_t first_index, uint32_t ka,
                       uint32_t kb, int n, float *panel, float *factors) {
    NO_FMA_CONTRACTION_BODY
    vu lane;
    for (int j = 0; j < LANES; j++) lane[j] = (uint32_t)j;
    const vi sign = (vi)((vu){0} + 0x80000000u);
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        vf u = uniformv(lane + (first_index + (uint32_t)i), ka, kb);
        vf qv = load(q + i);
        vi keep = (vi)(u > qv);
        store(panel + i, (vf)(loadi(w + i) & keep));
        if (factors) {
            vf pv = load(p + i);
            vf d = qv + (pv - qv) * u;
            vf f = (u * (1.0f - u)) / (d * d);
            store(factors + i, (vf)((vi)f ^ (~keep & sign)));
        }
    }
    for (; i < n; i++) {
        float u = uniform1(first_index + (uint32_t)i, ka, kb);
        int keep = u > q[i];
        panel[i] = keep ? w[i] : 0.0f;
        if (factors) {
            float d = q[i] + (p[i] - q[i]) * u;
            float f = (u * (1.0f - u)) / (d * d);
            factors[i] = keep ? f : -f;
        }
    }
}

/* ---- forward: y[k] = x[k] (weight * bits_k)^T, OB masked rows at a time ---------------------------- */
#define RB 4
#define OB 3

ALWAYS_INLINE void dot_tile(const float *xr, const float *panel, int IN, float *yr, int OUT, const int nr,
                            const int no) {
    vf acc[RB][OB];
    for (int r = 0; r < nr; r++) for (int o = 0; o < no; o++) acc[r][o] = (vf){0};
    int i = 0;
    for (; i + LANES <= IN; i += LANES) {
        vf pv[OB];
        for (int o = 0; o < no; o++) pv[o] = load(panel + (size_t)o * IN + i);
        for (int r = 0; r < nr; r++) {
            vf xv = load(xr + (size_t)r * IN + i);
            for (int o = 0; o < no; o++) acc[r][o] += xv * pv[o];
        }
    }
    for (int r = 0; r < nr; r++)
        for (int o = 0; o < no; o++) {
            float s = hsum(acc[r][o]);
            for (int t = i; t < IN; t++) s += xr[(size_t)r * IN + t] * panel[(size_t)o * IN + t];
            yr[(size_t)r * OUT + o] = s;
        }
}

static void dot_tile_any(const float *xr, const float *panel, int IN, float *yr, int OUT, int nr, int no) {
    if (nr == RB && no == OB) { dot_tile(xr, panel, IN, yr, OUT, RB, OB); return; }
    for (int r = 0; r < nr; r++)
        for (int o = 0; o < no; o++) dot_tile(xr + (size_t)r * IN, panel + (size_t)o * IN, IN,
                                              yr + (size_t)r * OUT + o, OUT, 1, 1);
}

/* Rows [o_begin, o_end) of every sample. Returns 0, or 1 if its scratch memory could not be allocated. */
int mlf_forward(const float *x, const float *w, const float *p, const float *q, const int32_t *keys,
                float *y, float *factors, int K, int B, int IN, int OUT, int o_begin, int o_end) {
    float *panel = malloc(sizeof(float) * OB * (size_t)(IN > 0 ? IN : 1));
    if (!panel) return 1;
    for (int k = 0; k < K; k++) {
        uint32_t ka = (uint32_t)keys[2 * k], kb = (uint32_t)keys[2 * k + 1];
        const float *xk = x + (size_t)k * B * IN;
        float *yk = y + (size_t)k * B * OUT;
        float *fk = factors ? factors + (size_t)k * OUT * IN : 0;
        for (int o0 = o_begin; o0 < o_end; o0 += OB) {
            int no = o_end - o0 < OB ? o_end - o0 : OB;
            for (int j = 0; j < no; j++) {
                size_t row = (size_t)(o0 + j) * IN;
                sample_row(w + row, p + row, q + row, (uint32_t)row, ka, kb, IN, panel + (size_t)j * IN,
                           fk ? fk + row : 0);
            }
            for (int r0 = 0; r0 < B; r0 += RB) {
                int nr = B - r0 < RB ? B - r0 : RB;
                dot_tile_any(xk + (size_t)r0 * IN, panel, IN, yk + (size_t)r0 * OUT + o0, OUT, nr, no);
            }
        }
    }
    free(panel);
    return 0;
}

/* ---- input gradient: dx[k] = g[k] (weight * bits_k), the bits read from the factors' sign ------------
 * Blocks of OBD rows of the masked weight, read row by row (in memory order), each added into dx[k]. */
#define RB2 6
#define OBD 64
#define IB (2 * LANES)
#define IC (8 * IB)

ALWAYS_INLINE void dx_tile(const float *gr, int OUT, const float *panel, int IN, int no, float *dxr, const int nr,
                           const int nv, int first) {
    vf acc[RB2][2];
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = first ? (vf){0} : load(dxr + (size_t)r * IN + v * LANES);
    for (int o = 0; o < no; o++) {
        vf pv[2];
        for (int v = 0; v < nv; v++) pv[v] = load(panel + (size_t)o * IN + v * LANES);
        for (int r = 0; r < nr; r++) {
            float gv = gr[(size_t)r * OUT + o];
            for (int v = 0; v < nv; v++) acc[r][v] += gv * pv[v];
        }
    }
    for (int r = 0; r < nr; r++)
        for (int v = 0; v < nv; v++) store(dxr + (size_t)r * IN + v * LANES, acc[r][v]);
}

/* Rows [o_begin, o_end) of the weight, which dx starts from (the first block overwrites it). Returns 0, or 1
 * if its scratch memory could not be allocated. */
int mlf_input_grad(const float *g, const float *w, const float *factors, float *dx, int K, int B, int IN, int OUT,
                   int o_begin, int o_end) {
    float *panel = malloc(sizeof(float) * OBD * (size_t)(IN > 0 ? IN : 1));
    if (!panel) return 1;
    for (int k = 0; k < K; k++) {
        const float *gk = g + (size_t)k * B * OUT;
        const float *fk = factors + (size_t)k * OUT * IN;
        float *dxk = dx + (size_t)k * B * IN;
        for (int o0 = o_begin; o0 < o_end; o0 += OBD) {
            int no = o_end - o0 < OBD ? o_end - o0 : OBD;
            for (int o = 0; o < no; o++) {
                size_t row = (size_t)(o0 + o) * IN;
                int i = 0;
                for (; i + LANES <= IN; i += LANES)
                    store(panel + (size_t)o * IN + i, (vf)(loadi(w + row + i) & (loadi(fk + row + i) >= 0)));
                for (; i < IN; i++) {
                    int32_t bits; memcpy(&bits, fk + row + i, 4);
                    panel[(size_t)o * IN + i] = bits >= 0 ? w[row + i] : 0.0f;
                }
            }
            int first = o0 == o_begin, full = IN - IN % IB;
            /* columns in chunks of IC, so that the chunk of the panel that every row tile reads stays in L1 */
            for (int c0 = 0; c0 < full; c0 += IC) {
                int c1 = c0 + IC < full ? c0 + IC : full;
                for (int r0 = 0; r0 < B; r0 += RB2) {
                    int nr = B - r0 < RB2 ? B - r0 : RB2;
                    const float *gr = gk + (size_t)r0 * OUT + o0;
                    float *dxr = dxk + (size_t)r0 * IN;
                    for (int i0 = c0; i0 < c1; i0 += IB) {
                        if (nr == RB2) dx_tile(gr, OUT, panel + i0, IN, no, dxr + i0, RB2, 2, first);
                        else for (int r = 0; r < nr; r++) dx_tile(gr + (size_t)r * OUT, OUT, panel + i0, IN, no,
                                                                  dxr + (size_t)r * IN + i0, 1, 2, first);
                    }
                }
            }
            for (int r = 0; r < B; r++)
                for (int i = full; i < IN; i++) {
                    const float *gr = gk + (size_t)r * OUT + o0;
                    float s = first ? 0.0f : dxk[(size_t)r * IN + i];
                    for (int o = 0; o < no; o++) s += gr[o] * panel[(size_t)o * IN + i];
                    dxk[(size_t)r * IN + i] = s;
                }
        }
    }
    free(panel);
    return 0;
}

/* ---- parameter gradients: per sample G_k = g[k]^T x[k] (OUT x IN), never stored; summed over the samples
 * into grad_logit = (sum_k G_k |f_k|) * (weight * p * q) (gumbel's expression) and grad_weight = sum_k G_k
 * bit_k. grad_weight may be NULL (weights not trained). For each block of OB2
 * rows and each sample, G goes to a buffer that stays in L1 (the product with 6 x 2 vectors in registers),
 * then is multiplied with the factors into the totals. ------------------------------------------------- */
#define OB2 6

/* One row of sample k into the totals: total_logit += G |f|, total_weight += G bit, and after the last sample
 * total_logit *= weight * p * q. Without FMA contraction, so that the sums do not depend on whether the weight
 * gradient is wanted (the compiler would contract the two code paths differently). */
NO_FMA_CONTRACTION __attribute__((noinline))
static void accumulate_row(const float *G, const float *f, const float *w, const float *p, const float *q,
                           float *total_logit, float *total_weight, int n, int first, int last) {
    NO_FMA_CONTRACTION_BODY
    const vi sign = (vi)((vu){0} + 0x80000000u);
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        vf Gv = load(G + i);
        vi fv = loadi(f + i);
        vf l = Gv * (vf)(fv & ~sign);
        if (!first) l = load(total_logit + i) + l;
        if (last) l = l * (load(w + i) * load(p + i) * load(q + i));
        store(total_logit + i, l);
        if (total_weight) {
            vf wv = (vf)((vi)Gv & (fv >= 0));
            store(total_weight + i, first ? wv : load(total_weight + i) + wv);
        }
    }
    for (; i < n; i++) {
        int32_t bits; memcpy(&bits, f + i, 4);
        float l = G[i] * (f[i] < 0.0f ? -f[i] : f[i]);
        if (!first) l = total_logit[i] + l;
        if (last) l = l * (w[i] * p[i] * q[i]);
        total_logit[i] = l;
        if (total_weight) {
            float wv = bits >= 0 ? G[i] : 0.0f;
            total_weight[i] = first ? wv : total_weight[i] + wv;
        }
    }
}

/* Rows [o_begin, o_end). Returns 0, or 1 if its scratch memory could not be allocated. */
int mlf_param_grad(const float *g, const float *x, const float *factors, const float *w, const float *p,
                   const float *q, float *total_logit, float *total_weight, int K, int B, int IN, int OUT,
                   int o_begin, int o_end) {
    float *buffer = malloc(sizeof(float) * OB2 * (size_t)(IN > 0 ? IN : 1));
    if (!buffer) return 1;
    for (int o0 = o_begin; o0 < o_end; o0 += OB2) {
        int no = o_end - o0 < OB2 ? o_end - o0 : OB2;
        for (int k = 0; k < K; k++) {
            const float *gk = g + (size_t)k * B * OUT, *xk = x + (size_t)k * B * IN;
            int i0 = 0;
            if (no == OB2) {
                for (; i0 + IB <= IN; i0 += IB) {
                    vf G[OB2][2];
                    for (int o = 0; o < OB2; o++) G[o][0] = G[o][1] = (vf){0};
                    for (int r = 0; r < B; r++) {
                        vf x0 = load(xk + (size_t)r * IN + i0), x1 = load(xk + (size_t)r * IN + i0 + LANES);
                        for (int o = 0; o < OB2; o++) {
                            float gv = gk[(size_t)r * OUT + o0 + o];
                            G[o][0] += gv * x0; G[o][1] += gv * x1;
                        }
                    }
                    for (int o = 0; o < OB2; o++) {
                        store(buffer + (size_t)o * IN + i0, G[o][0]);
                        store(buffer + (size_t)o * IN + i0 + LANES, G[o][1]);
                    }
                }
            }
            for (int o = 0; o < no; o++)
                for (int i = no == OB2 ? i0 : 0; i < IN; i++) {
                    float s = 0.0f;
                    for (int r = 0; r < B; r++) s += gk[(size_t)r * OUT + o0 + o] * xk[(size_t)r * IN + i];
                    buffer[(size_t)o * IN + i] = s;
                }
            const float *fk = factors + (size_t)k * OUT * IN;
            for (int o = 0; o < no; o++) {
                size_t row = (size_t)(o0 + o) * IN;
                accumulate_row(buffer + (size_t)o * IN, fk + row, w + row, p + row, q + row, total_logit + row,
                               total_weight ? total_weight + row : 0, IN, k == 0, k == K - 1);
            }
        }
    }
    free(buffer);
    return 0;
}
