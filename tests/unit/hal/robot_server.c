/* robot_server.c - a small RobotService server for the remote driver's tests:
 * opens a HAL robot (driver, model, key=value options from the command line),
 * serves it on 127.0.0.1 at a free port, prints "port N" and runs until killed.
 *     robot_server mock "" dof=3 */
#include "hal/hal.h"

#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: robot_server DRIVER MODEL [key=value]...\n");
        return 1;
    }
    hal_opt_t opts[32];
    int n = argc - 3 < 32 ? argc - 3 : 32;
    cr_err_t err = {0};
    hal_robot_t *r;
    hal_remote_server_t *srv;
    if (hal_opts_parse((const char *const *)argv + 3, n, opts, &err) ||
        hal_robot_open("served", argv[1], argv[2], opts, n, &r, &err) ||
        hal_remote_server_create(r, "127.0.0.1:0", NULL, &srv, &err)) {
        fprintf(stderr, "robot_server: %s\n", err.msg);
        return 1;
    }
    printf("port %d\n", hal_remote_server_port(srv));
    fflush(stdout);
    for (;;) pause();
}
