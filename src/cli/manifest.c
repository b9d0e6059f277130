/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cloud Foundry application manifests (docs/PLATFORM.md, CLI section): YAML through lib/yaml_json, then a
 * strict walk over the keys berth knows. Types are checked as cf's manifest schema has them (instances an
 * integer, env a map of scalars, routes a list of {route: ...}); unknown keys are warnings, as cf ignores
 * them. Nothing here talks to the platform: push validates the whole manifest before its first request.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/manifest.h"
#include "lib/json.h"
#include "lib/macro.h"
#include "lib/strv.h"
#include "lib/yaml_json.h"

#define ROUTE_MAX_LEN 1024 /* host.domain (253) plus a path */

long manifest_size_mb(const char *s)
{
        if (!s || !isdigit((unsigned char)*s))
                return -1;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || end == s || v <= 0 || v > MANIFEST_SIZE_MAX_MB)
                return -1;
        if (*end == 0 || strcasecmp(end, "M") == 0 || strcasecmp(end, "MB") == 0)
                return (long)v;
        if (strcasecmp(end, "G") == 0 || strcasecmp(end, "GB") == 0)
                return v > MANIFEST_SIZE_MAX_MB / 1024 ? -1 : (long)(v * 1024);
        return -1;
}

bool manifest_env_name_reserved(const char *name)
{
        return !name || !*name || strcmp(name, "PORT") == 0 || strncmp(name, "VCAP_", 5) == 0 ||
               strncmp(name, "CF_INSTANCE_", 12) == 0;
}

int manifest_route_check(const char *route, struct berr **err)
{
        size_t n = strlen(route);
        if (n == 0)
                return berr_set(err, -EINVAL, "empty route");
        if (n > ROUTE_MAX_LEN)
                return berr_set(err, -EINVAL, "route longer than %d characters", ROUTE_MAX_LEN);
        size_t hl = strcspn(route, "/");
        if (hl == 0)
                return berr_set(err, -EINVAL, "route \"%s\" has no host name", route);
        size_t label = 0;
        for (size_t i = 0; i < hl; i++) {
                unsigned char c = (unsigned char)route[i];
                if (c == '.') {
                        if (label == 0)
                                return berr_set(err, -EINVAL, "route \"%s\": empty label in the host name",
                                                route);
                        label = 0;
                        continue;
                }
                if (c == ':')
                        return berr_set(err, -EINVAL,
                                        "route \"%s\": TCP routes (with a port) are not supported", route);
                if (!isalnum(c) && c != '-')
                        return berr_set(err, -EINVAL,
                                        "route \"%s\": a host name has only letters, digits, '-' and '.'",
                                        route);
                if (++label > 63)
                        return berr_set(err, -EINVAL, "route \"%s\": a label is longer than 63 characters",
                                        route);
        }
        if (label == 0)
                return berr_set(err, -EINVAL, "route \"%s\": empty label in the host name", route);
        const char *path = route + hl;
        size_t pl = n - hl;
        if (pl > 0) {
                if (pl == 1 || path[pl - 1] == '/')
                        return berr_set(err, -EINVAL, "route \"%s\": a path must not end with '/'", route);
                for (size_t i = 0; i < pl; i++) {
                        unsigned char c = (unsigned char)path[i];
                        if (c <= 0x20 || c == 0x7f || c == '?' || c == '#')
                                return berr_set(err, -EINVAL,
                                                "route \"%s\": a path has no spaces, control characters, '?' "
                                                "or '#'",
                                                route);
                }
        }
        return 0;
}

static void app_clear(struct manifest_app *a)
{
        free(a->name);
        free(a->image);
        free(a->username);
        free(a->command);
        free(a->health_check_type);
        free(a->health_check_endpoint);
        free(a->readiness_type);
        free(a->readiness_endpoint);
        json_decref(a->env);
        strv_free(a->routes);
}

void manifest_free(struct manifest *m)
{
        if (!m)
                return;
        for (size_t i = 0; i < m->n_apps; i++)
                app_clear(&m->apps[i]);
        free(m->apps);
        strv_free(m->warnings);
        free(m);
}

/* Context for messages: "applications[2] (web)". */
struct actx {
        char where[160];
        struct strv *warnings;
};

static int want_string(struct actx *c, const char *key, json_t *v, bool empty_ok, char **ret,
                       struct berr **err)
{
        if (!json_is_string(v))
                return berr_set(err, -EINVAL, "%s: %s must be a string", c->where, key);
        const char *s = json_string_value(v);
        if (!empty_ok && !*s)
                return berr_set(err, -EINVAL, "%s: %s must not be empty", c->where, key);
        if (strlen(s) != json_string_length(v))
                return berr_set(err, -EINVAL, "%s: %s contains a NUL character", c->where, key);
        *ret = xstrdup(s);
        return 0;
}

static int want_bool(struct actx *c, const char *key, json_t *v, bool *ret, struct berr **err)
{
        if (!json_is_boolean(v))
                return berr_set(err, -EINVAL, "%s: %s must be true or false", c->where, key);
        *ret = json_is_true(v);
        return 0;
}

/* An integer number of seconds from 1 to max (cf's health check timeouts and intervals). */
static int want_seconds(struct actx *c, const char *key, json_t *v, long max, long *ret, struct berr **err)
{
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max)
                return berr_set(err, -EINVAL, "%s: %s must be an integer from 1 to %ld", c->where, key, max);
        *ret = (long)json_integer_value(v);
        return 0;
}

/* A health check type: port, http or process ("none" is taken as "process", as cf does). */
static int want_check_type(struct actx *c, const char *key, json_t *v, char **ret, struct berr **err)
{
        const char *t = json_string_value(v);
        if (!t || (strcmp(t, "port") && strcmp(t, "http") && strcmp(t, "process") && strcmp(t, "none")))
                return berr_set(err, -EINVAL, "%s: %s must be port, http or process", c->where, key);
        free(*ret);
        *ret = xstrdup(strcmp(t, "none") == 0 ? "process" : t);
        return 0;
}

/* An HTTP health check endpoint: a path starting with '/'. */
static int want_endpoint(struct actx *c, const char *key, json_t *v, char **ret, struct berr **err)
{
        _cleanup_free_ char *s = NULL;
        int r = want_string(c, key, v, false, &s, err);
        if (r < 0)
                return r;
        if (s[0] != '/' || strpbrk(s, " \t\r\n"))
                return berr_set(err, -EINVAL, "%s: %s must be a path starting with '/' (no spaces)", c->where,
                                key);
        free(*ret);
        *ret = TAKE_PTR(s);
        return 0;
}

static int want_size(struct actx *c, const char *key, json_t *v, long *ret, struct berr **err)
{
        long mb = -1;
        if (json_is_integer(v)) {
                json_int_t i = json_integer_value(v);
                mb = i > 0 && i <= MANIFEST_SIZE_MAX_MB ? (long)i : -1;
        } else if (json_is_string(v)) {
                mb = manifest_size_mb(json_string_value(v));
        }
        if (mb < 0) {
                _cleanup_free_ char *shown = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
                return berr_set(err, -EINVAL, "%s: %s: invalid size %s (use 256M, 1G, 512MB, ...)", c->where,
                                key, shown ? shown : "?");
        }
        *ret = mb;
        return 0;
}

static void warn(struct actx *c, const char *fmt, ...) _printf_(2, 3);
static void warn(struct actx *c, const char *fmt, ...)
{
        _cleanup_free_ char *m = NULL;
        va_list ap;
        va_start(ap, fmt);
        int n = vasprintf(&m, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        strv_push(c->warnings, xasprintf("%s: %s", c->where, m));
}

static int parse_docker(struct actx *c, struct manifest_app *a, json_t *v, struct berr **err)
{
        if (!json_is_object(v))
                return berr_set(err, -EINVAL, "%s: docker must be a map (image, username)", c->where);
        const char *k;
        json_t *x;
        json_object_foreach (v, k, x) {
                int r = 0;
                if (strcmp(k, "image") == 0)
                        r = want_string(c, "docker.image", x, false, &a->image, err);
                else if (strcmp(k, "username") == 0)
                        r = want_string(c, "docker.username", x, false, &a->username, err);
                else
                        warn(c, "unknown key 'docker.%s' ignored", k);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int parse_env(struct actx *c, struct manifest_app *a, json_t *v, struct berr **err)
{
        if (!json_is_object(v))
                return berr_set(err, -EINVAL, "%s: env must be a map of names to values", c->where);
        if (json_object_size(v) > MANIFEST_MAX_ENV)
                return berr_set(err, -EINVAL, "%s: env has more than %d variables", c->where,
                                MANIFEST_MAX_ENV);
        a->env = json_object();
        const char *k;
        json_t *x;
        json_object_foreach (v, k, x) {
                if (manifest_env_name_reserved(k))
                        return berr_set(
                            err, -EINVAL,
                            "%s: env: %s%s%s cannot be set (PORT, VCAP_* and CF_INSTANCE_* are the "
                            "platform's)",
                            c->where, *k ? "'" : "", *k ? k : "an empty name", *k ? "'" : "");
                json_t *s;
                if (json_is_string(x)) {
                        s = json_incref(x);
                } else if (json_is_boolean(x)) {
                        s = json_string(json_is_true(x) ? "true" : "false");
                } else if (json_is_number(x)) {
                        _cleanup_free_ char *t = json_dumps(x, JSON_ENCODE_ANY | JSON_COMPACT);
                        s = json_string(t ? t : "");
                } else {
                        return berr_set(err, -EINVAL, "%s: env: '%s' must be a string, number or boolean",
                                        c->where, k);
                }
                json_object_set_new(a->env, k, s);
        }
        return 0;
}

static int parse_routes(struct actx *c, struct manifest_app *a, json_t *v, struct berr **err)
{
        if (!json_is_array(v))
                return berr_set(err, -EINVAL, "%s: routes must be a list of {route: HOST.DOMAIN[/PATH]}",
                                c->where);
        if (json_array_size(v) > MANIFEST_MAX_ROUTES)
                return berr_set(err, -EINVAL, "%s: more than %d routes", c->where, MANIFEST_MAX_ROUTES);
        struct strv routes = { 0 };
        size_t i;
        json_t *x;
        json_array_foreach (v, i, x) {
                json_t *rv = json_object_get(x, "route");
                if (!json_is_object(x) || !json_is_string(rv)) {
                        strv_clear(&routes);
                        return berr_set(err, -EINVAL, "%s: routes[%zu] must be a map with a 'route' string",
                                        c->where, i);
                }
                const char *k;
                json_t *y;
                json_object_foreach (x, k, y)
                        if (strcmp(k, "route") != 0)
                                warn(c, "unknown key 'routes[].%s' ignored", k);
                _cleanup_berr_ struct berr *e = NULL;
                if (strlen(json_string_value(rv)) != json_string_length(rv) ||
                    manifest_route_check(json_string_value(rv), &e) < 0) {
                        strv_clear(&routes);
                        return berr_set(err, -EINVAL, "%s: routes[%zu]: %s", c->where, i,
                                        e ? berr_msg(e) : "invalid route");
                }
                char *r = xstrdup(json_string_value(rv));
                for (char *p = r; *p && *p != '/'; p++)
                        *p = (char)tolower((unsigned char)*p);
                strv_push(&routes, r);
        }
        a->routes = strv_take(&routes);
        return 0;
}

static int parse_app(struct actx *c, struct manifest_app *a, json_t *o, struct berr **err)
{
        a->instances = a->memory_mb = a->disk_mb = a->timeout = -1;
        a->health_check_invocation_timeout = a->health_check_interval = -1;
        a->readiness_invocation_timeout = a->readiness_interval = -1;
        if (!json_is_object(o))
                return berr_set(err, -EINVAL, "%s must be a map (name, docker, instances, ...)", c->where);
        json_t *name = json_object_get(o, "name");
        if (!name)
                return berr_set(err, -EINVAL, "%s: name is required", c->where);
        int r = want_string(c, "name", name, false, &a->name, err);
        if (r < 0)
                return r;
        size_t wl = strlen(c->where);
        snprintf(c->where + wl, sizeof(c->where) - wl, " (%.64s)", a->name);
        const char *k;
        json_t *v;
        json_object_foreach (o, k, v) {
                if (strcmp(k, "name") == 0)
                        continue;
                if (strcmp(k, "docker") == 0) {
                        r = parse_docker(c, a, v, err);
                } else if (strcmp(k, "instances") == 0) {
                        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                            json_integer_value(v) > INT32_MAX)
                                return berr_set(err, -EINVAL, "%s: instances must be an integer of 0 or more",
                                                c->where);
                        a->instances = (long)json_integer_value(v);
                } else if (strcmp(k, "memory") == 0) {
                        r = want_size(c, "memory", v, &a->memory_mb, err);
                } else if (strcmp(k, "disk_quota") == 0 || strcmp(k, "disk-quota") == 0) {
                        r = want_size(c, k, v, &a->disk_mb, err);
                } else if (strcmp(k, "env") == 0) {
                        r = parse_env(c, a, v, err);
                } else if (strcmp(k, "routes") == 0) {
                        r = parse_routes(c, a, v, err);
                } else if (strcmp(k, "no-route") == 0) {
                        r = want_bool(c, "no-route", v, &a->no_route, err);
                } else if (strcmp(k, "random-route") == 0) {
                        r = want_bool(c, "random-route", v, &a->random_route, err);
                        if (r == 0 && a->random_route)
                                warn(c, "%s: not supported, ignored", "random-route");
                } else if (strcmp(k, "command") == 0) {
                        r = want_string(c, "command", v, false, &a->command, err);
                } else if (strcmp(k, "health-check-type") == 0) {
                        r = want_check_type(c, k, v, &a->health_check_type, err);
                } else if (strcmp(k, "health-check-http-endpoint") == 0) {
                        r = want_endpoint(c, k, v, &a->health_check_endpoint, err);
                } else if (strcmp(k, "health-check-invocation-timeout") == 0) {
                        r = want_seconds(c, k, v, MANIFEST_TIMEOUT_MAX, &a->health_check_invocation_timeout,
                                         err);
                } else if (strcmp(k, "health-check-interval") == 0) {
                        r = want_seconds(c, k, v, MANIFEST_INTERVAL_MAX, &a->health_check_interval, err);
                } else if (strcmp(k, "readiness-health-check-type") == 0) {
                        r = want_check_type(c, k, v, &a->readiness_type, err);
                } else if (strcmp(k, "readiness-health-check-http-endpoint") == 0) {
                        r = want_endpoint(c, k, v, &a->readiness_endpoint, err);
                } else if (strcmp(k, "readiness-health-check-invocation-timeout") == 0) {
                        r = want_seconds(c, k, v, MANIFEST_TIMEOUT_MAX, &a->readiness_invocation_timeout,
                                         err);
                } else if (strcmp(k, "readiness-health-check-interval") == 0) {
                        r = want_seconds(c, k, v, MANIFEST_INTERVAL_MAX, &a->readiness_interval, err);
                } else if (strcmp(k, "timeout") == 0) {
                        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                            json_integer_value(v) > MANIFEST_TIMEOUT_MAX)
                                return berr_set(err, -EINVAL, "%s: timeout must be an integer from 1 to %d",
                                                c->where, MANIFEST_TIMEOUT_MAX);
                        a->timeout = (long)json_integer_value(v);
                } else {
                        warn(c, "unknown key '%s' ignored", k);
                }
                if (r < 0)
                        return r;
        }
        if (a->health_check_endpoint && a->health_check_type && strcmp(a->health_check_type, "http") != 0)
                return berr_set(err, -EINVAL,
                                "%s: health-check-http-endpoint needs health-check-type http (not %s)",
                                c->where, a->health_check_type);
        if (a->readiness_endpoint && a->readiness_type && strcmp(a->readiness_type, "http") != 0)
                return berr_set(err, -EINVAL,
                                "%s: readiness-health-check-http-endpoint needs readiness-health-check-type "
                                "http (not %s)",
                                c->where, a->readiness_type);
        if (a->no_route && a->routes && a->routes[0])
                return berr_set(err, -EINVAL, "%s: no-route and routes cannot be used together", c->where);
        return 0;
}

int manifest_parse(const char *buf, size_t len, struct manifest **ret, struct berr **err)
{
        if (len > MANIFEST_MAX_BYTES)
                return berr_set(err, -EFBIG, "manifest larger than %d bytes", MANIFEST_MAX_BYTES);
        _cleanup_json_ json_t *doc = NULL;
        struct berr *ye = NULL;
        int r = yaml_to_json(buf, len, &doc, &ye);
        if (r < 0) {
                r = berr_set(err, -EINVAL, "manifest is not valid YAML: %s", berr_msg(ye));
                berr_free(ye);
                return r;
        }
        if (json_is_null(doc) || !doc)
                return berr_set(err, -EINVAL, "manifest is empty (it needs 'applications:')");
        if (!json_is_object(doc))
                return berr_set(err, -EINVAL, "manifest must be a map with 'applications:'");
        json_t *apps = json_object_get(doc, "applications");
        if (!apps)
                return berr_set(err, -EINVAL, "manifest has no 'applications:' list");
        if (!json_is_array(apps))
                return berr_set(err, -EINVAL, "manifest: applications must be a list");
        if (json_array_size(apps) == 0)
                return berr_set(err, -EINVAL, "manifest: applications is empty");
        if (json_array_size(apps) > MANIFEST_MAX_APPS)
                return berr_set(err, -EINVAL, "manifest: more than %d applications", MANIFEST_MAX_APPS);
        struct strv warnings = { 0 };
        struct manifest *m = xcalloc(1, sizeof(*m));
        m->apps = xcalloc(json_array_size(apps), sizeof(*m->apps));
        struct actx c = { .warnings = &warnings };
        const char *k;
        json_t *v;
        json_object_foreach (doc, k, v)
                if (strcmp(k, "applications") != 0 && strcmp(k, "version") != 0) {
                        snprintf(c.where, sizeof(c.where), "manifest");
                        warn(&c, "unknown key '%s' ignored", k);
                }
        size_t i;
        json_array_foreach (apps, i, v) {
                snprintf(c.where, sizeof(c.where), "applications[%zu]", i);
                m->n_apps++;
                r = parse_app(&c, &m->apps[i], v, err);
                if (r < 0)
                        goto fail;
                for (size_t j = 0; j < i; j++)
                        if (strcmp(m->apps[j].name, m->apps[i].name) == 0) {
                                r = berr_set(err, -EINVAL, "manifest: application '%s' is listed twice",
                                             m->apps[i].name);
                                goto fail;
                        }
        }
        m->warnings = strv_take(&warnings);
        *ret = m;
        return 0;
fail:
        strv_clear(&warnings);
        manifest_free(m);
        return r;
}
