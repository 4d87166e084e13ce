/* buffer.c - `corral buffer`: inspecting replay buffers from the command line.
 *     corral buffer stats PATH [--json]
 * prints episodes and steps per source, success rate, limiter counters and the size
 * on disk, read without writing to the buffer (safe while a learner is using it). */
#include "cli/cli.h"
#include "buffer/buffer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: corral buffer stats PATH [--json]\n"
                 "  Episodes and steps per source, success rate, limiter counters and size\n"
                 "  on disk of the replay buffer at PATH.\n");
}

static void layout_text(const buf_layout_t *l, char *out, size_t n)
{
    size_t o = (size_t)snprintf(out, n, "proprio %d", buf_layout_obs_dim(l));
    for (int i = 0; i < l->n_cams && o < n; i++)
        o += (size_t)snprintf(out + o, n - o, ", camera %dx%dx%d", l->cam_h[i], l->cam_w[i], l->cam_c[i]);
    if (o < n) snprintf(out + o, n - o, ", action %d", l->act_dim);
}

static int print_json(const char *path, const buf_stats_t *s)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "path", path);
    cJSON_AddNumberToObject(root, "schema_version", s->schema_version);
    cJSON *lay = cJSON_AddObjectToObject(root, "layout");
    cJSON_AddNumberToObject(lay, "obs_dim", buf_layout_obs_dim(&s->layout));
    cJSON_AddNumberToObject(lay, "act_dim", s->layout.act_dim);
    cJSON *cams = cJSON_AddArrayToObject(lay, "cameras");
    for (int i = 0; i < s->layout.n_cams; i++) {
        int shape[3] = {s->layout.cam_h[i], s->layout.cam_w[i], s->layout.cam_c[i]};
        cJSON_AddItemToArray(cams, cJSON_CreateIntArray(shape, 3));
    }
    cJSON *eps = cJSON_AddObjectToObject(root, "episodes");
    cJSON *steps = cJSON_AddObjectToObject(root, "steps");
    int64_t ne = 0, ns = 0;
    for (int i = 0; i < BUF_SRC_COUNT; i++) {
        cJSON_AddNumberToObject(eps, buf_source_name(i), (double)s->episodes[i]);
        cJSON_AddNumberToObject(steps, buf_source_name(i), (double)s->steps[i]);
        ne += s->episodes[i];
        ns += s->steps[i];
    }
    cJSON_AddNumberToObject(eps, "total", (double)ne);
    cJSON_AddNumberToObject(eps, "ended", (double)s->episodes_ended);
    cJSON_AddNumberToObject(eps, "succeeded", (double)s->episodes_success);
    cJSON_AddNumberToObject(eps, "truncated", (double)s->episodes_truncated);
    cJSON_AddNumberToObject(steps, "total", (double)ns);
    cJSON_AddNumberToObject(steps, "intervention_steps", (double)s->intervention_steps);
    cJSON_AddNumberToObject(root, "success_rate", s->success_rate);
    cJSON *lim = cJSON_AddObjectToObject(root, "limiter");
    cJSON_AddNumberToObject(lim, "inserts", (double)s->limiter_inserts);
    cJSON_AddNumberToObject(lim, "samples", (double)s->limiter_samples);
    cJSON *disk = cJSON_AddObjectToObject(root, "disk_bytes");
    cJSON_AddNumberToObject(disk, "db", (double)s->db_bytes);
    cJSON_AddNumberToObject(disk, "wal", (double)s->wal_bytes);
    cJSON_AddNumberToObject(disk, "total", (double)(s->db_bytes + s->wal_bytes));
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) {
        fprintf(stderr, "corral buffer stats: out of memory\n");
        return CLI_EUSER;
    }
    printf("%s\n", text);
    cJSON_free(text);
    return CLI_OK;
}

static void print_text(const char *path, const buf_stats_t *s)
{
    char lay[256];
    layout_text(&s->layout, lay, sizeof lay);
    printf("buffer   %s (schema %d)\nlayout   %s\n", path, s->schema_version, lay);
    printf("%-14s %10s %12s\n", "source", "episodes", "steps");
    int64_t ne = 0, ns = 0;
    for (int i = 0; i < BUF_SRC_COUNT; i++) {
        printf("%-14s %10lld %12lld\n", buf_source_name(i), (long long)s->episodes[i], (long long)s->steps[i]);
        ne += s->episodes[i];
        ns += s->steps[i];
    }
    printf("%-14s %10lld %12lld\n", "total", (long long)ne, (long long)ns);
    printf("intervention steps  %lld\n", (long long)s->intervention_steps);
    printf("ended episodes      %lld (succeeded %lld, truncated %lld)\n", (long long)s->episodes_ended,
           (long long)s->episodes_success, (long long)s->episodes_truncated);
    printf("success rate        %.3f\n", s->success_rate);
    printf("limiter             %lld inserts, %lld samples\n", (long long)s->limiter_inserts,
           (long long)s->limiter_samples);
    printf("size on disk        %.1f MiB (db %lld + wal %lld bytes)\n",
           (double)(s->db_bytes + s->wal_bytes) / (1 << 20), (long long)s->db_bytes, (long long)s->wal_bytes);
}

static int stats_main(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) json = 1;
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) { usage(stdout); return CLI_OK; }
        else if (argv[i][0] == '-') {
            fprintf(stderr, "corral buffer stats: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return CLI_EUSER;
        } else if (!path) path = argv[i];
        else {
            fprintf(stderr, "corral buffer stats: one PATH only ('%s')\n", argv[i]);
            return CLI_EUSER;
        }
    }
    if (!path) { usage(stderr); return CLI_EUSER; }
    buf_stats_t s;
    cr_err_t err = {0};
    if (buf_stats(path, &s, &err)) {
        fprintf(stderr, "corral buffer stats: %s\n", err.msg);
        return CLI_EUSER;
    }
    if (json) return print_json(path, &s);
    print_text(path, &s);
    return CLI_OK;
}

int cli_buffer_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EUSER : CLI_OK;
    }
    if (strcmp(argv[1], "stats") == 0) return stats_main(argc - 1, argv + 1);
    fprintf(stderr, "corral buffer: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return CLI_EUSER;
}
