/* test_worker.c - the pieces of the worker processes that can be checked in one
 * process: the wire messages (round trips, and every malformed form refused with
 * a message), the worker-side spec (the demo file and the controller's experiment
 * file both load; mistakes name the field), the algorithm settings derived from it,
 * checkpoints (newest complete wins, keep-K pruning, leftovers of a crash ignored,
 * a reload acts exactly like the saved algorithm) and the learner's location file.
 * The processes themselves are tested in tests/integration/workers.sh. */
#include "tests/harness.h"
#include "agents/worker_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CHECK_OK(expr, e) ASSERT_OK(expr, e)

/* ---- messages ---------------------------------------------------------------------- */

static void test_msg_roundtrip(void)
{
    uint8_t buf[4096];
    cr_err_t e = {0};
    wk_hello_t h = {.index = 3, .producer = 77, .version = 9, .acked = 1234, .hub = 0xabcdef, .inbound = 1,
                    .obs_dim = 12, .act_dim = 2};
    strcpy(h.node, "n1");
    strcpy(h.addr, "10.0.0.1:7000");
    strcpy(h.robot, "arm-1");
    size_t n = wk_hello_encode(&h, buf, sizeof buf);
    ASSERT_TRUE(n > 0);
    ASSERT_INT_EQ(wk_msg_type(buf, n, &e), WK_MSG_HELLO);
    wk_hello_t h2;
    CHECK_OK(wk_hello_decode(buf, n, &h2, &e), &e);
    ASSERT_INT_EQ(memcmp(&h, &h2, sizeof h), 0);

    float obs[12], act[2], o2[12], a2[2];
    for (int i = 0; i < 12; i++) obs[i] = (float)i * 0.5f;
    act[0] = -0.25f;
    act[1] = 1.0f;
    wk_step_t st = {.producer = 77, .seq = 5, .episode = 2, .policy_version = 9, .reward = -1.5f, .done = 1,
                    .obs_dim = 12, .act_dim = 2, .obs = obs, .action = act};
    n = wk_step_encode(&st, buf, sizeof buf);
    wk_step_t s2;
    CHECK_OK(wk_step_decode(buf, n, &s2, o2, 12, a2, 2, &e), &e);
    ASSERT_INT_EQ(s2.seq, 5);
    ASSERT_INT_EQ(s2.policy_version, 9);
    ASSERT_INT_EQ(s2.done, 1);
    ASSERT_NEAR(s2.reward, -1.5, 0);
    ASSERT_INT_EQ(memcmp(o2, obs, sizeof obs), 0);
    ASSERT_INT_EQ(memcmp(a2, act, sizeof act), 0);

    wk_step_t fin = {.producer = 77, .seq = 6, .episode = 2, .final = 1, .success = 1, .obs_dim = 12, .obs = obs};
    n = wk_step_encode(&fin, buf, sizeof buf);
    CHECK_OK(wk_step_decode(buf, n, &s2, o2, 12, a2, 2, &e), &e);
    ASSERT_TRUE(s2.final && s2.success && s2.action == NULL);

    wk_eval_t ev = {.producer = 77, .round = 4, .version = 9, .episodes = 20, .successes = 19, .mean_return = -3};
    n = wk_eval_encode(&ev, buf, sizeof buf);
    wk_eval_t ev2;
    CHECK_OK(wk_eval_decode(buf, n, &ev2, &e), &e);
    ASSERT_INT_EQ(ev2.successes, 19);

    wk_ack_t a = {.producer = 77, .acked = 1000, .learner = 5, .version = 10, .updates = 999, .env_steps = 1001,
                  .demo_episodes = 29, .stop = 1};
    n = wk_ack_encode(&a, buf, sizeof buf);
    wk_ack_t a3;
    CHECK_OK(wk_ack_decode(buf, n, &a3, &e), &e);
    ASSERT_INT_EQ(memcmp(&a, &a3, sizeof a), 0);
    ASSERT_INT_EQ(wk_ack_encode(&a, buf, 10), 0); /* too small: refused, not overrun */
}

static void test_msg_refused(void)
{
    uint8_t buf[4096];
    float obs[12] = {0}, act[2] = {0}, o2[12], a2[2];
    cr_err_t e = {0};
    wk_step_t st = {.producer = 1, .seq = 1, .obs_dim = 12, .act_dim = 2, .obs = obs, .action = act};
    size_t n = wk_step_encode(&st, buf, sizeof buf);
    wk_step_t s2;
    for (size_t k = 0; k < n; k++) /* every truncation */
        ASSERT_INT_EQ(wk_step_decode(buf, k, &s2, o2, 12, a2, 2, &e), CR_EPROTO);
    buf[n] = 0;
    ASSERT_INT_EQ(wk_step_decode(buf, n + 1, &s2, o2, 12, a2, 2, &e), CR_EPROTO);
    ASSERT_TRUE(strstr(e.msg, "left over") != NULL);
    ASSERT_INT_EQ(wk_step_decode(buf, n, &s2, o2, 11, a2, 2, &e), CR_EPROTO); /* larger than the layout */
    ASSERT_TRUE(strstr(e.msg, "dimensions") != NULL);
    ASSERT_INT_EQ(wk_hello_decode(buf, n, &(wk_hello_t){0}, &e), CR_EPROTO); /* wrong type */
    buf[0] ^= 0xff;
    ASSERT_INT_EQ(wk_msg_type(buf, n, &e), CR_EPROTO);
    ASSERT_TRUE(strstr(e.msg, "magic") != NULL);
    buf[0] ^= 0xff;
    buf[4] = 99; /* unknown type */
    ASSERT_INT_EQ(wk_msg_type(buf, n, &e), CR_EPROTO);
    ASSERT_TRUE(strstr(e.msg, "unknown type") != NULL);

    wk_step_t zero = st;
    zero.seq = 0;
    n = wk_step_encode(&zero, buf, sizeof buf);
    ASSERT_INT_EQ(wk_step_decode(buf, n, &s2, o2, 12, a2, 2, &e), CR_EPROTO);
    wk_step_t final_act = st;
    final_act.final = 1; /* a final row carries no action */
    n = wk_step_encode(&final_act, buf, sizeof buf);
    ASSERT_INT_EQ(wk_step_decode(buf, n, &s2, o2, 12, a2, 2, &e), CR_EPROTO);

    wk_hello_t h = {.producer = 1, .obs_dim = 12, .act_dim = 2};
    n = wk_hello_encode(&h, buf, sizeof buf);
    /* the node string's length field, patched to claim more than the limit */
    size_t node_len_at = 6 + 4 + 8 * 4 + 4 * 3;
    uint32_t big = 5000;
    memcpy(buf + node_len_at, &big, 4);
    ASSERT_INT_EQ(wk_hello_decode(buf, n, &h, &e), CR_EPROTO);
    wk_hello_t bad = {.producer = 1, .obs_dim = 0, .act_dim = 2};
    n = wk_hello_encode(&bad, buf, sizeof buf);
    ASSERT_INT_EQ(wk_hello_decode(buf, n, &h, &e), CR_EPROTO);

    wk_eval_t ev = {.producer = 1, .episodes = 3, .successes = 4};
    n = wk_eval_encode(&ev, buf, sizeof buf);
    ASSERT_INT_EQ(wk_eval_decode(buf, n, &ev, &e), CR_EPROTO);
}

/* ---- spec and algorithm settings ----------------------------------------------------- */

/* An experiment file with the experiment spec's every section (an older
 * reach-sac.yaml): the workers read what the controller accepted, unchanged. */
static const char exp_yaml[] =
    "name: reach-sac\nseed: 1\nrobots:\n  driver: mujoco\n  model: reach2d\n  count: 2\n"
    "task:\n  control_hz: 20\n  episode_steps: 50\n  reward: task\n"
    "policy:\n  type: mlp\n  hidden: [256, 256]\n"
    "algorithm:\n  type: sac\n  batch_size: 256\n  lr: 3e-4\n  gamma: 0.99\n  tau: 0.005\n  utd: 1\n"
    "  warmup_steps: 1000\n  max_staleness: 8\n"
    "buffer:\n  capacity: 1000000\n  online_ratio: 1\n"
    "placement:\n  actor: cpu\nlearner:\n  gpus: 0\n"
    "checkpoint:\n  every_updates: 2000\n  keep: 3\n"
    "stop:\n  success_rate: 0.9\n  eval_episodes: 20\n  eval_every_updates: 2000\n  wall_time: 10m\n";

static const char *kv_get(const wk_algo_cfg_t *c, const char *key)
{
    const char *v = NULL;
    int seen = 0;
    for (size_t i = 0; i < c->nkv; i++)
        if (!strcmp(c->kv[i].key, key)) v = c->kv[i].value, seen++;
    return seen == 1 ? v : seen ? "(twice)" : NULL;
}

static void test_spec(void)
{
    exp_spec_t s;
    cr_err_t e = {0};
    CHECK_OK(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-sac.yaml"), NULL, 0, &e), &e);
    ASSERT_STR_EQ(s.name, "reach-sac");
    ASSERT_INT_EQ(s.algorithm.batch_size, 64);
    ASSERT_STR_EQ(s.task.reward, "reach-distance");
    ASSERT_TRUE(s.task.obs_scale && s.task.obs_scale->count == 3);
    wk_algo_cfg_t c;
    CHECK_OK(wk_algo_cfg_make(&s, 5, &c, &e), &e);
    ASSERT_STR_EQ(c.plugin.desc->name, "sac");
    ASSERT_STR_EQ(kv_get(&c, "hidden"), "128,128");
    ASSERT_STR_EQ(kv_get(&c, "seed"), "5");
    ASSERT_STR_EQ(kv_get(&c, "actor_lr"), "0.001");
    ASSERT_STR_EQ(kv_get(&c, "gamma"), "0.90000000000000002");
    ASSERT_STR_EQ(kv_get(&c, "init_alpha"), "0.1");
    wk_algo_cfg_free(&c);
    exp_spec_free(&s);

    /* algorithm.params win over the derived settings, once */
    const char *sets[] = {"algorithm.params.gamma=0.5", "algorithm.type=bc"};
    CHECK_OK(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-sac.yaml"), sets, 1, &e), &e);
    CHECK_OK(wk_algo_cfg_make(&s, 1, &c, &e), &e);
    ASSERT_STR_EQ(kv_get(&c, "gamma"), "0.5");
    wk_algo_cfg_free(&c);
    exp_spec_free(&s);
    CHECK_OK(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-sac.yaml"), sets + 1, 1, &e), &e);
    CHECK_OK(wk_algo_cfg_make(&s, 1, &c, &e), &e);
    ASSERT_STR_EQ(kv_get(&c, "lr"), "0.001"); /* bc takes one learning rate */
    ASSERT_TRUE(kv_get(&c, "actor_lr") == NULL);
    wk_algo_cfg_free(&c);
    exp_spec_free(&s);

    /* the controller's experiment file */
    CHECK_OK(exp_spec_load_string(&s, "reach-sac.yaml", exp_yaml, strlen(exp_yaml), NULL, 0, &e), &e);
    ASSERT_NEAR(s.task.control_hz, 20, 0);
    ASSERT_INT_EQ(s.stop.wall_time, 600LL * 1000000000LL);
    exp_spec_free(&s);

    /* mistakes name the place and the field */
    const char *bad_algo[] = {"algorithm.type=nope"};
    ASSERT_INT_EQ(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-sac.yaml"), bad_algo, 1, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "--set:1") && strstr(e.msg, "algorithm.type") && strstr(e.msg, "unknown algorithm"));
    const char *bad_eval[] = {"stop.eval_episodes=0"};
    ASSERT_INT_EQ(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-sac.yaml"), bad_eval, 1, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "stop.eval_episodes") != NULL);
    const char *bad_ratio[] = {"buffer.online_ratio=0.5"};
    ASSERT_INT_EQ(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-sac.yaml"), bad_ratio, 1, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "must be 1") != NULL);
    const char *bad_reward[] = {"task.reward=shiny"};
    ASSERT_INT_EQ(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-sac.yaml"), bad_reward, 1, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "unknown reward 'shiny'") != NULL);
    const char *bad_param[] = {"algorithm.params.warp=9"};
    CHECK_OK(exp_spec_load_file(&s, test_source_path("configs/experiments/reach-sac.yaml"), bad_param, 1, &e), &e);
    CHECK_OK(wk_algo_cfg_make(&s, 1, &c, &e), &e);
    pol_algo_t a;
    corral_spec_t sp = {.struct_size = sizeof sp, .obs_dim = 4, .act_dim = 2};
    ASSERT_INT_EQ(pol_algo_create(&a, c.plugin.desc, c.kv, c.nkv, &sp, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "warp") != NULL); /* the plugin names the unknown setting */
    wk_algo_cfg_free(&c);
    exp_spec_free(&s);
}

/* ---- checkpoints ------------------------------------------------------------------- */

static int exists(const char *dir, const char *name)
{
    char p[4200];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0;
}

static void make_algo(pol_algo_t *a, uint64_t seed)
{
    char s[16];
    snprintf(s, sizeof s, "%llu", (unsigned long long)seed);
    corral_kv_t kv[] = {{"hidden", "16,16"}, {"seed", s}};
    corral_spec_t sp = {.struct_size = sizeof sp, .obs_dim = 4, .act_dim = 2};
    cr_err_t e = {0};
    CHECK_OK(pol_algo_create(a, pol_builtin_find("sac", CORRAL_PLUGIN_ALGO), kv, 2, &sp, &e), &e);
}

/* The directory of checkpoint N (common/durable pads the number). */
#define CK(n) "ckpt-000000000000000000" #n

static void test_ckpt(void)
{
    char dir[4200], path[4200], p[4300];
    snprintf(dir, sizeof dir, "%s/checkpoints", test_tmpdir());
    cr_err_t e = {0};
    wk_counters_t c;
    ASSERT_INT_EQ(wk_ckpt_newest(dir, path, sizeof path, &c, &e), CR_ENOENT);
    pol_algo_t a;
    make_algo(&a, 1);
    for (int u = 10; u <= 40; u += 10) {
        wk_counters_t w = {.updates = u, .version = u / 10, .env_steps = 2 * u, .episodes = u / 5};
        CHECK_OK(wk_ckpt_write(dir, &a, &w, 2, &e), &e);
    }
    ASSERT_TRUE(!exists(dir, CK(10)) && !exists(dir, CK(20)));
    ASSERT_TRUE(exists(dir, CK(30)) && exists(dir, CK(40)));
    /* leftovers of a crash: a half-written checkpoint and one without its marker */
    snprintf(p, sizeof p, "%s/" CK(50) ".tmp", dir);
    ASSERT_INT_EQ(mkdir(p, 0755), 0);
    snprintf(p, sizeof p, "%s/" CK(60), dir);
    ASSERT_INT_EQ(mkdir(p, 0755), 0);
    CHECK_OK(wk_ckpt_newest(dir, path, sizeof path, &c, &e), &e);
    ASSERT_INT_EQ(c.updates, 40);
    ASSERT_INT_EQ(c.version, 4);
    ASSERT_INT_EQ(c.env_steps, 80);
    ASSERT_TRUE(strstr(path, CK(40) "/algo.safetensors") != NULL);
    /* a damaged weights file: that checkpoint fails its hash and is skipped */
    snprintf(p, sizeof p, "%s/" CK(40) "/algo.safetensors", dir);
    FILE *g = fopen(p, "r+b");
    ASSERT_TRUE(g != NULL);
    fseek(g, 100, SEEK_SET);
    int byte = fgetc(g);
    fseek(g, 100, SEEK_SET);
    fputc(0x5a ^ byte, g);
    fclose(g);
    CHECK_OK(wk_ckpt_newest(dir, path, sizeof path, &c, &e), &e);
    ASSERT_INT_EQ(c.updates, 30);
    /* a corrupt marker: that checkpoint is skipped */
    snprintf(p, sizeof p, "%s/" CK(40) "/COMPLETE", dir);
    FILE *f = fopen(p, "w");
    fputs("garbage\n", f);
    fclose(f);
    CHECK_OK(wk_ckpt_newest(dir, path, sizeof path, &c, &e), &e);
    ASSERT_INT_EQ(c.updates, 30);
    /* the reloaded algorithm acts exactly like the saved one */
    pol_algo_t b;
    make_algo(&b, 99);
    CHECK_OK(pol_algo_load(&b, path, &e), &e);
    float obs[4] = {0.1f, -0.2f, 0.3f, 0.5f}, x[2], y[2];
    CHECK_OK(pol_algo_act(&a, obs, 1, x, &e), &e);
    CHECK_OK(pol_algo_act(&b, obs, 1, y, &e), &e);
    ASSERT_INT_EQ(memcmp(x, y, sizeof x), 0);
    /* the next write sweeps the leftover .tmp */
    wk_counters_t w = {.updates = 70, .version = 7};
    CHECK_OK(wk_ckpt_write(dir, &a, &w, 2, &e), &e);
    ASSERT_TRUE(!exists(dir, CK(50) ".tmp"));
    CHECK_OK(wk_ckpt_newest(dir, path, sizeof path, &c, &e), &e);
    ASSERT_INT_EQ(c.updates, 70);
    pol_algo_destroy(&a);
    pol_algo_destroy(&b);
}

/* ---- the learner's location ------------------------------------------------------- */

static void test_where(void)
{
    cr_err_t e = {0};
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    wk_where_t w = {.process = 0x1234567890abcdefULL, .inbound = 0}, r;
    strcpy(w.node, "gpu-1");
    CHECK_OK(wk_where_write(dir, &w, &e), &e);
    CHECK_OK(wk_where_read(dir, &r, &e), &e);
    ASSERT_STR_EQ(r.node, "gpu-1");
    ASSERT_TRUE(r.process == w.process);
    ASSERT_STR_EQ(r.addr, "");
    char p[4200];
    snprintf(p, sizeof p, "%s/learner.where", dir);
    FILE *f = fopen(p, "w");
    fputs("node x\n", f);
    fclose(f);
    ASSERT_INT_EQ(wk_where_read(dir, &r, &e), CR_ECORRUPT);
    ASSERT_INT_EQ(wk_where_read("/nonexistent-dir", &r, &e), CR_ENOENT);
    CHECK_OK(wk_where_parse("n1@10.0.0.1:7000", &r, &e), &e);
    ASSERT_STR_EQ(r.node, "n1");
    ASSERT_STR_EQ(r.addr, "10.0.0.1:7000");
    CHECK_OK(wk_where_parse("10.0.0.1:7000", &r, &e), &e);
    ASSERT_STR_EQ(r.addr, "10.0.0.1:7000");
    ASSERT_INT_EQ(wk_where_parse("n1@", &r, &e), CR_EINVAL);
    ASSERT_INT_EQ(wk_where_parse("nocolon", &r, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "--learner") != NULL);
}

/* ---- the hub's options from the node's flags ------------------------------------- */

static void test_hub_opts(void)
{
    cr_err_t e = {0};
    ch_hub_opts_t ho;
    rpc_opts_t rpc;
    char buf[64];
    /* Behind NAT: no direct route even where the learner was placed; the relay is the controller. */
    agent_worker_opts_t o = {.node = "edge", .controller = "10.0.0.1:7070", .no_inbound = 1};
    CHECK_OK(wk_hub_opts(&o, "10.0.0.9:7100", &ho, &rpc, buf, sizeof buf, &e), &e);
    ASSERT_TRUE(ho.listen == NULL);
    ASSERT_STR_EQ(ho.relay, "10.0.0.1:7070");
    ASSERT_STR_EQ(ho.directory, "10.0.0.1:7070");
    ASSERT_TRUE(ho.relay_rpc == &rpc && rpc.security == RPC_INSECURE);
    /* An inbound node: the learner at its placed address, an env on a port of its own. */
    agent_worker_opts_t in = {.node = "cloud", .controller = "10.0.0.1:7070", .advertise = "10.0.0.9",
                              .rpc_security = "mtls", .rpc_cert_dir = "/certs", .rpc_server_name = "ctl"};
    CHECK_OK(wk_hub_opts(&in, "10.0.0.9:7100", &ho, &rpc, buf, sizeof buf, &e), &e);
    ASSERT_STR_EQ(ho.listen, "10.0.0.9:7100");
    ASSERT_STR_EQ(ho.advertise, "10.0.0.9");
    ASSERT_TRUE(rpc.security == RPC_MTLS);
    ASSERT_STR_EQ(rpc.cert_dir, "/certs");
    ASSERT_STR_EQ(rpc.server_name, "ctl");
    CHECK_OK(wk_hub_opts(&in, NULL, &ho, &rpc, buf, sizeof buf, &e), &e);
    ASSERT_STR_EQ(ho.listen, "10.0.0.9:0");
    in.advertise = "[fd00::9]";
    CHECK_OK(wk_hub_opts(&in, NULL, &ho, &rpc, buf, sizeof buf, &e), &e);
    ASSERT_STR_EQ(ho.listen, "[fd00::9]:0");
    /* One node, no agent: nothing served, no relay (as before). */
    agent_worker_opts_t alone = {.node = "local"};
    CHECK_OK(wk_hub_opts(&alone, NULL, &ho, &rpc, buf, sizeof buf, &e), &e);
    ASSERT_TRUE(ho.listen == NULL && ho.relay == NULL && ho.directory == NULL);
    /* Refused, each naming the flag. */
    agent_worker_opts_t bad = o;
    bad.listen = "0.0.0.0:7000";
    ASSERT_INT_EQ(wk_hub_opts(&bad, NULL, &ho, &rpc, buf, sizeof buf, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "--no-inbound") != NULL);
    bad = o;
    bad.controller = NULL;
    ASSERT_INT_EQ(wk_hub_opts(&bad, NULL, &ho, &rpc, buf, sizeof buf, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "--controller") != NULL);
    bad = o;
    bad.rpc_security = "ssl";
    ASSERT_INT_EQ(wk_hub_opts(&bad, NULL, &ho, &rpc, buf, sizeof buf, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "--rpc-security 'ssl'") != NULL);
    bad = o;
    bad.rpc_security = "tls";
    ASSERT_INT_EQ(wk_hub_opts(&bad, NULL, &ho, &rpc, buf, sizeof buf, &e), CR_EINVAL);
    ASSERT_TRUE(strstr(e.msg, "--rpc-cert-dir") != NULL);
    bad = o;
    bad.controller = "nocolon";
    ASSERT_INT_EQ(wk_hub_opts(&bad, NULL, &ho, &rpc, buf, sizeof buf, &e), CR_EINVAL);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"msg_roundtrip", test_msg_roundtrip},
        {"msg_refused", test_msg_refused},
        {"spec", test_spec},
        {"ckpt", test_ckpt},
        {"where", test_where},
        {"hub_opts", test_hub_opts},
        {NULL, NULL},
    };
    return test_main("workers", cases, argc, argv);
}
