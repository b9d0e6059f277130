/* SPDX-License-Identifier: Apache-2.0 */
/* Cloud Foundry app manifests (src/cli/manifest.c): the keys berth reads, their types, and the errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "cli/manifest.h"
#include "lib/json.h"

static struct manifest *parse_ok(const char *y)
{
        struct manifest *m = NULL;
        struct berr *err = NULL;
        if (manifest_parse(y, strlen(y), &m, &err) < 0)
                fail_msg("%s: %s", y, berr_msg(err));
        assert_non_null(m);
        assert_non_null(m->warnings);
        return m;
}

static void test_full_app(void **state)
{
        (void)state;
        _cleanup_(manifest_freep) struct manifest *m =
            parse_ok("---\nversion: 1\napplications:\n"
                     "- name: web\n"
                     "  docker:\n    image: registry.example:5000/web:1\n    username: deploy\n"
                     "  instances: 3\n  memory: 64M\n  disk_quota: 1G\n"
                     "  command: exec start-web from-manifest\n"
                     "  health-check-type: http\n  health-check-http-endpoint: /health\n  timeout: 90\n"
                     "  env:\n    A: \"yes\"\n    N: 42\n    B: true\n    F: 1.5\n"
                     "  routes:\n  - route: Web.Apps.Localhost/Api\n  - route: other.apps.localhost\n"
                     "- name: worker\n  docker:\n    image: busybox\n  no-route: true\n  memory: 512mb\n"
                     "  health-check-type: none\n");
        assert_int_equal(m->n_apps, 2);
        struct manifest_app *a = &m->apps[0];
        assert_string_equal(a->name, "web");
        assert_string_equal(a->image, "registry.example:5000/web:1");
        assert_string_equal(a->username, "deploy");
        assert_int_equal(a->instances, 3);
        assert_int_equal(a->memory_mb, 64);
        assert_int_equal(a->disk_mb, 1024);
        assert_int_equal(a->timeout, 90);
        assert_string_equal(a->command, "exec start-web from-manifest");
        assert_string_equal(a->health_check_type, "http");
        assert_string_equal(a->health_check_endpoint, "/health");
        assert_string_equal(json_string_value(json_object_get(a->env, "A")), "yes");
        assert_string_equal(json_string_value(json_object_get(a->env, "N")), "42");
        assert_string_equal(json_string_value(json_object_get(a->env, "B")), "true");
        assert_string_equal(json_string_value(json_object_get(a->env, "F")), "1.5");
        /* the host part is lowercased, the path kept */
        assert_string_equal(a->routes[0], "web.apps.localhost/Api");
        assert_string_equal(a->routes[1], "other.apps.localhost");
        assert_null(a->routes[2]);
        assert_false(a->no_route);
        struct manifest_app *w = &m->apps[1];
        assert_string_equal(w->name, "worker");
        assert_true(w->no_route);
        assert_int_equal(w->memory_mb, 512);
        assert_string_equal(w->health_check_type, "process");
        assert_int_equal(w->instances, -1);
        assert_int_equal(w->disk_mb, -1);
        assert_int_equal(w->timeout, -1);
        assert_null(w->env);
        assert_null(w->routes);
        assert_null(m->warnings[0]);
        /* no readiness keys: nothing set */
        assert_null(w->readiness_type);
        assert_null(w->readiness_endpoint);
        assert_int_equal(w->readiness_interval, -1);
        assert_int_equal(w->readiness_invocation_timeout, -1);
        assert_int_equal(w->health_check_interval, -1);
        assert_int_equal(w->health_check_invocation_timeout, -1);
}

static void test_health_check_keys(void **state)
{
        (void)state;
        _cleanup_(manifest_freep) struct manifest *m = parse_ok(
            "applications:\n"
            "- name: web\n"
            "  health-check-type: port\n  health-check-invocation-timeout: 5\n"
            "  health-check-interval: 7\n"
            "  readiness-health-check-type: http\n  readiness-health-check-http-endpoint: /ready\n"
            "  readiness-health-check-invocation-timeout: 3\n  readiness-health-check-interval: 2\n"
            "- name: endpoint-only\n  readiness-health-check-http-endpoint: /r\n"
            "- name: none\n  readiness-health-check-type: none\n"
            "- name: limits\n  readiness-health-check-type: port\n"
            "  readiness-health-check-invocation-timeout: 180\n  readiness-health-check-interval: 600\n"
            "  health-check-interval: 1\n  health-check-invocation-timeout: 1\n");
        assert_int_equal(m->n_apps, 4);
        struct manifest_app *a = &m->apps[0];
        assert_string_equal(a->health_check_type, "port");
        assert_int_equal(a->health_check_invocation_timeout, 5);
        assert_int_equal(a->health_check_interval, 7);
        assert_string_equal(a->readiness_type, "http");
        assert_string_equal(a->readiness_endpoint, "/ready");
        assert_int_equal(a->readiness_invocation_timeout, 3);
        assert_int_equal(a->readiness_interval, 2);
        /* an endpoint alone is fine (push takes it as http, as for liveness) */
        assert_null(m->apps[1].readiness_type);
        assert_string_equal(m->apps[1].readiness_endpoint, "/r");
        assert_string_equal(m->apps[2].readiness_type, "process");
        struct manifest_app *l = &m->apps[3];
        assert_string_equal(l->readiness_type, "port");
        assert_int_equal(l->readiness_invocation_timeout, 180);
        assert_int_equal(l->readiness_interval, 600);
        assert_int_equal(l->health_check_interval, 1);
        assert_int_equal(l->health_check_invocation_timeout, 1);
        assert_null(m->warnings[0]);
}

static void test_unknown_keys_warn(void **state)
{
        (void)state;
        _cleanup_(manifest_freep) struct manifest *m =
            parse_ok("applications:\n- name: a\n  buildpack: ruby\n  random-route: true\n  docker:\n"
                     "    image: x\n    tag: y\n  routes:\n  - route: a.example.com\n    protocol: http1\n"
                     "inherit: base.yml\n");
        size_t n = 0;
        bool buildpack = false, random = false, tag = false, inherit = false, protocol = false;
        for (; m->warnings[n]; n++) {
                buildpack |= strstr(m->warnings[n], "'buildpack'") != NULL;
                random |= strstr(m->warnings[n], "random-route") != NULL;
                tag |= strstr(m->warnings[n], "'docker.tag'") != NULL;
                inherit |= strstr(m->warnings[n], "'inherit'") != NULL;
                protocol |= strstr(m->warnings[n], "protocol") != NULL;
        }
        assert_int_equal(n, 5);
        assert_true(buildpack && random && tag && inherit && protocol);
        assert_true(m->apps[0].random_route);
}

static void test_errors(void **state)
{
        (void)state;
        static const struct {
                const char *y, *needle;
        } bad[] = {
                { "applications: [\n  - name: x\n", "not valid YAML" },
                { "", "empty" },
                { "# only a comment\n", "empty" },
                { "- name: x\n", "must be a map" },
                { "name: x\ndocker:\n  image: y\n", "no 'applications:'" },
                { "applications:\n  name: x\n", "must be a list" },
                { "applications: []\n", "is empty" },
                { "applications:\n- just-a-string\n", "must be a map" },
                { "applications:\n- docker:\n    image: x\n", "name is required" },
                { "applications:\n- name: ''\n", "name must not be empty" },
                { "applications:\n- name: 12\n", "name must be a string" },
                { "applications:\n- name: a\n  docker: x\n", "docker must be a map" },
                { "applications:\n- name: a\n  docker:\n    image: 5\n", "docker.image must be a string" },
                { "applications:\n- name: a\n  docker:\n    image: ''\n", "docker.image must not be empty" },
                { "applications:\n- name: a\n  memory: lots\n", "memory: invalid size \"lots\"" },
                { "applications:\n- name: a\n  memory: 0\n", "memory: invalid size" },
                { "applications:\n- name: a\n  memory: 1.5G\n", "memory: invalid size" },
                { "applications:\n- name: a\n  memory: -5M\n", "memory: invalid size" },
                { "applications:\n- name: a\n  disk_quota: 1X\n", "disk_quota: invalid size" },
                { "applications:\n- name: a\n  memory: 99999999999G\n", "invalid size" },
                { "applications:\n- name: a\n  instances: -2\n",
                  "instances must be an integer of 0 or more" },
                { "applications:\n- name: a\n  instances: '2'\n", "instances must be an integer" },
                { "applications:\n- name: a\n  instances: 1.5\n", "instances must be an integer" },
                { "applications:\n- name: a\n  env:\n    PORT: 9\n", "'PORT' cannot be set" },
                { "applications:\n- name: a\n  env:\n    VCAP_X: 9\n", "'VCAP_X' cannot be set" },
                { "applications:\n- name: a\n  env:\n    CF_INSTANCE_IP: 9\n", "cannot be set" },
                { "applications:\n- name: a\n  env:\n    K: [1]\n",
                  "'K' must be a string, number or boolean" },
                { "applications:\n- name: a\n  env:\n    K: ~\n", "'K' must be a string" },
                { "applications:\n- name: a\n  env: [K]\n", "env must be a map" },
                { "applications:\n- name: a\n  routes: x.example\n", "routes must be a list" },
                { "applications:\n- name: a\n  routes:\n  - x.example\n", "routes[0] must be a map" },
                { "applications:\n- name: a\n  routes:\n  - route: 'no spaces.example'\n",
                  "routes[0]: route \"no spaces.example\"" },
                { "applications:\n- name: a\n  routes:\n  - route: a..example\n", "empty label" },
                { "applications:\n- name: a\n  routes:\n  - route: a.example:8080\n", "TCP routes" },
                { "applications:\n- name: a\n  routes:\n  - route: a.example/p/\n", "must not end with '/'" },
                { "applications:\n- name: a\n  routes:\n  - route: a.example/p?q\n", "'?'" },
                { "applications:\n- name: a\n  health-check-type: telepathy\n",
                  "health-check-type must be port, http or process" },
                { "applications:\n- name: a\n  health-check-http-endpoint: health\n", "starting with '/'" },
                { "applications:\n- name: a\n  health-check-type: port\n  health-check-http-endpoint: /h\n",
                  "needs health-check-type http" },
                { "applications:\n- name: a\n  timeout: 0\n", "timeout must be an integer from 1 to 180" },
                { "applications:\n- name: a\n  timeout: 181\n", "timeout must be" },
                { "applications:\n- name: a\n  health-check-http-endpoint: '/a b'\n", "no spaces" },
                { "applications:\n- name: a\n  health-check-invocation-timeout: 0\n",
                  "health-check-invocation-timeout must be an integer from 1 to 180" },
                { "applications:\n- name: a\n  health-check-invocation-timeout: 181\n",
                  "health-check-invocation-timeout must be" },
                { "applications:\n- name: a\n  health-check-invocation-timeout: '5'\n",
                  "health-check-invocation-timeout must be" },
                { "applications:\n- name: a\n  health-check-interval: 0\n",
                  "health-check-interval must be an integer from 1 to 600" },
                { "applications:\n- name: a\n  health-check-interval: 601\n",
                  "health-check-interval must be" },
                { "applications:\n- name: a\n  health-check-interval: 2.5\n",
                  "health-check-interval must be" },
                { "applications:\n- name: a\n  readiness-health-check-type: tcp\n",
                  "readiness-health-check-type must be port, http or process" },
                { "applications:\n- name: a\n  readiness-health-check-type: [http]\n",
                  "readiness-health-check-type must be" },
                { "applications:\n- name: a\n  readiness-health-check-http-endpoint: ready\n",
                  "readiness-health-check-http-endpoint must be a path starting with '/'" },
                { "applications:\n- name: a\n  readiness-health-check-http-endpoint: ''\n",
                  "readiness-health-check-http-endpoint must not be empty" },
                { "applications:\n- name: a\n  readiness-health-check-type: port\n"
                  "  readiness-health-check-http-endpoint: /r\n",
                  "readiness-health-check-http-endpoint needs readiness-health-check-type http (not port)" },
                { "applications:\n- name: a\n  health-check-type: http\n"
                  "  readiness-health-check-type: process\n  readiness-health-check-http-endpoint: /r\n",
                  "needs readiness-health-check-type http" },
                { "applications:\n- name: a\n  readiness-health-check-invocation-timeout: 0\n",
                  "readiness-health-check-invocation-timeout must be an integer from 1 to 180" },
                { "applications:\n- name: a\n  readiness-health-check-interval: -1\n",
                  "readiness-health-check-interval must be an integer from 1 to 600" },
                { "applications:\n- name: a\n  readiness-health-check-interval: '3'\n",
                  "readiness-health-check-interval must be" },
                { "applications:\n- name: a\n  no-route: 'yes'\n", "no-route must be true or false" },
                { "applications:\n- name: a\n  no-route: true\n  routes:\n  - route: a.example\n",
                  "cannot be used together" },
                { "applications:\n- name: a\n- name: a\n", "listed twice" },
                { "applications:\n- name: a\n  command: ''\n", "command must not be empty" },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct manifest *m = NULL;
                struct berr *err = NULL;
                int r = manifest_parse(bad[i].y, strlen(bad[i].y), &m, &err);
                if (r >= 0)
                        fail_msg("accepted: %s", bad[i].y);
                assert_null(m);
                assert_non_null(err);
                if (!strstr(berr_msg(err), bad[i].needle))
                        fail_msg("%s: got \"%s\", want \"%s\"", bad[i].y, berr_msg(err), bad[i].needle);
                berr_free(err);
        }
}

static void test_error_names_the_app(void **state)
{
        (void)state;
        const char *y = "applications:\n- name: ok\n- name: second\n  memory: lots\n";
        struct manifest *m = NULL;
        struct berr *err = NULL;
        assert_true(manifest_parse(y, strlen(y), &m, &err) < 0);
        assert_string_equal(berr_msg(err),
                            "applications[1] (second): memory: invalid size \"lots\" (use 256M, "
                            "1G, 512MB, ...)");
        berr_free(err);
}

static void test_sizes(void **state)
{
        (void)state;
        assert_int_equal(manifest_size_mb("256M"), 256);
        assert_int_equal(manifest_size_mb("256m"), 256);
        assert_int_equal(manifest_size_mb("512MB"), 512);
        assert_int_equal(manifest_size_mb("1G"), 1024);
        assert_int_equal(manifest_size_mb("2gb"), 2048);
        assert_int_equal(manifest_size_mb("1024"), 1024);
        assert_int_equal(manifest_size_mb("0"), -1);
        assert_int_equal(manifest_size_mb("-1M"), -1);
        assert_int_equal(manifest_size_mb(" 1M"), -1);
        assert_int_equal(manifest_size_mb("1K"), -1);
        assert_int_equal(manifest_size_mb("1T"), -1);
        assert_int_equal(manifest_size_mb(""), -1);
        assert_int_equal(manifest_size_mb("99999999999999999999M"), -1);
        assert_int_equal(manifest_size_mb("16777217M"), -1);
        assert_int_equal(manifest_size_mb("16384G"), 16777216);
}

static void test_routes_and_env_names(void **state)
{
        (void)state;
        assert_int_equal(manifest_route_check("a.b", NULL), 0);
        assert_int_equal(manifest_route_check("a-1.b/x/y", NULL), 0);
        assert_true(manifest_route_check("", NULL) < 0);
        assert_true(manifest_route_check("/x", NULL) < 0);
        assert_true(manifest_route_check("a.b/", NULL) < 0);
        assert_true(manifest_route_check(".a", NULL) < 0);
        assert_true(manifest_route_check("a.", NULL) < 0);
        assert_true(manifest_route_check("a_b.c", NULL) < 0);
        assert_true(manifest_env_name_reserved("PORT"));
        assert_true(manifest_env_name_reserved("VCAP_SERVICES"));
        assert_true(manifest_env_name_reserved("CF_INSTANCE_GUID"));
        assert_true(manifest_env_name_reserved(""));
        assert_false(manifest_env_name_reserved("PORTS"));
        assert_false(manifest_env_name_reserved("CF_OTHER"));
}

static void test_too_big(void **state)
{
        (void)state;
        struct manifest *m = NULL;
        struct berr *err = NULL;
        assert_int_equal(manifest_parse("x", MANIFEST_MAX_BYTES + 1, &m, &err), -EFBIG);
        berr_free(err);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_full_app),
                cmocka_unit_test(test_health_check_keys),
                cmocka_unit_test(test_unknown_keys_warn),
                cmocka_unit_test(test_errors),
                cmocka_unit_test(test_error_names_the_app),
                cmocka_unit_test(test_sizes),
                cmocka_unit_test(test_routes_and_env_names),
                cmocka_unit_test(test_too_big),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
