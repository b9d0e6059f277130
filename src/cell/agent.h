/* SPDX-License-Identifier: Apache-2.0 */
/* The cell agent (`berth cell`): runs the instances the controller desires, reports their state. */
#pragma once

#include <jansson.h>
#include <stddef.h>

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

#ifdef BERTH_TESTING
/* Internals of agent.c exported to unit tests. */
/* The CRASHED reason of an ended container from its inspect document and exit code. Caller frees. */
char *agent_exit_reason(const json_t *inspect_doc, int code);
/* Sort NDJSON log records by "time" (stable) and keep the last tail. Steals arr; new reference. */
json_t *agent_sort_tail(json_t *arr, size_t tail);
#endif
