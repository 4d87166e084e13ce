/* bad_plugin.c - plugins that are wrong in one way each, selected at compile time,
 * for the loader's tests: BAD_VERSION (another ABI version), NO_ENTRY (exports no
 * entry symbol), NULL_FN (update missing), BAD_NAME, SMALL_VTABLE, BAD_KIND,
 * NULL_DESC (entry returns NULL). Built against the public header only. */
#include <corral/plugin.h>

#include <stdlib.h>

static int create(const corral_kv_t *c, size_t n, const corral_spec_t *s, void **self, corral_err_t *e)
{
    (void)c; (void)n; (void)s; (void)e;
    *self = malloc(1);
    return 0;
}
static int update(void *s, const corral_batch_t *b, corral_metrics_t *m, corral_err_t *e)
{ (void)s; (void)b; (void)m; (void)e; return 0; }
static int act(void *s, const float *o, int d, float *a, corral_err_t *e)
{ (void)s; (void)o; (void)d; (void)e; a[0] = 0; return 0; }
static int exp_(void *s, void *b, size_t c, size_t *l, corral_err_t *e)
{ (void)s; (void)b; (void)c; (void)e; *l = 0; return 0; }
static int imp(void *s, const void *b, size_t l, corral_err_t *e) { (void)s; (void)b; (void)l; (void)e; return 0; }
static int save(void *s, const char *p, corral_err_t *e) { (void)s; (void)p; (void)e; return 0; }
static void destroy(void *s) { free(s); }

static const corral_algo_vtable_t vt = {
#ifdef SMALL_VTABLE
    .struct_size = 16,
#else
    .struct_size = sizeof(corral_algo_vtable_t),
#endif
    .create = create,
#ifndef NULL_FN
    .update = update,
#endif
    .act = act, .export_policy = exp_, .import_policy = imp, .save = save, .load = save, .destroy = destroy,
};

static const corral_plugin_t plugin = {
#ifdef BAD_VERSION
    .abi_version = CORRAL_PLUGIN_ABI_VERSION + 98,
#else
    .abi_version = CORRAL_PLUGIN_ABI_VERSION,
#endif
#ifdef BAD_KIND
    .kind = 7,
#else
    .kind = CORRAL_PLUGIN_ALGO,
#endif
#ifdef BAD_NAME
    .name = "Bad Name!",
#else
    .name = "bad-plugin",
#endif
    .description = "test",
    .algo = &vt,
};

#ifdef NO_ENTRY
CORRAL_PLUGIN_EXPORT const corral_plugin_t *corral_plugin_entry_v0(void) { return &plugin; }
#elif defined(NULL_DESC)
CORRAL_PLUGIN_EXPORT const corral_plugin_t *corral_plugin_entry(void) { return NULL; }
#else
CORRAL_PLUGIN_EXPORT const corral_plugin_t *corral_plugin_entry(void) { return &plugin; }
#endif
