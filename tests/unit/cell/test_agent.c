/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The agent's strict validation of a desired LRP (a good body passes; each bad field is named), its crash
 * reasons, and the ordering of merged log records.
 */
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

static char *reason_of(const char *doc, int code)
{
        json_t *d = json_loads(doc, 0, NULL);
        assert_non_null(d);
        char *r = agent_exit_reason(d, code);
        json_decref(d);
        return r;
}

static void test_exit_reasons(void **state)
{
        (void)state;
        static const struct {
                const char *doc;
                int code;
                const char *want;
        } cases[] = {
                { "{\"State\":{\"ExitCode\":3}}", 3, "exited with status 3" },
                { "{\"State\":{\"ExitCode\":0}}", 0, "exited with status 0" },
                { "{\"State\":{\"ExitCode\":137,\"Signal\":9}}", 137, "killed by signal 9 (SIGKILL)" },
                { "{\"State\":{\"ExitCode\":143,\"Signal\":15}}", 143, "killed by signal 15 (SIGTERM)" },
                /* the OOM killer's SIGKILL is an OOM kill; so is a child's kill the init survived */
                { "{\"State\":{\"ExitCode\":137,\"Signal\":9,\"OOMKilled\":true}}", 137, "out of memory" },
                { "{\"State\":{\"ExitCode\":1,\"OOMKilled\":true}}", 1, "out of memory" },
                { "{\"State\":{\"ExitCode\":-1}}", -1, "exited with an unknown status (its monitor died)" },
                /* a failure with the disk within min(quota/16, 1 MiB) of its quota */
                { "{\"State\":{\"ExitCode\":1},\"HostConfig\":{\"DiskQuota\":16777216},"
                  "\"Usage\":{\"disk_bytes\":16760832}}",
                  1, "disk quota exceeded" },
                { "{\"State\":{\"ExitCode\":1},\"HostConfig\":{\"DiskQuota\":16777216},"
                  "\"Usage\":{\"disk_bytes\":8388608}}",
                  1, "exited with status 1" },
                { "{\"State\":{\"ExitCode\":0},\"HostConfig\":{\"DiskQuota\":16777216},"
                  "\"Usage\":{\"disk_bytes\":16777216}}",
                  0, "exited with status 0" },
                { "{\"State\":{\"ExitCode\":1},\"HostConfig\":{\"DiskQuota\":0},"
                  "\"Usage\":{\"disk_bytes\":0}}",
                  1, "exited with status 1" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char *r = reason_of(cases[i].doc, cases[i].code);
                assert_string_equal(r, cases[i].want);
                free(r);
        }
}

static void test_sort_tail(void **state)
{
        (void)state;
        json_t *a = json_loads("[{\"time\":\"2026-01-01T00:00:02.000000000Z\",\"text\":\"c\"},"
                               "{\"time\":\"2026-01-01T00:00:01.000000000Z\",\"text\":\"a\"},"
                               "{\"time\":\"2026-01-01T00:00:02.000000000Z\",\"text\":\"d\"},"
                               "{\"time\":\"2026-01-01T00:00:01.500000000Z\",\"text\":\"b\"}]",
                               0, NULL);
        assert_non_null(a);
        json_t *all = agent_sort_tail(json_incref(a), 10);
        const char *want = "abcd"; /* equal times keep their order */
        assert_int_equal(json_array_size(all), 4);
        for (size_t i = 0; i < 4; i++)
                assert_int_equal(json_string_value(json_object_get(json_array_get(all, i), "text"))[0],
                                 want[i]);
        json_t *two = agent_sort_tail(a, 2);
        assert_int_equal(json_array_size(two), 2);
        assert_string_equal(json_string_value(json_object_get(json_array_get(two, 0), "text")), "c");
        assert_string_equal(json_string_value(json_object_get(json_array_get(two, 1), "text")), "d");
        json_decref(two);
        json_decref(all);
        json_t *none = agent_sort_tail(json_array(), 0);
        assert_int_equal(json_array_size(none), 0);
        json_decref(none);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_good),
                cmocka_unit_test(test_bad_fields),
                cmocka_unit_test(test_exit_reasons),
                cmocka_unit_test(test_sort_tail),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
