/* SPDX-License-Identifier: Apache-2.0 */
/* env.c: execution metadata and port selection (udp ignored, tcp first on ties, 8080 fallback), the shown
 * start command, the instance env's order and VCAP_APPLICATION, refused names and Diego's restart backoff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "controller/ctl.h"

static json_t *config(const char *text)
{
        json_t *j = json_loads(text, 0, NULL);
        assert_non_null(j);
        return j;
}

static char *metadata_text(const char *cfg)
{
        json_t *c = config(cfg);
        json_t *m = env_execution_metadata(c);
        char *s = json_dumps(m, JSON_COMPACT);
        json_decref(m);
        json_decref(c);
        return s;
}

static void test_ports(void **state)
{
        (void)state;
        char *s = metadata_text(
            "{\"ExposedPorts\":{\"9001/tcp\":{},\"7000/udp\":{},\"9000/udp\":{},\"9000/tcp\":{}}}");
        json_t *m = json_loads(s, 0, NULL);
        json_t *p = json_object_get(m, "ports");
        assert_int_equal(json_array_size(p), 4);
        /* ascending, tcp before udp on the same number */
        int want_port[] = { 7000, 9000, 9000, 9001 };
        const char *want_proto[] = { "udp", "tcp", "udp", "tcp" };
        for (size_t i = 0; i < 4; i++) {
                assert_int_equal(json_integer_value(json_object_get(json_array_get(p, i), "Port")),
                                 want_port[i]);
                assert_string_equal(json_string_value(json_object_get(json_array_get(p, i), "Protocol")),
                                    want_proto[i]);
        }
        assert_int_equal(env_app_port(s), 9000);
        json_decref(m);
        free(s);

        s = metadata_text("{\"ExposedPorts\":{\"53/udp\":{}}}");
        assert_int_equal(env_app_port(s), 8080); /* udp only: as if nothing was exposed */
        free(s);
        s = metadata_text("{}");
        assert_string_equal(
            s, "{\"entrypoint\":[],\"cmd\":[],\"user\":\"\",\"workdir\":\"\",\"env\":[],\"ports\":[]}");
        assert_int_equal(env_app_port(s), 8080);
        free(s);
        s = metadata_text("{\"ExposedPorts\":{\"80\":{},\"443/tcp\":{}}}"); /* no protocol: tcp */
        assert_int_equal(env_app_port(s), 80);
        free(s);
        assert_int_equal(env_app_port(NULL), 8080);
        assert_int_equal(env_app_port("not json"), 8080);
}

static void test_metadata_fields(void **state)
{
        (void)state;
        char *s = metadata_text("{\"Entrypoint\":[\"/bin/web\"],\"Cmd\":[\"-p\",\"1\"],\"User\":\"app\","
                                "\"WorkingDir\":\"/srv\",\"Env\":[\"PATH=/bin\",\"A=1\"]}");
        assert_string_equal(s, "{\"entrypoint\":[\"/bin/web\"],\"cmd\":[\"-p\",\"1\"],\"user\":\"app\","
                               "\"workdir\":\"/srv\",\"env\":[\"PATH=/bin\",\"A=1\"],\"ports\":[]}");
        free(s);
}

static void test_start_command(void **state)
{
        (void)state;
        const struct {
                const char *cfg, *want;
        } cases[] = {
                { "{\"Entrypoint\":[\"/bin/web\"],\"Cmd\":[\"--port\",\"9000\"]}", "/bin/web --port 9000" },
                { "{\"Cmd\":[\"/bin/sh\",\"-c\",\"echo hi\"]}", "/bin/sh -c echo hi" },
                { "{\"Entrypoint\":[\"/init\"],\"Cmd\":null}", "/init" },
                { "{}", "" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                json_t *c = config(cases[i].cfg);
                char *s = env_start_command(c);
                assert_string_equal(s, cases[i].want);
                free(s);
                json_decref(c);
        }
}

static void test_instance_env(void **state)
{
        (void)state;
        json_t *vcap =
            config("{\"application_name\":\"web\",\"limits\":{\"fds\":16384,\"mem\":512,\"disk\":1024}}");
        json_t *user = config("{\"Z\":\"last\",\"A\":\"first\",\"EMPTY\":\"\"}");
        json_t *env = env_instance_env(vcap, "inst-1", 2, 9000, 512, user);
        const char *names[] = {
                "PORT", "VCAP_APPLICATION", "VCAP_SERVICES", "MEMORY_LIMIT", "Z", "A", "EMPTY"
        };
        assert_int_equal(json_array_size(env), ARRAY_SIZE(names));
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
                assert_string_equal(json_string_value(json_array_get(json_array_get(env, i), 0)), names[i]);
#define VAL(i) json_string_value(json_array_get(json_array_get(env, i), 1))
        assert_string_equal(VAL(0), "9000");
        assert_string_equal(VAL(2), "{}");
        assert_string_equal(VAL(3), "512m");
        assert_string_equal(VAL(4), "last");
        json_t *va = json_loads(VAL(1), 0, NULL);
#undef VAL
        assert_non_null(va);
        assert_string_equal(json_string_value(json_object_get(va, "application_name")), "web");
        assert_string_equal(json_string_value(json_object_get(va, "host")), "0.0.0.0");
        assert_string_equal(json_string_value(json_object_get(va, "instance_id")), "inst-1");
        assert_int_equal(json_integer_value(json_object_get(va, "instance_index")), 2);
        assert_int_equal(json_integer_value(json_object_get(va, "port")), 9000);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(va, "limits"), "mem")), 512);
        /* the input is not modified */
        assert_null(json_object_get(vcap, "instance_id"));
        json_decref(va);
        json_decref(env);
        json_decref(user);
        json_decref(vcap);
}

static void test_refused_names(void **state)
{
        (void)state;
        assert_string_equal(env_name_refused("PORT"), "environment_variables cannot set PORT");
        assert_string_equal(env_name_refused("VCAP_SERVICES"),
                            "environment_variables cannot start with VCAP_");
        assert_string_equal(env_name_refused("CF_INSTANCE_IP"),
                            "environment_variables cannot start with CF_INSTANCE_");
        assert_non_null(env_name_refused(""));
        assert_null(env_name_refused("PORTS"));
        assert_null(env_name_refused("port"));
        assert_null(env_name_refused("CF_STACK"));
        assert_null(env_name_refused("VCAP"));
}

static void test_backoff(void **state)
{
        (void)state;
        /* bbs models/actual_lrp_test.go: 0,1,2 → at once; 3 → 30 s; 7 → 8 min; 8 → 16 min; 199 → 16 min; 200
         * → never. */
        assert_int_equal(env_restart_delay_ms(0), 0);
        assert_int_equal(env_restart_delay_ms(1), 0);
        assert_int_equal(env_restart_delay_ms(2), 0);
        assert_int_equal(env_restart_delay_ms(3), 30000);
        assert_int_equal(env_restart_delay_ms(4), 60000);
        assert_int_equal(env_restart_delay_ms(5), 120000);
        assert_int_equal(env_restart_delay_ms(7), 8 * 60000);
        assert_int_equal(env_restart_delay_ms(8), 16 * 60000);
        assert_int_equal(env_restart_delay_ms(100), 16 * 60000);
        assert_int_equal(env_restart_delay_ms(199), 16 * 60000);
        assert_int_equal(env_restart_delay_ms(200), -1);
        assert_int_equal(env_restart_delay_ms(1000), -1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ports),         cmocka_unit_test(test_metadata_fields),
                cmocka_unit_test(test_start_command), cmocka_unit_test(test_instance_env),
                cmocka_unit_test(test_refused_names), cmocka_unit_test(test_backoff),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
