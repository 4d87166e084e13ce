/* test_expservice.c - the Experiments service over real gRPC on loopback: submit
 * the demo file, refusals as statuses with messages, list, get, stop, resume, and
 * a Watch stream that follows the run to its end. The host is a SQLite file, a
 * fixed inventory and a recorder of the commands sent to agents. */
#define _GNU_SOURCE
#include "tests/harness.h"
#include "common/durable.h"
#include "common/time.h"
#include "controller/expservice.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct host {
    pthread_mutex_t mu;
    sqlite3 *db;
    ctl_inventory_t inv;
    atomic_int starts, stops;
} host_t;

static int with_state(void *ud, ctl_exp_state_fn fn, void *arg, ctl_cmds_t *cmds, cr_err_t *err)
{
    host_t *h = ud;
    pthread_mutex_lock(&h->mu);
    int rc = fn(arg, h->db, &h->inv, cmds, err);
    pthread_mutex_unlock(&h->mu);
    return rc;
}

static void send_cmds(void *ud, const ctl_cmds_t *cmds)
{
    host_t *h = ud;
    for (size_t i = 0; i < cmds->n; i++)
        atomic_fetch_add(cmds->v[i].kind == CTL_CMD_START ? &h->starts : &h->stops, 1);
}

static ctl_inv_node_t nodes[] = {{"local", CTL_NODE_READY, 1, NULL}};
static ctl_inv_robot_t robots[] = {
    {"sim-0", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
    {"sim-1", "local", "mujoco", "reach2d", NULL, 0, CTL_RES_AVAILABLE, NULL},
};

/* Watch collector. */
typedef struct seen {
    pthread_mutex_t mu;
    char states[16][16];
    int nstates, snapshots, closed;
    rpc_code_t code;
} seen_t;

static void on_watch_msg(rpc_stream_t *st, const ProtobufCMessage *msg, void *user)
{
    (void)st;
    seen_t *s = user;
    const Corral__V1__WatchExperimentResponse *r = (const Corral__V1__WatchExperimentResponse *)msg;
    pthread_mutex_lock(&s->mu);
    if (r->snapshot) s->snapshots++;
    for (size_t i = 0; i < r->n_events; i++)
        if (strcmp(r->events[i]->kind, "state") == 0 && s->nstates < 16)
            snprintf(s->states[s->nstates++], 16, "%s", r->events[i]->to_state);
    pthread_mutex_unlock(&s->mu);
}

static void on_watch_close(rpc_stream_t *st, rpc_code_t code, const char *details, void *user)
{
    (void)st;
    (void)details;
    seen_t *s = user;
    pthread_mutex_lock(&s->mu);
    s->closed = 1;
    s->code = code;
    pthread_mutex_unlock(&s->mu);
}

static void test_service_over_grpc(void)
{
    host_t h = {.mu = PTHREAD_MUTEX_INITIALIZER, .inv = {nodes, 1, NULL, 0, robots, 2}};
    cr_err_t err = {0};
    char path[4300];
    snprintf(path, sizeof path, "%s/state.db", test_tmpdir());
    ASSERT_INT_EQ(sqlite3_open(path, &h.db), SQLITE_OK);
    ASSERT_OK(ctl_exp_schema(h.db, &err), &err);

    ctl_exp_host_t host = {.with_state = with_state, .send = send_cmds, .ud = &h, .watch_period_ms = 20};
    ctl_exp_service_t *svc;
    ASSERT_OK(ctl_exp_service_create(&host, &svc, &err), &err);
    rpc_method_t methods[CTL_EXP_METHODS];
    size_t nm = ctl_exp_service_methods(svc, methods);
    rpc_server_t *srv;
    ASSERT_OK(rpc_server_create(&srv, "127.0.0.1:0", NULL, methods, nm, &err), &err);
    ASSERT_OK(rpc_server_start(srv, &err), &err);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", rpc_server_port(srv));
    rpc_channel_t *ch;
    ASSERT_OK(rpc_channel_create(&ch, target, NULL, &err), &err);

    /* Submit the demo file. */
    char *yaml;
    ASSERT_OK(cr_read_file(test_source_path("configs/experiments/reach-sac.yaml"), 1 << 20, &yaml, NULL, &err), &err);
    Corral__V1__SubmitRequest sub = CORRAL__V1__SUBMIT_REQUEST__INIT;
    sub.spec_yaml = yaml;
    sub.source_name = "reach-sac.yaml";
    Corral__V1__SubmitResponse *sresp;
    ASSERT_OK(rpc_unary(ch, "/corral.v1.Experiments/Submit", &sub.base, &corral__v1__submit_response__descriptor,
                        (ProtobufCMessage **)&sresp, 5000, &err), &err);
    ASSERT_STR_EQ(sresp->experiment->name, "reach-sac");
    ASSERT_INT_EQ(sresp->experiment->state, CORRAL__V1__EXPERIMENT_STATE__EXPERIMENT_SCHEDULED);
    ASSERT_INT_EQ(sresp->experiment->n_placements, 6);
    ASSERT_NEAR(sresp->experiment->goal->success_rate, 0.9, 1e-12);
    ASSERT_INT_EQ(sresp->experiment->goal->wall_time_ms, 600000);
    ASSERT_STR_EQ(sresp->experiment->placements[0]->worker_state, "pending");
    protobuf_c_message_free_unpacked(&sresp->base, NULL);
    ASSERT_INT_EQ(atomic_load(&h.starts), 3);

    /* Refusals arrive as statuses whose details say what to change. */
    rpc_code_t code;
    ProtobufCMessage *none;
    ASSERT_INT_EQ(rpc_unary_code(ch, "/corral.v1.Experiments/Submit", &sub.base,
                                 &corral__v1__submit_response__descriptor, &none, 5000, &code, &err), CR_EEXIST);
    ASSERT_INT_EQ(code, RPC_ALREADY_EXISTS);
    char *other[] = {"name=reach-2"};
    sub.sets = other;
    sub.n_sets = 1;
    ASSERT_TRUE(rpc_unary_code(ch, "/corral.v1.Experiments/Submit", &sub.base, &corral__v1__submit_response__descriptor,
                               &none, 5000, &code, &err) != 0);
    ASSERT_INT_EQ(code, RPC_FAILED_PRECONDITION);
    ASSERT_TRUE(strstr(err.msg, "robot sim-0 is in use by experiment reach-sac") != NULL);
    char *bad[] = {"algorithm.batch_size=0"};
    sub.sets = bad;
    ASSERT_INT_EQ(rpc_unary_code(ch, "/corral.v1.Experiments/Submit", &sub.base,
                                 &corral__v1__submit_response__descriptor, &none, 5000, &code, &err), CR_EINVAL);
    ASSERT_INT_EQ(code, RPC_INVALID_ARGUMENT);
    ASSERT_TRUE(strstr(err.msg, "--set:1:") != NULL);
    ASSERT_INT_EQ(atomic_load(&h.starts), 3);

    /* Watch from the start while the run goes on. */
    seen_t seen = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rpc_stream_cbs_t cbs = {.on_message = on_watch_msg, .on_close = on_watch_close, .user = &seen};
    rpc_stream_t *st;
    ASSERT_OK(rpc_stream_open(ch, &st, "/corral.v1.Experiments/Watch", &corral__v1__watch_experiment_response__descriptor,
                              &cbs, 20000, &err), &err);
    Corral__V1__WatchExperimentRequest wreq = CORRAL__V1__WATCH_EXPERIMENT_REQUEST__INIT;
    wreq.name = "reach-sac";
    ASSERT_OK(rpc_stream_send(st, &wreq.base, 5000, &err), &err);
    ASSERT_OK(rpc_stream_close_send(st, &err), &err);

    /* The agents report: running. Then stop, and the workers report stopped. */
    const char *roles[] = {"env", "env", "actor", "actor", "learner", "buffer"};
    const int idx[] = {0, 1, 0, 1, 0, 0};
    ctl_cmds_t cmds = {0};
    pthread_mutex_lock(&h.mu);
    for (int i = 0; i < 6; i++)
        ASSERT_OK(ctl_expctl_worker_status(h.db, "local", "reach-sac", 1, roles[i], idx[i], "running", 10 + i, 0, 5,
                                           &cmds, &err), &err);
    pthread_mutex_unlock(&h.mu);
    Corral__V1__StopExperimentRequest stop = CORRAL__V1__STOP_EXPERIMENT_REQUEST__INIT;
    stop.name = "reach-sac";
    Corral__V1__StopExperimentResponse *stresp;
    ASSERT_OK(rpc_unary(ch, "/corral.v1.Experiments/Stop", &stop.base, &corral__v1__stop_experiment_response__descriptor,
                        (ProtobufCMessage **)&stresp, 5000, &err), &err);
    ASSERT_INT_EQ(stresp->experiment->state, CORRAL__V1__EXPERIMENT_STATE__EXPERIMENT_STOPPING);
    protobuf_c_message_free_unpacked(&stresp->base, NULL);
    ASSERT_INT_EQ(atomic_load(&h.stops), 1);
    pthread_mutex_lock(&h.mu);
    for (int i = 0; i < 6; i++)
        ASSERT_OK(ctl_expctl_worker_status(h.db, "local", "reach-sac", 1, roles[i], idx[i], "stopped", 0, 0, 6,
                                           &cmds, &err), &err);
    pthread_mutex_unlock(&h.mu);
    ctl_cmds_free(&cmds);

    /* The watch ends by itself once the experiment is stopped, having seen it all. */
    rpc_code_t wcode;
    ASSERT_OK(rpc_stream_wait(st, 10000, &wcode, &err), &err);
    rpc_stream_destroy(st);
    ASSERT_INT_EQ(wcode, RPC_OK);
    ASSERT_TRUE(seen.snapshots >= 1);
    const char *want[] = {"submitted", "scheduled", "running", "stopping", "stopped"};
    ASSERT_INT_EQ(seen.nstates, 5);
    for (int i = 0; i < 5; i++) ASSERT_STR_EQ(seen.states[i], want[i]);

    /* List, Get, Resume. */
    Corral__V1__ListExperimentsRequest lreq = CORRAL__V1__LIST_EXPERIMENTS_REQUEST__INIT;
    Corral__V1__ListExperimentsResponse *lresp;
    ASSERT_OK(rpc_unary(ch, "/corral.v1.Experiments/List", &lreq.base,
                        &corral__v1__list_experiments_response__descriptor, (ProtobufCMessage **)&lresp, 5000, &err),
              &err);
    ASSERT_INT_EQ(lresp->n_experiments, 1);
    ASSERT_INT_EQ(lresp->experiments[0]->state, CORRAL__V1__EXPERIMENT_STATE__EXPERIMENT_STOPPED);
    protobuf_c_message_free_unpacked(&lresp->base, NULL);
    Corral__V1__ResumeExperimentRequest rreq = CORRAL__V1__RESUME_EXPERIMENT_REQUEST__INIT;
    rreq.name = "reach-sac";
    Corral__V1__ResumeExperimentResponse *rresp;
    ASSERT_OK(rpc_unary(ch, "/corral.v1.Experiments/Resume", &rreq.base,
                        &corral__v1__resume_experiment_response__descriptor, (ProtobufCMessage **)&rresp, 5000, &err),
              &err);
    ASSERT_INT_EQ(rresp->experiment->generation, 2);
    ASSERT_INT_EQ(rresp->experiment->state, CORRAL__V1__EXPERIMENT_STATE__EXPERIMENT_SCHEDULED);
    protobuf_c_message_free_unpacked(&rresp->base, NULL);
    ASSERT_INT_EQ(atomic_load(&h.starts), 6);
    Corral__V1__GetExperimentRequest greq = CORRAL__V1__GET_EXPERIMENT_REQUEST__INIT;
    greq.name = "nope";
    ASSERT_INT_EQ(rpc_unary_code(ch, "/corral.v1.Experiments/Get", &greq.base,
                                 &corral__v1__get_experiment_response__descriptor, &none, 5000, &code, &err), CR_ENOENT);
    ASSERT_INT_EQ(code, RPC_NOT_FOUND);
    ASSERT_TRUE(strstr(err.msg, "no experiment named nope") != NULL);

    rpc_channel_destroy(ch);
    rpc_server_stop(srv);
    rpc_server_destroy(srv);
    ctl_exp_service_destroy(svc);
    sqlite3_close(h.db);
    free(yaml);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"service_over_grpc", test_service_over_grpc},
        {NULL, NULL},
    };
    return test_main("expservice", cases, argc, argv);
}
