/* probe.c - what hardware this node has, for `corral hal probe` and the agent's
 * inventory: GPUs, serial ports with Dynamixel servos answering a broadcast
 * ping, and the simulated robots it can offer. A device that fails to answer is
 * a line in the report, never a failure of the probe. */
#include "hal/hal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void probe_port(const char *path, int baud, hal_probe_port_t *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->path, sizeof p->path, "%s", path);
    const int bauds[] = {57600, 1000000};
    int nb = baud ? 1 : 2;
    for (int b = 0; b < nb; b++) {
        p->baud = baud ? baud : bauds[b];
        hal_dxl_bus_t *bus;
        cr_err_t e = {0};
        if (hal_dxl_open(path, p->baud, 100, &bus, &e) != 0) {
            snprintf(p->error, sizeof p->error, "%s", e.msg);
            return;
        }
        int rc = hal_dxl_ping(bus, HAL_DXL_BROADCAST, p->ids, p->models, HAL_PROBE_MAX_SERVOS,
                              &p->n_servos, &e);
        hal_dxl_close(bus);
        if (rc) snprintf(p->error, sizeof p->error, "%s", e.msg);
        if (p->n_servos > 0) return;
    }
}

static void probe_model(const char *name, hal_probe_model_t *m)
{
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    hal_robot_t *r;
    cr_err_t e = {0};
    if (hal_robot_open("probe", "mujoco", name, NULL, 0, &r, &e) != 0) {
        snprintf(m->error, sizeof m->error, "%s", e.msg);
        return;
    }
    const hal_robot_desc_t *d = hal_robot_desc(r);
    m->obs_dim = d->obs.vec_total;
    m->act_dim = d->act.dim;
    m->n_cams = d->obs.n_cams;
    snprintf(m->mode, sizeof m->mode, "%s", hal_ctrl_mode_name(d->act.mode));
    m->rate_hz = d->rate_hz;
    m->episode_steps = d->episode_steps;
    hal_robot_close(r);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void probe_models(hal_probe_t *out)
{
    DIR *dir = opendir(hal_mujoco_models_dir());
    if (!dir) return;
    char *names[16];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dir)) && n < 16) {
        size_t len = strlen(de->d_name);
        if (len > 4 && strcmp(de->d_name + len - 4, ".xml") == 0)
            names[n++] = strndup(de->d_name, len - 4);
    }
    closedir(dir);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    for (int i = 0; i < n; i++) {
        if (names[i]) probe_model(names[i], &out->models[out->n_models++]);
        free(names[i]);
    }
}

int hal_probe_run(const char *const *ports, int n_ports, int baud, hal_probe_t *out, cr_err_t *err)
{
    memset(out, 0, sizeof *out);
    cr_err_t e = {0};
    if (hal_gpu_probe(NULL, out->gpus, HAL_MAX_GPUS, &out->n_gpus, out->gpu_source, &e) != 0)
        return cr_err_set(err, e.code, "%s", e.msg);
    if (n_ports > 0) {
        for (int i = 0; i < n_ports && out->n_ports < HAL_PROBE_MAX_PORTS; i++)
            probe_port(ports[i], baud, &out->ports[out->n_ports++]);
    } else {
        const char *patterns[] = {"/dev/ttyUSB*", "/dev/ttyACM*"};
        for (size_t k = 0; k < 2; k++) {
            glob_t g;
            if (glob(patterns[k], 0, NULL, &g) == 0)
                for (size_t i = 0; i < g.gl_pathc && out->n_ports < HAL_PROBE_MAX_PORTS; i++)
                    probe_port(g.gl_pathv[i], baud, &out->ports[out->n_ports++]);
            globfree(&g);
        }
    }
    probe_models(out);
    return 0;
}

char *hal_probe_json(const hal_probe_t *p)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *gpus = cJSON_AddArrayToObject(root, "gpus");
    cJSON_AddStringToObject(root, "gpu_source", p->gpu_source);
    for (int i = 0; i < p->n_gpus; i++) {
        const hal_gpu_t *g = &p->gpus[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", g->index);
        cJSON_AddStringToObject(o, "model", g->model);
        cJSON_AddNumberToObject(o, "mem_total", (double)g->mem_total);
        cJSON_AddNumberToObject(o, "mem_free", (double)g->mem_free);
        char cc[16];
        snprintf(cc, sizeof cc, "%d.%d", g->cc_major, g->cc_minor);
        cJSON_AddStringToObject(o, "compute_capability", cc);
        cJSON_AddNumberToObject(o, "utilization", g->util_pct);
        cJSON_AddBoolToObject(o, "simulated", g->simulated);
        cJSON_AddItemToArray(gpus, o);
    }
    cJSON *ports = cJSON_AddArrayToObject(root, "serial_ports");
    for (int i = 0; i < p->n_ports; i++) {
        const hal_probe_port_t *sp = &p->ports[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", sp->path);
        cJSON_AddNumberToObject(o, "baud", sp->baud);
        cJSON *servos = cJSON_AddArrayToObject(o, "servos");
        for (int k = 0; k < sp->n_servos; k++) {
            cJSON *s = cJSON_CreateObject();
            cJSON_AddNumberToObject(s, "id", sp->ids[k]);
            cJSON_AddNumberToObject(s, "model", sp->models[k]);
            cJSON_AddItemToArray(servos, s);
        }
        if (sp->error[0] && sp->n_servos == 0) cJSON_AddStringToObject(o, "error", sp->error);
        cJSON_AddItemToArray(ports, o);
    }
    cJSON *models = cJSON_AddArrayToObject(root, "sim_robots");
    for (int i = 0; i < p->n_models; i++) {
        const hal_probe_model_t *m = &p->models[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", m->name);
        cJSON_AddStringToObject(o, "driver", "mujoco");
        if (m->error[0]) {
            cJSON_AddStringToObject(o, "error", m->error);
        } else {
            cJSON_AddNumberToObject(o, "obs_dim", m->obs_dim);
            cJSON_AddNumberToObject(o, "act_dim", m->act_dim);
            cJSON_AddStringToObject(o, "mode", m->mode);
            cJSON_AddNumberToObject(o, "rate_hz", m->rate_hz);
            cJSON_AddNumberToObject(o, "episode_steps", m->episode_steps);
        }
        cJSON_AddItemToArray(models, o);
    }
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    return s;
}
