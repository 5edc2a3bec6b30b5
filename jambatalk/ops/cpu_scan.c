/* Forward-only kernels for CPUs (Mamba-1 and the MoE's gate), built by jambatalk/ops/cpu_scan.py on first use.
 *
 * jambatalk_scan_forward: the selective scan alone, channel-major (mamba-ssm's layout).
 * jambatalk_mamba_conv, jambatalk_mamba_scan: everything in a Mamba mixer between its projections, in
 * the time-major layout that the projections (matrix products) read and write, so that no tensor is
 * transposed or copied and no elementwise pass runs in between.
 *
 * For every batch b and channel d the state h (d_state floats) stays in registers while the loop runs
 * over time: one pass over the inputs instead of PyTorch's several passes over (L, d_inner, d_state)
 * tensors and one dispatched call per step. The exponential is computed inline (no libm call) so that
 * the compiler vectorises the loop over states on any target.
 *
 *   h[t] = exp(max(delta[t] * A, floor)) * h[t-1] + delta[t] * u[t] * B[t]
 *   y[t] = <h[t], C[t]>
 *
 * Layouts (contiguous float32): u, delta, y: (batch, d_inner, L); B, C: (batch, L, d_state);
 * A: (d_inner, d_state); h: (batch, d_inner, d_state), the initial state on entry, the last on return.
 *
 * jambatalk_moe_gate: a mixture of experts' softmax gate and GELU between its two matrix products, one pass.
 */
/* No headers: it builds with a bare compiler (no C library headers installed). */

#define MAX_STATE 256
#define MAX_EXPERTS 256
/* the conv and the MoE gate share their rows between threads from this many floats of output on (about
 * 10 us of work on one thread): below it waking the others costs more than it saves */
#define PARALLEL_MIN_FLOATS 16384

/* 2^k for an integer k in [-126, 127]: a normal float built from its exponent bits */
static inline float pow2i(int k) {
    const int bits = (k + 127) << 23;
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);
    return scale;
}

/* The polynomials, written once for the scalar functions below and their vector twins further down
 * (the same expressions evaluate on a float or, element by element, on a vector of floats). */

/* exp(r) for |r| <= ln(2) / 2: degree-7 Taylor polynomial (relative error about 1e-7, float32 rounding) */
#define EXP_POLY(r) \
    ((((((((r) * (1.0f / 5040.0f) + 1.0f / 720.0f) * (r) + 1.0f / 120.0f) * (r) + 1.0f / 24.0f) * (r) + \
        1.0f / 6.0f) * (r) + 0.5f) * (r) + 1.0f) * (r) + 1.0f)

/* 2^r for |r| <= 1/2: a degree-5 fit of the relative error with p(0) = 1 (within 2e-7 of 2^r, relative,
 * evaluated in float32) */
#define EXP2_POLY(r) \
    ((((((r) * 1.3264708681350547e-03f + 9.6715094436904906e-03f) * (r) + 5.5507337583359934e-02f) * (r) + \
        2.4022242134917760e-01f) * (r) + 6.9314697761458421e-01f) * (r) + 1.0f)

/* (atanh(s) / s) for s = v / (2 + v) <= 1/3 from s2 = s^2: the odd series to s^15 (float32-exact) */
#define ATANH_SERIES(s2) \
    ((((((((s2) * (1.0f / 15.0f) + 1.0f / 13.0f) * (s2) + 1.0f / 11.0f) * (s2) + 1.0f / 9.0f) * (s2) + \
        1.0f / 7.0f) * (s2) + 1.0f / 5.0f) * (s2) + 1.0f / 3.0f) * (s2) + 1.0f)

/* x - k ln(2) with ln(2) in two parts, so that the product with k is exact in the first */
#define LN2_REDUCE(x, kf) ((x) - (kf) * 0.693145751953125f - (kf) * 1.428606765330187e-06f)

/* exp(x) = 2^k exp(r) for k = round(x / ln 2) given by the caller, |r| <= ln(2) / 2 */
static inline float exp_reduced(float x, int k) {
    const float r = LN2_REDUCE(x, (float)k);
    return EXP_POLY(r) * pow2i(k);
}

/* exp(x) for x in [floor, 0] with floor >= -87 */
static inline float exp_nonpositive(float x) {
    const float y = x * 1.44269504088896341f;
    return exp_reduced(x, (int)(y - 0.5f)); /* y <= 0: truncating y - 0.5 rounds to nearest */
}

/* exp(x) for any x, clamped to [-87, 88] (the float32 normal range) */
static inline float exp_clamped(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float y = x * 1.44269504088896341f;
    return exp_reduced(x, (int)(y + (y >= 0.0f ? 0.5f : -0.5f))); /* round half away from zero */
}

/* 2^y for y in [-126, 0]: 2^k 2^r, k = round(y), |r| <= 1/2 */
static inline float exp2_nonpositive(float y) {
    const int k = (int)(y - 0.5f); /* y <= 0: truncating y - 0.5 rounds to nearest */
    const float r = y - (float)k;
    return EXP2_POLY(r) * pow2i(k);
}

static inline float silu(float x) { return x / (1.0f + exp_clamped(-x)); }

/* softplus(x) = max(x, 0) + log1p(exp(-|x|)), with log1p(v) = 2 atanh(v / (2 + v)) for v in (0, 1]:
 * s = v / (2 + v) <= 1/3 and the odd series to s^15 is float32-exact; no 1 + v is formed, so tiny v
 * keep their relative precision. */
static inline float softplus(float x) {
    const float a = x < 0.0f ? x : -x;
    const float v = exp_nonpositive(a < -87.0f ? -87.0f : a);
    const float s = v / (2.0f + v), s2 = s * s;
    return (x > 0.0f ? x : 0.0f) + 2.0f * s * ATANH_SERIES(s2);
}

int jambatalk_scan_forward(const float *restrict u, const float *restrict delta, const float *restrict A,
                           const float *restrict B, const float *restrict C, float *restrict h,
                           float *restrict y, long batch, long d_inner, long length, long d_state,
                           float log_floor) {
    if (d_state > MAX_STATE || log_floor < -87.0f)
        return 1;
    for (long b = 0; b < batch; b++) {
        const float *Bb = B + b * length * d_state, *Cb = C + b * length * d_state;
        for (long d = 0; d < d_inner; d++) {
            const long row = b * d_inner + d;
            const float *ud = u + row * length, *dd = delta + row * length, *Ad = A + d * d_state;
            float *yd = y + row * length, *hd = h + row * d_state;
            float state[MAX_STATE];
            for (long n = 0; n < d_state; n++)
                state[n] = hd[n];
            for (long t = 0; t < length; t++) {
                const float dt = dd[t], drive = dt * ud[t];
                const float *Bt = Bb + t * d_state, *Ct = Cb + t * d_state;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (long n = 0; n < d_state; n++) {
                    float e = dt * Ad[n];
                    e = e > log_floor ? e : log_floor;
                    state[n] = exp_nonpositive(e) * state[n] + drive * Bt[n];
                    acc += state[n] * Ct[n];
                }
                yd[t] = acc;
            }
            for (long n = 0; n < d_state; n++)
                hd[n] = state[n];
        }
    }
    return 0;
}

/* Lanes of a vector register: the blocked scan keeps a block of this many channels' states in registers. */
#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
typedef float vfloat __attribute__((vector_size(4 * LANES)));
typedef int vint __attribute__((vector_size(4 * LANES)));

static inline vfloat vload(const float *p) {
    vfloat v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(float *p, vfloat v) { __builtin_memcpy(p, &v, sizeof v); }

static inline vfloat vsplat(float x) { return (vfloat){} + x; }

/* lane by lane: mask (all ones or zeros, a comparison's result) ? a : b */
static inline vfloat vselect(vint mask, vfloat a, vfloat b) { return (vfloat)(((vint)a & mask) | ((vint)b & ~mask)); }

/* written lane by lane: compilers turn these loops into one max or min instruction */
static inline vfloat vmax(vfloat a, vfloat b) {
    vfloat m;
    for (int l = 0; l < LANES; l++)
        m[l] = a[l] > b[l] ? a[l] : b[l];
    return m;
}

static inline vfloat vmin(vfloat a, vfloat b) {
    vfloat m;
    for (int l = 0; l < LANES; l++)
        m[l] = a[l] < b[l] ? a[l] : b[l];
    return m;
}

/* p 2^k for normal results: k added to p's exponent bits, the same exact scaling as pow2i's multiply */
static inline vfloat vscale2(vfloat p, vint k) { return (vfloat)((vint)p + (k << 23)); }

/* exp_reduced, exp_nonpositive, exp_clamped, exp2_nonpositive, silu and softplus lane by lane: the same
 * reductions and polynomials as the scalar functions above. Results below 2^-126 never occur: the
 * callers' ranges keep them normal. */
static inline vfloat vexp_reduced(vfloat x, vint k) {
    const vfloat r = LN2_REDUCE(x, __builtin_convertvector(k, vfloat));
    return vscale2(EXP_POLY(r), k);
}

static inline vfloat vexp_nonpositive(vfloat x) {
    const vfloat y = x * 1.44269504088896341f;
    return vexp_reduced(x, __builtin_convertvector(y - 0.5f, vint));
}

static inline vfloat vexp_clamped(vfloat x) {
    x = vmax(vmin(x, vsplat(88.0f)), vsplat(-87.0f));
    const vfloat y = x * 1.44269504088896341f;
    const vfloat half = vselect(y >= vsplat(0.0f), vsplat(0.5f), vsplat(-0.5f));
    return vexp_reduced(x, __builtin_convertvector(y + half, vint));
}

#if LANES == 16 && defined(__AVX512F__)
/* AVX-512 rounds (vrndscaleps) and scales by a power of two (vscalefps) in one instruction each */
static inline vfloat vexp2_nonpositive(vfloat y) {
    const vfloat k = __builtin_ia32_rndscaleps_mask(y, 0, y, (unsigned short)-1, 4); /* nearest */
    const vfloat r = y - k;
    return __builtin_ia32_scalefps512_mask(EXP2_POLY(r), k, y, (unsigned short)-1, 4);
}
#else
static inline vfloat vexp2_nonpositive(vfloat y) {
    const vint k = __builtin_convertvector(y - 0.5f, vint); /* y <= 0: truncation rounds to nearest */
    const vfloat r = y - __builtin_convertvector(k, vfloat);
    return vscale2(EXP2_POLY(r), k);
}
#endif

#if LANES == 16 && defined(__AVX512F__)
/* 1 / x: the 14-bit estimate and one Newton step (28 bits), in place of a division at a quarter of the speed */
static inline vfloat vrecip(vfloat x) {
    const vfloat r = __builtin_ia32_rcp14ps512_mask(x, x, (unsigned short)-1);
    return r * (2.0f - x * r);
}
#else
static inline vfloat vrecip(vfloat x) { return 1.0f / x; }
#endif

static inline vfloat vsilu(vfloat x) { return x * vrecip(1.0f + vexp_clamped(-x)); }

static inline vfloat vsoftplus(vfloat x) {
    const vfloat v = vexp_nonpositive(vmax(vmin(x, -x), vsplat(-87.0f)));
    const vfloat s = v * vrecip(2.0f + v), s2 = s * s;
    return vmax(x, vsplat(0.0f)) + 2.0f * s * ATANH_SERIES(s2);
}

/* The causal depthwise convolution and its SiLU, time-major.
 *
 *   out[b, t, d] = silu(bias[d] + sum_k w[k, d] * x[b, t - (K - 1) + k, d])
 *
 * x[b, t, d] = xz[(b * length + t) * xz_stride + d] (the first d_inner columns of in_proj's output);
 * times before 0 read prev (batch, K - 1, d_inner), the last K - 1 inputs of the previous chunk, or
 * zeros where prev is NULL. w: (K, d_inner); out: (batch, length, d_inner). */
int jambatalk_mamba_conv(const float *restrict xz, long xz_stride, const float *restrict prev,
                         const float *restrict w, const float *restrict bias, float *restrict out, long batch,
                         long length, long d_inner, long K, long threads) {
    const long rows = batch * length;
    /* the rows (times) are independent: shared between threads, the same values as on one */
#pragma omp parallel for schedule(static) num_threads(threads > 1 ? threads : 1) \
    if (threads > 1 && rows * d_inner >= PARALLEL_MIN_FLOATS)
    for (long row = 0; row < rows; row++) {
        const long b = row / length, t = row % length;
        float *o = out + row * d_inner;
        for (long d = 0; d < d_inner; d++)
            o[d] = bias[d];
        for (long k = 0; k < K; k++) {
            const long src = t - (K - 1) + k;
            const float *in;
            if (src >= 0)
                in = xz + (b * length + src) * xz_stride;
            else if (prev)
                in = prev + (b * (K - 1) + src + K - 1) * d_inner;
            else
                continue;
            const float *wk = w + k * d_inner;
#pragma omp simd
            for (long d = 0; d < d_inner; d++)
                o[d] += wk[d] * in[d];
        }
        long d = 0;
        for (; d + LANES <= d_inner; d += LANES) /* vsilu: a reciprocal estimate, not a division */
            vstore(o + d, vsilu(vload(o + d)));
        for (; d < d_inner; d++)
            o[d] = silu(o[d]);
    }
    return 0;
}

#define TILE 32 /* time steps whose step sizes are made ahead of the scan over them */

/* The decay 2^(a b) of a state update for a step size a >= 0 and a base-2 rate b <= 0: vdecay_any for any
 * exponent, vdecay_near for exponents down to -NEAR_EXPONENT, in fewer instructions. */
#define NEAR_EXPONENT 4194304.0f /* 2^22 */
#if LANES == 16 && defined(__AVX512F__)
/* vscalefps takes any exponent: below the floor a decay is 2^(a b), or 0 once flushed (jambatalk_mamba_scan
 * sets flush-to-zero for its call), against the PyTorch path's e^-60 (9e-27), so no clamp */
static inline vfloat vdecay_any(vfloat a, vfloat b, vfloat floor_v) {
    (void)floor_v;
    return vexp2_nonpositive(a * b);
}

/* The fused a b + 1.5 * 2^23 rounds the exponent to the nearest integer k in its low bits, as vrndscaleps
 * would (two micro-ops, on the one port that vscalefps needs too), and r = a b - k is the fused product's
 * exact remainder: four instructions before the polynomial instead of five. Beyond -2^22 the sum no longer
 * holds k exactly. */
static inline vfloat vdecay_near(vfloat a, vfloat b, vfloat floor_v) {
    (void)floor_v;
    const vfloat shifter = vsplat(12582912.0f);
    vfloat t = a * b + shifter;
    __asm__("" : "+v"(t)); /* -ffast-math would fold (a b + s) - s back into a b */
    const vfloat k = t - shifter;
    return __builtin_ia32_scalefps512_mask(EXP2_POLY(a * b - k), k, k, (unsigned short)-1, 4);
}
#else
/* the integer scaling needs a normal result: the exponent is floored */
static inline vfloat vdecay_any(vfloat a, vfloat b, vfloat floor_v) { return vexp2_nonpositive(vmax(a * b, floor_v)); }
#define vdecay_near vdecay_any
#endif

/* One tile's state updates for a block of channels, each time's sum over the states into y (before the skip
 * and the gate), its decays made by DECAY. */
#define TILE_UPDATES(DECAY)                                                                                 \
    for (long i = 0; i < steps; i++) {                                                                      \
        const float *Bt = x_dbl + (row0 + i) * x_stride + dt_rank, *Ct = Bt + NS;                           \
        vfloat acc0 = (vfloat){}, acc1 = (vfloat){};                                                        \
        _Pragma("GCC unroll 16") for (int n = 0; n < NS; n++) {                                             \
            state[n] = DECAY(delta[i], vload(A2 + n * d_inner + d0), floor_v) * state[n] + drive[i] * Bt[n]; \
            if (n & 1)                                                                                      \
                acc1 += state[n] * Ct[n];                                                                   \
            else                                                                                            \
                acc0 += state[n] * Ct[n];                                                                   \
        }                                                                                                   \
        vstore(y + (row0 + i) * d_inner + d0, acc0 + acc1);                                                 \
    }

/* jambatalk_mamba_scan on the channels [0, blocks * LANES) for a fixed d_state NS, the jobs (batch, block of
 * channels) job_begin .. job_end - 1 in b * blocks + blk order: each block of LANES channels runs over all
 * times with its NS state vectors in registers (no state or sum goes through memory inside the loop). Times
 * go in tiles: the step sizes (a long chain of dependent operations each) are made for the whole tile first,
 * so that the scan's loop carries only the state updates; the gate is applied after it. Called with constant
 * NS so that the loops over states unroll. */
static inline __attribute__((always_inline)) void
scan_blocks(const float *restrict u, const float *restrict x_dbl, long x_stride, long dt_rank,
            const float *restrict dt_wt, const float *restrict dt_bias, const float *restrict A2,
            const float *restrict D, const float *restrict z, long z_stride, float *restrict h, float *restrict y,
            long length, long d_inner, long blocks, float floor2, long job_begin, long job_end, const int NS) {
    const vfloat floor_v = vsplat(floor2);
    vfloat delta[TILE], drive[TILE];
    for (long job = job_begin; job < job_end; job++) { /* job = b * blocks + blk: batch b, channel block blk */
        const long b = job / blocks, blk = job % blocks;
        const long d0 = blk * LANES;
        float *hb = h + b * NS * d_inner + d0;
        vfloat state[16]; /* NS <= 16 */
        for (int n = 0; n < NS; n++)
            state[n] = vload(hb + n * d_inner);
        const vfloat bias = vload(dt_bias + d0), Dv = vload(D + d0);
        vfloat rate = vsplat(0.0f); /* the largest rate magnitude, max_n -A2[n], of each channel */
        for (int n = 0; n < NS; n++)
            rate = vmax(rate, -vload(A2 + n * d_inner + d0));
        for (long t0 = 0; t0 < length; t0 += TILE) {
            const long steps = length - t0 < TILE ? length - t0 : TILE;
            const long row0 = b * length + t0;
            for (long i = 0; i < steps; i++) {
                const float *xt = x_dbl + (row0 + i) * x_stride;
                vfloat pre = bias;
                for (long r = 0; r < dt_rank; r++)
                    pre += vload(dt_wt + r * d_inner + d0) * xt[r];
                delta[i] = vsoftplus(pre);
                drive[i] = delta[i] * vload(u + (row0 + i) * d_inner + d0);
            }
            /* the tile's largest exponent magnitude, step size times rate, within vdecay_near's range? */
            vfloat top = delta[0];
            for (long i = 1; i < steps; i++)
                top = vmax(top, delta[i]);
            const vfloat reach = top * rate;
            int near = 1;
            for (int l = 0; l < LANES; l++)
                near &= reach[l] <= NEAR_EXPONENT;
            if (near)
                TILE_UPDATES(vdecay_near)
            else
                TILE_UPDATES(vdecay_any)
            for (long i = 0; i < steps; i++) {
                const long row = row0 + i;
                float *yt = y + row * d_inner + d0;
                const vfloat gate = vsilu(vload(z + row * z_stride + d0));
                vstore(yt, (vload(yt) + Dv * vload(u + row * d_inner + d0)) * gate);
            }
        }
        for (int n = 0; n < NS; n++)
            vstore(hb + n * d_inner, state[n]);
    }
}

/* jambatalk_mamba_scan on the channels [d_begin, d_end), time by time over all of them: any d_state. */
static void scan_channels(const float *restrict u, const float *restrict x_dbl, long x_stride, long dt_rank,
                          const float *restrict dt_wt, const float *restrict dt_bias, const float *restrict A2,
                          const float *restrict D, const float *restrict z, long z_stride, float *restrict h,
                          float *restrict y, float *restrict work, long batch, long length, long d_inner,
                          long d_state, float floor2, long d_begin, long d_end) {
    float *restrict delta = work, *restrict drive = work + d_inner, *restrict acc = work + 2 * d_inner;
    for (long b = 0; b < batch; b++) {
        float *hb = h + b * d_state * d_inner;
        for (long t = 0; t < length; t++) {
            const long row = b * length + t;
            const float *ut = u + row * d_inner, *xt = x_dbl + row * x_stride, *zt = z + row * z_stride;
            const float *Bt = xt + dt_rank, *Ct = Bt + d_state;
            float *yt = y + row * d_inner;
#pragma omp simd
            for (long d = d_begin; d < d_end; d++)
                delta[d] = dt_bias[d];
            for (long r = 0; r < dt_rank; r++) {
                const float xr = xt[r], *wr = dt_wt + r * d_inner;
#pragma omp simd
                for (long d = d_begin; d < d_end; d++)
                    delta[d] += wr[d] * xr;
            }
#pragma omp simd
            for (long d = d_begin; d < d_end; d++) {
                const float step = softplus(delta[d]);
                delta[d] = step;
                drive[d] = step * ut[d];
                acc[d] = D[d] * ut[d];
            }
            for (long n = 0; n < d_state; n++) {
                const float Bn = Bt[n], Cn = Ct[n];
                const float *An = A2 + n * d_inner;
                float *hn = hb + n * d_inner;
#pragma omp simd
                for (long d = d_begin; d < d_end; d++) {
                    float e = delta[d] * An[d];
                    e = e > floor2 ? e : floor2;
                    const float s = exp2_nonpositive(e) * hn[d] + drive[d] * Bn;
                    hn[d] = s;
                    acc[d] += s * Cn;
                }
            }
#pragma omp simd
            for (long d = d_begin; d < d_end; d++)
                yt[d] = acc[d] * silu(zt[d]);
        }
    }
}

/* The selective scan with its step size, skip and gate, time-major, state (d_state, d_inner) per batch:
 *
 *   delta = softplus(dt_bias + W_dt x_dbl[t, :dt_rank])                           (d_inner)
 *   h[n] = 2^max(delta * A2[n], floor2) * h[n] + delta * u[t] * B[t, n]    for every state n
 *   y[t] = (sum_n h[n] * C[t, n] + D * u[t]) * silu(z[t])
 *
 * u, y: (batch, length, d_inner); x_dbl[t] = x_dbl + (b * length + t) * x_stride holds x_proj's output
 * [dt (dt_rank) | B (d_state) | C (d_state)]; dt_wt: (dt_rank, d_inner), dt_proj's weight transposed; A2:
 * (d_state, d_inner), A in base 2 (A * log2(e)), and floor2 the exponents' floor in base 2 (at least
 * -125.5, so that every decay is a normal float; with AVX-512 smaller decays are kept, or flushed to 0, and
 * the blocks run with flush-to-zero and denormals-are-zero set); z[t, d] = z[(b * length + t) * z_stride + d];
 * h: (batch, d_state, d_inner), the initial state on entry and the last on return; work: 3 * d_inner floats;
 * threads: how many threads may share the work.
 *
 * For d_state 16 and 8 (Mamba's usual sizes) whole blocks of channels run in scan_blocks, shared between
 * up to threads threads where the library is built with OpenMP (each block is independent: any number of
 * threads gives the same values); the rest, and other sizes, run time by time over the channels with the
 * loops over channels vectorised. */
/* scan_blocks on jobs [begin, end) for d_state 16 or 8, with flush-to-zero and denormals-are-zero set on the
 * calling thread meanwhile (every thread that runs a share sets its own) */
static void scan_jobs(const float *restrict u, const float *restrict x_dbl, long x_stride, long dt_rank,
                      const float *restrict dt_wt, const float *restrict dt_bias, const float *restrict A2,
                      const float *restrict D, const float *restrict z, long z_stride, float *restrict h,
                      float *restrict y, long length, long d_inner, long d_state, long blocks, float floor2,
                      long begin, long end) {
#if defined(__x86_64__) || defined(__i386__)
    const unsigned mxcsr = __builtin_ia32_stmxcsr();
    __builtin_ia32_ldmxcsr(mxcsr | 0x8040); /* flush-to-zero, denormals-are-zero: no subnormal slow paths */
#endif
    if (d_state == 16)
        scan_blocks(u, x_dbl, x_stride, dt_rank, dt_wt, dt_bias, A2, D, z, z_stride, h, y, length, d_inner, blocks,
                    floor2, begin, end, 16);
    else
        scan_blocks(u, x_dbl, x_stride, dt_rank, dt_wt, dt_bias, A2, D, z, z_stride, h, y, length, d_inner, blocks,
                    floor2, begin, end, 8);
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_ldmxcsr(mxcsr); /* the caller's floating-point mode back */
#endif
}

#ifdef _OPENMP
int omp_get_thread_num(void);
int omp_get_num_threads(void);
#endif

/* below this many (job, time step) pairs one thread scans: a share would be too short to pay for waking others */
#define PARALLEL_MIN_STEPS 4096

int jambatalk_mamba_scan(const float *restrict u, const float *restrict x_dbl, long x_stride, long dt_rank,
                         const float *restrict dt_wt, const float *restrict dt_bias, const float *restrict A2,
                         const float *restrict D, const float *restrict z, long z_stride, float *restrict h,
                         float *restrict y, float *restrict work, long batch, long length, long d_inner,
                         long d_state, float floor2, long threads) {
    if (floor2 < -125.5f)
        return 1;
    const long blocks = d_state == 16 || d_state == 8 ? d_inner / LANES : 0, jobs = batch * blocks;
#ifdef _OPENMP
    /* the jobs are independent: split between threads, each writes its own channels, the same values as one */
    if (threads > 1 && jobs > 1 && jobs * length >= PARALLEL_MIN_STEPS) {
#pragma omp parallel num_threads(threads < jobs ? threads : jobs)
        {
            const long id = omp_get_thread_num(), nt = omp_get_num_threads();
            scan_jobs(u, x_dbl, x_stride, dt_rank, dt_wt, dt_bias, A2, D, z, z_stride, h, y, length, d_inner,
                      d_state, blocks, floor2, jobs * id / nt, jobs * (id + 1) / nt);
        }
    } else
#endif
    if (jobs > 0)
        scan_jobs(u, x_dbl, x_stride, dt_rank, dt_wt, dt_bias, A2, D, z, z_stride, h, y, length, d_inner, d_state,
                  blocks, floor2, 0, jobs);
    (void)threads;
    if (blocks * LANES < d_inner)
        scan_channels(u, x_dbl, x_stride, dt_rank, dt_wt, dt_bias, A2, D, z, z_stride, h, y, work, batch, length,
                      d_inner, d_state, floor2, blocks * LANES, d_inner);
    return 0;
}

/* ------------------------------------------------------------------ the MoE gate (every expert visited)
 *
 * GELU(x) = x Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2, from Phi(-|x|) = (1 - erf(z)) / 2 for
 * z = |x| / sqrt 2 and 1 - erf(z) = t (a1 + a2 t + a3 t^2 + a4 t^3 + a5 t^4) exp(-z^2), t = 1 / (1 + p z)
 * (Abramowitz and Stegun 7.1.26, absolute error below 1.5e-7; PyTorch's float32 GELU is within 1.2e-6 of
 * the exact one, this within 4.2e-7). The polynomial carries the factor 1/2, p the 1/sqrt 2, and
 * exp(-z^2) = 2^(-x^2 log2(e) / 2) (floored at 2^-125, where Phi(-|x|) is zero in float32 anyway). */
#define GELU_P (0.3275911f * 0.70710678118654752f)
#define GELU_HALF_X2_LOG2E (-0.72134752044448170f)
#define GELU_POLY(t) \
    ((((((t) * 0.5307027145f - 0.7265760135f) * (t) + 0.7107068705f) * (t) - 0.142248368f) * (t) + \
      0.127414796f) * (t))

static inline float gelu(float x) {
    const float t = 1.0f / (1.0f + GELU_P * (x < 0.0f ? -x : x));
    const float e = x * x * GELU_HALF_X2_LOG2E;
    const float q = GELU_POLY(t) * exp2_nonpositive(e < -125.0f ? -125.0f : e); /* Phi(-|x|) */
    return x * (x < 0.0f ? q : 1.0f - q);
}

static inline vfloat vgelu(vfloat x) {
    const vfloat t = vrecip(1.0f + GELU_P * (vfloat)((vint)x & 0x7fffffff));
    const vfloat q = GELU_POLY(t) * vexp2_nonpositive(vmax(x * x * GELU_HALF_X2_LOG2E, vsplat(-125.0f)));
    return x * vselect(x < vsplat(0.0f), q, 1.0f - q);
}

/* The mixture's gate for a top-k = n_experts MoE, in place on the first product's rows
 * [h_1 .. h_E | l] (n_rows rows of stride floats; h_e: hidden floats each, l: the E router logits):
 * w = softmax(l); h_e <- GELU(h_e) w_e; l <- w. The logits are copied to logits (n_rows, E) first.
 * The second product of the rows with [W2_1; ..; W2_E; b2] is then the weighted sum of the experts. */
int jambatalk_moe_gate(float *restrict rows, long n_rows, long stride, long n_experts, long hidden,
                       float *restrict logits, long threads) {
    if (n_experts > MAX_EXPERTS || stride < n_experts * (hidden + 1))
        return 1;
    /* the rows (tokens) are independent: shared between threads, the same values as on one */
#pragma omp parallel for schedule(static) num_threads(threads > 1 ? threads : 1) \
    if (threads > 1 && n_rows * stride >= PARALLEL_MIN_FLOATS)
    for (long r = 0; r < n_rows; r++) {
        float *row = rows + r * stride, *gate = row + n_experts * hidden, w[MAX_EXPERTS];
        float top = gate[0], sum = 0.0f;
        for (long e = 0; e < n_experts; e++) {
            logits[r * n_experts + e] = gate[e];
            top = gate[e] > top ? gate[e] : top;
        }
        for (long e = 0; e < n_experts; e++) {
            const float d = gate[e] - top;
            w[e] = exp_nonpositive(d < -87.0f ? -87.0f : d);
            sum += w[e];
        }
        for (long e = 0; e < n_experts; e++) {
            const float we = w[e] / sum;
            float *h = row + e * hidden;
            long j = 0;
            for (; j + LANES <= hidden; j += LANES)
                vstore(h + j, vgelu(vload(h + j)) * we);
            for (; j < hidden; j++)
                h[j] = gelu(h[j]) * we;
            gate[e] = we;
        }
    }
    return 0;
}
