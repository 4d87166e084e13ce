/* cpu_conv.c - 2-D convolution as im2col + sgemm, one image at a time, and the
 * DrQ random-shift augmentation; CPU reference. */
#include "policies/nn/cpu.h"

#include <cblas.h>
#include <string.h>

int nn_conv_shape_init(nn_conv_shape_t *s, cr_err_t *err)
{
    if (s->N <= 0 || s->C <= 0 || s->H <= 0 || s->W <= 0 || s->OC <= 0 || s->KH <= 0 ||
        s->KW <= 0 || s->stride <= 0 || s->pad < 0)
        return cr_err_set(err, CR_EINVAL, "conv2d: sizes must be positive (pad >= 0)");
    s->OH = (s->H + 2 * s->pad - s->KH) / s->stride + 1;
    s->OW = (s->W + 2 * s->pad - s->KW) / s->stride + 1;
    if (s->H + 2 * s->pad < s->KH || s->W + 2 * s->pad < s->KW)
        return cr_err_set(err, CR_EINVAL, "conv2d: kernel %dx%d larger than padded input %dx%d",
                          s->KH, s->KW, s->H + 2 * s->pad, s->W + 2 * s->pad);
    return 0;
}

size_t nn_conv_col_size(const nn_conv_shape_t *s)
{
    return (size_t)s->C * s->KH * s->KW * s->OH * s->OW;
}

/* col[C*KH*KW][OH*OW] from one image x[C][H][W]; zero outside the image */
static void im2col(float *col, const float *x, const nn_conv_shape_t *s)
{
    int ohw = s->OH * s->OW;
    for (int c = 0; c < s->C; c++)
        for (int kh = 0; kh < s->KH; kh++)
            for (int kw = 0; kw < s->KW; kw++) {
                float *row = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * ohw;
                for (int oh = 0; oh < s->OH; oh++) {
                    int ih = oh * s->stride - s->pad + kh;
                    for (int ow = 0; ow < s->OW; ow++) {
                        int iw = ow * s->stride - s->pad + kw;
                        row[oh * s->OW + ow] = (ih >= 0 && ih < s->H && iw >= 0 && iw < s->W)
                            ? x[((size_t)c * s->H + ih) * s->W + iw] : 0.0f;
                    }
                }
            }
}

/* dx[C][H][W] += scatter of dcol; the adjoint of im2col */
static void col2im(float *dx, const float *dcol, const nn_conv_shape_t *s)
{
    int ohw = s->OH * s->OW;
    for (int c = 0; c < s->C; c++)
        for (int kh = 0; kh < s->KH; kh++)
            for (int kw = 0; kw < s->KW; kw++) {
                const float *row = dcol + ((size_t)(c * s->KH + kh) * s->KW + kw) * ohw;
                for (int oh = 0; oh < s->OH; oh++) {
                    int ih = oh * s->stride - s->pad + kh;
                    if (ih < 0 || ih >= s->H) continue;
                    for (int ow = 0; ow < s->OW; ow++) {
                        int iw = ow * s->stride - s->pad + kw;
                        if (iw >= 0 && iw < s->W)
                            dx[((size_t)c * s->H + ih) * s->W + iw] += row[oh * s->OW + ow];
                    }
                }
            }
}

void cpu_conv2d_forward(float *out, float *col, const float *inp, const float *w,
                        const float *bias, const nn_conv_shape_t *s)
{
    int ck = s->C * s->KH * s->KW, ohw = s->OH * s->OW;
    for (int n = 0; n < s->N; n++) {
        float *o = out + (size_t)n * s->OC * ohw;
        im2col(col, inp + (size_t)n * s->C * s->H * s->W, s);
        if (bias)
            for (int oc = 0; oc < s->OC; oc++)
                for (int i = 0; i < ohw; i++) o[(size_t)oc * ohw + i] = bias[oc];
        /* o[OC][OHW] = w[OC][CK] . col[CK][OHW] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->OC, ohw, ck, 1.0f, w, ck,
                    col, ohw, bias ? 1.0f : 0.0f, o, ohw);
    }
}

void cpu_conv2d_backward(float *dinp, float *dw, float *dbias, float *col, const float *dout,
                         const float *inp, const float *w, const nn_conv_shape_t *s)
{
    int ck = s->C * s->KH * s->KW, ohw = s->OH * s->OW;
    for (int n = 0; n < s->N; n++) {
        const float *d = dout + (size_t)n * s->OC * ohw;
        if (dbias)
            for (int oc = 0; oc < s->OC; oc++)
                for (int i = 0; i < ohw; i++) dbias[oc] += d[(size_t)oc * ohw + i];
        if (dw) {
            im2col(col, inp + (size_t)n * s->C * s->H * s->W, s);
            /* dw[OC][CK] += d[OC][OHW] . col^T[OHW][CK] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->OC, ck, ohw, 1.0f, d, ohw,
                        col, ohw, 1.0f, dw, ck);
        }
        if (dinp) {
            /* dcol[CK][OHW] = w^T[CK][OC] . d[OC][OHW], reusing col as scratch */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, ck, ohw, s->OC, 1.0f, w, ck,
                        d, ohw, 0.0f, col, ohw);
            col2im(dinp + (size_t)n * s->C * s->H * s->W, col, s);
        }
    }
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

void cpu_random_shift(float *out, const float *inp, const int32_t *shifts, int N, int C,
                      int H, int W, int pad)
{
    for (int n = 0; n < N; n++) {
        int dy = shifts[2 * n] - pad, dx = shifts[2 * n + 1] - pad;
        for (int c = 0; c < C; c++) {
            const float *x = inp + ((size_t)n * C + c) * H * W;
            float *o = out + ((size_t)n * C + c) * H * W;
            for (int h = 0; h < H; h++) {
                int sh = clampi(h + dy, 0, H - 1);
                for (int ww = 0; ww < W; ww++) o[h * W + ww] = x[sh * W + clampi(ww + dx, 0, W - 1)];
            }
        }
    }
}
