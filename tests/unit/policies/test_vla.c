/* test_vla.c - the VLA: the byte tokenizer, the transformer block and the whole
 * model (image patches included) against finite differences, safetensors
 * loading through the documented name mapping with strict errors (missing,
 * misshapen, unexpected tensors; wrong image size; an instruction longer than
 * the context), rendered camera images through the patch embedding with DrQ
 * shifts, the vla / vla-bc algorithms through the plugin ABI, and the
 * language-conditioning check on the three-target scene (multi_target.h): the
 * VLA reaches the instructed target in >= 80% of the episodes. */
#include "tests/unit/policies/gradcheck.h"
#include "tests/unit/policies/multi_target.h"
#include "policies/models/gen.h"
#include "policies/nn/safetensors.h"
#include "policies/policies.h"

#include <mujoco/mujoco.h>
#include <string.h>

static const nn_backend_t *be;

/* ---- tokenizer ---- */

static void test_tokenizer(void)
{
    cr_err_t err = {0};
    int32_t ids[24];
    CHECK_OK(pol_tokenize("reach the red target", ids, 24, &err), &err);
    ASSERT_INT_EQ(ids[0], POL_TOK_BOS);
    ASSERT_INT_EQ(ids[1], 2 + 'r');
    ASSERT_INT_EQ(ids[21], POL_TOK_PAD);
    char back[32];
    ASSERT_INT_EQ(pol_detokenize(ids, 24, back, sizeof back), 20);
    ASSERT_STR_EQ(back, "reach the red target");
    /* UTF-8 bytes are tokens like any other */
    CHECK_OK(pol_tokenize("gr\xc3\xbcn", ids, 24, &err), &err);
    ASSERT_INT_EQ(ids[3], 2 + 0xc3);
    /* too long for the context: an error naming both lengths, nothing cut */
    ASSERT_INT_EQ(pol_tokenize("reach the green target please", ids, 24, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "29 bytes") != NULL && strstr(err.msg, "holds 24") != NULL);
}

/* ---- transformer block ---- */

typedef struct { pol_block_t *k; nn_params_t *p; float *x, *out, *r; int B, T, C; } blk_ctx_t;
static double blk_loss(void *c)
{
    blk_ctx_t *k = c;
    pol_block_forward(k->k, k->p, k->out, k->x, k->B, k->T);
    return gc_dot(k->out, k->r, (size_t)k->B * k->T * k->C);
}

static void test_block_grad(void)
{
    be = nn_backend_cpu();
    cr_err_t err = {0};
    nn_rng_t rng;
    nn_rng_seed(&rng, 2);
    nn_params_t p;
    nn_params_init(&p, be);
    pol_block_t k;
    int B = 2, T = 5, C = 8;
    CHECK_OK(pol_block_declare(&k, &p, "b", C, 2, 12, &err), &err);
    CHECK_OK(nn_params_alloc(&p, &err), &err);
    pol_block_init(&k, &p, &rng);
    gc_fill(&rng, p.data, p.numel, 0.3f);
    CHECK_OK(pol_block_reserve(&k, B, T, &err), &err);
    size_t n = (size_t)B * T * C;
    blk_ctx_t c = {&k, &p, gc_zeros(n), gc_zeros(n), gc_zeros(n), B, T, C};
    gc_fill(&rng, c.x, n, 1);
    gc_fill(&rng, c.r, n, 1);
    float *dx = gc_zeros(n);
    blk_loss(&c);
    nn_params_zero_grad(&p);
    pol_block_backward(&k, &p, dx, c.r, B, T);
    ASSERT_INT_EQ(gc_check("block.dx", c.x, n, dx, blk_loss, &c, 1e-3f, 3e-2), 0);
    float *g = gc_zeros(p.numel);
    memcpy(g, p.grad, p.numel * sizeof(float));
    ASSERT_INT_EQ(gc_check("block.params", p.data, p.numel, g, blk_loss, &c, 1e-2f, 3e-2), 0);
    pol_block_t bad;
    ASSERT_INT_EQ(pol_block_declare(&bad, &p, "bad", 10, 3, 4, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "multiple of the 3 heads") != NULL);
    free(g); free(dx); free(c.x); free(c.out); free(c.r);
    pol_block_destroy(&k);
    nn_params_destroy(&p);
}

/* ---- the whole model ---- */

static pol_vla_cfg_t small_cfg(void)
{
    return (pol_vla_cfg_t){.img_c = 3, .img_h = 8, .img_w = 8, .patch = 4, .ctx = 6, .proprio = 3, .n_obj = 2,
                           .obj_dim = 4, .act_dim = 2, .horizon = 2, .steps = 3, .dim = 8, .heads = 2,
                           .layers = 2, .mlp = 16, .head_hidden = 8};
}

typedef struct { pol_vla_t *v; pol_vla_obs_t o; float *x, *t, *r; int B; } vla_ctx_t;
static double vla_loss(void *c)
{
    vla_ctx_t *k = c;
    const float *vel = pol_vla_velocity(k->v, &k->o, k->x, k->t, k->B);
    return gc_dot(vel, k->r, (size_t)k->B * k->v->D);
}

static void test_vla_grad(void)
{
    be = nn_backend_cpu();
    cr_err_t err = {0};
    nn_rng_t rng;
    nn_rng_seed(&rng, 4);
    pol_vla_cfg_t cfg = small_cfg();
    cfg.obj_slots = 1;   /* the slot embedding's gradient is checked too */
    pol_vla_t v;
    CHECK_OK(pol_vla_create(&v, be, &cfg, &rng, &err), &err);
    ASSERT_INT_EQ(v.T, 4 + 6 + 1 + 2 + 1);
    ASSERT_TRUE(nn_params_find(&v.params, "obj.pos") >= 0);
    int B = 2;
    CHECK_OK(pol_vla_reserve(&v, B, &err), &err);
    float *img = gc_zeros((size_t)B * 3 * 64), *prop = gc_zeros((size_t)B * 3), *obj = gc_zeros((size_t)B * 8);
    int32_t ids[12];
    CHECK_OK(pol_tokenize("go", ids, 6, &err), &err);
    CHECK_OK(pol_tokenize("stop", ids + 6, 6, &err), &err);
    for (int i = 0; i < B * 192; i++) img[i] = nn_rng_uniform(&rng);
    gc_fill(&rng, prop, (size_t)B * 3, 1);
    gc_fill(&rng, obj, (size_t)B * 8, 1);
    vla_ctx_t c = {&v, {img, ids, prop, obj}, gc_zeros((size_t)B * v.D), gc_zeros(B), gc_zeros((size_t)B * v.D), B};
    gc_fill(&rng, c.x, (size_t)B * v.D, 1);
    c.t[0] = 0.3f;
    c.t[1] = 0.8f;
    gc_fill(&rng, c.r, (size_t)B * v.D, 1);
    vla_loss(&c);
    nn_params_zero_grad(&v.params);
    pol_vla_velocity_backward(&v, c.r, B);
    float *g = gc_zeros(v.params.numel);
    memcpy(g, v.params.grad, v.params.numel * sizeof(float));
    /* every tensor family: patch embedding, token table rows in use, blocks, head */
    int bad = 0;
    for (int i = 0; i < v.params.count; i++) {
        const nn_tensor_t *t = &v.params.t[i];
        if (!strcmp(t->name, "tok.embed")) {
            for (int r = 0; r < 12; r++)   /* only the rows of the tokens used have gradients */
                bad += gc_check(t->name, v.params.data + t->offset + (size_t)ids[r] * 8, 8,
                                g + t->offset + (size_t)ids[r] * 8, vla_loss, &c, 1e-3f, 3e-2);
            continue;
        }
        bad += gc_check(t->name, v.params.data + t->offset, t->numel, g + t->offset, vla_loss, &c, 1e-3f, 3e-2);
    }
    ASSERT_INT_EQ(bad, 0);
    /* the instruction changes the output */
    float out1[4], out2[4];
    pol_vla_obs_t o1 = {img, ids, prop, obj}, o2 = o1;
    int32_t ids2[12];
    memcpy(ids2, ids + 6, sizeof(int32_t) * 6);
    memcpy(ids2 + 6, ids + 6, sizeof(int32_t) * 6);
    o2.ids = ids2;
    pol_vla_sample(&v, &o1, 1, NULL, out1);
    pol_vla_sample(&v, &o2, 1, NULL, out2);
    ASSERT_TRUE(memcmp(out1, out2, sizeof out1) != 0);
    /* bad configurations name the field */
    pol_vla_t w;
    cfg.patch = 3;
    ASSERT_INT_EQ(pol_vla_create(&w, be, &cfg, &rng, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "patch size 3") != NULL);
    free(g); free(img); free(prop); free(obj); free(c.x); free(c.t); free(c.r);
    pol_vla_destroy(&v);
}

/* ---- weights ---- */

static void test_vla_weights(void)
{
    be = nn_backend_cpu();
    cr_err_t err = {0};
    nn_rng_t rng;
    nn_rng_seed(&rng, 6);
    pol_vla_cfg_t cfg = small_cfg();
    pol_vla_t a, b;
    CHECK_OK(pol_vla_create(&a, be, &cfg, &rng, &err), &err);
    CHECK_OK(pol_vla_create(&b, be, &cfg, &rng, &err), &err);
    char path[512];
    snprintf(path, sizeof path, "%s/vla.safetensors", test_tmpdir());
    CHECK_OK(pol_vla_save(&a, path, "model.", &err), &err);
    /* the file uses the documented names */
    nn_st_t *st;
    CHECK_OK(nn_st_read_file(&st, path, &err), &err);
    ASSERT_TRUE(nn_st_find(st, "model.layers.1.self_attn.qkv_proj.weight") != NULL);
    ASSERT_TRUE(nn_st_find(st, "model.language.embed_tokens.weight") != NULL);
    ASSERT_TRUE(nn_st_find(st, "model.vision.patch_embed.weight") != NULL);
    ASSERT_TRUE(nn_st_find(st, "model.action_out.2.bias") != NULL);
    ASSERT_INT_EQ(nn_st_count(st), a.params.count);
    nn_st_free(st);
    CHECK_OK(pol_vla_load(&b, path, "model.", &err), &err);
    ASSERT_TRUE(memcmp(a.params.data, b.params.data, a.params.numel * sizeof(float)) == 0);
    /* the wrong prefix: the first missing tensor is named */
    ASSERT_INT_EQ(pol_vla_load(&b, path, "", &err), CR_ENOENT);
    ASSERT_TRUE(strstr(err.msg, "missing tensor 'vision.patch_embed.weight'") != NULL);

    /* a model of another width: the shape mismatch names the tensor and both shapes */
    pol_vla_cfg_t wide = cfg;
    wide.dim = 12;
    wide.heads = 2;
    pol_vla_t c;
    CHECK_OK(pol_vla_create(&c, be, &wide, &rng, &err), &err);
    ASSERT_INT_EQ(pol_vla_load(&c, path, "model.", &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "'model.vision.patch_embed.weight' has shape [8, 48], the model expects [12, 48]") != NULL);
    pol_vla_destroy(&c);

    /* an extra tensor: refused, and b is unchanged */
    float keep = b.params.data[0];
    nn_st_writer_t *w = nn_st_writer_create();
    float *host = malloc(a.params.numel * sizeof(float));
    memcpy(host, a.params.data, a.params.numel * sizeof(float));
    host[0] = keep + 1.0f;
    char name[256];
    for (int i = 0; i < a.params.count; i++) {
        int64_t s[4];
        for (int d = 0; d < a.params.t[i].ndim; d++) s[d] = a.params.t[i].shape[d];
        pol_vla_tensor_name(&a, i, "", name, sizeof name);
        CHECK_OK(nn_st_writer_add(w, name, NN_DT_F32, a.params.t[i].ndim, s, host + a.params.t[i].offset, &err), &err);
    }
    int64_t one[1] = {1};
    CHECK_OK(nn_st_writer_add(w, "lm_head.weight", NN_DT_F32, 1, one, host, &err), &err);
    void *buf;
    size_t len;
    CHECK_OK(nn_st_writer_to_mem(w, &buf, &len, &err), &err);
    ASSERT_INT_EQ(pol_vla_load_mem(&b, buf, len, "", &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "unexpected tensor 'lm_head.weight'") != NULL);
    ASSERT_TRUE(b.params.data[0] == keep);
    free(buf);
    nn_st_writer_destroy(w);
    /* a wrong dtype is named too */
    w = nn_st_writer_create();
    for (int i = 0; i < a.params.count; i++) {
        int64_t s[4];
        for (int d = 0; d < a.params.t[i].ndim; d++) s[d] = a.params.t[i].shape[d];
        pol_vla_tensor_name(&a, i, "", name, sizeof name);
        int bf = i == 3;
        CHECK_OK(nn_st_writer_add(w, name, bf ? NN_DT_F16 : NN_DT_F32, a.params.t[i].ndim, s,
                                  host + a.params.t[i].offset, &err), &err);
    }
    CHECK_OK(nn_st_writer_to_mem(w, &buf, &len, &err), &err);
    ASSERT_INT_EQ(pol_vla_load_mem(&b, buf, len, "", &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "is F16, the model expects F32") != NULL);
    free(buf);
    nn_st_writer_destroy(w);
    free(host);

    /* images of the wrong size are named */
    ASSERT_INT_EQ(pol_vla_check_image(&a, 3, 16, 8, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "3x16x8") != NULL && strstr(err.msg, "3x8x8") != NULL);
    CHECK_OK(pol_vla_check_image(&a, 3, 8, 8, &err), &err);
    pol_vla_destroy(&a);
    pol_vla_destroy(&b);
}

/* ---- rendered camera images through the patch embedding ---- */

static void test_camera_images(void)
{
    be = nn_backend_cpu();
    cr_err_t err = {0};
    hal_robot_t *r;
    hal_opt_t opts[] = {{"camera", "top"}, {"image_width", "32"}, {"image_height", "32"}};
    int rc = hal_robot_open("cam", "mujoco", "reach2d_multi", opts, 3, &r, &err);
    if (rc == CR_EUNAVAIL || (rc && strstr(err.msg, "EGL"))) {
        test_skip("no headless rendering here: %s", err.msg);
        return;
    }
    CHECK_OK(rc, &err);
    const hal_robot_desc_t *d = hal_robot_desc(r);
    ASSERT_INT_EQ(d->obs.n_cams, 1);
    hal_obs_t o;
    CHECK_OK(hal_obs_alloc(d, 1, &o, &err), &err);
    CHECK_OK(hal_robot_reset(r, 1, &o, &err), &err);
    /* uint8 HWC as stored in the buffer -> float CHW in [0, 1] -> DrQ shift */
    int H = 32, W = 32;
    float *img = malloc(sizeof(float) * 3 * H * W), *aug = malloc(sizeof(float) * 3 * H * W);
    double red = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) {
                float val = o.img[((size_t)y * W + x) * 3 + c] / 255.0f;
                img[((size_t)c * H + y) * W + x] = val;
                if (c == 0) red += val;
            }
    ASSERT_TRUE(red > 0);   /* something was rendered */
    int32_t shifts[2] = {4, 0};
    be->random_shift(aug, img, shifts, 1, 3, H, W, 4);
    ASSERT_TRUE(memcmp(aug, img, sizeof(float) * 3 * H * W) != 0);
    pol_vla_cfg_t cfg = {.img_c = 3, .img_h = H, .img_w = W, .patch = 8, .ctx = 24, .proprio = 8, .act_dim = 2,
                         .horizon = 2, .steps = 3, .dim = 16, .heads = 2, .layers = 1, .mlp = 32};
    nn_rng_t rng;
    nn_rng_seed(&rng, 1);
    pol_vla_t v;
    CHECK_OK(pol_vla_create(&v, be, &cfg, &rng, &err), &err);
    CHECK_OK(pol_vla_check_image(&v, 3, d->obs.cams[0].height, d->obs.cams[0].width, &err), &err);
    CHECK_OK(pol_vla_reserve(&v, 1, &err), &err);
    int32_t ids[24];
    CHECK_OK(pol_tokenize("reach the red target", ids, 24, &err), &err);
    float prop[8] = {0}, chunk[4] = {0.1f, -0.2f, 0.3f, 0.0f};
    pol_vla_obs_t ob = {aug, ids, prop, NULL};
    nn_params_zero_grad(&v.params);
    double loss = pol_vla_bc_step(&v, &ob, chunk, 1, &rng);
    ASSERT_TRUE(isfinite(loss));
    int pw = nn_params_find(&v.params, "patch.weight");
    ASSERT_TRUE(be->sumsq(nn_params_grad(&v.params, pw), v.params.t[pw].numel) > 0);
    pol_vla_destroy(&v);
    free(img); free(aug);
    hal_obs_free(&o);
    hal_robot_close(r);
}

/* Object tokens without slot embeddings are a set: swapping two objects leaves
 * the velocity as it was, so features that do not say which object is which
 * (bare offsets, listed in a fixed order) cannot be told apart. With obj_slots
 * each slot has its embedding and the same swap changes the velocity. */
static void test_object_slots(void)
{
    be = nn_backend_cpu();
    cr_err_t err = {0};
    for (int slots = 0; slots <= 1; slots++) {
        nn_rng_t rng;
        nn_rng_seed(&rng, 9);
        pol_vla_cfg_t cfg = small_cfg();
        cfg.obj_slots = slots;
        pol_vla_t v;
        CHECK_OK(pol_vla_create(&v, be, &cfg, &rng, &err), &err);
        ASSERT_INT_EQ(nn_params_find(&v.params, "obj.pos") >= 0, slots);
        CHECK_OK(pol_vla_reserve(&v, 1, &err), &err);
        float img[192], prop[3] = {0.1f, -0.2f, 0.3f}, obj[8] = {1, 2, 0, 0, -1, 0.5f, 0, 0}, swapped[8];
        for (int i = 0; i < 192; i++) img[i] = nn_rng_uniform(&rng);
        memcpy(swapped, obj + 4, sizeof(float) * 4);
        memcpy(swapped + 4, obj, sizeof(float) * 4);
        int32_t ids[6];
        CHECK_OK(pol_tokenize("go", ids, 6, &err), &err);
        float x[4] = {0.2f, -0.1f, 0.4f, 0.0f}, t = 0.5f, a[4], b[4];
        pol_vla_obs_t o = {img, ids, prop, obj}, os = {img, ids, prop, swapped};
        memcpy(a, pol_vla_velocity(&v, &o, x, &t, 1), sizeof a);
        memcpy(b, pol_vla_velocity(&v, &os, x, &t, 1), sizeof b);
        double diff = 0;
        for (int i = 0; i < 4; i++) diff += fabs((double)a[i] - b[i]);
        fprintf(stderr, "  obj_slots %d: velocity change when two objects swap %.3g\n", slots, diff);
        if (slots) ASSERT_TRUE(diff > 1e-4);
        else ASSERT_TRUE(diff < 1e-5);
        pol_vla_destroy(&v);
    }
}

/* The language-conditioning check: BC on 90 scripted demonstrations with the
 * recipe of multi_target.h (5,000 steps at batch 32), then 50 episodes with a
 * random named target: the VLA must end at the named target in >= 80% of them
 * and at the named one at least three times as often as at another, and on ten
 * scenes run under each of the three instructions it must follow >= 80% (the
 * same scene, so only the words differ). bench/vla_learn runs more episodes
 * and seeds. */
static void test_vla_follows_instructions(void)
{
#ifdef CORRAL_SANITIZE
    TEST_SKIP_IF(1, "learning check is timed: it runs in the optimised build, not under sanitizers");
#endif
    be = nn_backend_cpu();
    cr_err_t err = {0};
    menv_t e;
    ASSERT_INT_EQ(menv_open(&e, test_source_path("configs/robots/reach2d_multi.xml")), 0);
    int ok = 0;
    for (int ep = 0; ep < 30; ep++) {
        menv_reset(&e, 70000 + (uint64_t)ep, -1);
        float a[2];
        while (menv_expert(&e, a), !menv_step(&e, a)) {}
        ok += menv_dist(&e, e.named) < SUCCESS_DIST;
    }
    fprintf(stderr, "  expert success %d/30\n", ok);
    ASSERT_TRUE(ok >= 29);
    nn_rng_t rng;
    nn_rng_seed(&rng, 21);
    mt_data_t d = {0};
    ASSERT_INT_EQ(mt_demos(&e, 90, &rng, &d), 0);
    pol_vla_cfg_t cfg = mt_vla_cfg();
    pol_vla_t v;
    CHECK_OK(pol_vla_create(&v, be, &cfg, &rng, &err), &err);
    double loss = mt_train(&v, &d, MT_STEPS, MT_BATCH, MT_LR, MT_DECAY_FROM, &rng, 1000);
    ASSERT_TRUE(isfinite(loss));
    int named, other, EP = 50;
    mt_eval(&v, &e, EP, 90000, &named, &other);
    int scenes = 10, follow = mt_follow(&v, &e, scenes, 95000);
    fprintf(stderr, "  vla ended at the named target in %d/%d episodes, at another in %d; same scene, each "
            "instruction followed in %d/%d\n", named, EP, other, follow, scenes * NT);
    ASSERT_TRUE(named >= EP * 8 / 10);
    ASSERT_TRUE(named >= 3 * other);
    ASSERT_TRUE(follow >= scenes * NT * 8 / 10);
    pol_vla_destroy(&v);
    mt_data_free(&d);
    menv_close(&e);
}

/* The "vla-bc" and "vla" algorithms through the plugin ABI: the observation
 * layout [image | proprio | objects | instruction ids], BC then the RL phase,
 * export/import and save/load, and every bad input named: a token id that is
 * not one, an image of another size than the weights expect, weights whose names
 * or shapes differ from the model, an instruction longer than the context. */
static void test_vla_plugin(void)
{
    cr_err_t err = {0};
    const corral_plugin_t *pl = pol_builtin_find("vla", CORRAL_PLUGIN_ALGO);
    ASSERT_TRUE(pl != NULL && pol_builtin_find("vla-bc", CORRAL_PLUGIN_ALGO) != NULL);
    enum { C = 3, HH = 8, WW = 8, IMG = C * HH * WW, NPROP = 4, NOBJ = 2, ODIM = 3, CTXN = 8 };
    enum { O = IMG + NPROP + NOBJ * ODIM + CTXN, R = 16 };
    corral_spec_t spec = {.struct_size = sizeof spec, .obs_dim = O, .act_dim = 2, .img_c = C, .img_h = HH, .img_w = WW};
    corral_kv_t cfg[] = {{"ctx", "8"}, {"dim", "8"}, {"heads", "2"}, {"layers", "1"}, {"mlp", "16"},
                         {"head_hidden", "16"}, {"patch", "4"}, {"objects", "2"}, {"object_dim", "3"},
                         {"bc_updates", "5"}, {"seed", "1"}, {"gamma", "0.9"}};
    pol_algo_t a, b;
    CHECK_OK(pol_algo_create(&a, pl, cfg, 12, &spec, &err), &err);
    CHECK_OK(pol_algo_create(&b, pl, cfg, 12, &spec, &err), &err);
    float *obs = calloc((size_t)R * O, sizeof(float)), *next = calloc((size_t)R * O, sizeof(float));
    float act[R * 2], rew[R], done[R];
    uint8_t flags[R];
    nn_rng_t rng;
    nn_rng_seed(&rng, 3);
    for (int r = 0; r < R; r++) {
        float *row = obs + (size_t)r * O;
        for (int i = 0; i < O - CTXN; i++) row[i] = nn_rng_uniform(&rng);
        CHECK_OK(pol_instruction_tokens(r % 2 ? "go red" : "go blue", row + O - CTXN, CTXN, &err), &err);
        act[r * 2] = r % 2 ? 0.5f : -0.5f;
        act[r * 2 + 1] = 0.1f;
        rew[r] = -(float)(r % 3);
        done[r] = r % 4 == 3;
        flags[r] = r < 4 ? CORRAL_SAMPLE_DEMO : 0;
    }
    memcpy(next, obs, sizeof(float) * (size_t)R * O);
    corral_batch_t batch = {.struct_size = sizeof batch, .size = R, .obs = obs, .action = act, .reward = rew,
                            .next_obs = next, .done = done, .flags = flags};
    for (int it = 0; it < 8; it++) {
        corral_metrics_t m = {0};
        CHECK_OK(pol_algo_update(&a, &batch, &m, &err), &err);
        ASSERT_NEAR(pol_metric_get(&m, "phase"), it < 5 ? 0 : 1, 0);
        if (it < 5) ASSERT_NEAR(pol_metric_get(&m, "bc_rows"), 4, 0);   /* the demonstrations only */
        else ASSERT_NEAR(pol_metric_get(&m, "rl_rows"), R - 4, 0);
    }
    float y[2], z[2];
    CHECK_OK(pol_algo_act(&a, obs, 0, y, &err), &err);
    ASSERT_TRUE(isfinite(y[0]) && y[0] >= -1 && y[0] <= 1);
    /* export -> import: the same deterministic action in the RL phase */
    void *blob;
    size_t len;
    CHECK_OK(pol_algo_export(&a, &blob, &len, &err), &err);
    CHECK_OK(pol_algo_import(&b, blob, len, &err), &err);
    free(blob);
    CHECK_OK(pol_algo_act(&a, obs, 1, y, &err), &err);
    CHECK_OK(pol_algo_act(&b, obs, 1, z, &err), &err);
    ASSERT_TRUE(memcmp(y, z, sizeof y) == 0);
    /* save -> load: the next update is bit-for-bit the same */
    char path[512];
    snprintf(path, sizeof path, "%s/vla-algo.ckpt", test_tmpdir());
    CHECK_OK(pol_algo_save(&a, path, &err), &err);
    CHECK_OK(pol_algo_load(&b, path, &err), &err);
    corral_metrics_t ma = {0}, mb = {0};
    CHECK_OK(pol_algo_update(&a, &batch, &ma, &err), &err);
    CHECK_OK(pol_algo_update(&b, &batch, &mb, &err), &err);
    ASSERT_TRUE(pol_metric_get(&ma, "policy_loss") == pol_metric_get(&mb, "policy_loss"));
    /* a token slot holding something else than a token id is named */
    obs[O - 3] = 2.5f;
    ASSERT_INT_EQ(pol_algo_act(&a, obs, 1, y, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "instruction token 5 of 8") != NULL && strstr(err.msg, "2.5") != NULL);
    /* an instruction longer than the context: both lengths named */
    float ids[CTXN];
    ASSERT_INT_EQ(pol_instruction_tokens("reach the green one", ids, CTXN, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "19 bytes") != NULL && strstr(err.msg, "holds 8") != NULL);
    /* weights for another image size: refused naming both */
    pol_algo_t c;
    corral_kv_t img[] = {{"ctx", "8"}, {"objects", "2"}, {"patch", "4"}, {"image", "3x16x16"}};
    ASSERT_INT_EQ(pol_algo_create(&c, pl, img, 4, &spec, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "robot's image is 3x8x8") != NULL && strstr(err.msg, "expect 3x16x16") != NULL);
    /* init weights of another width: the tensor and both shapes named */
    pol_vla_cfg_t wide = {.img_c = C, .img_h = HH, .img_w = WW, .patch = 4, .ctx = CTXN, .proprio = NPROP,
                          .n_obj = NOBJ, .obj_dim = ODIM, .act_dim = 2, .horizon = 1, .steps = 4, .dim = 16,
                          .heads = 2, .layers = 1, .mlp = 16, .head_hidden = 16};
    pol_vla_t w;
    CHECK_OK(pol_vla_create(&w, nn_backend_cpu(), &wide, &rng, &err), &err);
    snprintf(path, sizeof path, "%s/vla-wide.safetensors", test_tmpdir());
    CHECK_OK(pol_vla_save(&w, path, "", &err), &err);
    pol_vla_destroy(&w);
    corral_kv_t init[] = {{"ctx", "8"}, {"dim", "8"}, {"objects", "2"}, {"patch", "4"}, {"mlp", "16"},
                          {"layers", "1"}, {"head_hidden", "16"}, {"init", path}};
    ASSERT_INT_EQ(pol_algo_create(&c, pl, init, 8, &spec, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "'vision.patch_embed.weight' has shape [16, 48], the model expects [8, 48]") != NULL);
    /* too small an observation for the layout */
    corral_spec_t tiny = {.struct_size = sizeof tiny, .obs_dim = 10, .act_dim = 2};
    ASSERT_INT_EQ(pol_algo_create(&c, pl, cfg, 12, &tiny, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "instruction ctx 8") != NULL);
    pol_algo_destroy(&a);
    pol_algo_destroy(&b);
    free(obs);
    free(next);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"tokenizer", test_tokenizer},
        {"block_grad", test_block_grad},
        {"vla_grad", test_vla_grad},
        {"object_slots", test_object_slots},
        {"vla_weights", test_vla_weights},
        {"camera_images", test_camera_images},
        {"vla_plugin", test_vla_plugin},
        {"vla_follows_instructions", test_vla_follows_instructions},
        {NULL, NULL},
    };
    nn_cpu_set_threads(1);
    return test_main("policies.vla", cases, argc, argv);
}
