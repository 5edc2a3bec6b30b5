/* Forward-only Mamba-1 selective scan for CPUs, built by jambatalk/ops/cpu_scan.py on first use.
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

/* exp(x) for x in [floor, 0] with floor >= -87: 2^k exp(r), k = round(x / ln 2), |r| <= ln(2) / 2,
 * degree-7 Taylor polynomial (relative error about 1e-7, float32 rounding level). */
static inline float exp_nonpositive(float x) {
    const float y = x * 1.44269504088896341f;
    const int k = (int)(y - 0.5f); /* y <= 0: truncating y - 0.5 rounds to nearest */
    const float r = x - (float)k * 0.693145751953125f - (float)k * 1.428606765330187e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int bits = (k + 127) << 23; /* 2^k, a normal float for k >= -126 */
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);
    return p * scale;
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
