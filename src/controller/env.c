/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What an instance gets from its app, as Cloud Foundry builds it (docs/PLATFORM.md "Environment of an
 * instance"): execution metadata of a staged image, the app port, the shown start command, the env pairs
 * and Diego's crash restart policy. Pure functions (no store), unit-tested in tests/unit/controller.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/ctl.h"
#include "lib/json.h"

#define ENV_DEFAULT_PORT 8080

struct env_port {
        int port;
        bool tcp;
        char proto[8];
};

static int env_port_cmp(const void *a, const void *b)
{
        const struct env_port *x = a, *y = b;
        if (x->port != y->port)
                return x->port < y->port ? -1 : 1;
        if (x->tcp != y->tcp)
                return x->tcp ? -1 : 1;
        return strcmp(x->proto, y->proto);
}

static json_t *string_array_or_empty(const json_t *v)
{
        json_t *out = json_array();
        size_t i;
        json_t *e;
        if (json_is_array(v))
                json_array_foreach (v, i, e)
                        if (json_is_string(e))
                                json_array_append_new(out, json_string(json_string_value(e)));
        return out;
}

json_t *env_execution_metadata(const json_t *config)
{
        const json_t *exposed = json_object_get(config, "ExposedPorts");
        size_t n = json_is_object(exposed) ? json_object_size(exposed) : 0;
        struct env_port *ports = xcalloc(n ? n : 1, sizeof(*ports));
        size_t np = 0;
        const char *key;
        json_t *val;
        if (n)
                json_object_foreach ((json_t *)exposed, key, val) {
                        char *end = NULL;
                        long p = strtol(key, &end, 10);
                        if (end == key || p <= 0 || p > 65535)
                                continue;
                        const char *proto = *end == '/' ? end + 1 : "tcp";
                        if (strlen(proto) >= sizeof(ports[np].proto))
                                continue;
                        ports[np].port = (int)p;
                        snprintf(ports[np].proto, sizeof(ports[np].proto), "%s", proto);
                        ports[np].tcp = strcmp(proto, "tcp") == 0;
                        np++;
                }
        qsort(ports, np, sizeof(*ports), env_port_cmp);
        json_t *jports = json_array();
        for (size_t i = 0; i < np; i++)
                json_array_append_new(
                    jports, json_pack("{s:i,s:s}", "Port", ports[i].port, "Protocol", ports[i].proto));
        free(ports);
        const json_t *user = json_object_get(config, "User"), *wd = json_object_get(config, "WorkingDir");
        return json_pack("{s:o,s:o,s:s,s:s,s:o,s:o}", "entrypoint",
                         string_array_or_empty(json_object_get(config, "Entrypoint")), "cmd",
                         string_array_or_empty(json_object_get(config, "Cmd")), "user",
                         json_is_string(user) ? json_string_value(user) : "", "workdir",
                         json_is_string(wd) ? json_string_value(wd) : "", "env",
                         string_array_or_empty(json_object_get(config, "Env")), "ports", jports);
}

int env_app_port(const char *execution_metadata)
{
        if (!execution_metadata)
                return ENV_DEFAULT_PORT;
        _cleanup_json_ json_t *m = json_loads(execution_metadata, 0, NULL);
        json_t *ports = json_object_get(m, "ports");
        int best = -1;
        size_t i;
        json_t *p;
        if (json_is_array(ports))
                json_array_foreach (ports, i, p) {
                        json_t *proto = json_object_get(p, "Protocol");
                        json_int_t n = json_integer_value(json_object_get(p, "Port"));
                        if (proto && (!json_is_string(proto) || strcmp(json_string_value(proto), "tcp") != 0))
                                continue;
                        if (n > 0 && n <= 65535 && (best < 0 || n < best))
                                best = (int)n;
                }
        return best > 0 ? best : ENV_DEFAULT_PORT;
}

char *env_start_command(const json_t *config)
{
        size_t cap = 1, len = 0;
        char *out = xstrdup("");
        const char *keys[] = { "Entrypoint", "Cmd" };
        for (size_t k = 0; k < 2; k++) {
                const json_t *a = json_object_get(config, keys[k]);
                size_t i;
                json_t *e;
                if (!json_is_array(a))
                        continue;
                json_array_foreach (a, i, e) {
                        if (!json_is_string(e))
                                continue;
                        const char *s = json_string_value(e);
                        size_t sl = strlen(s);
                        cap = len + sl + 2;
                        out = xrealloc(out, cap);
                        if (len)
                                out[len++] = ' ';
                        memcpy(out + len, s, sl);
                        len += sl;
                        out[len] = '\0';
                }
        }
        return out;
}

int64_t env_restart_delay_ms(int crash_count)
{
        /* bbs models/restart_calculator.go: 3 immediate restarts (counts 0-2), then 30 s doubling up to 16
         * min, never after 200. */
        if (crash_count >= 200)
                return -1;
        if (crash_count < 3)
                return 0;
        int exp = crash_count - 3;
        if (exp > 5)
                exp = 5;
        int64_t d = (int64_t)30000 << exp;
        return d > 16 * 60000 ? 16 * 60000 : d;
}

static void env_push(json_t *arr, const char *k, const char *v)
{
        json_array_append_new(arr, json_pack("[s,s]", k, v));
}

json_t *env_instance_env(const json_t *vcap, const char *instance_guid, int index, int port, int memory_mb,
                         const json_t *user_env)
{
        json_t *out = json_array();
        char buf[32];
        snprintf(buf, sizeof(buf), "%d", port);
        env_push(out, "PORT", buf);
        _cleanup_json_ json_t *va = vcap ? json_deep_copy(vcap) : json_object();
        json_object_set_new(va, "host", json_string("0.0.0.0"));
        json_object_set_new(va, "instance_id", json_string(instance_guid));
        json_object_set_new(va, "port", json_integer(port));
        json_object_set_new(va, "instance_index", json_integer(index));
        _cleanup_free_ char *vs = json_dumps(va, JSON_COMPACT);
        env_push(out, "VCAP_APPLICATION", vs);
        env_push(out, "VCAP_SERVICES", "{}");
        snprintf(buf, sizeof(buf), "%dm", memory_mb);
        env_push(out, "MEMORY_LIMIT", buf);
        const char *k;
        json_t *v;
        if (json_is_object(user_env))
                json_object_foreach ((json_t *)user_env, k, v) {
                        if (json_is_string(v)) {
                                env_push(out, k, json_string_value(v));
                        } else if (!json_is_null(v)) {
                                _cleanup_free_ char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                                env_push(out, k, s ? s : "");
                        }
                }
        return out;
}

const char *env_name_refused(const char *name)
{
        if (!*name)
                return "environment_variables key must not be empty";
        if (strcmp(name, "PORT") == 0)
                return "environment_variables cannot set PORT";
        if (strncmp(name, "VCAP_", 5) == 0)
                return "environment_variables cannot start with VCAP_";
        if (strncmp(name, "CF_INSTANCE_", 12) == 0)
                return "environment_variables cannot start with CF_INSTANCE_";
        return NULL;
}
