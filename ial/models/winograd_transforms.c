/* Winograd F(4x4, 3x3) tile transforms for ial.models.winograd (built by ial.native).

   Channels-last float32 activations; every inner loop runs over contiguous channels (the
   compiler vectorises it). Tiles are numbered p = (((b * d + r) * d + s) * nh + th) * nw + tw:
   frame b, polyphase (r, s) of a dilation-d convolution, tile row th / column tw of that phase
   (4x4 outputs each). Both functions handle the tiles [p0, p1), so callers may split the work
   between threads.

   winograd_input_transform: x (B, H, W, C) -> v (36, P, C), v[k*6+l, p] = (B^T d B)[k, l] for
   the 6x6 input tile d of tile p (zero outside the image: the padding is never materialised).
   ``zero`` points to C zeros, ``tmp`` to 36 * C floats of scratch (one per thread).

   winograd_output_transform: m (36, P, C) -> out (B, H, W, C), the 4x4 tile A^T m A, plus
   ``bias`` (C) if not NULL, plus ``res`` (B, H, W, C) if not NULL, then max(., 0) if ``relu``;
   outputs past the image edge are dropped. ``tmp``: 28 * C floats of scratch (one per thread).
*/
#include <stdint.h>

/* tile p = (((b * d + r) * d + s) * nh + th) * nw + tw */
static inline void tile_coords(int64_t p, int64_t d, int64_t nh, int64_t nw,
                               int64_t *b, int64_t *r, int64_t *s, int64_t *th, int64_t *tw) {
    *tw = p % nw; p /= nw;
    *th = p % nh; p /= nh;
    *s = p % d; p /= d;
    *r = p % d; p /= d;
    *b = p;
}

/* o = B^T a along one axis of the tile, for C channels (restrict: vectorised over c) */
static inline void input_1d(const float *restrict a0, const float *restrict a1,
                            const float *restrict a2, const float *restrict a3,
                            const float *restrict a4, const float *restrict a5,
                            float *restrict o0, float *restrict o1, float *restrict o2,
                            float *restrict o3, float *restrict o4, float *restrict o5,
                            int64_t C) {
    for (int64_t c = 0; c < C; c++) {
        const float x0 = a0[c], x1 = a1[c], x2 = a2[c], x3 = a3[c], x4 = a4[c], x5 = a5[c];
        o0[c] = 4.f * x0 - 5.f * x2 + x4;
        o1[c] = -4.f * x1 - 4.f * x2 + x3 + x4;
        o2[c] = 4.f * x1 - 4.f * x2 - x3 + x4;
        o3[c] = -2.f * x1 - x2 + 2.f * x3 + x4;
        o4[c] = 2.f * x1 - x2 - 2.f * x3 + x4;
        o5[c] = 4.f * x1 - 5.f * x3 + x5;
    }
}

/* o = A^T a along one axis of the tile, for C channels */
static inline void output_1d(const float *restrict a0, const float *restrict a1,
                             const float *restrict a2, const float *restrict a3,
                             const float *restrict a4, const float *restrict a5,
                             float *restrict o0, float *restrict o1, float *restrict o2,
                             float *restrict o3, int64_t C) {
    for (int64_t c = 0; c < C; c++) {
        const float x0 = a0[c], x1 = a1[c], x2 = a2[c], x3 = a3[c], x4 = a4[c], x5 = a5[c];
        o0[c] = x0 + x1 + x2 + x3 + x4;
        o1[c] = x1 - x2 + 2.f * x3 - 2.f * x4;
        o2[c] = x1 + x2 + 4.f * x3 + 4.f * x4;
        o3[c] = x1 - x2 + 8.f * x3 - 8.f * x4 + x5;
    }
}

/* out = relu?(y + bias? + res?) for C channels */
static inline void epilogue(const float *restrict y, const float *restrict bias,
                            const float *restrict res, int relu, float *restrict out, int64_t C) {
    for (int64_t c = 0; c < C; c++) {
        float val = y[c];
        if (bias) val += bias[c];
        if (res) val += res[c];
        if (relu) val = val > 0.f ? val : 0.f;
        out[c] = val;
    }
}

void winograd_input_transform(const float *x, float *v, const float *zero, float *tmp,
                              int64_t B, int64_t H, int64_t W, int64_t C, int64_t d,
                              int64_t nh, int64_t nw, int64_t p0, int64_t p1) {
    const int64_t P = B * d * d * nh * nw;
    for (int64_t p = p0; p < p1; p++) {
        int64_t b, r, s, th, tw;
        tile_coords(p, d, nh, nw, &b, &r, &s, &th, &tw);
        const float *src[6][6];
        for (int i = 0; i < 6; i++) {
            const int64_t y = d * (4 * th + i - 1) + r;
            for (int j = 0; j < 6; j++) {
                const int64_t xx = d * (4 * tw + j - 1) + s;
                src[i][j] = (y >= 0 && y < H && xx >= 0 && xx < W)
                            ? x + ((b * H + y) * W + xx) * C : zero;
            }
        }
        /* t[k][j] = (B^T d)[k][j], then v[k][l] = (t B)[k][l] */
        for (int j = 0; j < 6; j++)
            input_1d(src[0][j], src[1][j], src[2][j], src[3][j], src[4][j], src[5][j],
                     tmp + (0 * 6 + j) * C, tmp + (1 * 6 + j) * C, tmp + (2 * 6 + j) * C,
                     tmp + (3 * 6 + j) * C, tmp + (4 * 6 + j) * C, tmp + (5 * 6 + j) * C, C);
        for (int k = 0; k < 6; k++) {
            const float *t = tmp + k * 6 * C;
            float *o = v + ((int64_t)k * 6 * P + p) * C;
            input_1d(t, t + C, t + 2 * C, t + 3 * C, t + 4 * C, t + 5 * C,
                     o, o + P * C, o + 2 * P * C, o + 3 * P * C, o + 4 * P * C, o + 5 * P * C, C);
        }
    }
}

void winograd_output_transform(const float *m, float *out, const float *bias, const float *res,
                               int relu, float *tmp, int64_t B, int64_t H, int64_t W,
                               int64_t C, int64_t d, int64_t nh, int64_t nw,
                               int64_t p0, int64_t p1) {
    const int64_t P = B * d * d * nh * nw;
    float *ybuf = tmp + 24 * C;  /* 4 * C */
    for (int64_t p = p0; p < p1; p++) {
        int64_t b, r, s, th, tw;
        tile_coords(p, d, nh, nw, &b, &r, &s, &th, &tw);
        /* s[a][l] = (A^T m)[a][l] */
        for (int l = 0; l < 6; l++) {
            const float *q = m + ((int64_t)l * P + p) * C;  /* m[k][l] at q + k * 6 * P * C */
            const int64_t step = 6 * P * C;
            output_1d(q, q + step, q + 2 * step, q + 3 * step, q + 4 * step, q + 5 * step,
                      tmp + (0 * 6 + l) * C, tmp + (1 * 6 + l) * C, tmp + (2 * 6 + l) * C,
                      tmp + (3 * 6 + l) * C, C);
        }
        /* y[a][e] = (s A)[a][e], written where it falls inside the image */
        for (int a = 0; a < 4; a++) {
            const int64_t y = d * (4 * th + a) + r;
            if (y >= H) break;
            const float *t = tmp + a * 6 * C;
            output_1d(t, t + C, t + 2 * C, t + 3 * C, t + 4 * C, t + 5 * C,
                      ybuf, ybuf + C, ybuf + 2 * C, ybuf + 3 * C, C);
            for (int e = 0; e < 4; e++) {
                const int64_t xx = d * (4 * tw + e) + s;
                if (xx >= W) break;
                const int64_t at = ((b * H + y) * W + xx) * C;
                epilogue(ybuf + e * C, bias, res ? res + at : 0, relu, out + at, C);
            }
        }
    }
}
