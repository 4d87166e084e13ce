/* hal.c - `corral hal probe [--json] [--port PATH]... [--baud N]`: the hardware
 * this machine offers (GPUs, Dynamixel servos on serial ports, simulated robots),
 * as text for people or JSON for scripts. */
#include "cli/cli.h"
#include "hal/hal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: corral hal probe [--json] [--port PATH]... [--baud N]\n"
                 "  GPUs (NVML, CUDA runtime or CORRAL_SIM_GPUS), serial ports with Dynamixel\n"
                 "  servos answering a broadcast ping (default /dev/ttyUSB*, /dev/ttyACM*),\n"
                 "  and the simulated robots in configs/robots (CORRAL_ROBOTS_DIR).\n");
}

static void print_text(const hal_probe_t *p)
{
    printf("GPUs (%s): %d\n", p->gpu_source, p->n_gpus);
    if (p->n_gpus == 0) printf("  no GPUs\n");
    for (int i = 0; i < p->n_gpus; i++) {
        const hal_gpu_t *g = &p->gpus[i];
        printf("  %d  %-20s %6.1f GiB total %6.1f GiB free  cc %d.%d  util %d%%%s\n", g->index,
               g->model, (double)g->mem_total / (1 << 30), (double)g->mem_free / (1 << 30),
               g->cc_major, g->cc_minor, g->util_pct, g->simulated ? "  (simulated)" : "");
    }
    printf("serial ports: %d\n", p->n_ports);
    for (int i = 0; i < p->n_ports; i++) {
        const hal_probe_port_t *sp = &p->ports[i];
        printf("  %s @ %d: ", sp->path, sp->baud);
        if (sp->n_servos == 0) printf("no servos%s%s\n", sp->error[0] ? ": " : "", sp->error);
        for (int k = 0; k < sp->n_servos; k++)
            printf("id %d (model %u)%s", sp->ids[k], sp->models[k], k + 1 < sp->n_servos ? ", " : "\n");
    }
    printf("simulated robots: %d\n", p->n_models);
    for (int i = 0; i < p->n_models; i++) {
        const hal_probe_model_t *m = &p->models[i];
        if (m->error[0]) printf("  %-10s error: %s\n", m->name, m->error);
        else
            printf("  %-10s obs %d  act %d (%s)  %.0f Hz  %d steps/episode\n", m->name, m->obs_dim,
                   m->act_dim, m->mode, m->rate_hz, m->episode_steps);
    }
}

int cli_hal_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EUSER : CLI_OK;
    }
    if (strcmp(argv[1], "probe") != 0) {
        fprintf(stderr, "corral hal: unknown subcommand '%s'\n", argv[1]);
        usage(stderr);
        return CLI_EUSER;
    }
    int json = 0, baud = 0, n_ports = 0;
    const char *ports[HAL_PROBE_MAX_PORTS];
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            if (n_ports == HAL_PROBE_MAX_PORTS) {
                fprintf(stderr, "corral hal probe: at most %d ports\n", HAL_PROBE_MAX_PORTS);
                return CLI_EUSER;
            }
            ports[n_ports++] = argv[++i];
        } else if (strcmp(argv[i], "--baud") == 0 && i + 1 < argc) {
            char *end;
            long b = strtol(argv[++i], &end, 10);
            if (*end || b <= 0) {
                fprintf(stderr, "corral hal probe: --baud '%s' is not a baud rate\n", argv[i]);
                return CLI_EUSER;
            }
            baud = (int)b;
        } else {
            fprintf(stderr, "corral hal probe: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return CLI_EUSER;
        }
    }
    hal_probe_t *p = malloc(sizeof *p);
    if (!p) return CLI_EUSER;
    cr_err_t err = {0};
    if (hal_probe_run(ports, n_ports, baud, p, &err) != 0) {
        fprintf(stderr, "corral hal probe: %s\n", err.msg);
        free(p);
        return CLI_EUSER;
    }
    if (json) {
        char *s = hal_probe_json(p);
        if (s) printf("%s\n", s);
        free(s);
    } else {
        print_text(p);
    }
    free(p);
    return CLI_OK;
}
