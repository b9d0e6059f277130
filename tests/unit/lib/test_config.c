/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "lib/config.h"

static void test_full(void **state)
{
        (void)state;
        const char *y = "registries:\n"
                        "  insecure: [\"Reg.Internal:5000\"]\n"
                        "  ca_files: [/etc/ca.pem]\n"
                        "  hosts:\n"
                        "    \"secure.example:443\":\n"
                        "      ca_file: /etc/secure.pem\n"
                        "image:\n"
                        "  max_parallel_layers: 8\n"
                        "  max_layer_bytes: 1000\n";
        struct berth_config *c = NULL;
        struct berr *err = NULL;
        assert_int_equal(config_parse(y, strlen(y), &c, &err), 0);
        const struct config_registry *r = config_find_registry(c, "reg.internal:5000");
        assert_non_null(r);
        assert_true(r->insecure);
        r = config_find_registry(c, "secure.example:443");
        assert_non_null(r);
        assert_false(r->insecure);
        assert_string_equal(r->ca_file, "/etc/secure.pem");
        assert_null(config_find_registry(c, "other"));
        assert_int_equal(c->n_ca_files, 1);
        assert_int_equal(c->max_parallel_layers, 8);
        assert_int_equal(c->max_layer_bytes, 1000);
        assert_int_equal(c->max_layer_entries, 2000000);
        config_free(c);
}

static void test_errors(void **state)
{
        (void)state;
        static const struct {
                const char *y, *needle;
        } bad[] = {
                { "registrie: {}\n", "registrie" },
                { "registries:\n  insecure: yes\n", "list" },
                { "registries:\n  ca_files: [relative.pem]\n", "absolute" },
                { "registries:\n  hosts:\n    h:\n      typo: 1\n", "typo" },
                { "image:\n  max_layer_bytes: -1\n", "positive" },
                { "image:\n  max_parallel_layers: 1000\n", "at most" },
                { "- a\n- b\n", "mapping" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                struct berth_config *c = NULL;
                struct berr *err = NULL;
                assert_true(config_parse(bad[i].y, strlen(bad[i].y), &c, &err) < 0);
                assert_null(c);
                if (!strstr(berr_msg(err), bad[i].needle))
                        fail_msg("%s: got \"%s\"", bad[i].y, berr_msg(err));
                berr_free(err);
        }
}

static void test_missing_file(void **state)
{
        (void)state;
        struct berth_config *c = NULL;
        struct berr *err = NULL;
        assert_int_equal(config_load("/nonexistent/berth.yaml", false, &c, &err), 0);
        assert_non_null(c);
        config_free(c);
        c = NULL;
        assert_int_equal(config_load("/nonexistent/berth.yaml", true, &c, &err), -ENOENT);
        assert_non_null(strstr(berr_msg(err), "/nonexistent/berth.yaml"));
        berr_free(err);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_full),
                cmocka_unit_test(test_errors),
                cmocka_unit_test(test_missing_file),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
