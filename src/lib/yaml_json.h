/* SPDX-License-Identifier: Apache-2.0 */
/* YAML → jansson. Plain scalars resolve to null/bool/int/real like YAML 1.2's core schema; quoted stay
 * strings. */
#pragma once

#include <jansson.h>
#include <stddef.h>

#include "lib/err.h"

#define YAML_MAX_DEPTH 64
#define YAML_MAX_NODES 100000

/* Parse one YAML document (len bytes). Anchors and aliases are refused (billion-laughs). Caller owns *ret. */
int yaml_to_json(const char *buf, size_t len, json_t **ret, struct berr **err);
