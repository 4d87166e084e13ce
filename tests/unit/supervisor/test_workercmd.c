/* test_workercmd.c - AgentLink worker commands carried out by a real supervisor:
 * the argv and environment a worker gets, its experiment file, status messages
 * that survive a protobuf round trip, log slices, refusals of bad commands, and
 * the workers' status files read back as progress reports. */
#define _GNU_SOURCE
#include "tests/harness.h"
#include "agents/progress.h"
#include "agents/workercmd.h"
#include "common/durable.h"
#include "common/log.h"
#include "common/time.h"

#include <stdlib.h>
#include <sys/stat.h>

/* A stand-in for the corral binary: prints what it was given, then waits. */
static const char fake_corral[] =
    "#!/bin/sh\n"
    "echo \"args: $*\"\n"
    "echo \"token=[$CORRAL_NODE_TOKEN]\"\n"
    "echo \"cuda=[$CUDA_VISIBLE_DEVICES] foo=$FOO exp=$CORRAL_EXPERIMENT\"\n"
    "while :; do sleep 1; done\n";

static int file_has(const char *path, const char *needle)
{
    for (int i = 0; i < 400; i++) {
        char *text;
        cr_err_t err = {0};
        if (cr_read_file(path, 1 << 20, &text, NULL, &err) == 0) {
            int found = strstr(text, needle) != NULL;
            free(text);
            if (found) return 1;
        }
        cr_sleep_ns(5 * CR_NS_PER_MS);
    }
    return 0;
}

typedef struct fixture {
    char dir[4200], corral[4300];
    agent_sup_t *sup;
} fixture_t;

static void setup(fixture_t *f)
{
    cr_err_t err = {0};
    snprintf(f->dir, sizeof f->dir, "%s", test_tmpdir());
    snprintf(f->corral, sizeof f->corral, "%s/corral", f->dir);
    ASSERT_OK(cr_durable_write(f->corral, fake_corral, strlen(fake_corral), 0755, &err), &err);
    agent_sup_config_t cfg = {.state_dir = f->dir, .stop_grace_ms = 500};
    ASSERT_OK(agent_sup_create(&cfg, &f->sup, &err), &err);
}

static void test_start_list_logs_stop(void)
{
    fixture_t f;
    setup(&f);
    cr_err_t err = {0};
    Corral__V1__WorkerSpec spec = CORRAL__V1__WORKER_SPEC__INIT;
    char *args[] = {"--extra", "1"};
    char *env[] = {"FOO=bar"};
    int32_t gpus[] = {0, 1};
    spec.experiment = "e1";
    spec.generation = 2;
    spec.role = "actor";
    spec.index = 1;
    spec.args = args;
    spec.n_args = 2;
    spec.env = env;
    spec.n_env = 1;
    spec.spec_yaml = "name: e1\n";
    spec.robot = "sim-0";
    spec.gpus = gpus;
    spec.n_gpus = 2;
    spec.buffer_address = "127.0.0.1:7000";
    ASSERT_OK(agent_wcmd_start(f.sup, f.dir, f.corral, NULL, &spec, &err), &err);
    ASSERT_INT_EQ(agent_wcmd_start(f.sup, f.dir, f.corral, NULL, &spec, &err), CR_EEXIST);

    char log[4400], want[9000], specfile[4400];
    snprintf(log, sizeof log, "%s/experiments/e1/logs/actor-1.log", f.dir);
    snprintf(specfile, sizeof specfile, "%s/experiments/e1/spec.yaml", f.dir);
    snprintf(want, sizeof want,
             "args: worker --role actor --experiment e1 --index 1 --generation 2 --spec %s --state-dir %s "
             "--robot sim-0 --buffer 127.0.0.1:7000 --extra 1\n", specfile, f.dir);
    ASSERT_TRUE(file_has(log, want));
    ASSERT_TRUE(file_has(log, "cuda=[0,1] foo=bar exp=e1\n"));
    ASSERT_TRUE(file_has(specfile, "name: e1\n"));

    /* The list after a reconnect, through a protobuf round trip. */
    Corral__V1__WorkerList *list;
    ASSERT_OK(agent_wcmd_list(f.sup, &list, &err), &err);
    ASSERT_INT_EQ(list->n_workers, 1);
    size_t len = corral__v1__worker_list__get_packed_size(list);
    uint8_t *packed = malloc(len);
    corral__v1__worker_list__pack(list, packed);
    agent_wcmd_list_free(list);
    Corral__V1__WorkerList *back = corral__v1__worker_list__unpack(NULL, len, packed);
    free(packed);
    ASSERT_TRUE(back != NULL);
    ASSERT_STR_EQ(back->workers[0]->experiment, "e1");
    ASSERT_STR_EQ(back->workers[0]->role, "actor");
    ASSERT_STR_EQ(back->workers[0]->state, "running");
    ASSERT_INT_EQ(back->workers[0]->generation, 2);
    ASSERT_INT_EQ(back->workers[0]->index, 1);
    ASSERT_TRUE(back->workers[0]->pid > 0);
    corral__v1__worker_list__free_unpacked(back, NULL);

    /* Log slices: the tail, then from an offset. */
    uint8_t buf[4096];
    char errbuf[256];
    Corral__V1__ReadLog rl = CORRAL__V1__READ_LOG__INIT;
    Corral__V1__LogChunk chunk;
    rl.command_id = 9;
    rl.experiment = "e1";
    rl.role = "actor";
    rl.index = 1;
    rl.offset = -16;
    ASSERT_INT_EQ(agent_wcmd_read_log(f.dir, &rl, buf, sizeof buf, &chunk, errbuf), 0);
    ASSERT_INT_EQ(chunk.command_id, 9);
    ASSERT_INT_EQ(chunk.data.len, 16);
    ASSERT_INT_EQ(chunk.offset + 16, chunk.file_size);
    ASSERT_TRUE(memcmp(chunk.data.data, " foo=bar exp=e1\n", 16) == 0);
    rl.offset = 0;
    rl.max_bytes = 4;
    ASSERT_INT_EQ(agent_wcmd_read_log(f.dir, &rl, buf, sizeof buf, &chunk, errbuf), 0);
    ASSERT_INT_EQ(chunk.data.len, 4);
    ASSERT_TRUE(memcmp(chunk.data.data, "=== ", 4) == 0); /* the agent's start note */
    rl.role = "../../etc";
    ASSERT_INT_EQ(agent_wcmd_read_log(f.dir, &rl, buf, sizeof buf, &chunk, errbuf), CR_EINVAL);
    ASSERT_TRUE(strstr(chunk.error, "bad log name") != NULL);
    rl.role = "learner";
    ASSERT_INT_EQ(agent_wcmd_read_log(f.dir, &rl, buf, sizeof buf, &chunk, errbuf), CR_ENOENT);
    ASSERT_TRUE(strstr(chunk.error, "no log for learner-1 of e1") != NULL);

    /* Stop every worker of the experiment. */
    Corral__V1__StopWorker stop = CORRAL__V1__STOP_WORKER__INIT;
    stop.experiment = "e1";
    ASSERT_OK(agent_wcmd_stop(f.sup, &stop, &err), &err);
    ASSERT_OK(agent_sup_stop_all(f.sup, 3000, &err), &err);
    agent_worker_info_t info;
    ASSERT_INT_EQ(agent_sup_get(f.sup, "e1", "actor", 1, &info), 0);
    ASSERT_INT_EQ(info.state, AGENT_WORKER_STOPPED);
    stop.experiment = "E 1";
    ASSERT_INT_EQ(agent_wcmd_stop(f.sup, &stop, &err), CR_EINVAL);
    agent_sup_destroy(f.sup);
}

static void test_bad_commands(void)
{
    fixture_t f;
    setup(&f);
    cr_err_t err = {0};
    Corral__V1__WorkerSpec spec = CORRAL__V1__WORKER_SPEC__INIT;
    spec.experiment = "e1";
    spec.generation = 1;
    spec.role = "env";
    ASSERT_INT_EQ(agent_wcmd_start(f.sup, f.dir, f.corral, NULL, NULL, &err), CR_EINVAL);
    spec.experiment = "../e1";
    ASSERT_INT_EQ(agent_wcmd_start(f.sup, f.dir, f.corral, NULL, &spec, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "bad experiment name") != NULL);
    spec.experiment = "e1";
    spec.generation = 0;
    ASSERT_INT_EQ(agent_wcmd_start(f.sup, f.dir, f.corral, NULL, &spec, &err), CR_EINVAL);
    spec.generation = 1;
    spec.robot = "Arm 1";
    ASSERT_INT_EQ(agent_wcmd_start(f.sup, f.dir, f.corral, NULL, &spec, &err), CR_EINVAL);
    spec.robot = "";
    spec.learner_address = "host port";
    ASSERT_INT_EQ(agent_wcmd_start(f.sup, f.dir, f.corral, NULL, &spec, &err), CR_EINVAL);
    spec.learner_address = "";
    char *env[] = {"=x"};
    spec.env = env;
    spec.n_env = 1;
    ASSERT_INT_EQ(agent_wcmd_start(f.sup, f.dir, f.corral, NULL, &spec, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "not KEY=VALUE") != NULL);
    spec.n_env = 0;
    /* A corral path that does not exist: refused synchronously. */
    ASSERT_INT_EQ(agent_wcmd_start(f.sup, f.dir, "/no/such/corral", NULL, &spec, &err), CR_ENOENT);
    agent_worker_info_t info[2];
    ASSERT_INT_EQ(agent_sup_list(f.sup, info, 2), 0);
    agent_sup_destroy(f.sup);
}

/* The node's part of the command line: the controller as relay with the agent's
 * security settings, and either --no-inbound (behind NAT) or the advertised host
 * (the worker serves the direct route there). */
static void test_node_args(void)
{
    fixture_t f;
    setup(&f);
    cr_err_t err = {0};
    Corral__V1__WorkerSpec spec = CORRAL__V1__WORKER_SPEC__INIT;
    spec.experiment = "e3";
    spec.generation = 1;
    spec.role = "env";
    spec.learner_address = "10.0.0.5:7100";
    agent_wcmd_node_t edge = {.node = "edge", .controller = "10.0.0.1:7070", .security = "mtls",
                              .cert_dir = "/etc/corral/certs", .server_name = "ctl.lab", .token = "s3cret",
                              .inbound = 0};
    ASSERT_OK(agent_wcmd_start(f.sup, f.dir, f.corral, &edge, &spec, &err), &err);
    char log[4400];
    snprintf(log, sizeof log, "%s/experiments/e3/logs/env-0.log", f.dir);
    ASSERT_TRUE(file_has(log, "--learner 10.0.0.5:7100 --node edge --controller 10.0.0.1:7070 --rpc-security mtls "
                              "--rpc-cert-dir /etc/corral/certs --rpc-server-name ctl.lab --no-inbound\n"));
    /* The token in the environment only: a command line is every local user's to read. */
    ASSERT_TRUE(file_has(log, "token=[s3cret]\n"));
    char *text = NULL;
    ASSERT_OK(cr_read_file(log, 1 << 20, &text, NULL, &err), &err);
    int seen = 0;
    for (const char *p = text; (p = strstr(p, "s3cret")) != NULL; p++) seen++;
    ASSERT_INT_EQ(seen, 1); /* the token= line, not the args: line */
    free(text);
    agent_wcmd_node_t cloud = {.node = "cloud", .controller = "10.0.0.1:7070", .security = "insecure",
                               .inbound = 1, .advertise_host = "10.0.0.5"};
    spec.role = "learner";
    spec.learner_address = "";
    ASSERT_OK(agent_wcmd_start(f.sup, f.dir, f.corral, &cloud, &spec, &err), &err);
    snprintf(log, sizeof log, "%s/experiments/e3/logs/learner-0.log", f.dir);
    ASSERT_TRUE(file_has(log, "--node cloud --controller 10.0.0.1:7070 --rpc-security insecure --advertise 10.0.0.5\n"));
    ASSERT_OK(agent_sup_stop_all(f.sup, 3000, &err), &err);
    agent_sup_destroy(f.sup);
}

static void start_one(fixture_t *f, const char *role, int index, int64_t gen)
{
    cr_err_t err = {0};
    Corral__V1__WorkerSpec spec = CORRAL__V1__WORKER_SPEC__INIT;
    spec.experiment = "e2";
    spec.generation = gen;
    spec.role = (char *)role;
    spec.index = index;
    ASSERT_OK(agent_wcmd_start(f->sup, f->dir, f->corral, NULL, &spec, &err), &err);
}

static void write_status(fixture_t *f, const char *file, const char *text)
{
    char path[4400];
    cr_err_t err = {0};
    snprintf(path, sizeof path, "%s/experiments/e2/status", f->dir);
    ASSERT_OK(cr_mkdir_p(path, 0755, &err), &err);
    snprintf(path, sizeof path, "%s/experiments/e2/status/%s", f->dir, file);
    ASSERT_OK(cr_durable_write(path, text, strlen(text), 0644, &err), &err);
}

static const Corral__V1__WorkerProgress *find(const Corral__V1__ProgressReport *r, const char *role)
{
    for (size_t i = 0; r && i < r->n_workers; i++)
        if (strcmp(r->workers[i]->role, role) == 0) return r->workers[i];
    return NULL;
}

/* Status files become WorkerProgress: only what changed since the last
 * collection, everything when forced, never a file of another run, never a
 * file that is not a status file. */
static void test_progress_from_status_files(void)
{
    fixture_t f;
    setup(&f);
    cr_err_t err = {0};
    start_one(&f, "learner", 0, 3);
    start_one(&f, "env", 1, 3);
    agent_progress_t *pr;
    ASSERT_OK(agent_progress_create(f.dir, &pr, &err), &err);
    Corral__V1__ProgressReport *r;
    ASSERT_OK(agent_progress_collect(pr, f.sup, NULL, 1, &r, &err), &err);
    ASSERT_TRUE(r == NULL); /* no file yet */
    write_status(&f, "learner.json",
                 "{\"role\":\"learner\",\"state\":\"running\",\"pid\":7,\"generation\":3,\"env_steps\":1200,"
                 "\"episodes\":24,\"success_rate\":0.25,\"eval_success_rate\":0.8,\"eval_mean_return\":-40.5,"
                 "\"eval_round\":2,\"updates\":900,\"updates_per_s\":450.5,\"policy_version\":9,"
                 "\"staleness\":1.5,\"checkpoint\":500,\"time_ns\":1700000000000000000}\n");
    write_status(&f, "env-1.json",
                 "{\"role\":\"env\",\"state\":\"running\",\"index\":1,\"generation\":2,\"env_steps\":5,"
                 "\"time_ns\":1700000000000000000}\n"); /* of run 2: not this worker's */
    ASSERT_OK(agent_progress_collect(pr, f.sup, NULL, 0, &r, &err), &err);
    ASSERT_TRUE(r != NULL);
    ASSERT_INT_EQ(r->n_workers, 1);
    const Corral__V1__WorkerProgress *l = find(r, "learner");
    ASSERT_TRUE(l != NULL);
    ASSERT_STR_EQ(l->experiment, "e2");
    ASSERT_INT_EQ(l->generation, 3);
    ASSERT_STR_EQ(l->state, "running");
    ASSERT_INT_EQ(l->env_steps, 1200);
    ASSERT_INT_EQ(l->episodes, 24);
    ASSERT_INT_EQ(l->updates, 900);
    ASSERT_INT_EQ(l->policy_version, 9);
    ASSERT_INT_EQ(l->checkpoint, 500);
    ASSERT_INT_EQ(l->eval_round, 2);
    ASSERT_NEAR(l->eval_success_rate, 0.8, 1e-12);
    ASSERT_NEAR(l->mean_return, -40.5, 1e-12);
    ASSERT_NEAR(l->updates_per_s, 450.5, 1e-12);
    ASSERT_NEAR(l->staleness, 1.5, 1e-12);
    ASSERT_INT_EQ(l->time_unix_ms, 1700000000000LL);
    char dir[4400];
    snprintf(dir, sizeof dir, "%s/experiments/e2", f.dir);
    ASSERT_STR_EQ(l->dir, dir);
    /* Survives the wire. */
    size_t len = corral__v1__progress_report__get_packed_size(r);
    uint8_t *buf = malloc(len);
    corral__v1__progress_report__pack(r, buf);
    Corral__V1__ProgressReport *back = corral__v1__progress_report__unpack(NULL, len, buf);
    ASSERT_TRUE(back && back->n_workers == 1 && back->workers[0]->updates == 900);
    corral__v1__progress_report__free_unpacked(back, NULL);
    free(buf);
    agent_progress_report_free(r);

    /* Nothing new: nothing to send; forced: everything readable. */
    ASSERT_OK(agent_progress_collect(pr, f.sup, NULL, 0, &r, &err), &err);
    ASSERT_TRUE(r == NULL);
    write_status(&f, "env-1.json",
                 "{\"role\":\"env\",\"state\":\"done\",\"index\":1,\"generation\":3,\"env_steps\":640,"
                 "\"steps_per_s\":320.5,\"time_ns\":1700000000500000000}\n");
    ASSERT_OK(agent_progress_collect(pr, f.sup, NULL, 0, &r, &err), &err);
    ASSERT_TRUE(r && r->n_workers == 1 && find(r, "env") && find(r, "env")->env_steps == 640);
    ASSERT_STR_EQ(find(r, "env")->state, "done");
    ASSERT_NEAR(find(r, "env")->steps_per_s, 320.5, 1e-12);
    ASSERT_INT_EQ(find(r, "env")->index, 1);
    agent_progress_report_free(r);
    ASSERT_OK(agent_progress_collect(pr, f.sup, NULL, 1, &r, &err), &err);
    ASSERT_TRUE(r && r->n_workers == 2);
    agent_progress_report_free(r);
    ASSERT_OK(agent_progress_collect(pr, f.sup, "other", 1, &r, &err), &err);
    ASSERT_TRUE(r == NULL); /* of another experiment only */

    /* A half-written or foreign file is skipped, with its reason. */
    write_status(&f, "learner.json", "{\"role\":");
    agent_worker_info_t info;
    ASSERT_INT_EQ(agent_sup_get(f.sup, "e2", "learner", 0, &info), 0);
    Corral__V1__WorkerProgress p;
    ASSERT_INT_EQ(agent_progress_read(f.dir, &info, &p, &err), CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, "learner.json is not a worker status file") != NULL);
    write_status(&f, "learner.json", "{\"state\":\"running\",\"generation\":1}");
    ASSERT_INT_EQ(agent_progress_read(f.dir, &info, &p, &err), CR_EBUSY);
    ASSERT_OK(agent_progress_collect(pr, f.sup, NULL, 1, &r, &err), &err);
    ASSERT_TRUE(r && r->n_workers == 1 && find(r, "env"));
    agent_progress_report_free(r);

    agent_progress_destroy(pr);
    ASSERT_OK(agent_sup_stop_all(f.sup, 3000, &err), &err);
    agent_sup_destroy(f.sup);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"start_list_logs_stop", test_start_list_logs_stop},
        {"bad_commands", test_bad_commands},
        {"node_args", test_node_args},
        {"progress_from_status_files", test_progress_from_status_files},
        {NULL, NULL},
    };
    cr_log_set_level(CR_LOG_WARN);
    return test_main("workercmd", cases, argc, argv);
}
