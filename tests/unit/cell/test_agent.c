/* SPDX-License-Identifier: Apache-2.0 */
/* The agent's strict validation of a desired LRP: a good body passes; each bad field is named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cell/agent.h"

static const char good[] =
    "{\"instance_guid\":\"g-1\",\"process_guid\":\"p\",\"app_guid\":\"a\",\"app_name\":\"web\",\"index\":0,"
    "\"image\":\"127.0.0.1:5000/app@sha256:00\",\"username\":null,\"password\":null,\"command\":null,"
    "\"env\":[[\"PORT\",\"8080\"]],\"ports\":[8080],\"memory_mb\":256,\"disk_mb\":1024,"
    "\"health_check\":{\"type\":\"port\",\"endpoint\":\"/\",\"timeout_s\":60,\"invocation_timeout_s\":1}}";

/* Validate good with one change (set key to the JSON value; NULL deletes); returns the error or NULL. */
static char *check(const char *key, const char *value)
{
        json_t *b = json_loads(good, 0, NULL);
        assert_non_null(b);
        json_t *target = b;
        const char *k = key;
        if (key && !strncmp(key, "health_check.", 13)) {
                target = json_object_get(b, "health_check");
                k = key + 13;
        }
        if (key && value)
                json_object_set_new(target, k, json_loads(value, JSON_DECODE_ANY, NULL));
        else if (key)
                json_object_del(target, k);
        struct berr *err = NULL;
        int r = cell_agent_lrp_validate(b, "g-1", &err);
        json_decref(b);
        char *msg = r < 0 ? strdup(berr_msg(err)) : NULL;
        berr_free(err);
        return msg;
}

static void expect_field(const char *key, const char *value, const char *field)
{
        char *msg = check(key, value);
        if (!msg)
                fail_msg("%s=%s accepted", key, value ? value : "(deleted)");
        if (strncmp(msg, field, strlen(field)))
                fail_msg("%s=%s: \"%s\" does not name %s", key, value ? value : "(deleted)", msg, field);
        free(msg);
}

static void test_good(void **state)
{
        (void)state;
        assert_null(check(NULL, NULL));
        assert_null(check("command", "[\"/bin/sh\",\"-c\",\"x\"]"));
        assert_null(check("username", "\"u\""));
        assert_null(check("health_check.type", "\"http\""));
        assert_null(check("health_check.invocation_timeout_s", NULL));
        assert_null(check("env", NULL));
}

static void test_bad_fields(void **state)
{
        (void)state;
        expect_field("bogus", "1", "bogus");
        expect_field("instance_guid", "\"other\"", "instance_guid");
        expect_field("process_guid", NULL, "process_guid");
        expect_field("image", "\"\"", "image");
        expect_field("index", "-1", "index");
        expect_field("index", "\"0\"", "index");
        expect_field("command", "[]", "command");
        expect_field("command", "[1]", "command");
        expect_field("env", "[[\"A\"]]", "env");
        expect_field("env", "[[\"A=B\",\"c\"]]", "env");
        expect_field("ports", "[]", "ports");
        expect_field("ports", "[70000]", "ports");
        expect_field("memory_mb", "0", "memory_mb");
        expect_field("disk_mb", "\"1\"", "disk_mb");
        expect_field("health_check", "null", "health_check");
        expect_field("health_check.type", "\"tcp\"", "health_check.type");
        expect_field("health_check.endpoint", "\"x\"", "health_check.endpoint");
        expect_field("health_check.timeout_s", "0", "health_check.timeout_s");
        expect_field("health_check.extra", "1", "health_check.extra");
        expect_field("password", "1", "username/password");
        struct berr *err = NULL;
        json_t *b = json_loads(good, 0, NULL);
        assert_true(cell_agent_lrp_validate(b, "bad/guid", &err) < 0);
        json_t *arr = json_array();
        assert_true(cell_agent_lrp_validate(arr, "g-1", &err) < 0);
        json_decref(arr);
        json_decref(b);
        berr_free(err);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_good),
                cmocka_unit_test(test_bad_fields),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
