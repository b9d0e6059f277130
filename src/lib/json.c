/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "lib/json.h"

int json_parse_buf(const char *buf, size_t len, json_t **ret, struct berr **err)
{
        json_error_t je;
        json_t *j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
        if (!j)
                return berr_set(err, -EINVAL, "invalid JSON at line %d column %d: %s", je.line, je.column,
                                je.text);
        *ret = j;
        return 0;
}

char *json_dump_str(const json_t *j, bool pretty)
{
        char *s =
            json_dumps(j, pretty ? JSON_INDENT(2) | JSON_PRESERVE_ORDER : JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (!s)
                abort();
        return s;
}

int json_get_string(const json_t *obj, const char *key, bool required, const char **ret, struct berr **err)
{
        json_t *v = json_object_get(obj, key);
        *ret = NULL;
        if (!v || json_is_null(v)) {
                if (required)
                        return berr_set(err, -EINVAL, "missing field \"%s\"", key);
                return 0;
        }
        if (!json_is_string(v))
                return berr_set(err, -EINVAL, "field \"%s\" must be a string", key);
        *ret = json_string_value(v);
        return 0;
}

int json_get_int(const json_t *obj, const char *key, bool required, int64_t *ret, struct berr **err)
{
        json_t *v = json_object_get(obj, key);
        if (!v || json_is_null(v)) {
                if (required)
                        return berr_set(err, -EINVAL, "missing field \"%s\"", key);
                return 0;
        }
        if (!json_is_integer(v))
                return berr_set(err, -EINVAL, "field \"%s\" must be an integer", key);
        *ret = json_integer_value(v);
        return 0;
}

int json_get_bool(const json_t *obj, const char *key, bool *ret, struct berr **err)
{
        json_t *v = json_object_get(obj, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_boolean(v))
                return berr_set(err, -EINVAL, "field \"%s\" must be true or false", key);
        *ret = json_is_true(v);
        return 0;
}
