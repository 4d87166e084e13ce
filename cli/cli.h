/* cli.h - entry points of the `corral` subcommands and the exit codes they share.
 * Exit status: 0 ok, 1 user error, 2 controller unreachable (DESIGN.md / the CLI
 * contract scripts rely on). */
#ifndef CORRAL_CLI_CLI_H
#define CORRAL_CLI_CLI_H

enum { CLI_OK = 0, CLI_EUSER = 1, CLI_EUNREACHABLE = 2 };

#define X(name, fn, summary) int fn(int argc, char **argv);
#include "cli/commands.def"
#undef X

#endif
