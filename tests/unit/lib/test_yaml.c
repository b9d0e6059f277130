/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "lib/json.h"
#include "lib/yaml_json.h"

static json_t *parse_ok(const char *y)
{
        json_t *j = NULL;
        struct berr *err = NULL;
        int r = yaml_to_json(y, strlen(y), &j, &err);
        if (r < 0)
                fail_msg("%s: %s", y, berr_msg(err));
        return j;
}

static void test_scalars(void **state)
{
        (void)state;
        _cleanup_json_ json_t *j =
            parse_ok("a: 1\nb: true\nc: ~\nd: \"1\"\ne: 1.5\nf: hello world\ng: -3\nh: 'yes'\n");
        assert_true(json_is_integer(json_object_get(j, "a")));
        assert_int_equal(json_integer_value(json_object_get(j, "a")), 1);
        assert_true(json_is_true(json_object_get(j, "b")));
        assert_true(json_is_null(json_object_get(j, "c")));
        assert_true(json_is_string(json_object_get(j, "d")));
        assert_true(json_is_real(json_object_get(j, "e")));
        assert_string_equal(json_string_value(json_object_get(j, "f")), "hello world");
        assert_int_equal(json_integer_value(json_object_get(j, "g")), -3);
        assert_string_equal(json_string_value(json_object_get(j, "h")), "yes");
}

static void test_nested(void **state)
{
        (void)state;
        _cleanup_json_ json_t *j =
            parse_ok("applications:\n- name: app\n  env:\n    K: v\n  routes:\n  - route: x.example\n");
        json_t *apps = json_object_get(j, "applications");
        assert_int_equal(json_array_size(apps), 1);
        json_t *app = json_array_get(apps, 0);
        assert_string_equal(json_string_value(json_object_get(app, "name")), "app");
        assert_string_equal(json_string_value(json_object_get(json_object_get(app, "env"), "K")), "v");
        _cleanup_json_ json_t *empty = parse_ok("");
        assert_true(json_is_null(empty));
}

static void test_errors(void **state)
{
        (void)state;
        static const struct {
                const char *y, *needle;
        } bad[] = {
                { "a: [1, 2", "line" },
                { "a: &x 1\nb: *x\n", "anchor" },
                { "a: 1\na: 2\n", "twice" },
                { "? [1]\n: 2\n", "scalar" },
                { "--- 1\n--- 2\n", "more than one" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                json_t *j = NULL;
                struct berr *err = NULL;
                assert_true(yaml_to_json(bad[i].y, strlen(bad[i].y), &j, &err) < 0);
                assert_null(j);
                if (!strstr(berr_msg(err), bad[i].needle))
                        fail_msg("%s: got \"%s\"", bad[i].y, berr_msg(err));
                berr_free(err);
        }
        /* A deep document is refused, not a stack overflow. */
        char deep[1000];
        memset(deep, '[', sizeof(deep) - 1);
        deep[sizeof(deep) - 1] = '\0';
        json_t *j = NULL;
        assert_true(yaml_to_json(deep, strlen(deep), &j, NULL) < 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_scalars),
                cmocka_unit_test(test_nested),
                cmocka_unit_test(test_errors),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
