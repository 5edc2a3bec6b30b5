/* Forward-only Mamba-1 kernels for CPUs, built by jambatalk/ops/cpu_scan.py on first use.
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
 */
/* No headers: it builds with a bare compiler (no C library headers installed). */

#define MAX_STATE 256

/* 2^k for an integer k in [-126, 127]: a normal float built from its exponent bits */
static inline float pow2i(int k) {
    const int bits = (k + 127) << 23;
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);
    return scale;
}

/* exp(x) = 2^k exp(r) for k = round(x / ln 2) given by the caller, |r| <= ln(2) / 2: degree-7 Taylor
 * polynomial (relative error about 1e-7, float32 rounding level). */
static inline float exp_reduced(float x, int k) {
    const float r = x - (float)k * 0.693145751953125f - (float)k * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * pow2i(k);
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

/* 2^y for y in [-126, 0]: 2^k 2^r, k = round(y), |r| <= 1/2, with the degree-6 Taylor polynomial of
 * exp(r ln 2) (relative error about 1.2e-7, float32 rounding level). */
static inline float exp2_nonpositive(float y) {
    const int k = (int)(y - 0.5f); /* y <= 0: truncating y - 0.5 rounds to nearest */
    const float r = y - (float)k;
    float p = 1.5403530393381609e-04f; /* ln(2)^6 / 6! */
    p = p * r + 1.3333558146428443e-03f;
    p = p * r + 9.6181291076284772e-03f;
    p = p * r + 5.5504108664821580e-02f;
    p = p * r + 2.4022650695910071e-01f;
    p = p * r + 6.9314718055994531e-01f;
    p = p * r + 1.0f;
    return p * pow2i(k);
}

static inline float silu(float x) { return x / (1.0f + exp_clamped(-x)); }

/* softplus(x) = max(x, 0) + log1p(exp(-|x|)), with log1p(v) = 2 atanh(v / (2 + v)) for v in (0, 1]:
 * s = v / (2 + v) <= 1/3 and the odd series to s^15 is float32-exact; no 1 + v is formed, so tiny v
 * keep their relative precision. */
static inline float softplus(float x) {
    const float a = x < 0.0f ? x : -x;
    const float v = exp_nonpositive(a < -87.0f ? -87.0f : a);
    const float s = v / (2.0f + v), s2 = s * s;
    float p = 1.0f / 15.0f;
    p = p * s2 + 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    return (x > 0.0f ? x : 0.0f) + 2.0f * s * p;
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

/* The causal depthwise convolution and its SiLU, time-major.
 *
 *   out[b, t, d] = silu(bias[d] + sum_k w[k, d] * x[b, t - (K - 1) + k, d])
 *
 * x[b, t, d] = xz[(b * length + t) * xz_stride + d] (the first d_inner columns of in_proj's output);
 * times before 0 read prev (batch, K - 1, d_inner), the last K - 1 inputs of the previous chunk, or
 * zeros where prev is NULL. w: (K, d_inner); out: (batch, length, d_inner). */
int jambatalk_mamba_conv(const float *restrict xz, long xz_stride, const float *restrict prev,
                         const float *restrict w, const float *restrict bias, float *restrict out, long batch,
                         long length, long d_inner, long K) {
    for (long b = 0; b < batch; b++) {
        for (long t = 0; t < length; t++) {
            float *o = out + (b * length + t) * d_inner;
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
#pragma omp simd
            for (long d = 0; d < d_inner; d++)
                o[d] = silu(o[d]);
        }
    }
    return 0;
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
 * -126); z[t, d] = z[(b * length + t) * z_stride + d]; h: (batch, d_state, d_inner), the initial state
 * on entry and the last on return; work: 3 * d_inner floats. The loops over d_inner are the vectorised
 * ones: no reduction across a vector. */
int jambatalk_mamba_scan(const float *restrict u, const float *restrict x_dbl, long x_stride, long dt_rank,
                         const float *restrict dt_wt, const float *restrict dt_bias, const float *restrict A2,
                         const float *restrict D, const float *restrict z, long z_stride, float *restrict h,
                         float *restrict y, float *restrict work, long batch, long length, long d_inner,
                         long d_state, float floor2) {
    if (floor2 < -126.0f)
        return 1;
    float *restrict delta = work, *restrict drive = work + d_inner, *restrict acc = work + 2 * d_inner;
    for (long b = 0; b < batch; b++) {
        float *hb = h + b * d_state * d_inner;
        for (long t = 0; t < length; t++) {
            const long row = b * length + t;
            const float *ut = u + row * d_inner, *xt = x_dbl + row * x_stride, *zt = z + row * z_stride;
            const float *Bt = xt + dt_rank, *Ct = Bt + d_state;
            float *yt = y + row * d_inner;
#pragma omp simd
            for (long d = 0; d < d_inner; d++)
                delta[d] = dt_bias[d];
            for (long r = 0; r < dt_rank; r++) {
                const float xr = xt[r], *wr = dt_wt + r * d_inner;
#pragma omp simd
                for (long d = 0; d < d_inner; d++)
                    delta[d] += wr[d] * xr;
            }
#pragma omp simd
            for (long d = 0; d < d_inner; d++) {
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
                for (long d = 0; d < d_inner; d++) {
                    float e = delta[d] * An[d];
                    e = e > floor2 ? e : floor2;
                    const float s = exp2_nonpositive(e) * hn[d] + drive[d] * Bn;
                    hn[d] = s;
                    acc[d] += s * Cn;
                }
            }
#pragma omp simd
            for (long d = 0; d < d_inner; d++)
                yt[d] = acc[d] * silu(zt[d]);
        }
    }
    return 0;
}
