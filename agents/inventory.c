/* inventory.c - what a node offers, gathered for the agent's Inventory message:
 * robot specs from the command line, host facts from the kernel, GPUs from the
 * HAL's probe (simulated GPUs from CORRAL_SIM_GPUS, else NVML, else the CUDA
 * runtime). Everything here is read once at agent start. */
#include "agents/agent.h"
#include "common/id.h"
#include "hal/hal.h"

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

int agent_gpu_probe(Corral__V1__GpuInfo ***gpus, size_t *n, cr_err_t *err)
{
    *gpus = NULL;
    *n = 0;
    hal_gpu_t found[HAL_MAX_GPUS];
    int count = 0;
    char source[32] = "";
    int rc = hal_gpu_probe(NULL, found, HAL_MAX_GPUS, &count, source, err);
    if (rc) return cr_err_wrap(err, "GPU probe");
    if (count == 0) return 0;
    *gpus = calloc((size_t)count, sizeof **gpus);
    if (!*gpus) return cr_err_set(err, CR_ENOMEM, "GPU list");
    for (int i = 0; i < count; i++) {
        Corral__V1__GpuInfo *g = calloc(1, sizeof *g);
        char uuid[64];
        snprintf(uuid, sizeof uuid, "%s-%d", source, found[i].index);
        if (g) {
            corral__v1__gpu_info__init(g);
            g->index = (uint32_t)found[i].index;
            g->model = strdup(found[i].model);
            g->memory_bytes = found[i].mem_total;
            g->uuid = strdup(uuid);
        }
        if (!g || !g->model || !g->uuid) {
            if (g) protobuf_c_message_free_unpacked(&g->base, NULL);
            for (size_t j = 0; j < *n; j++) protobuf_c_message_free_unpacked(&(*gpus)[j]->base, NULL);
            free(*gpus);
            *gpus = NULL;
            *n = 0;
            return cr_err_set(err, CR_ENOMEM, "GPU list");
        }
        (*gpus)[(*n)++] = g;
    }
    return 0;
}
