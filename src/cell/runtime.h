/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Running a container with the OCI runtime (crun by default, runc selectable): the foreground path of
 * `berth run --rm`. The state lives under <data-dir>/cell/: bundles in containers/<id>/, the runtime's
 * state root in runtime/.
 */
#pragma once

#include <stdint.h>

#include "cell/process.h"
#include "image/store.h"
#include "lib/err.h"

struct run_opts {
        const char *data_dir;
        const char *runtime; /* NULL: "crun" */
        const char *image;   /* reference, digest or id in the store */
        struct process_overrides process;
        uint64_t memory_bytes; /* 0: unlimited */
        uint64_t pids;         /* 0: default */
        const char *name;      /* NULL: a random id */
};

/*
 * Create the rootfs and bundle, run the container attached to this process's stdio, wait for it, and remove
 * everything it created. *ret_exit_code is the container's exit status (128+N for a signal N), like
 * `docker run`. An error before the process started (bad user, no command...) returns < 0.
 */
int cell_run_foreground(struct image_store *s, const struct run_opts *o, int *ret_exit_code,
                        struct berr **err);
