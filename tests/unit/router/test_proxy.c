/* SPDX-License-Identifier: Apache-2.0 */
/* The proxy in-process: a route store filled by hand, backends in threads, raw sockets as clients. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/json.h"
#include "router/router_internal.h"

struct backend {
        int fd;
        uint16_t port;
        char name[16];
        pthread_t thread;
        char last_head[8192];
        pthread_mutex_t lock;
};

/* Answer each connection's request with the backend's name, then close it. */
static void *backend_main(void *arg)
{
        struct backend *b = arg;
        for (;;) {
                int c = accept4(b->fd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        return NULL;
                char buf[8192];
                size_t n = 0;
                for (;;) {
                        ssize_t k = recv(c, buf + n, sizeof(buf) - 1 - n, 0);
                        if (k <= 0)
                                break;
                        n += (size_t)k;
                        buf[n] = '\0';
                        char *end = strstr(buf, "\r\n\r\n");
                        if (!end)
                                continue;
                        pthread_mutex_lock(&b->lock);
                        memcpy(b->last_head, buf, (size_t)(end - buf));
                        b->last_head[end - buf] = '\0';
                        pthread_mutex_unlock(&b->lock);
                        char resp[128];
                        int rl =
                            snprintf(resp, sizeof(resp),
                                     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                                     strlen(b->name), b->name);
                        /* One request per connection: this backend serves one connection at a time. */
                        send(c, resp, (size_t)rl, MSG_NOSIGNAL);
                        break;
                }
                close(c);
        }
}

static void backend_start(struct backend *b, const char *name)
{
        memset(b, 0, sizeof(*b));
        snprintf(b->name, sizeof(b->name), "%s", name);
        pthread_mutex_init(&b->lock, NULL);
        b->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        assert_int_equal(bind(b->fd, (struct sockaddr *)&a, sizeof(a)), 0);
        assert_int_equal(listen(b->fd, 64), 0);
        socklen_t l = sizeof(a);
        getsockname(b->fd, (struct sockaddr *)&a, &l);
        b->port = ntohs(a.sin_port);
        pthread_create(&b->thread, NULL, backend_main, b);
}

static void backend_stop(struct backend *b)
{
        shutdown(b->fd, SHUT_RDWR);
        pthread_join(b->thread, NULL);
        close(b->fd);
        pthread_mutex_destroy(&b->lock);
}

/* A port nothing listens on. */
static uint16_t dead_port(void)
{
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        bind(fd, (struct sockaddr *)&a, sizeof(a));
        socklen_t l = sizeof(a);
        getsockname(fd, (struct sockaddr *)&a, &l);
        close(fd);
        return ntohs(a.sin_port);
}

struct rig {
        struct route_store store;
        struct proxy *p;
        uint16_t port;
        struct backend b[2];
};

static void set_table(struct rig *r, const char *fmt, ...) _printf_(2, 3);
static void set_table(struct rig *r, const char *fmt, ...)
{
        char text[4096];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof(text), fmt, ap);
        va_end(ap);
        json_t *doc = NULL;
        struct berr *err = NULL;
        assert_int_equal(json_parse_buf(text, strlen(text), &doc, &err), 0);
        struct route_table *t = NULL;
        assert_int_equal(route_table_from_json(doc, NULL, &t, &err), 0);
        json_decref(doc);
        route_store_swap(&r->store, t);
}

static int rig_setup(void **state)
{
        struct rig *r = calloc(1, sizeof(*r));
        route_store_init(&r->store);
        backend_start(&r->b[0], "b0");
        backend_start(&r->b[1], "b1");
        struct router_opts o = { .listen = (char *)"127.0.0.1:0",
                                 .workers = 2,
                                 .dial_timeout_ms = 2000,
                                 .request_timeout_ms = 10000,
                                 .idle_timeout_ms = 10000,
                                 .head_timeout_ms = 2000,
                                 .drain_timeout_ms = 2000 };
        struct berr *err = NULL;
        if (proxy_start(&o, &r->store, &r->p, &err) < 0)
                fail_msg("proxy_start: %s", berr_msg(err));
        const char *colon = strrchr(proxy_address(r->p), ':');
        r->port = (uint16_t)strtoul(colon + 1, NULL, 10);
        *state = r;
        return 0;
}

static int rig_teardown(void **state)
{
        struct rig *r = *state;
        proxy_stop(r->p);
        proxy_free(r->p);
        backend_stop(&r->b[0]);
        backend_stop(&r->b[1]);
        route_store_destroy(&r->store);
        free(r);
        return 0;
}

/* Send req on a new connection and read until the proxy closes; returns a malloc'd NUL-terminated reply. */
static char *exchange(struct rig *r, const char *req)
{
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET,
                                 .sin_port = htons(r->port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
        struct timeval tv = { .tv_sec = 10 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
        size_t cap = 65536, n = 0;
        char *out = malloc(cap);
        for (;;) {
                ssize_t k = recv(fd, out + n, cap - 1 - n, 0);
                if (k <= 0)
                        break;
                n += (size_t)k;
        }
        out[n] = '\0';
        close(fd);
        return out;
}

static char *get(struct rig *r, const char *host)
{
        char req[512];
        snprintf(req, sizeof(req), "GET /x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host);
        return exchange(r, req);
}

static void test_errors(void **state)
{
        struct rig *r = *state;
        set_table(r, "{\"index\":1,\"routes\":[{\"host\":\"empty.test\",\"endpoints\":[]}]}");
        char *out = get(r, "Nope.Test:80");
        assert_non_null(strstr(out, "HTTP/1.1 404 Not Found\r\n"));
        assert_non_null(strstr(out, "\r\nX-Cf-Routererror: unknown_route\r\n"));
        assert_non_null(strstr(out, "\r\nCache-Control: no-cache, no-store\r\n"));
        assert_non_null(
            strstr(out, "\r\n\r\n404 Not Found: Requested route ('nope.test') does not exist.\n"));
        free(out);
        out = get(r, "empty.test");
        assert_non_null(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n"));
        assert_non_null(strstr(out, "\r\nX-Cf-Routererror: no_endpoints\r\n"));
        free(out);
        out = exchange(r, "GET / HTTP/1.0\r\n\r\n");
        assert_non_null(strstr(out, "HTTP/1.1 400 Bad Request\r\n"));
        assert_non_null(strstr(out, "\r\nX-Cf-Routererror: empty_host\r\n"));
        free(out);
        set_table(r,
                  "{\"index\":2,\"routes\":[{\"host\":\"dead.test\",\"endpoints\":["
                  "{\"host\":\"127.0.0.1\",\"port\":%u},{\"host\":\"127.0.0.1\",\"port\":%u}]}]}",
                  dead_port(), dead_port());
        out = get(r, "dead.test");
        assert_non_null(strstr(out, "HTTP/1.1 502 Bad Gateway\r\n"));
        assert_non_null(strstr(out, "\r\nX-Cf-Routererror: endpoint_failure\r\n"));
        assert_non_null(strstr(out, "502 Bad Gateway: Registered endpoint failed to handle the request.\n"));
        free(out);
}

static void test_round_robin_retry_headers(void **state)
{
        struct rig *r = *state;
        set_table(r,
                  "{\"index\":3,\"routes\":[{\"host\":\"app.test\",\"app_guid\":\"G\",\"endpoints\":["
                  "{\"instance_guid\":\"I0\",\"index\":0,\"host\":\"127.0.0.1\",\"port\":%u},"
                  "{\"instance_guid\":\"I1\",\"index\":1,\"host\":\"127.0.0.1\",\"port\":%u},"
                  "{\"instance_guid\":\"I2\",\"index\":2,\"host\":\"127.0.0.1\",\"port\":%u}]}]}",
                  r->b[0].port, dead_port(), r->b[1].port);
        int seen[2] = { 0, 0 };
        for (int i = 0; i < 12; i++) {
                char *out = get(r, "app.test");
                assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
                seen[strstr(out, "\r\n\r\nb1") ? 1 : 0]++;
                free(out);
        }
        assert_true(seen[0] >= 4 && seen[1] >= 4);
        pthread_mutex_lock(&r->b[0].lock);
        const char *h = r->b[0].last_head;
        assert_non_null(strstr(h, "GET /x HTTP/1.1\r\n"));
        assert_non_null(strstr(h, "\r\nX-Forwarded-For: 127.0.0.1\r\n"));
        assert_non_null(strstr(h, "\r\nX-Forwarded-Proto: http\r\n"));
        assert_non_null(strstr(h, "\r\nX-Request-Start: "));
        assert_non_null(strstr(h, "\r\nX-Vcap-Request-Id: "));
        assert_non_null(strstr(h, "\r\nX-CF-ApplicationID: G\r\n"));
        assert_non_null(strstr(h, "\r\nX-CF-InstanceIndex: 0\r\n"));
        assert_non_null(strstr(h, "\r\nX-CF-InstanceID: I0"));
        assert_null(strstr(h, "\r\nConnection:"));
        pthread_mutex_unlock(&r->b[0].lock);
}

/* The lines a worker queued: each "GUID\tTIME\tTEXT\n", appended to out (caller frees). */
static char *queued_lines(struct rig *r)
{
        size_t nq = 0;
        struct access_queue *const *qs = proxy_access_queues(r->p, &nq);
        char *out = calloc(1, 1);
        size_t len = 0;
        for (size_t i = 0; i < nq; i++) {
                pthread_mutex_lock(&qs[i]->mu);
                const struct access_batch *b = &qs[i]->cur;
                for (const char *p = b->d; p && p < b->d + b->len;) {
                        const char *g = p, *t = g + strlen(g) + 1, *x = t + strlen(t) + 1;
                        size_t n = strlen(g) + strlen(t) + strlen(x) + 3;
                        out = realloc(out, len + n + 1);
                        snprintf(out + len, n + 1, "%s\t%s\t%s\n", g, t, x);
                        len += n;
                        p = x + strlen(x) + 1;
                }
                pthread_mutex_unlock(&qs[i]->mu);
        }
        return out;
}

static void test_access_log_line(void **state)
{
        struct rig *r = *state;
        set_table(r,
                  "{\"index\":4,\"routes\":[{\"host\":\"log.test\",\"app_guid\":\"app-G\",\"endpoints\":["
                  "{\"instance_guid\":\"inst-3\",\"index\":3,\"host\":\"127.0.0.1\",\"port\":%u}]},"
                  "{\"host\":\"nolog.test\",\"endpoints\":[{\"host\":\"127.0.0.1\",\"port\":%u}]}]}",
                  r->b[0].port, r->b[0].port);
        char *out =
            exchange(r, "GET /p?q=1 HTTP/1.1\r\nHost: Log.Test:8080\r\nUser-Agent: curl/\"8\"\r\n"
                        "Referer: http://r/\r\nX-Forwarded-For: 10.0.0.1\r\nConnection: close\r\n\r\n");
        assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
        free(out);
        out = get(r, "nolog.test"); /* a route without an app: no line */
        assert_non_null(strstr(out, "HTTP/1.1 200 OK\r\n"));
        free(out);
        /* The line is queued when the request is released, just after its response is written. */
        char *lines = NULL;
        for (int i = 0; i < 500; i++) {
                lines = queued_lines(r);
                if (*lines)
                        break;
                free(lines);
                lines = NULL;
                usleep(10000);
        }
        assert_non_null(lines);
        char re_text[1024];
        snprintf(re_text, sizeof(re_text),
                 "^app-G\t[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{9}Z\t"
                 "log\\.test - \\[[0-9T:.-]{29}Z\\] \"GET /p\\?q=1 HTTP/1\\.1\" 200 0 [0-9]+ \"http://r/\" "
                 "\"curl/\\?8\\?\" \"127\\.0\\.0\\.1:[0-9]+\" \"127\\.0\\.0\\.1:%u\" "
                 "x_forwarded_for:\"10\\.0\\.0\\.1, 127\\.0\\.0\\.1\" x_forwarded_proto:\"http\" "
                 "vcap_request_id:\"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\" "
                 "response_time:[0-9]+\\.[0-9]{6} gorouter_time:[0-9]+\\.[0-9]{6} app_id:\"app-G\" "
                 "app_index:\"3\" instance_id:\"inst-3\"\n$",
                 r->b[0].port);
        regex_t re;
        assert_int_equal(regcomp(&re, re_text, REG_EXTENDED | REG_NOSUB), 0);
        if (regexec(&re, lines, 0, NULL, 0) != 0)
                fail_msg("access log line: %s", lines);
        regfree(&re);
        /* The [TIME] in the text is the line's timestamp. */
        char *tab = strchr(lines, '\t'), *br = strchr(lines, '[');
        assert_memory_equal(tab + 1, br + 1, 30);
        free(lines);
}

/* A full queue drops lines and counts them; what was queued stays intact. */
static void test_access_queue_caps(void **state)
{
        (void)state;
        struct access_queue q;
        access_queue_init(&q);
        for (int i = 0; i < AL_QUEUE_MAX + 7; i++)
                access_queue_push(&q, "g", "t", "x", 1);
        assert_int_equal(q.cur.n, AL_QUEUE_MAX);
        assert_int_equal(q.cur.len, (size_t)AL_QUEUE_MAX * 6);
        assert_int_equal(access_queue_dropped(&q), 7);
        assert_memory_equal(q.cur.d, "g\0t\0x\0g\0t\0x\0", 12);
        access_queue_destroy(&q);

        access_queue_init(&q);
        static char big[4000];
        memset(big, 'b', sizeof(big));
        size_t per = 2 + 2 + sizeof(big) + 1, fit = AL_QUEUE_BYTES / per;
        for (size_t i = 0; i < fit + 3; i++)
                access_queue_push(&q, "g", "t", big, sizeof(big));
        assert_int_equal(q.cur.n, fit);
        assert_true(q.cur.len <= AL_QUEUE_BYTES);
        assert_int_equal(access_queue_dropped(&q), 3);
        access_queue_destroy(&q);
}

/* The escape one byte at a time, as the shipper had it before the word-at-a-time scan. */
static size_t json_escape_ref(char *out, const unsigned char *s, size_t len)
{
        static const char hex[] = "0123456789abcdef";
        char *o = out;
        *o++ = '"';
        for (size_t i = 0; i < len; i++) {
                unsigned char ch = s[i];
                if (ch == '"' || ch == '\\') {
                        *o++ = '\\';
                        *o++ = (char)ch;
                } else if (ch >= 0x20 && ch < 0x7f) {
                        *o++ = (char)ch;
                } else {
                        unsigned v = ch < 0x7f ? ch : '?';
                        o += sprintf(o, "\\u00%c%c", hex[v >> 4], hex[v & 15]);
                }
        }
        *o++ = '"';
        return (size_t)(o - out);
}

/* Escape into a buffer of exactly 6 * len + 2 bytes (ASan sees a write past it) and compare. */
static void check_escape(const unsigned char *s, size_t len)
{
        size_t cap = 6 * len + 2;
        char *got = malloc(cap), *want = malloc(cap);
        assert_non_null(got);
        assert_non_null(want);
        size_t n = access_json_escape(got, (const char *)s, len), wn = json_escape_ref(want, s, len);
        assert_int_equal(n, wn);
        assert_memory_equal(got, want, n);
        free(got);
        free(want);
}

/*
 * The access log's JSON strings: every byte value at every position of strings up to 3 words long (where the
 * scan meets it inside a word, at a word's edge, or in the tail), pairs of bytes that need escapes (a borrow
 * or carry from the first must not hide or invent the second), random mixtures, and a line in full.
 */
static void test_access_json_escape(void **state)
{
        (void)state;
        unsigned char s[64];
        for (size_t len = 0; len <= 24; len++)
                for (size_t pos = 0; pos < len; pos++)
                        for (int ch = 0; ch < 256; ch++) {
                                memset(s, 'a', len);
                                s[pos] = (unsigned char)ch;
                                check_escape(s, len);
                        }
        static const unsigned char odd[] = { 0x00, 0x01, 0x1f, 0x20, 0x21, '"',
                                             '\\', 0x7e, 0x7f, 0x80, 0xfe, 0xff };
        for (size_t a = 0; a < sizeof(odd); a++)
                for (size_t b = 0; b < sizeof(odd); b++)
                        for (size_t gap = 1; gap < 9; gap++) {
                                memset(s, 'x', 16);
                                s[2] = odd[a];
                                s[2 + gap] = odd[b];
                                check_escape(s, 16);
                        }
        unsigned seed = 42;
        for (int t = 0; t < 20000; t++) {
                size_t len = (size_t)(rand_r(&seed) % (int)sizeof(s));
                for (size_t i = 0; i < len; i++) {
                        int r = rand_r(&seed) % 8;
                        s[i] = (unsigned char)(r < 5    ? 'a' + rand_r(&seed) % 26
                                               : r == 5 ? '"'
                                                        : rand_r(&seed) % 256);
                }
                check_escape(s, len);
        }
        const char *line = "h - [t] \"GET /a\\b HTTP/1.1\" 200 0 5 \"-\" \"ua\x01\xc3\xa9\"";
        char out[512];
        size_t n = access_json_escape(out, line, strlen(line));
        const char *want =
            "\"h - [t] \\\"GET /a\\\\b HTTP/1.1\\\" 200 0 5 \\\"-\\\" \\\"ua\\u0001\\u003f\\u003f\\\"\"";
        assert_int_equal(n, strlen(want));
        assert_memory_equal(out, want, n);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_errors, rig_setup, rig_teardown),
                cmocka_unit_test_setup_teardown(test_round_robin_retry_headers, rig_setup, rig_teardown),
                cmocka_unit_test_setup_teardown(test_access_log_line, rig_setup, rig_teardown),
                cmocka_unit_test(test_access_queue_caps),
                cmocka_unit_test(test_access_json_escape),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
