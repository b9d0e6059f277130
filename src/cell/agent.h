/* SPDX-License-Identifier: Apache-2.0 */
/* The cell agent (`berth cell`): runs the instances the controller desires, reports their state. */
#pragma once

#include "lib/config.h"
#include "lib/err.h"

/* Run the agent until SIGINT/SIGTERM. argv[0] is "cell". Returns a process exit code. */
int cell_agent_main(const char *data_dir, const char *config_path, const struct berth_config *cfg, int argc,
                    char **argv, struct berr **err);
