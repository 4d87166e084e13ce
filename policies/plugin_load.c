/* plugin_load.c - opening a plugin shared object and validating what its entry
 * symbol returns, with errors that say exactly what is wrong (file missing, not
 * a shared object, no entry symbol, other ABI version, missing function). The
 * object stays loaded until pol_plugin_close: the descriptor lives inside it. */
#include "policies/policies.h"

#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

static int name_ok(const char *n)
{
    size_t len = n ? strlen(n) : 0;
    if (len == 0 || len > 63) return 0;
    for (size_t i = 0; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= '0' && n[i] <= '9') || n[i] == '_' || n[i] == '-'))
            return 0;
    return 1;
}

#define NEED(vt, fn) \
    if (!(vt)->fn) return cr_err_set(err, CR_EINVAL, "plugin '%s': vtable function '%s' is NULL", desc->name, #fn)

int pol_plugin_validate(const corral_plugin_t *desc, cr_err_t *err)
{
    if (!desc) return cr_err_set(err, CR_EINVAL, "plugin entry returned NULL");
    if (desc->abi_version != CORRAL_PLUGIN_ABI_VERSION)
        return cr_err_set(err, CR_EVERSION, "plugin ABI version %u, this corral speaks version %u (rebuild the plugin against this corral/plugin.h)",
                          desc->abi_version, CORRAL_PLUGIN_ABI_VERSION);
    if (!name_ok(desc->name))
        return cr_err_set(err, CR_EINVAL, "plugin name '%.64s' is not 1-63 characters of [a-z0-9_-]",
                          desc->name ? desc->name : "(null)");
    if (desc->kind == CORRAL_PLUGIN_ALGO) {
        const corral_algo_vtable_t *vt = desc->algo;
        if (!vt) return cr_err_set(err, CR_EINVAL, "plugin '%s': kind is algorithm but algo vtable is NULL", desc->name);
        if (vt->struct_size < sizeof(corral_algo_vtable_t))
            return cr_err_set(err, CR_EVERSION, "plugin '%s': algo vtable is %u bytes, expected %zu",
                              desc->name, vt->struct_size, sizeof(corral_algo_vtable_t));
        NEED(vt, create); NEED(vt, update); NEED(vt, act); NEED(vt, export_policy);
        NEED(vt, import_policy); NEED(vt, save); NEED(vt, load); NEED(vt, destroy);
        return 0;
    }
    if (desc->kind == CORRAL_PLUGIN_REWARD) {
        const corral_reward_vtable_t *vt = desc->reward;
        if (!vt) return cr_err_set(err, CR_EINVAL, "plugin '%s': kind is reward but reward vtable is NULL", desc->name);
        if (vt->struct_size < sizeof(corral_reward_vtable_t))
            return cr_err_set(err, CR_EVERSION, "plugin '%s': reward vtable is %u bytes, expected %zu",
                              desc->name, vt->struct_size, sizeof(corral_reward_vtable_t));
        NEED(vt, create); NEED(vt, compute); NEED(vt, destroy);
        return 0;
    }
    return cr_err_set(err, CR_EINVAL, "plugin '%s': unknown kind %u (1 algorithm, 2 reward)", desc->name, desc->kind);
}

int pol_plugin_open(const char *path, pol_plugin_t *out, cr_err_t *err)
{
    out->desc = NULL;
    out->dl = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return cr_err_set(err, errno == ENOENT ? CR_ENOENT : CR_EIO, "%s: %s", path, strerror(errno));
    if (!strchr(path, '/'))   /* dlopen would search the library path instead */
        return cr_err_set(err, CR_EINVAL, "%s: give a path containing '/' (e.g. ./%s)", path, path);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) return cr_err_set(err, CR_EINVAL, "%s: cannot load: %s", path, dlerror());
    corral_plugin_entry_fn entry;
    *(void **)&entry = dlsym(h, CORRAL_PLUGIN_ENTRY);
    if (!entry) {
        dlclose(h);
        return cr_err_set(err, CR_EINVAL, "%s: missing entry symbol '%s' (is it declared CORRAL_PLUGIN_EXPORT?)",
                          path, CORRAL_PLUGIN_ENTRY);
    }
    const corral_plugin_t *desc = entry();
    int rc = pol_plugin_validate(desc, err);
    if (rc) {
        dlclose(h);
        return cr_err_wrap(err, "%s", path);
    }
    out->desc = desc;
    out->dl = h;
    return 0;
}

void pol_plugin_close(pol_plugin_t *p)
{
    if (p->dl) dlclose(p->dl);
    p->dl = NULL;
    p->desc = NULL;
}
