/* dxl_emu.h - a Dynamixel Protocol 2.0 servo emulator on a pseudo-terminal, for
 * testing the dynamixel driver without hardware. Its packet parser and CRC are
 * written independently of hal/dxl_bus.c (the CRC from the specification's
 * table), so the two check each other. Faults are injected per reply. */
#ifndef CORRAL_TESTS_DXL_EMU_H
#define CORRAL_TESTS_DXL_EMU_H

#include <stdint.h>

typedef struct dxl_emu dxl_emu_t;

/* Starts servos with the given ids (model 1060, position 2048) on a new pty. */
int dxl_emu_start(const int *ids, int n, dxl_emu_t **out);
void dxl_emu_stop(dxl_emu_t *e);
const char *dxl_emu_port(const dxl_emu_t *e);   /* the slave side, e.g. /dev/pts/7 */

void dxl_emu_corrupt_crc(dxl_emu_t *e, int n);  /* the next n replies carry a bad CRC */
void dxl_emu_drop(dxl_emu_t *e, int n);         /* the next n replies are not sent */
void dxl_emu_garbage(dxl_emu_t *e, int n);      /* the next n replies are noise */
void dxl_emu_kill(dxl_emu_t *e, int id);        /* this servo never answers again */
void dxl_emu_gap(dxl_emu_t *e, int ms);         /* in the next sync read, the replies after
                                                   the first come ms later (a slow bus) */
int dxl_emu_torque(dxl_emu_t *e, int id);
int32_t dxl_emu_goal(dxl_emu_t *e, int id);
void dxl_emu_set_present(dxl_emu_t *e, int id, int32_t pos, int32_t vel);
int dxl_emu_packets(dxl_emu_t *e);              /* instruction packets received */

#endif
