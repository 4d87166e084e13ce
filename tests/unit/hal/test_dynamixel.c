/* test_dynamixel.c - the Protocol 2.0 bus and the dynamixel driver against the
 * servo emulator on a pseudo-terminal: ping, read/write, sync read/write,
 * torque, byte stuffing, and the faults a real bus has (CRC errors, time-outs,
 * a servo that stops answering, garbage on the line). */
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#include "tests/harness.h"
#include "hal/hal.h"
#include "dxl_emu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const int ids3[] = {1, 2, 3};

static void test_crc_vector(void)
{
    /* The specification's example: ping to id 1 ends with CRC 19 4E. */
    const uint8_t ping[] = {0xFF, 0xFF, 0xFD, 0x00, 0x01, 0x03, 0x00, 0x01};
    ASSERT_INT_EQ(hal_dxl_crc(0, ping, sizeof ping), 0x4E19);
}

static void test_ping_read_write(void)
{
    dxl_emu_t *emu;
    ASSERT_INT_EQ(dxl_emu_start(ids3, 3, &emu), 0);
    hal_dxl_bus_t *bus;
    cr_err_t err = {0};
    ASSERT_OK(hal_dxl_open(dxl_emu_port(emu), 1000000, 200, &bus, &err), &err);
    int found[8], n;
    uint16_t models[8];
    ASSERT_OK(hal_dxl_ping(bus, 2, found, models, 8, &n, &err), &err);
    ASSERT_INT_EQ(n, 1);
    ASSERT_INT_EQ(found[0], 2);
    ASSERT_INT_EQ(models[0], 1060);
    ASSERT_OK(hal_dxl_ping(bus, HAL_DXL_BROADCAST, found, models, 8, &n, &err), &err);
    ASSERT_INT_EQ(n, 3);
    ASSERT_INT_EQ(found[0] + found[1] + found[2], 6);
    ASSERT_INT_EQ(hal_dxl_ping(bus, 9, found, models, 8, &n, &err), CR_ETIMEDOUT);
    ASSERT_TRUE(strstr(err.msg, "no reply from id 9") != NULL);

    /* Write and read back a value that needs byte stuffing both ways. */
    uint8_t v[4] = {0xFF, 0xFF, 0xFD, 0x00}, back[4] = {0};
    ASSERT_OK(hal_dxl_write(bus, 1, HAL_DXL_GOAL_POSITION, v, 4, &err), &err);
    ASSERT_OK(hal_dxl_read(bus, 1, HAL_DXL_GOAL_POSITION, back, 4, &err), &err);
    ASSERT_TRUE(memcmp(v, back, 4) == 0);
    ASSERT_INT_EQ(dxl_emu_goal(emu, 1), 0x00FDFFFF);

    /* Sync write then sync read of present position (torque on: it follows). */
    uint8_t on = 1;
    for (int i = 0; i < 3; i++) ASSERT_OK(hal_dxl_write(bus, ids3[i], HAL_DXL_TORQUE_ENABLE, &on, 1, &err), &err);
    uint8_t goals[12];
    for (int i = 0; i < 3; i++) {
        int32_t g = 1000 + 500 * i;
        memcpy(goals + 4 * i, &g, 4);   /* little-endian host */
    }
    ASSERT_OK(hal_dxl_sync_write(bus, ids3, 3, HAL_DXL_GOAL_POSITION, 4, goals, &err), &err);
    uint8_t pos[12];
    ASSERT_OK(hal_dxl_sync_read(bus, ids3, 3, HAL_DXL_PRESENT_POSITION, 4, pos, &err), &err);
    ASSERT_TRUE(memcmp(pos, goals, 12) == 0);
    hal_dxl_close(bus);
    dxl_emu_stop(emu);
}

static hal_robot_t *open_arm(dxl_emu_t *emu, cr_err_t *err, int *rc)
{
    char port[200];
    snprintf(port, sizeof port, "port=%s", dxl_emu_port(emu));
    const char *kv[] = {port, "ids=1,2,3", "baud=1000000", "timeout_ms=150", "max_step=0.2",
                        "watchdog_thread=0"};
    hal_opt_t opts[6];
    hal_opts_parse(kv, 6, opts, err);
    hal_robot_t *r = NULL;
    *rc = hal_robot_open("dxl-arm", "dynamixel", "", opts, 6, &r, err);
    return r;
}

static void test_driver(void)
{
    dxl_emu_t *emu;
    ASSERT_INT_EQ(dxl_emu_start(ids3, 3, &emu), 0);
    dxl_emu_set_present(emu, 2, 2048 + 512, 10);   /* joint 2 stands at +pi/4 */
    cr_err_t err = {0};
    int rc;
    hal_robot_t *r = open_arm(emu, &err, &rc);
    ASSERT_OK(rc, &err);
    /* Open: goal set to where each servo stands, then torque on. */
    ASSERT_INT_EQ(dxl_emu_goal(emu, 2), 2048 + 512);
    for (int i = 0; i < 3; i++) ASSERT_INT_EQ(dxl_emu_torque(emu, ids3[i]), 1);
    const hal_robot_desc_t *d = hal_robot_desc(r);
    ASSERT_INT_EQ(d->act.dim, 3);
    ASSERT_INT_EQ(d->act.mode, HAL_CTRL_JOINT_POSITION);
    ASSERT_TRUE(d->realtime);
    hal_obs_t o;
    ASSERT_OK(hal_obs_alloc(d, 0, &o, &err), &err);
    ASSERT_OK(hal_robot_reset(r, 0, &o, &err), &err);
    ASSERT_NEAR(o.vec[1], M_PI / 4, 1e-3);
    ASSERT_NEAR(o.vec[3 + 1], 10 * 0.229 * 2 * M_PI / 60, 1e-4);
    /* Act: goal changes are capped at 0.2 rad per step by the safety layer. */
    float a[3] = {0.1f, (float)(M_PI / 4), -1.0f};
    ASSERT_OK(hal_robot_step(r, a, &o, &err), &err);
    ASSERT_NEAR(o.vec[0], 0.1, 2e-3);
    ASSERT_NEAR(o.vec[2], -0.2, 2e-3);
    ASSERT_INT_EQ(dxl_emu_goal(emu, 3), (int)lround(2048 - 0.2 * 4096 / (2 * M_PI)));
    hal_safety_stats_t s;
    hal_robot_safety_stats(r, &s);
    ASSERT_INT_EQ(s.capped_step, 1);
    /* E-stop holds where the arm is and latches. */
    ASSERT_OK(hal_robot_estop(r, &err), &err);
    ASSERT_INT_EQ(hal_robot_act(r, a, &err), CR_EBUSY);
    hal_obs_free(&o);
    hal_robot_close(r);
    for (int i = 0; i < 3; i++) ASSERT_INT_EQ(dxl_emu_torque(emu, ids3[i]), 0);   /* torque off at close */
    dxl_emu_stop(emu);
}

static void test_faults(void)
{
    dxl_emu_t *emu;
    ASSERT_INT_EQ(dxl_emu_start(ids3, 3, &emu), 0);
    cr_err_t err = {0};
    int rc;
    hal_robot_t *r = open_arm(emu, &err, &rc);
    ASSERT_OK(rc, &err);
    hal_obs_t o;
    ASSERT_OK(hal_obs_alloc(hal_robot_desc(r), 0, &o, &err), &err);
    ASSERT_OK(hal_robot_observe(r, &o, &err), &err);

    dxl_emu_corrupt_crc(emu, 1);
    ASSERT_INT_EQ(hal_robot_observe(r, &o, &err), CR_ECORRUPT);
    ASSERT_TRUE(strstr(err.msg, "robot dxl-arm") && strstr(err.msg, "CRC mismatch"));
    ASSERT_OK(hal_robot_observe(r, &o, &err), &err);          /* recovers */

    dxl_emu_drop(emu, 1);
    ASSERT_INT_EQ(hal_robot_observe(r, &o, &err), CR_ETIMEDOUT);
    ASSERT_TRUE(strstr(err.msg, "no reply from id 1") != NULL);
    ASSERT_OK(hal_robot_observe(r, &o, &err), &err);

    dxl_emu_garbage(emu, 1);
    rc = hal_robot_observe(r, &o, &err);
    ASSERT_TRUE(rc == CR_EPROTO || rc == CR_ETIMEDOUT);
    ASSERT_TRUE(strstr(err.msg, "robot dxl-arm") != NULL);
    ASSERT_OK(hal_robot_observe(r, &o, &err), &err);

    dxl_emu_kill(emu, 2);
    ASSERT_INT_EQ(hal_robot_observe(r, &o, &err), CR_ETIMEDOUT);
    ASSERT_TRUE(strstr(err.msg, "id 2") != NULL);
    hal_health_t h;
    hal_robot_health(r, &h);
    ASSERT_INT_EQ(h.ok, 0);
    ASSERT_TRUE(h.errors >= 4);
    ASSERT_TRUE(strstr(h.detail, "id 2") != NULL);
    hal_obs_free(&o);
    hal_robot_close(r);

    /* Opening an arm whose servo does not answer fails naming it. */
    r = open_arm(emu, &err, &rc);
    ASSERT_INT_EQ(rc, CR_ETIMEDOUT);
    ASSERT_TRUE(r == NULL);
    ASSERT_TRUE(strstr(err.msg, "robot dxl-arm") && strstr(err.msg, "id 2"));
    dxl_emu_stop(emu);
}

/* A failed sync read whose other replies come late (after the driver's drain
 * found the line quiet, and after the next request's flush) must not poison the
 * next exchange: those replies are from other ids than the one awaited. */
static void test_late_replies_dropped(void)
{
    dxl_emu_t *emu;
    ASSERT_INT_EQ(dxl_emu_start(ids3, 3, &emu), 0);
    for (int i = 0; i < 3; i++) dxl_emu_set_present(emu, ids3[i], 1000 + 100 * i, 0);
    hal_dxl_bus_t *bus;
    cr_err_t err = {0};
    ASSERT_OK(hal_dxl_open(dxl_emu_port(emu), 1000000, 300, &bus, &err), &err);
    uint8_t pos[12];
    dxl_emu_corrupt_crc(emu, 1);
    dxl_emu_gap(emu, 60);   /* ids 2 and 3 answer 60 ms after id 1's bad packet */
    ASSERT_INT_EQ(hal_dxl_sync_read(bus, ids3, 3, HAL_DXL_PRESENT_POSITION, 4, pos, &err), CR_ECORRUPT);
    ASSERT_OK(hal_dxl_sync_read(bus, ids3, 3, HAL_DXL_PRESENT_POSITION, 4, pos, &err), &err);
    for (int i = 0; i < 3; i++) {
        int32_t v;
        memcpy(&v, pos + 4 * i, 4);
        ASSERT_INT_EQ(v, 1000 + 100 * i);
    }
    hal_dxl_close(bus);
    dxl_emu_stop(emu);
}

static void test_bad_config(void)
{
    cr_err_t err = {0};
    hal_robot_t *r = NULL;
    const char *kv[] = {"port=/dev/does-not-exist-dxl", "ids=1"};
    hal_opt_t opts[2];
    hal_opts_parse(kv, 2, opts, &err);
    ASSERT_INT_EQ(hal_robot_open("a", "dynamixel", "", opts, 2, &r, &err), CR_ENOENT);
    ASSERT_TRUE(strstr(err.msg, "/dev/does-not-exist-dxl") != NULL);
    const char *kv2[] = {"port=/dev/null", "ids=1,x"};
    hal_opts_parse(kv2, 2, opts, &err);
    ASSERT_INT_EQ(hal_robot_open("a", "dynamixel", "", opts, 2, &r, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "ids='1,x'") != NULL);
    const char *kv3[] = {"port=/dev/null", "ids=1"};
    hal_opts_parse(kv3, 2, opts, &err);
    ASSERT_INT_EQ(hal_robot_open("a", "dynamixel", "", opts, 2, &r, &err), CR_EIO);
    ASSERT_TRUE(strstr(err.msg, "not a terminal") != NULL);
    const char *kv4[] = {"ids=1"};
    hal_opts_parse(kv4, 1, opts, &err);
    ASSERT_INT_EQ(hal_robot_open("a", "dynamixel", "", opts, 1, &r, &err), CR_EINVAL);
    ASSERT_TRUE(strstr(err.msg, "option port is required") != NULL);
}

static void test_probe(void)
{
    dxl_emu_t *emu;
    ASSERT_INT_EQ(dxl_emu_start(ids3, 3, &emu), 0);
    setenv("CORRAL_ROBOTS_DIR", test_source_path("configs/robots"), 1);
    setenv("CORRAL_SIM_GPUS", "1xH100-80GB", 1);
    hal_probe_t *p = malloc(sizeof *p);
    cr_err_t err = {0};
    const char *ports[] = {dxl_emu_port(emu), "/dev/does-not-exist-dxl"};
    ASSERT_OK(hal_probe_run(ports, 2, 0, p, &err), &err);
    ASSERT_INT_EQ(p->n_ports, 2);
    ASSERT_INT_EQ(p->ports[0].n_servos, 3);
    ASSERT_INT_EQ(p->ports[0].models[0], 1060);
    ASSERT_INT_EQ(p->ports[1].n_servos, 0);
    ASSERT_TRUE(strstr(p->ports[1].error, "does-not-exist") != NULL);
    ASSERT_INT_EQ(p->n_gpus, 1);
    ASSERT_TRUE(p->n_models >= 3);
    char *json = hal_probe_json(p);
    ASSERT_TRUE(json && strstr(json, "\"reach2d\"") && strstr(json, "\"simulated\":\ttrue"));
    free(json);
    free(p);

    /* The same through the CLI, as a user runs it. */
    const char *bin = test_build_path("corral");
    if (access(bin, X_OK) == 0) {
        char cmd[2048], out[16384];
        snprintf(cmd, sizeof cmd, "%s hal probe --json --port %s", bin, dxl_emu_port(emu));
        FILE *f = popen(cmd, "r");
        ASSERT_TRUE(f != NULL);
        size_t n = fread(out, 1, sizeof out - 1, f);
        out[n] = 0;
        ASSERT_INT_EQ(pclose(f), 0);
        ASSERT_TRUE(strstr(out, "\"id\":\t3") && strstr(out, "H100") && strstr(out, "push"));
    }
    unsetenv("CORRAL_SIM_GPUS");
    dxl_emu_stop(emu);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"crc_vector", test_crc_vector},
        {"ping_read_write", test_ping_read_write},
        {"driver", test_driver},
        {"faults", test_faults},
        {"late_replies_dropped", test_late_replies_dropped},
        {"bad_config", test_bad_config},
        {"probe", test_probe},
        {NULL, NULL},
    };
    return test_main("hal_dynamixel", cases, argc, argv);
}
