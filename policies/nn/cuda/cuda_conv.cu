/* cuda_conv.cu - 2-D convolution as im2col + cuBLAS sgemm, one image at a time
 * (the caller's scratch holds one image's columns), and the DrQ random shift; the
 * CUDA twins of cpu_conv.c. col2im gathers (one thread per input pixel) instead of
 * scattering, so it needs no atomics. */
#include "policies/nn/cuda/cuda_common.cuh"

static const float one = 1.0f, zero = 0.0f;

/* col[C*KH*KW][OH*OW] from one image x[C][H][W]; zero outside the image */
static __global__ void im2col_kernel(float *col, const float *x, nn_conv_shape_t s)
{
    size_t i = CU_TID(), ohw = (size_t)s.OH * s.OW;
    if (i >= (size_t)s.C * s.KH * s.KW * ohw) return;
    int r = (int)(i / ohw), p = (int)(i % ohw);
    int kw = r % s.KW, kh = (r / s.KW) % s.KH, c = r / (s.KW * s.KH);
    int ih = (p / s.OW) * s.stride - s.pad + kh, iw = (p % s.OW) * s.stride - s.pad + kw;
    col[i] = (ih >= 0 && ih < s.H && iw >= 0 && iw < s.W) ? x[((size_t)c * s.H + ih) * s.W + iw]
                                                          : 0.0f;
}

/* dx[C][H][W] += every dcol entry im2col copied from that pixel */
static __global__ void col2im_kernel(float *dx, const float *dcol, nn_conv_shape_t s)
{
    size_t i = CU_TID(), ohw = (size_t)s.OH * s.OW;
    if (i >= (size_t)s.C * s.H * s.W) return;
    int iw = (int)(i % s.W), ih = (int)((i / s.W) % s.H), c = (int)(i / ((size_t)s.W * s.H));
    float sum = 0.0f;
    for (int kh = 0; kh < s.KH; kh++) {
        int oy = ih + s.pad - kh;
        if (oy < 0 || oy % s.stride || oy / s.stride >= s.OH) continue;
        for (int kw = 0; kw < s.KW; kw++) {
            int ox = iw + s.pad - kw;
            if (ox < 0 || ox % s.stride || ox / s.stride >= s.OW) continue;
            sum += dcol[((size_t)(c * s.KH + kh) * s.KW + kw) * ohw + (oy / s.stride) * s.OW +
                        ox / s.stride];
        }
    }
    dx[i] += sum;
}

/* o[OC][OHW] = bias[OC] broadcast over the pixels */
static __global__ void chan_fill_kernel(float *o, const float *bias, size_t ohw, size_t n)
{
    size_t i = CU_TID();
    if (i < n) o[i] = bias[i / ohw];
}

/* dbias[OC] += sum over images and pixels of dout[N][OC][OHW], one thread per channel */
static __global__ void chan_sum_kernel(float *dbias, const float *dout, int N, int OC, size_t ohw)
{
    size_t oc = CU_TID();
    if (oc >= (size_t)OC) return;
    float s = 0.0f;
    for (int n = 0; n < N; n++) {
        const float *d = dout + ((size_t)n * OC + oc) * ohw;
        for (size_t i = 0; i < ohw; i++) s += d[i];
    }
    dbias[oc] += s;
}

void cu_conv2d_forward(float *out, float *col, const float *inp, const float *w,
                       const float *bias, const nn_conv_shape_t *s)
{
    int ck = s->C * s->KH * s->KW, ohw = s->OH * s->OW;
    size_t ncol = (size_t)ck * ohw, nout = (size_t)s->OC * ohw;
    for (int n = 0; n < s->N; n++) {
        float *o = out + (size_t)n * nout;
        if (LAUNCH(im2col_kernel, cu_blocks(ncol), NN_THREADS, col,
                   inp + (size_t)n * s->C * s->H * s->W, *s))
            return;
        if (bias && LAUNCH(chan_fill_kernel, cu_blocks(nout), NN_THREADS, o, bias, (size_t)ohw, nout))
            return;
        /* o^T[OHW][OC] = col^T[OHW][CK] . w^T[CK][OC] */
        if (CUBLAS_CHECK(cublasSgemm(cu_blas(), CUBLAS_OP_N, CUBLAS_OP_N, ohw, s->OC, ck, &one, col,
                                     ohw, w, ck, bias ? &one : &zero, o, ohw)))
            return;
    }
}

void cu_conv2d_backward(float *dinp, float *dw, float *dbias, float *col, const float *dout,
                        const float *inp, const float *w, const nn_conv_shape_t *s)
{
    int ck = s->C * s->KH * s->KW, ohw = s->OH * s->OW;
    size_t ncol = (size_t)ck * ohw, nimg = (size_t)s->C * s->H * s->W;
    if (dbias && LAUNCH(chan_sum_kernel, cu_blocks(s->OC), NN_THREADS, dbias, dout, s->N, s->OC,
                        (size_t)ohw))
        return;
    for (int n = 0; n < s->N; n++) {
        const float *d = dout + (size_t)n * s->OC * ohw;
        if (dw) {
            if (LAUNCH(im2col_kernel, cu_blocks(ncol), NN_THREADS, col, inp + n * nimg, *s))
                return;
            /* dw^T[CK][OC] += col[CK][OHW] . d^T[OHW][OC] */
            if (CUBLAS_CHECK(cublasSgemm(cu_blas(), CUBLAS_OP_T, CUBLAS_OP_N, ck, s->OC, ohw, &one,
                                         col, ohw, d, ohw, &one, dw, ck)))
                return;
        }
        if (dinp) {
            /* dcol^T[OHW][CK] = d^T[OHW][OC] . w[OC][CK], into the scratch */
            if (CUBLAS_CHECK(cublasSgemm(cu_blas(), CUBLAS_OP_N, CUBLAS_OP_T, ohw, ck, s->OC, &one,
                                         d, ohw, w, ck, &zero, col, ohw)))
                return;
            if (LAUNCH(col2im_kernel, cu_blocks(nimg), NN_THREADS, dinp + n * nimg, col, *s))
                return;
        }
    }
}

static __device__ inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* shifts[2N] (backend memory, like embedding indices): the crop offsets per image */
static __global__ void shift_kernel(float *out, const float *inp, const int32_t *shifts, int N,
                                    int C, int H, int W, int pad)
{
    size_t i = CU_TID();
    if (i >= (size_t)N * C * H * W) return;
    int w = (int)(i % W), h = (int)((i / W) % H);
    size_t plane = i / ((size_t)W * H);
    int n = (int)(plane / C);
    int sh = clampi(h + shifts[2 * n] - pad, 0, H - 1);
    int sw = clampi(w + shifts[2 * n + 1] - pad, 0, W - 1);
    out[i] = inp[plane * H * W + (size_t)sh * W + sw];
}

void cu_random_shift(float *out, const float *inp, const int32_t *shifts, int N, int C,
                     int H, int W, int pad)
{
    size_t n = (size_t)N * C * H * W;
    if (n) LAUNCH(shift_kernel, cu_blocks(n), NN_THREADS, out, inp, shifts, N, C, H, W, pad);
}
