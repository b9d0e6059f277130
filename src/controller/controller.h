/* SPDX-License-Identifier: Apache-2.0 */
/* The controller daemon (`berth controller`): API, store, auth, flags, staging, scheduling. docs/PLATFORM.md
 */
#pragma once

#include "lib/config.h"
#include "lib/err.h"

/*
 * Run the controller until SIGINT/SIGTERM. argv[0] is "controller"; options as in docs/PLATFORM.md.
 * Returns a process exit code; fills *err on failure (main prints it).
 */
int controller_main(const char *data_dir, const struct berth_config *cfg, int argc, char **argv,
                    struct berr **err);
