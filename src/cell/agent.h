/* SPDX-License-Identifier: Apache-2.0 */
/* The cell agent (`berth cell`): runs the instances the controller desires, reports their state. */
#pragma once

#include <jansson.h>

#include "lib/config.h"
#include "lib/err.h"

/* Run the agent until SIGINT/SIGTERM. argv[0] is "cell". Returns a process exit code. */
int cell_agent_main(const char *data_dir, const char *config_path, const struct berth_config *cfg, int argc,
                    char **argv, struct berr **err);
/*
 * Check a desired LRP (PUT /v1/lrps/:guid body) strictly: unknown or ill-typed fields are errors whose
 * message starts with the field's name. guid: the instance guid of the URL.
 */
int cell_agent_lrp_validate(const json_t *body, const char *guid, struct berr **err);
