/* main.c - the one corral binary: looks the first argument up in the subcommand
 * table (commands.def) and hands over argc/argv. Daemons (controller, agent,
 * worker) and the user CLI are all subcommands, so one file deploys everything. */
#include "cli/cli.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef CORRAL_VERSION
#define CORRAL_VERSION "0.1.0"
#endif

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} command_t;

static const command_t commands[] = {
#define X(name, fn, summary) {name, fn, summary},
#include "cli/commands.def"
#undef X
};

static void usage(FILE *out)
{
    fprintf(out, "usage: corral [--controller ADDR] [--tls DIR] [--token-file F] <command> [options]\n\n"
                 "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nRun 'corral <command> --help' for a command's options.\n");
}

int cli_version_main(int argc, char **argv)
{
    (void)argc; (void)argv;
    printf("corral %s\n", CORRAL_VERSION);
    return CLI_OK;
}

int main(int argc, char **argv)
{
    /* `corral --controller ADDR --tls DIR --token-file F <command> ...`: the global
     * form of the options, handed to every command through the environment it
     * already reads. */
    static const char *const global[][2] = {{"--controller", "CORRAL_CONTROLLER"},
                                            {"--tls", "CORRAL_TLS_DIR"},
                                            {"--token-file", "CORRAL_TOKEN_FILE"}};
    for (int k = 0; argc > 2 && k < 3;) {
        if (strcmp(argv[1], global[k][0]) != 0) {
            k++;
            continue;
        }
        setenv(global[k][1], argv[2], 1);
        argc -= 2;
        argv += 2;
        k = 0;
    }
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EUSER : CLI_OK;
    }
    if (strcmp(argv[1], "--version") == 0) return cli_version_main(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "corral: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return CLI_EUSER;
}
