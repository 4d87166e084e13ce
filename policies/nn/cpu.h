/* cpu.h - the CPU reference ops, one file per family, gathered into the backend
 * table by cpu_backend.c. Private to policies/nn; callers use nn_backend_cpu(). */
#ifndef CORRAL_POLICIES_NN_CPU_H
#define CORRAL_POLICIES_NN_CPU_H

#include "policies/nn/nn.h"

/* cpu_dense.c */
void cpu_linear_forward(float *out, const float *inp, const float *w, const float *bias,
                        int B, int C, int OC);
void cpu_linear_backward(float *dinp, float *dw, float *dbias, const float *dout,
                         const float *inp, const float *w, int B, int C, int OC);
void cpu_bias_forward(float *out, const float *bias, int B, int C);
void cpu_bias_backward(float *dbias, const float *dout, int B, int C);
void cpu_act_forward(float *out, const float *inp, nn_act_t act, size_t N);
void cpu_act_backward(float *dinp, const float *dout, const float *inp, const float *out,
                      nn_act_t act, size_t N);
void cpu_bias_act_forward(float *out, float *pre, const float *bias, nn_act_t act, int B, int C);
void cpu_linear_backward_input(float *dinp, const float *dout, const float *w, int B, int C, int OC);
void cpu_act_backward_inplace(float *d, const float *inp, const float *out, nn_act_t act, size_t N);

/* cpu_norm.c */
void cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                           const float *weight, const float *bias, int B, int C);
void cpu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, const float *mean,
                            const float *rstd, int B, int C);
void cpu_softmax_forward(float *out, const float *inp, int B, int C);
void cpu_softmax_backward(float *dinp, const float *dout, const float *out, int B, int C);

/* cpu_conv.c */
void cpu_conv2d_forward(float *out, float *col, const float *inp, const float *w,
                        const float *bias, const nn_conv_shape_t *s);
void cpu_conv2d_backward(float *dinp, float *dw, float *dbias, float *col, const float *dout,
                         const float *inp, const float *w, const nn_conv_shape_t *s);
void cpu_random_shift(float *out, const float *inp, const int32_t *shifts, int N, int C,
                      int H, int W, int pad);

/* cpu_attention.c */
void cpu_embedding_forward(float *out, const int32_t *idx, const float *table, int B, int C);
void cpu_embedding_backward(float *dtable, const float *dout, const int32_t *idx, int B, int C);
void cpu_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C,
                           int NH, int causal);
void cpu_attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                            const float *att, int B, int T, int C, int NH, int causal);

/* cpu_loss.c */
double cpu_mse_forward(const float *pred, const float *target, const float *weight, size_t N);
void cpu_mse_backward(float *dpred, const float *pred, const float *target,
                      const float *weight, float scale, size_t N);
void cpu_gauss_tanh_forward(float *action, float *logp, const float *head, const float *eps,
                            int B, int A, float lo, float hi);
void cpu_gauss_tanh_backward(float *dhead, const float *daction, const float *dlogp,
                             const float *head, const float *eps, const float *action,
                             int B, int A, float lo, float hi);

/* cpu_misc.c */
void cpu_concat_forward(float *out, const float *a, const float *b, int B, int Ca, int Cb);
void cpu_concat_backward(float *da, float *db, const float *dout, int B, int Ca, int Cb);
void cpu_rows_min(float *out, const float *q, const int *rows, int K, int B);
void cpu_rows_mean(float *out, const float *q, int N, int B);
void cpu_td_target(float *y, const float *reward, const float *done, const float *qnext,
                   const float *logp, float gamma, float alpha, int B);
double cpu_sum(const float *x, size_t N);
double cpu_sumsq(const float *x, size_t N);
void cpu_scale(float *x, float s, size_t N);
void cpu_lerp(float *target, const float *src, float tau, size_t N);
void cpu_adam_update(float *param, const float *grad, float *m, float *v, size_t N,
                     float lr, float beta1, float beta2, float eps, float wd,
                     float grad_scale, long t);

#endif
