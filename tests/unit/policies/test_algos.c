/* test_algos.c - the built-in algorithms through the plugin ABI: configuration
 * errors, exact save/restore (updates after a reload are bit-identical to an
 * uninterrupted run), NaN handling (skipped, counted, reported, weights
 * untouched), corrupt checkpoints and blobs, policy export/import, RLPD's preset
 * and demo accounting, BC and HG-DAgger learning what they should, image SAC. */
#include "tests/unit/policies/gradcheck.h"
#include "policies/policies.h"

#include <string.h>

#define OBS 6
#define ACT 2
#define B 32

typedef struct batchbuf {
    float obs[B * 4][OBS], next[B * 4][OBS], act[B * 4][ACT], rew[B * 4], done[B * 4];
    uint8_t flags[B * 4];
    corral_batch_t b;
} batchbuf_t;

static void make_batch(batchbuf_t *bb, int rows, uint64_t seed)
{
    nn_rng_t r;
    nn_rng_seed(&r, seed);
    for (int i = 0; i < rows; i++) {
        for (int j = 0; j < OBS; j++) { bb->obs[i][j] = nn_rng_normal(&r); bb->next[i][j] = nn_rng_normal(&r); }
        for (int j = 0; j < ACT; j++) bb->act[i][j] = 2 * nn_rng_uniform(&r) - 1;
        bb->rew[i] = -fabsf(bb->obs[i][0]);
        bb->done[i] = nn_rng_uniform(&r) < 0.05f;
        bb->flags[i] = i % 2 ? CORRAL_SAMPLE_DEMO : 0;
    }
    bb->b = (corral_batch_t){.struct_size = sizeof(corral_batch_t), .size = rows, .obs = &bb->obs[0][0],
                             .action = &bb->act[0][0], .reward = bb->rew, .next_obs = &bb->next[0][0],
                             .done = bb->done, .flags = bb->flags};
}

static const corral_spec_t spec = {.struct_size = sizeof(corral_spec_t), .obs_dim = OBS, .act_dim = ACT};

static void create(pol_algo_t *a, const char *name, const corral_kv_t *cfg, size_t n)
{
    cr_err_t err = {0};
    const corral_plugin_t *p = pol_builtin_find(name, CORRAL_PLUGIN_ALGO);
    ASSERT_TRUE(p != NULL);
    CHECK_OK(pol_algo_create(a, p, cfg, n, &spec, &err), &err);
}

static void run_updates(pol_algo_t *a, int n, uint64_t seed0, int rows)
{
    static batchbuf_t bb;
    cr_err_t err = {0};
    for (int i = 0; i < n; i++) {
        make_batch(&bb, rows, seed0 + (uint64_t)i);
        corral_metrics_t m = {0};
        CHECK_OK(pol_algo_update(a, &bb.b, &m, &err), &err);
    }
}

static void *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    void *b = malloc(*len);
    if (fread(b, 1, *len, f) != *len) { free(b); b = NULL; }
    fclose(f);
    return b;
}

static void test_config_errors(void)
{
    pol_algo_t a;
    cr_err_t err = {0};
    const corral_plugin_t *sac = pol_builtin_find("sac", CORRAL_PLUGIN_ALGO);
    corral_kv_t unknown[] = {{"learning_rate", "1"}};
    ASSERT_INT_EQ(pol_algo_create(&a, sac, unknown, 1, &spec, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "unknown setting 'learning_rate'") && strstr(err.msg, "actor_lr"));
    corral_kv_t range[] = {{"gamma", "1.5"}};
    ASSERT_INT_EQ(pol_algo_create(&a, sac, range, 1, &spec, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "gamma") && strstr(err.msg, "outside"));
    corral_kv_t nan[] = {{"tau", "abc"}};
    ASSERT_INT_EQ(pol_algo_create(&a, sac, nan, 1, &spec, &err), CR_EINVAL);
    corral_kv_t subset[] = {{"num_q", "2"}, {"num_min_q", "3"}};
    ASSERT_INT_EQ(pol_algo_create(&a, sac, subset, 2, &spec, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "num_min_q") != NULL);
    corral_kv_t hid[] = {{"hidden", "64,x"}};
    ASSERT_INT_EQ(pol_algo_create(&a, sac, hid, 1, &spec, &err), CR_EINVAL);
    corral_spec_t bad = spec;
    bad.act_dim = 0;
    ASSERT_INT_EQ(pol_algo_create(&a, sac, NULL, 0, &bad, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "act_dim") != NULL);
    corral_kv_t cuda[] = {{"backend", "cuda"}};
    int rc = pol_algo_create(&a, sac, cuda, 1, &spec, &err);
    if (rc == 0) pol_algo_destroy(&a);   /* a machine with a GPU and the CUDA backend */
    else ASSERT_INT_EQ(rc, CR_EUNAVAIL);
}

static void check_resume_exact(const char *algo, const corral_kv_t *cfg, size_t n, int rows)
{
    char ck[4200], ka[4300], kb[4300];
    snprintf(ck, sizeof ck, "%s/%s.ckpt", test_tmpdir(), algo);
    snprintf(ka, sizeof ka, "%s/%s.a", test_tmpdir(), algo);
    snprintf(kb, sizeof kb, "%s/%s.b", test_tmpdir(), algo);
    cr_err_t err = {0};
    pol_algo_t a, b;
    create(&a, algo, cfg, n);
    run_updates(&a, 4, 100, rows);
    CHECK_OK(pol_algo_save(&a, ck, &err), &err);
    run_updates(&a, 4, 200, rows);
    float oa[OBS] = {0.1f, -0.2f, 0.3f, 0, 0.5f, 1}, aa[ACT], ab[ACT];
    CHECK_OK(pol_algo_act(&a, oa, 0, aa, &err), &err);
    CHECK_OK(pol_algo_save(&a, ka, &err), &err);

    /* a different seed, then the checkpoint: must continue exactly like a */
    corral_kv_t other[16];
    memcpy(other, cfg, n * sizeof *cfg);
    other[n] = (corral_kv_t){"seed", "777"};
    create(&b, algo, other, n + 1);
    CHECK_OK(pol_algo_load(&b, ck, &err), &err);
    run_updates(&b, 4, 200, rows);
    CHECK_OK(pol_algo_act(&b, oa, 0, ab, &err), &err);
    CHECK_OK(pol_algo_save(&b, kb, &err), &err);
    ASSERT_TRUE(memcmp(aa, ab, sizeof aa) == 0);   /* same RNG state: same sampled action */
    size_t la, lb;
    void *fa = read_all(ka, &la), *fb = read_all(kb, &lb);
    ASSERT_TRUE(fa && fb);
    ASSERT_INT_EQ(la, lb);
    ASSERT_TRUE(memcmp(fa, fb, la) == 0);          /* every tensor, moment and counter */
    free(fa);
    free(fb);
    pol_algo_destroy(&a);
    pol_algo_destroy(&b);
}

static void test_sac_resume_exact(void)
{
    corral_kv_t cfg[] = {{"hidden", "32,32"}, {"seed", "1"}};
    check_resume_exact("sac", cfg, 2, B);
}

static void test_rlpd_resume_exact(void)
{
    corral_kv_t cfg[] = {{"hidden", "16,16"}, {"seed", "2"}, {"utd", "4"}, {"num_q", "5"}};
    check_resume_exact("rlpd", cfg, 4, 4 * B);
}

static void test_bc_resume_exact(void)
{
    corral_kv_t cfg[] = {{"hidden", "32"}, {"seed", "3"}};
    check_resume_exact("bc", cfg, 2, B);
}

/* One update on `threads` lanes must equal the same update on one: the heads,
 * row blocks and gradient products that run side by side write disjoint memory.
 * The batch is large enough that rows are split into blocks and each layer's
 * weight and input gradients run as separate tasks. */
static void threads_run(const char *algo, const corral_kv_t *cfg, size_t n, const corral_spec_t *sp,
                        const char *threads, const char *out)
{
    enum { ROWS = 512, MAXO = 80 };
    static float obs[ROWS * MAXO], next[ROWS * MAXO], act[ROWS * ACT], rew[ROWS], done[ROWS];
    int O = sp->obs_dim;
    ASSERT_TRUE(O <= MAXO && sp->act_dim == ACT);
    corral_kv_t c[16];
    memcpy(c, cfg, n * sizeof *cfg);
    c[n] = (corral_kv_t){"threads", threads};
    pol_algo_t a;
    cr_err_t err = {0};
    CHECK_OK(pol_algo_create(&a, pol_builtin_find(algo, CORRAL_PLUGIN_ALGO), c, n + 1, sp, &err), &err);
    nn_rng_t r;
    for (int u = 0; u < 3; u++) {
        nn_rng_seed(&r, 40 + (uint64_t)u);
        for (int i = 0; i < ROWS * O; i++) { obs[i] = nn_rng_uniform(&r); next[i] = nn_rng_uniform(&r); }
        for (int i = 0; i < ROWS * ACT; i++) act[i] = 2 * nn_rng_uniform(&r) - 1;
        for (int i = 0; i < ROWS; i++) { rew[i] = -fabsf(obs[i * O] - 0.5f); done[i] = i % 17 == 0; }
        corral_batch_t b = {.struct_size = sizeof b, .size = ROWS, .obs = obs, .action = act, .reward = rew,
                            .next_obs = next, .done = done};
        corral_metrics_t m = {0};
        CHECK_OK(pol_algo_update(&a, &b, &m, &err), &err);
        ASSERT_INT_EQ(pol_metric_get(&m, "skipped_nan"), 0);
    }
    CHECK_OK(pol_algo_save(&a, out, &err), &err);
    pol_algo_destroy(&a);
}

static void check_threads_exact(const char *algo, const corral_kv_t *cfg, size_t n, const corral_spec_t *sp)
{
    char k1[4300], kn[4300];
    snprintf(k1, sizeof k1, "%s/%s.t1", test_tmpdir(), algo);
    threads_run(algo, cfg, n, sp, "1", k1);
    size_t l1, ln;
    void *f1 = read_all(k1, &l1);
    ASSERT_TRUE(f1 != NULL);
    const char *counts[] = {"2", "3"};
    for (int i = 0; i < 2; i++) {
        snprintf(kn, sizeof kn, "%s/%s.t%s", test_tmpdir(), algo, counts[i]);
        threads_run(algo, cfg, n, sp, counts[i], kn);
        void *fn = read_all(kn, &ln);
        ASSERT_TRUE(fn && ln == l1);
        ASSERT_TRUE(memcmp(f1, fn, l1) == 0);
        free(fn);
    }
    free(f1);
}

static void test_threads_exact(void)
{
    corral_kv_t sac[] = {{"hidden", "128,128"}, {"seed", "4"}};
    check_threads_exact("sac", sac, 2, &spec);
    corral_kv_t rlpd[] = {{"hidden", "128,128"}, {"seed", "5"}, {"utd", "2"}, {"num_q", "5"}};
    check_threads_exact("rlpd", rlpd, 4, &spec);
    /* images: the encoder's gradient gathers the heads' input gradients */
    corral_spec_t img = {.struct_size = sizeof img, .obs_dim = 8 * 8 + 3, .act_dim = ACT, .img_c = 1, .img_h = 8,
                         .img_w = 8};
    corral_kv_t isac[] = {{"hidden", "64,64"}, {"seed", "6"}, {"encoder_feat", "8"}, {"aug_pad", "1"}};
    check_threads_exact("sac", isac, 4, &img);
}

static void test_nan_skipped(void)
{
    corral_kv_t cfg[] = {{"hidden", "16,16"}};
    pol_algo_t a;
    create(&a, "sac", cfg, 1);
    run_updates(&a, 2, 1, B);
    cr_err_t err = {0};
    void *before, *after;
    size_t lb, la;
    CHECK_OK(pol_algo_export(&a, &before, &lb, &err), &err);
    static batchbuf_t bb;
    make_batch(&bb, B, 9);
    bb.obs[3][1] = NAN;
    bb.next[5][0] = INFINITY;
    corral_metrics_t m = {0};
    CHECK_OK(pol_algo_update(&a, &bb.b, &m, &err), &err);
    ASSERT_TRUE(pol_metric_get(&m, "skipped_now") >= 1);
    ASSERT_TRUE(pol_metric_get(&m, "skipped_nan") >= 1);
    CHECK_OK(pol_algo_export(&a, &after, &la, &err), &err);
    ASSERT_INT_EQ(la, lb);
    ASSERT_TRUE(memcmp(before, after, la) == 0);   /* the actor did not move */
    /* and the next clean batch trains normally */
    make_batch(&bb, B, 10);
    memset(&m, 0, sizeof m);
    CHECK_OK(pol_algo_update(&a, &bb.b, &m, &err), &err);
    ASSERT_INT_EQ(pol_metric_get(&m, "skipped_now"), 0);
    ASSERT_TRUE(isfinite(pol_metric_get(&m, "critic_loss")));
    /* act on a NaN observation is an error, not a NaN action */
    float o[OBS] = {NAN}, act[ACT];
    ASSERT_INT_EQ(pol_algo_act(&a, o, 1, act, &err), CR_EINVAL);
    free(before);
    free(after);
    pol_algo_destroy(&a);

    /* BC too */
    create(&a, "bc", cfg, 1);
    make_batch(&bb, B, 11);
    bb.act[0][0] = NAN;
    memset(&m, 0, sizeof m);
    CHECK_OK(pol_algo_update(&a, &bb.b, &m, &err), &err);
    ASSERT_INT_EQ(pol_metric_get(&m, "skipped_nan"), 1);
    pol_algo_destroy(&a);
}

static void test_corrupt_checkpoint(void)
{
    char ck[4200], bad[4300];
    snprintf(ck, sizeof ck, "%s/c.ckpt", test_tmpdir());
    snprintf(bad, sizeof bad, "%s/c.bad", test_tmpdir());
    corral_kv_t cfg[] = {{"hidden", "16,16"}};
    cr_err_t err = {0};
    pol_algo_t a, other;
    create(&a, "sac", cfg, 1);
    run_updates(&a, 2, 1, B);
    CHECK_OK(pol_algo_save(&a, ck, &err), &err);
    void *before;
    size_t lb, len;
    CHECK_OK(pol_algo_export(&a, &before, &lb, &err), &err);
    uint8_t *f = read_all(ck, &len);
    /* truncated: rejected, state unchanged */
    FILE *o = fopen(bad, "wb");
    fwrite(f, 1, len - 10, o);
    fclose(o);
    ASSERT_INT_EQ(pol_algo_load(&a, bad, &err), CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, bad) != NULL);
    void *after;
    size_t la;
    CHECK_OK(pol_algo_export(&a, &after, &la, &err), &err);
    ASSERT_TRUE(la == lb && memcmp(before, after, la) == 0);
    free(after);
    ASSERT_INT_EQ(pol_algo_load(&a, "/nonexistent/ckpt", &err), CR_ENOENT);
    /* another shape: refused with both shapes named */
    corral_kv_t big[] = {{"hidden", "32,32"}};
    create(&other, "sac", big, 1);
    ASSERT_INT_EQ(pol_algo_load(&other, ck, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "hidden 16,16") != NULL);
    pol_algo_destroy(&other);
    /* a BC checkpoint is not a SAC one */
    create(&other, "bc", cfg, 1);
    ASSERT_TRUE(pol_algo_load(&other, ck, &err) != 0);
    pol_algo_destroy(&other);
    free(f);
    free(before);
    pol_algo_destroy(&a);
}

static void test_export_import(void)
{
    corral_kv_t cfg[] = {{"hidden", "16,16"}, {"seed", "5"}};
    corral_kv_t cfg2[] = {{"hidden", "16,16"}, {"seed", "6"}};
    cr_err_t err = {0};
    pol_algo_t a, b;
    create(&a, "sac", cfg, 2);
    create(&b, "sac", cfg2, 2);
    run_updates(&a, 3, 1, B);
    float o[OBS] = {0.3f, 0.1f, -1, 0.2f, 0, 0}, x[ACT], y[ACT];
    CHECK_OK(pol_algo_act(&a, o, 1, x, &err), &err);
    CHECK_OK(pol_algo_act(&b, o, 1, y, &err), &err);
    ASSERT_TRUE(memcmp(x, y, sizeof x) != 0);
    void *blob;
    size_t len;
    CHECK_OK(pol_algo_export(&a, &blob, &len, &err), &err);
    CHECK_OK(pol_algo_import(&b, blob, len, &err), &err);
    CHECK_OK(pol_algo_act(&b, o, 1, y, &err), &err);
    ASSERT_TRUE(memcmp(x, y, sizeof x) == 0);
    /* the export ABI reports the size needed */
    size_t need = 0;
    ASSERT_INT_EQ(a.desc->algo->export_policy(a.self, NULL, 0, &need, (corral_err_t *)&err), CORRAL_ETOOBIG);
    ASSERT_INT_EQ(need, len);
    /* corrupt and mismatched blobs change nothing */
    uint8_t *c = malloc(len);
    memcpy(c, blob, len);
    c[20] = 'X';
    ASSERT_TRUE(pol_algo_import(&b, c, len, &err) != 0);
    ASSERT_INT_EQ(pol_algo_import(&b, blob, len / 2, &err), CR_ECORRUPT);
    CHECK_OK(pol_algo_act(&b, o, 1, y, &err), &err);
    ASSERT_TRUE(memcmp(x, y, sizeof x) == 0);
    pol_algo_t bc;
    create(&bc, "bc", cfg, 1);
    ASSERT_INT_EQ(pol_algo_import(&bc, blob, len, &err), CR_EINVAL);   /* hidden differs */
    pol_algo_destroy(&bc);
    free(c);
    free(blob);
    pol_algo_destroy(&a);
    pol_algo_destroy(&b);
}

static void test_rlpd(void)
{
    corral_kv_t cfg[] = {{"hidden", "16,16"}, {"utd", "4"}};
    cr_err_t err = {0};
    pol_algo_t a;
    create(&a, "rlpd", cfg, 2);
    static batchbuf_t bb;
    make_batch(&bb, 4 * B, 1);
    corral_metrics_t m = {0};
    CHECK_OK(pol_algo_update(&a, &bb.b, &m, &err), &err);
    ASSERT_NEAR(pol_metric_get(&m, "demo_frac"), 0.5, 1e-9);
    ASSERT_NEAR(pol_metric_get(&m, "updates"), 1, 0.5);
    make_batch(&bb, 4 * B - 1, 2);
    ASSERT_INT_EQ(pol_algo_update(&a, &bb.b, &m, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "utd=4") != NULL);
    pol_algo_destroy(&a);
}

/* BC fits a fixed linear policy; HG-DAgger learns the human's actions only. */
static void test_bc_and_dagger(void)
{
    cr_err_t err = {0};
    for (int dagger = 0; dagger <= 1; dagger++) {
        corral_kv_t cfg[] = {{"hidden", "32,32"}, {"lr", "3e-3"}};
        pol_algo_t a;
        create(&a, dagger ? "hg-dagger" : "bc", cfg, 2);
        static batchbuf_t bb;
        double first = -1, last = 0;
        for (int it = 0; it < 400; it++) {
            make_batch(&bb, B, 1000 + (uint64_t)it);
            for (int i = 0; i < B; i++) {
                int human = i % 4 == 0;
                bb.flags[i] = human ? CORRAL_SAMPLE_INTERVENTION : 0;
                float t0 = 0.5f * tanhf(bb.obs[i][0] - bb.obs[i][1]), t1 = 0.5f * tanhf(bb.obs[i][2]);
                /* the robot's own samples carry the wrong sign */
                bb.act[i][0] = dagger && !human ? -t0 : t0;
                bb.act[i][1] = dagger && !human ? -t1 : t1;
            }
            corral_metrics_t m = {0};
            CHECK_OK(pol_algo_update(&a, &bb.b, &m, &err), &err);
            if (dagger) ASSERT_INT_EQ(pol_metric_get(&m, "samples_used"), B / 4);
            if (first < 0) first = pol_metric_get(&m, "bc_loss");
            last = pol_metric_get(&m, "bc_loss");
        }
        ASSERT_TRUE(last < first / 10);
        float o[OBS] = {0.8f, -0.4f, 0.6f, 0, 0, 0}, act[ACT];
        CHECK_OK(pol_algo_act(&a, o, 1, act, &err), &err);
        ASSERT_NEAR(act[0], 0.5 * tanh(1.2), 0.08);
        ASSERT_NEAR(act[1], 0.5 * tanh(0.6), 0.08);
        /* a batch without human samples changes nothing for HG-DAgger */
        if (dagger) {
            make_batch(&bb, B, 5);
            memset(bb.flags, 0, sizeof bb.flags);
            corral_metrics_t m = {0};
            CHECK_OK(pol_algo_update(&a, &bb.b, &m, &err), &err);
            ASSERT_INT_EQ(pol_metric_get(&m, "samples_used"), 0);
        }
        pol_algo_destroy(&a);
    }
}

static void test_image_sac(void)
{
    enum { C = 3, H = 12, W = 12, PROP = 3, IO = C * H * W + PROP };
    corral_spec_t is = {.struct_size = sizeof is, .obs_dim = IO, .act_dim = ACT, .img_c = C, .img_h = H, .img_w = W};
    corral_kv_t cfg[] = {{"hidden", "16,16"}, {"encoder_feat", "8"}, {"aug_pad", "2"}};
    cr_err_t err = {0};
    pol_algo_t a, b;
    const corral_plugin_t *sac = pol_builtin_find("sac", CORRAL_PLUGIN_ALGO);
    CHECK_OK(pol_algo_create(&a, sac, cfg, 3, &is, &err), &err);
    CHECK_OK(pol_algo_create(&b, sac, cfg, 3, &is, &err), &err);
    enum { N = 8 };
    float *obs = gc_zeros(N * IO), *next = gc_zeros(N * IO), act[N * ACT], rew[N], done[N] = {0};
    nn_rng_t r;
    nn_rng_seed(&r, 1);
    for (int i = 0; i < N * IO; i++) { obs[i] = nn_rng_uniform(&r); next[i] = nn_rng_uniform(&r); }
    for (int i = 0; i < N * ACT; i++) act[i] = nn_rng_uniform(&r) - 0.5f;
    for (int i = 0; i < N; i++) rew[i] = obs[i * IO] - 0.5f;
    corral_batch_t bt = {.struct_size = sizeof bt, .size = N, .obs = obs, .action = act, .reward = rew,
                         .next_obs = next, .done = done};
    char ck[4200], ka[4300], kb[4300];
    snprintf(ck, sizeof ck, "%s/img.ckpt", test_tmpdir());
    snprintf(ka, sizeof ka, "%s/img.a", test_tmpdir());
    snprintf(kb, sizeof kb, "%s/img.b", test_tmpdir());
    corral_metrics_t m = {0};
    for (int i = 0; i < 3; i++) CHECK_OK(pol_algo_update(&a, &bt, &m, &err), &err);
    ASSERT_TRUE(isfinite(pol_metric_get(&m, "critic_loss")));
    ASSERT_INT_EQ(pol_metric_get(&m, "skipped_nan"), 0);
    CHECK_OK(pol_algo_save(&a, ck, &err), &err);
    CHECK_OK(pol_algo_update(&a, &bt, &m, &err), &err);
    CHECK_OK(pol_algo_save(&a, ka, &err), &err);
    CHECK_OK(pol_algo_load(&b, ck, &err), &err);
    CHECK_OK(pol_algo_update(&b, &bt, &m, &err), &err);
    CHECK_OK(pol_algo_save(&b, kb, &err), &err);
    size_t la, lb;
    void *fa = read_all(ka, &la), *fb = read_all(kb, &lb);
    ASSERT_TRUE(fa && fb && la == lb && memcmp(fa, fb, la) == 0);
    float out[ACT];
    CHECK_OK(pol_algo_act(&a, obs, 1, out, &err), &err);
    ASSERT_TRUE(fabsf(out[0]) < 1 && fabsf(out[1]) < 1);
    free(fa); free(fb); free(obs); free(next);
    pol_algo_destroy(&a);
    pol_algo_destroy(&b);
    /* an image that does not fit the observation is refused, naming both */
    corral_spec_t bad = is;
    bad.obs_dim = C * H * W - 1;
    ASSERT_INT_EQ(pol_algo_create(&a, pol_builtin_find("bc", CORRAL_PLUGIN_ALGO), NULL, 0, &bad, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "3x12x12") && strstr(err.msg, "obs_dim 431"));
}

/* Image BC and HG-DAgger: the action is where a bright square sits in the image
 * (the proprioception is noise), so only an encoder that learns can fit it. For
 * HG-DAgger the robot's own samples carry the mirrored action and must be
 * ignored. Then: exact resume with random shifts on, and the policy blob. */
enum { IC = 1, IH = 12, IW = 12, IPROP = 2, IO_DIM = IC * IH * IW + IPROP, IB = 32 };

static void square_obs(float *o, int r, int c, nn_rng_t *rng)
{
    memset(o, 0, IO_DIM * sizeof(float));
    for (int y = r - 1; y <= r + 1; y++)
        for (int x = c - 1; x <= c + 1; x++) o[y * IW + x] = 1.0f;
    for (int j = 0; j < IPROP; j++) o[IC * IH * IW + j] = nn_rng_normal(rng);
}

static float square_act(int k) { return -0.7f + 1.4f * (float)(k - 1) / (IH - 3); }

static void image_batch(float *obs, float *act, uint8_t *flags, int dagger, nn_rng_t *rng)
{
    for (int i = 0; i < IB; i++) {
        int r = 1 + (int)nn_rng_below(rng, IH - 2), c = 1 + (int)nn_rng_below(rng, IW - 2);
        int human = i % 4 == 0;
        square_obs(obs + (size_t)i * IO_DIM, r, c, rng);
        float sign = dagger && !human ? -1.0f : 1.0f;
        act[i * ACT] = sign * square_act(c);
        act[i * ACT + 1] = sign * square_act(r);
        flags[i] = human ? CORRAL_SAMPLE_INTERVENTION : 0;
    }
}

static void test_bc_dagger_images(void)
{
    corral_spec_t is = {.struct_size = sizeof is, .obs_dim = IO_DIM, .act_dim = ACT, .img_c = IC, .img_h = IH,
                        .img_w = IW};
    static float obs[IB * IO_DIM], act[IB * ACT], rew[IB], done[IB];
    uint8_t flags[IB];
    corral_batch_t bt = {.struct_size = sizeof bt, .size = IB, .obs = obs, .action = act, .reward = rew,
                         .next_obs = obs, .done = done, .flags = flags};
    cr_err_t err = {0};
    for (int dagger = 0; dagger <= 1; dagger++) {
        const corral_plugin_t *p = pol_builtin_find(dagger ? "hg-dagger" : "bc", CORRAL_PLUGIN_ALGO);
        corral_kv_t cfg[] = {{"hidden", "64,64"}, {"lr", "2e-3"}, {"encoder_feat", "16"}, {"aug_pad", "0"}};
        pol_algo_t a;
        CHECK_OK(pol_algo_create(&a, p, cfg, 4, &is, &err), &err);
        nn_rng_t rng;
        nn_rng_seed(&rng, 9 + (uint64_t)dagger);
        double first = -1, last = 0;
        for (int it = 0; it < 250; it++) {
            image_batch(obs, act, flags, dagger, &rng);
            corral_metrics_t m = {0};
            CHECK_OK(pol_algo_update(&a, &bt, &m, &err), &err);
            if (dagger) ASSERT_INT_EQ(pol_metric_get(&m, "samples_used"), IB / 4);
            if (first < 0) first = pol_metric_get(&m, "bc_loss");
            last = pol_metric_get(&m, "bc_loss");
        }
        ASSERT_TRUE(last < first / 10);
        /* fresh squares at the corners and the centre */
        int pos[][2] = {{2, 2}, {2, 9}, {9, 2}, {9, 9}, {5, 6}};
        for (int k = 0; k < 5; k++) {
            float o[IO_DIM], out[ACT];
            square_obs(o, pos[k][0], pos[k][1], &rng);
            CHECK_OK(pol_algo_act(&a, o, 1, out, &err), &err);
            ASSERT_NEAR(out[0], square_act(pos[k][1]), 0.1);
            ASSERT_NEAR(out[1], square_act(pos[k][0]), 0.1);
        }
        pol_algo_destroy(&a);
    }

    /* exact resume with random shifts (RNG in the state), and the policy blob */
    corral_kv_t cfg[] = {{"hidden", "16,16"}, {"encoder_feat", "8"}, {"aug_pad", "2"}};
    const corral_plugin_t *p = pol_builtin_find("bc", CORRAL_PLUGIN_ALGO);
    pol_algo_t a, b;
    CHECK_OK(pol_algo_create(&a, p, cfg, 3, &is, &err), &err);
    corral_kv_t other[] = {{"hidden", "16,16"}, {"encoder_feat", "8"}, {"aug_pad", "2"}, {"seed", "7"}};
    CHECK_OK(pol_algo_create(&b, p, other, 4, &is, &err), &err);
    char ck[4200], ka[4300], kb[4300];
    snprintf(ck, sizeof ck, "%s/imgbc.ckpt", test_tmpdir());
    snprintf(ka, sizeof ka, "%s/imgbc.a", test_tmpdir());
    snprintf(kb, sizeof kb, "%s/imgbc.b", test_tmpdir());
    nn_rng_t rng;
    nn_rng_seed(&rng, 3);
    image_batch(obs, act, flags, 0, &rng);
    corral_metrics_t m = {0};
    for (int i = 0; i < 3; i++) CHECK_OK(pol_algo_update(&a, &bt, &m, &err), &err);
    CHECK_OK(pol_algo_save(&a, ck, &err), &err);
    for (int i = 0; i < 2; i++) CHECK_OK(pol_algo_update(&a, &bt, &m, &err), &err);
    CHECK_OK(pol_algo_save(&a, ka, &err), &err);
    CHECK_OK(pol_algo_load(&b, ck, &err), &err);
    for (int i = 0; i < 2; i++) CHECK_OK(pol_algo_update(&b, &bt, &m, &err), &err);
    CHECK_OK(pol_algo_save(&b, kb, &err), &err);
    size_t la, lb;
    void *fa = read_all(ka, &la), *fb = read_all(kb, &lb);
    ASSERT_TRUE(fa && fb && la == lb && memcmp(fa, fb, la) == 0);
    free(fa);
    free(fb);
    /* the exported policy (actor and encoder) acts the same elsewhere */
    void *blob, *vblob;
    size_t n, vn;
    CHECK_OK(pol_algo_export(&a, &blob, &n, &err), &err);
    pol_algo_t c, v;
    corral_kv_t cfg3[] = {{"hidden", "16,16"}, {"encoder_feat", "8"}, {"seed", "11"}};
    CHECK_OK(pol_algo_create(&c, p, cfg3, 3, &is, &err), &err);
    float oa[ACT], oc[ACT];
    CHECK_OK(pol_algo_act(&a, obs, 1, oa, &err), &err);
    CHECK_OK(pol_algo_act(&c, obs, 1, oc, &err), &err);
    ASSERT_TRUE(memcmp(oa, oc, sizeof oa) != 0);
    CHECK_OK(pol_algo_import(&c, blob, n, &err), &err);
    CHECK_OK(pol_algo_act(&c, obs, 1, oc, &err), &err);
    ASSERT_TRUE(memcmp(oa, oc, sizeof oa) == 0);
    /* a vector-observation policy does not load into an image instance */
    CHECK_OK(pol_algo_create(&v, p, cfg3, 3, &spec, &err), &err);
    CHECK_OK(pol_algo_export(&v, &vblob, &vn, &err), &err);
    ASSERT_INT_EQ(pol_algo_import(&c, vblob, vn, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "spec") != NULL);
    free(vblob);
    free(blob);
    pol_algo_destroy(&v);
    pol_algo_destroy(&c);
    pol_algo_destroy(&a);
    pol_algo_destroy(&b);
}

static void test_reward_builtin(void)
{
    const corral_plugin_t *p = pol_builtin_find("reach-distance", CORRAL_PLUGIN_REWARD);
    ASSERT_TRUE(p != NULL);
    cr_err_t err = {0};
    CHECK_OK(pol_plugin_validate(p, &err), &err);
    corral_kv_t cfg[] = {{"offset", "4"}, {"dims", "2"}, {"threshold", "0.5"}};
    void *self;
    ASSERT_INT_EQ(p->reward->create(cfg, 3, &spec, &self, (corral_err_t *)&err), 0);
    float o[OBS] = {0, 0, 0, 0, 0.3f, 0.4f}, a[ACT] = {0}, rwd;
    int ok;
    ASSERT_INT_EQ(p->reward->compute(self, o, a, o, &rwd, &ok, (corral_err_t *)&err), 0);
    ASSERT_NEAR(rwd, -0.5, 1e-6);
    ASSERT_INT_EQ(ok, 0);
    o[5] = 0;
    p->reward->compute(self, o, a, o, &rwd, &ok, (corral_err_t *)&err);
    ASSERT_INT_EQ(ok, 1);
    p->reward->destroy(self);
    corral_kv_t far[] = {{"offset", "5"}};
    ASSERT_INT_EQ(p->reward->create(far, 1, &spec, &self, (corral_err_t *)&err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "exceeds obs_dim") != NULL);
    for (int i = 0; i < pol_builtin_count(); i++) CHECK_OK(pol_plugin_validate(pol_builtin_at(i), &err), &err);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"config_errors", test_config_errors},
        {"sac_resume_exact", test_sac_resume_exact},
        {"rlpd_resume_exact", test_rlpd_resume_exact},
        {"bc_resume_exact", test_bc_resume_exact},
        {"threads_exact", test_threads_exact},
        {"nan_skipped", test_nan_skipped},
        {"corrupt_checkpoint", test_corrupt_checkpoint},
        {"export_import", test_export_import},
        {"rlpd", test_rlpd},
        {"bc_and_dagger", test_bc_and_dagger},
        {"image_sac", test_image_sac},
        {"bc_dagger_images", test_bc_dagger_images},
        {"reward_builtin", test_reward_builtin},
        {NULL, NULL},
    };
    return test_main("policies.algos", cases, argc, argv);
}
