/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry client helpers that need no network: WWW-Authenticate parsing, scopes, token responses,
 * Retry-After, Content-Range, redirect origin checks, error bodies, Basic credentials.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "image/registry_internal.h"

/* ---- WWW-Authenticate ------------------------------------------------------------------------------ */

struct parsed {
        struct auth_challenge *v;
        size_t n;
};

static void parsed_free(struct parsed *p)
{
        auth_challenges_free(p->v, p->n);
        p->v = NULL;
        p->n = 0;
}

static struct parsed parse_ok(const char *h)
{
        struct parsed p = { 0 };
        struct berr *err = NULL;
        int r = www_authenticate_parse(h, &p.v, &p.n, &err);
        if (r != 0)
                print_error("unexpected parse failure for [%s]: %s\n", h, berr_msg(err));
        assert_int_equal(r, 0);
        assert_null(err);
        return p;
}

static void parse_bad(const char *h)
{
        struct auth_challenge *v = (struct auth_challenge *)0x1;
        size_t n = 77;
        struct berr *err = NULL;
        int r = www_authenticate_parse(h, &v, &n, &err);
        if (r != -EINVAL)
                print_error("garbage accepted: [%s]\n", h);
        assert_int_equal(r, -EINVAL);
        assert_non_null(err);
        assert_non_null(strstr(berr_msg(err), "WWW-Authenticate"));
        /* Outputs are written only on success. */
        assert_ptr_equal(v, (struct auth_challenge *)0x1);
        assert_int_equal(n, 77);
        berr_free(err);
}

static void test_challenge_docker_hub(void **state)
{
        (void)state;
        struct parsed p =
            parse_ok("Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
                     "scope=\"repository:samalba/my-app:pull,push\"");
        assert_int_equal(p.n, 1);
        assert_string_equal(p.v[0].scheme, "bearer");
        assert_null(p.v[0].token68);
        assert_int_equal(p.v[0].n_params, 3);
        assert_string_equal(auth_challenge_param(&p.v[0], "realm"), "https://auth.docker.io/token");
        assert_string_equal(auth_challenge_param(&p.v[0], "service"), "registry.docker.io");
        /* A comma inside a quoted value does not split parameters or challenges. */
        assert_string_equal(auth_challenge_param(&p.v[0], "scope"), "repository:samalba/my-app:pull,push");
        assert_null(auth_challenge_param(&p.v[0], "error"));
        parsed_free(&p);
}

static void test_challenge_case_and_spacing(void **state)
{
        (void)state;
        /* Scheme and parameter names are case-insensitive; BWS around '=' and OWS around ',' allowed. */
        struct parsed p = parse_ok("  BEARER   Realm = \"https://r/t\" ,\tSERVICE=svc ,, ");
        assert_int_equal(p.n, 1);
        assert_string_equal(p.v[0].scheme, "bearer");
        assert_string_equal(auth_challenge_param(&p.v[0], "realm"), "https://r/t");
        assert_string_equal(auth_challenge_param(&p.v[0], "service"), "svc");
        parsed_free(&p);

        p = parse_ok("basic realm=\"Registry Realm\"");
        assert_int_equal(p.n, 1);
        assert_string_equal(p.v[0].scheme, "basic");
        assert_string_equal(auth_challenge_param(&p.v[0], "realm"), "Registry Realm");
        parsed_free(&p);
}

static void test_challenge_multiple(void **state)
{
        (void)state;
        struct parsed p = parse_ok("Basic realm=\"a, b\", Bearer realm=\"https://t/x\", service=\"s\", "
                                   "Negotiate, NTLM abc123==, Digest realm=\"d\", qop=\"auth,auth-int\"");
        assert_int_equal(p.n, 5);
        assert_string_equal(p.v[0].scheme, "basic");
        assert_string_equal(auth_challenge_param(&p.v[0], "realm"), "a, b");
        assert_int_equal(p.v[0].n_params, 1);
        assert_string_equal(p.v[1].scheme, "bearer");
        assert_int_equal(p.v[1].n_params, 2);
        assert_string_equal(auth_challenge_param(&p.v[1], "service"), "s");
        assert_string_equal(p.v[2].scheme, "negotiate");
        assert_int_equal(p.v[2].n_params, 0);
        assert_null(p.v[2].token68);
        assert_string_equal(p.v[3].scheme, "ntlm");
        assert_string_equal(p.v[3].token68, "abc123==");
        assert_string_equal(p.v[4].scheme, "digest");
        assert_string_equal(auth_challenge_param(&p.v[4], "qop"), "auth,auth-int");
        parsed_free(&p);
}

static void test_challenge_escapes(void **state)
{
        (void)state;
        struct parsed p =
            parse_ok("Bearer realm=\"a \\\"quoted\\\" realm\\\\x\", error=\"insufficient_scope\","
                     " error_description=\"\\,comma\"");
        assert_int_equal(p.n, 1);
        assert_string_equal(auth_challenge_param(&p.v[0], "realm"), "a \"quoted\" realm\\x");
        assert_string_equal(auth_challenge_param(&p.v[0], "error"), "insufficient_scope");
        assert_string_equal(auth_challenge_param(&p.v[0], "error_description"), ",comma");
        parsed_free(&p);

        /* Empty quoted string is a value. */
        p = parse_ok("Bearer realm=\"\"");
        assert_string_equal(auth_challenge_param(&p.v[0], "realm"), "");
        parsed_free(&p);
}

static void test_challenge_token68(void **state)
{
        (void)state;
        struct parsed p = parse_ok("Custom dGVzdDp0ZXN0=, Bearer realm=x");
        assert_int_equal(p.n, 2);
        assert_string_equal(p.v[0].scheme, "custom");
        assert_string_equal(p.v[0].token68, "dGVzdDp0ZXN0=");
        assert_int_equal(p.v[0].n_params, 0);
        assert_string_equal(auth_challenge_param(&p.v[1], "realm"), "x");
        parsed_free(&p);

        /* "a=b" is a parameter, "ab=" a token68. */
        p = parse_ok("X a=b");
        assert_null(p.v[0].token68);
        assert_string_equal(auth_challenge_param(&p.v[0], "a"), "b");
        parsed_free(&p);
        p = parse_ok("X ab==");
        assert_string_equal(p.v[0].token68, "ab==");
        parsed_free(&p);
        p = parse_ok("Bearer realm=");
        assert_string_equal(p.v[0].token68, "realm=");
        parsed_free(&p);
}

static void test_challenge_unquoted_url(void **state)
{
        (void)state;
        /* Seen in the wild: unquoted realm URLs. */
        struct parsed p = parse_ok("Bearer realm=https://auth.example.com:8443/token?x=1,service=registry");
        assert_string_equal(auth_challenge_param(&p.v[0], "realm"),
                            "https://auth.example.com:8443/token?x=1");
        assert_string_equal(auth_challenge_param(&p.v[0], "service"), "registry");
        parsed_free(&p);
}

static void test_challenge_empty_and_scheme_only(void **state)
{
        (void)state;
        struct parsed p = parse_ok("");
        assert_int_equal(p.n, 0);
        parsed_free(&p);
        p = parse_ok(" , ,");
        assert_int_equal(p.n, 0);
        parsed_free(&p);
        p = parse_ok("Basic");
        assert_int_equal(p.n, 1);
        assert_string_equal(p.v[0].scheme, "basic");
        parsed_free(&p);
}

static void test_challenge_garbage(void **state)
{
        (void)state;
        parse_bad("\"Bearer\"");
        parse_bad("=realm");
        parse_bad("Bearer realm=\"unterminated");
        parse_bad("Bearer realm=\"ends in backslash\\");
        parse_bad("Bearer service=\"x\", realm=");     /* empty value ("realm=" alone is a token68) */
        parse_bad("Bearer realm=, service=x");         /* token68, then "service=x" is no challenge */
        parse_bad("Bearer realm=\"x\" service=\"y\""); /* missing comma */
        parse_bad("Bearer realm=\"x\", realm=\"y\"");  /* duplicate parameter */
        parse_bad("Bearer realm=\"a\x01b\"");          /* control character */
        parse_bad("Bearer realm=\"a\\\x01\"");         /* escaped control character */
        parse_bad("Bearer\x01");
        parse_bad("Bearer realm=\"x\"; service=y");
        parse_bad("Bearer realm=x y");
        parse_bad("Bearer , =");
        parse_bad("B\xc3\xa4r realm=x"); /* non-token scheme */
        parse_bad("Bearer a=\"1\",b=\"2\",c=\"3\",d=\"4\",e=\"5\",f=\"6\",g=\"7\",h=\"8\",i=\"9\",j=\"10\","
                  "k=\"11\",l=\"12\",m=\"13\",n=\"14\",o=\"15\",p=\"16\",q=\"17\",r=\"18\",s=\"19\",t=\"20\","
                  "u=\"21\",v=\"22\",w=\"23\",x=\"24\",y=\"25\",z=\"26\",aa=\"27\",ab=\"28\",ac=\"29\","
                  "ad=\"30\",ae=\"31\",af=\"32\",ag=\"33\""); /* too many parameters */

        char big[20000];
        memset(big, 'a', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        memcpy(big, "Bearer realm=\"", 14);
        big[sizeof(big) - 2] = '"';
        parse_bad(big); /* longer than the cap */
}

/* ---- scopes, Basic ----------------------------------------------------------------------------------- */

static void test_scope(void **state)
{
        (void)state;
        _cleanup_free_ char *s = registry_scope_pull("library/nginx");
        assert_string_equal(s, "repository:library/nginx:pull");

        /* A registry with a port: the port is the domain's, never part of the scope. */
        struct image_ref ref = { .domain = (char *)"localhost:5000",
                                 .path = (char *)"team/app",
                                 .tag = (char *)"1" };
        struct registry_client *c = NULL;
        struct berr *err = NULL;
        assert_int_equal(registry_client_new(&ref, NULL, &c, &err), 0);
        assert_string_equal(c->scope, "repository:team/app:pull");
        assert_string_equal(c->api_host, "localhost:5000");
        assert_true(c->insecure); /* loopback */
        registry_client_free(c);

        struct image_ref v6 = { .domain = (char *)"[::1]:5000", .path = (char *)"app" };
        assert_int_equal(registry_client_new(&v6, NULL, &c, &err), 0);
        assert_true(c->insecure);
        registry_client_free(c);

        struct image_ref hub = { .domain = (char *)"docker.io", .path = (char *)"library/alpine" };
        assert_int_equal(registry_client_new(&hub, NULL, &c, &err), 0);
        assert_string_equal(c->scope, "repository:library/alpine:pull");
        assert_string_equal(c->api_host, "registry-1.docker.io");
        assert_false(c->insecure);
        registry_client_free(c);

        /* Names that would smuggle something into a URL are refused up front. */
        struct image_ref bad = { .domain = (char *)"example.com", .path = (char *)"a/../b?x" };
        assert_int_equal(registry_client_new(&bad, NULL, &c, &err), -EINVAL);
        berr_free(err);
        err = NULL;
        struct image_ref bad2 = { .domain = (char *)"example.com/x", .path = (char *)"a" };
        assert_int_equal(registry_client_new(&bad2, NULL, &c, &err), -EINVAL);
        berr_free(err);
}

static void test_basic_header(void **state)
{
        (void)state;
        char *h = registry_basic_header("Aladdin", "open sesame");
        assert_string_equal(h, "Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        registry_secret_free(h);
        h = registry_basic_header("u", NULL);
        assert_string_equal(h, "Authorization: Basic dTo=");
        registry_secret_free(h);

        struct image_ref ref = { .domain = (char *)"example.com", .path = (char *)"a" };
        struct registry_opts o = { .username = "a:b", .password = "x" };
        struct registry_client *c = NULL;
        struct berr *err = NULL;
        assert_int_equal(registry_client_new(&ref, &o, &c, &err), -EINVAL); /* RFC 7617: no ':' in user-id */
        berr_free(err);
}

/* ---- token responses ------------------------------------------------------------------------------ */

static void test_token_parse(void **state)
{
        (void)state;
        const time_t now = 1700000000;
        char *tok = NULL;
        time_t exp = 0;
        struct berr *err = NULL;

#define PARSE(s) registry_token_parse(s, strlen(s), now, &tok, &exp, &err)
        assert_int_equal(PARSE("{\"token\":\"abc\",\"expires_in\":300}"), 0);
        assert_string_equal(tok, "abc");
        assert_int_equal(exp, now + 300);
        free(tok);

        /* OAuth2 name. */
        assert_int_equal(PARSE("{\"access_token\":\"xyz\",\"expires_in\":120}"), 0);
        assert_string_equal(tok, "xyz");
        assert_int_equal(exp, now + 120);
        free(tok);

        /* Both: token wins; an empty token falls back to access_token. */
        assert_int_equal(PARSE("{\"token\":\"t1\",\"access_token\":\"t2\"}"), 0);
        assert_string_equal(tok, "t1");
        free(tok);
        assert_int_equal(PARSE("{\"token\":\"\",\"access_token\":\"t2\"}"), 0);
        assert_string_equal(tok, "t2");
        free(tok);

        /* expires_in: default 60, clamped up to 60, absurd values clamped down. */
        assert_int_equal(PARSE("{\"token\":\"a\"}"), 0);
        assert_int_equal(exp, now + 60);
        free(tok);
        assert_int_equal(PARSE("{\"token\":\"a\",\"expires_in\":5}"), 0);
        assert_int_equal(exp, now + 60);
        free(tok);
        assert_int_equal(PARSE("{\"token\":\"a\",\"expires_in\":-100}"), 0);
        assert_int_equal(exp, now + 60);
        free(tok);
        assert_int_equal(PARSE("{\"token\":\"a\",\"expires_in\":null}"), 0);
        assert_int_equal(exp, now + 60);
        free(tok);
        assert_int_equal(PARSE("{\"token\":\"a\",\"expires_in\":99999999999}"), 0);
        assert_int_equal(exp, now + 366 * 86400);
        free(tok);
        /* Reals beyond int64 (found by fuzzing: the conversion was undefined behaviour). */
        assert_int_equal(PARSE("{\"token\":\"a\",\"expires_in\":15e022}"), 0);
        assert_int_equal(exp, now + 366 * 86400);
        free(tok);
        assert_int_equal(PARSE("{\"token\":\"a\",\"expires_in\":-1e300}"), 0);
        assert_int_equal(exp, now + 60);
        free(tok);
        assert_int_equal(PARSE("{\"token\":\"a\",\"expires_in\":90.5}"), 0);
        assert_int_equal(exp, now + 90);
        free(tok);

        /* issued_at: 2023-11-14T22:13:20Z == now; 100 s before now with 300 s lifetime -> now+200. */
        assert_int_equal(PARSE("{\"token\":\"a\",\"expires_in\":300,\"issued_at\":\"2023-11-14T22:11:40Z\"}"),
                         0);
        assert_int_equal(exp, now + 200);
        free(tok);
        assert_int_equal(
            PARSE("{\"token\":\"a\",\"expires_in\":300,\"issued_at\":\"2023-11-14T23:11:40.123456+01:00\"}"),
            0);
        assert_int_equal(exp, now + 200);
        free(tok);
        /* In the future (clock skew) or already expired by our clock: lifetime counts from now. */
        assert_int_equal(PARSE("{\"token\":\"a\",\"expires_in\":300,\"issued_at\":\"2023-11-15T22:13:20Z\"}"),
                         0);
        assert_int_equal(exp, now + 300);
        free(tok);
        assert_int_equal(PARSE("{\"token\":\"a\",\"expires_in\":300,\"issued_at\":\"2020-01-01T00:00:00Z\"}"),
                         0);
        assert_int_equal(exp, now + 300);
        free(tok);
        /* Unparseable issued_at is ignored. */
        assert_int_equal(PARSE("{\"token\":\"a\",\"expires_in\":300,\"issued_at\":\"yesterday\"}"), 0);
        assert_int_equal(exp, now + 300);
        free(tok);
        tok = NULL;

        /* Failures; messages never contain the token. */
        const char *bad[] = {
                "",
                "[]",
                "{\"token\":42}",
                "{\"expires_in\":60}",
                "{\"token\":\"\",\"access_token\":\"\"}",
                "{\"token\":\"has space\"}",
                "{\"token\":\"crlf\\r\\nX-Injected: 1\"}",
                "{\"token\":\"a\",\"expires_in\":\"60\"}",
                "{\"token\":\"a\",\"token\":\"b\"}",
                "{\"token\":\"sekrit\" garbage",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                assert_int_equal(PARSE(bad[i]), -EPROTO);
                assert_null(tok);
                assert_non_null(err);
                assert_null(strstr(berr_msg(err), "sekrit"));
                assert_null(strstr(berr_msg(err), "Injected"));
                berr_free(err);
                err = NULL;
        }
#undef PARSE
}

static void test_rfc3339(void **state)
{
        (void)state;
        time_t t;
        assert_int_equal(registry_rfc3339_parse("1970-01-01T00:00:00Z", &t), 0);
        assert_int_equal(t, 0);
        assert_int_equal(registry_rfc3339_parse("2023-11-14T22:13:20Z", &t), 0);
        assert_int_equal(t, 1700000000);
        assert_int_equal(registry_rfc3339_parse("2023-11-14t22:13:20.5z", &t), 0);
        assert_int_equal(t, 1700000000);
        assert_int_equal(registry_rfc3339_parse("2023-11-14T17:13:20-05:00", &t), 0);
        assert_int_equal(t, 1700000000);
        assert_int_equal(registry_rfc3339_parse("2023-11-14T22:13:20", &t), -EINVAL); /* no zone */
        assert_int_equal(registry_rfc3339_parse("2023-13-14T22:13:20Z", &t), -EINVAL);
        assert_int_equal(registry_rfc3339_parse("2023-11-14T22:13:20Zjunk", &t), -EINVAL);
        assert_int_equal(registry_rfc3339_parse("2023-11-14T22:13:20.Z", &t), -EINVAL);
        assert_int_equal(registry_rfc3339_parse("", &t), -EINVAL);
}

/* ---- Retry-After, Content-Range ------------------------------------------------------------------ */

static void test_retry_after(void **state)
{
        (void)state;
        const time_t now = 1700000000; /* Tue, 14 Nov 2023 22:13:20 GMT */
        unsigned s = 999;
        assert_int_equal(registry_retry_after_parse("0", now, &s), 0);
        assert_int_equal(s, 0);
        assert_int_equal(registry_retry_after_parse("7", now, &s), 0);
        assert_int_equal(s, 7);
        assert_int_equal(registry_retry_after_parse(" 12 ", now, &s), 0);
        assert_int_equal(s, 12);
        /* Capped. */
        assert_int_equal(registry_retry_after_parse("3600", now, &s), 0);
        assert_int_equal(s, REGISTRY_RETRY_AFTER_MAX);
        assert_int_equal(registry_retry_after_parse("99999999999999999999999", now, &s), 0);
        assert_int_equal(s, REGISTRY_RETRY_AFTER_MAX);
        /* HTTP-date: 30 s ahead, in the past, far ahead. */
        assert_int_equal(registry_retry_after_parse("Tue, 14 Nov 2023 22:13:50 GMT", now, &s), 0);
        assert_int_equal(s, 30);
        assert_int_equal(registry_retry_after_parse("Tue, 14 Nov 2023 22:00:00 GMT", now, &s), 0);
        assert_int_equal(s, 0);
        assert_int_equal(registry_retry_after_parse("Wed, 15 Nov 2023 22:13:20 GMT", now, &s), 0);
        assert_int_equal(s, REGISTRY_RETRY_AFTER_MAX);
        /* Garbage. */
        assert_int_equal(registry_retry_after_parse("", now, &s), -EINVAL);
        assert_int_equal(registry_retry_after_parse("-5", now, &s), -EINVAL);
        assert_int_equal(registry_retry_after_parse("5s", now, &s), -EINVAL);
        assert_int_equal(registry_retry_after_parse("1.5", now, &s), -EINVAL);
        assert_int_equal(registry_retry_after_parse("soon", now, &s), -EINVAL);
        assert_int_equal(registry_retry_after_parse("not a date but long enough", now, &s), -EINVAL);
}

static void test_content_range(void **state)
{
        (void)state;
        uint64_t f, l;
        int64_t t;
        assert_int_equal(registry_content_range_parse("bytes 100-199/200", &f, &l, &t), 0);
        assert_int_equal(f, 100);
        assert_int_equal(l, 199);
        assert_int_equal(t, 200);
        assert_int_equal(registry_content_range_parse("bytes 0-0/*", &f, &l, &t), 0);
        assert_int_equal(t, -1);
        assert_int_equal(registry_content_range_parse("bytes 5-4/10", &f, &l, &t), -EINVAL);
        assert_int_equal(registry_content_range_parse("bytes 0-10/10", &f, &l, &t), -EINVAL);
        assert_int_equal(registry_content_range_parse("bytes */10", &f, &l, &t), -EINVAL);
        assert_int_equal(registry_content_range_parse("items 0-1/2", &f, &l, &t), -EINVAL);
        assert_int_equal(registry_content_range_parse("bytes 0-1/2x", &f, &l, &t), -EINVAL);
        assert_int_equal(registry_content_range_parse("bytes -1-1/2", &f, &l, &t), -EINVAL);
}

/* ---- redirects --------------------------------------------------------------------------------------- */

static void test_same_origin(void **state)
{
        (void)state;
        assert_true(registry_url_same_origin("https://reg.io/v2/a", "https://reg.io/v2/b?x=1"));
        assert_true(registry_url_same_origin("https://REG.io:443/v2/", "https://reg.io/other"));
        assert_true(registry_url_same_origin("http://127.0.0.1:5000/a", "http://127.0.0.1:5000/b"));
        assert_true(registry_url_same_origin("http://[::1]:5000/a", "http://[::1]:5000/"));
        /* Host, port or scheme change: Authorization must not follow. */
        assert_false(registry_url_same_origin("https://reg.io/v2/", "https://s3.amazonaws.com/bucket"));
        assert_false(registry_url_same_origin("https://reg.io/v2/", "https://reg.io:8443/v2/"));
        assert_false(registry_url_same_origin("https://reg.io/v2/", "http://reg.io/v2/"));
        assert_false(registry_url_same_origin("http://127.0.0.1:5000/", "http://127.0.0.2:5000/"));
        assert_false(registry_url_same_origin("https://reg.io/", "https://reg.io.evil.com/"));
        assert_false(registry_url_same_origin("https://reg.io/", "not a url"));
}

static void test_resolve(void **state)
{
        (void)state;
        char *u = NULL;
        assert_int_equal(registry_url_resolve("https://reg.io/v2/a/blobs/sha256:1", "/storage/x?sig=1", &u),
                         0);
        assert_string_equal(u, "https://reg.io/storage/x?sig=1");
        free(u);
        assert_int_equal(registry_url_resolve("https://reg.io/v2/a/blobs/x", "y", &u), 0);
        assert_string_equal(u, "https://reg.io/v2/a/blobs/y");
        free(u);
        assert_int_equal(registry_url_resolve("https://reg.io/v2/", "//cdn.io/p", &u), 0);
        assert_string_equal(u, "https://cdn.io/p");
        free(u);
        assert_int_equal(registry_url_resolve("https://reg.io/v2/", "http://other:81/p#frag", &u), 0);
        assert_string_equal(u, "http://other:81/p");
        free(u);
        /* Credentials in a Location are dropped (libcurl would use them). */
        assert_int_equal(registry_url_resolve("https://reg.io/v2/", "https://user:pw@cdn.io/p", &u), 0);
        assert_string_equal(u, "https://cdn.io/p");
        free(u);
        u = NULL;
        assert_int_equal(registry_url_resolve("https://reg.io/v2/", "file:///etc/passwd", &u), -EINVAL);
        assert_int_equal(registry_url_resolve("https://reg.io/v2/", "ftp://x/y", &u), -EINVAL);
        assert_null(u);
}

static void test_insecure_config(void **state)
{
        (void)state;
        struct config_registry regs[] = {
                { .host = (char *)"reg.internal:5000", .insecure = true },
                { .host = (char *)"secure.internal", .insecure = false },
        };
        struct berth_config cfg = { .registries = regs, .n_registries = ARRAY_SIZE(regs) };
        struct registry_opts o = { .config = &cfg };
        struct image_ref ref = { .domain = (char *)"reg.internal:5000", .path = (char *)"a" };
        struct registry_client *c = NULL;
        assert_int_equal(registry_client_new(&ref, &o, &c, NULL), 0);
        assert_true(c->insecure);
        assert_true(registry_url_insecure(c, "http://reg.internal:5000/v2/"));
        assert_false(registry_url_insecure(c, "http://reg.internal/v2/")); /* other port */
        assert_false(registry_url_insecure(c, "http://secure.internal/v2/"));
        assert_true(registry_url_insecure(c, "http://127.0.0.2:9/x")); /* loopback */
        assert_true(registry_url_insecure(c, "http://[::1]:9/x"));
        assert_true(registry_url_insecure(c, "https://localhost/x"));
        assert_false(registry_url_insecure(c, "https://192.0.2.1/x"));
        registry_client_free(c);

        struct image_ref ref2 = { .domain = (char *)"secure.internal", .path = (char *)"a" };
        assert_int_equal(registry_client_new(&ref2, &o, &c, NULL), 0);
        assert_false(c->insecure);
        registry_client_free(c);

        /* A configured CA file that cannot be read is an error at client creation. */
        char *files[] = { (char *)"/nonexistent/berth-ca.pem" };
        struct berth_config cfg2 = { .ca_files = files, .n_ca_files = 1 };
        struct registry_opts o2 = { .config = &cfg2 };
        struct berr *err = NULL;
        assert_int_equal(registry_client_new(&ref2, &o2, &c, &err), -ENOENT);
        assert_non_null(strstr(berr_msg(err), "/nonexistent/berth-ca.pem"));
        berr_free(err);
}

/* ---- error bodies ---------------------------------------------------------------------------------- */

static void test_error_message(void **state)
{
        (void)state;
        const char *b = "{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\","
                        "\"detail\":{\"Tag\":\"x\"}}]}";
        char *m = registry_error_message(b, strlen(b));
        assert_string_equal(m, "manifest unknown");
        free(m);
        b = "{\"errors\":[{\"code\":\"DENIED\"},{\"code\":\"X\",\"message\":\"line1\\nline2\"}]}";
        m = registry_error_message(b, strlen(b));
        assert_string_equal(m, "DENIED; line1 line2");
        free(m);
        b = "{\"details\":\"incorrect username or password\"}";
        m = registry_error_message(b, strlen(b));
        assert_string_equal(m, "incorrect username or password");
        free(m);
        assert_null(registry_error_message("<html>", 6));
        assert_null(registry_error_message("{}", 2));
        assert_null(registry_error_message(NULL, 0));
        /* Long messages are cut. */
        char big[5000];
        int n = snprintf(big, sizeof(big), "{\"errors\":[{\"message\":\"");
        memset(big + n, 'x', 3000);
        strcpy(big + n + 3000, "\"}]}");
        m = registry_error_message(big, strlen(big));
        assert_non_null(m);
        assert_true(strlen(m) <= 400);
        free(m);
}

/* ---- challenges → client state ------------------------------------------------------------------ */

static void test_set_challenges(void **state)
{
        (void)state;
        struct image_ref ref = { .domain = (char *)"reg.example.com", .path = (char *)"a/b" };
        struct registry_client *c = NULL;
        struct berr *err = NULL;
        assert_int_equal(registry_client_new(&ref, NULL, &c, NULL), 0);

        /* Bearer preferred over Basic, across several header lines. */
        char *h1[] = { (char *)"Basic realm=\"x\"",
                       (char *)"Bearer realm=\"https://auth.example.com/t\",service=\"reg\"" };
        assert_int_equal(registry_auth_set_challenges(c, h1, 2, &err), 0);
        assert_int_equal(c->auth_kind, REGISTRY_AUTH_BEARER);
        assert_string_equal(c->realm, "https://auth.example.com/t");
        assert_string_equal(c->service, "reg");

        char *h2[] = { (char *)"Basic realm=\"Registry\"" };
        assert_int_equal(registry_auth_set_challenges(c, h2, 1, &err), 0);
        assert_int_equal(c->auth_kind, REGISTRY_AUTH_BASIC);

        /* Basic without credentials: the error tells how to pass them. */
        char *hdr = NULL;
        bool fresh;
        assert_int_equal(registry_auth_header(c, &hdr, &fresh, &err), -EACCES);
        assert_null(hdr);
        assert_string_equal(berr_msg(err),
                            "registry reg.example.com requires authentication: pass --username "
                            "(password in $BERTH_REGISTRY_PASSWORD)");
        berr_free(err);
        err = NULL;

        char *h3[] = { (char *)"Bearer service=\"reg\"" };
        assert_int_equal(registry_auth_set_challenges(c, h3, 1, &err), -EPROTO); /* no realm */
        berr_free(err);
        err = NULL;
        char *h4[] = { (char *)"Bearer realm=\"file:///etc/passwd\"" };
        assert_int_equal(registry_auth_set_challenges(c, h4, 1, &err), -EPROTO);
        berr_free(err);
        err = NULL;
        char *h5[] = { (char *)"Negotiate" };
        assert_int_equal(registry_auth_set_challenges(c, h5, 1, &err), -EPROTONOSUPPORT);
        assert_non_null(strstr(berr_msg(err), "negotiate"));
        berr_free(err);
        err = NULL;
        assert_int_equal(registry_auth_set_challenges(c, NULL, 0, &err), -EPROTO);
        berr_free(err);
        err = NULL;
        char *h6[] = { (char *)"Bearer realm=\"x" };
        assert_int_equal(registry_auth_set_challenges(c, h6, 1, &err), -EINVAL);
        assert_non_null(strstr(berr_msg(err), "reg.example.com"));
        berr_free(err);
        registry_client_free(c);

        /* With credentials, Basic yields the header on every request. */
        struct registry_opts o = { .username = "user", .password = "pw" };
        assert_int_equal(registry_client_new(&ref, &o, &c, NULL), 0);
        assert_int_equal(registry_auth_set_challenges(c, h2, 1, NULL), 0);
        assert_int_equal(registry_auth_header(c, &hdr, &fresh, NULL), 0);
        assert_string_equal(hdr, "Authorization: Basic dXNlcjpwdw==");
        registry_secret_free(hdr);
        registry_client_free(c);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_challenge_docker_hub),
                cmocka_unit_test(test_challenge_case_and_spacing),
                cmocka_unit_test(test_challenge_multiple),
                cmocka_unit_test(test_challenge_escapes),
                cmocka_unit_test(test_challenge_token68),
                cmocka_unit_test(test_challenge_unquoted_url),
                cmocka_unit_test(test_challenge_empty_and_scheme_only),
                cmocka_unit_test(test_challenge_garbage),
                cmocka_unit_test(test_scope),
                cmocka_unit_test(test_basic_header),
                cmocka_unit_test(test_token_parse),
                cmocka_unit_test(test_rfc3339),
                cmocka_unit_test(test_retry_after),
                cmocka_unit_test(test_content_range),
                cmocka_unit_test(test_same_origin),
                cmocka_unit_test(test_resolve),
                cmocka_unit_test(test_insecure_config),
                cmocka_unit_test(test_error_message),
                cmocka_unit_test(test_set_challenges),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
