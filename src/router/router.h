/* SPDX-License-Identifier: Apache-2.0 */
/* The router daemon (`berth router`): event-driven HTTP proxy fed by the controller's route table. */
#pragma once

#include "lib/config.h"
#include "lib/err.h"

/* Run the router until SIGINT/SIGTERM (drains). argv[0] is "router". Returns a process exit code. */
int router_main(const struct berth_config *cfg, int argc, char **argv, struct berr **err);
