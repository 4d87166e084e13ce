/* drv.h - private helpers the HAL drivers share (not part of the public API):
 * a table-driven option parser, so each driver lists its settings once (name,
 * type, range, field, help) and every error names the robot and the option. */
#ifndef CORRAL_HAL_DRV_H
#define CORRAL_HAL_DRV_H

#include "hal/hal.h"

#include <stddef.h>

typedef enum drv_opt_type { DRV_INT, DRV_DOUBLE, DRV_BOOL, DRV_STR } drv_opt_type_t;

typedef struct drv_opt {
    const char *name;
    drv_opt_type_t type;
    double lo, hi;       /* range for numbers */
    size_t off;          /* offset of the field in the driver's config struct */
    size_t size;         /* DRV_STR: size of the char array */
    const char *help;
} drv_opt_t;

/* Applies opts onto cfg (already holding defaults). Unknown options, bad numbers
 * and values out of range are CR_EINVAL naming the robot and the option. */
int drv_opts_apply(const char *robot, const drv_opt_t *table, int n_table, const hal_opt_t *opts,
                   int n_opts, void *cfg, cr_err_t *err);

/* Fills one named vector into the spec, advancing vec_total. */
void drv_spec_vec(hal_obs_spec_t *spec, const char *name, const char *unit, int dim);

#endif
