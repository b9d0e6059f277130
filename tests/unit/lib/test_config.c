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
                { "cell:\n  runtim: crun\n", "runtim" },
                { "cell:\n  network:\n    bridg: x\n", "bridg" },
                { "cell:\n  network:\n    allow_host_ports: [0]\n", "not a port" },
                { "cell:\n  network:\n    allow_host_ports: 53\n", "list of ports" },
                { "cell:\n  network:\n    ipv6: maybe\n", "true or false" },
                { "cell:\n  log_max_bytes: 10\n", "at least 4096" },
                { "cell:\n  log_files: 1000\n", "at most 100" },
                { "cell:\n  runtime: \"\"\n", "non-empty" },
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

static void test_cell(void **state)
{
        (void)state;
        static const char y[] = "cell:\n  runtime: runc\n  log_max_bytes: 65536\n  log_files: 3\n"
                                "  disk_pool_bytes: 1073741824\n  network:\n    bridge: br9\n"
                                "    subnet: 10.9.0.0/24\n    nft_table: t9\n    ipv6: true\n"
                                "    allow_host_ports: [53, 8125]\n";
        struct berth_config *c = NULL;
        struct berr *err = NULL;
        if (config_parse(y, strlen(y), &c, &err) < 0)
                fail_msg("%s", berr_msg(err));
        assert_string_equal(c->cell_runtime, "runc");
        assert_int_equal(c->cell_log_max_bytes, 65536);
        assert_int_equal(c->cell_log_files, 3);
        assert_int_equal(c->cell_disk_pool_bytes, 1ULL << 30);
        assert_string_equal(c->cell_bridge, "br9");
        assert_string_equal(c->cell_subnet, "10.9.0.0/24");
        assert_string_equal(c->cell_nft_table, "t9");
        assert_true(c->cell_ipv6);
        assert_int_equal(c->n_cell_allow_host_ports, 2);
        assert_int_equal(c->cell_allow_host_ports[1], 8125);
        config_free(c);
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
                cmocka_unit_test(test_cell),
                cmocka_unit_test(test_missing_file),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
