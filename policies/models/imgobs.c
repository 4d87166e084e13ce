/* imgobs.c - image observations into the heads' inputs. An observation row is
 * [image C*H*W | proprioception P]; the image (optionally shifted at random,
 * DrQ) goes through a CNN encoder and the heads see [features F | proprio P].
 * The backward turns a gradient wrt those head inputs into the encoder's
 * parameter gradients. One pol_imgobs_t holds the scratch and can serve several
 * encoders of the same shape (SAC's encoder and its target), one at a time. */
#include "policies/models/models.h"

#include <stdlib.h>
#include <string.h>

int pol_imgobs_init(pol_imgobs_t *o, const nn_backend_t *be, int C, int H, int W, int obs_dim, int feat,
                    int pad, cr_err_t *err)
{
    memset(o, 0, sizeof *o);
    o->be = be;
    o->C = C;
    o->H = H;
    o->W = W;
    o->img = C * H * W;
    o->prop = obs_dim - o->img;
    o->feat = feat;
    o->pad = pad;
    if (C <= 0 || H <= 0 || W <= 0 || o->prop < 0 || feat <= 0 || pad < 0)
        return cr_err_set(err, CR_EINVAL, "image observation: %dx%dx%d in obs_dim %d, %d features, pad %d", C,
                          H, W, obs_dim, feat, pad);
    return 0;
}

static void free_bufs(pol_imgobs_t *o)
{
    float **b[] = {&o->img_buf, &o->img_aug, &o->prop_buf, &o->dfeat};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (*b[i]) { o->be->free(*b[i]); *b[i] = NULL; }
    if (o->shifts) o->be->free(o->shifts);
    free(o->h_shifts);
    o->shifts = o->h_shifts = NULL;
    o->cap = 0;
}

void pol_imgobs_destroy(pol_imgobs_t *o)
{
    if (o->be) free_bufs(o);
}

int pol_imgobs_reserve(pol_imgobs_t *o, int B, cr_err_t *err)
{
    if (B <= o->cap) return 0;
    free_bufs(o);
    size_t b = (size_t)B, f = sizeof(float);
    int ok = !!(o->img_buf = o->be->alloc(b * o->img * f));
    ok &= !!(o->img_aug = o->be->alloc(b * o->img * f));
    ok &= !!(o->prop_buf = o->be->alloc(b * (o->prop ? o->prop : 1) * f));
    ok &= !!(o->dfeat = o->be->alloc(b * o->feat * f));
    ok &= !!(o->shifts = o->be->alloc(b * 2 * sizeof(int32_t)));
    ok &= !!(o->h_shifts = malloc(b * 2 * sizeof(int32_t)));
    if (!ok) {
        free_bufs(o);
        return cr_err_set(err, CR_ENOMEM, "image observation: cannot allocate scratch for batch %d", B);
    }
    o->cap = B;
    return 0;
}

const float *pol_imgobs_forward(pol_imgobs_t *o, pol_encoder_t *enc, const float *obs, int B, int augment,
                                nn_rng_t *rng, float *out)
{
    const nn_backend_t *be = o->be;
    be->fill(o->img_buf, 0.0f, (size_t)B * o->img);
    if (o->prop) be->fill(o->prop_buf, 0.0f, (size_t)B * o->prop);
    be->concat_backward(o->img_buf, o->prop ? o->prop_buf : NULL, obs, B, o->img, o->prop);
    const float *img = o->img_buf;
    if (augment && o->pad > 0) {
        for (int i = 0; i < 2 * B; i++) o->h_shifts[i] = (int32_t)nn_rng_below(rng, 2 * (uint32_t)o->pad + 1);
        be->upload(o->shifts, o->h_shifts, (size_t)B * 2 * sizeof(int32_t));
        be->random_shift(o->img_aug, o->img_buf, o->shifts, B, o->C, o->H, o->W, o->pad);
        img = o->img_aug;
    }
    const float *feat = pol_encoder_forward(enc, img, B);
    be->concat_forward(out, feat, o->prop_buf, B, o->feat, o->prop);
    return out;
}

void pol_imgobs_backward(pol_imgobs_t *o, pol_encoder_t *enc, const float *dx, int B)
{
    o->be->fill(o->dfeat, 0.0f, (size_t)B * o->feat);
    o->be->concat_backward(o->dfeat, NULL, dx, B, o->feat, o->prop);
    pol_encoder_backward(enc, NULL, o->dfeat, B);
}
