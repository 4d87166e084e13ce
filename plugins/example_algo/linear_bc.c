/* linear_bc.c - an example algorithm plugin for corral, built against
 * <corral/plugin.h> only: a linear policy action = tanh(W obs + b) trained by
 * behaviour cloning (squared error, plain gradient descent). Small on purpose:
 * it shows every vtable function a plugin provides, including a versioned policy
 * blob and an atomic checkpoint of its whole state.
 *
 * Build: cc -std=c11 -shared -fPIC -I<corral>/include linear_bc.c -o linear_bc.so -lm
 * Settings: lr (default 0.05). */
#define _GNU_SOURCE
#include <corral/plugin.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAGIC "LINBC001"   /* blob and checkpoint header: format and version */

typedef struct linbc {
    int obs, act;
    float lr;
    unsigned long long updates;
    float *w;   /* [act][obs + 1], the last column is the bias */
} linbc_t;

static int fail(corral_err_t *err, int code, const char *msg)
{
    err->code = code;
    snprintf(err->msg, sizeof err->msg, "linear-bc: %s", msg);
    return code;
}

static size_t nw(const linbc_t *s) { return (size_t)s->act * (s->obs + 1); }

static int lb_create(const corral_kv_t *cfg, size_t n, const corral_spec_t *spec, void **self,
                     corral_err_t *err)
{
    if (!spec || spec->obs_dim <= 0 || spec->act_dim <= 0 || spec->img_c > 0)
        return fail(err, CORRAL_EINVAL, "needs vector observations and actions");
    float lr = 0.05f;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(cfg[i].key, "lr") == 0) {
            char *end;
            lr = strtof(cfg[i].value, &end);
            if (*end || !(lr > 0.0f && lr < 10.0f)) return fail(err, CORRAL_EINVAL, "setting lr must be in (0, 10)");
        } else {
            char msg[200];
            snprintf(msg, sizeof msg, "unknown setting '%.100s' (known: lr)", cfg[i].key);
            return fail(err, CORRAL_EINVAL, msg);
        }
    }
    linbc_t *s = calloc(1, sizeof *s);
    if (!s) return fail(err, CORRAL_ENOMEM, "out of memory");
    s->obs = spec->obs_dim;
    s->act = spec->act_dim;
    s->lr = lr;
    s->w = calloc(nw(s), sizeof(float));
    if (!s->w) { free(s); return fail(err, CORRAL_ENOMEM, "out of memory"); }
    *self = s;
    return 0;
}

static void forward(const linbc_t *s, const float *obs, float *out)
{
    for (int j = 0; j < s->act; j++) {
        const float *w = s->w + (size_t)j * (s->obs + 1);
        float z = w[s->obs];
        for (int i = 0; i < s->obs; i++) z += w[i] * obs[i];
        out[j] = tanhf(z);
    }
}

static int lb_update(void *self, const corral_batch_t *b, corral_metrics_t *m, corral_err_t *err)
{
    linbc_t *s = self;
    if (!b || b->size <= 0 || !b->obs || !b->action) return fail(err, CORRAL_EINVAL, "empty batch");
    float *g = calloc(nw(s), sizeof(float)), y[64];
    if (!g || s->act > 64) { free(g); return fail(err, CORRAL_ENOMEM, "out of memory"); }
    double loss = 0.0;
    for (int r = 0; r < b->size; r++) {
        const float *o = b->obs + (size_t)r * s->obs, *t = b->action + (size_t)r * s->act;
        forward(s, o, y);
        for (int j = 0; j < s->act; j++) {
            float e = y[j] - t[j], dz = 2.0f * e * (1.0f - y[j] * y[j]) / b->size;
            loss += (double)e * e / b->size;
            float *gw = g + (size_t)j * (s->obs + 1);
            for (int i = 0; i < s->obs; i++) gw[i] += dz * o[i];
            gw[s->obs] += dz;
        }
    }
    int skip = !isfinite(loss);
    if (!skip)
        for (size_t k = 0; k < nw(s); k++) s->w[k] -= s->lr * g[k];
    free(g);
    s->updates += !skip;
    if (m && m->count + 2 <= CORRAL_METRICS_MAX) {
        snprintf(m->item[m->count].name, CORRAL_METRIC_NAME_MAX, "bc_loss");
        m->item[m->count++].value = loss;
        snprintf(m->item[m->count].name, CORRAL_METRIC_NAME_MAX, "skipped_now");
        m->item[m->count++].value = skip;
    }
    return 0;
}

static int lb_act(void *self, const float *obs, int deterministic, float *action, corral_err_t *err)
{
    linbc_t *s = self;
    (void)deterministic;   /* a deterministic policy */
    for (int i = 0; i < s->obs; i++)
        if (!isfinite(obs[i])) return fail(err, CORRAL_EINVAL, "non-finite observation");
    forward(s, obs, action);
    return 0;
}

/* blob: MAGIC, int32 obs, int32 act, float weights */
static size_t blob_size(const linbc_t *s) { return 8 + 8 + nw(s) * sizeof(float); }

static int lb_export(void *self, void *buf, size_t cap, size_t *len, corral_err_t *err)
{
    linbc_t *s = self;
    *len = blob_size(s);
    if (!buf || cap < *len) return fail(err, CORRAL_ETOOBIG, "buffer too small for the policy");
    unsigned char *p = buf;
    int32_t dims[2] = {s->obs, s->act};
    memcpy(p, MAGIC, 8);
    memcpy(p + 8, dims, 8);
    memcpy(p + 16, s->w, nw(s) * sizeof(float));
    return 0;
}

static int lb_import(void *self, const void *blob, size_t len, corral_err_t *err)
{
    linbc_t *s = self;
    const unsigned char *p = blob;
    int32_t dims[2];
    if (len < 16 || memcmp(p, MAGIC, 8) != 0) return fail(err, CORRAL_ECORRUPT, "not a linear-bc v1 policy");
    memcpy(dims, p + 8, 8);
    if (dims[0] != s->obs || dims[1] != s->act || len != blob_size(s))
        return fail(err, CORRAL_EINVAL, "policy has other dimensions");
    memcpy(s->w, p + 16, nw(s) * sizeof(float));
    return 0;
}

static int lb_save(void *self, const char *path, corral_err_t *err)
{
    linbc_t *s = self;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return fail(err, CORRAL_EIO, strerror(errno));
    size_t len = blob_size(s);
    unsigned char *b = malloc(len);
    size_t got = 0;
    int ok = b && lb_export(s, b, len, &got, err) == 0 && fwrite(b, 1, len, f) == len &&
             fwrite(&s->updates, sizeof s->updates, 1, f) == 1 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    free(b);
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return fail(err, CORRAL_EIO, "cannot write the checkpoint");
    }
    return 0;
}

static int lb_load(void *self, const char *path, corral_err_t *err)
{
    linbc_t *s = self;
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, errno == ENOENT ? CORRAL_ENOENT : CORRAL_EIO, strerror(errno));
    size_t len = blob_size(s);
    unsigned char *b = malloc(len);
    unsigned long long u;
    int ok = b && fread(b, 1, len, f) == len && fread(&u, sizeof u, 1, f) == 1 && fgetc(f) == EOF;
    fclose(f);
    int rc = ok ? lb_import(s, b, len, err) : fail(err, CORRAL_ECORRUPT, "truncated or oversized checkpoint");
    free(b);
    if (rc == 0) s->updates = u;
    return rc;
}

static void lb_destroy(void *self)
{
    linbc_t *s = self;
    if (s) free(s->w);
    free(s);
}

static const corral_algo_vtable_t vt = {
    .struct_size = sizeof(corral_algo_vtable_t),
    .create = lb_create,
    .update = lb_update,
    .act = lb_act,
    .export_policy = lb_export,
    .import_policy = lb_import,
    .save = lb_save,
    .load = lb_load,
    .destroy = lb_destroy,
};

static const corral_plugin_t plugin = {
    .abi_version = CORRAL_PLUGIN_ABI_VERSION,
    .kind = CORRAL_PLUGIN_ALGO,
    .name = "linear-bc",
    .description = "example: linear tanh policy trained by behaviour cloning",
    .algo = &vt,
};

CORRAL_PLUGIN_EXPORT const corral_plugin_t *corral_plugin_entry(void) { return &plugin; }
