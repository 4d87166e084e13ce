/* supervisor.c - starts, watches, restarts, stops and adopts worker processes;
 * see supervisor.h for the contract.
 *
 * State machine of one worker (the function that makes each transition):
 *
 *     start ──spawn()──> RUNNING ──on_exit(code 0)──────────────> EXITED
 *                         │   ^ \──on_exit(crash)──> BACKOFF ──poll: due, spawn()──┐
 *                         │   └────────────────────────────────────────────────────┘
 *                         │                          └──on_exit: fast crash #N──> FAILED
 *                         └──agent_sup_stop──> STOPPING ──on_exit──> STOPPED
 *                                               (poll: grace over -> SIGKILL)
 *     BACKOFF ──agent_sup_stop──> STOPPED (nothing is running)
 *     EXITED, STOPPED, FAILED: final until agent_sup_start replaces or forget drops.
 *
 * Invariants: pid != 0 exactly in RUNNING and STOPPING; a worker with pid != 0
 * leads its own process group (setsid in the child), so signalling -pid reaches
 * every process it started; after a worker's leader ends, its group is SIGKILLed
 * so a restart never runs beside strays of the previous run. The registry file
 * always lists the workers in RUNNING, STOPPING and BACKOFF (rewritten atomically
 * after each change), which is what a restarted agent needs to adopt or restart. */
#define _GNU_SOURCE
#include "agents/supervisor.h"
#include "common/durable.h"
#include "common/id.h"
#include "common/log.h"
#include "common/time.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define PATHLEN 4096
#define REGISTRY_MAX (4 << 20)

typedef struct worker {
    char exp[AGENT_NAME_MAX], role[AGENT_NAME_MAX];
    int index;
    int64_t generation;
    char **argv, **env; /* owned, NULL-terminated */
    char *cwd;          /* owned, may be NULL */
    agent_worker_state_t state;
    pid_t pid;
    int pidfd;          /* adopted workers only; -1 otherwise */
    int adopted;
    uint64_t start_ticks, cmd_hash;
    int64_t started_ns, started_wall_ms;
    unsigned restarts;
    int fast_crashes;
    int64_t restart_at_ns, kill_at_ns; /* 0 when not pending */
    int last_exit_code, last_signal;
    char log_path[PATHLEN];
    char message[256];
} worker_t;

struct agent_sup {
    char state_dir[PATHLEN];
    char registry[PATHLEN];
    int64_t backoff_initial_ms, backoff_max_ms, fast_run_ms, stop_grace_ms;
    int max_fast_crashes;
    agent_sup_event_fn on_event;
    void *ud;
    worker_t **w; /* sorted by (exp, role, index) */
    size_t n, cap;
};

const char *agent_worker_state_name(agent_worker_state_t s)
{
    switch (s) {
    case AGENT_WORKER_RUNNING: return "running";
    case AGENT_WORKER_BACKOFF: return "backoff";
    case AGENT_WORKER_STOPPING: return "stopping";
    case AGENT_WORKER_STOPPED: return "stopped";
    case AGENT_WORKER_EXITED: return "exited";
    case AGENT_WORKER_FAILED: return "failed";
    }
    return "unknown";
}

static int is_live(agent_worker_state_t s)
{
    return s == AGENT_WORKER_RUNNING || s == AGENT_WORKER_STOPPING || s == AGENT_WORKER_BACKOFF;
}

/* ---- process identity --------------------------------------------------------- */

uint64_t agent_argv_hash(char *const *argv)
{
    uint64_t h = CR_FNV64_INIT;
    for (size_t i = 0; argv[i]; i++) h = cr_fnv64(h, argv[i], strlen(argv[i]) + 1);
    return h;
}

int agent_proc_identity(pid_t pid, uint64_t *start_ticks, uint64_t *cmdline_hash)
{
    char path[64], *text;
    size_t len;
    cr_err_t ignored = {0};
    if (pid <= 0) return CR_ENOENT;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (cr_read_file(path, 8192, &text, &len, &ignored) != 0) return CR_ENOENT;
    /* The command name in parentheses may hold spaces: fields follow the last ')'. */
    char *p = strrchr(text, ')');
    char state = 0;
    unsigned long long ticks = 0;
    int ok = p && sscanf(p + 1,
                         " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
                         &state, &ticks) == 2;
    free(text);
    if (!ok || state == 'Z' || state == 'X') return CR_ENOENT;
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    if (cr_read_file(path, 1 << 20, &text, &len, &ignored) != 0) return CR_ENOENT;
    *cmdline_hash = cr_fnv64(CR_FNV64_INIT, text, len);
    free(text);
    *start_ticks = ticks;
    return 0;
}

/* Whether pid's command line is argv's: it must end with argv[1..], and the
 * element before them must have argv[0]'s base name. A binary shows argv
 * itself; a script (#!) shows its interpreter first and then the script's path
 * in argv[0]'s place, which this accepts too. */
static int cmdline_matches(pid_t pid, char *const *argv)
{
    char path[64], *text;
    size_t len;
    cr_err_t ignored = {0};
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    if (cr_read_file(path, 1 << 20, &text, &len, &ignored) != 0) return 0;
    size_t tail = 0, argc = 0;
    while (argv[argc]) argc++;
    for (size_t i = 1; i < argc; i++) tail += strlen(argv[i]) + 1;
    int ok = len > tail;
    char *p = text + len - tail;
    for (size_t i = 1; ok && i < argc; i++) {
        size_t n = strlen(argv[i]) + 1;
        ok = memcmp(p, argv[i], n) == 0;
        p += n;
    }
    if (ok) {
        /* The element before the tail: from the NUL before it (or the start). */
        char *end = text + len - tail - 1; /* its terminating NUL */
        char *start = end;
        while (start > text && start[-1] != '\0') start--;
        const char *base0 = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
        const char *base1 = strrchr(start, '/') ? strrchr(start, '/') + 1 : start;
        ok = *end == '\0' && strcmp(base0, base1) == 0;
    }
    free(text);
    return ok;
}

static int pidfd_open_compat(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* ---- small helpers ------------------------------------------------------------- */

static char **strv_dup(char *const *v)
{
    size_t n = 0;
    while (v && v[n]) n++;
    char **out = calloc(n + 1, sizeof *out);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        out[i] = strdup(v[i]);
        if (!out[i]) {
            for (size_t j = 0; j < i; j++) free(out[j]);
            free(out);
            return NULL;
        }
    }
    return out;
}

static void strv_free(char **v)
{
    if (!v) return;
    for (size_t i = 0; v[i]; i++) free(v[i]);
    free(v);
}

static void worker_free(worker_t *w)
{
    if (!w) return;
    strv_free(w->argv);
    strv_free(w->env);
    free(w->cwd);
    if (w->pidfd >= 0) close(w->pidfd);
    free(w);
}

static int cmp_key(const worker_t *w, const char *exp, const char *role, int index)
{
    int c = strcmp(w->exp, exp);
    if (c) return c;
    c = strcmp(w->role, role);
    if (c) return c;
    return (w->index > index) - (w->index < index);
}

/* Index of the worker, or -(insertion point) - 1. */
static long find(const agent_sup_t *sup, const char *exp, const char *role, int index)
{
    size_t lo = 0, hi = sup->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = cmp_key(sup->w[mid], exp, role, index);
        if (c == 0) return (long)mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -(long)lo - 1;
}

static int insert(agent_sup_t *sup, worker_t *w)
{
    long at = find(sup, w->exp, w->role, w->index);
    if (at >= 0) {
        worker_free(sup->w[at]);
        sup->w[at] = w;
        return 0;
    }
    size_t pos = (size_t)(-at - 1);
    if (sup->n == sup->cap) {
        size_t cap = sup->cap ? sup->cap * 2 : 16;
        worker_t **grown = realloc(sup->w, cap * sizeof *grown);
        if (!grown) return CR_ENOMEM;
        sup->w = grown;
        sup->cap = cap;
    }
    memmove(&sup->w[pos + 1], &sup->w[pos], (sup->n - pos) * sizeof *sup->w);
    sup->w[pos] = w;
    sup->n++;
    return 0;
}

static void snapshot(const worker_t *w, agent_worker_info_t *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->experiment, sizeof out->experiment, "%s", w->exp);
    snprintf(out->role, sizeof out->role, "%s", w->role);
    out->index = w->index;
    out->generation = w->generation;
    out->state = w->state;
    out->pid = w->pid;
    out->adopted = w->adopted;
    out->restarts = w->restarts;
    out->last_exit_code = w->last_exit_code;
    out->last_signal = w->last_signal;
    out->started_wall_ms = w->started_wall_ms;
    snprintf(out->log_path, sizeof out->log_path, "%s", w->log_path);
    snprintf(out->message, sizeof out->message, "%s", w->message);
}

static void emit(agent_sup_t *sup, const worker_t *w, agent_worker_state_t old)
{
    CR_INFO("supervisor", "%s/%s-%d: %s -> %s%s%s", w->exp, w->role, w->index,
            agent_worker_state_name(old), agent_worker_state_name(w->state),
            w->message[0] ? ": " : "", w->message);
    if (!sup->on_event) return;
    agent_worker_info_t info;
    snapshot(w, &info);
    sup->on_event(sup->ud, &info, old);
}

static void set_state(agent_sup_t *sup, worker_t *w, agent_worker_state_t s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_state(agent_sup_t *sup, worker_t *w, agent_worker_state_t s, const char *fmt, ...)
{
    agent_worker_state_t old = w->state;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->message, sizeof w->message, fmt, ap);
    va_end(ap);
    w->state = s;
    emit(sup, w, old);
}

/* Appends one line to the worker's log (a note from the agent, between runs). */
static void log_note(const worker_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_note(const worker_t *w, const char *fmt, ...)
{
    char line[1024];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    size_t off = strftime(line, sizeof line, "=== corral agent %Y-%m-%dT%H:%M:%SZ: ", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + off, sizeof line - off - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len++] = '\n';
    int fd = open(w->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    ssize_t wr = write(fd, line, len);
    (void)wr;
    close(fd);
}

/* ---- registry file ------------------------------------------------------------- */

static cJSON *strv_json(char *const *v)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; v && v[i]; i++) cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

static int save_registry(agent_sup_t *sup)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON *arr = cJSON_AddArrayToObject(root, "workers");
    for (size_t i = 0; i < sup->n; i++) {
        const worker_t *w = sup->w[i];
        if (!is_live(w->state)) continue;
        char buf[32];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "experiment", w->exp);
        cJSON_AddStringToObject(o, "role", w->role);
        cJSON_AddNumberToObject(o, "index", w->index);
        cJSON_AddNumberToObject(o, "generation", (double)w->generation);
        cJSON_AddStringToObject(o, "state", agent_worker_state_name(w->state));
        cJSON_AddNumberToObject(o, "pid", w->pid);
        snprintf(buf, sizeof buf, "%" PRIu64, w->start_ticks);
        cJSON_AddStringToObject(o, "start_ticks", buf);
        snprintf(buf, sizeof buf, "%016" PRIx64, w->cmd_hash);
        cJSON_AddStringToObject(o, "cmdline_hash", buf);
        cJSON_AddNumberToObject(o, "started_wall_ms", (double)w->started_wall_ms);
        cJSON_AddNumberToObject(o, "restarts", w->restarts);
        cJSON_AddItemToObject(o, "argv", strv_json(w->argv));
        cJSON_AddItemToObject(o, "env", strv_json(w->env));
        if (w->cwd) cJSON_AddStringToObject(o, "cwd", w->cwd);
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) return CR_ENOMEM;
    cr_err_t err = {0};
    int rc = cr_durable_write(sup->registry, text, strlen(text), 0600, &err);
    free(text);
    if (rc != 0) CR_ERROR("supervisor", "saving the worker registry: %s", err.msg);
    return rc;
}

/* ---- spawning ------------------------------------------------------------------ */

/* Finds argv0 in PATH unless it holds a '/'; before fork, since execvp is not
 * async-signal-safe. */
static int resolve(const char *argv0, char out[PATHLEN], cr_err_t *err)
{
    if (strchr(argv0, '/')) {
        snprintf(out, PATHLEN, "%s", argv0);
        if (access(out, X_OK) != 0)
            return cr_err_set(err, errno == ENOENT ? CR_ENOENT : CR_EPERM, "cannot execute %s: %s",
                              argv0, strerror(errno));
        return 0;
    }
    const char *path = getenv("PATH");
    if (!path || !*path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t len = colon ? (size_t)(colon - path) : strlen(path);
        snprintf(out, PATHLEN, "%.*s/%s", (int)len, len ? path : ".", argv0);
        if (access(out, X_OK) == 0) return 0;
        path += len + (colon ? 1 : 0);
    }
    return cr_err_set(err, CR_ENOENT, "cannot execute %s: not found in PATH", argv0);
}

/* environ without the keys set in extra, then extra: getenv finds the first
 * match, so overriding means removing. The strings are borrowed. */
static char **build_env(worker_t *w, char own[3][96])
{
    size_t ne = 0, nx = 0;
    while (environ[ne]) ne++;
    while (w->env && w->env[nx]) nx++;
    char **out = calloc(ne + nx + 4, sizeof *out);
    if (!out) return NULL;
    snprintf(own[0], 96, "CORRAL_EXPERIMENT=%s", w->exp);
    snprintf(own[1], 96, "CORRAL_ROLE=%s", w->role);
    snprintf(own[2], 96, "CORRAL_INDEX=%d", w->index);
    size_t k = 0;
    for (size_t i = 0; i < nx; i++) out[k++] = w->env[i];
    for (int i = 0; i < 3; i++) out[k++] = own[i];
    for (size_t i = 0; i < ne; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t keylen = eq ? (size_t)(eq - environ[i]) + 1 : strlen(environ[i]);
        int shadowed = 0;
        for (size_t j = 0; j < k && !shadowed; j++)
            shadowed = strncmp(out[j], environ[i], keylen) == 0;
        if (!shadowed) out[k++] = environ[i];
    }
    return out;
}

static void exp_dir(const agent_sup_t *sup, const char *exp, char out[PATHLEN])
{
    snprintf(out, PATHLEN, "%s/experiments/%s", sup->state_dir, exp);
}

/* Forks and execs w; on success w is RUNNING-ready (pid, identity, times set).
 * The child reports an exec failure through a close-on-exec pipe, so the caller
 * learns it synchronously. */
static int spawn(agent_sup_t *sup, worker_t *w, cr_err_t *err)
{
    char dir[PATHLEN], logs[PATHLEN], exe[PATHLEN];
    exp_dir(sup, w->exp, dir);
    snprintf(logs, sizeof logs, "%s/logs", dir);
    int rc = cr_mkdir_p(logs, 0755, err);
    if (rc != 0) return rc;
    snprintf(w->log_path, sizeof w->log_path, "%s/%s-%d.log", logs, w->role, w->index);
    rc = resolve(w->argv[0], exe, err);
    if (rc != 0) return rc;
    const char *cwd = w->cwd ? w->cwd : dir;

    char own[3][96];
    char **envp = build_env(w, own);
    if (!envp) return cr_err_set(err, CR_ENOMEM, "worker environment");
    int logfd = open(w->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int pfd[2] = {-1, -1};
    if (logfd < 0 || nullfd < 0 || pipe2(pfd, O_CLOEXEC) != 0) {
        rc = cr_err_set(err, CR_EIO, "preparing %s: %s", w->log_path, strerror(errno));
        goto out;
    }
    log_note(w, "starting %s-%d (restart %u): %s", w->role, w->index, w->restarts, exe);

    pid_t pid = fork();
    if (pid < 0) {
        rc = cr_err_set(err, CR_EIO, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls until exec. */
        int e = 0;
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        for (int s = 1; s < NSIG; s++) signal(s, SIG_DFL);
        if (setsid() < 0) e = errno;
        if (!e && (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)) e = errno;
        if (!e && chdir(cwd) != 0) e = errno;
        if (!e) {
            /* Keep 0-2 and the error pipe; close whatever else the agent had open. */
            if (pfd[1] > 3) syscall(SYS_close_range, 3, pfd[1] - 1, 0);
            syscall(SYS_close_range, pfd[1] + 1, ~0U, 0);
            execve(exe, w->argv, envp);
            e = errno;
        }
        ssize_t wr = write(pfd[1], &e, sizeof e);
        (void)wr;
        _exit(127);
    }
    close(pfd[1]);
    pfd[1] = -1;
    int child_errno = 0;
    ssize_t r;
    do r = read(pfd[0], &child_errno, sizeof child_errno);
    while (r < 0 && errno == EINTR);
    if (r == (ssize_t)sizeof child_errno) {
        waitpid(pid, NULL, 0);
        rc = cr_err_set(err, child_errno == ENOENT ? CR_ENOENT : CR_EPERM,
                        "cannot start %s-%d: %s (cwd %s): %s", w->role, w->index, exe, cwd,
                        strerror(child_errno));
        log_note(w, "%s", err->msg);
        goto out;
    }
    w->pid = pid;
    w->pidfd = -1;
    w->adopted = 0;
    w->cmd_hash = agent_argv_hash(w->argv);
    uint64_t ignored_hash;
    if (agent_proc_identity(pid, &w->start_ticks, &ignored_hash) != 0)
        w->start_ticks = 0; /* it already exited; the next poll reaps it */
    w->started_ns = cr_now_ns();
    w->started_wall_ms = cr_wall_ns() / CR_NS_PER_MS;
    w->restart_at_ns = w->kill_at_ns = 0;
    rc = 0;
out:
    free(envp);
    if (logfd >= 0) close(logfd);
    if (nullfd >= 0) close(nullfd);
    if (pfd[0] >= 0) close(pfd[0]);
    if (pfd[1] >= 0) close(pfd[1]);
    return rc;
}

/* ---- exits ------------------------------------------------------------------- */

static void kill_group(pid_t pgid, int sig)
{
    if (pgid > 0) kill(-pgid, sig);
}

/* The leader of w's group ended (code >= 0 or signal > 0; both unknown for an
 * adopted worker). Decides the next state. */
static void on_exit_of(agent_sup_t *sup, worker_t *w, int code, int sig)
{
    int64_t now = cr_now_ns();
    int64_t ran_ms = (now - w->started_ns) / CR_NS_PER_MS;
    pid_t pid = w->pid;
    kill_group(pid, SIGKILL); /* strays of the group must not outlive the run */
    w->pid = 0;
    if (w->pidfd >= 0) {
        close(w->pidfd);
        w->pidfd = -1;
    }
    w->last_exit_code = code;
    w->last_signal = sig;
    char how[64];
    if (sig > 0) snprintf(how, sizeof how, "killed by signal %d (%s)", sig, strsignal(sig));
    else if (code >= 0) snprintf(how, sizeof how, "exited with code %d", code);
    else snprintf(how, sizeof how, "ended (adopted, status unknown)");
    log_note(w, "pid %d %s after %" PRId64 " ms", (int)pid, how, ran_ms);

    if (w->state == AGENT_WORKER_STOPPING) {
        set_state(sup, w, AGENT_WORKER_STOPPED, "stopped (pid %d %s)", (int)pid, how);
    } else if (code == 0 && sig == 0) {
        set_state(sup, w, AGENT_WORKER_EXITED, "finished (pid %d exited with code 0)", (int)pid);
    } else {
        if (ran_ms < sup->fast_run_ms) w->fast_crashes++;
        else w->fast_crashes = 1;
        if (w->fast_crashes >= sup->max_fast_crashes) {
            set_state(sup, w, AGENT_WORKER_FAILED,
                      "gave up after %d crashes within %" PRId64 " ms of starting; last: pid %d %s",
                      w->fast_crashes, sup->fast_run_ms, (int)pid, how);
        } else {
            int64_t delay = sup->backoff_initial_ms;
            for (int i = 1; i < w->fast_crashes && delay < sup->backoff_max_ms; i++) delay *= 2;
            if (delay > sup->backoff_max_ms) delay = sup->backoff_max_ms;
            w->restart_at_ns = now + delay * CR_NS_PER_MS;
            set_state(sup, w, AGENT_WORKER_BACKOFF, "pid %d %s; restarting in %" PRId64 " ms",
                      (int)pid, how, delay);
        }
    }
}

/* Whether w's process has ended; fills code/sig when known. */
static int has_ended(worker_t *w, int *code, int *sig)
{
    *code = -1;
    *sig = 0;
    int status;
    pid_t r = waitpid(w->pid, &status, WNOHANG);
    if (r == w->pid) {
        if (WIFEXITED(status)) *code = WEXITSTATUS(status);
        else if (WIFSIGNALED(status)) *sig = WTERMSIG(status);
        else return 0; /* stopped/continued are not reported without WUNTRACED */
        return 1;
    }
    if (r == 0) return 0; /* our child, still running */
    /* Not our child (adopted): ask the pidfd, else the process table. */
    if (w->pidfd >= 0) {
        struct pollfd p = {.fd = w->pidfd, .events = POLLIN};
        return poll(&p, 1, 0) > 0;
    }
    uint64_t ticks, hash;
    return agent_proc_identity(w->pid, &ticks, &hash) != 0 || ticks != w->start_ticks;
}

/* ---- public API ---------------------------------------------------------------- */

static worker_t *worker_new(const char *exp, const char *role, int index, char *const *argv,
                            char *const *env, const char *cwd)
{
    worker_t *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    snprintf(w->exp, sizeof w->exp, "%s", exp);
    snprintf(w->role, sizeof w->role, "%s", role);
    w->index = index;
    w->pidfd = -1;
    w->last_exit_code = -1;
    w->argv = strv_dup(argv);
    w->env = strv_dup(env);
    w->cwd = cwd ? strdup(cwd) : NULL;
    if (!w->argv || !w->env || (cwd && !w->cwd)) {
        worker_free(w);
        return NULL;
    }
    return w;
}

static char **json_strv(const cJSON *a)
{
    int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : 0;
    char **v = calloc((size_t)n + 1, sizeof *v);
    if (!v) return NULL;
    for (int i = 0; i < n; i++) {
        const cJSON *s = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsString(s) || !(v[i] = strdup(s->valuestring))) {
            strv_free(v);
            return NULL;
        }
    }
    return v;
}

/* Adopts or schedules a restart of one registry entry. */
static void adopt_entry(agent_sup_t *sup, const cJSON *o)
{
    const cJSON *exp = cJSON_GetObjectItem(o, "experiment"), *role = cJSON_GetObjectItem(o, "role");
    const cJSON *index = cJSON_GetObjectItem(o, "index"), *pid = cJSON_GetObjectItem(o, "pid");
    const cJSON *ticks = cJSON_GetObjectItem(o, "start_ticks"),
                *hash = cJSON_GetObjectItem(o, "cmdline_hash");
    const cJSON *state = cJSON_GetObjectItem(o, "state");
    if (!cJSON_IsString(exp) || !cr_name_valid(exp->valuestring) || !cJSON_IsString(role) ||
        !cr_name_valid(role->valuestring) || !cJSON_IsNumber(index) || index->valueint < 0 ||
        !cJSON_IsNumber(pid) || !cJSON_IsString(ticks) || !cJSON_IsString(hash) ||
        !cJSON_IsString(state)) {
        CR_WARN("supervisor", "%s: skipping a malformed worker entry", sup->registry);
        return;
    }
    char **argv = json_strv(cJSON_GetObjectItem(o, "argv"));
    char **env = json_strv(cJSON_GetObjectItem(o, "env"));
    const cJSON *cwd = cJSON_GetObjectItem(o, "cwd");
    worker_t *w = NULL;
    if (argv && argv[0] && env)
        w = worker_new(exp->valuestring, role->valuestring, index->valueint, argv, env,
                       cJSON_IsString(cwd) ? cwd->valuestring : NULL);
    strv_free(argv);
    strv_free(env);
    if (!w) {
        CR_WARN("supervisor", "%s: skipping worker %s/%s-%d without a usable argv", sup->registry,
                exp->valuestring, role->valuestring, index->valueint);
        return;
    }
    const cJSON *gen = cJSON_GetObjectItem(o, "generation");
    if (cJSON_IsNumber(gen)) w->generation = (int64_t)gen->valuedouble;
    const cJSON *restarts = cJSON_GetObjectItem(o, "restarts");
    if (cJSON_IsNumber(restarts) && restarts->valuedouble >= 0) w->restarts = (unsigned)restarts->valuedouble;
    w->start_ticks = strtoull(ticks->valuestring, NULL, 10);
    w->cmd_hash = strtoull(hash->valuestring, NULL, 16);
    pid_t p = (pid_t)pid->valueint;

    /* Same pid, same kernel start time, same command line: the same process. The
     * check is repeated after opening the pidfd, which pins the process, so a pid
     * reused in between cannot slip through. */
    uint64_t t1 = 0, h1 = 0, t2 = 0, h2 = 0;
    int same = p > 0 && agent_proc_identity(p, &t1, &h1) == 0 && t1 == w->start_ticks &&
               cmdline_matches(p, w->argv);
    int pidfd = same ? pidfd_open_compat(p) : -1;
    if (same && pidfd >= 0)
        same = agent_proc_identity(p, &t2, &h2) == 0 && t2 == w->start_ticks && cmdline_matches(p, w->argv);
    int64_t now = cr_now_ns();
    char dir[PATHLEN];
    exp_dir(sup, w->exp, dir);
    snprintf(w->log_path, sizeof w->log_path, "%s/logs/%s-%d.log", dir, w->role, w->index);
    w->started_ns = now;
    w->started_wall_ms = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "started_wall_ms"));
    if (same) {
        w->pid = p;
        w->pidfd = pidfd;
        w->adopted = 1;
        int stopping = strcmp(state->valuestring, "stopping") == 0;
        w->state = stopping ? AGENT_WORKER_STOPPING : AGENT_WORKER_RUNNING;
        if (stopping) { /* finish the stop the previous agent began */
            kill_group(p, SIGTERM);
            w->kill_at_ns = now + sup->stop_grace_ms * CR_NS_PER_MS;
        }
        snprintf(w->message, sizeof w->message, "adopted (pid %d still running)", (int)p);
        log_note(w, "agent restarted; adopted pid %d", (int)p);
    } else {
        if (pidfd >= 0) close(pidfd);
        if (strcmp(state->valuestring, "stopping") == 0) {
            w->state = AGENT_WORKER_STOPPED;
            snprintf(w->message, sizeof w->message, "ended while the agent was down");
        } else {
            /* It died while no agent watched it: restart it now, like a crash. */
            w->state = AGENT_WORKER_BACKOFF;
            w->restart_at_ns = now;
            snprintf(w->message, sizeof w->message,
                     "pid %d ended while the agent was down; restarting", (int)p);
        }
    }
    if (insert(sup, w) != 0) {
        worker_free(w);
        return;
    }
    emit(sup, w, w->state);
}

static void load_registry(agent_sup_t *sup)
{
    char *text;
    cr_err_t err = {0};
    int rc = cr_read_file(sup->registry, REGISTRY_MAX, &text, NULL, &err);
    if (rc == CR_ENOENT) return;
    if (rc != 0) {
        CR_ERROR("supervisor", "cannot read the worker registry: %s", err.msg);
        return;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    const cJSON *arr = cJSON_GetObjectItem(root, "workers");
    const cJSON *ver = cJSON_GetObjectItem(root, "version");
    if (!root || !cJSON_IsArray(arr) || !cJSON_IsNumber(ver) || ver->valueint != 1) {
        CR_ERROR("supervisor", "%s is not a worker registry (version 1); its workers cannot be "
                 "verified and are not adopted", sup->registry);
        cJSON_Delete(root);
        return;
    }
    const cJSON *o;
    cJSON_ArrayForEach(o, arr) adopt_entry(sup, o);
    cJSON_Delete(root);
}

int agent_sup_create(const agent_sup_config_t *cfg, agent_sup_t **out, cr_err_t *err)
{
    *out = NULL;
    if (!cfg || !cfg->state_dir || !*cfg->state_dir)
        return cr_err_set(err, CR_EINVAL, "supervisor: state_dir is required");
    if (strlen(cfg->state_dir) > PATHLEN - 512)
        return cr_err_set(err, CR_EINVAL, "supervisor: state_dir is too long");
    agent_sup_t *sup = calloc(1, sizeof *sup);
    if (!sup) return cr_err_set(err, CR_ENOMEM, "supervisor");
    snprintf(sup->state_dir, sizeof sup->state_dir, "%s", cfg->state_dir);
    if (cfg->registry_path)
        snprintf(sup->registry, sizeof sup->registry, "%s", cfg->registry_path);
    else
        snprintf(sup->registry, sizeof sup->registry, "%s/agent/workers.json", cfg->state_dir);
    sup->backoff_initial_ms = cfg->backoff_initial_ms > 0 ? cfg->backoff_initial_ms : 500;
    sup->backoff_max_ms = cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms : 30000;
    sup->fast_run_ms = cfg->fast_run_ms > 0 ? cfg->fast_run_ms : 10000;
    sup->max_fast_crashes = cfg->max_fast_crashes > 0 ? cfg->max_fast_crashes : 5;
    sup->stop_grace_ms = cfg->stop_grace_ms > 0 ? cfg->stop_grace_ms : 5000;
    sup->on_event = cfg->on_event;
    sup->ud = cfg->ud;
    char dir[PATHLEN];
    snprintf(dir, sizeof dir, "%s", sup->registry);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        int rc = cr_mkdir_p(dir, 0755, err);
        if (rc != 0) {
            free(sup);
            return rc;
        }
    }
    load_registry(sup);
    save_registry(sup);
    *out = sup;
    return 0;
}

void agent_sup_destroy(agent_sup_t *sup)
{
    if (!sup) return;
    for (size_t i = 0; i < sup->n; i++) worker_free(sup->w[i]);
    free(sup->w);
    free(sup);
}

int agent_sup_start(agent_sup_t *sup, const agent_worker_spec_t *spec, cr_err_t *err)
{
    if (!spec->experiment || !cr_name_valid(spec->experiment))
        return cr_err_set(err, CR_EINVAL, "bad experiment name '%s'",
                          spec->experiment ? spec->experiment : "(null)");
    if (!spec->role || !cr_name_valid(spec->role))
        return cr_err_set(err, CR_EINVAL, "bad worker role '%s'", spec->role ? spec->role : "(null)");
    if (spec->index < 0) return cr_err_set(err, CR_EINVAL, "worker index %d is negative", spec->index);
    if (!spec->argv || !spec->argv[0] || !*spec->argv[0])
        return cr_err_set(err, CR_EINVAL, "worker %s-%d has no command", spec->role, spec->index);
    long at = find(sup, spec->experiment, spec->role, spec->index);
    if (at >= 0 && is_live(sup->w[at]->state))
        return cr_err_set(err, CR_EEXIST, "worker %s/%s-%d is already %s (pid %d)", spec->experiment,
                          spec->role, spec->index, agent_worker_state_name(sup->w[at]->state),
                          (int)sup->w[at]->pid);
    worker_t *w = worker_new(spec->experiment, spec->role, spec->index, spec->argv, spec->env,
                             spec->cwd);
    if (!w) return cr_err_set(err, CR_ENOMEM, "worker");
    w->generation = spec->generation;
    int rc = spawn(sup, w, err);
    if (rc == 0) rc = insert(sup, w) == 0 ? 0 : cr_err_set(err, CR_ENOMEM, "worker table");
    if (rc != 0) {
        if (w->pid > 0) { /* started but cannot be tracked: do not leave it behind */
            kill_group(w->pid, SIGKILL);
            waitpid(w->pid, NULL, 0);
        }
        worker_free(w);
        return rc;
    }
    set_state(sup, w, AGENT_WORKER_RUNNING, "started pid %d", (int)w->pid);
    save_registry(sup);
    return 0;
}

static void begin_stop(agent_sup_t *sup, worker_t *w)
{
    if (w->state == AGENT_WORKER_RUNNING) {
        kill_group(w->pid, SIGTERM);
        w->kill_at_ns = cr_now_ns() + sup->stop_grace_ms * CR_NS_PER_MS;
        set_state(sup, w, AGENT_WORKER_STOPPING, "SIGTERM sent to pid %d", (int)w->pid);
    } else if (w->state == AGENT_WORKER_BACKOFF) {
        w->restart_at_ns = 0;
        set_state(sup, w, AGENT_WORKER_STOPPED, "stopped while waiting to restart");
    }
}

int agent_sup_stop(agent_sup_t *sup, const char *experiment, const char *role, int index,
                   cr_err_t *err)
{
    long at = find(sup, experiment, role, index);
    if (at < 0) return cr_err_set(err, CR_ENOENT, "no worker %s/%s-%d on this node", experiment, role, index);
    begin_stop(sup, sup->w[at]);
    save_registry(sup);
    return 0;
}

int agent_sup_stop_experiment(agent_sup_t *sup, const char *experiment, cr_err_t *err)
{
    (void)err;
    for (size_t i = 0; i < sup->n; i++)
        if (!experiment || strcmp(sup->w[i]->exp, experiment) == 0) begin_stop(sup, sup->w[i]);
    save_registry(sup);
    return 0;
}

int agent_sup_poll(agent_sup_t *sup)
{
    int changes = 0, dirty = 0;
    int64_t now = cr_now_ns();
    for (size_t i = 0; i < sup->n; i++) {
        worker_t *w = sup->w[i];
        int code, sig;
        if ((w->state == AGENT_WORKER_RUNNING || w->state == AGENT_WORKER_STOPPING) &&
            has_ended(w, &code, &sig)) {
            on_exit_of(sup, w, code, sig);
            changes++;
            dirty = 1;
        }
        if (w->state == AGENT_WORKER_STOPPING && w->kill_at_ns && now >= w->kill_at_ns) {
            CR_WARN("supervisor", "%s/%s-%d: pid %d ignored SIGTERM for %" PRId64 " ms; SIGKILL",
                    w->exp, w->role, w->index, (int)w->pid, sup->stop_grace_ms);
            kill_group(w->pid, SIGKILL);
            w->kill_at_ns = 0;
        }
        if (w->state == AGENT_WORKER_BACKOFF && now >= w->restart_at_ns) {
            cr_err_t err = {0};
            w->restarts++;
            if (spawn(sup, w, &err) == 0)
                set_state(sup, w, AGENT_WORKER_RUNNING, "restarted as pid %d (restart %u)",
                          (int)w->pid, w->restarts);
            else
                set_state(sup, w, AGENT_WORKER_FAILED, "%s", err.msg);
            changes++;
            dirty = 1;
        }
    }
    if (dirty) save_registry(sup);
    return changes;
}

int64_t agent_sup_next_wakeup_ns(const agent_sup_t *sup)
{
    int64_t next = 0;
    for (size_t i = 0; i < sup->n; i++) {
        const worker_t *w = sup->w[i];
        int64_t t = w->state == AGENT_WORKER_BACKOFF ? w->restart_at_ns
                  : w->state == AGENT_WORKER_STOPPING ? w->kill_at_ns : 0;
        if (t && (!next || t < next)) next = t;
    }
    return next;
}

int agent_sup_stop_all(agent_sup_t *sup, int64_t timeout_ms, cr_err_t *err)
{
    agent_sup_stop_experiment(sup, NULL, err);
    int64_t deadline = cr_now_ns() + timeout_ms * CR_NS_PER_MS;
    for (;;) {
        agent_sup_poll(sup);
        size_t live = 0;
        for (size_t i = 0; i < sup->n; i++) live += is_live(sup->w[i]->state);
        if (!live) return 0;
        if (cr_now_ns() >= deadline)
            return cr_err_set(err, CR_ETIMEDOUT, "%zu workers still running after %" PRId64 " ms",
                              live, timeout_ms);
        cr_sleep_ns(5 * CR_NS_PER_MS);
    }
}

size_t agent_sup_list(const agent_sup_t *sup, agent_worker_info_t *out, size_t cap)
{
    for (size_t i = 0; i < sup->n && i < cap; i++) snapshot(sup->w[i], &out[i]);
    return sup->n;
}

int agent_sup_get(const agent_sup_t *sup, const char *experiment, const char *role, int index,
                  agent_worker_info_t *out)
{
    long at = find(sup, experiment, role, index);
    if (at < 0) return CR_ENOENT;
    snapshot(sup->w[at], out);
    return 0;
}

int agent_sup_forget(agent_sup_t *sup, const char *experiment, const char *role, int index,
                     cr_err_t *err)
{
    long at = find(sup, experiment, role, index);
    if (at < 0) return cr_err_set(err, CR_ENOENT, "no worker %s/%s-%d", experiment, role, index);
    if (is_live(sup->w[at]->state))
        return cr_err_set(err, CR_EBUSY, "worker %s/%s-%d is %s; stop it first", experiment, role,
                          index, agent_worker_state_name(sup->w[at]->state));
    worker_free(sup->w[at]);
    memmove(&sup->w[at], &sup->w[at + 1], (sup->n - (size_t)at - 1) * sizeof *sup->w);
    sup->n--;
    return 0;
}
