/* SPDX-License-Identifier: Apache-2.0 */
/* Dispatch: route matching, 404/405, authentication, JSON bodies, error bodies, pagination math. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ctltest.h"

static void test_pattern_match(void **state)
{
        (void)state;
        char buf[256];
        const char *p[4] = { NULL };
        assert_true(api_pattern_match("/", "/", buf, sizeof(buf), p));
        assert_true(api_pattern_match("/v3/apps", "/v3/apps", buf, sizeof(buf), p));
        assert_false(api_pattern_match("/v3/apps", "/v3/apps/", buf, sizeof(buf), p));
        assert_false(api_pattern_match("/v3/apps", "/v3/app", buf, sizeof(buf), p));
        assert_false(api_pattern_match("/v3/apps/:guid", "/v3/apps", buf, sizeof(buf), p));
        assert_false(api_pattern_match("/v3/apps/:guid", "/v3/apps/", buf, sizeof(buf), p));
        assert_true(api_pattern_match("/v3/apps/:guid/actions/start", "/v3/apps/abc/actions/start", buf,
                                      sizeof(buf), p));
        assert_string_equal(p[0], "abc");
        assert_true(api_pattern_match("/v3/routes/:guid/destinations/:d", "/v3/routes/r1/destinations/d2",
                                      buf, sizeof(buf), p));
        assert_string_equal(p[0], "r1");
        assert_string_equal(p[1], "d2");
        assert_false(api_pattern_match("/v3/apps/:guid", "/v3/apps/a/b", buf, sizeof(buf), p));
        /* A segment that does not fit the buffer does not match. */
        assert_false(api_pattern_match("/v3/apps/:guid", "/v3/apps/abcdef", buf, 4, p));
}

static void test_error_body(void **state)
{
        (void)state;
        json_t *j = api_error_body(10010, "ResourceNotFound", "App not found");
        char *s = json_dump_str(j, false);
        assert_string_equal(
            s,
            "{\"errors\":[{\"code\":10010,\"title\":\"CF-ResourceNotFound\",\"detail\":\"App not found\"}]}");
        free(s);
        json_decref(j);
        struct http_response resp = { 0 };
        api_not_found(&resp, "Space");
        assert_int_equal(resp.status, 404);
        json_t *e = json_array_get(json_object_get(resp.json, "errors"), 0);
        assert_string_equal(json_string_value(json_object_get(e, "detail")), "Space not found");
        assert_string_equal(json_string_value(json_object_get(e, "title")), "CF-ResourceNotFound");
        test_resp_reset(&resp);
        api_forbidden(&resp);
        assert_int_equal(resp.status, 403);
        test_resp_reset(&resp);
        api_unprocessable(&resp, "Name must not be empty");
        assert_int_equal(resp.status, 422);
        e = json_array_get(json_object_get(resp.json, "errors"), 0);
        assert_int_equal(json_integer_value(json_object_get(e, "code")), 10008);
        test_resp_reset(&resp);
}

static const char *href(json_t *p, const char *k)
{
        json_t *v = json_object_get(p, k);
        return json_is_null(v) ? NULL : json_string_value(json_object_get(v, "href"));
}

static void test_pagination(void **state)
{
        (void)state;
        struct ctl c = { .external_url = (char *)"http://api.test" };
        json_t *p =
            api_pagination(&c, "/v3/organizations", "page=2&per_page=3&names=a,b&order_by=-name", 7, 2, 3);
        assert_int_equal(json_integer_value(json_object_get(p, "total_results")), 7);
        assert_int_equal(json_integer_value(json_object_get(p, "total_pages")), 3);
        assert_string_equal(href(p, "first"),
                            "http://api.test/v3/organizations?page=1&per_page=3&names=a,b&order_by=-name");
        assert_string_equal(href(p, "last"),
                            "http://api.test/v3/organizations?page=3&per_page=3&names=a,b&order_by=-name");
        assert_string_equal(href(p, "next"),
                            "http://api.test/v3/organizations?page=3&per_page=3&names=a,b&order_by=-name");
        assert_string_equal(href(p, "previous"),
                            "http://api.test/v3/organizations?page=1&per_page=3&names=a,b&order_by=-name");
        json_decref(p);
        /* First page: no previous; last page: no next; empty list: one page. */
        p = api_pagination(&c, "/v3/x", "", 7, 3, 3);
        assert_null(href(p, "next"));
        assert_non_null(href(p, "previous"));
        json_decref(p);
        p = api_pagination(&c, "/v3/x", "", 0, 1, 50);
        assert_int_equal(json_integer_value(json_object_get(p, "total_pages")), 1);
        assert_null(href(p, "next"));
        assert_null(href(p, "previous"));
        assert_string_equal(href(p, "last"), "http://api.test/v3/x?page=1&per_page=50");
        json_decref(p);
        p = api_pagination(&c, "/v3/x", "", 6, 1, 3);
        assert_int_equal(json_integer_value(json_object_get(p, "total_pages")), 2);
        json_decref(p);
}

static void call(struct ctl *c, struct http_response *resp, const char *method, const char *path,
                 const char *query, const char *auth, const char *body)
{
        struct test_req t = { 0 };
        t.http.method = method;
        t.http.path = path;
        t.http.query = query;
        t.http.body = body;
        t.http.body_len = strlen(body);
        t.http.peer = "127.0.0.1:1";
        t.auth = auth;
        test_resp_reset(resp);
        api_handle(c, &t.http, resp);
}

static int err_code(struct http_response *resp)
{
        return (int)json_integer_value(
            json_object_get(json_array_get(json_object_get(resp->json, "errors"), 0), "code"));
}

static void test_dispatch(void **state)
{
        (void)state;
        struct ctl c;
        char dir[64], guid[37];
        struct http_response resp = { 0 };
        char *access = NULL, *refresh = NULL;
        test_ctl_open(&c, dir);
        db_lock(&c);
        assert_int_equal(auth_user_create(&c, "root", "pw", true, guid, NULL), 0);
        assert_int_equal(auth_token_issue(&c, guid, &access, &refresh, NULL), 0);
        assert_int_equal(flags_bootstrap(&c, NULL), 0);
        db_unlock(&c);
        char *bearer = xasprintf("bearer %s", access);
        char *upper = xasprintf("Bearer %s", access);

        call(&c, &resp, "GET", "/v3/nothing", "", NULL, "");
        assert_int_equal(resp.status, 404);
        assert_int_equal(err_code(&resp), 10000);
        call(&c, &resp, "PUT", "/v3/organizations", "", bearer, "{}");
        assert_int_equal(resp.status, 405);
        call(&c, &resp, "GET", "/v3/info", "", NULL, "");
        assert_int_equal(resp.status, 200);
        assert_string_equal(json_string_value(json_object_get(resp.json, "name")), "berth");
        call(&c, &resp, "GET", "/v3/organizations", "", NULL, "");
        assert_int_equal(resp.status, 401);
        assert_int_equal(err_code(&resp), 10002);
        call(&c, &resp, "GET", "/v3/organizations", "", "bearer wrong", "");
        assert_int_equal(resp.status, 401);
        assert_int_equal(err_code(&resp), 1000);
        call(&c, &resp, "GET", "/v3/organizations", "", upper, "");
        assert_int_equal(resp.status, 200);
        call(&c, &resp, "POST", "/v3/organizations", "", bearer, "{not json");
        assert_int_equal(resp.status, 400);
        assert_int_equal(err_code(&resp), 1001);
        call(&c, &resp, "POST", "/v3/organizations", "", bearer, "[1]");
        assert_int_equal(resp.status, 400);
        call(&c, &resp, "POST", "/v3/organizations", "", bearer, "{\"name\":\"\"}");
        assert_int_equal(resp.status, 422);
        call(&c, &resp, "POST", "/v3/organizations", "", bearer, "{\"name\":\"o1\"}");
        assert_int_equal(resp.status, 201);
        call(&c, &resp, "POST", "/v3/organizations", "", bearer, "{\"name\":\"o1\"}");
        assert_int_equal(resp.status, 422);
        assert_int_equal(err_code(&resp), 10016);
        call(&c, &resp, "GET", "/v3/organizations", "per_page=0", bearer, "");
        assert_int_equal(resp.status, 400);
        assert_int_equal(err_code(&resp), 10005);
        call(&c, &resp, "GET", "/v3/organizations", "order_by=size", bearer, "");
        assert_int_equal(resp.status, 400);
        call(&c, &resp, "GET", "/v3/feature_flags/diego_docker", "", bearer, "");
        assert_int_equal(resp.status, 200);
        assert_true(json_is_false(json_object_get(resp.json, "enabled")));
        call(&c, &resp, "GET", "/v3/feature_flags/nope", "", bearer, "");
        assert_int_equal(resp.status, 404);
        /* The internal token is only for internal routes. */
        call(&c, &resp, "GET", "/v3/organizations", "", "bearer internal-secret", "");
        assert_int_equal(resp.status, 401);
        test_resp_reset(&resp);
        free(bearer);
        free(upper);
        free(access);
        free(refresh);
        test_ctl_close(&c, dir);
}

int main(void)
{
        if (sodium_init() < 0)
                return 1;
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_pattern_match),
                cmocka_unit_test(test_error_body),
                cmocka_unit_test(test_pagination),
                cmocka_unit_test(test_dispatch),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
