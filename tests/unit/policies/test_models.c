/* test_models.c - the models' backward passes against finite differences: MLP
 * with LayerNorm (inputs and parameters), the critic ensemble's action gradient,
 * the actor through the squashed Gaussian, the CNN encoder. */
#include "tests/unit/policies/gradcheck.h"
#include "policies/models/models.h"

#include <string.h>

static const nn_backend_t *be;

typedef struct { pol_mlp_t *m; nn_params_t *p; float *x, *r; int B, out; } mlp_ctx_t;
static double mlp_loss(void *c)
{
    mlp_ctx_t *k = c;
    const float *y = pol_mlp_forward(k->m, k->p, k->x, k->B);
    return gc_dot(y, k->r, (size_t)k->B * k->out);
}

static void test_mlp_layernorm(void)
{
    be = nn_backend_cpu();
    cr_err_t err = {0};
    nn_rng_t rng;
    nn_rng_seed(&rng, 3);
    nn_params_t p;
    nn_params_init(&p, be);
    pol_mlp_t m;
    int hidden[2] = {8, 6};
    CHECK_OK(pol_mlp_declare(&m, &p, "m", 5, hidden, 2, 3, 1, &err), &err);
    CHECK_OK(nn_params_alloc(&p, &err), &err);
    pol_mlp_init(&m, &p, &rng);
    /* perturb LayerNorm parameters away from (1, 0) so their gradients matter */
    gc_fill(&rng, p.data, p.numel, 0.5f);
    CHECK_OK(pol_mlp_reserve(&m, 4, &err), &err);
    mlp_ctx_t k = {&m, &p, gc_zeros(20), gc_zeros(12), 4, 3};
    gc_fill(&rng, k.x, 20, 1);
    gc_fill(&rng, k.r, 12, 1);
    float *dx = gc_zeros(20);
    mlp_loss(&k);
    nn_params_zero_grad(&p);
    pol_mlp_backward(&m, &p, dx, k.r, 4, 1);
    ASSERT_INT_EQ(gc_check("mlp.dx", k.x, 20, dx, mlp_loss, &k, 1e-3f, 3e-2), 0);
    float *g = gc_zeros(p.numel);
    memcpy(g, p.grad, p.numel * sizeof(float));
    ASSERT_INT_EQ(gc_check("mlp.params", p.data, p.numel, g, mlp_loss, &k, 1e-3f, 3e-2), 0);
    /* param_grads = 0 leaves parameter gradients alone */
    nn_params_zero_grad(&p);
    pol_mlp_backward(&m, &p, dx, k.r, 4, 0);
    ASSERT_NEAR(be->sumsq(p.grad, p.numel), 0, 1e-12);
    free(g); free(dx); free(k.x); free(k.r);
    pol_mlp_destroy(&m);
    nn_params_destroy(&p);
}

/* The MLP on a backend without the fused passes (a CUDA build, say) must give
 * what it gives with them: the same bits forward and backward, with and
 * without LayerNorm, for each activation, with a pool splitting the work. */
static int same_floats(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i])) return 0;
    return 1;
}

static void test_mlp_fused_plain(void)
{
    const nn_backend_t *cpu = nn_backend_cpu();
    nn_backend_t plain = *cpu;
    plain.bias_act_forward = NULL;
    plain.linear_backward_input = NULL;
    plain.act_backward_inplace = NULL;
    cr_err_t err = {0};
    nn_pool_t *pool;
    CHECK_OK(nn_pool_create(&pool, 2, &err), &err);
    enum { B = 256, IN = 9, OUT = 4 };
    int hidden[2] = {128, 128};   /* large enough for the side-by-side gradient products */
    for (int ln = 0; ln <= 1; ln++)
        for (int act = NN_ACT_RELU; act <= NN_ACT_SILU; act++) {
            const nn_backend_t *bes[2] = {cpu, &plain};
            nn_params_t p[2];
            pol_mlp_t m[2];
            float *y[2], *dx[2];
            nn_rng_t rng;
            for (int k = 0; k < 2; k++) {
                nn_rng_seed(&rng, 5);
                nn_params_init(&p[k], bes[k]);
                CHECK_OK(pol_mlp_declare(&m[k], &p[k], "m", IN, hidden, 2, OUT, ln, &err), &err);
                CHECK_OK(nn_params_alloc(&p[k], &err), &err);
                pol_mlp_init(&m[k], &p[k], &rng);
                gc_fill(&rng, p[k].data, p[k].numel, 0.3f);
                m[k].act = (nn_act_t)act;
                pol_mlp_set_pool(&m[k], pool, 1);
                CHECK_OK(pol_mlp_reserve(&m[k], B, &err), &err);
                float *x = gc_zeros((size_t)B * IN), *r = gc_zeros((size_t)B * OUT);
                gc_fill(&rng, x, (size_t)B * IN, 1);
                gc_fill(&rng, r, (size_t)B * OUT, 1);
                y[k] = gc_zeros((size_t)B * OUT);
                memcpy(y[k], pol_mlp_forward(&m[k], &p[k], x, B), (size_t)B * OUT * sizeof(float));
                dx[k] = gc_zeros((size_t)B * IN);
                nn_params_zero_grad(&p[k]);
                pol_mlp_backward(&m[k], &p[k], dx[k], r, B, 1);
                free(x);
                free(r);
            }
            if (!same_floats(y[0], y[1], (size_t)B * OUT) || !same_floats(dx[0], dx[1], (size_t)B * IN) ||
                !same_floats(p[0].grad, p[1].grad, p[0].numel))
                fprintf(stderr, "  layernorm %d activation %d differs\n", ln, act);
            ASSERT_TRUE(same_floats(y[0], y[1], (size_t)B * OUT));
            ASSERT_TRUE(same_floats(dx[0], dx[1], (size_t)B * IN));
            ASSERT_TRUE(same_floats(p[0].grad, p[1].grad, p[0].numel));
            for (int k = 0; k < 2; k++) {
                free(y[k]);
                free(dx[k]);
                pol_mlp_destroy(&m[k]);
                nn_params_destroy(&p[k]);
            }
        }
    nn_pool_destroy(pool);
}

typedef struct { pol_critic_t *c; float *obs, *act, *r; int B; } crit_ctx_t;
static double crit_loss(void *v)
{
    crit_ctx_t *k = v;
    pol_critic_forward(k->c, k->obs, k->act, k->B);
    return gc_dot(k->c->q, k->r, (size_t)k->c->n * k->B);
}

static void test_critic_action_grad(void)
{
    be = nn_backend_cpu();
    cr_err_t err = {0};
    nn_rng_t rng;
    nn_rng_seed(&rng, 4);
    pol_critic_t c;
    int hidden[2] = {16, 16};
    CHECK_OK(pol_critic_create(&c, be, 3, 4, 2, hidden, 2, 1, &rng, &err), &err);
    CHECK_OK(pol_critic_reserve(&c, 5, &err), &err);
    crit_ctx_t k = {&c, gc_zeros(20), gc_zeros(10), gc_zeros(15), 5};
    gc_fill(&rng, k.obs, 20, 1); gc_fill(&rng, k.act, 10, 1); gc_fill(&rng, k.r, 15, 1);
    float *dact = gc_zeros(10), *dobs = gc_zeros(20);
    crit_loss(&k);
    pol_critic_backward(&c, k.r, dobs, dact, 5, 0);
    ASSERT_INT_EQ(gc_check("critic.dact", k.act, 10, dact, crit_loss, &k, 1e-3f, 3e-2), 0);
    ASSERT_INT_EQ(gc_check("critic.dobs", k.obs, 20, dobs, crit_loss, &k, 1e-3f, 3e-2), 0);
    free(k.obs); free(k.act); free(k.r); free(dact); free(dobs);
    pol_critic_destroy(&c);
}

typedef struct { pol_actor_t *a; float *obs, *ra, *rl; int B; } act_ctx_t;
static double actor_loss(void *v)
{
    act_ctx_t *k = v;
    pol_actor_forward(k->a, k->obs, k->B);
    return gc_dot(k->a->action, k->ra, (size_t)k->B * k->a->act_dim) + gc_dot(k->a->logp, k->rl, k->B);
}

static void test_actor_grad(void)
{
    be = nn_backend_cpu();
    cr_err_t err = {0};
    nn_rng_t rng;
    nn_rng_seed(&rng, 5);
    pol_actor_t a;
    int hidden[1] = {12};
    CHECK_OK(pol_actor_create(&a, be, 4, 2, hidden, 1, &rng, &err), &err);
    CHECK_OK(pol_actor_reserve(&a, 3, &err), &err);
    gc_fill(&rng, a.eps, 6, 1);
    act_ctx_t k = {&a, gc_zeros(12), gc_zeros(6), gc_zeros(3), 3};
    gc_fill(&rng, k.obs, 12, 1); gc_fill(&rng, k.ra, 6, 1); gc_fill(&rng, k.rl, 3, 1);
    actor_loss(&k);
    nn_params_zero_grad(&a.params);
    pol_actor_backward(&a, k.ra, k.rl, 3);
    float *g = gc_zeros(a.params.numel);
    memcpy(g, a.params.grad, a.params.numel * sizeof(float));
    ASSERT_INT_EQ(gc_check("actor.params", a.params.data, a.params.numel, g, actor_loss, &k, 1e-3f, 3e-2), 0);
    for (int i = 0; i < 6; i++) ASSERT_TRUE(a.action[i] > -1.0f && a.action[i] < 1.0f);
    free(g); free(k.obs); free(k.ra); free(k.rl);
    pol_actor_destroy(&a);
}

typedef struct { pol_encoder_t *e; float *img, *r; int B; } enc_ctx_t;
static double enc_loss(void *v)
{
    enc_ctx_t *k = v;
    const float *y = pol_encoder_forward(k->e, k->img, k->B);
    return gc_dot(y, k->r, (size_t)k->B * k->e->feat);
}

static void test_encoder_grad(void)
{
    be = nn_backend_cpu();
    cr_err_t err = {0};
    nn_rng_t rng;
    nn_rng_seed(&rng, 6);
    nn_params_t p;
    nn_params_init(&p, be);
    pol_encoder_t e;
    CHECK_OK(pol_encoder_declare(&e, &p, "enc", 2, 9, 8, 5, &err), &err);
    CHECK_OK(nn_params_alloc(&p, &err), &err);
    pol_encoder_init(&e, &rng);
    CHECK_OK(pol_encoder_reserve(&e, 2, &err), &err);
    size_t nimg = 2 * 2 * 9 * 8;
    enc_ctx_t k = {&e, gc_zeros(nimg), gc_zeros(10), 2};
    for (size_t i = 0; i < nimg; i++) k.img[i] = nn_rng_uniform(&rng);
    gc_fill(&rng, k.r, 10, 1);
    float *dimg = gc_zeros(nimg);
    enc_loss(&k);
    nn_params_zero_grad(&p);
    pol_encoder_backward(&e, dimg, k.r, 2);
    float *g = gc_zeros(p.numel);
    memcpy(g, p.grad, p.numel * sizeof(float));
    ASSERT_INT_EQ(gc_check("encoder.params", p.data, p.numel, g, enc_loss, &k, 1e-3f, 5e-2), 0);
    ASSERT_INT_EQ(gc_check("encoder.dimg", k.img, nimg, dimg, enc_loss, &k, 1e-3f, 5e-2), 0);
    free(g); free(dimg); free(k.img); free(k.r);
    pol_encoder_destroy(&e);
    nn_params_destroy(&p);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"mlp_layernorm", test_mlp_layernorm},
        {"mlp_fused_plain", test_mlp_fused_plain},
        {"critic_action_grad", test_critic_action_grad},
        {"actor_grad", test_actor_grad},
        {"encoder_grad", test_encoder_grad},
        {NULL, NULL},
    };
    return test_main("policies.models", cases, argc, argv);
}
