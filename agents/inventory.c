/* inventory.c - what a node offers, gathered for the agent's Inventory message:
 * robot specs from the command line, host facts from the kernel, GPUs from the
 * probe. Everything here is read once at agent start. */
#include "agents/agent.h"
#include "common/id.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

int agent_robot_parse(const char *spec, Corral__V1__RobotInfo **out, cr_err_t *err)
{
    *out = NULL;
    const char *part[4] = {0};
    size_t len[4] = {0};
    int n = 0;
    const char *p = spec ? spec : "";
    /* The port (last field) may itself contain ':' (host:port of a remote robot). */
    while (n < 4) {
        const char *c = n < 3 ? strchr(p, ':') : NULL;
        part[n] = p;
        len[n] = c ? (size_t)(c - p) : strlen(p);
        n++;
        if (!c) break;
        p = c + 1;
    }
    if (n < 2 || len[0] == 0 || len[1] == 0)
        return cr_err_set(err, CR_EINVAL, "robot spec '%.100s': expected name:driver[:model[:port]]",
                          spec ? spec : "");
    Corral__V1__RobotInfo *r = calloc(1, sizeof *r);
    if (!r) return cr_err_set(err, CR_ENOMEM, "robot spec");
    corral__v1__robot_info__init(r);
    r->name = dupn(part[0], len[0]);
    r->driver = dupn(part[1], len[1]);
    r->model = dupn(n > 2 ? part[2] : "", n > 2 ? len[2] : 0);
    r->port = dupn(n > 3 ? part[3] : "", n > 3 ? len[3] : 0);
    if (!r->name || !r->driver || !r->model || !r->port) {
        protobuf_c_message_free_unpacked(&r->base, NULL);
        return cr_err_set(err, CR_ENOMEM, "robot spec");
    }
    if (!cr_name_valid(r->name)) {
        cr_err_set(err, CR_EINVAL, "robot spec '%.100s': invalid robot name '%s' (a-z, 0-9, '_', '-', "
                   "at most 63 characters)", spec, r->name);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        return CR_EINVAL;
    }
    *out = r;
    return 0;
}

int agent_host_facts(const char *advertise, Corral__V1__HostFacts **out, cr_err_t *err)
{
    *out = NULL;
    Corral__V1__HostFacts *h = calloc(1, sizeof *h);
    if (!h) return cr_err_set(err, CR_ENOMEM, "host facts");
    corral__v1__host_facts__init(h);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    h->hostname = strdup(host);
    h->cores = cores > 0 ? (uint32_t)cores : 0;
    h->memory_bytes = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;
    h->accepts_inbound = advertise && *advertise;
    h->address = strdup(h->accepts_inbound ? advertise : "");
    if (!h->hostname || !h->address) {
        protobuf_c_message_free_unpacked(&h->base, NULL);
        return cr_err_set(err, CR_ENOMEM, "host facts");
    }
    *out = h;
    return 0;
}

/* Parses CORRAL_SIM_GPUS, "COUNTxMODEL-MEMGB" entries separated by ',' (e.g.
 * "2xH100-80GB"), the simulated GPUs the HAL's probe also understands. */
static int sim_gpus(const char *spec, Corral__V1__GpuInfo ***gpus, size_t *n, cr_err_t *err)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        unsigned count = 0, gb = 0;
        char model[128];
        char *x = strchr(tok, 'x');
        char *dash = strrchr(tok, '-');
        if (!x || !dash || dash < x || sscanf(tok, "%u", &count) != 1 ||
            sscanf(dash + 1, "%uGB", &gb) != 1 || count == 0 || count > 64 || gb == 0)
            return cr_err_set(err, CR_EINVAL, "CORRAL_SIM_GPUS entry '%s': expected COUNTxMODEL-MEMGB, "
                              "e.g. 2xH100-80GB", tok);
        snprintf(model, sizeof model, "%.*s", (int)(dash - x - 1), x + 1);
        for (unsigned i = 0; i < count; i++) {
            Corral__V1__GpuInfo *g = calloc(1, sizeof *g);
            Corral__V1__GpuInfo **grown = realloc(*gpus, (*n + 1) * sizeof **gpus);
            if (!g || !grown) {
                free(g);
                return cr_err_set(err, CR_ENOMEM, "GPU list");
            }
            *gpus = grown;
            corral__v1__gpu_info__init(g);
            g->index = (uint32_t)*n;
            g->model = strdup(model);
            g->memory_bytes = (uint64_t)gb << 30;
            char uuid[64];
            snprintf(uuid, sizeof uuid, "sim-%s-%zu", model, *n);
            for (char *c = uuid; *c; c++) *c = (char)tolower((unsigned char)*c);
            g->uuid = strdup(uuid);
            (*gpus)[(*n)++] = g;
        }
    }
    return 0;
}

int agent_gpu_probe(Corral__V1__GpuInfo ***gpus, size_t *n, cr_err_t *err)
{
    *gpus = NULL;
    *n = 0;
    /* The HAL's probe (NVML / CUDA) replaces this once hal/ provides it; until then
     * only simulated GPUs are reported, and a machine without them reports none. */
    const char *sim = getenv("CORRAL_SIM_GPUS");
    if (sim && *sim) {
        int rc = sim_gpus(sim, gpus, n, err);
        if (rc) {
            for (size_t i = 0; i < *n; i++) protobuf_c_message_free_unpacked(&(*gpus)[i]->base, NULL);
            free(*gpus);
            *gpus = NULL;
            *n = 0;
        }
        return rc;
    }
    return 0;
}
