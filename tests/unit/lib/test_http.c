/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "lib/macro.h"

#include <cmocka.h>

#include "lib/http.h"

static struct http_head H;

static ssize_t req(const char *s)
{
        return http_parse_request(s, strlen(s), NULL, &H);
}

static ssize_t resp(const char *s)
{
        return http_parse_response(s, strlen(s), NULL, &H);
}

static bool span_eq(const char *p, size_t n, const char *want)
{
        return p && n == strlen(want) && memcmp(p, want, n) == 0;
}

static void test_request_basic(void **state)
{
        (void)state;
        const char *s = "GET /v3/apps?page=2 HTTP/1.1\r\nHost: api.example\r\nX-A:  spaced value \t\r\n"
                        "Accept:\r\n\r\nBODY";
        ssize_t r = req(s);
        assert_int_equal(r, strlen(s) - 4);
        assert_int_equal(H.head_len, r);
        assert_true(span_eq(H.method, H.method_len, "GET"));
        assert_true(span_eq(H.target, H.target_len, "/v3/apps?page=2"));
        assert_int_equal(H.minor_version, 1);
        assert_int_equal(H.n_headers, 3);
        assert_true(span_eq(H.host, H.host_len, "api.example"));
        const struct http_header *x = http_head_get(&H, "x-a");
        assert_non_null(x);
        assert_true(span_eq(x->value, x->value_len, "spaced value"));
        const struct http_header *a = http_head_get(&H, "ACCEPT");
        assert_non_null(a);
        assert_int_equal(a->value_len, 0);
        assert_null(http_head_get(&H, "x-b"));
        assert_int_equal(H.content_length, -1);
        assert_false(H.chunked);
        assert_true(H.keep_alive);
        assert_false(H.upgrade);
        assert_false(H.expect_continue);
}

static void test_request_incomplete_every_split(void **state)
{
        (void)state;
        const char *s =
            "\r\n\r\nPOST /x%20y HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nConnection: close\r\n\r\n";
        size_t n = strlen(s);
        for (size_t k = 0; k < n; k++) {
                ssize_t r = http_parse_request(s, k, NULL, &H);
                if (r != HTTP_PARSE_INCOMPLETE)
                        fail_msg("prefix %zu: %zd", k, r);
        }
        assert_int_equal(http_parse_request(s, n, NULL, &H), n);
        assert_true(span_eq(H.method, H.method_len, "POST"));
        assert_int_equal(H.content_length, 5);
        assert_false(H.keep_alive);
}

static void test_keep_alive_rules(void **state)
{
        (void)state;
        assert_true(req("GET / HTTP/1.0\r\n\r\n") > 0);
        assert_int_equal(H.minor_version, 0);
        assert_false(H.keep_alive);
        assert_true(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n") > 0);
        assert_true(H.keep_alive);
        assert_true(req("GET / HTTP/1.1\r\nConnection: foo, CLOSE\r\n\r\n") > 0);
        assert_false(H.keep_alive);
        assert_true(req("GET / HTTP/1.1\r\nConnection: x\r\nConnection: close\r\n\r\n") > 0);
        assert_false(H.keep_alive);
        assert_true(req("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n") > 0);
        assert_true(H.upgrade);
        assert_true(req("GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n") > 0);
        assert_false(H.upgrade);
        assert_true(req("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n") > 0);
        assert_true(H.expect_continue);
        assert_true(req("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n") > 0);
        assert_false(H.expect_continue);
        assert_true(http_head_has_token(&H, "expect", "100-CONTINUE"));
        assert_false(http_head_has_token(&H, "expect", "100"));
}

static void test_request_malformed(void **state)
{
        (void)state;
        static const char *bad[] = {
                " GET / HTTP/1.1\r\n\r\n",
                "GET  / HTTP/1.1\r\n\r\n",
                "GET / HTTP/1.1 \r\n\r\n",
                "GET /a b HTTP/1.1\r\n\r\n",
                "GET / HTTP/1.1\n\r\n",                 /* bare LF */
                "GET / HTTP/1.1\r\nA: b\n\r\n",         /* bare LF in a field */
                "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n",    /* bare CR */
                "GET / HTTP/1.1\r\nA : b\r\n\r\n",      /* whitespace before the colon */
                "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", /* obs-fold */
                "GET / HTTP/1.1\r\n\tA: b\r\n\r\n",
                "GET / HTTP/1.1\r\n: b\r\n\r\n",
                "GET / HTTP/1.1\r\nA\r\n\r\n",
                "GET / HTTP/1.1\r\nA: b\x01\r\n\r\n",
                "GET / HTTP/1.1\r\nA: b\x7f\r\n\r\n",
                "GET / HTTP/1.1\r\nA(: b\r\n\r\n",
                "GET / HTTX/1.1\r\n\r\n",
                "GET / HTTP/1.1x\r\n\r\n",
                "GET / HTTP/11\r\n\r\n",
                "GET / http/1.1\r\n\r\n",
                "GET /\x80 HTTP/1.1\r\n\r\n",
                "G{T / HTTP/1.1\r\n\r\n",
                "\n\nGET / HTTP/1.1\r\n\r\n",
                "\r\r\nGET / HTTP/1.1\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
        };
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
                ssize_t r = req(bad[k]);
                if (r != HTTP_PARSE_BAD)
                        fail_msg("case %zu (%s): %zd", k, bad[k], r);
        }
        /* Garbage is refused before the head is complete. */
        assert_int_equal(req("GET /a b"), HTTP_PARSE_BAD);
        assert_int_equal(req("\x16\x03\x01"), HTTP_PARSE_BAD);
}

static void test_version(void **state)
{
        (void)state;
        assert_int_equal(req("GET / HTTP/2.0\r\n\r\n"), HTTP_PARSE_VERSION);
        assert_int_equal(req("GET / HTTP/1.2\r\n\r\n"), HTTP_PARSE_VERSION);
        assert_int_equal(req("GET / HTTP/0.9\r\n\r\n"), HTTP_PARSE_VERSION);
        assert_int_equal(resp("HTTP/3.0 200 OK\r\n\r\n"), HTTP_PARSE_VERSION);
}

static void test_smuggling(void **state)
{
        (void)state;
        static const char *bad[] = {
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
                "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
                "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
                "POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n",
                "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
                "POST / HTTP/1.1\r\nContent-Length: 5,\r\n\r\n",
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
                "POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
                "POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
                "POST / HTTP/1.1\r\nTransfer-Encoding:\013chunked\r\n\r\n", /* a vertical tab */
                "POST / HTTP/1.1\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n",
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        };
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
                ssize_t r = req(bad[k]);
                if (r != HTTP_PARSE_BAD)
                        fail_msg("case %zu (%s): %zd", k, bad[k], r);
        }
        assert_true(req("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked \r\n\r\n") > 0);
        assert_true(H.chunked);
        assert_int_equal(H.content_length, -1);
        assert_true(req("POST / HTTP/1.1\r\nContent-Length: 7\r\ncontent-length: 7, 7\r\n\r\n") > 0);
        assert_int_equal(H.content_length, 7);
        assert_true(req("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n") > 0);
        assert_int_equal(H.content_length, 0);
        assert_true(req("POST / HTTP/1.1\r\nContent-Length: 9223372036854775807\r\n\r\n") > 0);
        assert_int_equal(H.content_length, INT64_MAX);
}

static void test_limits(void **state)
{
        (void)state;
        struct http_limits lim = { .max_head_bytes = 64, .max_target_bytes = 16, .max_headers = 2 };
        char buf[256];

        /* 414 as soon as the target is too long, even before the line ends. */
        snprintf(buf, sizeof(buf), "GET /%s", "0123456789abcdefgh");
        assert_int_equal(http_parse_request(buf, strlen(buf), &lim, &H), HTTP_PARSE_URI_TOO_LONG);
        snprintf(buf, sizeof(buf), "GET /0123456789abcde HTTP/1.1\r\n\r\n"); /* exactly 16 */
        assert_true(http_parse_request(buf, strlen(buf), &lim, &H) > 0);

        /* 431: too many headers. */
        snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
        assert_int_equal(http_parse_request(buf, strlen(buf), &lim, &H), HTTP_PARSE_TOO_LARGE);
        snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n");
        assert_true(http_parse_request(buf, strlen(buf), &lim, &H) > 0);

        /* 431: a head not complete within max_head_bytes, whether or not more bytes are there. */
        memset(buf, 0, sizeof(buf));
        snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nA: %060d\r\n\r\n", 0);
        assert_int_equal(http_parse_request(buf, 63, &lim, &H), HTTP_PARSE_INCOMPLETE);
        assert_int_equal(http_parse_request(buf, 64, &lim, &H), HTTP_PARSE_TOO_LARGE);
        assert_int_equal(http_parse_request(buf, strlen(buf), &lim, &H), HTTP_PARSE_TOO_LARGE);

        /* A head of exactly the limit is fine; one byte more is not. */
        lim.max_head_bytes = 18;
        assert_int_equal(http_parse_request("GET / HTTP/1.1\r\n\r\nXX", 20, &lim, &H), 18);
        lim.max_head_bytes = 17;
        assert_int_equal(http_parse_request("GET / HTTP/1.1\r\n\r\nXX", 20, &lim, &H), HTTP_PARSE_TOO_LARGE);

        /* Defaults: 100 headers are fine, 101 are not; an 8 KiB target is fine, 8 KiB + 1 is not. */
        char *big = malloc(70000);
        size_t n = (size_t)snprintf(big, 70000, "GET / HTTP/1.1\r\n");
        for (int k = 0; k < 100; k++)
                n += (size_t)snprintf(big + n, 70000 - n, "H%d: v\r\n", k);
        memcpy(big + n, "\r\n", 3);
        assert_true(http_parse_request(big, n + 2, NULL, &H) > 0);
        assert_int_equal(H.n_headers, 100);
        memcpy(big + n, "X: y\r\n\r\n", 9);
        assert_int_equal(http_parse_request(big, n + 8, NULL, &H), HTTP_PARSE_TOO_LARGE);

        memcpy(big, "GET /", 5);
        memset(big + 5, 'a', 8191);
        memcpy(big + 5 + 8191, " HTTP/1.1\r\n\r\n", 14);
        assert_true(http_parse_request(big, strlen(big), NULL, &H) > 0);
        assert_int_equal(H.target_len, 8192);
        memset(big + 5, 'a', 8192);
        memcpy(big + 5 + 8192, " HTTP/1.1\r\n\r\n", 14);
        assert_int_equal(http_parse_request(big, strlen(big), NULL, &H), HTTP_PARSE_URI_TOO_LONG);

        /* Default 64 KiB head. */
        n = (size_t)snprintf(big, 70000, "GET / HTTP/1.1\r\nBig: ");
        memset(big + n, 'x', 66000);
        assert_int_equal(http_parse_request(big, n + 66000, NULL, &H), HTTP_PARSE_TOO_LARGE);
        assert_int_equal(http_parse_request(big, 65535, NULL, &H), HTTP_PARSE_INCOMPLETE);
        free(big);
}

static void test_pipelined(void **state)
{
        (void)state;
        const char *s = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                        "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                        "DELETE /c HTTP/1.1\r\nHost: h\r\n\r\n";
        size_t off = 0, n = strlen(s);
        const char *want[] = { "/a", "/b", "/c" };
        for (int k = 0; k < 3; k++) {
                ssize_t r = http_parse_request(s + off, n - off, NULL, &H);
                assert_true(r > 0);
                assert_true(span_eq(H.target, H.target_len, want[k]));
                off += (size_t)r;
                if (H.content_length > 0)
                        off += (size_t)H.content_length;
        }
        assert_int_equal(off, n);
}

static void test_response(void **state)
{
        (void)state;
        assert_int_equal(resp("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"), 39);
        assert_int_equal(H.status, 200);
        assert_true(span_eq(H.reason, H.reason_len, "OK"));
        assert_int_equal(H.content_length, 12);
        assert_true(resp("HTTP/1.1 404 Not Found Here\r\n\r\n") > 0);
        assert_true(span_eq(H.reason, H.reason_len, "Not Found Here"));
        assert_true(resp("HTTP/1.1 204\r\n\r\n") > 0);
        assert_int_equal(H.status, 204);
        assert_int_equal(H.reason_len, 0);
        assert_true(resp("HTTP/1.1 200 \r\n\r\n") > 0);
        assert_true(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") > 0);
        assert_true(H.chunked);
        assert_true(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") > 0);
        assert_true(H.chunked);
        assert_true(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n") > 0);
        assert_false(H.chunked);
        assert_int_equal(H.content_length, -1);
        assert_true(resp("HTTP/1.0 200 OK\r\n\r\n") > 0);
        assert_false(H.keep_alive);
        assert_int_equal(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
                         HTTP_PARSE_BAD);
        assert_int_equal(resp("HTTP/1.1 099 X\r\n\r\n"), HTTP_PARSE_BAD);
        assert_int_equal(resp("HTTP/1.1 20 X\r\n\r\n"), HTTP_PARSE_BAD);
        assert_int_equal(resp("HTTP/1.1 2000 X\r\n\r\n"), HTTP_PARSE_BAD);
        assert_int_equal(resp("HTTP/1.1 200 O\nK\r\n\r\n"), HTTP_PARSE_BAD);
        assert_int_equal(resp("HTTP/1.1 200 OK\r\nA: b\r\n"), HTTP_PARSE_INCOMPLETE);
        /* Leading empty lines are for requests only. */
        assert_int_equal(resp("\r\nHTTP/1.1 200 OK\r\n\r\n"), HTTP_PARSE_BAD);

        const char *s = "HTTP/1.1 301 Moved Permanently\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n";
        for (size_t k = 0; k < strlen(s); k++)
                assert_int_equal(http_parse_response(s, k, NULL, &H), HTTP_PARSE_INCOMPLETE);
        assert_int_equal(http_parse_response(s, strlen(s), NULL, &H), strlen(s));
}

/* Decode in slices of `step` bytes (0: all at once); returns the result and the data in out. */
static int decode(const char *in, size_t len, size_t step, char *out, size_t *out_len, size_t *ret_used)
{
        struct http_chunked c = { 0 };
        size_t off = 0;
        *out_len = 0;
        int r = 0;
        while (off < len) {
                size_t avail = step ? MIN(step, len - off) : len - off;
                size_t used, doff, dlen;
                r = http_chunked_decode(&c, in + off, avail, &used, &doff, &dlen);
                if (r < 0)
                        return r;
                assert_true(used <= avail);
                assert_true(doff + dlen <= used);
                memcpy(out + *out_len, in + off + doff, dlen);
                *out_len += dlen;
                off += used;
                if (r == 1)
                        break;
                if (used == 0 && step)
                        fail_msg("no progress at %zu", off);
        }
        *ret_used = off;
        return r;
}

static void test_chunked(void **state)
{
        (void)state;
        const char *s = "5\r\nhello\r\n1;name=value;x=\"q s\"\r\n \r\n00A \t;ext\r\n0123456789\r\n"
                        "0\r\nTrailer: x\r\nAnother: y\r\n\r\nNEXT";
        size_t n = strlen(s) - 4;
        char out[64];
        for (size_t step = 0; step <= n; step++) {
                size_t out_len, used;
                int r = decode(s, strlen(s), step, out, &out_len, &used);
                if (r != 1)
                        fail_msg("step %zu: %d", step, r);
                assert_int_equal(used, n);
                assert_int_equal(out_len, 16);
                assert_memory_equal(out, "hello 0123456789", 16);
        }
        /* Incomplete at every prefix. */
        for (size_t k = 0; k < n; k++) {
                size_t out_len, used;
                assert_int_equal(decode(s, k, 0, out, &out_len, &used), 0);
        }
        size_t out_len, used;
        assert_int_equal(decode("0\r\n\r\n", 5, 0, out, &out_len, &used), 1);
        assert_int_equal(out_len, 0);
        assert_int_equal(decode("fF\r\n", 4, 0, out, &out_len, &used), 0);

        static const char *bad[] = {
                "x\r\n",
                "\r\n",
                "5\nhello\r\n0\r\n\r\n",
                "5\r\nhelloX\r\n",
                "5\r\nhello\rX",
                "5 x\r\n",
                "5\r\nhello\r\n0\r\nA\nB\r\n\r\n",
                "-1\r\n",
                "0x5\r\n",
                "5;a\x01\r\n",
                "0\r\n\r\r",
                "10000000000000000\r\n",
                "8000000000000000\r\n",
        };
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
                int r = decode(bad[k], strlen(bad[k]), 0, out, &out_len, &used);
                if (r != HTTP_PARSE_BAD)
                        fail_msg("case %zu: %d", k, r);
        }
        /* The size line and the trailers are bounded. */
        char *big = malloc(200000);
        memset(big, '0', 5000);
        memcpy(big + 5000, "\r\n", 2);
        assert_int_equal(decode(big, 5002, 0, out, &out_len, &used), HTTP_PARSE_BAD);
        memcpy(big, "1;", 2);
        memset(big + 2, 'e', 5000);
        assert_int_equal(decode(big, 5002, 0, out, &out_len, &used), HTTP_PARSE_BAD);
        size_t k = (size_t)snprintf(big, 200000, "0\r\n");
        while (k < 100000)
                k += (size_t)snprintf(big + k, 200000 - k, "T: %01000d\r\n", 0);
        assert_int_equal(decode(big, k, 0, out, &out_len, &used), HTTP_PARSE_BAD);
        free(big);

        /* After the end, nothing more is consumed. */
        struct http_chunked c = { 0 };
        size_t doff, dlen;
        assert_int_equal(http_chunked_decode(&c, "0\r\n\r\nGET", 8, &used, &doff, &dlen), 1);
        assert_int_equal(used, 5);
        assert_int_equal(http_chunked_decode(&c, "GET", 3, &used, &doff, &dlen), 1);
        assert_int_equal(used, 0);
}

static void test_reason(void **state)
{
        (void)state;
        assert_string_equal(http_reason(200), "OK");
        assert_string_equal(http_reason(404), "Not Found");
        assert_string_equal(http_reason(413), "Content Too Large");
        assert_string_equal(http_reason(431), "Request Header Fields Too Large");
        assert_string_equal(http_reason(599), "Unknown");
}

static void test_percent(void **state)
{
        (void)state;
        char out[64];
        assert_int_equal(http_percent_decode("/a%20b%2Fc+d", 12, out), 8);
        assert_string_equal(out, "/a b/c+d");
        assert_int_equal(http_percent_decode("%zz", 3, out), -1);
        assert_int_equal(http_percent_decode("%2", 2, out), -1);
        assert_int_equal(http_percent_decode("a%", 2, out), -1);
        assert_int_equal(http_percent_decode("%00", 3, out), -1);
        assert_int_equal(http_percent_decode("", 0, out), 0);
        assert_string_equal(out, "");
        /* Only len bytes are read. */
        assert_int_equal(http_percent_decode("ab%41", 2, out), 2);
        assert_string_equal(out, "ab");
}

static void test_query(void **state)
{
        (void)state;
        char *v;
        v = http_query_get("page=2&per_page=50&names=a%2Cb+c&flag&empty=", "names");
        assert_string_equal(v, "a,b c");
        free(v);
        v = http_query_get("page=2&per_page=50", "page");
        assert_string_equal(v, "2");
        free(v);
        v = http_query_get("page=2&per_page=50&flag&empty=", "flag");
        assert_string_equal(v, "");
        free(v);
        v = http_query_get("empty=", "empty");
        assert_string_equal(v, "");
        free(v);
        v = http_query_get("a%5Fb=1", "a_b");
        assert_string_equal(v, "1");
        free(v);
        v = http_query_get("x=bad%zz&x=good", "x");
        assert_string_equal(v, "good");
        free(v);
        assert_null(http_query_get("page=2", "pag"));
        assert_null(http_query_get("", "page"));
        assert_null(http_query_get("&&", "page"));
        assert_null(http_query_get("x=%00", "x"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_request_basic),
                cmocka_unit_test(test_request_incomplete_every_split),
                cmocka_unit_test(test_keep_alive_rules),
                cmocka_unit_test(test_request_malformed),
                cmocka_unit_test(test_version),
                cmocka_unit_test(test_smuggling),
                cmocka_unit_test(test_limits),
                cmocka_unit_test(test_pipelined),
                cmocka_unit_test(test_response),
                cmocka_unit_test(test_chunked),
                cmocka_unit_test(test_reason),
                cmocka_unit_test(test_percent),
                cmocka_unit_test(test_query),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
