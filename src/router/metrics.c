/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The router's metrics: each worker counts into its own struct router_metrics (one writer, relaxed atomics,
 * no sharing on the request path); GET /metrics on a port of its own sums them and answers Prometheus text.
 * The metrics server is a plain blocking loop on one thread: a scrape every few seconds needs no more.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/macro.h"
#include "router/router_internal.h"

const double rm_latency_bounds_s[RM_LATENCY_BUCKETS] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10 };

void metrics_request(struct router_metrics *m, int status, int64_t latency_us)
{
        int cls = status / 100;
        metrics_add(&m->requests[cls >= 1 && cls <= 5 ? cls : 0], 1);
        if (latency_us < 0)
                latency_us = 0;
        size_t b = 0;
        while (b < RM_LATENCY_BUCKETS && (double)latency_us > rm_latency_bounds_s[b] * 1e6)
                b++;
        metrics_add(&m->latency[b], 1);
        metrics_add(&m->latency_sum_us, (uint64_t)latency_us);
}

#define LD(x) atomic_load_explicit(&(x), memory_order_relaxed)

char *metrics_render(const struct router_metrics *m)
{
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        if (!f)
                return xstrdup("");
        static const char *const cls[6] = { "other", "1xx", "2xx", "3xx", "4xx", "5xx" };
        fprintf(f, "# HELP berth_router_requests_total Requests answered, by status class.\n"
                   "# TYPE berth_router_requests_total counter\n");
        for (int i = 1; i <= 6; i++)
                fprintf(f, "berth_router_requests_total{status_class=\"%s\"} %" PRIu64 "\n", cls[i % 6],
                        LD(m->requests[i % 6]));
        fprintf(f, "# HELP berth_router_request_duration_seconds From a request's head to the end of its "
                   "response.\n# TYPE berth_router_request_duration_seconds histogram\n");
        uint64_t cum = 0;
        for (int b = 0; b < RM_LATENCY_BUCKETS; b++) {
                cum += LD(m->latency[b]);
                fprintf(f, "berth_router_request_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                        rm_latency_bounds_s[b], cum);
        }
        cum += LD(m->latency[RM_LATENCY_BUCKETS]);
        fprintf(f, "berth_router_request_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cum);
        fprintf(f, "berth_router_request_duration_seconds_sum %.6f\n", (double)LD(m->latency_sum_us) / 1e6);
        fprintf(f, "berth_router_request_duration_seconds_count %" PRIu64 "\n", cum);
        fprintf(f,
                "# HELP berth_router_backend_errors_total Failed dials and backends lost before a response.\n"
                "# TYPE berth_router_backend_errors_total counter\nberth_router_backend_errors_total %" PRIu64
                "\n",
                LD(m->backend_errors));
        fprintf(f,
                "# HELP berth_router_connections_accepted_total Client connections accepted.\n"
                "# TYPE berth_router_connections_accepted_total counter\n"
                "berth_router_connections_accepted_total %" PRIu64 "\n",
                LD(m->connections_accepted));
        fprintf(f,
                "# HELP berth_router_open_connections Client connections open.\n"
                "# TYPE berth_router_open_connections gauge\nberth_router_open_connections %" PRId64 "\n",
                LD(m->open_connections));
        fprintf(f,
                "# HELP berth_router_open_backend_connections Backend connections open (in use or pooled).\n"
                "# TYPE berth_router_open_backend_connections gauge\n"
                "berth_router_open_backend_connections %" PRId64 "\n",
                LD(m->open_backend_connections));
        fprintf(f,
                "# HELP berth_router_answer_polls_total Waits for a backend's answer spent polling "
                "(router.answer_poll_us), by how they ended: the answer came, or the worker went to sleep "
                "first (the window or the polling budget ended).\n"
                "# TYPE berth_router_answer_polls_total counter\n"
                "berth_router_answer_polls_total{result=\"answered\"} %" PRIu64 "\n"
                "berth_router_answer_polls_total{result=\"slept\"} %" PRIu64 "\n",
                LD(m->answer_polls[1]), LD(m->answer_polls[0]));
        fprintf(f,
                "# HELP berth_router_access_log_lines_dropped_total Access log lines lost: a worker's queue "
                "was full, or the controller did not take them.\n"
                "# TYPE berth_router_access_log_lines_dropped_total counter\n"
                "berth_router_access_log_lines_dropped_total %" PRIu64 "\n",
                LD(m->access_log_dropped));
        fclose(f);
        return out;
}

struct metrics_server {
        const struct proxy *p;
        int fd, stop_fd;
        pthread_t thread;
};

static void serve_one(struct metrics_server *s, int fd)
{
        char req[4096];
        size_t n = 0;
        /* Read the head (2 s at most, 4 KiB at most); only its first line matters. */
        while (n < sizeof(req) - 1) {
                struct pollfd pf = { .fd = fd, .events = POLLIN };
                if (poll(&pf, 1, 2000) <= 0)
                        return;
                ssize_t k = recv(fd, req + n, sizeof(req) - 1 - n, 0);
                if (k <= 0)
                        return;
                n += (size_t)k;
                req[n] = '\0';
                if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
                        break;
        }
        req[n] = '\0';
        _cleanup_free_ char *body = NULL;
        const char *status = "404 Not Found", *ctype = "text/plain; charset=utf-8";
        if (strncmp(req, "GET /metrics ", 13) == 0 || strncmp(req, "GET /metrics?", 13) == 0) {
                struct router_metrics sum;
                proxy_metrics(s->p, &sum);
                body = metrics_render(&sum);
                status = "200 OK";
                ctype = "text/plain; version=0.0.4; charset=utf-8";
        } else
                body = xstrdup("404 Not Found: GET /metrics\n");
        _cleanup_free_ char *head = xasprintf("HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                                              "Connection: close\r\n\r\n",
                                              status, ctype, strlen(body));
        if (send(fd, head, strlen(head), MSG_NOSIGNAL) > 0)
                (void)!send(fd, body, strlen(body), MSG_NOSIGNAL);
}

static void *metrics_thread(void *arg)
{
        struct metrics_server *s = arg;
        for (;;) {
                struct pollfd pf[2] = { { .fd = s->fd, .events = POLLIN },
                                        { .fd = s->stop_fd, .events = POLLIN } };
                if (poll(pf, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (pf[1].revents)
                        break;
                int c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0)
                        continue;
                serve_one(s, c);
                close(c);
        }
        return NULL;
}

int metrics_start(const char *listen_addr, const struct proxy *p, struct metrics_server **ret,
                  struct berr **err)
{
        const char *colon = strrchr(listen_addr, ':');
        if (!colon || colon == listen_addr || !colon[1])
                return berr_set(err, -EINVAL, "metrics: listen address must be HOST:PORT, got \"%s\"",
                                listen_addr);
        _cleanup_free_ char *host = xstrndup(listen_addr, (size_t)(colon - listen_addr));
        if (host[0] == '[' && host[strlen(host) - 1] == ']') {
                memmove(host, host + 1, strlen(host));
                host[strlen(host) - 1] = '\0';
        }
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV },
                        *ai = NULL;
        int g = getaddrinfo(host, colon + 1, &hints, &ai);
        if (g != 0)
                return berr_set(err, -EINVAL, "metrics: %s: %s", listen_addr, gai_strerror(g));
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
                int r = -errno;
                if (fd >= 0)
                        close(fd);
                freeaddrinfo(ai);
                return berr_set_errno(err, r, "metrics: listen on %s", listen_addr);
        }
        freeaddrinfo(ai);
        struct metrics_server *s = xcalloc(1, sizeof(*s));
        s->p = p;
        s->fd = fd;
        s->stop_fd = eventfd(0, EFD_CLOEXEC);
        int e = s->stop_fd < 0 ? errno : pthread_create(&s->thread, NULL, metrics_thread, s);
        if (e != 0) {
                close(fd);
                if (s->stop_fd >= 0)
                        close(s->stop_fd);
                free(s);
                return berr_set_errno(err, -e, "metrics: start its thread");
        }
        *ret = s;
        return 0;
}

void metrics_stop(struct metrics_server *s)
{
        if (!s)
                return;
        uint64_t one = 1;
        (void)!write(s->stop_fd, &one, sizeof(one));
        pthread_join(s->thread, NULL);
        close(s->fd);
        close(s->stop_fd);
        free(s);
}
