/* test_supervisor.c - the worker supervisor with real child processes: logs,
 * crashes by SIGKILL, back-off, giving up, stops that escalate to SIGKILL, and an
 * agent SIGKILLed and replaced by one that adopts its workers without duplicates. */
#define _GNU_SOURCE
#include "tests/harness.h"
#include "agents/supervisor.h"
#include "common/durable.h"
#include "common/log.h"
#include "common/time.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* Events seen, for order and timing checks. */
typedef struct event {
    agent_worker_state_t from, to;
    pid_t pid;
    int64_t at_ns;
} event_t;

static event_t events[64];
static int nevents;

static void on_event(void *ud, const agent_worker_info_t *w, agent_worker_state_t old)
{
    (void)ud;
    if (nevents < 64) events[nevents++] = (event_t){old, w->state, w->pid, cr_now_ns()};
}

static agent_sup_config_t config(const char *dir)
{
    nevents = 0;
    return (agent_sup_config_t){
        .state_dir = dir,
        .backoff_initial_ms = 40,
        .backoff_max_ms = 1000,
        .fast_run_ms = 10000,
        .max_fast_crashes = 3,
        .stop_grace_ms = 300,
        .on_event = on_event,
    };
}

static agent_worker_state_t state_of(agent_sup_t *sup, const char *role, int index)
{
    agent_worker_info_t info;
    ASSERT_INT_EQ(agent_sup_get(sup, "exp1", role, index, &info), 0);
    return info.state;
}

/* Polls until the worker reaches state (1) or timeout_ms passes (0). */
static int wait_state(agent_sup_t *sup, const char *role, int index, agent_worker_state_t s,
                      int64_t timeout_ms)
{
    int64_t deadline = cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    while (cr_now_ns() < deadline) {
        agent_sup_poll(sup);
        agent_worker_info_t info;
        if (agent_sup_get(sup, "exp1", role, index, &info) == 0 && info.state == s) return 1;
        cr_sleep_ns(2 * CR_NS_PER_MS);
    }
    return 0;
}

/* Alive and not a zombie: orphans are reaped by init, which may take seconds. */
static int alive(pid_t pid)
{
    uint64_t ticks, hash;
    return agent_proc_identity(pid, &ticks, &hash) == 0;
}

/* Whether any live (non-zombie) process is in process group pgid. */
static int group_alive(pid_t pgid)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int found = 0;
    while (d && !found && (e = readdir(d)) != NULL) {
        char path[300], *text;
        cr_err_t err = {0};
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        if (cr_read_file(path, 8192, &text, NULL, &err) != 0) continue;
        char st;
        int ppid, pgrp;
        char *p = strrchr(text, ')');
        if (p && sscanf(p + 1, " %c %d %d", &st, &ppid, &pgrp) == 3 && pgrp == pgid && st != 'Z')
            found = 1;
        free(text);
    }
    if (d) closedir(d);
    return found;
}

/* Waits up to 2 s for a file to contain needle. */
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

static void start_sh(agent_sup_t *sup, const char *role, int index, const char *script)
{
    char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
    agent_worker_spec_t spec = {.experiment = "exp1", .role = role, .index = index, .argv = argv};
    cr_err_t err = {0};
    ASSERT_OK(agent_sup_start(sup, &spec, &err), &err);
}

static void test_logs_env_and_stop(void)
{
    const char *dir = test_tmpdir();
    agent_sup_config_t cfg = config(dir);
    agent_sup_t *sup;
    cr_err_t err = {0};
    ASSERT_OK(agent_sup_create(&cfg, &sup, &err), &err);
    char *argv[] = {"sh", "-c", "echo out-$CORRAL_ROLE-$CORRAL_INDEX-$FOO; echo err >&2; pwd; exec sleep 30", NULL};
    char *env[] = {"FOO=bar", "HOME=/nowhere", NULL};
    agent_worker_spec_t spec = {.experiment = "exp1", .role = "env", .index = 2, .argv = argv, .env = env};
    ASSERT_OK(agent_sup_start(sup, &spec, &err), &err);
    /* The same worker twice is refused while it runs. */
    ASSERT_INT_EQ(agent_sup_start(sup, &spec, &err), CR_EEXIST);
    ASSERT_TRUE(strstr(err.msg, "already running") != NULL);
    agent_worker_info_t info;
    ASSERT_INT_EQ(agent_sup_get(sup, "exp1", "env", 2, &info), 0);
    ASSERT_INT_EQ(info.state, AGENT_WORKER_RUNNING);
    ASSERT_TRUE(info.pid > 0);
    char want[4400];
    snprintf(want, sizeof want, "%s/experiments/exp1/logs/env-2.log", dir);
    ASSERT_STR_EQ(info.log_path, want);
    ASSERT_TRUE(file_has(want, "out-env-2-bar\n"));
    ASSERT_TRUE(file_has(want, "err\n"));
    snprintf(want, sizeof want, "%s/experiments/exp1\n", dir); /* cwd: the experiment dir */
    ASSERT_TRUE(file_has(info.log_path, want));
    ASSERT_TRUE(file_has(info.log_path, "=== corral agent"));
    /* The registry file names it. */
    char reg[4400];
    snprintf(reg, sizeof reg, "%s/agent/workers.json", dir);
    char pidtext[32];
    snprintf(pidtext, sizeof pidtext, "\"pid\":%d", (int)info.pid);
    ASSERT_TRUE(file_has(reg, pidtext));

    /* sleep dies of SIGTERM: stopped well inside the grace period. */
    int64_t t0 = cr_now_ns();
    ASSERT_OK(agent_sup_stop(sup, "exp1", "env", 2, &err), &err);
    ASSERT_INT_EQ(state_of(sup, "env", 2), AGENT_WORKER_STOPPING);
    ASSERT_TRUE(wait_state(sup, "env", 2, AGENT_WORKER_STOPPED, 2000));
    ASSERT_TRUE(cr_now_ns() - t0 < 250 * CR_NS_PER_MS);
    ASSERT_TRUE(!alive(info.pid));
    ASSERT_INT_EQ(agent_sup_get(sup, "exp1", "env", 2, &info), 0);
    ASSERT_INT_EQ(info.last_signal, SIGTERM);
    ASSERT_INT_EQ(info.pid, 0);
    char *regtext;
    ASSERT_OK(cr_read_file(reg, 1 << 20, &regtext, NULL, &err), &err);
    ASSERT_TRUE(strstr(regtext, pidtext) == NULL); /* only live workers are recorded */
    free(regtext);
    /* A finished worker may be forgotten, a running one not. */
    ASSERT_OK(agent_sup_forget(sup, "exp1", "env", 2, &err), &err);
    ASSERT_INT_EQ(agent_sup_get(sup, "exp1", "env", 2, &info), CR_ENOENT);
    agent_sup_destroy(sup);
}

static void test_crash_restarts_with_backoff(void)
{
    agent_sup_config_t cfg = config(test_tmpdir());
    cfg.fast_run_ms = 100000;
    cfg.max_fast_crashes = 100;
    agent_sup_t *sup;
    cr_err_t err = {0};
    ASSERT_OK(agent_sup_create(&cfg, &sup, &err), &err);
    start_sh(sup, "actor", 0, "echo started; exec sleep 30");
    agent_worker_info_t info;
    pid_t pids[4];
    int64_t killed_at[3];
    for (int round = 0; round < 3; round++) {
        ASSERT_INT_EQ(agent_sup_get(sup, "exp1", "actor", 0, &info), 0);
        pids[round] = info.pid;
        ASSERT_INT_EQ(info.restarts, round);
        killed_at[round] = cr_now_ns();
        ASSERT_INT_EQ(kill(info.pid, SIGKILL), 0);
        ASSERT_TRUE(wait_state(sup, "actor", 0, AGENT_WORKER_BACKOFF, 2000));
        ASSERT_INT_EQ(agent_sup_get(sup, "exp1", "actor", 0, &info), 0);
        ASSERT_INT_EQ(info.last_signal, SIGKILL);
        ASSERT_TRUE(strstr(info.message, "restarting in") != NULL);
        ASSERT_TRUE(agent_sup_next_wakeup_ns(sup) > 0);
        ASSERT_TRUE(wait_state(sup, "actor", 0, AGENT_WORKER_RUNNING, 3000));
        /* Back-off doubles: 40, 80, 160 ms. */
        int64_t waited_ms = (cr_now_ns() - killed_at[round]) / CR_NS_PER_MS;
        ASSERT_TRUE(waited_ms >= (40 << round));
    }
    ASSERT_INT_EQ(agent_sup_get(sup, "exp1", "actor", 0, &info), 0);
    pids[3] = info.pid;
    ASSERT_INT_EQ(info.restarts, 3);
    for (int i = 0; i < 3; i++) {
        ASSERT_TRUE(pids[i] != pids[3]);
        ASSERT_TRUE(!alive(pids[i]));
    }
    ASSERT_TRUE(file_has(info.log_path, "restart 3"));
    ASSERT_OK(agent_sup_stop_all(sup, 2000, &err), &err);
    ASSERT_TRUE(!alive(pids[3]));
    agent_sup_destroy(sup);
}

static void test_gives_up_after_fast_crashes(void)
{
    agent_sup_config_t cfg = config(test_tmpdir());
    agent_sup_t *sup;
    cr_err_t err = {0};
    ASSERT_OK(agent_sup_create(&cfg, &sup, &err), &err);
    start_sh(sup, "learner", 0, "echo boom >&2; exit 7");
    ASSERT_TRUE(wait_state(sup, "learner", 0, AGENT_WORKER_FAILED, 3000));
    agent_worker_info_t info;
    ASSERT_INT_EQ(agent_sup_get(sup, "exp1", "learner", 0, &info), 0);
    ASSERT_INT_EQ(info.restarts, 2); /* max_fast_crashes 3: the third crash gives up */
    ASSERT_INT_EQ(info.last_exit_code, 7);
    ASSERT_TRUE(strstr(info.message, "gave up after 3 crashes") != NULL);
    ASSERT_TRUE(strstr(info.message, "exited with code 7") != NULL);
    /* Events: running, backoff, running, backoff, running, failed. */
    ASSERT_INT_EQ(nevents, 6);
    ASSERT_INT_EQ(events[5].to, AGENT_WORKER_FAILED);
    /* A failed worker stays failed: polling does nothing more. */
    cr_sleep_ns(100 * CR_NS_PER_MS);
    ASSERT_INT_EQ(agent_sup_poll(sup), 0);
    ASSERT_INT_EQ(agent_sup_next_wakeup_ns(sup), 0);
    /* ...and may be started again. */
    start_sh(sup, "learner", 0, "exit 0");
    ASSERT_TRUE(wait_state(sup, "learner", 0, AGENT_WORKER_EXITED, 2000));
    ASSERT_INT_EQ(agent_sup_get(sup, "exp1", "learner", 0, &info), 0);
    ASSERT_INT_EQ(info.restarts, 0);
    ASSERT_INT_EQ(info.last_exit_code, 0);
    agent_sup_destroy(sup);
}

static void test_exec_failure_is_synchronous(void)
{
    const char *dir = test_tmpdir();
    agent_sup_config_t cfg = config(dir);
    agent_sup_t *sup;
    cr_err_t err = {0};
    ASSERT_OK(agent_sup_create(&cfg, &sup, &err), &err);
    char *missing[] = {"/no/such/corral", "worker", NULL};
    agent_worker_spec_t spec = {.experiment = "exp1", .role = "env", .index = 0, .argv = missing};
    ASSERT_INT_EQ(agent_sup_start(sup, &spec, &err), CR_ENOENT);
    ASSERT_TRUE(strstr(err.msg, "/no/such/corral") != NULL);
    char *notfound[] = {"corral-no-such-binary", NULL};
    spec.argv = notfound;
    ASSERT_INT_EQ(agent_sup_start(sup, &spec, &err), CR_ENOENT);
    ASSERT_TRUE(strstr(err.msg, "not found in PATH") != NULL);
    /* A cwd that does not exist fails inside the child, before exec. */
    char *ok[] = {"/bin/true", NULL};
    spec.argv = ok;
    spec.cwd = "/no/such/dir";
    ASSERT_INT_EQ(agent_sup_start(sup, &spec, &err), CR_ENOENT);
    ASSERT_TRUE(strstr(err.msg, "/no/such/dir") != NULL);
    /* Bad names. */
    spec.cwd = NULL;
    spec.experiment = "Bad Name";
    ASSERT_INT_EQ(agent_sup_start(sup, &spec, &err), CR_EINVAL);
    spec.experiment = "exp1";
    spec.index = -1;
    ASSERT_INT_EQ(agent_sup_start(sup, &spec, &err), CR_EINVAL);
    agent_worker_info_t info[4];
    ASSERT_INT_EQ(agent_sup_list(sup, info, 4), 0);
    ASSERT_INT_EQ(nevents, 0);
    agent_sup_destroy(sup);
}

static void test_stop_escalates_to_sigkill(void)
{
    agent_sup_config_t cfg = config(test_tmpdir());
    agent_sup_t *sup;
    cr_err_t err = {0};
    ASSERT_OK(agent_sup_create(&cfg, &sup, &err), &err);
    /* Ignores SIGTERM, and so does its child (ignored dispositions survive exec). */
    start_sh(sup, "buffer", 0, "trap '' TERM; echo ready; sleep 30 & wait; sleep 30");
    agent_worker_info_t info;
    ASSERT_INT_EQ(agent_sup_get(sup, "exp1", "buffer", 0, &info), 0);
    ASSERT_TRUE(file_has(info.log_path, "ready"));
    pid_t pgid = info.pid;
    int64_t t0 = cr_now_ns();
    ASSERT_OK(agent_sup_stop(sup, "exp1", "buffer", 0, &err), &err);
    ASSERT_TRUE(wait_state(sup, "buffer", 0, AGENT_WORKER_STOPPED, 3000));
    int64_t took_ms = (cr_now_ns() - t0) / CR_NS_PER_MS;
    ASSERT_TRUE(took_ms >= 300);
    ASSERT_TRUE(took_ms < 2000);
    ASSERT_INT_EQ(agent_sup_get(sup, "exp1", "buffer", 0, &info), 0);
    ASSERT_INT_EQ(info.last_signal, SIGKILL);
    /* The whole group is gone, the background sleep included. */
    ASSERT_TRUE(!group_alive(pgid));
    agent_sup_destroy(sup);
}

static void test_backoff_then_stop(void)
{
    agent_sup_config_t cfg = config(test_tmpdir());
    cfg.backoff_initial_ms = 5000;
    agent_sup_t *sup;
    cr_err_t err = {0};
    ASSERT_OK(agent_sup_create(&cfg, &sup, &err), &err);
    start_sh(sup, "env", 0, "exit 1");
    ASSERT_TRUE(wait_state(sup, "env", 0, AGENT_WORKER_BACKOFF, 2000));
    ASSERT_OK(agent_sup_stop(sup, "exp1", "env", 0, &err), &err);
    ASSERT_INT_EQ(state_of(sup, "env", 0), AGENT_WORKER_STOPPED);
    ASSERT_INT_EQ(agent_sup_stop(sup, "exp1", "env", 9, &err), CR_ENOENT);
    ASSERT_INT_EQ(agent_sup_next_wakeup_ns(sup), 0);
    agent_sup_destroy(sup);
}

/* A separate agent process starts two workers and is SIGKILLed; this process
 * then plays the restarted agent. */
static void test_adopt_after_agent_sigkill(void)
{
    const char *dir = test_tmpdir();
    int pfd[2];
    ASSERT_INT_EQ(pipe(pfd), 0);
    fflush(NULL);
    pid_t agent = fork();
    if (agent == 0) {
        agent_sup_config_t cfg = config(dir);
        agent_sup_t *sup;
        cr_err_t err = {0};
        cr_log_set_level(CR_LOG_OFF);
        if (agent_sup_create(&cfg, &sup, &err) != 0) _exit(3);
        /* No exec in the script: the command line must stay the recorded one. */
        char *argv[] = {"/bin/sh", "-c", "echo up; while :; do sleep 1; done", NULL};
        agent_worker_spec_t spec = {.experiment = "exp1", .role = "env", .index = 0, .generation = 3, .argv = argv};
        if (agent_sup_start(sup, &spec, &err) != 0) _exit(4);
        spec.role = "actor";
        if (agent_sup_start(sup, &spec, &err) != 0) _exit(5);
        if (write(pfd[1], "k", 1) != 1) _exit(6);
        pause();
        _exit(7);
    }
    close(pfd[1]);
    char c;
    ASSERT_INT_EQ(read(pfd[0], &c, 1), 1);
    close(pfd[0]);
    ASSERT_INT_EQ(kill(agent, SIGKILL), 0);
    int status;
    ASSERT_TRUE(waitpid(agent, &status, 0) == agent);

    agent_sup_config_t cfg = config(dir);
    agent_sup_t *sup;
    cr_err_t err = {0};
    ASSERT_OK(agent_sup_create(&cfg, &sup, &err), &err);
    agent_worker_info_t info[4];
    ASSERT_INT_EQ(agent_sup_list(sup, info, 4), 2);
    ASSERT_STR_EQ(info[0].role, "actor"); /* sorted */
    for (int i = 0; i < 2; i++) {
        ASSERT_INT_EQ(info[i].state, AGENT_WORKER_RUNNING);
        ASSERT_INT_EQ(info[i].adopted, 1);
        ASSERT_TRUE(alive(info[i].pid));
        ASSERT_INT_EQ(info[i].restarts, 0);
        ASSERT_INT_EQ(info[i].generation, 3); /* kept across the agent restart */
    }
    ASSERT_INT_EQ(nevents, 2); /* one adoption event each */
    pid_t env_pid = info[1].pid, actor_pid = info[0].pid;
    /* Adopted, not duplicated: starting it again is refused, polling starts nothing. */
    char *argv[] = {"/bin/sh", "-c", "exec sleep 30", NULL};
    agent_worker_spec_t spec = {.experiment = "exp1", .role = "env", .index = 0, .argv = argv};
    ASSERT_INT_EQ(agent_sup_start(sup, &spec, &err), CR_EEXIST);
    ASSERT_INT_EQ(agent_sup_poll(sup), 0);

    /* An adopted worker that crashes is noticed (pidfd) and restarted as our child. */
    ASSERT_INT_EQ(kill(env_pid, SIGKILL), 0);
    ASSERT_TRUE(wait_state(sup, "env", 0, AGENT_WORKER_BACKOFF, 2000));
    ASSERT_TRUE(wait_state(sup, "env", 0, AGENT_WORKER_RUNNING, 2000));
    agent_worker_info_t now;
    ASSERT_INT_EQ(agent_sup_get(sup, "exp1", "env", 0, &now), 0);
    ASSERT_TRUE(now.pid != env_pid);
    ASSERT_INT_EQ(now.adopted, 0);
    ASSERT_INT_EQ(now.restarts, 1);

    /* Stopping an adopted worker works through its process group. */
    ASSERT_OK(agent_sup_stop_all(sup, 3000, &err), &err);
    ASSERT_TRUE(!group_alive(actor_pid));
    ASSERT_TRUE(!alive(now.pid));
    agent_sup_destroy(sup);

    /* A third agent finds nothing to adopt. */
    ASSERT_OK(agent_sup_create(&cfg, &sup, &err), &err);
    ASSERT_INT_EQ(agent_sup_list(sup, info, 4), 0);
    agent_sup_destroy(sup);
}

/* A registry entry whose pid now names another process (pid reuse) must not be
 * adopted: the worker is restarted, and the stranger is left alone. */
static void test_pid_reuse_is_not_adopted(void)
{
    const char *dir = test_tmpdir();
    /* The stranger: a process of ours with a different start time and argv. */
    fflush(NULL);
    pid_t stranger = fork();
    if (stranger == 0) {
        execl("/bin/sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    cr_sleep_ns(20 * CR_NS_PER_MS);
    uint64_t ticks, hash;
    ASSERT_INT_EQ(agent_proc_identity(stranger, &ticks, &hash), 0);
    char *sleep_argv[] = {"sleep", "30", NULL};
    ASSERT_TRUE(hash == agent_argv_hash(sleep_argv));
    char *argv_cmd[] = {"/bin/sh", "-c", "exec sleep 31", NULL};
    char path[4400], text[2048];
    snprintf(path, sizeof path, "%s/agent", dir);
    cr_err_t err = {0};
    ASSERT_OK(cr_mkdir_p(path, 0755, &err), &err);
    snprintf(path, sizeof path, "%s/agent/workers.json", dir);
    /* Right pid and argv hash of the stranger but a wrong start time, then right
     * start time but the registered worker's (different) command line. */
    snprintf(text, sizeof text,
             "{\"version\":1,\"workers\":["
             "{\"experiment\":\"exp1\",\"role\":\"env\",\"index\":0,\"state\":\"running\",\"pid\":%d,"
             "\"start_ticks\":\"%llu\",\"cmdline_hash\":\"%016llx\",\"argv\":[\"/bin/sh\",\"-c\",\"exec sleep 31\"],\"env\":[]},"
             "{\"experiment\":\"exp1\",\"role\":\"env\",\"index\":1,\"state\":\"running\",\"pid\":%d,"
             "\"start_ticks\":\"%llu\",\"cmdline_hash\":\"%016llx\",\"argv\":[\"/bin/sh\",\"-c\",\"exec sleep 31\"],\"env\":[]},"
             "{\"bogus\":true}]}",
             (int)stranger, (unsigned long long)ticks + 1, (unsigned long long)hash, (int)stranger,
             (unsigned long long)ticks, (unsigned long long)agent_argv_hash(argv_cmd));
    ASSERT_OK(cr_durable_write(path, text, strlen(text), 0600, &err), &err);

    agent_sup_config_t cfg = config(dir);
    agent_sup_t *sup;
    cr_log_set_level(CR_LOG_ERROR);
    ASSERT_OK(agent_sup_create(&cfg, &sup, &err), &err);
    cr_log_set_level(CR_LOG_WARN);
    agent_worker_info_t info[4];
    ASSERT_INT_EQ(agent_sup_list(sup, info, 4), 2);
    for (int i = 0; i < 2; i++) {
        ASSERT_INT_EQ(info[i].state, AGENT_WORKER_BACKOFF);
        ASSERT_TRUE(strstr(info[i].message, "ended while the agent was down") != NULL);
    }
    ASSERT_TRUE(wait_state(sup, "env", 0, AGENT_WORKER_RUNNING, 2000));
    ASSERT_TRUE(wait_state(sup, "env", 1, AGENT_WORKER_RUNNING, 2000));
    ASSERT_INT_EQ(agent_sup_list(sup, info, 4), 2);
    ASSERT_TRUE(info[0].pid != stranger && info[1].pid != stranger);
    ASSERT_TRUE(alive(stranger)); /* never signalled */
    ASSERT_OK(agent_sup_stop_all(sup, 3000, &err), &err);
    ASSERT_TRUE(alive(stranger));
    agent_sup_destroy(sup);
    kill(stranger, SIGKILL);
    waitpid(stranger, NULL, 0);
}

static void test_corrupt_registry_is_ignored(void)
{
    const char *dir = test_tmpdir();
    char path[4400];
    cr_err_t err = {0};
    snprintf(path, sizeof path, "%s/reg.json", dir);
    ASSERT_OK(cr_durable_write(path, "{not json", 9, 0600, &err), &err);
    agent_sup_config_t cfg = config(dir);
    cfg.registry_path = path;
    agent_sup_t *sup;
    cr_log_set_level(CR_LOG_OFF);
    ASSERT_OK(agent_sup_create(&cfg, &sup, &err), &err);
    cr_log_set_level(CR_LOG_WARN);
    agent_worker_info_t info[1];
    ASSERT_INT_EQ(agent_sup_list(sup, info, 1), 0);
    agent_sup_destroy(sup);
    /* It was replaced by a valid, empty registry. */
    ASSERT_TRUE(file_has(path, "\"workers\":[]"));
    cfg.state_dir = NULL;
    ASSERT_INT_EQ(agent_sup_create(&cfg, &sup, &err), CR_EINVAL);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"logs_env_and_stop", test_logs_env_and_stop},
        {"crash_restarts_with_backoff", test_crash_restarts_with_backoff},
        {"gives_up_after_fast_crashes", test_gives_up_after_fast_crashes},
        {"exec_failure_is_synchronous", test_exec_failure_is_synchronous},
        {"stop_escalates_to_sigkill", test_stop_escalates_to_sigkill},
        {"backoff_then_stop", test_backoff_then_stop},
        {"adopt_after_agent_sigkill", test_adopt_after_agent_sigkill},
        {"pid_reuse_is_not_adopted", test_pid_reuse_is_not_adopted},
        {"corrupt_registry_is_ignored", test_corrupt_registry_is_ignored},
        {NULL, NULL},
    };
    cr_log_set_level(CR_LOG_WARN);
    return test_main("supervisor", cases, argc, argv);
}
