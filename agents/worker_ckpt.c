/* worker_ckpt.c - the learner's checkpoints, kept in common/durable's checkpoint
 * store (durable.h states the layout and why a kill at any instant leaves the
 * newest complete checkpoint intact: ckpt-<N>.tmp, every file fsynced, the
 * COMPLETE marker with each file's size and hash written last, then renamed).
 *
 * Here only what the learner puts in one: N is the update counter, the file
 * algo.safetensors is everything the algorithm needs (networks, targets,
 * optimiser moments, temperature, RNG), and the marker's meta text holds the
 * counters as "key value" lines. Resuming verifies the files' hashes, so a
 * checkpoint damaged on disk is skipped for the one before it. */
#include "agents/worker_int.h"
#include "common/durable.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALGO_FILE "algo.safetensors"

int wk_ckpt_write(const char *dir, pol_algo_t *a, const wk_counters_t *c, int keep, cr_err_t *err)
{
    cr_ckpt_store_t *st;
    int rc = cr_ckpt_open(dir, &st, err);
    if (rc) return rc;
    uint64_t n = (uint64_t)c->updates, newest = 0;
    cr_err_t ignored = {0};
    if (cr_ckpt_newest(st, 0, &newest, NULL, &ignored) == 0 && newest == n) {
        cr_ckpt_close(st); /* this state is already checkpointed */
        return 0;
    }
    cr_ckpt_writer_t *w;
    rc = cr_ckpt_begin(st, n, &w, err);
    if (rc == 0) {
        rc = pol_algo_save(a, cr_ckpt_file_path(w, ALGO_FILE), err);
        if (rc == 0) rc = cr_ckpt_adopt(w, ALGO_FILE, err);
        if (rc != 0) {
            cr_ckpt_abort(w);
        } else {
            char meta[256];
            snprintf(meta, sizeof meta, "updates %lld\nversion %lld\nenv_steps %lld\nepisodes %lld\n",
                     (long long)c->updates, (long long)c->version, (long long)c->env_steps, (long long)c->episodes);
            rc = cr_ckpt_commit(w, meta, err);
        }
    }
    if (rc == 0 && keep > 0) rc = cr_ckpt_prune(st, (size_t)keep, err);
    cr_ckpt_close(st);
    return rc ? cr_err_wrap(err, "checkpoint %" PRIu64, n) : 0;
}

static int parse_meta(const char *meta, wk_counters_t *c)
{
    memset(c, 0, sizeof *c);
    int seen = 0;
    for (const char *p = meta; p && *p;) {
        char key[64];
        long long v;
        if (sscanf(p, "%63s %lld", key, &v) == 2) {
            if (!strcmp(key, "updates")) c->updates = v, seen |= 1;
            else if (!strcmp(key, "version")) c->version = v, seen |= 2;
            else if (!strcmp(key, "env_steps")) c->env_steps = v;
            else if (!strcmp(key, "episodes")) c->episodes = v;
        }
        p = strchr(p, '\n');
        if (p) p++;
    }
    return seen == 3 ? 0 : -1;
}

int wk_ckpt_newest(const char *dir, char *path, size_t cap, wk_counters_t *c, cr_err_t *err)
{
    cr_ckpt_store_t *st;
    int rc = cr_ckpt_open(dir, &st, err);
    if (rc) return rc;
    uint64_t n = 0;
    char ckdir[4096];
    char *meta = NULL;
    rc = cr_ckpt_newest(st, 1, &n, ckdir, err);
    if (rc == 0) rc = cr_ckpt_meta(st, n, &meta, err);
    if (rc == 0 && parse_meta(meta, c) != 0)
        rc = cr_err_set(err, CR_ECORRUPT, "%s: its counters (updates, version) are missing", ckdir);
    if (rc == 0) snprintf(path, cap, "%s/%s", ckdir, ALGO_FILE);
    free(meta);
    cr_ckpt_close(st);
    return rc;
}
