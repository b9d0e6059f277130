/* SPDX-License-Identifier: Apache-2.0 */
/* jansson glue: cleanup, typed getters that never trust input shapes. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/err.h"

/* jansson provides json_decrefp(). */
#define _cleanup_json_ _cleanup_(json_decrefp)

/* Parse at most `len` bytes of JSON text; rejects duplicate keys; caller owns *ret. */
int json_parse_buf(const char *buf, size_t len, json_t **ret, struct berr **err);
/* Dump compactly (JSON_COMPACT) or indented; caller frees. */
char *json_dump_str(const json_t *j, bool pretty);

/* Typed optional getters: return NULL/false/default when absent; -EINVAL with a message on wrong type. */
int json_get_string(const json_t *obj, const char *key, bool required, const char **ret, struct berr **err);
int json_get_int(const json_t *obj, const char *key, bool required, int64_t *ret, struct berr **err);
int json_get_bool(const json_t *obj, const char *key, bool *ret, struct berr **err);
