/* exp.c - `corral exp`: the user's experiments. The verbs that need no controller
 * live here today: `validate` checks an experiment file (with --set overrides)
 * exactly as `submit` will, and `doc` prints every field of the file. */
#include "cli/cli.h"
#include "common/expspec/expspec.h"

#include <stdio.h>
#include <string.h>

#define MAX_SETS 64

static const char usage_text[] =
    "usage: corral exp <verb> [options]\n"
    "  validate FILE [--set key=value ...]   check an experiment file as submit does\n"
    "  doc                                   every field of an experiment file, with defaults\n";

static const char *const policy_names[] = {"mlp", "cnn", "flow", "vla"};

static void summary(const exp_spec_t *s)
{
    printf("name:        %s\n", s->name);
    if (s->robots.n_names) {
        printf("robots:     ");
        for (size_t i = 0; i < s->robots.n_names; i++) printf(" %s", s->robots.names[i]);
        printf("\n");
    } else {
        printf("robots:      %d with driver=%s model=%s%s\n", (int)s->robots.count,
               *s->robots.driver ? s->robots.driver : "any", *s->robots.model ? s->robots.model : "any",
               s->robots.n_labels ? " and labels" : "");
    }
    printf("task:        reward %s, %g Hz, %d steps per episode (0: the robot's)\n", s->task.reward,
           s->task.control_hz, (int)s->task.episode_steps);
    printf("policy:      %s", policy_names[s->policy.type]);
    for (size_t i = 0; i < s->policy.n_hidden; i++) printf("%s%d", i ? "x" : " ", (int)s->policy.hidden[i]);
    printf("\nalgorithm:   %s, batch %lld, lr %g, utd %g, max staleness %lld\n", s->algorithm.type,
           (long long)s->algorithm.batch_size, s->algorithm.lr, s->algorithm.utd,
           (long long)s->algorithm.max_staleness);
    if (s->learner.gpus) printf("learner:     %d GPUs\n", (int)s->learner.gpus);
    else printf("learner:     CPU\n");
    printf("stop:        env_steps %lld, updates %lld, success_rate %g, wall_time %llds\n",
           (long long)s->stop.env_steps, (long long)s->stop.updates, s->stop.success_rate,
           (long long)(s->stop.wall_time / 1000000000LL));
}

static int validate(int argc, char **argv)
{
    const char *file = NULL, *sets[MAX_SETS];
    size_t nsets = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            if (nsets == MAX_SETS) {
                fprintf(stderr, "corral exp validate: at most %d --set\n", MAX_SETS);
                return CLI_EUSER;
            }
            sets[nsets++] = argv[++i];
        } else if (strncmp(argv[i], "--set=", 6) == 0 && nsets < MAX_SETS) {
            sets[nsets++] = argv[i] + 6;
        } else if (argv[i][0] != '-' && !file) {
            file = argv[i];
        } else {
            fprintf(stderr, "corral exp validate: unexpected '%s'\n%s", argv[i], usage_text);
            return CLI_EUSER;
        }
    }
    if (!file) {
        fprintf(stderr, "corral exp validate: which file?\n%s", usage_text);
        return CLI_EUSER;
    }
    exp_spec_t spec;
    cr_err_t err = {0};
    if (exp_spec_load_file(&spec, file, sets, nsets, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        return CLI_EUSER;
    }
    summary(&spec);
    printf("ok: %s is a valid experiment file\n", file);
    exp_spec_free(&spec);
    return CLI_OK;
}

int cli_exp_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EUSER : CLI_OK;
    }
    if (strcmp(argv[1], "validate") == 0) return validate(argc, argv);
    if (strcmp(argv[1], "doc") == 0) return exp_spec_doc(stdout) == 0 ? CLI_OK : CLI_EUSER;
    fprintf(stderr, "corral exp: unknown verb '%s'\n%s", argv[1], usage_text);
    return CLI_EUSER;
}
