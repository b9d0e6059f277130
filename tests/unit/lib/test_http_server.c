/* SPDX-License-Identifier: Apache-2.0 */
/* lib/http_server.c driven by lib/http_client.c and raw sockets over loopback. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/http_client.h"
#include "lib/http_server.h"
#include "lib/json.h"
#include "lib/macro.h"

static void handler(void *userdata, const struct http_request *req, struct http_response *resp)
{
        (void)userdata;
        if (strcmp(req->path, "/echo") == 0) {
                const char *x = http_request_header(req, "X-Test");
                http_response_header(resp, "X-Echo", x ? x : "none");
                _cleanup_free_ char *b = xasprintf("%s %s %s %zu:%s", req->method, req->path, req->query,
                                                   req->body_len, req->body);
                http_response_body(resp, 200, "text/plain", b, strlen(b));
        } else if (strcmp(req->path, "/json") == 0) {
                http_response_json(resp, 201, json_pack("{s:s}", "a", "b c"));
        } else if (strcmp(req->path, "/stream") == 0) {
                http_response_stream_begin(resp, 200, "application/x-ndjson");
                for (int i = 0; i < 3; i++) {
                        char line[16];
                        int n = snprintf(line, sizeof(line), "{\"i\":%d}\n", i);
                        http_response_stream_write(resp, line, (size_t)n);
                }
        } else if (strcmp(req->path, "/a b") == 0) {
                http_response_body(resp, 200, "text/plain", "decoded", 7);
        } else if (strcmp(req->path, "/nothing") == 0) {
                /* no response: the server answers 500 */
        } else
                http_response_body(resp, 404, "text/plain", "no", 2);
}

struct fixture {
        struct http_server *s;
        pthread_t t;
        int port;
};

static void *run(void *arg)
{
        struct fixture *f = arg;
        http_server_run(f->s, NULL);
        return NULL;
}

static int setup(void **state)
{
        struct fixture *f = xcalloc(1, sizeof(*f));
        struct http_server_opts o = {
                .listen = "127.0.0.1:0", .handler = handler, .max_body_bytes = 1000, .head_timeout_ms = 300
        };
        assert_int_equal(http_server_new(&o, &f->s, NULL), 0);
        f->port = http_server_port(f->s);
        assert_true(f->port > 0);
        pthread_create(&f->t, NULL, run, f);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        http_server_stop(f->s);
        pthread_join(f->t, NULL);
        http_server_free(f->s);
        free(f);
        return 0;
}

static int raw_connect(int port)
{
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        return fd;
}

/* Send raw bytes, read until the server closes (or `until` appears); returns the reply (caller frees). */
static char *raw_exchange(int port, const char *req, size_t len, const char *until)
{
        int fd = raw_connect(port);
        assert_int_equal(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
        char *buf = xcalloc(1, 65536);
        size_t got = 0;
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        for (;;) {
                ssize_t n = recv(fd, buf + got, 65535 - got, 0);
                if (n <= 0)
                        break;
                got += (size_t)n;
                if (until && strstr(buf, until))
                        break;
        }
        close(fd);
        return buf;
}

static void test_client_round_trips(void **state)
{
        struct fixture *f = *state;
        _cleanup_(http_client_freep) struct http_client *c = NULL;
        assert_int_equal(http_client_new(NULL, &c, NULL), 0);
        _cleanup_free_ char *base = xasprintf("http://127.0.0.1:%d", f->port);
        _cleanup_free_ char *u1 = xasprintf("%s/echo?x=1", base);
        const char *hdrs[] = { "X-Test: yes", NULL };
        for (int i = 0; i < 3; i++) { /* the same kept-alive connection */
                struct http_result r = { 0 };
                assert_int_equal(http_request(c, "POST", u1, hdrs, "text/plain", "hello", 5, &r, NULL), 0);
                assert_int_equal(r.status, 200);
                assert_string_equal(r.body, "POST /echo x=1 5:hello");
                assert_string_equal(r.content_type, "text/plain");
                http_result_free(&r);
        }
        long st = 0;
        _cleanup_json_ json_t *j = NULL;
        _cleanup_free_ char *u2 = xasprintf("%s/json", base);
        assert_int_equal(http_request_json(c, "GET", u2, NULL, &st, &j, NULL), 0);
        assert_int_equal(st, 201);
        assert_string_equal(json_string_value(json_object_get(j, "a")), "b c");
        struct http_result r = { 0 };
        _cleanup_free_ char *u3 = xasprintf("%s/a%%20b", base);
        assert_int_equal(http_request(c, "GET", u3, NULL, NULL, NULL, 0, &r, NULL), 0);
        assert_string_equal(r.body, "decoded");
        http_result_free(&r);
        _cleanup_free_ char *u4 = xasprintf("%s/nothing", base);
        assert_int_equal(http_request(c, "GET", u4, NULL, NULL, NULL, 0, &r, NULL), 0);
        assert_int_equal(r.status, 500);
        http_result_free(&r);
        /* 413 for a body over max_body_bytes */
        char big[2000];
        memset(big, 'x', sizeof(big));
        assert_int_equal(http_request(c, "POST", u1, NULL, "text/plain", big, sizeof(big), &r, NULL), 0);
        assert_int_equal(r.status, 413);
        assert_non_null(strstr(r.body, "CF-UnprocessableEntity"));
        http_result_free(&r);
}

static int collect(const char *data, size_t len, void *userdata)
{
        char *buf = userdata;
        strncat(buf, data, MIN(len, 255 - strlen(buf)));
        return 0;
}

static void test_stream(void **state)
{
        struct fixture *f = *state;
        _cleanup_(http_client_freep) struct http_client *c = NULL;
        assert_int_equal(http_client_new(NULL, &c, NULL), 0);
        _cleanup_free_ char *u = xasprintf("http://127.0.0.1:%d/stream", f->port);
        char buf[256] = "";
        long st = 0;
        assert_int_equal(http_request_stream(c, "GET", u, &st, collect, buf, NULL), 0);
        assert_int_equal(st, 200);
        assert_string_equal(buf, "{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n");
}

static void test_raw_framing(void **state)
{
        struct fixture *f = *state;
        /* chunked upload + a pipelined second request */
        static const char req[] = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                                  "GET /echo?q HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        _cleanup_free_ char *out = raw_exchange(f->port, req, sizeof(req) - 1, NULL);
        assert_non_null(strstr(out, "POST /echo  5:abcde"));
        assert_non_null(strstr(out, "GET /echo q 0:"));
        assert_non_null(strstr(out, "Connection: close"));
        /* malformed, smuggling, bad version */
        static const char *bad[] = {
                "GARBAGE\r\n\r\n",
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        };
        static const char *want[] = { "HTTP/1.1 400", "HTTP/1.1 400", "HTTP/1.1 505" };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                _cleanup_free_ char *o = raw_exchange(f->port, bad[i], strlen(bad[i]), NULL);
                assert_true(strncmp(o, want[i], strlen(want[i])) == 0);
                assert_non_null(strstr(o, "CF-MessageParseError"));
        }
        /* a head that never completes is cut after head_timeout_ms with 408 */
        _cleanup_free_ char *slow = raw_exchange(f->port, "GET / HTTP/1.1\r\nHost:", 21, NULL);
        assert_true(strncmp(slow, "HTTP/1.1 408", 12) == 0);
        /* a header section over 64 KiB: 431 */
        size_t n = 70000;
        char *huge = xmalloc(n + 64);
        int l = snprintf(huge, 64, "GET / HTTP/1.1\r\nX-Big: ");
        memset(huge + l, 'a', n);
        memcpy(huge + l + n, "\r\n\r\n", 4);
        int fd = raw_connect(f->port);
        ssize_t sent = send(fd, huge, (size_t)l + n + 4, MSG_NOSIGNAL);
        (void)sent;
        char rb[64] = "";
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        assert_true(recv(fd, rb, sizeof(rb) - 1, 0) > 0);
        assert_true(strncmp(rb, "HTTP/1.1 431", 12) == 0);
        close(fd);
        free(huge);
}

static void test_errors_of_the_client(void **state)
{
        (void)state;
        _cleanup_(http_client_freep) struct http_client *c = NULL;
        assert_int_equal(http_client_new(NULL, &c, NULL), 0);
        /* a port nobody listens on */
        struct http_server *s = NULL;
        struct http_server_opts o = { .listen = "127.0.0.1:0", .handler = handler };
        assert_int_equal(http_server_new(&o, &s, NULL), 0);
        int port = http_server_port(s);
        http_server_free(s);
        _cleanup_free_ char *u = xasprintf("http://127.0.0.1:%d/x", port);
        struct http_result r = { 0 };
        _cleanup_berr_ struct berr *e = NULL;
        assert_int_equal(http_request(c, "GET", u, NULL, NULL, NULL, 0, &r, &e), -ECONNREFUSED);
        assert_non_null(strstr(berr_msg(e), "connect to 127.0.0.1:"));
        /* bad listen addresses */
        _cleanup_berr_ struct berr *e2 = NULL;
        struct http_server_opts bad = { .listen = "nohostport", .handler = handler };
        assert_int_equal(http_server_new(&bad, &s, &e2), -EINVAL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_client_round_trips, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stream, setup, teardown),
                cmocka_unit_test_setup_teardown(test_raw_framing, setup, teardown),
                cmocka_unit_test(test_errors_of_the_client),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
