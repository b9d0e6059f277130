/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Health checks against local listeners: a port open and closed, an HTTP server answering 200, 500, or
 * never answering (timeout).
 */
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

#include "cell/health.h"

/* A listener on 127.0.0.1 with a free port. */
static int listen_any(uint16_t *ret_port)
{
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        assert_int_equal(listen(fd, 8), 0);
        socklen_t len = sizeof(sa);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
        *ret_port = ntohs(sa.sin_port);
        return fd;
}

struct server {
        int fd;
        const char *answer; /* NULL: read the request, never answer */
        char request[1024];
};

static void *serve_one(void *arg)
{
        struct server *s = arg;
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
                return NULL;
        ssize_t n = read(c, s->request, sizeof(s->request) - 1);
        s->request[n > 0 ? n : 0] = '\0';
        if (s->answer) {
                ssize_t w = write(c, s->answer, strlen(s->answer));
                (void)w;
        } else {
                usleep(600 * 1000);
        }
        close(c);
        return NULL;
}

static void test_port_open_and_closed(void **state)
{
        (void)state;
        struct berr *err = NULL;
        uint16_t port;
        int fd = listen_any(&port);
        assert_int_equal(health_check_port("127.0.0.1", port, 1000, &err), 0);
        close(fd);
        assert_true(health_check_port("127.0.0.1", port, 1000, &err) < 0);
        assert_non_null(strstr(berr_msg(err), "refused"));
        berr_free(err);
        err = NULL;
        assert_true(health_check_port("not-an-ip", port, 1000, &err) < 0);
        berr_free(err);
}

static int run_http(const char *answer, const char *endpoint, unsigned timeout_ms, struct server *s,
                    struct berr **err)
{
        uint16_t port;
        s->fd = listen_any(&port);
        s->answer = answer;
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, serve_one, s), 0);
        int r = health_check_http("127.0.0.1", port, endpoint, timeout_ms, err);
        pthread_join(t, NULL);
        close(s->fd);
        return r;
}

static void test_http(void **state)
{
        (void)state;
        struct berr *err = NULL;
        struct server s = { 0 };
        assert_int_equal(run_http("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "/healthz", 1000, &s, &err),
                         0);
        assert_non_null(strstr(s.request, "GET /healthz HTTP/1.1\r\n"));
        assert_true(run_http("HTTP/1.1 500 Internal Server Error\r\n\r\n", "/", 1000, &s, &err) < 0);
        assert_non_null(strstr(berr_msg(err), "status 500"));
        berr_free(err);
        err = NULL;
        assert_true(run_http("garbage\r\n", "/", 1000, &s, &err) < 0);
        berr_free(err);
        err = NULL;
        assert_true(run_http(NULL, "/", 200, &s, &err) < 0);
        assert_non_null(strstr(berr_msg(err), "timed out"));
        berr_free(err);
        err = NULL;
        assert_true(health_check_http("127.0.0.1", 1, "no-slash", 100, &err) < 0);
        berr_free(err);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_port_open_and_closed),
                cmocka_unit_test(test_http),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
