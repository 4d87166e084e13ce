/* registry.c - nodes, robots and GPUs in state.db: validation, transactions, states.
 *
 * Every public function takes the registry mutex, validates its input before
 * touching the database, and makes all of its changes inside one BEGIN IMMEDIATE
 * transaction that it commits or rolls back as a whole: a refused call leaves the
 * registry unchanged.
 *
 * State machine. States are derived from facts stored beside them and recomputed
 * (refresh_node / refresh_robot) by every function that changes a fact, so the
 * stored state column can never disagree with the facts.
 *
 *   Node facts: live (its agent holds a session; set by ctl_reg_node_up, cleared by
 *   ctl_reg_node_lost) and drain (ctl_reg_node_drain). Stored as state:
 *       ready     live, not drain
 *       draining  live, drain
 *       lost      not live (drain is kept and applies again when it returns)
 *     transitions: (new) -node_up-> ready|draining;  ready|draining -node_lost-> lost;
 *     lost -node_up-> ready|draining;  ready <-drain/undo-> draining.
 *
 *   Robot facts: node (NULL until registered with --node or reported by an agent),
 *   estopped (latched by ctl_reg_robot_estop), experiment (set and cleared by the
 *   scheduler through ctl_reg_robot_claim / _release; only an available robot can
 *   be claimed),
 *   registered (by the CLI), reported (by its node's agent). State, first match:
 *       estopped   the e-stop is latched (it wins, even over lost: safety first)
 *       lost       no node, or the node is lost
 *       in-use     experiment is set
 *       draining   the node is draining
 *       available  otherwise
 *   GPUs follow the same rules without the e-stop.
 *
 * A robot the CLI registered and the agent reports is one record: the second
 * source sets its flag and may fill fields the first left empty; a field both give
 * with different values (driver, model, port, a setting, or the node) is a
 * contradiction, refused with CR_EBUSY and a message naming both values. A robot
 * only an agent reported disappears when a later inventory of that node omits it;
 * a registered one stays. Probed and registered GPUs behave the same way. */
#include "controller/registry.h"
#include "controller/schema.h"
#include "common/id.h"
#include "common/log.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_TEXT 255       /* model, port, address, uuid, setting values */
#define MAX_SETTINGS 64
#define MAX_LABELS 16      /* per robot, as many as an experiment may ask for */
#define MAX_INV_ROBOTS 4096
#define MAX_INV_GPUS 256
#define MAX_GPU_INDEX 4095

struct ctl_registry {
    sqlite3 *db;
    pthread_mutex_t mu;
    char path[4096];
};

static const char *const drivers[] = {"mujoco", "dynamixel", "remote", "mock"};

int ctl_driver_known(const char *driver)
{
    for (size_t i = 0; driver && i < sizeof drivers / sizeof drivers[0]; i++)
        if (strcmp(driver, drivers[i]) == 0) return 1;
    return 0;
}

const char *ctl_driver_names(void) { return "mujoco, dynamixel, remote, mock"; }

/* ---- small helpers ---------------------------------------------------- */

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) {
        CR_ERROR("registry", "out of memory");
        abort();
    }
    return d;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        CR_ERROR("registry", "out of memory");
        abort();
    }
    return p;
}

static const char *nz(const char *s) { return s ? s : ""; }

#define SQLFAIL(reg, err, what) sqlfail((reg), (err), (what), __FILE__, __LINE__)
static int sqlfail(ctl_registry_t *reg, cr_err_t *err, const char *what, const char *file, int line)
{
    CR_ERROR("registry", "%s:%d: %s: %s", file, line, what, sqlite3_errmsg(reg->db));
    return cr_err_set(err, CR_EIO, "state.db: %s: %s", what, sqlite3_errmsg(reg->db));
}

static int prep(ctl_registry_t *reg, const char *sql, sqlite3_stmt **st, cr_err_t *err)
{
    if (sqlite3_prepare_v2(reg->db, sql, -1, st, NULL) != SQLITE_OK)
        return SQLFAIL(reg, err, "prepare");
    return 0;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, nz(s), -1, SQLITE_TRANSIENT);
}

/* Runs a statement that returns no rows; the caller binds first. Finalizes st.
 * A failure is logged with the caller's file and line. */
#define run(reg, st, err) run_at((reg), (st), (err), __FILE__, __LINE__)
static int run_at(ctl_registry_t *reg, sqlite3_stmt *st, cr_err_t *err, const char *file, int line)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) rc = sqlfail(reg, err, "write", file, line);
    else rc = 0;
    sqlite3_finalize(st);
    return rc;
}

static int exec(ctl_registry_t *reg, const char *sql, cr_err_t *err)
{
    if (sqlite3_exec(reg->db, sql, NULL, NULL, NULL) != SQLITE_OK) return SQLFAIL(reg, err, sql);
    return 0;
}

static int begin(ctl_registry_t *reg, cr_err_t *err) { return exec(reg, "BEGIN IMMEDIATE", err); }

/* Commits when rc is 0, else rolls back; returns rc (or the commit's error). */
static int finish(ctl_registry_t *reg, int rc, cr_err_t *err)
{
    if (rc == 0) {
        rc = exec(reg, "COMMIT", err);
        if (rc == 0) return 0;
    }
    sqlite3_exec(reg->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static void event(ctl_registry_t *reg, int64_t now_ms, const char *kind, const char *subject,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void event(ctl_registry_t *reg, int64_t now_ms, const char *kind, const char *subject,
                  const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(reg->db,
                           "INSERT INTO events(time_ms, kind, subject, message) VALUES (?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(st, 1, now_ms);
    bind_text(st, 2, kind);
    bind_text(st, 3, subject);
    bind_text(st, 4, msg);
    sqlite3_step(st);  /* the journal is best effort: a full disk fails the change itself */
    sqlite3_finalize(st);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- open / close ---------------------------------------------------- */

int ctl_registry_open(const char *dir, ctl_registry_t **out, cr_err_t *err)
{
    *out = NULL;
    if (!dir || !*dir) return cr_err_set(err, CR_EINVAL, "state directory is empty");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cr_err_set(err, CR_EIO, "cannot create state directory %s: %s", dir, strerror(errno));
    ctl_registry_t *reg = xcalloc(1, sizeof *reg);
    pthread_mutex_init(&reg->mu, NULL);
    if (snprintf(reg->path, sizeof reg->path, "%s/state.db", dir) >= (int)sizeof reg->path) {
        free(reg);
        return cr_err_set(err, CR_EINVAL, "state directory path too long");
    }
    int rc;
    if (sqlite3_open_v2(reg->path, &reg->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        rc = cr_err_set(err, CR_EIO, "cannot open %s: %s", reg->path,
                        reg->db ? sqlite3_errmsg(reg->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(reg->db, 5000);
    /* WAL with synchronous=NORMAL: a commit survives a process crash (kill -9);
     * FULL would add an fsync per commit for the power-loss case. */
    if ((rc = exec(reg, "PRAGMA journal_mode=WAL", err)) ||
        (rc = exec(reg, "PRAGMA synchronous=NORMAL", err)) ||
        (rc = exec(reg, "PRAGMA foreign_keys=ON", err)))
        goto fail;
    if ((rc = ctl_schema_migrate(reg->db, err))) {
        cr_err_wrap(err, "%s", reg->path);
        goto fail;
    }
    *out = reg;
    return 0;
fail:
    sqlite3_close(reg->db);
    pthread_mutex_destroy(&reg->mu);
    free(reg);
    return rc;
}

void ctl_registry_close(ctl_registry_t *reg)
{
    if (!reg) return;
    sqlite3_close(reg->db);
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

int ctl_registry_schema_version(ctl_registry_t *reg)
{
    int v = -1;
    pthread_mutex_lock(&reg->mu);
    ctl_schema_version(reg->db, &v, NULL);
    pthread_mutex_unlock(&reg->mu);
    return v;
}

const char *ctl_registry_path(const ctl_registry_t *reg) { return reg->path; }

int ctl_registry_with_db(ctl_registry_t *reg, int (*fn)(void *arg, sqlite3 *db, cr_err_t *err), void *arg,
                         cr_err_t *err)
{
    pthread_mutex_lock(&reg->mu);
    int rc = fn(arg, reg->db, err);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

/* ---- state names ------------------------------------------------------- */

const char *ctl_node_state_name(Corral__V1__NodeState s)
{
    switch (s) {
    case CORRAL__V1__NODE_STATE__NODE_READY: return "ready";
    case CORRAL__V1__NODE_STATE__NODE_LOST: return "lost";
    case CORRAL__V1__NODE_STATE__NODE_DRAINING: return "draining";
    default: return "unknown";
    }
}

const char *ctl_resource_state_name(Corral__V1__ResourceState s)
{
    switch (s) {
    case CORRAL__V1__RESOURCE_STATE__RESOURCE_AVAILABLE: return "available";
    case CORRAL__V1__RESOURCE_STATE__RESOURCE_IN_USE: return "in-use";
    case CORRAL__V1__RESOURCE_STATE__RESOURCE_LOST: return "lost";
    case CORRAL__V1__RESOURCE_STATE__RESOURCE_ESTOPPED: return "estopped";
    case CORRAL__V1__RESOURCE_STATE__RESOURCE_DRAINING: return "draining";
    default: return "unknown";
    }
}

static Corral__V1__NodeState node_state_parse(const char *s)
{
    if (strcmp(s, "ready") == 0) return CORRAL__V1__NODE_STATE__NODE_READY;
    if (strcmp(s, "lost") == 0) return CORRAL__V1__NODE_STATE__NODE_LOST;
    if (strcmp(s, "draining") == 0) return CORRAL__V1__NODE_STATE__NODE_DRAINING;
    return CORRAL__V1__NODE_STATE__NODE_STATE_UNSPECIFIED;
}

static Corral__V1__ResourceState res_state_parse(const char *s)
{
    for (int v = 1; v <= 5; v++)
        if (strcmp(s, ctl_resource_state_name((Corral__V1__ResourceState)v)) == 0)
            return (Corral__V1__ResourceState)v;
    return CORRAL__V1__RESOURCE_STATE__RESOURCE_STATE_UNSPECIFIED;
}

/* ---- derived states ---------------------------------------------------- */

/* Recomputes the state of every robot and GPU on node (see the state machine). */
static int refresh_node(ctl_registry_t *reg, const char *node, cr_err_t *err)
{
    static const char robots_sql[] =
        "UPDATE robots SET state = CASE"
        " WHEN estopped THEN 'estopped'"
        " WHEN IFNULL((SELECT state FROM nodes n WHERE n.name = robots.node), 'lost') = 'lost' THEN 'lost'"
        " WHEN experiment IS NOT NULL THEN 'in-use'"
        " WHEN (SELECT state FROM nodes n WHERE n.name = robots.node) = 'draining' THEN 'draining'"
        " ELSE 'available' END WHERE node = ?1";
    static const char gpus_sql[] =
        "UPDATE gpus SET state = CASE"
        " WHEN IFNULL((SELECT state FROM nodes n WHERE n.name = gpus.node), 'lost') = 'lost' THEN 'lost'"
        " WHEN experiment IS NOT NULL THEN 'in-use'"
        " WHEN (SELECT state FROM nodes n WHERE n.name = gpus.node) = 'draining' THEN 'draining'"
        " ELSE 'available' END WHERE node = ?1";
    sqlite3_stmt *st;
    int rc;
    if ((rc = prep(reg, robots_sql, &st, err))) return rc;
    bind_text(st, 1, node);
    if ((rc = run(reg, st, err))) return rc;
    if ((rc = prep(reg, gpus_sql, &st, err))) return rc;
    bind_text(st, 1, node);
    return run(reg, st, err);
}

static int refresh_robot(ctl_registry_t *reg, const char *name, cr_err_t *err)
{
    static const char sql[] =
        "UPDATE robots SET state = CASE"
        " WHEN estopped THEN 'estopped'"
        " WHEN node IS NULL OR IFNULL((SELECT state FROM nodes n WHERE n.name = robots.node), 'lost') = 'lost' THEN 'lost'"
        " WHEN experiment IS NOT NULL THEN 'in-use'"
        " WHEN (SELECT state FROM nodes n WHERE n.name = robots.node) = 'draining' THEN 'draining'"
        " ELSE 'available' END WHERE name = ?1";
    sqlite3_stmt *st;
    int rc = prep(reg, sql, &st, err);
    if (rc) return rc;
    bind_text(st, 1, name);
    return run(reg, st, err);
}

/* ---- validation ---------------------------------------------------------- */

static int check_text(const char *what, const char *owner, const char *s, cr_err_t *err)
{
    if (s && strlen(s) > MAX_TEXT)
        return cr_err_set(err, CR_EINVAL, "%s of %s is longer than %d characters", what, owner, MAX_TEXT);
    for (const unsigned char *p = (const unsigned char *)nz(s); *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return cr_err_set(err, CR_EINVAL, "%s of %s contains a control character", what, owner);
    return 0;
}

static int check_name(const char *kind, const char *name, cr_err_t *err)
{
    if (!name || !*name) return cr_err_set(err, CR_EINVAL, "%s name is empty", kind);
    if (!cr_name_valid(name))
        return cr_err_set(err, CR_EINVAL,
                          "invalid %s name '%.80s': use a-z, 0-9, '_' and '-', start with a letter "
                          "or digit, at most 63 characters", kind, name);
    return 0;
}

static int check_settings(const char *robot, Corral__V1__Setting *const *s, size_t n, cr_err_t *err)
{
    if (n > MAX_SETTINGS)
        return cr_err_set(err, CR_EINVAL, "robot %s has %zu settings, at most %d allowed", robot, n, MAX_SETTINGS);
    for (size_t i = 0; i < n; i++) {
        if (!s[i]->key || !cr_name_valid(s[i]->key))
            return cr_err_set(err, CR_EINVAL, "robot %s: invalid setting key '%.80s' (a-z, 0-9, '_', '-')",
                              robot, nz(s[i]->key));
        int rc = check_text("setting value", robot, s[i]->value, err);
        if (rc) return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(s[i]->key, s[j]->key) == 0)
                return cr_err_set(err, CR_EINVAL, "robot %s: setting '%s' given twice", robot, s[i]->key);
    }
    return 0;
}

/* A label is "key=value" or a tag: 1-63 printable characters without spaces,
 * quotes or commas, so it reads the same in YAML, on a command line and in JSON. */
static int check_labels(const char *robot, char *const *labels, size_t n, cr_err_t *err)
{
    if (n > MAX_LABELS)
        return cr_err_set(err, CR_EINVAL, "robot %s has %zu labels, at most %d allowed", robot, n, MAX_LABELS);
    for (size_t i = 0; i < n; i++) {
        const char *l = nz(labels[i]);
        size_t len = strlen(l);
        int ok = len > 0 && len < 64;
        for (const unsigned char *p = (const unsigned char *)l; ok && *p; p++)
            ok = *p > ' ' && *p < 0x7f && *p != ',' && *p != '"' && *p != '\'' && *p != '\\';
        if (!ok)
            return cr_err_set(err, CR_EINVAL, "robot %s: label '%.80s' is not a key=value or a tag (1-63 "
                              "printable characters, no spaces, quotes or commas)", robot, l);
        for (size_t j = 0; j < i; j++)
            if (strcmp(l, labels[j]) == 0)
                return cr_err_set(err, CR_EINVAL, "robot %s: label '%s' given twice", robot, l);
    }
    return 0;
}

static int check_robot_fields(const char *name, const char *driver, const char *model,
                              const char *port, Corral__V1__Setting *const *s, size_t ns,
                              cr_err_t *err)
{
    int rc;
    if ((rc = check_name("robot", name, err))) return rc;
    if (!driver || !*driver)
        return cr_err_set(err, CR_EINVAL, "robot %s has no driver (one of %s)", name, ctl_driver_names());
    if (!ctl_driver_known(driver))
        return cr_err_set(err, CR_EINVAL, "robot %s: unknown driver '%.64s' (known: %s)", name, driver,
                          ctl_driver_names());
    if ((rc = check_text("model", name, model, err)) || (rc = check_text("port", name, port, err)))
        return rc;
    return check_settings(name, s, ns, err);
}

/* ---- rows -> messages ------------------------------------------------------ */

static const char robot_cols[] =
    "SELECT name, driver, node, model, port, settings, state, experiment, registered, reported, "
    "estopped, labels FROM robots";

static void labels_from_json(Corral__V1__Robot *r, const char *json)
{
    cJSON *arr = cJSON_Parse(nz(json));
    size_t n = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, arr) n++;
    r->labels = xcalloc(n, sizeof *r->labels);
    cJSON_ArrayForEach(it, arr)
        if (cJSON_IsString(it)) r->labels[r->n_labels++] = xstrdup(it->valuestring);
    cJSON_Delete(arr);
}

static void settings_from_json(Corral__V1__Robot *r, const char *json)
{
    cJSON *obj = cJSON_Parse(nz(json));
    size_t n = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, obj) n++;
    r->settings = xcalloc(n, sizeof *r->settings);
    cJSON_ArrayForEach(it, obj) {
        if (!cJSON_IsString(it)) continue;
        Corral__V1__Setting *s = xcalloc(1, sizeof *s);
        corral__v1__setting__init(s);
        s->key = xstrdup(it->string);
        s->value = xstrdup(it->valuestring);
        r->settings[r->n_settings++] = s;
    }
    cJSON_Delete(obj);
}

static Corral__V1__Robot *robot_from_row(sqlite3_stmt *st)
{
    Corral__V1__Robot *r = xcalloc(1, sizeof *r);
    corral__v1__robot__init(r);
    r->name = xstrdup((const char *)sqlite3_column_text(st, 0));
    r->driver = xstrdup((const char *)sqlite3_column_text(st, 1));
    r->node = xstrdup((const char *)sqlite3_column_text(st, 2));
    r->model = xstrdup((const char *)sqlite3_column_text(st, 3));
    r->port = xstrdup((const char *)sqlite3_column_text(st, 4));
    settings_from_json(r, (const char *)sqlite3_column_text(st, 5));
    r->state = res_state_parse(nz((const char *)sqlite3_column_text(st, 6)));
    r->experiment = xstrdup((const char *)sqlite3_column_text(st, 7));
    r->registered = sqlite3_column_int(st, 8);
    r->reported = sqlite3_column_int(st, 9);
    r->estopped = sqlite3_column_int(st, 10);
    labels_from_json(r, (const char *)sqlite3_column_text(st, 11));
    return r;
}

static const char gpu_cols[] =
    "SELECT node, idx, model, memory_bytes, state, experiment, registered, probed, uuid FROM gpus";

static Corral__V1__Gpu *gpu_from_row(sqlite3_stmt *st)
{
    Corral__V1__Gpu *g = xcalloc(1, sizeof *g);
    corral__v1__gpu__init(g);
    g->node = xstrdup((const char *)sqlite3_column_text(st, 0));
    g->index = (uint32_t)sqlite3_column_int(st, 1);
    g->model = xstrdup((const char *)sqlite3_column_text(st, 2));
    g->memory_bytes = (uint64_t)sqlite3_column_int64(st, 3);
    g->state = res_state_parse(nz((const char *)sqlite3_column_text(st, 4)));
    g->experiment = xstrdup((const char *)sqlite3_column_text(st, 5));
    g->registered = sqlite3_column_int(st, 6);
    g->probed = sqlite3_column_int(st, 7);
    g->uuid = xstrdup((const char *)sqlite3_column_text(st, 8));
    return g;
}

static const char node_cols[] =
    "SELECT name, state, address, accepts_inbound, cores, memory_bytes, agent_version, "
    "last_seen_ms, drain, (SELECT count(*) FROM robots r WHERE r.node = nodes.name), "
    "(SELECT count(*) FROM gpus g WHERE g.node = nodes.name) FROM nodes";

static Corral__V1__Node *node_from_row(sqlite3_stmt *st)
{
    Corral__V1__Node *n = xcalloc(1, sizeof *n);
    corral__v1__node__init(n);
    n->name = xstrdup((const char *)sqlite3_column_text(st, 0));
    n->state = node_state_parse(nz((const char *)sqlite3_column_text(st, 1)));
    n->address = xstrdup((const char *)sqlite3_column_text(st, 2));
    n->accepts_inbound = sqlite3_column_int(st, 3);
    n->cores = (uint32_t)sqlite3_column_int(st, 4);
    n->memory_bytes = (uint64_t)sqlite3_column_int64(st, 5);
    n->agent_version = xstrdup((const char *)sqlite3_column_text(st, 6));
    n->last_seen_unix_ms = sqlite3_column_int64(st, 7);
    n->drain = sqlite3_column_int(st, 8);
    n->robot_count = (uint32_t)sqlite3_column_int(st, 9);
    n->gpu_count = (uint32_t)sqlite3_column_int(st, 10);
    return n;
}

/* Fetches one row of `cols WHERE where` with one text parameter; CR_ENOENT when
 * absent (message "unknown <kind> '<key>'"). */
static int get_one(ctl_registry_t *reg, const char *cols, const char *where, const char *key,
                   const char *kind, void *(*conv)(sqlite3_stmt *), void **out, cr_err_t *err)
{
    char sql[1024];
    snprintf(sql, sizeof sql, "%s WHERE %s", cols, where);
    sqlite3_stmt *st;
    int rc = prep(reg, sql, &st, err);
    if (rc) return rc;
    bind_text(st, 1, key);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = conv(st);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = cr_err_set(err, CR_ENOENT, "unknown %s '%.80s'", kind, key);
    } else {
        rc = SQLFAIL(reg, err, "read");
    }
    sqlite3_finalize(st);
    return rc;
}

static void *robot_conv(sqlite3_stmt *st) { return robot_from_row(st); }
static void *node_conv(sqlite3_stmt *st) { return node_from_row(st); }
static void *gpu_conv(sqlite3_stmt *st) { return gpu_from_row(st); }

/* Runs sql (bound to node as ?1 when node is not NULL) and appends each row, as
 * conv makes it, to the growing array *items of *n entries, which the caller's
 * list message owns (and frees on failure). */
static int list_rows(ctl_registry_t *reg, const char *sql, const char *node,
                     void *(*conv)(sqlite3_stmt *), void ***items, size_t *n, const char *what,
                     cr_err_t *err)
{
    size_t cap = 0;
    sqlite3_stmt *st;
    pthread_mutex_lock(&reg->mu);
    int rc = prep(reg, sql, &st, err);
    if (!rc) {
        if (node) bind_text(st, 1, node);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 64;
                *items = realloc(*items, cap * sizeof **items);
                if (!*items) abort();
            }
            (*items)[(*n)++] = conv(st);
        }
        rc = rc == SQLITE_DONE ? 0 : SQLFAIL(reg, err, what);
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

static int robot_get(ctl_registry_t *reg, const char *name, Corral__V1__Robot **out, cr_err_t *err)
{
    return get_one(reg, robot_cols, "name = ?1", name, "robot", robot_conv, (void **)out, err);
}

static int node_get(ctl_registry_t *reg, const char *name, Corral__V1__Node **out, cr_err_t *err)
{
    return get_one(reg, node_cols, "name = ?1", name, "node", node_conv, (void **)out, err);
}

static void robot_free(Corral__V1__Robot *r)
{
    if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* ---- merging two descriptions of one robot --------------------------------- */

static const char *setting_find(Corral__V1__Setting *const *s, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i]->key, key) == 0) return nz(s[i]->value);
    return NULL;
}

/* Whether the description (driver, model, port, settings) from `who` agrees with
 * the stored robot `have`: fields both give must be equal. */
static int robot_agrees(const Corral__V1__Robot *have, const char *who, const char *driver,
                        const char *model, const char *port, Corral__V1__Setting *const *s,
                        size_t ns, cr_err_t *err)
{
    const char *what = NULL, *a = NULL, *b = NULL;
    if (strcmp(have->driver, driver) != 0) what = "driver", a = have->driver, b = driver;
    else if (*have->model && *nz(model) && strcmp(have->model, model) != 0)
        what = "model", a = have->model, b = model;
    else if (*have->port && *nz(port) && strcmp(have->port, port) != 0)
        what = "port", a = have->port, b = port;
    for (size_t i = 0; !what && i < ns; i++) {
        const char *old = setting_find(have->settings, have->n_settings, s[i]->key);
        if (old && strcmp(old, nz(s[i]->value)) != 0) what = s[i]->key, a = old, b = nz(s[i]->value);
    }
    if (!what) return 0;
    return cr_err_set(err, CR_EBUSY, "robot %s: %s says %s '%.80s' but the registry has '%.80s'",
                      have->name, who, what, b, a);
}

/* JSON object of have's settings updated with s; malloc'd. */
static char *settings_merge(const Corral__V1__Robot *have, Corral__V1__Setting *const *s, size_t ns)
{
    cJSON *obj = cJSON_CreateObject();
    for (size_t i = 0; have && i < have->n_settings; i++)
        cJSON_AddStringToObject(obj, have->settings[i]->key, nz(have->settings[i]->value));
    for (size_t i = 0; i < ns; i++)
        if (!cJSON_GetObjectItemCaseSensitive(obj, s[i]->key))
            cJSON_AddStringToObject(obj, s[i]->key, nz(s[i]->value));
    char *json = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    if (!json) {
        CR_ERROR("registry", "out of memory");
        abort();
    }
    return json;
}

/* JSON array of have's labels plus those of l not yet there; malloc'd. Labels
 * only accumulate: the agent's configuration and registrations add to them. */
static char *labels_merge(const Corral__V1__Robot *have, char *const *l, size_t n)
{
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; have && i < have->n_labels; i++) cJSON_AddItemToArray(arr, cJSON_CreateString(have->labels[i]));
    for (size_t i = 0; i < n; i++) {
        int seen = 0;
        cJSON *it;
        cJSON_ArrayForEach(it, arr) seen |= strcmp(it->valuestring, nz(l[i])) == 0;
        if (!seen) cJSON_AddItemToArray(arr, cJSON_CreateString(nz(l[i])));
    }
    char *json = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    if (!json) {
        CR_ERROR("registry", "out of memory");
        abort();
    }
    return json;
}

static int node_exists(ctl_registry_t *reg, const char *name, char state[16], cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(reg, "SELECT state FROM nodes WHERE name = ?1", &st, err);
    if (rc) return rc;
    bind_text(st, 1, name);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (state) snprintf(state, 16, "%s", (const char *)sqlite3_column_text(st, 0));
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = cr_err_set(err, CR_ENOENT,
                        "unknown node '%.80s' (a node appears when its agent first connects; "
                        "see corral node list)", name);
    } else {
        rc = SQLFAIL(reg, err, "read node");
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---- robots ----------------------------------------------------------------- */

static int robot_register_locked(ctl_registry_t *reg, const Corral__V1__RegisterRobotRequest *req,
                                 cr_err_t *err)
{
    int rc;
    const char *node = nz(req->node);
    if (*node && (rc = node_exists(reg, node, NULL, err))) return rc;
    Corral__V1__Robot *have = NULL;
    cr_err_t e2 = {0};
    rc = robot_get(reg, req->name, &have, &e2);
    if (rc && rc != CR_ENOENT) return cr_err_set(err, rc, "%s", e2.msg);
    sqlite3_stmt *st;
    int64_t now = wall_ms();
    if (have) {
        if (have->registered) {
            rc = cr_err_set(err, CR_EEXIST, "robot '%s' already exists (driver %s, node %s)", have->name,
                            have->driver, *have->node ? have->node : "none");
        } else if (*node && *have->node && strcmp(node, have->node) != 0) {
            rc = cr_err_set(err, CR_EBUSY, "robot %s is reported by the agent of node %s, not %s",
                            have->name, have->node, node);
        } else if (!(rc = robot_agrees(have, "the request", req->driver, req->model, req->port,
                                       req->settings, req->n_settings, err))) {
            char *json = settings_merge(have, req->settings, req->n_settings);
            char *labels = labels_merge(have, req->labels, req->n_labels);
            if (!(rc = prep(reg,
                            "UPDATE robots SET registered = 1,"
                            " model = CASE WHEN model = '' THEN ?2 ELSE model END,"
                            " port = CASE WHEN port = '' THEN ?3 ELSE port END,"
                            " settings = ?4, node = IFNULL(node, NULLIF(?5, '')), labels = ?6 WHERE name = ?1",
                            &st, err))) {
                bind_text(st, 1, req->name);
                bind_text(st, 2, req->model);
                bind_text(st, 3, req->port);
                bind_text(st, 4, json);
                bind_text(st, 5, node);
                bind_text(st, 6, labels);
                rc = run(reg, st, err);
            }
            cJSON_free(json);
            cJSON_free(labels);
        }
        robot_free(have);
        if (rc) return rc;
    } else {
        char *json = settings_merge(NULL, req->settings, req->n_settings);
        char *labels = labels_merge(NULL, req->labels, req->n_labels);
        if (!(rc = prep(reg,
                        "INSERT INTO robots(name, driver, node, model, port, settings, state, "
                        "registered, created_ms, labels) VALUES (?1, ?2, NULLIF(?3, ''), ?4, ?5, ?6, 'lost', 1, ?7, ?8)",
                        &st, err))) {
            bind_text(st, 1, req->name);
            bind_text(st, 2, req->driver);
            bind_text(st, 3, node);
            bind_text(st, 4, req->model);
            bind_text(st, 5, req->port);
            bind_text(st, 6, json);
            sqlite3_bind_int64(st, 7, now);
            bind_text(st, 8, labels);
            rc = run(reg, st, err);
        }
        cJSON_free(json);
        cJSON_free(labels);
        if (rc) return rc;
    }
    if ((rc = refresh_robot(reg, req->name, err))) return rc;
    event(reg, now, "robot.registered", req->name, "driver %s node %s", req->driver, *node ? node : "-");
    return 0;
}

int ctl_reg_robot_register(ctl_registry_t *reg, const Corral__V1__RegisterRobotRequest *req,
                           Corral__V1__Robot **out, cr_err_t *err)
{
    *out = NULL;
    int rc = check_robot_fields(req->name, req->driver, req->model, req->port, req->settings,
                                req->n_settings, err);
    if (!rc) rc = check_labels(req->name, req->labels, req->n_labels, err);
    if (rc) return rc;
    if (*nz(req->node) && (rc = check_name("node", req->node, err))) return rc;
    pthread_mutex_lock(&reg->mu);
    if (!(rc = begin(reg, err))) {
        rc = finish(reg, robot_register_locked(reg, req, err), err);
        if (rc == 0) rc = robot_get(reg, req->name, out, err);
    }
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

int ctl_reg_robot_list(ctl_registry_t *reg, const char *node, Corral__V1__ListRobotsResponse **out,
                       cr_err_t *err)
{
    *out = NULL;
    char sql[512];
    int filter = node && *node;
    snprintf(sql, sizeof sql, "%s%s ORDER BY name", robot_cols, filter ? " WHERE node = ?1" : "");
    Corral__V1__ListRobotsResponse *resp = xcalloc(1, sizeof *resp);
    corral__v1__list_robots_response__init(resp);
    int rc = list_rows(reg, sql, filter ? node : NULL, robot_conv, (void ***)&resp->robots, &resp->n_robots,
                       "list robots", err);
    if (rc) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return rc;
    }
    *out = resp;
    return 0;
}

int ctl_reg_robot_get(ctl_registry_t *reg, const char *name, Corral__V1__Robot **out, cr_err_t *err)
{
    *out = NULL;
    int rc = check_name("robot", name, err);
    if (rc) return rc;
    pthread_mutex_lock(&reg->mu);
    rc = robot_get(reg, name, out, err);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

static int robot_remove_locked(ctl_registry_t *reg, const char *name, cr_err_t *err)
{
    Corral__V1__Robot *r = NULL;
    int rc = robot_get(reg, name, &r, err);
    if (rc) return rc;
    char nstate[16] = "lost";
    if (*r->node) node_exists(reg, r->node, nstate, NULL);
    if (*r->experiment)
        rc = cr_err_set(err, CR_EBUSY, "robot %s is in use by experiment %s; stop it first", name,
                        r->experiment);
    else if (r->reported && strcmp(nstate, "lost") != 0)
        rc = cr_err_set(err, CR_EBUSY,
                        "robot %s is reported by the agent of node %s; remove it from that node's "
                        "configuration first", name, r->node);
    robot_free(r);
    if (rc) return rc;
    sqlite3_stmt *st;
    if ((rc = prep(reg, "DELETE FROM robots WHERE name = ?1", &st, err))) return rc;
    bind_text(st, 1, name);
    if ((rc = run(reg, st, err))) return rc;
    event(reg, wall_ms(), "robot.removed", name, "removed");
    return 0;
}

int ctl_reg_robot_remove(ctl_registry_t *reg, const char *name, cr_err_t *err)
{
    int rc = check_name("robot", name, err);
    if (rc) return rc;
    pthread_mutex_lock(&reg->mu);
    if (!(rc = begin(reg, err))) rc = finish(reg, robot_remove_locked(reg, name, err), err);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

static int robot_estop_locked(ctl_registry_t *reg, const char *name, int release, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(reg, "UPDATE robots SET estopped = ?2 WHERE name = ?1", &st, err);
    if (rc) return rc;
    bind_text(st, 1, name);
    sqlite3_bind_int(st, 2, !release);
    if ((rc = run(reg, st, err))) return rc;
    if (sqlite3_changes(reg->db) == 0) return cr_err_set(err, CR_ENOENT, "unknown robot '%s'", name);
    if ((rc = refresh_robot(reg, name, err))) return rc;
    event(reg, wall_ms(), release ? "robot.estop_released" : "robot.estopped", name, "%s",
          release ? "e-stop released" : "e-stop latched");
    return 0;
}

int ctl_reg_robot_estop(ctl_registry_t *reg, const char *name, int release, Corral__V1__Robot **out,
                        char node_out[64], cr_err_t *err)
{
    *out = NULL;
    if (node_out) node_out[0] = '\0';
    int rc = check_name("robot", name, err);
    if (rc) return rc;
    pthread_mutex_lock(&reg->mu);
    if (!(rc = begin(reg, err))) {
        rc = finish(reg, robot_estop_locked(reg, name, release, err), err);
        if (rc == 0) rc = robot_get(reg, name, out, err);
    }
    pthread_mutex_unlock(&reg->mu);
    if (rc == 0 && node_out) snprintf(node_out, 64, "%s", (*out)->node);
    return rc;
}

/* ---- holds by experiments ------------------------------------------------------- */

/* Claims (experiment != NULL) or releases (experiment == NULL, `holder` the one
 * releasing) the row of `table` matched by `where` (?1, ?2 bound to key1, key2). */
static int hold_locked(ctl_registry_t *reg, const char *table, const char *where, const char *key1,
                       int key2, const char *what, const char *experiment, const char *holder,
                       cr_err_t *err)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT state, IFNULL(experiment, '') FROM %s WHERE %s", table, where);
    sqlite3_stmt *st;
    int rc = prep(reg, sql, &st, err);
    if (rc) return rc;
    bind_text(st, 1, key1);
    sqlite3_bind_int(st, 2, key2);
    rc = sqlite3_step(st);
    char state[16] = "", held[64] = "";
    if (rc == SQLITE_ROW) {
        snprintf(state, sizeof state, "%s", (const char *)sqlite3_column_text(st, 0));
        snprintf(held, sizeof held, "%s", (const char *)sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) return cr_err_set(err, CR_ENOENT, "unknown %s", what);
    if (rc != SQLITE_ROW) return SQLFAIL(reg, err, "read hold");
    if (experiment) {
        if (*held && strcmp(held, experiment) == 0) return 0;
        if (*held) return cr_err_set(err, CR_EBUSY, "%s is in use by experiment %s", what, held);
        if (strcmp(state, "available") != 0) return cr_err_set(err, CR_EBUSY, "%s is %s", what, state);
    } else {
        if (!*held) return 0;
        if (strcmp(held, holder) != 0)
            return cr_err_set(err, CR_EBUSY, "%s is held by experiment %s, not %s", what, held, holder);
    }
    snprintf(sql, sizeof sql, "UPDATE %s SET experiment = ?3 WHERE %s", table, where);
    if ((rc = prep(reg, sql, &st, err))) return rc;
    bind_text(st, 1, key1);
    sqlite3_bind_int(st, 2, key2);
    if (experiment) bind_text(st, 3, experiment);
    else sqlite3_bind_null(st, 3);
    if ((rc = run(reg, st, err))) return rc;
    if (strcmp(table, "robots") == 0) rc = refresh_robot(reg, key1, err);
    else rc = refresh_node(reg, key1, err);
    if (rc) return rc;
    event(reg, wall_ms(), experiment ? "hold.claimed" : "hold.released", what, "experiment %s",
          experiment ? experiment : holder);
    return 0;
}

static int hold(ctl_registry_t *reg, const char *table, const char *where, const char *key1, int key2,
                const char *what, const char *experiment, const char *holder, cr_err_t *err)
{
    int rc = check_name("experiment", experiment ? experiment : holder, err);
    if (rc) return rc;
    pthread_mutex_lock(&reg->mu);
    if (!(rc = begin(reg, err)))
        rc = finish(reg, hold_locked(reg, table, where, key1, key2, what, experiment, holder, err), err);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

int ctl_reg_robot_claim(ctl_registry_t *reg, const char *name, const char *experiment, cr_err_t *err)
{
    char what[96];
    int rc = check_name("robot", name, err);
    if (rc) return rc;
    snprintf(what, sizeof what, "robot %s", name);
    /* "?2 = ?2" gives the robots' statement the same two parameters as the GPUs'. */
    return hold(reg, "robots", "name = ?1 AND ?2 = ?2", name, 0, what, experiment, NULL, err);
}

int ctl_reg_robot_release(ctl_registry_t *reg, const char *name, const char *experiment, cr_err_t *err)
{
    char what[96];
    int rc = check_name("robot", name, err);
    if (rc) return rc;
    snprintf(what, sizeof what, "robot %s", name);
    return hold(reg, "robots", "name = ?1 AND ?2 = ?2", name, 0, what, NULL, experiment, err);
}

int ctl_reg_gpu_claim(ctl_registry_t *reg, const char *node, uint32_t index, const char *experiment,
                      cr_err_t *err)
{
    char what[96];
    int rc = check_name("node", node, err);
    if (rc) return rc;
    snprintf(what, sizeof what, "GPU %u of node %s", index, node);
    return hold(reg, "gpus", "node = ?1 AND idx = ?2", node, (int)index, what, experiment, NULL, err);
}

int ctl_reg_gpu_release(ctl_registry_t *reg, const char *node, uint32_t index, const char *experiment,
                        cr_err_t *err)
{
    char what[96];
    int rc = check_name("node", node, err);
    if (rc) return rc;
    snprintf(what, sizeof what, "GPU %u of node %s", index, node);
    return hold(reg, "gpus", "node = ?1 AND idx = ?2", node, (int)index, what, NULL, experiment, err);
}

/* ---- GPUs ------------------------------------------------------------------- */

static int gpu_free_index(ctl_registry_t *reg, const char *node, int *idx, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(reg, "SELECT idx FROM gpus WHERE node = ?1 ORDER BY idx", &st, err);
    if (rc) return rc;
    bind_text(st, 1, node);
    int next = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && sqlite3_column_int(st, 0) == next) next++;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return SQLFAIL(reg, err, "read gpus");
    if (next > MAX_GPU_INDEX) return cr_err_set(err, CR_ENOSPC, "node %s has no free GPU index", node);
    *idx = next;
    return 0;
}

static int gpu_register_locked(ctl_registry_t *reg, const Corral__V1__RegisterGpuRequest *req,
                               int *idx, cr_err_t *err)
{
    int rc = node_exists(reg, req->node, NULL, err);
    if (rc) return rc;
    if (req->index < 0) {
        if ((rc = gpu_free_index(reg, req->node, idx, err))) return rc;
    } else {
        *idx = req->index;
    }
    sqlite3_stmt *st;
    if ((rc = prep(reg, "SELECT probed FROM gpus WHERE node = ?1 AND idx = ?2", &st, err))) return rc;
    bind_text(st, 1, req->node);
    sqlite3_bind_int(st, 2, *idx);
    rc = sqlite3_step(st);
    int probed = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return cr_err_set(err, CR_EEXIST, "GPU %d of node %s already exists (%s)", *idx, req->node,
                          probed ? "probed by its agent" : "registered before");
    if (rc != SQLITE_DONE) return SQLFAIL(reg, err, "read gpus");
    if ((rc = prep(reg,
                   "INSERT INTO gpus(node, idx, model, memory_bytes, uuid, state, registered, created_ms)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, 'lost', 1, ?6)", &st, err)))
        return rc;
    bind_text(st, 1, req->node);
    sqlite3_bind_int(st, 2, *idx);
    bind_text(st, 3, req->model);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)req->memory_bytes);
    bind_text(st, 5, req->uuid);
    sqlite3_bind_int64(st, 6, wall_ms());
    if ((rc = run(reg, st, err)) || (rc = refresh_node(reg, req->node, err))) return rc;
    char subject[96];
    snprintf(subject, sizeof subject, "%s/%d", req->node, *idx);
    event(reg, wall_ms(), "gpu.registered", subject, "%s", req->model);
    return 0;
}

int ctl_reg_gpu_register(ctl_registry_t *reg, const Corral__V1__RegisterGpuRequest *req,
                         Corral__V1__Gpu **out, cr_err_t *err)
{
    *out = NULL;
    int rc = check_name("node", req->node, err);
    if (rc) return rc;
    if (!req->model || !*req->model) return cr_err_set(err, CR_EINVAL, "GPU model is empty");
    if ((rc = check_text("model", "the GPU", req->model, err)) ||
        (rc = check_text("uuid", "the GPU", req->uuid, err)))
        return rc;
    if (req->memory_bytes == 0) return cr_err_set(err, CR_EINVAL, "GPU memory must be more than 0 bytes");
    if (req->index > MAX_GPU_INDEX)
        return cr_err_set(err, CR_EINVAL, "GPU index %d out of range (0..%d)", req->index, MAX_GPU_INDEX);
    int idx = -1;
    pthread_mutex_lock(&reg->mu);
    if (!(rc = begin(reg, err))) {
        rc = finish(reg, gpu_register_locked(reg, req, &idx, err), err);
        if (rc == 0) {
            char sql[512];
            snprintf(sql, sizeof sql, "%s WHERE node = ?2 AND idx = ?1", gpu_cols);
            sqlite3_stmt *st;
            if (!(rc = prep(reg, sql, &st, err))) {
                sqlite3_bind_int(st, 1, idx);
                bind_text(st, 2, req->node);
                if (sqlite3_step(st) == SQLITE_ROW) *out = gpu_from_row(st);
                else rc = SQLFAIL(reg, err, "read gpu");
                sqlite3_finalize(st);
            }
        }
    }
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

int ctl_reg_gpu_list(ctl_registry_t *reg, const char *node, Corral__V1__ListGpusResponse **out,
                     cr_err_t *err)
{
    *out = NULL;
    char sql[512];
    int filter = node && *node;
    snprintf(sql, sizeof sql, "%s%s ORDER BY node, idx", gpu_cols, filter ? " WHERE node = ?1" : "");
    Corral__V1__ListGpusResponse *resp = xcalloc(1, sizeof *resp);
    corral__v1__list_gpus_response__init(resp);
    int rc = list_rows(reg, sql, filter ? node : NULL, gpu_conv, (void ***)&resp->gpus, &resp->n_gpus,
                       "list gpus", err);
    if (rc) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return rc;
    }
    *out = resp;
    return 0;
}

/* ---- nodes ------------------------------------------------------------------ */

int ctl_reg_node_list(ctl_registry_t *reg, Corral__V1__ListNodesResponse **out, cr_err_t *err)
{
    *out = NULL;
    char sql[512];
    snprintf(sql, sizeof sql, "%s ORDER BY name", node_cols);
    Corral__V1__ListNodesResponse *resp = xcalloc(1, sizeof *resp);
    corral__v1__list_nodes_response__init(resp);
    int rc = list_rows(reg, sql, NULL, node_conv, (void ***)&resp->nodes, &resp->n_nodes,
                       "list nodes", err);
    if (rc) {
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        return rc;
    }
    *out = resp;
    return 0;
}

int ctl_reg_node_get(ctl_registry_t *reg, const char *name, Corral__V1__Node **out, cr_err_t *err)
{
    *out = NULL;
    int rc = check_name("node", name, err);
    if (rc) return rc;
    pthread_mutex_lock(&reg->mu);
    rc = node_get(reg, name, out, err);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

static int node_drain_locked(ctl_registry_t *reg, const char *name, int undo, cr_err_t *err)
{
    int rc = node_exists(reg, name, NULL, err);
    if (rc) return rc;
    sqlite3_stmt *st;
    if ((rc = prep(reg,
                   "UPDATE nodes SET drain = ?2, state = CASE WHEN state = 'lost' THEN 'lost'"
                   " WHEN ?2 THEN 'draining' ELSE 'ready' END WHERE name = ?1", &st, err)))
        return rc;
    bind_text(st, 1, name);
    sqlite3_bind_int(st, 2, !undo);
    if ((rc = run(reg, st, err)) || (rc = refresh_node(reg, name, err))) return rc;
    event(reg, wall_ms(), undo ? "node.undrained" : "node.draining", name, "%s",
          undo ? "drain cleared" : "drain requested");
    return 0;
}

int ctl_reg_node_drain(ctl_registry_t *reg, const char *name, int undo, Corral__V1__Node **out,
                       cr_err_t *err)
{
    *out = NULL;
    int rc = check_name("node", name, err);
    if (rc) return rc;
    pthread_mutex_lock(&reg->mu);
    if (!(rc = begin(reg, err))) {
        rc = finish(reg, node_drain_locked(reg, name, undo, err), err);
        if (rc == 0) rc = node_get(reg, name, out, err);
    }
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

/* ---- inventory ------------------------------------------------------------------ */

/* Checks inv on its own: names, drivers, duplicates, sizes. */
static int inventory_valid(const Corral__V1__Inventory *inv, cr_err_t *err)
{
    int rc = check_name("node", inv->node, err);
    if (rc) return cr_err_wrap(err, "inventory");
    const char *node = inv->node;
    if (inv->host) {
        if ((rc = check_text("address", node, inv->host->address, err)) ||
            (rc = check_text("hostname", node, inv->host->hostname, err)))
            return rc;
        if (inv->host->accepts_inbound && !*nz(inv->host->address))
            return cr_err_set(err, CR_EINVAL,
                              "inventory of node %s: accepts inbound connections but gives no address", node);
    }
    if (inv->n_gpus > MAX_INV_GPUS)
        return cr_err_set(err, CR_EINVAL, "inventory of node %s lists %zu GPUs, at most %d", node,
                          inv->n_gpus, MAX_INV_GPUS);
    for (size_t i = 0; i < inv->n_gpus; i++) {
        const Corral__V1__GpuInfo *g = inv->gpus[i];
        if (g->index > MAX_GPU_INDEX)
            return cr_err_set(err, CR_EINVAL, "inventory of node %s: GPU index %u out of range", node, g->index);
        if (!*nz(g->model))
            return cr_err_set(err, CR_EINVAL, "inventory of node %s: GPU %u has no model", node, g->index);
        if ((rc = check_text("GPU model", node, g->model, err)) ||
            (rc = check_text("GPU uuid", node, g->uuid, err)))
            return rc;
        for (size_t j = 0; j < i; j++)
            if (inv->gpus[j]->index == g->index)
                return cr_err_set(err, CR_EINVAL, "inventory of node %s lists GPU index %u twice", node,
                                  g->index);
    }
    if (inv->n_robots > MAX_INV_ROBOTS)
        return cr_err_set(err, CR_EINVAL, "inventory of node %s lists %zu robots, at most %d", node,
                          inv->n_robots, MAX_INV_ROBOTS);
    for (size_t i = 0; i < inv->n_robots; i++) {
        const Corral__V1__RobotInfo *r = inv->robots[i];
        if ((rc = check_robot_fields(r->name, r->driver, r->model, r->port, r->settings,
                                     r->n_settings, err)) ||
            (rc = check_labels(r->name, r->labels, r->n_labels, err)))
            return cr_err_wrap(err, "inventory of node %s", node);
        for (size_t j = 0; j < i; j++)
            if (strcmp(inv->robots[j]->name, r->name) == 0)
                return cr_err_set(err, CR_EINVAL, "inventory of node %s lists robot %s twice", node, r->name);
    }
    return 0;
}

/* Checks inv against the registry: robots owned by other nodes, fields that
 * contradict what was registered, GPUs registered with another model. */
static int inventory_agrees(ctl_registry_t *reg, const Corral__V1__Inventory *inv, cr_err_t *err)
{
    int rc = 0;
    char who[128];
    snprintf(who, sizeof who, "the agent of node %s", inv->node);
    for (size_t i = 0; !rc && i < inv->n_robots; i++) {
        const Corral__V1__RobotInfo *r = inv->robots[i];
        Corral__V1__Robot *have = NULL;
        cr_err_t e2 = {0};
        int g = robot_get(reg, r->name, &have, &e2);
        if (g == CR_ENOENT) continue;
        if (g) return cr_err_set(err, g, "%s", e2.msg);
        if (*have->node && strcmp(have->node, inv->node) != 0) {
            char ostate[16] = "lost";
            node_exists(reg, have->node, ostate, NULL);
            if (have->registered || strcmp(ostate, "lost") != 0 || *have->experiment)
                rc = cr_err_set(err, CR_EBUSY, "robot %s belongs to node %s, but node %s reports it",
                                r->name, have->node, inv->node);
        }
        if (!rc)
            rc = robot_agrees(have, who, r->driver, r->model, r->port, r->settings, r->n_settings, err);
        robot_free(have);
    }
    for (size_t i = 0; !rc && i < inv->n_gpus; i++) {
        const Corral__V1__GpuInfo *g = inv->gpus[i];
        sqlite3_stmt *st;
        if ((rc = prep(reg, "SELECT model, memory_bytes FROM gpus WHERE node = ?1 AND idx = ?2 AND registered",
                       &st, err)))
            return rc;
        bind_text(st, 1, inv->node);
        sqlite3_bind_int(st, 2, (int)g->index);
        if (sqlite3_step(st) == SQLITE_ROW) {
            const char *model = (const char *)sqlite3_column_text(st, 0);
            uint64_t mem = (uint64_t)sqlite3_column_int64(st, 1);
            if (strcmp(model, g->model) != 0 || (g->memory_bytes && mem != g->memory_bytes))
                rc = cr_err_set(err, CR_EBUSY,
                                "GPU %u of node %s was registered as %s with %" PRIu64 " bytes, but "
                                "the agent probes %s with %" PRIu64 " bytes; fix or remove the registration",
                                g->index, inv->node, model, mem, g->model, g->memory_bytes);
        }
        sqlite3_finalize(st);
    }
    return rc;
}

int ctl_reg_inventory_check(ctl_registry_t *reg, const Corral__V1__Inventory *inv, cr_err_t *err)
{
    int rc = inventory_valid(inv, err);
    if (rc) return rc;
    pthread_mutex_lock(&reg->mu);
    rc = inventory_agrees(reg, inv, err);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

static int node_upsert(ctl_registry_t *reg, const Corral__V1__Inventory *inv, int64_t now_ms,
                       cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(reg,
                  "INSERT INTO nodes(name, state, address, accepts_inbound, cores, memory_bytes,"
                  " agent_version, agent_instance, last_seen_ms, created_ms)"
                  " VALUES (?1, 'ready', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)"
                  " ON CONFLICT(name) DO UPDATE SET"
                  " state = CASE WHEN drain THEN 'draining' ELSE 'ready' END,"
                  " address = excluded.address, accepts_inbound = excluded.accepts_inbound,"
                  " cores = excluded.cores, memory_bytes = excluded.memory_bytes,"
                  " agent_version = excluded.agent_version, agent_instance = excluded.agent_instance,"
                  " last_seen_ms = excluded.last_seen_ms", &st, err);
    if (rc) return rc;
    const Corral__V1__HostFacts *h = inv->host;
    bind_text(st, 1, inv->node);
    bind_text(st, 2, h ? h->address : "");
    sqlite3_bind_int(st, 3, h ? h->accepts_inbound : 0);
    sqlite3_bind_int(st, 4, h ? (int)h->cores : 0);
    sqlite3_bind_int64(st, 5, h ? (sqlite3_int64)h->memory_bytes : 0);
    bind_text(st, 6, inv->agent_version);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)inv->agent_instance);
    sqlite3_bind_int64(st, 8, now_ms);
    return run(reg, st, err);
}

static int robot_report(ctl_registry_t *reg, const char *node, const Corral__V1__RobotInfo *r,
                        int64_t now_ms, cr_err_t *err)
{
    Corral__V1__Robot *have = NULL;
    robot_get(reg, r->name, &have, NULL);
    char *json = settings_merge(have, r->settings, r->n_settings);
    char *labels = labels_merge(have, r->labels, r->n_labels);
    sqlite3_stmt *st;
    int rc = prep(reg,
                  "INSERT INTO robots(name, driver, node, model, port, settings, state, reported, created_ms, labels)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'lost', 1, ?7, ?8)"
                  " ON CONFLICT(name) DO UPDATE SET node = excluded.node, reported = 1,"
                  " model = CASE WHEN model = '' THEN excluded.model ELSE model END,"
                  " port = CASE WHEN port = '' THEN excluded.port ELSE port END,"
                  " settings = excluded.settings, labels = excluded.labels", &st, err);
    if (!rc) {
        bind_text(st, 1, r->name);
        bind_text(st, 2, r->driver);
        bind_text(st, 3, node);
        bind_text(st, 4, r->model);
        bind_text(st, 5, r->port);
        bind_text(st, 6, json);
        sqlite3_bind_int64(st, 7, now_ms);
        bind_text(st, 8, labels);
        rc = run(reg, st, err);
    }
    cJSON_free(json);
    cJSON_free(labels);
    robot_free(have);
    return rc;
}

static int gpu_report(ctl_registry_t *reg, const char *node, const Corral__V1__GpuInfo *g,
                      int64_t now_ms, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(reg,
                  "INSERT INTO gpus(node, idx, model, memory_bytes, uuid, state, probed, created_ms)"
                  " VALUES (?1, ?2, ?3, ?4, ?5, 'lost', 1, ?6)"
                  " ON CONFLICT(node, idx) DO UPDATE SET probed = 1, model = excluded.model,"
                  " memory_bytes = CASE WHEN excluded.memory_bytes > 0 THEN excluded.memory_bytes"
                  " ELSE memory_bytes END, uuid = excluded.uuid", &st, err);
    if (rc) return rc;
    bind_text(st, 1, node);
    sqlite3_bind_int(st, 2, (int)g->index);
    bind_text(st, 3, g->model);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)g->memory_bytes);
    bind_text(st, 5, g->uuid);
    sqlite3_bind_int64(st, 6, now_ms);
    return run(reg, st, err);
}

static int exec_node(ctl_registry_t *reg, const char *sql, const char *node, cr_err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(reg, sql, &st, err);
    if (rc) return rc;
    bind_text(st, 1, node);
    return run(reg, st, err);
}

static int node_up_locked(ctl_registry_t *reg, const Corral__V1__Inventory *inv, int64_t now_ms,
                          cr_err_t *err)
{
    const char *node = inv->node;
    int rc;
    if ((rc = inventory_agrees(reg, inv, err)) || (rc = node_upsert(reg, inv, now_ms, err)) ||
        (rc = exec_node(reg, "UPDATE robots SET reported = 0 WHERE node = ?1", node, err)))
        return rc;
    for (size_t i = 0; i < inv->n_robots; i++)
        if ((rc = robot_report(reg, node, inv->robots[i], now_ms, err))) return rc;
    if ((rc = exec_node(reg,
                        "DELETE FROM robots WHERE node = ?1 AND NOT reported AND NOT registered"
                        " AND experiment IS NULL", node, err)) ||
        (rc = exec_node(reg, "UPDATE gpus SET probed = 0 WHERE node = ?1", node, err)))
        return rc;
    for (size_t i = 0; i < inv->n_gpus; i++)
        if ((rc = gpu_report(reg, node, inv->gpus[i], now_ms, err))) return rc;
    if ((rc = exec_node(reg,
                        "DELETE FROM gpus WHERE node = ?1 AND NOT probed AND NOT registered"
                        " AND experiment IS NULL", node, err)) ||
        (rc = refresh_node(reg, node, err)))
        return rc;
    event(reg, now_ms, "node.up", node, "%zu robots, %zu GPUs reported", inv->n_robots, inv->n_gpus);
    return 0;
}

int ctl_reg_node_up(ctl_registry_t *reg, const Corral__V1__Inventory *inv, int64_t now_ms,
                    cr_err_t *err)
{
    int rc = inventory_valid(inv, err);
    if (rc) return rc;
    pthread_mutex_lock(&reg->mu);
    if (!(rc = begin(reg, err))) rc = finish(reg, node_up_locked(reg, inv, now_ms, err), err);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

static int node_lost_locked(ctl_registry_t *reg, const char *name, const char *why, int64_t now_ms,
                            cr_err_t *err)
{
    char state[16];
    int rc = node_exists(reg, name, state, err);
    if (rc) return rc;
    if (strcmp(state, "lost") == 0) return 0;
    sqlite3_stmt *st;
    if ((rc = prep(reg, "UPDATE nodes SET state = 'lost', last_seen_ms = MAX(last_seen_ms, ?2)"
                        " WHERE name = ?1", &st, err)))
        return rc;
    bind_text(st, 1, name);
    sqlite3_bind_int64(st, 2, now_ms);
    if ((rc = run(reg, st, err)) || (rc = refresh_node(reg, name, err))) return rc;
    event(reg, now_ms, "node.lost", name, "%s", nz(why));
    return 0;
}

int ctl_reg_node_lost(ctl_registry_t *reg, const char *name, const char *why, int64_t now_ms,
                      cr_err_t *err)
{
    int rc = check_name("node", name, err);
    if (rc) return rc;
    pthread_mutex_lock(&reg->mu);
    if (!(rc = begin(reg, err))) rc = finish(reg, node_lost_locked(reg, name, why, now_ms, err), err);
    pthread_mutex_unlock(&reg->mu);
    return rc;
}

int ctl_reg_nodes_live(ctl_registry_t *reg, char ***names, size_t *n, cr_err_t *err)
{
    *names = NULL;
    *n = 0;
    size_t cap = 0;
    sqlite3_stmt *st;
    pthread_mutex_lock(&reg->mu);
    int rc = prep(reg, "SELECT name FROM nodes WHERE state != 'lost' ORDER BY name", &st, err);
    if (!rc) {
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                *names = realloc(*names, cap * sizeof **names);
                if (!*names) abort();
            }
            (*names)[(*n)++] = xstrdup((const char *)sqlite3_column_text(st, 0));
        }
        rc = rc == SQLITE_DONE ? 0 : SQLFAIL(reg, err, "list live nodes");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&reg->mu);
    if (rc) {
        ctl_names_free(*names, *n);
        *names = NULL;
        *n = 0;
    }
    return rc;
}

void ctl_names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}
