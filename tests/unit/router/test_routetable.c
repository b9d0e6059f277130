/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "lib/json.h"
#include "router/router_internal.h"

static struct route_table *build(const char *text, const struct route_table *prev)
{
        json_t *doc = NULL;
        struct berr *err = NULL;
        assert_int_equal(json_parse_buf(text, strlen(text), &doc, &err), 0);
        struct route_table *t = NULL;
        int r = route_table_from_json(doc, prev, &t, &err);
        if (r < 0)
                fail_msg("build: %s", berr_msg(err));
        json_decref(doc);
        return t;
}

static int build_fails(const char *text)
{
        json_t *doc = NULL;
        struct berr *err = NULL;
        assert_int_equal(json_parse_buf(text, strlen(text), &doc, &err), 0);
        struct route_table *t = NULL;
        int r = route_table_from_json(doc, NULL, &t, &err);
        assert_null(t);
        assert_non_null(err);
        berr_free(err);
        json_decref(doc);
        return r;
}

static const struct rt_route *look(const struct route_table *t, const char *host, const char *path)
{
        char h[300];
        int n = route_host_normalize(host, strlen(host), h, sizeof(h));
        if (n < 0)
                return NULL;
        return route_table_lookup(t, h, (size_t)n, path, strlen(path));
}

static const char *table1 =
    "{\"index\":7,\"routes\":["
    "{\"host\":\"web.apps.localhost\",\"path\":\"\",\"route_guid\":\"r1\",\"app_guid\":\"a1\","
    " \"endpoints\":[{\"instance_guid\":\"i0\",\"index\":0,\"host\":\"127.0.0.1\",\"port\":8001},"
    "                {\"instance_guid\":\"i1\",\"index\":1,\"host\":\"127.0.0.1\",\"port\":8002}]},"
    "{\"host\":\"web.apps.localhost\",\"path\":\"/api\",\"route_guid\":\"r2\",\"app_guid\":\"a2\","
    " \"endpoints\":[{\"instance_guid\":\"i9\",\"index\":0,\"host\":\"::1\",\"port\":9000}]},"
    "{\"host\":\"web.apps.localhost\",\"path\":\"/api/v2/\",\"route_guid\":\"r3\",\"app_guid\":\"a3\","
    " \"endpoints\":[]},"
    "{\"host\":\"empty.apps.localhost\",\"route_guid\":\"r4\",\"app_guid\":\"a4\",\"endpoints\":[]},"
    "{\"host\":\"*.wild.localhost\",\"route_guid\":\"r5\",\"app_guid\":\"a5\",\"endpoints\":[]}"
    "]}";

static void test_normalize(void **state)
{
        (void)state;
        char out[64];
        assert_int_equal(route_host_normalize("Web.Apps.LocalHost:9080", 23, out, sizeof(out)), 18);
        assert_string_equal(out, "web.apps.localhost");
        assert_int_equal(route_host_normalize("web.apps.localhost.", 19, out, sizeof(out)), 18);
        assert_string_equal(out, "web.apps.localhost");
        assert_int_equal(route_host_normalize("[::1]:80", 8, out, sizeof(out)), 5);
        assert_string_equal(out, "[::1]");
        assert_int_equal(route_host_normalize("", 0, out, sizeof(out)), -1);
        assert_int_equal(route_host_normalize(":80", 3, out, sizeof(out)), -1);
        assert_int_equal(route_host_normalize("a b", 3, out, sizeof(out)), -1);
        assert_int_equal(route_host_normalize("[::1", 4, out, sizeof(out)), -1);
        /* Too long for the output. */
        assert_int_equal(route_host_normalize("abcdefgh", 8, out, 8), -1);
}

static void test_lookup(void **state)
{
        (void)state;
        struct route_table *t = build(table1, NULL);
        assert_int_equal(t->index, 7);
        assert_int_equal(t->n_routes, 5);

        const struct rt_route *r = look(t, "WEB.apps.localhost:1234", "/");
        assert_non_null(r);
        assert_string_equal(r->route_guid, "r1");
        assert_int_equal(r->n_eps, 2);
        assert_string_equal(r->eps[1].instance_guid, "i1");
        assert_int_equal(r->eps[1].port, 8002);
        assert_int_equal(r->eps[0].addr.ss_family, AF_INET);

        assert_string_equal(look(t, "web.apps.localhost", "/api")->route_guid, "r2");
        assert_string_equal(look(t, "web.apps.localhost", "/api?x=1")->route_guid, "r2");
        assert_string_equal(look(t, "web.apps.localhost", "/api/users")->route_guid, "r2");
        assert_int_equal(look(t, "web.apps.localhost", "/api")->eps[0].addr.ss_family, AF_INET6);
        /* A prefix matches at a '/' boundary only. */
        assert_string_equal(look(t, "web.apps.localhost", "/apix")->route_guid, "r1");
        /* The longest path wins; a trailing '/' in the route's path is ignored. */
        assert_string_equal(look(t, "web.apps.localhost", "/api/v2")->route_guid, "r3");
        assert_string_equal(look(t, "web.apps.localhost", "/api/v2/x")->route_guid, "r3");

        r = look(t, "empty.apps.localhost", "/");
        assert_non_null(r);
        assert_int_equal(r->n_eps, 0);

        assert_null(look(t, "nope.apps.localhost", "/"));
        assert_null(look(t, "apps.localhost", "/"));
        assert_string_equal(look(t, "a.wild.localhost", "/")->route_guid, "r5");
        assert_null(look(t, "wild.localhost", "/"));
        /* Gorouter's wildcards cover every depth below their domain (route.Uri.NextWildcard). */
        assert_string_equal(look(t, "a.b.wild.localhost", "/")->route_guid, "r5");
        /* Paths match ignoring case, as Gorouter lowercases the whole route key. */
        assert_string_equal(look(t, "web.apps.localhost", "/API")->route_guid, "r2");
        assert_string_equal(look(t, "web.apps.localhost", "/Api/V2/x")->route_guid, "r3");
        route_table_unref(t);
}

static void test_nearest_wildcard_and_path_case(void **state)
{
        (void)state;
        struct route_table *t =
            build("{\"index\":1,\"routes\":["
                  "{\"host\":\"*.w.test\",\"route_guid\":\"far\",\"app_guid\":\"a\",\"endpoints\":[]},"
                  "{\"host\":\"*.b.w.test\",\"route_guid\":\"near\",\"app_guid\":\"a\",\"endpoints\":[]},"
                  "{\"host\":\"x.b.w.test\",\"path\":\"/Docs/\",\"route_guid\":\"docs\",\"app_guid\":\"a\","
                  "\"endpoints\":[]}]}",
                  NULL);
        assert_string_equal(look(t, "a.b.w.test", "/")->route_guid, "near");
        assert_string_equal(look(t, "a.a.b.w.test", "/")->route_guid, "near");
        assert_string_equal(look(t, "a.c.w.test", "/")->route_guid, "far");
        assert_string_equal(look(t, "b.w.test", "/")->route_guid, "far");
        assert_null(look(t, "w.test", "/"));
        assert_null(look(t, "test", "/"));
        /* An exact host with only a path route: other paths fall through to the wildcards, as in Gorouter. */
        assert_string_equal(look(t, "x.b.w.test", "/docs/a")->route_guid, "docs");
        assert_string_equal(look(t, "x.b.w.test", "/DOCS")->route_guid, "docs");
        assert_string_equal(look(t, "x.b.w.test", "/other")->route_guid, "near");
        route_table_unref(t);
}

static void test_round_robin_and_failures(void **state)
{
        (void)state;
        struct route_table *t = build(table1, NULL);
        struct rt_route *r = (struct rt_route *)look(t, "web.apps.localhost", "/");
        int a = route_pick(r, RT_ROUND_ROBIN, 0, NULL, 1000, 0),
            b = route_pick(r, RT_ROUND_ROBIN, 0, NULL, 1000, 0),
            c = route_pick(r, RT_ROUND_ROBIN, 0, NULL, 1000, 0);
        assert_int_not_equal(a, b);
        assert_int_equal(a, c);
        /* Tried endpoints are skipped; none left → -1. */
        assert_int_equal(route_pick(r, RT_ROUND_ROBIN, 0, NULL, 1000, 1ULL << 0), 1);
        assert_int_equal(route_pick(r, RT_ROUND_ROBIN, 0, NULL, 1000, 3), -1);
        /* A failed endpoint is skipped for 30 s while another is available. */
        route_mark_failed(&r->eps[0], 1000);
        for (int i = 0; i < 4; i++)
                assert_int_equal(route_pick(r, RT_ROUND_ROBIN, 0, NULL, 2000, 0), 1);
        assert_int_equal(route_pick(r, RT_ROUND_ROBIN, 0, NULL, 2000, 1ULL << 1),
                         0); /* the only one left, failed or not */
        assert_true(route_pick(r, RT_ROUND_ROBIN, 0, NULL, 1000 + RT_FAIL_SKIP_MS + 1, 0) >= 0);
        /* One endpoint only (X-CF-App-Instance): failed or not, until tried; no other instead. */
        assert_int_equal(route_pick_only(r, 0, 0, 0), 0);
        assert_int_equal(route_pick_only(r, 0, 0, 1ULL << 0), RT_PICK_NONE);
        assert_int_equal(route_pick_only(r, 1, 0, 1ULL << 0), 1);

        /* The failure mark survives a table swap for the same address. */
        struct route_table *t2 = build(table1, t);
        struct rt_route *r2 = (struct rt_route *)look(t2, "web.apps.localhost", "/");
        for (int i = 0; i < 4; i++)
                assert_int_equal(route_pick(r2, RT_ROUND_ROBIN, 0, NULL, 2000, 0), 1);
        route_table_unref(t);
        route_table_unref(t2);

        struct rt_route *e = (struct rt_route *)look(t2 = build(table1, NULL), "empty.apps.localhost", "/");
        assert_int_equal(route_pick(e, RT_ROUND_ROBIN, 0, NULL, 0, 0), -1);
        route_table_unref(t2);
}

static void test_least_conn_limit_and_sticky(void **state)
{
        (void)state;
        struct route_table *t = build(table1, NULL);
        struct rt_route *r = (struct rt_route *)look(t, "web.apps.localhost", "/");
        /* Least connections: the endpoint with fewer requests in flight, whatever the rotation says. */
        atomic_store(&r->eps[0].st->active, 3);
        atomic_store(&r->eps[1].st->active, 1);
        for (int i = 0; i < 4; i++)
                assert_int_equal(route_pick(r, RT_LEAST_CONN, 0, NULL, 1000, 0), 1);
        atomic_store(&r->eps[1].st->active, 5);
        assert_int_equal(route_pick(r, RT_LEAST_CONN, 0, NULL, 1000, 0), 0);
        /* The load survives a table swap for the same address (in-flight requests count on). */
        struct route_table *t2 = build(table1, t);
        struct rt_route *r2 = (struct rt_route *)look(t2, "web.apps.localhost", "/");
        assert_ptr_equal(r2->eps[0].st, r->eps[0].st);
        assert_int_equal(route_pick(r2, RT_LEAST_CONN, 0, NULL, 1000, 0), 0);
        route_table_unref(t);
        /* max_conns: full endpoints are skipped; all full → RT_PICK_LIMIT; tried ones are not "full". */
        assert_int_equal(route_pick(r2, RT_ROUND_ROBIN, 4, NULL, 1000, 0), 0);
        atomic_store(&r2->eps[0].st->active, 4);
        assert_int_equal(route_pick(r2, RT_ROUND_ROBIN, 4, NULL, 1000, 0), RT_PICK_LIMIT);
        assert_int_equal(route_pick(r2, RT_LEAST_CONN, 6, NULL, 1000, 0), 0);
        assert_int_equal(route_pick(r2, RT_ROUND_ROBIN, 4, NULL, 1000, 3), RT_PICK_NONE);
        atomic_store(&r2->eps[0].st->active, 0);
        atomic_store(&r2->eps[1].st->active, 0);
        /* Sticky: the named instance wins while it is listed, untried and not failed; else rotation. */
        for (int i = 0; i < 4; i++)
                assert_int_equal(route_pick(r2, RT_ROUND_ROBIN, 0, "i1", 1000, 0), 1);
        assert_int_equal(route_pick(r2, RT_ROUND_ROBIN, 0, "i1", 1000, 1ULL << 1), 0);
        assert_true(route_pick(r2, RT_ROUND_ROBIN, 0, "gone", 1000, 0) >= 0);
        route_mark_failed(&r2->eps[1], 1000);
        assert_int_equal(route_pick(r2, RT_ROUND_ROBIN, 0, "i1", 2000, 0), 0);
        route_table_unref(t2);
}

static void test_cookies(void **state)
{
        (void)state;
        char v[64];
        const char *h = "a=b; __VCAP_ID__=inst-1;JSESSIONID=x ; q=\"z\"";
        cookie_value(h, strlen(h), "__VCAP_ID__", v, sizeof(v));
        assert_string_equal(v, "inst-1");
        cookie_value(h, strlen(h), "q", v, sizeof(v));
        assert_string_equal(v, "z");
        cookie_value(h, strlen(h), "JSESSIONID", v, sizeof(v));
        assert_string_equal(v, "x");
        cookie_value(h, strlen(h), "jsessionid", v, sizeof(v)); /* names are case-sensitive */
        assert_string_equal(v, "");
        cookie_value(h, strlen(h), "__VCAP", v, sizeof(v));
        assert_string_equal(v, "");
        char big[200];
        snprintf(big, sizeof(big), "__VCAP_ID__=%0100d", 7);
        cookie_value(big, strlen(big), "__VCAP_ID__", v, sizeof(v)); /* too long: ignored */
        assert_string_equal(v, "");
        cookie_value("", 0, "a", v, sizeof(v));
        assert_string_equal(v, "");

        const char *sc =
            "JSESSIONID=abc; Path=/x; Secure; HttpOnly; SameSite=Lax; Expires=Wed, 21 Oct 2037 07:28:00 "
            "GMT; Max-Age=-1; Partitioned";
        assert_true(set_cookie_is(sc, strlen(sc), "JSESSIONID"));
        assert_false(set_cookie_is(sc, strlen(sc), "Path"));
        assert_false(set_cookie_is("JSESSIONIDX=1", 13, "JSESSIONID"));
        struct cookie_attrs a;
        set_cookie_attrs(sc, strlen(sc), &a);
        assert_true(a.secure && a.partitioned && a.max_age_negative);
        assert_string_equal(a.same_site, "Lax");
        assert_string_equal(a.expires, "Wed, 21 Oct 2037 07:28:00 GMT");
        char out[512];
        assert_true(vcap_cookie_format(out, sizeof(out), "inst-1", "/api", &a) > 0);
        assert_string_equal(
            out, "__VCAP_ID__=inst-1; Path=/api; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=0; "
                 "HttpOnly; Secure; SameSite=Lax; Partitioned");
        set_cookie_attrs("JSESSIONID=1; Max-Age=60", 24, &a);
        assert_false(a.max_age_negative || a.secure);
        assert_true(vcap_cookie_format(out, sizeof(out), "g", "", &a) > 0);
        assert_string_equal(out, "__VCAP_ID__=g; Path=/; HttpOnly");
        assert_int_equal(vcap_cookie_format(out, 10, "g", "", &a), -1);
}

static void test_store(void **state)
{
        (void)state;
        struct route_store s;
        route_store_init(&s);
        assert_null(route_store_get(&s));
        struct route_table *t = build(table1, NULL);
        route_store_swap(&s, t);
        struct route_table *held = route_store_get(&s);
        assert_ptr_equal(held, t);
        uint64_t e = atomic_load(&s.epoch);
        route_store_swap(&s, build("{\"index\":8,\"routes\":[]}", NULL));
        assert_int_equal(atomic_load(&s.epoch), e + 1);
        /* The old table stays usable by whoever holds it. */
        assert_string_equal(look(held, "web.apps.localhost", "/")->route_guid, "r1");
        route_table_unref(held);
        struct route_table *cur = route_store_get(&s);
        assert_int_equal(cur->index, 8);
        assert_null(look(cur, "web.apps.localhost", "/"));
        route_table_unref(cur);
        route_store_destroy(&s);
}

static void test_invalid(void **state)
{
        (void)state;
        build_fails("[]");
        build_fails("{\"routes\":[]}");
        build_fails("{\"index\":-1,\"routes\":[]}");
        build_fails("{\"index\":1,\"routes\":{}}");
        build_fails("{\"index\":1,\"routes\":[1]}");
        build_fails("{\"index\":1,\"routes\":[{\"path\":\"\"}]}");
        build_fails("{\"index\":1,\"routes\":[{\"host\":\"\"}]}");
        build_fails("{\"index\":1,\"routes\":[{\"host\":\"a:80\"}]}");
        build_fails("{\"index\":1,\"routes\":[{\"host\":\"a\",\"path\":\"nope\"}]}");
        build_fails("{\"index\":1,\"routes\":[{\"host\":\"a\",\"endpoints\":[{\"host\":\"1.2.3.4\"}]}]}");
        build_fails(
            "{\"index\":1,\"routes\":[{\"host\":\"a\",\"endpoints\":[{\"host\":\"1.2.3.4\",\"port\":0}]}]}");
        build_fails("{\"index\":1,\"routes\":[{\"host\":\"a\",\"endpoints\":[{\"host\":\"1.2.3.4\",\"port\":"
                    "70000}]}]}");
        /* Hosts are lowercased on the way in. */
        struct route_table *t = build("{\"index\":1,\"routes\":[{\"host\":\"UP.Example\"}]}", NULL);
        assert_non_null(look(t, "up.example", "/"));
        route_table_unref(t);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_normalize),
                cmocka_unit_test(test_lookup),
                cmocka_unit_test(test_nearest_wildcard_and_path_case),
                cmocka_unit_test(test_round_robin_and_failures),
                cmocka_unit_test(test_least_conn_limit_and_sticky),
                cmocka_unit_test(test_cookies),
                cmocka_unit_test(test_store),
                cmocka_unit_test(test_invalid),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
