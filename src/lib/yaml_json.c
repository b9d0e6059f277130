/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "lib/yaml_json.h"

struct yctx {
        yaml_parser_t parser;
        size_t nodes;
};

static json_t *scalar_to_json(const yaml_event_t *ev)
{
        const char *v = (const char *)ev->data.scalar.value;
        size_t n = ev->data.scalar.length;
        if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || ev->data.scalar.tag)
                return json_stringn(v, n);
        if (n == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
            strcmp(v, "NULL") == 0)
                return json_null();
        if (strcmp(v, "true") == 0 || strcmp(v, "True") == 0 || strcmp(v, "TRUE") == 0)
                return json_true();
        if (strcmp(v, "false") == 0 || strcmp(v, "False") == 0 || strcmp(v, "FALSE") == 0)
                return json_false();
        char *end = NULL;
        errno = 0;
        long long ll = strtoll(v, &end, 10);
        if (end && *end == '\0' && errno == 0 && (v[0] == '-' || v[0] == '+' || (v[0] >= '0' && v[0] <= '9')))
                return json_integer(ll);
        errno = 0;
        double d = strtod(v, &end);
        if (end && *end == '\0' && errno == 0 && isfinite(d) && strpbrk(v, "0123456789") &&
            !strpbrk(v, "xXpP") && strcasecmp(v, "nan") != 0)
                return json_real(d);
        return json_stringn(v, n);
}

static int parse_node(struct yctx *y, yaml_event_t *first, json_t **ret, int depth, struct berr **err);

static int next_event(struct yctx *y, yaml_event_t *ev, struct berr **err)
{
        if (!yaml_parser_parse(&y->parser, ev))
                return berr_set(err, -EINVAL, "YAML line %zu column %zu: %s", y->parser.problem_mark.line + 1,
                                y->parser.problem_mark.column + 1,
                                y->parser.problem ? y->parser.problem : "syntax error");
        return 0;
}

static int parse_node(struct yctx *y, yaml_event_t *ev, json_t **ret, int depth, struct berr **err)
{
        int r;
        if (depth > YAML_MAX_DEPTH)
                return berr_set(err, -E2BIG, "YAML nesting deeper than %d levels", YAML_MAX_DEPTH);
        if (++y->nodes > YAML_MAX_NODES)
                return berr_set(err, -E2BIG, "YAML document has more than %d nodes", YAML_MAX_NODES);
        switch (ev->type) {
        case YAML_SCALAR_EVENT:
                if (ev->data.scalar.anchor)
                        return berr_set(err, -EINVAL, "YAML anchors are not supported");
                *ret = scalar_to_json(ev);
                return *ret ? 0 : berr_set(err, -EINVAL, "YAML scalar is not valid UTF-8");
        case YAML_ALIAS_EVENT:
                return berr_set(err, -EINVAL, "YAML aliases are not supported");
        case YAML_SEQUENCE_START_EVENT: {
                if (ev->data.sequence_start.anchor)
                        return berr_set(err, -EINVAL, "YAML anchors are not supported");
                json_t *arr = json_array();
                for (;;) {
                        yaml_event_t e;
                        if ((r = next_event(y, &e, err)) < 0) {
                                json_decref(arr);
                                return r;
                        }
                        if (e.type == YAML_SEQUENCE_END_EVENT) {
                                yaml_event_delete(&e);
                                break;
                        }
                        json_t *child = NULL;
                        r = parse_node(y, &e, &child, depth + 1, err);
                        yaml_event_delete(&e);
                        if (r < 0) {
                                json_decref(arr);
                                return r;
                        }
                        json_array_append_new(arr, child);
                }
                *ret = arr;
                return 0;
        }
        case YAML_MAPPING_START_EVENT: {
                if (ev->data.mapping_start.anchor)
                        return berr_set(err, -EINVAL, "YAML anchors are not supported");
                json_t *obj = json_object();
                for (;;) {
                        yaml_event_t k;
                        if ((r = next_event(y, &k, err)) < 0) {
                                json_decref(obj);
                                return r;
                        }
                        if (k.type == YAML_MAPPING_END_EVENT) {
                                yaml_event_delete(&k);
                                break;
                        }
                        if (k.type != YAML_SCALAR_EVENT) {
                                yaml_event_delete(&k);
                                json_decref(obj);
                                return berr_set(err, -EINVAL, "YAML mapping keys must be scalars");
                        }
                        _cleanup_free_ char *key =
                            xstrndup((const char *)k.data.scalar.value, k.data.scalar.length);
                        size_t klen = k.data.scalar.length;
                        yaml_event_delete(&k);
                        if (strlen(key) != klen) {
                                json_decref(obj);
                                return berr_set(err, -EINVAL, "YAML key contains a NUL byte");
                        }
                        yaml_event_t v;
                        if ((r = next_event(y, &v, err)) < 0) {
                                json_decref(obj);
                                return r;
                        }
                        json_t *child = NULL;
                        r = parse_node(y, &v, &child, depth + 1, err);
                        yaml_event_delete(&v);
                        if (r < 0) {
                                json_decref(obj);
                                return r;
                        }
                        if (json_object_get(obj, key)) {
                                json_decref(child);
                                json_decref(obj);
                                return berr_set(err, -EINVAL, "YAML key \"%.64s\" appears twice", key);
                        }
                        json_object_set_new(obj, key, child);
                }
                *ret = obj;
                return 0;
        }
        default:
                return berr_set(err, -EINVAL, "unexpected YAML event");
        }
}

int yaml_to_json(const char *buf, size_t len, json_t **ret, struct berr **err)
{
        struct yctx y = { 0 };
        int r = 0;
        json_t *doc = NULL;
        if (!yaml_parser_initialize(&y.parser))
                abort();
        yaml_parser_set_input_string(&y.parser, (const unsigned char *)buf, len);
        bool in_doc = false;
        for (;;) {
                yaml_event_t ev;
                if ((r = next_event(&y, &ev, err)) < 0)
                        break;
                yaml_event_type_t t = ev.type;
                if (t == YAML_STREAM_END_EVENT) {
                        yaml_event_delete(&ev);
                        break;
                }
                if (t == YAML_DOCUMENT_START_EVENT) {
                        if (doc) {
                                yaml_event_delete(&ev);
                                r = berr_set(err, -EINVAL, "YAML stream has more than one document");
                                break;
                        }
                        in_doc = true;
                } else if (t == YAML_DOCUMENT_END_EVENT) {
                        in_doc = false;
                } else if (in_doc && t != YAML_STREAM_START_EVENT) {
                        r = parse_node(&y, &ev, &doc, 0, err);
                }
                yaml_event_delete(&ev);
                if (r < 0)
                        break;
        }
        yaml_parser_delete(&y.parser);
        if (r < 0) {
                json_decref(doc);
                return r;
        }
        *ret = doc ? doc : json_null();
        return 0;
}
