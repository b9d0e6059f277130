/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The platform APIs' HTTP/1.1 server (see http_server.h): an accept loop and one thread per connection.
 * Each connection thread owns its socket, its buffers and the request/response objects it hands to the
 * handler; nothing is shared between connections but the server's counters (under s->lock).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/http_server.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/macro.h"
#include "lib/strv.h"

#define HEAD_MAX  (64u * 1024)
#define READ_SIZE (16u * 1024)

struct http_server {
        struct http_server_opts o;
        int listen_fd;
        int stop_fd; /* eventfd, readable once stopping (never drained) */
        int port;
        SSL_CTX *ssl_ctx;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        unsigned active;
        volatile int stopping;
};

struct conn {
        struct http_server *s;
        int fd;
        SSL *ssl;
        char peer[64];
        char *buf; /* received, not yet consumed bytes */
        size_t len, cap;
};

struct http_response {
        struct conn *c;
        bool head_only;  /* HEAD request: no body bytes */
        bool keep_alive; /* the connection may serve another request */
        bool sent;       /* status line written (whole response or stream head) */
        bool streaming;
        bool gone; /* a write failed */
        int status;
        char *content_type;
        struct strv headers; /* "Name: value" */
        char *body;
        size_t body_len;
};

struct req_full {
        struct http_request r; /* first: handlers get &r */
        struct http_head head;
        struct strv header_copies; /* NUL-terminated values handed out by http_request_header */
};

/* ---- I/O ---- */

static ssize_t conn_recv(struct conn *c, void *buf, size_t n)
{
        if (c->ssl) {
                int r = SSL_read(c->ssl, buf, (int)MIN(n, (size_t)INT32_MAX));
                if (r > 0)
                        return r;
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_ZERO_RETURN)
                        return 0;
                errno = (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? EAGAIN : EIO;
                return -1;
        }
        ssize_t r;
        do
                r = recv(c->fd, buf, n, 0);
        while (r < 0 && errno == EINTR);
        return r;
}

static int conn_send_all(struct conn *c, const void *buf, size_t n)
{
        const char *p = buf;
        while (n > 0) {
                ssize_t w;
                if (c->ssl) {
                        int r = SSL_write(c->ssl, p, (int)MIN(n, (size_t)INT32_MAX));
                        w = r > 0 ? r : -1;
                } else {
                        do
                                w = send(c->fd, p, n, MSG_NOSIGNAL);
                        while (w < 0 && errno == EINTR);
                }
                if (w <= 0)
                        return -EPIPE;
                p += w;
                n -= (size_t)w;
        }
        return 0;
}

static void set_rcv_timeout(int fd, unsigned ms)
{
        struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static uint64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Read more bytes into c->buf, waiting at most until deadline (ms, monotonic). 0 on EOF, <0 on error. */
static ssize_t conn_fill(struct conn *c, size_t limit, uint64_t deadline)
{
        if (c->len >= limit)
                return -EMSGSIZE;
        if (c->cap < limit + 1) {
                c->cap = limit + 1;
                c->buf = xrealloc(c->buf, c->cap);
        }
        for (;;) {
                if (!(c->ssl && SSL_pending(c->ssl) > 0)) {
                        uint64_t now = now_ms();
                        if (now >= deadline)
                                return -ETIMEDOUT;
                        struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN },
                                               { .fd = c->s->stop_fd, .events = POLLIN } };
                        /* While stopping, only a request already begun may finish. */
                        int n = poll(p, c->len == 0 ? 2 : 1, (int)MIN(deadline - now, (uint64_t)INT32_MAX));
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0)
                                return -errno;
                        if (n == 0)
                                return -ETIMEDOUT;
                        if (c->len == 0 && (p[1].revents & POLLIN))
                                return -ESHUTDOWN;
                }
                ssize_t r = conn_recv(c, c->buf + c->len, MIN(limit - c->len, (size_t)READ_SIZE * 4));
                if (r < 0 && errno == EAGAIN)
                        continue;
                if (r < 0)
                        return -errno;
                c->len += (size_t)r;
                c->buf[c->len] = '\0';
                return r;
        }
}

static void conn_consume(struct conn *c, size_t n)
{
        memmove(c->buf, c->buf + n, c->len - n);
        c->len -= n;
}

/* ---- responses ---- */

static int send_head(struct http_response *resp, int status, const char *content_type, bool chunked,
                     size_t content_length)
{
        struct strv h = { 0 };
        strv_push(&h, xasprintf("HTTP/1.1 %d %s\r\n", status, http_reason(status)));
        if (content_type)
                strv_push(&h, xasprintf("Content-Type: %s\r\n", content_type));
        if (chunked)
                strv_push(&h, xstrdup("Transfer-Encoding: chunked\r\n"));
        else
                strv_push(&h, xasprintf("Content-Length: %zu\r\n", content_length));
        for (size_t i = 0; resp->headers.v && i < resp->headers.n; i++)
                strv_push(&h, xasprintf("%s\r\n", resp->headers.v[i]));
        if (!resp->keep_alive)
                strv_push(&h, xstrdup("Connection: close\r\n"));
        strv_push(&h, xstrdup("\r\n"));
        size_t total = 0;
        for (size_t i = 0; i < h.n; i++)
                total += strlen(h.v[i]);
        _cleanup_free_ char *out = xmalloc(total + 1);
        size_t off = 0;
        for (size_t i = 0; i < h.n; i++) {
                size_t l = strlen(h.v[i]);
                memcpy(out + off, h.v[i], l);
                off += l;
        }
        strv_clear(&h);
        resp->sent = true;
        if (conn_send_all(resp->c, out, off) < 0) {
                resp->gone = true;
                return -EPIPE;
        }
        return 0;
}

int http_response_status(const struct http_response *resp)
{
        return resp->status;
}

void http_response_header(struct http_response *resp, const char *name, const char *value)
{
        if (resp->sent || strpbrk(name, "\r\n:") || strpbrk(value, "\r\n"))
                return;
        if (strcasecmp(name, "Connection") == 0 && strcasecmp(value, "close") == 0) {
                resp->keep_alive = false;
                return;
        }
        strv_push(&resp->headers, xasprintf("%s: %s", name, value));
}

void http_response_body(struct http_response *resp, int status, const char *content_type, const void *body,
                        size_t len)
{
        if (resp->sent)
                return;
        resp->status = status;
        free(resp->content_type);
        resp->content_type = content_type ? xstrdup(content_type) : NULL;
        free(resp->body);
        resp->body = xmalloc(len + 1);
        if (len)
                memcpy(resp->body, body, len);
        resp->body_len = len;
}

void http_response_json(struct http_response *resp, int status, json_t *body)
{
        _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT) : xstrdup("{}");
        json_decref(body);
        http_response_body(resp, status, "application/json", text, strlen(text));
}

int http_response_stream_begin(struct http_response *resp, int status, const char *content_type)
{
        if (resp->sent)
                return -EALREADY;
        resp->streaming = true;
        resp->status = status;
        return send_head(resp, status, content_type, true, 0);
}

int http_response_stream_write(struct http_response *resp, const void *buf, size_t len)
{
        if (!resp->streaming || resp->gone)
                return -EPIPE;
        if (len == 0)
                return 0;
        if (resp->head_only)
                return 0;
        char hdr[32];
        int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", len);
        if (conn_send_all(resp->c, hdr, (size_t)n) < 0 || conn_send_all(resp->c, buf, len) < 0 ||
            conn_send_all(resp->c, "\r\n", 2) < 0) {
                resp->gone = true;
                return -EPIPE;
        }
        return 0;
}

static void response_finish(struct http_response *resp)
{
        if (resp->gone)
                return;
        if (resp->streaming) {
                if (!resp->head_only && conn_send_all(resp->c, "0\r\n\r\n", 5) < 0)
                        resp->gone = true;
                return;
        }
        if (!resp->status) {
                static const char e[] = "{\"errors\":[{\"code\":10001,\"title\":\"CF-ServerError\","
                                        "\"detail\":\"An unknown error occurred.\"}]}";
                http_response_body(resp, 500, "application/json", e, sizeof(e) - 1);
        }
        if (send_head(resp, resp->status, resp->content_type, false, resp->body_len) < 0)
                return;
        if (!resp->head_only && resp->body_len && conn_send_all(resp->c, resp->body, resp->body_len) < 0)
                resp->gone = true;
}

static void response_reset(struct http_response *resp)
{
        strv_clear(&resp->headers);
        free(resp->content_type);
        free(resp->body);
        struct conn *c = resp->c;
        *resp = (struct http_response){ .c = c };
}

/* An error the server answers itself, then closes. */
static void send_error(struct conn *c, int status, const char *detail)
{
        struct http_response resp = { .c = c, .keep_alive = false };
        _cleanup_json_ json_t *e =
            json_pack("{s:[{s:i, s:s, s:s}]}", "errors", "code", status == 413 ? 10008 : 1001, "title",
                      status == 413 ? "CF-UnprocessableEntity" : "CF-MessageParseError", "detail", detail);
        http_response_json(&resp, status, json_incref(e));
        response_finish(&resp);
        response_reset(&resp);
}

/* ---- requests ---- */

const char *http_request_header(const struct http_request *r, const char *name)
{
        struct req_full *f = (struct req_full *)r;
        const struct http_header *h = http_head_get(&f->head, name);
        if (!h)
                return NULL;
        char *v = xstrndup(h->value, h->value_len);
        strv_push(&f->header_copies, v);
        return v;
}

/* Read the body per the head into a fresh buffer; consumes it from c. */
static int read_body(struct conn *c, const struct http_head *h, size_t head_len, uint64_t deadline,
                     char **ret, size_t *ret_len)
{
        size_t max = c->s->o.max_body_bytes ? c->s->o.max_body_bytes : (1u << 20);
        conn_consume(c, head_len);
        if (h->chunked) {
                struct http_chunked ch = { 0 };
                char *out = xmalloc(1);
                size_t olen = 0;
                for (;;) {
                        size_t used = 0, doff = 0, dlen = 0;
                        int r = http_chunked_decode(&ch, c->buf, c->len, &used, &doff, &dlen);
                        if (r < 0) {
                                free(out);
                                return -EBADMSG;
                        }
                        if (dlen) {
                                if (olen + dlen > max) {
                                        free(out);
                                        return -EFBIG;
                                }
                                out = xrealloc(out, olen + dlen + 1);
                                memcpy(out + olen, c->buf + doff, dlen);
                                olen += dlen;
                        }
                        conn_consume(c, used);
                        if (r == 1)
                                break;
                        if (used == 0 || c->len == 0) {
                                ssize_t n = conn_fill(c, HEAD_MAX + READ_SIZE * 4, deadline);
                                if (n <= 0) {
                                        free(out);
                                        return n == 0 ? -ECONNRESET : (int)n;
                                }
                        }
                }
                out[olen] = '\0';
                *ret = out;
                *ret_len = olen;
                return 0;
        }
        size_t want = h->content_length > 0 ? (size_t)h->content_length : 0;
        if (h->content_length > 0 && (uint64_t)h->content_length > max)
                return -EFBIG;
        while (c->len < want) {
                ssize_t n = conn_fill(c, want, deadline);
                if (n <= 0)
                        return n == 0 ? -ECONNRESET : (int)n;
        }
        char *out = xmalloc(want + 1);
        memcpy(out, c->buf, want);
        out[want] = '\0';
        conn_consume(c, want);
        *ret = out;
        *ret_len = want;
        return 0;
}

/* Serve one request. Returns true if the connection may go on. */
static bool serve_one(struct conn *c)
{
        struct http_server *s = c->s;
        unsigned idle = s->o.idle_timeout_ms ? s->o.idle_timeout_ms : 60000;
        unsigned head_to = s->o.head_timeout_ms ? s->o.head_timeout_ms : 10000;
        struct http_limits lim = { .max_head_bytes = HEAD_MAX };
        struct req_full f = { 0 };
        ssize_t hl;
        uint64_t deadline = now_ms() + idle;
        bool begun = false;
        for (;;) {
                hl = c->len ? http_parse_request(c->buf, c->len, &lim, &f.head) : 0;
                if (hl != HTTP_PARSE_INCOMPLETE)
                        break;
                ssize_t n = conn_fill(c, HEAD_MAX, deadline);
                if (n == -EMSGSIZE) {
                        hl = HTTP_PARSE_TOO_LARGE;
                        break;
                }
                if (n <= 0) {
                        if (n == -ETIMEDOUT && begun)
                                send_error(c, 408, "the request head did not arrive in time");
                        return false;
                }
                if (!begun) {
                        begun = true;
                        deadline = now_ms() + head_to;
                }
        }
        if (hl < 0) {
                int st = hl == HTTP_PARSE_TOO_LARGE      ? 431
                         : hl == HTTP_PARSE_URI_TOO_LONG ? 414
                         : hl == HTTP_PARSE_VERSION      ? 505
                                                         : 400;
                send_error(c, st,
                           st == 431   ? "request header fields too large"
                           : st == 414 ? "request target too long"
                           : st == 505 ? "HTTP version not supported"
                                       : "malformed HTTP request");
                return false;
        }
        struct http_head *h = &f.head;
        _cleanup_free_ char *method = xstrndup(h->method, h->method_len);
        _cleanup_free_ char *target = xstrndup(h->target, h->target_len);
        size_t max = s->o.max_body_bytes ? s->o.max_body_bytes : (1u << 20);
        if (h->content_length > 0 && (uint64_t)h->content_length > max) {
                send_error(c, 413, "request body too large");
                return false;
        }
        if (h->expect_continue && (h->content_length > 0 || h->chunked) && c->len == (size_t)hl) {
                if (conn_send_all(c, "HTTP/1.1 100 Continue\r\n\r\n", 25) < 0)
                        return false;
        }
        _cleanup_free_ char *body = NULL;
        size_t body_len = 0;
        /* The head points into c->buf, which reading the body moves: keep a copy of the head bytes. */
        _cleanup_free_ char *head_copy = xstrndup(c->buf, (size_t)hl);
        if (http_parse_request(head_copy, (size_t)hl, &lim, h) != hl)
                return false;
        int r = read_body(c, h, (size_t)hl, now_ms() + idle, &body, &body_len);
        if (r < 0) {
                if (r == -EFBIG)
                        send_error(c, 413, "request body too large");
                else if (r == -EBADMSG)
                        send_error(c, 400, "malformed chunked body");
                return false;
        }
        char *q = strchr(target, '?');
        const char *query = "";
        if (q) {
                *q = '\0';
                query = q + 1;
        }
        _cleanup_free_ char *path = xmalloc(strlen(target) + 1);
        if (target[0] != '/' || http_percent_decode(target, strlen(target), path) < 0) {
                send_error(c, 400, "invalid request target");
                return false;
        }
        f.r = (struct http_request){ .method = method,
                                     .path = path,
                                     .query = query,
                                     .head = h,
                                     .body = body ? body : "",
                                     .body_len = body_len,
                                     .peer = c->peer };
        struct http_response resp = { .c = c,
                                      .keep_alive = h->keep_alive && !s->stopping,
                                      .head_only = strcmp(method, "HEAD") == 0 };
        s->o.handler(s->o.userdata, &f.r, &resp);
        response_finish(&resp);
        bool again = resp.keep_alive && !resp.gone && !s->stopping;
        response_reset(&resp);
        strv_clear(&f.header_copies);
        return again;
}

static void *conn_thread(void *arg)
{
        struct conn *c = arg;
        struct http_server *s = c->s;
        unsigned head_to = s->o.head_timeout_ms ? s->o.head_timeout_ms : 10000;
        set_rcv_timeout(c->fd, head_to);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        bool ok = true;
        if (s->ssl_ctx) {
                c->ssl = SSL_new(s->ssl_ctx);
                ok = c->ssl && SSL_set_fd(c->ssl, c->fd) == 1 && SSL_accept(c->ssl) == 1;
                if (!ok)
                        ERR_clear_error();
        }
        while (ok && serve_one(c))
                ;
        if (c->ssl) {
                SSL_shutdown(c->ssl);
                SSL_free(c->ssl);
        }
        close(c->fd);
        free(c->buf);
        free(c);
        pthread_mutex_lock(&s->lock);
        s->active--;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        return NULL;
}

/* ---- the server ---- */

static int parse_listen(const char *listen, char *host, size_t hn, char *port, size_t pn)
{
        const char *colon;
        if (listen[0] == '[') {
                const char *end = strchr(listen, ']');
                if (!end || end[1] != ':')
                        return -EINVAL;
                snprintf(host, hn, "%.*s", (int)(end - listen - 1), listen + 1);
                colon = end + 1;
        } else {
                colon = strrchr(listen, ':');
                if (!colon)
                        return -EINVAL;
                snprintf(host, hn, "%.*s", (int)(colon - listen), listen);
        }
        if (!colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1) || strlen(colon + 1) > 5 ||
            atoi(colon + 1) > 65535)
                return -EINVAL;
        snprintf(port, pn, "%s", colon + 1);
        return 0;
}

int http_server_new(const struct http_server_opts *o, struct http_server **ret, struct berr **err)
{
        char host[256], port[8];
        if (!o->listen || !o->handler || parse_listen(o->listen, host, sizeof(host), port, sizeof(port)) < 0)
                return berr_set(err, -EINVAL, "invalid listen address \"%s\" (want HOST:PORT)",
                                o->listen ? o->listen : "");
        struct addrinfo hints = { .ai_family = AF_UNSPEC,
                                  .ai_socktype = SOCK_STREAM,
                                  .ai_flags = AI_PASSIVE },
                        *ai = NULL;
        int g = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
        if (g != 0)
                return berr_set(err, -EINVAL, "listen address %s: %s", o->listen, gai_strerror(g));
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd >= 0)
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 511) < 0) {
                int e = -errno;
                if (fd >= 0)
                        close(fd);
                freeaddrinfo(ai);
                return berr_set_errno(err, e, "listen on %s", o->listen);
        }
        freeaddrinfo(ai);
        struct http_server *s = xcalloc(1, sizeof(*s));
        s->o = *o;
        s->listen_fd = fd;
        s->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->cond, NULL);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
        if (o->tls_cert_file && o->tls_key_file) {
                s->ssl_ctx = SSL_CTX_new(TLS_server_method());
                if (!s->ssl_ctx || SSL_CTX_set_min_proto_version(s->ssl_ctx, TLS1_2_VERSION) != 1 ||
                    SSL_CTX_use_certificate_chain_file(s->ssl_ctx, o->tls_cert_file) != 1 ||
                    SSL_CTX_use_PrivateKey_file(s->ssl_ctx, o->tls_key_file, SSL_FILETYPE_PEM) != 1 ||
                    SSL_CTX_check_private_key(s->ssl_ctx) != 1) {
                        char e[256];
                        ERR_error_string_n(ERR_get_error(), e, sizeof(e));
                        http_server_free(s);
                        return berr_set(err, -EINVAL, "TLS certificate %s / key %s: %s", o->tls_cert_file,
                                        o->tls_key_file, e);
                }
        }
        *ret = s;
        return 0;
}

int http_server_port(const struct http_server *s)
{
        return s->port;
}

int http_server_run(struct http_server *s, struct berr **err)
{
        unsigned max = s->o.max_connections ? s->o.max_connections : 1024;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        int rc = 0;
        while (!s->stopping) {
                pthread_mutex_lock(&s->lock);
                while (s->active >= max && !s->stopping)
                        pthread_cond_wait(&s->cond, &s->lock);
                pthread_mutex_unlock(&s->lock);
                struct pollfd p[2] = { { .fd = s->listen_fd, .events = POLLIN },
                                       { .fd = s->stop_fd, .events = POLLIN } };
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        rc = berr_set_errno(err, -errno, "poll");
                        break;
                }
                if (p[1].revents & POLLIN)
                        break;
                struct sockaddr_storage ss;
                socklen_t sl = sizeof(ss);
                int fd = accept4(s->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE)
                                usleep(10000); /* let connections finish */
                        continue;
                }
                struct conn *c = xcalloc(1, sizeof(*c));
                c->s = s;
                c->fd = fd;
                char a[INET6_ADDRSTRLEN] = "?";
                int port = 0;
                if (ss.ss_family == AF_INET) {
                        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, a, sizeof(a));
                        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
                } else if (ss.ss_family == AF_INET6) {
                        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, a, sizeof(a));
                        port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
                }
                snprintf(c->peer, sizeof(c->peer), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", a, port);
                pthread_mutex_lock(&s->lock);
                s->active++;
                pthread_mutex_unlock(&s->lock);
                pthread_t t;
                if (pthread_create(&t, &attr, conn_thread, c) != 0) {
                        close(fd);
                        free(c);
                        pthread_mutex_lock(&s->lock);
                        s->active--;
                        pthread_mutex_unlock(&s->lock);
                }
        }
        pthread_attr_destroy(&attr);
        /* Drain: in-flight requests get up to 5 s; idle keep-alive connections see stop_fd and close. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        pthread_mutex_lock(&s->lock);
        while (s->active > 0)
                if (pthread_cond_timedwait(&s->cond, &s->lock, &until) == ETIMEDOUT)
                        break;
        pthread_mutex_unlock(&s->lock);
        return rc;
}

void http_server_stop(struct http_server *s)
{
        s->stopping = 1;
        uint64_t one = 1;
        if (write(s->stop_fd, &one, sizeof(one)) < 0) {
                /* the eventfd is already readable */
        }
        pthread_mutex_lock(&s->lock);
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
}

void http_server_free(struct http_server *s)
{
        if (!s)
                return;
        /* Connection threads still running (past the drain) hold s: wait for them, bounded. */
        for (int i = 0; i < 500; i++) {
                pthread_mutex_lock(&s->lock);
                unsigned a = s->active;
                pthread_mutex_unlock(&s->lock);
                if (!a)
                        break;
                usleep(10000);
        }
        close(s->listen_fd);
        close(s->stop_fd);
        if (s->ssl_ctx)
                SSL_CTX_free(s->ssl_ctx);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        free(s);
}
