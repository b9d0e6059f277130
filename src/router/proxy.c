/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The proxy: one epoll loop per worker thread, each with its own SO_REUSEPORT listener, so workers share
 * nothing but the route store. Sockets are non-blocking and registered once, edge-triggered, for input and
 * output; each handle keeps two readiness hints (rd, wr) that an event sets and an EAGAIN (or a short read)
 * clears, so that a connection is driven as far as it can go (client_run) without a system call that would
 * answer EAGAIN and without re-arming epoll per request. A connection that still had work when its run
 * reached its step bound is queued to run again before the next wait.
 *
 * A client connection owns at most one backend connection at a time. Bodies stream through two bounded
 * buffers (client → backend in `in`, backend → client in `uin`); framing (Content-Length or chunked, RFC
 * 9112 6) is tracked only to find where a message ends, the bytes are forwarded as they are. Backend
 * connections go back to a per-worker idle pool when the response was delimited and the backend keeps
 * the connection alive. After a 101 the two sockets are spliced byte for byte (WebSocket).
 *
 * Gorouter's behaviours (shared/reference/cloud-foundry-behaviour.md section 8): error bodies
 * "%d %s: %s\n" with X-Cf-Routererror, up to 3 attempts on dial failures with the failed endpoint skipped
 * for 30 s, X-Forwarded-For appended, X-Request-Start only if absent, X-Vcap-Request-Id always replaced,
 * X-CF-ApplicationID/InstanceIndex/InstanceID set from the endpoint.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lib/http.h"
#include "lib/log.h"
#include "router/router_internal.h"

#define PX_HEAD_MAX          (64 * 1024) /* request or response head (431 / 502 above) */
#define PX_TARGET_MAX        (8 * 1024)  /* request target (414 above) */
#define PX_IN_CAP            (PX_HEAD_MAX + 16 * 1024)
#define PX_UIN_CAP           (64 * 1024)
#define PX_OUT_MAX           (PX_HEAD_MAX + 8 * 1024) /* a rewritten head */
#define PX_MAX_CLIENTS       20000                    /* per worker */
#define PX_MAX_ATTEMPTS      3                        /* Gorouter's router.backends.max_attempts */
#define PX_POOL_PER_ENDPOINT 1024 /* idle connections kept per backend address and worker */
#define PX_POOL_MAX          8192 /* idle connections kept per worker */
#define PX_POOL_BUCKETS      1024
#define PX_POOL_IDLE_MS      60000
#define PX_POOL_FRESH_MS     1000 /* pooled connections idle less than this are taken without a peek */
#define PX_TICK_MS           100
#define PX_LISTEN_BACKLOG    65535 /* capped by the kernel at net.core.somaxconn (open_listener) */
#define RT_STICKY_MAX        64
#define PX_BUF_CACHE         32   /* per worker and size: a busy worker allocates no buffer per request */
#define PX_SMALL_CAP         1024 /* per-request buffers: rewritten heads, access log halves (longer: grown) */
#define PX_SMALL_CACHE       2048 /* per worker: three per request in flight */
#define PX_RUN_STEPS         64   /* steps of one connection's run before others get their turn */
#define PX_CONN_TOKENS       16   /* header names a Connection header may list that we honour */
#define PX_RANDOM_BYTES      4096

enum handle_kind { HK_LISTEN, HK_LISTEN_TLS, HK_EVENT, HK_CLIENT, HK_UPSTREAM };

struct handle {
        enum handle_kind kind;
        int fd;
        uint32_t mask; /* registered events; 0: not in epoll */
        bool dead;
        /*
         * A read may find bytes: epoll reported input since the last read that drained the socket (a short
         * read or EAGAIN). It saves the recv that would answer EAGAIN after most requests and responses.
         * Epoll is edge-triggered: a hint cleared while bytes or an EOF wait would stall the connection for
         * good, so a short read clears it only while no peer shutdown was reported (hup).
         */
        bool rd;
        bool hup; /* epoll reported the peer's shutdown (EPOLLRDHUP/EPOLLHUP): reads go on to the EOF */
        bool wr;  /* a write may make progress: no EAGAIN since the last output event */
};

struct buf {
        char *d;
        size_t cap, start, end;
};

struct worker;
struct client;

struct upstream {
        struct handle h; /* first member: epoll data points here */
        struct worker *w;
        struct client *owner; /* NULL while idle in the pool */
        struct sockaddr_storage addr;
        socklen_t addr_len;
        bool connected;
        bool reused;
        int64_t idle_since;
        struct upstream *next, *prev;   /* pool list, or the dead list */
        struct upstream *bnext, *bprev; /* the pool bucket of its address */
        unsigned bucket;
};

enum client_state {
        CS_HEAD,    /* reading a request head */
        CS_CONNECT, /* dialling a backend */
        CS_PROXY,   /* request and response streaming */
        CS_TUNNEL,  /* after a 101: raw bytes both ways */
        CS_RESPOND, /* writing a response of our own */
};

enum body_mode { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE };

struct client {
        struct handle h; /* first member */
        struct worker *w;
        struct client *next, *prev; /* the worker's list (or dead list) */
        char peer_ip[INET6_ADDRSTRLEN];
        SSL *ssl; /* TLS clients (the TLS listener): records in and out of the socket; NULL for plain */
        enum client_state st;
        int64_t deadline; /* monotonic ms, 0: none */
        struct buf in;    /* from the client */
        struct buf out;   /* heads and local responses to the client */
        struct buf uin;   /* from the backend */
        bool client_eof;
        bool close_after; /* close once the current response is written */
        /* The request. */
        bool req_head;
        bool req_safe; /* GET, HEAD, OPTIONS or TRACE: may be sent again (client_upstream_lost) */
        bool req_keep_alive;
        bool req_upgrade;
        int req_minor;
        enum body_mode req_mode;
        uint64_t req_remaining;
        struct http_chunked req_chunk;
        bool req_done;        /* every body byte approved for forwarding */
        size_t req_fwd;       /* approved bytes at in.start not yet written */
        uint64_t req_sent;    /* body bytes written to the backend */
        struct buf up_prefix; /* rewritten head without the endpoint headers (small buffer) */
        struct buf up_head;   /* the head for the current backend (small buffer) */
        size_t up_head_sent;
        /* Routing. */
        struct route_table *table; /* reference held while a request is routed */
        struct rt_route *route;
        int ep;
        int pin; /* X-CF-App-Instance: the only endpoint (index in route) this request may go to; -1: any */
        uint64_t tried;
        int attempts;
        struct upstream *up;
        /* The response. */
        bool resp_head_done;
        bool resp_started; /* bytes of the backend's response reached out */
        bool resp_keep_alive;
        enum body_mode resp_mode;
        uint64_t resp_remaining;
        struct http_chunked resp_chunk;
        bool resp_done;
        size_t resp_fwd;   /* approved bytes at uin.start not yet written */
        bool resp_dechunk; /* a chunked answer to an HTTP/1.0 client: its data only, ended by our close */
        bool up_eof;
        bool tunnel_c2u_shut, tunnel_u2c_shut;
        bool hup_seen; /* the client's shutdown was looked at for this request (client_gone) */
        /* Accounting of the current request. */
        struct rt_ep_stats *ep_st;  /* the endpoint it counts against (a reference), or NULL */
        char sticky[RT_STICKY_MAX]; /* the request's __VCAP_ID__ cookie, or "" */
        int status;                 /* the status sent to the client, 0: none yet */
        /*
         * The access log line's request half, in three parts: HOST - [TIME] "METHOD TARGET PROTO", then
         * "REFERER" "USER-AGENT" "CLIENT", then X-Forwarded-For as sent upstream (from the worker's cache;
         * d NULL: no line). acc_mid and acc_xff are where the second and the third part start.
         */
        struct buf acc;
        size_t acc_mid, acc_xff;
        char acc_id[37]; /* X-Vcap-Request-Id */
        char acc_time[40];
        uint64_t resp_bytes; /* response body bytes written to the client */
        uint16_t peer_port;
        int64_t t_start_us;   /* when its head was parsed */
        bool queued;          /* on the worker's again list */
        struct client *again; /* next on it */
};

struct proxy;

struct worker {
        struct proxy *p;
        pthread_t thread;
        bool started;
        int epfd;
        struct handle listen;
        struct handle listen_tls; /* fd -1 without TLS */
        struct handle event;
        struct client *clients; /* live connections */
        size_t n_clients;
        struct client *dead_clients;
        struct client *again;    /* connections whose run stopped at its step bound with work left */
        int64_t poll_idle_us;    /* busy polling's budget (worker_main): time in polls that found nothing */
        int64_t poll_work_us;    /* and time spent handling events, both halved every tick */
        int64_t answer_sent_us;  /* answer polling (worker_main): when a request last went to a backend, 0
                                    once a backend's answer has come in */
        int64_t answer_wait_us;  /* how long the answers took lately (a moving average over about 8) */
        bool answer_polled;      /* the worker has polled for the answer awaited now */
        struct router_metrics m; /* this worker's counters (read by the metrics thread) */
        struct access_queue aq;  /* access log lines for the shipper */
        /* Free request (PX_IN_CAP) and response (PX_UIN_CAP) buffers, kept for the next request. */
        char *cache_in[PX_BUF_CACHE], *cache_uin[PX_BUF_CACHE];
        size_t n_cache_in, n_cache_uin;
        char *cache_small[PX_SMALL_CACHE]; /* free access log request halves (PX_SMALL_CAP) */
        size_t n_cache_small;
        struct buf acc_line; /* where a finished request's access log line is put together */
        struct buf xff;      /* where a request's X-Forwarded-For value is put together */
        time_t acc_sec;      /* the second acc_sec_text spells (acc_sec_len 0: none yet) */
        char acc_sec_text[32];
        size_t acc_sec_len;
        struct upstream *pool; /* idle backend connections */
        size_t n_pool;
        struct upstream *pool_b[PX_POOL_BUCKETS]; /* the same, by address (most recently idle first) */
        unsigned pool_b_n[PX_POOL_BUCKETS];       /* how many on each of those lists */
        struct upstream *dead_ups;
        struct route_table *table; /* cached reference */
        uint64_t epoch;
        bool stopping;
        int64_t drain_deadline;
        struct http_head scratch;
        unsigned char kinds[HTTP_MAX_HEADERS]; /* the scratch head's fields' enum hdr_kind (head_kinds) */
        unsigned char rnd[PX_RANDOM_BYTES];
        size_t rnd_pos;
};

struct proxy {
        struct router_opts o;      /* borrowed strings */
        struct access_queue **aqs; /* each worker's, for the shipper */
        SSL_CTX **tls;             /* one per certificate; [0] answers names no certificate matches */
        size_t n_tls;
        char tls_address[INET6_ADDRSTRLEN + 8];
        struct route_store *store;
        struct worker *workers;
        unsigned n_workers;
        unsigned n_cpus; /* in the affinity mask at start; busy polling is off with more workers */
        char address[INET6_ADDRSTRLEN + 8];
};

/* ---- buffers ---- */

static void buf_release(struct buf *b)
{
        free(b->d);
        *b = (struct buf){ 0 };
}

/* The fixed-size buffers (client input, backend input) come from and go back to the worker's cache. */
static void wbuf_get(struct worker *w, struct buf *b, size_t cap)
{
        if (b->d)
                return;
        char **cache = cap == PX_IN_CAP ? w->cache_in : cap == PX_UIN_CAP ? w->cache_uin : w->cache_small;
        size_t *n = cap == PX_IN_CAP    ? &w->n_cache_in
                    : cap == PX_UIN_CAP ? &w->n_cache_uin
                                        : &w->n_cache_small;
        b->d = *n > 0 ? cache[--*n] : xmalloc(cap);
        b->cap = cap;
        b->start = b->end = 0;
}

static void wbuf_put(struct worker *w, struct buf *b)
{
        if (!b->d)
                return;
        bool acc = b->cap == PX_SMALL_CAP;
        char **cache = b->cap == PX_IN_CAP    ? w->cache_in
                       : b->cap == PX_UIN_CAP ? w->cache_uin
                                              : w->cache_small;
        size_t *n = b->cap == PX_IN_CAP    ? &w->n_cache_in
                    : b->cap == PX_UIN_CAP ? &w->n_cache_uin
                                           : &w->n_cache_small;
        if ((b->cap == PX_IN_CAP || b->cap == PX_UIN_CAP || acc) &&
            *n < (acc ? PX_SMALL_CACHE : PX_BUF_CACHE) && !w->stopping)
                cache[(*n)++] = b->d;
        else
                free(b->d);
        *b = (struct buf){ 0 };
}

static size_t buf_len(const struct buf *b)
{
        return b->end - b->start;
}

/* Make room at the end: reset when empty, slide the unread bytes down when the tail is full. */
static void buf_compact(struct buf *b)
{
        if (b->start == b->end)
                b->start = b->end = 0;
        else if (b->end == b->cap && b->start > 0) {
                memmove(b->d, b->d + b->start, b->end - b->start);
                b->end -= b->start;
                b->start = 0;
        }
}

static void buf_consume(struct buf *b, size_t n)
{
        b->start += n;
        if (b->start == b->end)
                b->start = b->end = 0;
}

/* Append to a growable output buffer (bounded by PX_OUT_MAX + the body of a local response). */
static void buf_append(struct buf *b, const void *data, size_t n)
{
        if (b->end + n > b->cap) {
                size_t cap = MAX(b->cap * 2, b->end + n);
                cap = MAX(cap, (size_t)1024);
                b->d = xrealloc(b->d, cap);
                b->cap = cap;
        }
        memcpy(b->d + b->end, data, n);
        b->end += n;
}

static void buf_appendf(struct buf *b, const char *fmt, ...) _printf_(2, 3);
static void buf_appendf(struct buf *b, const char *fmt, ...)
{
        char tmp[512];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if ((size_t)n < sizeof(tmp)) {
                buf_append(b, tmp, (size_t)n);
                return;
        }
        char *big = xmalloc((size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        buf_append(b, big, (size_t)n);
        free(big);
}

static void buf_header(struct buf *b, const char *name, size_t nl, const char *value, size_t vl)
{
        buf_append(b, name, nl);
        buf_append(b, ": ", 2);
        buf_append(b, value, vl);
        buf_append(b, "\r\n", 2);
}

/* Make room for n more bytes. */
static void buf_reserve(struct buf *b, size_t n)
{
        if (b->end + n > b->cap) {
                size_t cap = MAX(b->cap * 2, b->end + n);
                cap = MAX(cap, (size_t)1024);
                b->d = xrealloc(b->d, cap);
                b->cap = cap;
        }
}

/* Append v in decimal (what "%" PRIu64 prints, without printf's cost on the request path). */
static void buf_append_u64(struct buf *b, uint64_t v)
{
        char t[20];
        size_t i = sizeof(t);
        do {
                t[--i] = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        buf_append(b, t + i, sizeof(t) - i);
}

static void buf_append_int(struct buf *b, int64_t v)
{
        if (v < 0) {
                buf_append(b, "-", 1);
                buf_append_u64(b, (uint64_t)0 - (uint64_t)v);
        } else
                buf_append_u64(b, (uint64_t)v);
}

/* Append us microseconds in seconds with six decimals: what "%.6f" prints for us / 1e6. */
static void buf_append_secs(struct buf *b, int64_t us)
{
        if (us < 0)
                us = 0;
        buf_append_u64(b, (uint64_t)us / 1000000);
        char t[7] = ".";
        uint64_t f = (uint64_t)us % 1000000;
        for (int i = 6; i >= 1; i--) {
                t[i] = (char)('0' + f % 10);
                f /= 10;
        }
        buf_append(b, t, sizeof(t));
}

/* ---- epoll ---- */

static void handle_want(struct worker *w, struct handle *h, uint32_t mask)
{
        if (h->fd < 0 || h->mask == mask)
                return;
        struct epoll_event ev = { .events = mask, .data.ptr = h };
        int op = mask == 0 ? EPOLL_CTL_DEL : h->mask == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
        if (epoll_ctl(w->epfd, op, h->fd, &ev) < 0) {
                log_error("epoll_ctl fd %d: %s", h->fd, strerror(errno));
                return;
        }
        h->mask = mask;
}

/* Register a connection's socket (once): edge-triggered input, output and peer shutdown. */
#define PX_ET_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)
static void handle_arm(struct worker *w, struct handle *h)
{
        handle_want(w, h, PX_ET_EVENTS);
}

static void handle_close(struct worker *w, struct handle *h)
{
        if (h->fd >= 0) {
                handle_want(w, h, 0);
                close(h->fd);
                h->fd = -1;
        }
        h->dead = true;
}

/* ---- small helpers ---- */

static int64_t now_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A header value for the access log: at most max bytes, quotes and control bytes replaced, "-" if absent. */
static void acc_field(struct buf *b, const char *v, size_t len, size_t max)
{
        if (!v || len == 0) {
                buf_append(b, "-", 1);
                return;
        }
        len = MIN(len, max);
        buf_reserve(b, len);
        char *o = b->d + b->end;
        for (size_t i = 0; i < len; i++) {
                char ch = v[i];
                o[i] = (unsigned char)ch < 0x20 || ch == '"' || ch == '\\' || ch == 0x7f ? '?' : ch;
        }
        b->end += len;
}

/*
 * ts as RFC 3339 UTC with nanoseconds ("2026-11-28T21:01:02.123456789Z") into out (at least 32 bytes). The
 * date and time of day are formatted once a second per worker, the nanoseconds by hand.
 */
static void acc_time_format(struct worker *w, const struct timespec *ts, char *out)
{
        if (w->acc_sec_len == 0 || ts->tv_sec != w->acc_sec) {
                struct tm tm;
                gmtime_r(&ts->tv_sec, &tm);
                w->acc_sec_len = strftime(w->acc_sec_text, sizeof(w->acc_sec_text), "%Y-%m-%dT%H:%M:%S", &tm);
                w->acc_sec = ts->tv_sec;
        }
        memcpy(out, w->acc_sec_text, w->acc_sec_len);
        char *p = out + w->acc_sec_len;
        *p++ = '.';
        long ns = ts->tv_nsec;
        for (int i = 8; i >= 0; i--) {
                p[i] = (char)('0' + ns % 10);
                ns /= 10;
        }
        p[9] = 'Z';
        p[10] = '\0';
}

static void append_vcap_cookie(struct buf *b, const char *guid, const char *path,
                               const struct cookie_attrs *a)
{
        char v[RT_STICKY_MAX + RT_MAX_PATH + 256];
        int n = vcap_cookie_format(v, sizeof(v), guid, path, a);
        if (n > 0)
                buf_header(b, "Set-Cookie", 10, v, (size_t)n);
}

static void random_bytes(struct worker *w, unsigned char *out, size_t n)
{
        if (w->rnd_pos + n > sizeof(w->rnd)) {
                size_t got = 0;
                while (got < sizeof(w->rnd)) {
                        ssize_t k = getrandom(w->rnd + got, sizeof(w->rnd) - got, 0);
                        if (k < 0) {
                                if (errno == EINTR)
                                        continue;
                                abort(); /* the kernel has no randomness: nothing sensible to do */
                        }
                        got += (size_t)k;
                }
                w->rnd_pos = 0;
        }
        memcpy(out, w->rnd + w->rnd_pos, n);
        w->rnd_pos += n;
}

/* A version 4 UUID (RFC 9562) into out (37 bytes). */
static void uuid_v4(struct worker *w, char out[37])
{
        unsigned char u[16];
        random_bytes(w, u, sizeof(u));
        u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
        u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
        static const char hex[] = "0123456789abcdef";
        char *o = out;
        for (size_t i = 0; i < sizeof(u); i++) {
                if (i == 4 || i == 6 || i == 8 || i == 10)
                        *o++ = '-';
                *o++ = hex[u[i] >> 4];
                *o++ = hex[u[i] & 15];
        }
        *o = '\0';
}

/*
 * The header fields the router acts on. Each field of a head is told apart once (head_kinds), and every later
 * decision reads its kind instead of comparing its name again. HF_CONNECTION to HF_PROXY are hop-by-hop;
 * HF_X_VCAP_REQUEST_ID to HF_X_CF_PROCESS_INSTANCE are the router's to set (a client's are dropped).
 */
enum hdr_kind {
        HF_OTHER,
        HF_CONNECTION,
        HF_KEEP_ALIVE,
        HF_TE,
        HF_TRAILER,
        HF_UPGRADE,
        HF_PROXY, /* any "Proxy-*" field */
        HF_HOST,
        HF_COOKIE,
        HF_REFERER,
        HF_USER_AGENT,
        HF_XFF,
        HF_XFP,
        HF_X_REQUEST_START,
        HF_X_VCAP_REQUEST_ID,
        HF_X_CF_APPLICATIONID,
        HF_X_CF_INSTANCEINDEX,
        HF_X_CF_INSTANCEID,
        HF_X_CF_APP_INSTANCE,
        HF_X_CF_PROCESS_INSTANCE,
        HF_SET_COOKIE,
        HF_TRANSFER_ENCODING,
};

/* clang-format off */
#define HF(name, kind) { name, sizeof(name) - 1, kind }
/* clang-format on */
static const struct {
        const char *name;
        unsigned char len;
        unsigned char kind;
} hdr_kinds[] = {
        HF("Host", HF_HOST),
        HF("Connection", HF_CONNECTION),
        HF("Keep-Alive", HF_KEEP_ALIVE),
        HF("TE", HF_TE),
        HF("Trailer", HF_TRAILER),
        HF("Upgrade", HF_UPGRADE),
        HF("Cookie", HF_COOKIE),
        HF("Referer", HF_REFERER),
        HF("User-Agent", HF_USER_AGENT),
        HF("X-Forwarded-For", HF_XFF),
        HF("X-Forwarded-Proto", HF_XFP),
        HF("X-Request-Start", HF_X_REQUEST_START),
        HF("X-Vcap-Request-Id", HF_X_VCAP_REQUEST_ID),
        HF("X-CF-ApplicationID", HF_X_CF_APPLICATIONID),
        HF("X-CF-InstanceIndex", HF_X_CF_INSTANCEINDEX),
        HF("X-CF-InstanceID", HF_X_CF_INSTANCEID),
        HF("X-CF-App-Instance", HF_X_CF_APP_INSTANCE),
        HF("X-CF-Process-Instance", HF_X_CF_PROCESS_INSTANCE),
        HF("Set-Cookie", HF_SET_COOKIE),
        HF("Transfer-Encoding", HF_TRANSFER_ENCODING),
};
#undef HF

static enum hdr_kind hdr_kind(const struct http_header *h)
{
        for (size_t i = 0; i < sizeof(hdr_kinds) / sizeof(hdr_kinds[0]); i++)
                if (h->name_len == hdr_kinds[i].len &&
                    strncasecmp(h->name, hdr_kinds[i].name, h->name_len) == 0)
                        return (enum hdr_kind)hdr_kinds[i].kind;
        /* RFC 9110 7.6.1: hop-by-hop fields, never forwarded (Upgrade is re-added for an upgrade). */
        if (h->name_len >= 6 && strncasecmp(h->name, "Proxy-", 6) == 0)
                return HF_PROXY;
        return HF_OTHER;
}

static bool kind_hop_by_hop(unsigned char k)
{
        return k >= HF_CONNECTION && k <= HF_PROXY;
}

/* Fills kinds[i] with the kind of hd's header i. kinds has room for HTTP_MAX_HEADERS. */
static void head_kinds(const struct http_head *hd, unsigned char *kinds)
{
        for (size_t i = 0; i < hd->n_headers; i++)
                kinds[i] = (unsigned char)hdr_kind(&hd->headers[i]);
}

struct conn_tokens {
        const char *tok[PX_CONN_TOKENS];
        size_t len[PX_CONN_TOKENS];
        size_t n;
};

/* The field names listed by the Connection headers (RFC 9110 7.6.1), up to PX_CONN_TOKENS. */
static void conn_tokens_collect(const struct http_head *hd, const unsigned char *kinds,
                                struct conn_tokens *ct)
{
        ct->n = 0;
        for (size_t i = 0; i < hd->n_headers; i++) {
                if (kinds[i] != HF_CONNECTION)
                        continue;
                const struct http_header *h = &hd->headers[i];
                const char *p = h->value, *e = h->value + h->value_len;
                while (p < e && ct->n < PX_CONN_TOKENS) {
                        while (p < e && (*p == ',' || *p == ' ' || *p == '\t'))
                                p++;
                        const char *s = p;
                        while (p < e && *p != ',' && *p != ' ' && *p != '\t')
                                p++;
                        if (p > s) {
                                ct->tok[ct->n] = s;
                                ct->len[ct->n++] = (size_t)(p - s);
                        }
                }
        }
}

static bool conn_tokens_has(const struct conn_tokens *ct, const struct http_header *h)
{
        for (size_t i = 0; i < ct->n; i++)
                if (ct->len[i] == h->name_len && strncasecmp(ct->tok[i], h->name, h->name_len) == 0)
                        return true;
        return false;
}

static void http_date(char *out, size_t n)
{
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static void sockaddr_ip(const struct sockaddr_storage *ss, char *out, size_t n)
{
        if (ss->ss_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)n);
        else if (ss->ss_family == AF_INET6)
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out, (socklen_t)n);
        else
                snprintf(out, n, "unknown");
}

/* ---- backend connections ---- */

static void upstream_destroy(struct worker *w, struct upstream *u)
{
        if (u->h.fd >= 0)
                metrics_gauge(&w->m.open_backend_connections, -1);
        handle_close(w, &u->h);
        u->owner = NULL;
        u->next = w->dead_ups;
        u->prev = NULL;
        w->dead_ups = u;
}

static unsigned pool_bucket(const struct sockaddr_storage *a)
{
        const unsigned char *p;
        size_t n;
        uint16_t port;
        if (a->ss_family == AF_INET6) {
                const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)a;
                p = s6->sin6_addr.s6_addr, n = 16, port = s6->sin6_port;
        } else {
                const struct sockaddr_in *s4 = (const struct sockaddr_in *)a;
                p = (const unsigned char *)&s4->sin_addr, n = 4, port = s4->sin_port;
        }
        uint32_t h = 2166136261u;
        for (size_t i = 0; i < n; i++)
                h = (h ^ p[i]) * 16777619u;
        h = (h ^ (port & 0xff)) * 16777619u;
        h = (h ^ (port >> 8)) * 16777619u;
        return h % PX_POOL_BUCKETS;
}

static void pool_unlink(struct worker *w, struct upstream *u)
{
        if (u->bprev)
                u->bprev->bnext = u->bnext;
        else
                w->pool_b[u->bucket] = u->bnext;
        if (u->bnext)
                u->bnext->bprev = u->bprev;
        u->bnext = u->bprev = NULL;
        w->pool_b_n[u->bucket]--;
        if (u->prev)
                u->prev->next = u->next;
        else
                w->pool = u->next;
        if (u->next)
                u->next->prev = u->prev;
        u->next = u->prev = NULL;
        w->n_pool--;
}

static void pool_put(struct worker *w, struct upstream *u)
{
        unsigned b = pool_bucket(&u->addr);
        size_t same = 0;
        /*
         * Under the cap a bucket holds fewer than the cap of any one address: no walk. At it, the walk stops
         * at the cap (and then the connection is closed, which costs more than the walk).
         */
        if (w->pool_b_n[b] >= PX_POOL_PER_ENDPOINT)
                for (struct upstream *p = w->pool_b[b]; p && same < PX_POOL_PER_ENDPOINT; p = p->bnext)
                        if (p->addr_len == u->addr_len && memcmp(&p->addr, &u->addr, u->addr_len) == 0)
                                same++;
        if (same >= PX_POOL_PER_ENDPOINT || w->n_pool >= PX_POOL_MAX || w->stopping) {
                upstream_destroy(w, u);
                return;
        }
        u->owner = NULL;
        u->idle_since = router_now_ms();
        u->prev = NULL;
        u->next = w->pool;
        if (w->pool)
                w->pool->prev = u;
        w->pool = u;
        w->n_pool++;
        u->bucket = b;
        u->bprev = NULL;
        u->bnext = w->pool_b[b];
        if (u->bnext)
                u->bnext->bprev = u;
        w->pool_b[b] = u;
        w->pool_b_n[b]++;
        /* Input or a hang-up on an idle connection (the backend closed it, or sent junk) retires it. */
        handle_arm(w, &u->h);
}

/* An idle connection to addr that still looks open, or NULL. */
static struct upstream *pool_take(struct worker *w, const struct sockaddr_storage *addr, socklen_t len)
{
        for (struct upstream *u = w->pool_b[pool_bucket(addr)], *next; u; u = next) {
                next = u->bnext;
                if (u->addr_len != len || memcmp(&u->addr, addr, len) != 0)
                        continue;
                pool_unlink(w, u);
                /*
                 * A close the backend sent while the connection idled was retired by its epoll event; one
                 * that came since this batch's epoll_wait is caught here, for connections idle long enough
                 * for a backend's keep-alive timeout to matter (a body-less request that hits one anyway is
                 * retried on a fresh connection: client_upstream_lost).
                 */
                u->reused = true;
                u->h.rd = false;
                if (router_now_ms() - u->idle_since < PX_POOL_FRESH_MS)
                        return u;
                char b;
                ssize_t k = recv(u->h.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
                if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        return u;
                upstream_destroy(w, u);
        }
        return NULL;
}

/* ---- the client connection ---- */

static void client_run(struct client *c);

/*
 * Queue the Gorouter-style access log line of the request that ends (route and endpoint still held), put
 * together in the worker's line buffer without printf or an allocation.
 */
static void access_log_line(struct client *c, int64_t took_us)
{
        struct worker *w = c->w;
        const struct rt_endpoint *ep = c->ep >= 0 ? &c->route->eps[c->ep] : NULL;
        struct buf *l = &w->acc_line;
        const char *a = c->acc.d;
        l->start = l->end = 0;
        buf_append(l, a, c->acc_mid);
        buf_append(l, " ", 1);
        buf_append_int(l, c->status);
        buf_append(l, " ", 1);
        buf_append_u64(l, c->req_sent);
        buf_append(l, " ", 1);
        buf_append_u64(l, c->resp_bytes);
        buf_append(l, " ", 1);
        buf_append(l, a + c->acc_mid, c->acc_xff - c->acc_mid);
        buf_append(l, " \"", 2);
        if (ep) {
                bool v6 = strchr(ep->host, ':') != NULL;
                if (v6)
                        buf_append(l, "[", 1);
                buf_append(l, ep->host, strlen(ep->host));
                buf_append(l, v6 ? "]:" : ":", v6 ? 2 : 1);
                buf_append_u64(l, ep->port);
        } else
                buf_append(l, "-", 1);
        buf_append(l, "\" x_forwarded_for:\"", 19);
        buf_append(l, a + c->acc_xff, c->acc.end - c->acc_xff);
        buf_append(l, "\" x_forwarded_proto:\"", 21);
        buf_append(l, c->ssl ? "https" : "http", c->ssl ? 5 : 4);
        buf_append(l, "\" vcap_request_id:\"", 19);
        buf_append(l, c->acc_id, strlen(c->acc_id));
        buf_append(l, "\" response_time:", 16);
        buf_append_secs(l, took_us);
        buf_append(l, " gorouter_time:", 15);
        buf_append_secs(l, took_us);
        buf_append(l, " app_id:\"", 9);
        buf_append(l, c->route->app_guid, strlen(c->route->app_guid));
        buf_append(l, "\" app_index:\"", 13);
        buf_append_int(l, ep ? ep->index : -1);
        buf_append(l, "\" instance_id:\"", 15);
        if (ep && *ep->instance_guid)
                buf_append(l, ep->instance_guid, strlen(ep->instance_guid));
        else
                buf_append(l, "-", 1);
        buf_append(l, "\"", 1);
        access_queue_push(&w->aq, c->route->app_guid, c->acc_time, l->d, l->end);
}

/* Stop counting the current request against its endpoint. */
static void client_release_endpoint(struct client *c)
{
        if (!c->ep_st)
                return;
        atomic_fetch_sub_explicit(&c->ep_st->active, 1, memory_order_relaxed);
        rt_ep_stats_unref(c->ep_st);
        c->ep_st = NULL;
}

static void client_release_request(struct client *c)
{
        struct worker *w = c->w;
        client_release_endpoint(c);
        if (c->status) {
                int64_t took = now_us() - c->t_start_us;
                metrics_request(&w->m, c->status, took);
                if (c->acc.d && c->route)
                        access_log_line(c, took);
                c->status = 0;
        }
        wbuf_put(w, &c->acc);
        c->resp_bytes = 0;
        if (c->up) {
                upstream_destroy(w, c->up);
                c->up = NULL;
        }
        wbuf_put(w, &c->up_prefix);
        wbuf_put(w, &c->up_head);
        c->up_head_sent = 0;
        if (c->table)
                route_table_unref(c->table);
        c->table = NULL;
        c->route = NULL;
        wbuf_put(w, &c->uin);
}

static void client_close(struct client *c)
{
        struct worker *w = c->w;
        if (c->h.dead)
                return;
        client_release_request(c);
        if (c->ssl) {
                if (SSL_is_init_finished(c->ssl))
                        SSL_shutdown(c->ssl); /* best effort: a close_notify if the socket takes it */
                SSL_free(c->ssl);
                c->ssl = NULL;
        }
        handle_close(w, &c->h);
        metrics_gauge(&w->m.open_connections, -1);
        wbuf_put(w, &c->in);
        buf_release(&c->out);
        if (c->prev)
                c->prev->next = c->next;
        else
                w->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        w->n_clients--;
        c->prev = NULL;
        c->next = w->dead_clients;
        w->dead_clients = c;
}

/* Back to reading the next request on a kept-alive connection. */
static void client_reset(struct client *c)
{
        client_release_request(c);
        c->hup_seen = false;
        c->st = CS_HEAD;
        c->req_mode = BODY_NONE;
        c->req_done = false;
        c->req_fwd = 0;
        c->req_sent = 0;
        c->req_remaining = 0;
        memset(&c->req_chunk, 0, sizeof(c->req_chunk));
        c->tried = 0;
        c->attempts = 0;
        c->ep = -1;
        c->resp_head_done = c->resp_started = c->resp_done = c->resp_keep_alive = c->resp_dechunk = false;
        c->resp_mode = BODY_NONE;
        c->resp_remaining = 0;
        memset(&c->resp_chunk, 0, sizeof(c->resp_chunk));
        c->resp_fwd = 0;
        c->up_eof = false;
        c->deadline = router_now_ms() + c->w->p->o.idle_timeout_ms;
        if (buf_len(&c->in) == 0)
                wbuf_put(c->w, &c->in); /* an idle keep-alive connection holds no buffer */
}

/*
 * A response of our own: Gorouter's plain-text error writer (errorwriter/error_writer.go), body
 * "%d %s: %s\n", with X-Cf-Routererror and Cache-Control when given (NULL: none).
 */
static void client_respond(struct client *c, int status, const char *router_error, const char *cache_control,
                           const char *msg)
{
        struct worker *w = c->w;
        char date[64];
        http_date(date, sizeof(date));
        if (c->req_mode != BODY_NONE && !c->req_done)
                c->close_after = true; /* the body is not drained: the connection cannot be reused */
        if (w->stopping)
                c->close_after = true;
        c->status = status;
        char body[1024];
        int bl = snprintf(body, sizeof(body), "%d %s: %s\n", status, http_reason(status), msg);
        if (bl < 0 || (size_t)bl >= sizeof(body))
                bl = (int)strlen(body);
        buf_appendf(&c->out,
                    "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    "X-Content-Type-Options: nosniff\r\nDate: %s\r\nContent-Length: %d\r\n",
                    status, http_reason(status), date, bl);
        if (router_error)
                buf_appendf(&c->out, "X-Cf-Routererror: %s\r\n", router_error);
        if (cache_control)
                buf_appendf(&c->out, "Cache-Control: %s\r\n", cache_control);
        if (c->close_after)
                buf_append(&c->out, "Connection: close\r\n", 19);
        buf_append(&c->out, "\r\n", 2);
        if (!c->req_head)
                buf_append(&c->out, body, (size_t)bl);
        if (c->up) {
                upstream_destroy(w, c->up);
                c->up = NULL;
        }
        c->st = CS_RESPOND;
        c->deadline = router_now_ms() + w->p->o.idle_timeout_ms;
}

static void client_respond_bad_gateway(struct client *c)
{
        client_respond(c, 502, "endpoint_failure", NULL, "Registered endpoint failed to handle the request.");
}

static void refresh_table(struct worker *w)
{
        uint64_t e = atomic_load_explicit(&w->p->store->epoch, memory_order_acquire);
        if (e == w->epoch && w->table)
                return;
        struct route_table *t = route_store_get(w->p->store);
        if (w->table)
                route_table_unref(w->table);
        w->table = t;
        w->epoch = e;
}

/* The request head for the chosen endpoint: the common prefix plus the X-CF-* headers. */
static void build_up_head(struct client *c, const struct rt_endpoint *ep)
{
        struct buf *b = &c->up_head;
        wbuf_get(c->w, b, PX_SMALL_CAP);
        b->start = b->end = 0;
        buf_append(b, c->up_prefix.d, c->up_prefix.end);
        buf_header(b, "X-CF-ApplicationID", 18, c->route->app_guid, strlen(c->route->app_guid));
        buf_append(b, "X-CF-InstanceIndex: ", 20);
        buf_append_int(b, ep->index);
        buf_append(b, "\r\n", 2);
        if (*ep->instance_guid)
                buf_header(b, "X-CF-InstanceID", 15, ep->instance_guid, strlen(ep->instance_guid));
        else
                buf_appendf(b, "X-CF-InstanceID: %s:%u\r\n", ep->host, ep->port);
        if (c->req_upgrade)
                buf_append(b, "Connection: Upgrade\r\n", 21);
        buf_append(b, "\r\n", 2);
        c->up_head_sent = 0;
}

static void client_connect(struct client *c);

/* A dial to the current endpoint failed: mark it and try another, or answer 502. */
static void client_dial_failed(struct client *c, int error)
{
        struct rt_endpoint *ep = &c->route->eps[c->ep];
        log_warn("endpoint %s:%u of %s failed: %s", ep->host, ep->port, c->route->host, strerror(error));
        metrics_add(&c->w->m.backend_errors, 1);
        route_mark_failed(ep, router_now_ms());
        if (c->up) {
                upstream_destroy(c->w, c->up);
                c->up = NULL;
        }
        if (c->attempts >= PX_MAX_ATTEMPTS) {
                client_respond_bad_gateway(c);
                return;
        }
        client_connect(c);
}

/* Pick the next endpoint and open (or reuse) a connection to it. */
static void client_connect(struct client *c)
{
        struct worker *w = c->w;
        int64_t now = router_now_ms();
        const struct router_opts *o = &w->p->o;
        int i = c->pin >= 0 ? route_pick_only(c->route, c->pin, o->backend_max_conns, c->tried)
                            : route_pick(c->route, o->balance, o->backend_max_conns,
                                         c->attempts ? NULL : c->sticky, now, c->tried);
        if (i == RT_PICK_LIMIT && c->attempts == 0) {
                char msg[RT_MAX_HOST + 64];
                snprintf(msg, sizeof(msg), "Requested route ('%s') has reached the connection limit.",
                         c->route->host);
                client_respond(c, 503, "Connection Limit Reached", NULL, msg);
                return;
        }
        if (i < 0) {
                client_respond_bad_gateway(c);
                return;
        }
        c->ep = i;
        client_release_endpoint(c);
        c->ep_st = c->route->eps[i].st;
        atomic_fetch_add_explicit(&c->ep_st->refs, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&c->ep_st->active, 1, memory_order_relaxed);
        c->up_eof = false;
        if (i < 64)
                c->tried |= 1ULL << i;
        c->attempts++;
        struct rt_endpoint *ep = &c->route->eps[i];
        build_up_head(c, ep);
        struct upstream *u = pool_take(w, &ep->addr, ep->addr_len);
        if (u) {
                u->owner = c;
                c->up = u;
                c->st = CS_PROXY;
                c->deadline = now + w->p->o.request_timeout_ms;
                return;
        }
        int fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                int e = errno;
                log_error("socket: %s", strerror(e));
                client_respond_bad_gateway(c);
                return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        u = xcalloc(1, sizeof(*u));
        u->h = (struct handle){ .kind = HK_UPSTREAM, .fd = fd };
        metrics_gauge(&w->m.open_backend_connections, 1);
        u->w = w;
        u->owner = c;
        u->addr = ep->addr;
        u->addr_len = ep->addr_len;
        c->up = u;
        if (connect(fd, (const struct sockaddr *)&ep->addr, ep->addr_len) < 0 && errno != EINPROGRESS) {
                client_dial_failed(c, errno);
                return;
        }
        c->st = CS_CONNECT;
        c->deadline = now + w->p->o.dial_timeout_ms;
}

/* Whether v is GUID:INDEX as Gorouter takes it: a lowercase UUID, ':', then decimal digits (*ret_index). */
static bool instance_header_parse(const char *v, size_t len, int *ret_index)
{
        static const char shape[] = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx:";
        size_t sl = sizeof(shape) - 1;
        if (len <= sl || len > sl + 9)
                return false;
        for (size_t i = 0; i < sl; i++) {
                bool hex = (v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f');
                if (shape[i] == 'x' ? !hex : v[i] != shape[i])
                        return false;
        }
        int n = 0;
        for (size_t i = sl; i < len; i++) {
                if (v[i] < '0' || v[i] > '9')
                        return false;
                n = n * 10 + (v[i] - '0');
        }
        *ret_index = n;
        return true;
}

/*
 * Gorouter's app instance routing (handlers/lookup.go): X-CF-App-Instance (or X-CF-Process-Instance; an app's
 * web process has the app's guid) "GUID:INDEX" sends the request to that instance of the route's app and no
 * other. A value not of that form is 400 invalid_cf_app_instance_header; an instance the route does not have
 * is 400 unknown_route. pin is the first such header (NULL: none), process whether it is
 * X-CF-Process-Instance. Returns the endpoint's index in rt, -1 without the header, or -2 once it answered.
 */
static int client_instance_pin(struct client *c, const struct http_header *pin, bool process,
                               const struct rt_route *rt, const char *host)
{
        if (!pin)
                return -1;
        int index = 0;
        if (!instance_header_parse(pin->value, pin->value_len, &index)) {
                client_respond(c, 400, "invalid_cf_app_instance_header", NULL,
                               process ? "Invalid X-CF-Process-Instance Header"
                                       : "Invalid X-CF-App-Instance Header");
                return -2;
        }
        size_t gl = 36;
        if (strlen(rt->app_guid) == gl && memcmp(rt->app_guid, pin->value, gl) == 0)
                for (size_t i = 0; i < rt->n_eps; i++)
                        if (rt->eps[i].index == index)
                                return (int)i;
        char msg[RT_MAX_HOST + 160];
        snprintf(msg, sizeof(msg),
                 "Requested instance ('%d') with guid ('%.36s') does not exist for route ('%s')", index,
                 pin->value, host);
        client_respond(c, 400, "unknown_route", "no-cache, no-store", msg);
        return -2;
}

/*
 * An absolute-form target (RFC 9112 3.2.2: "http://example.com:8080/path?q"): sets *auth to its authority and
 * *path to the rest (possibly empty, or starting with '?'). Returns false for any other form.
 */
static bool target_absolute(const char *t, size_t n, const char **auth, size_t *auth_len, const char **path,
                            size_t *path_len)
{
        size_t s = n >= 7 && strncasecmp(t, "http://", 7) == 0    ? 7
                   : n >= 8 && strncasecmp(t, "https://", 8) == 0 ? 8
                                                                  : 0;
        if (s == 0)
                return false;
        size_t e = s;
        while (e < n && t[e] != '/' && t[e] != '?' && t[e] != '#')
                e++;
        *auth = t + s;
        *auth_len = e - s;
        *path = t + e;
        *path_len = n - e;
        return true;
}

/* Build the request for the backend from the parsed head h and route it. */
static void client_dispatch(struct client *c, const struct http_head *h)
{
        struct worker *w = c->w;
        c->t_start_us = now_us();
        c->req_head = h->method_len == 4 && memcmp(h->method, "HEAD", 4) == 0;
        c->req_safe = c->req_head || (h->method_len == 3 && memcmp(h->method, "GET", 3) == 0) ||
                      (h->method_len == 7 && memcmp(h->method, "OPTIONS", 7) == 0) ||
                      (h->method_len == 5 && memcmp(h->method, "TRACE", 5) == 0);
        c->req_keep_alive = h->keep_alive && !w->stopping;
        c->close_after = !c->req_keep_alive;
        c->req_upgrade = h->upgrade;
        c->req_minor = h->minor_version;
        if (h->chunked)
                c->req_mode = BODY_CHUNKED;
        else if (h->content_length > 0) {
                c->req_mode = BODY_LENGTH;
                c->req_remaining = (uint64_t)h->content_length;
        } else
                c->req_mode = BODY_NONE;
        c->req_done = c->req_mode == BODY_NONE;

        /*
         * An absolute-form target names the host: the request is routed by its authority, not by the Host
         * header, and goes to the backend in origin-form with the authority as its Host (RFC 9112 3.2.2; Go's
         * server, and so Gorouter, and nginx do the same). HTTP/1.1 still needs a Host header (as Go's
         * server).
         */
        const char *target = h->target, *hostv = h->host, *auth = NULL;
        size_t target_len = h->target_len, hostv_len = h->host_len, auth_len = 0;
        if (target_absolute(h->target, h->target_len, &auth, &auth_len, &target, &target_len)) {
                if (memchr(auth, '@', auth_len)) {
                        client_respond(c, 400, NULL, NULL, "Invalid request");
                        return;
                }
                if (h->host || h->minor_version == 0)
                        hostv = auth, hostv_len = auth_len;
        }
        /* The target sent on, and logged: origin-form ("/" before an absolute-form's empty path or query). */
        bool slash = auth && (target_len == 0 || target[0] != '/');

        /* Gorouter (handlers/lookup.go): an empty Host, or one equal to the client's IP, is 400. */
        char host[RT_MAX_HOST + 1];
        int hl = hostv ? route_host_normalize(hostv, hostv_len, host, sizeof(host)) : -1;
        if (hl > 0 && strcmp(host, c->peer_ip) == 0)
                hl = -1;
        if (hl < 0) {
                client_respond(c, 400, "empty_host", NULL, "Request had empty Host header");
                return;
        }
        refresh_table(w);
        struct rt_route *rt = (struct rt_route *)route_table_lookup(
            w->table, host, (size_t)hl, slash ? "/" : target, slash ? 1 : target_len);
        if (!rt) {
                char msg[RT_MAX_HOST + 64];
                snprintf(msg, sizeof(msg), "Requested route ('%s') does not exist.", host);
                client_respond(c, 404, "unknown_route", "no-cache, no-store", msg);
                return;
        }
        /* One pass tells the fields apart; the ones looked for by name are noted on the way. */
        unsigned char *kinds = w->kinds;
        const struct http_header *pin = NULL, *ref = NULL, *ua = NULL;
        bool pin_process = false;
        for (size_t i = 0; i < h->n_headers; i++) {
                kinds[i] = (unsigned char)hdr_kind(&h->headers[i]);
                if (kinds[i] == HF_REFERER)
                        ref = &h->headers[i];
                else if (kinds[i] == HF_USER_AGENT)
                        ua = &h->headers[i];
                else if ((kinds[i] == HF_X_CF_APP_INSTANCE || kinds[i] == HF_X_CF_PROCESS_INSTANCE) && !pin) {
                        pin = &h->headers[i];
                        pin_process = kinds[i] == HF_X_CF_PROCESS_INSTANCE;
                }
        }
        if ((c->pin = client_instance_pin(c, pin, pin_process, rt, host)) == -2)
                return;
        if (rt->n_eps == 0) {
                char msg[RT_MAX_HOST + 64];
                snprintf(msg, sizeof(msg), "Requested route ('%s') has no available endpoints.", host);
                client_respond(c, 503, "no_endpoints", "public,max-age=2", msg);
                return;
        }
        c->table = route_table_ref(w->table);
        c->route = rt;

        struct conn_tokens ct;
        conn_tokens_collect(h, kinds, &ct);
        struct buf *b = &c->up_prefix;
        wbuf_get(w, b, PX_SMALL_CAP);
        b->start = b->end = 0;
        /* An HTTP/1.0 client gets an HTTP/1.0 request upstream, so the backend does not answer chunked. */
        buf_append(b, h->method, h->method_len);
        buf_append(b, slash ? " /" : " ", slash ? 2 : 1);
        buf_append(b, target, target_len);
        buf_append(b, h->minor_version == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n", 11);
        if (auth)
                buf_header(b, "Host", 4, auth, auth_len);
        const struct http_header *xff = NULL;
        struct buf *xffv = &w->xff; /* the X-Forwarded-For value sent, also for the access log */
        xffv->start = xffv->end = 0;
        bool have_proto = false, have_start = false;
        for (size_t i = 0; i < h->n_headers; i++) {
                const struct http_header *hh = &h->headers[i];
                unsigned char k = kinds[i];
                if (k == HF_UPGRADE && c->req_upgrade) {
                        buf_header(b, hh->name, hh->name_len, hh->value, hh->value_len);
                        continue;
                }
                if (kind_hop_by_hop(k) || conn_tokens_has(&ct, hh) || (auth && k == HF_HOST))
                        continue;
                if (k == HF_XFF) {
                        /* Several X-Forwarded-For lines are joined, as Go's SetXForwarded does. */
                        if (xff)
                                buf_append(xffv, ", ", 2);
                        buf_append(xffv, hh->value, hh->value_len);
                        xff = hh;
                        continue;
                }
                if (k >= HF_X_VCAP_REQUEST_ID && k <= HF_X_CF_PROCESS_INSTANCE)
                        continue; /* the router's to set (enum hdr_kind) */
                if (k == HF_COOKIE)
                        cookie_value(hh->value, hh->value_len, "__VCAP_ID__", c->sticky, sizeof(c->sticky));
                else if (k == HF_XFP)
                        have_proto = true;
                else if (k == HF_X_REQUEST_START)
                        have_start = true;
                buf_header(b, hh->name, hh->name_len, hh->value, hh->value_len);
        }
        if (xffv->end > 0)
                buf_append(xffv, ", ", 2);
        buf_append(xffv, c->peer_ip, strlen(c->peer_ip));
        buf_header(b, "X-Forwarded-For", 15, xffv->d, xffv->end);
        if (!have_proto)
                buf_header(b, "X-Forwarded-Proto", 17, c->ssl ? "https" : "http", c->ssl ? 5 : 4);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        if (!have_start) {
                buf_append(b, "X-Request-Start: ", 17);
                buf_append_int(b, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
                buf_append(b, "\r\n", 2);
        }
        char uuid[37];
        uuid_v4(w, uuid);
        buf_header(b, "X-Vcap-Request-Id", 17, uuid, 36);
        if (*rt->app_guid) {
                /* The access log line's request half. */
                struct buf *a = &c->acc;
                wbuf_get(w, a, PX_SMALL_CAP);
                a->start = a->end = 0;
                acc_time_format(w, &now, c->acc_time);
                buf_append(a, host, (size_t)hl);
                buf_append(a, " - [", 4);
                buf_append(a, c->acc_time, strlen(c->acc_time));
                buf_append(a, "] \"", 3);
                acc_field(a, h->method, h->method_len, 32);
                buf_append(a, " ", 1);
                if (slash)
                        buf_append(a, "/", 1);
                acc_field(a, target, target_len, 1024);
                buf_append(a, " HTTP/1.", 8);
                buf_append_int(a, h->minor_version);
                buf_append(a, "\"", 1);
                c->acc_mid = a->end;
                buf_append(a, "\"", 1);
                acc_field(a, ref ? ref->value : NULL, ref ? ref->value_len : 0, 512);
                buf_append(a, "\" \"", 3);
                acc_field(a, ua ? ua->value : NULL, ua ? ua->value_len : 0, 512);
                buf_append(a, "\" \"", 3);
                buf_append(a, c->peer_ip, strlen(c->peer_ip));
                buf_append(a, ":", 1);
                buf_append_u64(a, c->peer_port);
                buf_append(a, "\"", 1);
                c->acc_xff = a->end;
                acc_field(a, xffv->d, xffv->end, 512);
                memcpy(c->acc_id, uuid, sizeof(c->acc_id));
        }
        wbuf_get(w, &c->uin, PX_UIN_CAP);
        client_connect(c);
}

/* CS_HEAD: parse what we have. Returns true if the state changed. */
static bool client_parse_head(struct client *c)
{
        struct worker *w = c->w;
        if (buf_len(&c->in) == 0)
                return false;
        if (c->deadline == 0 || c->deadline > router_now_ms() + (int64_t)w->p->o.head_timeout_ms)
                /* The head timeout counts from its first byte (slowloris). */
                c->deadline = router_now_ms() + w->p->o.head_timeout_ms;
        struct http_limits lim = { .max_head_bytes = PX_HEAD_MAX, .max_target_bytes = PX_TARGET_MAX };
        struct http_head *h = &w->scratch;
        ssize_t r = http_parse_request(c->in.d + c->in.start, buf_len(&c->in), &lim, h);
        if (r == HTTP_PARSE_INCOMPLETE)
                return false;
        if (r < 0) {
                int status = r == HTTP_PARSE_TOO_LARGE      ? 431
                             : r == HTTP_PARSE_URI_TOO_LONG ? 414
                             : r == HTTP_PARSE_VERSION      ? 505
                                                            : 400;
                c->close_after = true;
                c->req_head = false;
                client_respond(c, status, NULL, NULL, "Invalid request");
                return true;
        }
        /* The head's pointers are into c->in; dispatch copies what it needs before consuming it. */
        client_dispatch(c, h);
        buf_consume(&c->in, (size_t)r);
        return true;
}

/* Approve request body bytes in c->in for forwarding, per the framing. */
static int client_frame_request(struct client *c)
{
        if (c->st == CS_TUNNEL) {
                c->req_fwd = buf_len(&c->in);
                return 0;
        }
        if (c->req_done || c->req_mode == BODY_NONE || (c->st != CS_CONNECT && c->st != CS_PROXY))
                return 0;
        size_t avail = buf_len(&c->in) - c->req_fwd;
        if (avail == 0)
                return 0;
        if (c->req_mode == BODY_LENGTH) {
                size_t n = (size_t)MIN((uint64_t)avail, c->req_remaining);
                c->req_fwd += n;
                c->req_remaining -= n;
                c->req_done = c->req_remaining == 0;
                return 0;
        }
        const char *p = c->in.d + c->in.start + c->req_fwd;
        while (avail > 0) {
                size_t used = 0, doff = 0, dlen = 0;
                int r = http_chunked_decode(&c->req_chunk, p, avail, &used, &doff, &dlen);
                if (r < 0)
                        return -EBADMSG;
                c->req_fwd += used;
                p += used;
                avail -= used;
                if (r == 1) {
                        c->req_done = true;
                        break;
                }
                if (used == 0)
                        break;
        }
        return 0;
}

/* Approve response body bytes in c->uin for forwarding. */
static int client_frame_response(struct client *c)
{
        if (c->resp_done && c->st != CS_TUNNEL)
                return 0;
        size_t avail = buf_len(&c->uin) - c->resp_fwd;
        if (avail == 0)
                return 0;
        if (c->st == CS_TUNNEL || c->resp_mode == BODY_CLOSE) {
                c->resp_fwd += avail;
                return 0;
        }
        if (c->resp_mode == BODY_LENGTH) {
                size_t n = (size_t)MIN((uint64_t)avail, c->resp_remaining);
                c->resp_fwd += n;
                c->resp_remaining -= n;
                c->resp_done = c->resp_remaining == 0;
                return 0;
        }
        if (c->resp_mode == BODY_CHUNKED) {
                /*
                 * One pass over the new bytes, approving them up to the last chunk. De-chunking for an
                 * HTTP/1.0 client, chunk data moves down over the framing before it instead (wr <= rd
                 * throughout; the decoder keeps a chunk line cut short in its state), anything after the
                 * last chunk follows it, and the buffer ends that much framing earlier.
                 */
                char *base = c->uin.d + c->uin.start;
                size_t rd = c->resp_fwd, wr = c->resp_fwd, end = buf_len(&c->uin);
                while (rd < end) {
                        size_t used = 0, doff = 0, dlen = 0;
                        int r = http_chunked_decode(&c->resp_chunk, base + rd, end - rd, &used, &doff, &dlen);
                        if (r < 0)
                                return -EBADMSG;
                        if (c->resp_dechunk) {
                                memmove(base + wr, base + rd + doff, dlen);
                                wr += dlen;
                        } else {
                                wr = rd + used;
                        }
                        rd += used;
                        if (r == 1)
                                c->resp_done = true;
                        if (r == 1 || used == 0)
                                break;
                }
                if (c->resp_dechunk) {
                        memmove(base + wr, base + rd, end - rd);
                        c->uin.end -= rd - wr;
                }
                c->resp_fwd = wr;
        }
        return 0;
}

/*
 * Parse the backend's response head (and interim 1xx heads). Returns < 0 on a malformed response, or a 101 to
 * a request that asked for no upgrade.
 */
static int client_parse_response(struct client *c)
{
        struct worker *w = c->w;
        while (!c->resp_head_done && buf_len(&c->uin) > 0) {
                struct http_limits lim = { .max_head_bytes = PX_HEAD_MAX };
                struct http_head *h = &w->scratch;
                ssize_t r = http_parse_response(c->uin.d + c->uin.start, buf_len(&c->uin), &lim, h);
                if (r == HTTP_PARSE_INCOMPLETE) {
                        if (buf_len(&c->uin) >= c->uin.cap)
                                return -E2BIG;
                        return 0;
                }
                if (r < 0)
                        return r == HTTP_PARSE_TOO_LARGE ? -E2BIG : -EBADMSG;
                bool tunnel = h->status == 101 && c->req_upgrade;
                if (h->status == 101 && !tunnel)
                        return -EPROTO; /* switching protocols unasked (Go's ReverseProxy: 502 too) */
                if (h->status >= 100 && h->status < 200 && !tunnel) {
                        /*
                         * Interim responses (100 Continue, 103) go through as they are, except to an HTTP/1.0
                         * client, which must not get one (RFC 9110, 15.2).
                         */
                        if (c->req_minor > 0) {
                                buf_append(&c->out, c->uin.d + c->uin.start, (size_t)r);
                                c->resp_started = true;
                        }
                        buf_consume(&c->uin, (size_t)r);
                        continue;
                }
                unsigned char *kinds = w->kinds;
                head_kinds(h, kinds);
                struct conn_tokens ct;
                conn_tokens_collect(h, kinds, &ct);
                if (tunnel) {
                        c->resp_mode = BODY_CLOSE;
                } else if (c->req_head || h->status == 204 || h->status == 304) {
                        c->resp_mode = BODY_NONE;
                } else if (h->chunked) {
                        /* Chunked to an HTTP/1.0 request breaks RFC 9112 6.1; its client gets the data. */
                        c->resp_mode = BODY_CHUNKED;
                        c->resp_dechunk = c->req_minor == 0;
                } else if (h->content_length >= 0) {
                        c->resp_mode = BODY_LENGTH;
                        c->resp_remaining = (uint64_t)h->content_length;
                } else {
                        c->resp_mode = BODY_CLOSE;
                }
                c->resp_keep_alive = h->keep_alive && c->resp_mode != BODY_CLOSE && !tunnel;
                /*
                 * An answer before the whole request body (a 401 or 413 to an Expect: 100-continue, say) ends
                 * the connection once written: the rest of the body may never come. Say so in its head.
                 */
                if (c->resp_mode == BODY_CLOSE || c->resp_dechunk || w->stopping ||
                    (c->req_mode != BODY_NONE && !c->req_done && !tunnel))
                        c->close_after = true;
                c->status = h->status;
                const struct rt_endpoint *ep = &c->route->eps[c->ep];
                bool vcap = c->sticky[0] && strcmp(c->sticky, ep->instance_guid) != 0;
                struct cookie_attrs ca = { 0 };
                buf_append(&c->out, "HTTP/1.1 ", 9);
                buf_append_int(&c->out, h->status);
                buf_append(&c->out, " ", 1);
                buf_append(&c->out, h->reason, h->reason_len);
                buf_append(&c->out, "\r\n", 2);
                for (size_t i = 0; i < h->n_headers; i++) {
                        const struct http_header *hh = &h->headers[i];
                        unsigned char k = kinds[i];
                        if (tunnel && k == HF_UPGRADE) {
                                buf_header(&c->out, hh->name, hh->name_len, hh->value, hh->value_len);
                                continue;
                        }
                        if (kind_hop_by_hop(k) || conn_tokens_has(&ct, hh) ||
                            (c->resp_dechunk && k == HF_TRANSFER_ENCODING))
                                continue;
                        if (k == HF_SET_COOKIE && set_cookie_is(hh->value, hh->value_len, "JSESSIONID")) {
                                vcap = true;
                                set_cookie_attrs(hh->value, hh->value_len, &ca);
                        }
                        buf_header(&c->out, hh->name, hh->name_len, hh->value, hh->value_len);
                }
                if (vcap && *ep->instance_guid)
                        append_vcap_cookie(&c->out, ep->instance_guid, c->route->path, &ca);
                if (tunnel)
                        buf_append(&c->out, "Connection: Upgrade\r\n", 21);
                else if (c->close_after)
                        buf_append(&c->out, "Connection: close\r\n", 19);
                else if (c->req_minor == 0)
                        buf_append(&c->out, "Connection: keep-alive\r\n", 24);
                buf_append(&c->out, "\r\n", 2);
                buf_consume(&c->uin, (size_t)r);
                c->resp_head_done = true;
                c->resp_started = true;
                c->resp_done =
                    c->resp_mode == BODY_NONE || (c->resp_mode == BODY_LENGTH && c->resp_remaining == 0);
                if (tunnel) {
                        c->st = CS_TUNNEL;
                        c->deadline = 0; /* no request timeout on upgraded connections (Gorouter) */
                        c->req_done = true;
                        c->req_fwd = buf_len(&c->in);
                }
        }
        return 0;
}

enum io_result { IO_AGAIN, IO_PROGRESS, IO_EOF, IO_ERROR };

/*
 * A plain HTTP request on the TLS port (OpenSSL saw "GET " where a handshake belongs): answer it in plain
 * text with what went wrong, as Go's server (so Gorouter) and nginx do, rather than a reset. What the client
 * sent is read first (up to 64 KiB), so that closing does not reset the connection under the answer.
 */
static void tls_plain_http_answer(int fd)
{
        static const char msg[] = "400 Bad Request: Client sent an HTTP request to an HTTPS server.\n";
        char ans[256], sink[4096];
        int n = snprintf(ans, sizeof(ans),
                         "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                         sizeof(msg) - 1, msg);
        for (int i = 0; i < 16 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
                ;
        (void)send(fd, ans, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
        shutdown(fd, SHUT_WR);
}

/* TLS: one SSL_read (which may also run the handshake); the hints follow what OpenSSL wants. */
static enum io_result tls_read_into(struct handle *h, SSL *ssl, struct buf *b, int *ret_errno)
{
        size_t room = b->cap - b->end;
        ERR_clear_error();
        int k = SSL_read(ssl, b->d + b->end, (int)MIN(room, (size_t)INT32_MAX));
        if (k > 0) {
                /* Records may wait in the socket or in OpenSSL: no short-read shortcut, read to WANT_READ. */
                b->end += (size_t)k;
                return IO_PROGRESS;
        }
        switch (SSL_get_error(ssl, k)) {
        case SSL_ERROR_WANT_READ:
                h->rd = false;
                return IO_AGAIN;
        case SSL_ERROR_WANT_WRITE:
                h->wr = false;
                return IO_AGAIN;
        case SSL_ERROR_ZERO_RETURN:
                return IO_EOF;
        default:
                if (!SSL_is_init_finished(ssl) && ERR_GET_LIB(ERR_peek_error()) == ERR_LIB_SSL &&
                    ERR_GET_REASON(ERR_peek_error()) == SSL_R_HTTP_REQUEST)
                        tls_plain_http_answer(h->fd);
                *ret_errno = EPROTO;
                return IO_ERROR;
        }
}

static enum io_result read_into(struct handle *h, SSL *ssl, struct buf *b, int *ret_errno)
{
        if (!h->rd)
                return IO_AGAIN;
        buf_compact(b);
        if (b->end >= b->cap)
                return IO_AGAIN;
        if (ssl)
                return tls_read_into(h, ssl, b, ret_errno);
        size_t room = b->cap - b->end;
        ssize_t k = recv(h->fd, b->d + b->end, room, 0);
        if (k > 0) {
                b->end += (size_t)k;
                if ((size_t)k < room && !h->hup)
                        h->rd = false; /* drained; with a FIN behind the bytes, the next read finds it */
                return IO_PROGRESS;
        }
        if (k == 0)
                return IO_EOF;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                h->rd = errno == EINTR;
                return IO_AGAIN;
        }
        *ret_errno = errno;
        return IO_ERROR;
}

static enum io_result write_from(struct handle *h, const char *p, size_t n, size_t *ret_written,
                                 int *ret_errno)
{
        *ret_written = 0;
        if (n == 0 || !h->wr)
                return IO_AGAIN;
        ssize_t k = send(h->fd, p, n, MSG_NOSIGNAL);
        if (k > 0) {
                *ret_written = (size_t)k;
                return IO_PROGRESS;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                h->wr = errno == EINTR;
                return IO_AGAIN;
        }
        *ret_errno = k < 0 ? errno : EPIPE;
        return IO_ERROR;
}

/* Like write_from for two pieces in one sendmsg (a head and the body bytes after it: one segment, one
 * wakeup). */
static enum io_result write_from2(struct handle *h, const char *p1, size_t n1, const char *p2, size_t n2,
                                  size_t *ret_written, int *ret_errno)
{
        *ret_written = 0;
        if (n2 == 0)
                return write_from(h, p1, n1, ret_written, ret_errno);
        if (!h->wr)
                return IO_AGAIN;
        struct iovec iov[2] = { { .iov_base = (void *)p1, .iov_len = n1 },
                                { .iov_base = (void *)p2, .iov_len = n2 } };
        struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
        ssize_t k = sendmsg(h->fd, &m, MSG_NOSIGNAL);
        if (k > 0) {
                *ret_written = (size_t)k;
                return IO_PROGRESS;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
                h->wr = errno == EINTR;
                return IO_AGAIN;
        }
        *ret_errno = k < 0 ? errno : EPIPE;
        return IO_ERROR;
}

static enum io_result tls_write(struct handle *h, SSL *ssl, const char *p, size_t n, size_t *ret_written,
                                int *ret_errno)
{
        *ret_written = 0;
        if (n == 0 || !h->wr)
                return IO_AGAIN;
        ERR_clear_error();
        int k = SSL_write(ssl, p, (int)MIN(n, (size_t)INT32_MAX));
        if (k > 0) {
                *ret_written = (size_t)k;
                return IO_PROGRESS;
        }
        switch (SSL_get_error(ssl, k)) {
        case SSL_ERROR_WANT_WRITE:
                h->wr = false;
                return IO_AGAIN;
        case SSL_ERROR_WANT_READ:
                return IO_AGAIN; /* a handshake message first: the next input event runs us again */
        default:
                *ret_errno = EPROTO;
                return IO_ERROR;
        }
}

/* Write to the client: plain (head and body in one sendmsg) or TLS (one record after the other). */
static enum io_result client_write2(struct client *c, const char *p1, size_t n1, const char *p2, size_t n2,
                                    size_t *ret_written, int *ret_errno)
{
        if (!c->ssl)
                return write_from2(&c->h, p1, n1, p2, n2, ret_written, ret_errno);
        enum io_result r = tls_write(&c->h, c->ssl, p1, n1, ret_written, ret_errno);
        if (r != IO_PROGRESS || *ret_written < n1 || n2 == 0)
                return r;
        size_t more = 0;
        enum io_result r2 = tls_write(&c->h, c->ssl, p2, n2, &more, ret_errno);
        *ret_written += more;
        return r2 == IO_ERROR ? IO_ERROR : IO_PROGRESS;
}

/*
 * The backend failed (EOF or error) before its response head arrived. A reused pooled connection that
 * the backend had closed is retried once on a fresh one when no body byte was sent yet.
 */
static void client_upstream_lost(struct client *c, int error)
{
        if (c->resp_started) {
                client_close(c);
                return;
        }
        if (c->up && c->up->reused && c->req_sent == 0 && buf_len(&c->uin) == 0) {
                upstream_destroy(c->w, c->up);
                c->up = NULL;
                c->attempts--;
                c->tried &= ~(c->ep < 64 ? 1ULL << c->ep : 0);
                client_connect(c);
                return;
        }
        /*
         * A connection that ends before any of the answer on a request that may be sent again (a safe method,
         * no body: its bytes are all in up_head) goes to another endpoint, as Gorouter retries an idempotent
         * request on EOF: a backend going away can accept a connection and then close or reset it.
         */
        if (c->req_safe && c->req_mode == BODY_NONE && !c->req_upgrade && buf_len(&c->uin) == 0 &&
            c->attempts < PX_MAX_ATTEMPTS) {
                client_dial_failed(c, error ? error : ECONNRESET);
                return;
        }
        struct rt_endpoint *ep = &c->route->eps[c->ep];
        log_warn("endpoint %s:%u of %s: %s before a response", ep->host, ep->port, c->route->host,
                 error ? strerror(error) : "connection closed");
        metrics_add(&c->w->m.backend_errors, 1);
        client_respond_bad_gateway(c);
}

/* The request/response exchange is complete on both sides: recycle or close. */
static void client_finish(struct client *c)
{
        struct worker *w = c->w;
        if (c->up) {
                if (c->resp_keep_alive && c->req_done && c->req_fwd == 0 && !c->up_eof &&
                    buf_len(&c->uin) == 0 && c->up_head_sent == c->up_head.end)
                        pool_put(w, c->up);
                else
                        upstream_destroy(w, c->up);
                c->up = NULL;
        }
        /* A client that shut down its side after pipelining more requests gets their answers first. */
        bool more = c->in.d && buf_len(&c->in) > 0;
        if (c->close_after || !c->req_done || (c->client_eof && !more) || w->stopping) {
                client_close(c);
                return;
        }
        client_reset(c);
}

/* Make sure the connection's sockets are registered (edge-triggered: once for their life). */
static void client_update_interest(struct client *c)
{
        handle_arm(c->w, &c->h);
        if (c->up)
                handle_arm(c->w, &c->up->h);
}

/* Check a non-blocking connect's outcome. Returns 0 when connected, the error otherwise. */
static int upstream_connect_result(struct upstream *u)
{
        int e = 0;
        socklen_t l = sizeof(e);
        if (getsockopt(u->h.fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
                return errno;
        return e;
}

/*
 * Whether the client went away while its whole request was with the backend; if so the request is given up
 * (the backend connection closed, not pooled; 499 in the access log and metrics) and the client closed, as
 * Gorouter and nginx do, rather than holding both until the request timeout. Gone means a FIN (or reset)
 * that came after the request, with nothing unread before it. A client that shut down its side with the
 * request (hup_seen is set when the head is parsed), or after pipelining its next request, is answered.
 */
static bool client_gone(struct client *c)
{
        if (!c->h.hup || c->hup_seen || !c->req_done || (c->st != CS_CONNECT && c->st != CS_PROXY))
                return false;
        if (c->in.d && buf_len(&c->in) > 0) {
                c->hup_seen = true; /* the next request is here already: the FIN comes after it */
                return false;
        }
        char b;
        ssize_t n = recv(c->h.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return false; /* not shut down after all: look again at the next hang-up */
        c->hup_seen = true;
        if (n > 0)
                return false; /* pipelined bytes first */
        if (!c->status)
                c->status = 499;
        client_close(c);
        return true;
}

/* Drive one connection as far as it goes without blocking. */
static void client_run(struct client *c)
{
        int guard;
        for (guard = 0; guard < PX_RUN_STEPS && !c->h.dead; guard++) {
                bool progress = false;
                int e = 0;
                size_t n = 0;

                /* Client → us. */
                bool want_client = c->st == CS_HEAD ||
                                   ((c->st == CS_PROXY || c->st == CS_CONNECT) && !c->req_done) ||
                                   c->st == CS_TUNNEL;
                if (want_client && !c->client_eof && c->h.rd) {
                        wbuf_get(c->w, &c->in, PX_IN_CAP);
                        enum io_result r = read_into(&c->h, c->ssl, &c->in, &e);
                        if (r == IO_AGAIN && c->st == CS_HEAD && buf_len(&c->in) == 0 &&
                            (!c->ssl || SSL_is_init_finished(c->ssl)))
                                wbuf_put(c->w, &c->in); /* an idle connection holds no buffer */
                        if (r == IO_PROGRESS)
                                progress = true;
                        else if (r == IO_ERROR) {
                                client_close(c);
                                return;
                        } else if (r == IO_EOF) {
                                c->client_eof = true;
                                progress = true;
                                if (c->st != CS_HEAD && !c->req_done) {
                                        client_close(c); /* gone before its request was complete */
                                        return;
                                }
                        }
                }
                if (client_gone(c))
                        return;
                if (c->st == CS_HEAD) {
                        if (client_parse_head(c))
                                progress = true;
                        if (c->h.dead)
                                return;
                        if (c->st != CS_HEAD)
                                c->hup_seen = c->h.hup; /* a FIN already here came with the request */
                        else if (c->client_eof) {
                                client_close(c); /* no (whole) request before the end */
                                return;
                        }
                }
                if (client_frame_request(c) < 0) {
                        c->close_after = true;
                        if (c->resp_started) {
                                client_close(c);
                                return;
                        }
                        client_respond(c, 400, NULL, NULL, "Invalid chunked body");
                        continue; /* on to writing it (edge-triggered: no later event would) */
                }

                if (c->client_eof && !c->req_done && (c->st == CS_CONNECT || c->st == CS_PROXY)) {
                        client_close(c); /* its body ended early: gone before its request was complete */
                        return;
                }

                /* Us → backend. */
                if ((c->st == CS_PROXY || c->st == CS_TUNNEL) && c->up) {
                        if (c->up_head_sent < c->up_head.end) {
                                size_t hl = c->up_head.end - c->up_head_sent;
                                enum io_result r = write_from2(&c->up->h, c->up_head.d + c->up_head_sent, hl,
                                                               c->in.d + c->in.start, c->req_fwd, &n, &e);
                                if (r == IO_ERROR) {
                                        client_upstream_lost(c, e);
                                        continue;
                                }
                                size_t body = n > hl ? n - hl : 0;
                                if (r == IO_PROGRESS && c->up_head_sent == 0 && c->w->p->o.answer_poll_us)
                                        c->w->answer_sent_us = now_us(), c->w->answer_polled = false;
                                c->up_head_sent += n - body;
                                buf_consume(&c->in, body);
                                c->req_fwd -= body;
                                c->req_sent += body;
                                progress |= r == IO_PROGRESS;
                        }
                        if (c->up_head_sent == c->up_head.end && c->req_fwd > 0) {
                                enum io_result r =
                                    write_from(&c->up->h, c->in.d + c->in.start, c->req_fwd, &n, &e);
                                if (r == IO_ERROR) {
                                        if (c->st == CS_TUNNEL) {
                                                client_close(c);
                                                return;
                                        }
                                        if (c->resp_head_done) {
                                                /*
                                                 * The backend answered early (413...) and stopped reading:
                                                 * drop the rest of the body, deliver its answer, then close.
                                                 */
                                                c->req_fwd = 0;
                                                c->req_done = true;
                                                c->close_after = true;
                                                progress = true;
                                                continue;
                                        }
                                        client_upstream_lost(c, e);
                                        continue;
                                }
                                buf_consume(&c->in, n);
                                c->req_fwd -= n;
                                c->req_sent += n;
                                progress |= r == IO_PROGRESS;
                        }
                        if (c->st == CS_TUNNEL && c->client_eof && c->req_fwd == 0 && !c->tunnel_c2u_shut) {
                                shutdown(c->up->h.fd, SHUT_WR);
                                c->tunnel_c2u_shut = true;
                        }
                }

                /* Backend → us. */
                if ((c->st == CS_PROXY || c->st == CS_TUNNEL) && c->up && !c->up_eof &&
                    (!c->resp_done || c->st == CS_TUNNEL)) {
                        enum io_result r = read_into(&c->up->h, NULL, &c->uin, &e);
                        if (r == IO_PROGRESS)
                                progress = true;
                        else if (r == IO_EOF || r == IO_ERROR) {
                                c->up_eof = true;
                                progress = true;
                                if (!c->resp_head_done) {
                                        client_upstream_lost(c, r == IO_ERROR ? e : 0);
                                        continue;
                                }
                                if (c->resp_mode == BODY_CLOSE && c->st != CS_TUNNEL)
                                        c->resp_done = true;
                        }
                }
                if (c->st == CS_PROXY && c->up) {
                        int pr = client_parse_response(c);
                        if (pr < 0) {
                                const struct rt_endpoint *ep = &c->route->eps[c->ep];
                                log_warn("endpoint %s:%u of %s: %s", ep->host, ep->port, c->route->host,
                                         pr == -EPROTO
                                             ? "101 Switching Protocols to a request without Upgrade"
                                         : pr == -E2BIG ? "response head too large"
                                                        : "malformed response head");
                                metrics_add(&c->w->m.backend_errors, 1);
                                if (!c->resp_started) {
                                        client_respond_bad_gateway(c);
                                        continue;
                                }
                                client_close(c);
                                return;
                        }
                }
                if (client_frame_response(c) < 0) {
                        client_close(c);
                        return;
                }
                if (c->up_eof && !c->resp_done && c->st == CS_PROXY && c->resp_fwd == buf_len(&c->uin) &&
                    c->resp_head_done) {
                        /* Truncated response: deliver what came, then close. */
                        c->close_after = true;
                        if (c->resp_fwd == 0 && buf_len(&c->out) == 0) {
                                client_close(c);
                                return;
                        }
                }

                /* Us → client: a response head goes out with the body bytes behind it in one call. */
                if (buf_len(&c->out) > 0) {
                        size_t ol = buf_len(&c->out);
                        enum io_result r = client_write2(c, c->out.d + c->out.start, ol,
                                                         c->uin.d + c->uin.start, c->resp_fwd, &n, &e);
                        if (r == IO_ERROR) {
                                client_close(c);
                                return;
                        }
                        size_t body = n > ol ? n - ol : 0;
                        buf_consume(&c->out, n - body);
                        buf_consume(&c->uin, body);
                        c->resp_bytes += body;
                        c->resp_fwd -= body;
                        progress |= r == IO_PROGRESS;
                }
                if (buf_len(&c->out) == 0 && c->resp_fwd > 0) {
                        enum io_result r =
                            client_write2(c, c->uin.d + c->uin.start, c->resp_fwd, NULL, 0, &n, &e);
                        if (r == IO_ERROR) {
                                client_close(c);
                                return;
                        }
                        buf_consume(&c->uin, n);
                        c->resp_bytes += n;
                        c->resp_fwd -= n;
                        progress |= r == IO_PROGRESS;
                }
                if (c->st == CS_TUNNEL && c->up_eof && c->resp_fwd == 0 && buf_len(&c->out) == 0 &&
                    !c->tunnel_u2c_shut) {
                        if (c->ssl)
                                SSL_shutdown(c->ssl);
                        else
                                shutdown(c->h.fd, SHUT_WR);
                        c->tunnel_u2c_shut = true;
                }

                /* Completion. */
                if (c->st == CS_TUNNEL && c->tunnel_c2u_shut && c->tunnel_u2c_shut) {
                        client_close(c);
                        return;
                }
                if (c->st == CS_RESPOND && buf_len(&c->out) == 0) {
                        client_finish(c);
                        if (c->h.dead)
                                return;
                        progress = true;
                        continue;
                }
                if (c->st == CS_PROXY && c->resp_head_done && c->resp_done && c->resp_fwd == 0 &&
                    buf_len(&c->out) == 0) {
                        if (!c->req_done || c->req_fwd > 0) {
                                /* The backend answered before the whole body came: nothing to resync on. */
                                c->close_after = true;
                                c->req_done = false;
                        }
                        client_finish(c);
                        if (c->h.dead)
                                return;
                        progress = true;
                        continue;
                }
                if (!progress)
                        break;
        }
        if (c->h.dead)
                return;
        client_update_interest(c);
        if (guard == PX_RUN_STEPS && !c->queued) {
                /* Edge-triggered: no event would bring it back. Fairness: others run first. */
                c->queued = true;
                c->again = c->w->again;
                c->w->again = c;
        }
}

static void upstream_event(struct upstream *u, uint32_t events)
{
        struct worker *w = u->w;
        struct client *c = u->owner;
        if (!c) {
                /* Idle in the pool: the backend closed it or sent something unasked (output space alone is no
                 * news). */
                if (!(events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
                        return;
                pool_unlink(w, u);
                upstream_destroy(w, u);
                return;
        }
        if (c->st == CS_CONNECT) {
                int e = upstream_connect_result(u);
                if (e == 0 && (events & EPOLLERR))
                        e = ECONNREFUSED;
                if (e != 0) {
                        client_dial_failed(c, e);
                        if (!c->h.dead)
                                client_run(c);
                        return;
                }
                if (!(events & EPOLLOUT))
                        return;
                u->connected = true;
                c->st = CS_PROXY;
                c->deadline = router_now_ms() + w->p->o.request_timeout_ms;
        }
        client_run(c);
}

static void client_timeout(struct client *c)
{
        switch (c->st) {
        case CS_CONNECT:
                client_dial_failed(c, ETIMEDOUT);
                if (!c->h.dead)
                        client_run(c);
                return;
        case CS_PROXY:
                if (!c->resp_started) {
                        log_warn("request to %s timed out", c->route ? c->route->host : "?");
                        client_respond_bad_gateway(c);
                        client_run(c);
                        return;
                }
                client_close(c);
                return;
        default:
                client_close(c);
                return;
        }
}

static void worker_accept(struct worker *w, bool tls)
{
        for (int i = 0; i < 256; i++) {
                struct sockaddr_storage ss;
                socklen_t sl = sizeof(ss);
                int fd = accept4(tls ? w->listen_tls.fd : w->listen.fd, (struct sockaddr *)&ss, &sl,
                                 SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                            errno != ECONNABORTED)
                                log_warn("accept: %s", strerror(errno));
                        return;
                }
                if (w->n_clients >= PX_MAX_CLIENTS) {
                        close(fd);
                        continue;
                }
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                struct client *c = xcalloc(1, sizeof(*c));
                /* The request may be here already: the first run reads before any event. */
                c->h = (struct handle){ .kind = HK_CLIENT, .fd = fd, .rd = true, .wr = true };
                c->w = w;
                c->ep = -1;
                if (tls) {
                        c->ssl = SSL_new(w->p->tls[0]);
                        if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
                                log_warn("TLS: cannot set up a connection");
                                SSL_free(c->ssl);
                                close(fd);
                                free(c);
                                continue;
                        }
                        SSL_set_accept_state(c->ssl);
                }
                sockaddr_ip(&ss, c->peer_ip, sizeof(c->peer_ip));
                c->peer_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                              : ((struct sockaddr_in *)&ss)->sin_port);
                if (ss.ss_family == AF_INET6 && strncmp(c->peer_ip, "::ffff:", 7) == 0)
                        memmove(c->peer_ip, c->peer_ip + 7, strlen(c->peer_ip + 7) + 1);
                c->st = CS_HEAD;
                c->deadline = router_now_ms() + w->p->o.head_timeout_ms;
                c->next = w->clients;
                if (w->clients)
                        w->clients->prev = c;
                w->clients = c;
                w->n_clients++;
                metrics_add(&w->m.connections_accepted, 1);
                metrics_gauge(&w->m.open_connections, 1);
                client_update_interest(c);
        }
}

static void worker_reap(struct worker *w)
{
        while (w->dead_clients) {
                struct client *c = w->dead_clients;
                w->dead_clients = c->next;
                free(c);
        }
        while (w->dead_ups) {
                struct upstream *u = w->dead_ups;
                w->dead_ups = u->next;
                free(u);
        }
}

static void worker_tick(struct worker *w, int64_t now)
{
        for (struct client *c = w->clients, *next; c; c = next) {
                next = c->next;
                /* While draining, a connection waiting for its next request is closed at once. */
                if (w->stopping && c->st == CS_HEAD && (!c->in.d || buf_len(&c->in) == 0)) {
                        client_close(c);
                        continue;
                }
                if (c->deadline && now >= c->deadline)
                        client_timeout(c);
        }
        for (struct upstream *u = w->pool, *next; u; u = next) {
                next = u->next;
                if (w->stopping || now - u->idle_since >= PX_POOL_IDLE_MS) {
                        pool_unlink(w, u);
                        upstream_destroy(w, u);
                }
        }
        /* Reaping here is safe: the tick runs after an event batch (no stale pointers in flight). */
        worker_reap(w);
}

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        struct epoll_event evs[128];
        int64_t last_tick = router_now_ms();
        /*
         * Busy polling. Sleeping in epoll_wait costs each event that ends the sleep a wake-up: the sender's
         * CPU makes the scheduler's round trip (an IPI; on a VM an exit) and this CPU leaves its idle state.
         * A worker faster than its traffic pays that for nearly every packet, and the CPU that pays is the
         * one running the clients and backends (measured: 0.9 wake-ups per request at 64 connections, nginx
         * 0.3). So once an epoll_wait returns more than one event (requests overlap), the worker polls
         * without sleeping until busy_poll_us pass without an event. A lone connection's strict request and
         * answer ping-pong never starts it: a busy CPU buys that nothing and, on this VM, costs tail
         * latency. An idle router sleeps as before.
         *
         * The polls that find nothing are budgeted: their time may not exceed the time spent handling
         * events (both halved every tick, so the budget follows the last few hundred milliseconds). A
         * saturated worker polls freely (its empty polls are short gaps between events), while a worker
         * whose events come sparsely stops polling once its empty polls cost as much CPU as its work, so
         * polling at most doubles the CPU a worker uses. Nor does a worker poll while the access log
         * shipper has a full batch to ship: that SCHED_IDLE thread runs only on a CPU nobody else wants
         * (access_queue_shipping).
         *
         * Answer polling. A lone connection's ping-pong never overlaps, but the wait for a backend's answer
         * is short and foreseeable: once a request has gone to a backend, the worker polls for the answer
         * for up to answer_poll_us instead of sleeping, so the answer's arrival costs no wake-up of this
         * CPU. The polls stop as soon as a backend's event comes in (polling on through the gap before
         * the client's next request kept the CPU busy without a pause, which on this VM cost tail
         * latency), and are skipped while answers lately took longer than the window (a backend that
         * takes milliseconds would only burn the CPU). The budget above applies to these polls too.
         */
        const int64_t spin_us = (int64_t)w->p->o.busy_poll_us;
        const int64_t answer_us = (int64_t)w->p->o.answer_poll_us;
        const bool timed = spin_us > 0 || answer_us > 0;
        int64_t spin_until = 0;
        int64_t t = now_us();
        for (;;) {
                int timeout = PX_TICK_MS;
                bool polling = false;
                bool awaiting = answer_us > 0 && w->answer_sent_us && w->answer_wait_us <= answer_us &&
                                t < w->answer_sent_us + answer_us;
                if (w->again)
                        timeout = 0;
                else if ((t < spin_until || awaiting) && w->poll_idle_us <= w->poll_work_us &&
                         !access_queue_shipping(&w->aq)) {
                        timeout = 0, polling = true;
                        if (awaiting)
                                w->answer_polled = true;
                }
                if (timeout && w->answer_polled) { /* the window or the budget ended first: sleep */
                        metrics_add(&w->m.answer_polls[0], 1);
                        w->answer_polled = false;
                }
                int n = epoll_wait(w->epfd, evs, (int)ARRAY_SIZE(evs), timeout);
                if (n < 0 && errno != EINTR) {
                        log_error("epoll_wait: %s", strerror(errno));
                        break;
                }
                int64_t t_events = timed ? now_us() : 0;
                if (polling && n <= 0)
                        w->poll_idle_us += t_events - t;
                if (spin_us > 0 && n > 0 && (n > 1 || t_events < spin_until))
                        spin_until = t_events + spin_us;
                for (int i = 0; i < n; i++) {
                        struct handle *h = evs[i].data.ptr;
                        if (h->dead)
                                continue;
                        switch (h->kind) {
                        case HK_LISTEN:
                        case HK_LISTEN_TLS:
                                worker_accept(w, h->kind == HK_LISTEN_TLS);
                                break;
                        case HK_EVENT: {
                                uint64_t v;
                                if (read(h->fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                                        log_warn("eventfd: %s", strerror(errno));
                                if (!w->stopping) {
                                        w->stopping = true;
                                        w->drain_deadline = router_now_ms() + w->p->o.drain_timeout_ms;
                                        handle_close(w, &w->listen);
                                        if (w->listen_tls.fd >= 0)
                                                handle_close(w, &w->listen_tls);
                                }
                                break;
                        }
                        case HK_CLIENT: {
                                struct client *c = (struct client *)h;
                                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
                                        h->rd = true;
                                if (evs[i].events & (EPOLLHUP | EPOLLRDHUP))
                                        h->hup = true;
                                if (evs[i].events & (EPOLLOUT | EPOLLHUP))
                                        h->wr = true;
                                if (evs[i].events & EPOLLERR) {
                                        client_close(c);
                                        break;
                                }
                                client_run(c);
                                break;
                        }
                        case HK_UPSTREAM:
                                if (w->answer_sent_us && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                                        w->answer_wait_us +=
                                            (t_events - w->answer_sent_us - w->answer_wait_us) / 8;
                                        w->answer_sent_us = 0;
                                        if (w->answer_polled)
                                                metrics_add(&w->m.answer_polls[1], 1);
                                        w->answer_polled = false;
                                }
                                if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR))
                                        h->rd = true;
                                if (evs[i].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR))
                                        h->hup = true;
                                if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
                                        h->wr = true;
                                upstream_event((struct upstream *)h, evs[i].events);
                                break;
                        }
                }
                /* Runs cut short by their step bound go on (before any reaping: dead ones are skipped). */
                struct client *again = w->again;
                w->again = NULL;
                while (again) {
                        struct client *c = again;
                        again = c->again;
                        c->queued = false;
                        if (!c->h.dead)
                                client_run(c);
                }
                worker_reap(w);
                if (timed) {
                        t = now_us();
                        if (n > 0)
                                w->poll_work_us += t - t_events;
                }
                int64_t now = router_now_ms();
                if (now - last_tick >= PX_TICK_MS / 2 || w->stopping) {
                        worker_tick(w, now);
                        last_tick = now;
                        w->poll_idle_us /= 2;
                        w->poll_work_us /= 2;
                }
                if (w->stopping && (w->n_clients == 0 || now >= w->drain_deadline))
                        break;
        }
        while (w->clients)
                client_close(w->clients);
        while (w->pool) {
                struct upstream *u = w->pool;
                pool_unlink(w, u);
                upstream_destroy(w, u);
        }
        worker_reap(w);
        return NULL;
}

/* ---- setup ---- */

static int parse_listen(const char *listen, struct addrinfo **ret, struct berr **err)
{
        _cleanup_free_ char *host = NULL;
        const char *port;
        if (listen[0] == '[') {
                const char *rb = strchr(listen, ']');
                if (!rb || rb[1] != ':')
                        return berr_set(err, -EINVAL, "invalid listen address \"%s\" (HOST:PORT)", listen);
                host = xstrndup(listen + 1, (size_t)(rb - listen - 1));
                port = rb + 2;
        } else {
                const char *colon = strrchr(listen, ':');
                if (!colon)
                        return berr_set(err, -EINVAL, "invalid listen address \"%s\" (HOST:PORT)", listen);
                host = xstrndup(listen, (size_t)(colon - listen));
                port = colon + 1;
        }
        char *end = NULL;
        errno = 0;
        unsigned long p = strtoul(port, &end, 10);
        if (!*port || *end || errno || p > 65535)
                return berr_set(err, -EINVAL, "invalid port in listen address \"%s\"", listen);
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
        int r = getaddrinfo(*host ? host : NULL, port, &hints, ret);
        if (r != 0)
                return berr_set(err, -EINVAL, "listen address \"%s\": %s", listen, gai_strerror(r));
        return 0;
}

/*
 * A listening socket on sa for one worker. The workers' sockets share the port through SO_REUSEPORT, which
 * would as gladly let this router join another process's listeners (of the same user) and take half of its
 * connections. So the first worker's call (first set) checks that nothing listens there: a socket without
 * SO_REUSEPORT cannot bind a port that any socket is bound to.
 */
static int open_listener(const struct sockaddr *sa, socklen_t sl, bool first, struct berr **err)
{
        int one = 1;
        if (first) {
                _cleanup_close_ int probe = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (probe < 0)
                        return berr_set_errno(err, -errno, "socket");
                if (setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                        return berr_set_errno(err, -errno, "setsockopt");
                if (bind(probe, sa, sl) < 0)
                        return berr_set_errno(err, -errno, "bind");
        }
        _cleanup_close_ int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return berr_set_errno(err, -errno, "socket");
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
                return berr_set_errno(err, -errno, "setsockopt");
        if (bind(fd, sa, sl) < 0)
                return berr_set_errno(err, -errno, "bind");
        /* The longest accept queue the host allows (the kernel caps the backlog at net.core.somaxconn, the
         * value Go's listeners, Gorouter's among them, ask for): a burst of connections waits in it
         * instead of its SYNs being dropped and sent again a second later. */
        if (listen(fd, PX_LISTEN_BACKLOG) < 0)
                return berr_set_errno(err, -errno, "listen");
        return TAKE_FD(fd);
}

void proxy_metrics(const struct proxy *p, struct router_metrics *sum)
{
        memset(sum, 0, sizeof(*sum));
        for (unsigned i = 0; i < p->n_workers; i++) {
                const struct router_metrics *m = &p->workers[i].m;
                for (size_t k = 0; k < ARRAY_SIZE(m->requests); k++)
                        metrics_add(&sum->requests[k],
                                    atomic_load_explicit(&m->requests[k], memory_order_relaxed));
                for (size_t k = 0; k < ARRAY_SIZE(m->latency); k++)
                        metrics_add(&sum->latency[k],
                                    atomic_load_explicit(&m->latency[k], memory_order_relaxed));
                metrics_add(&sum->latency_sum_us,
                            atomic_load_explicit(&m->latency_sum_us, memory_order_relaxed));
                metrics_add(&sum->backend_errors,
                            atomic_load_explicit(&m->backend_errors, memory_order_relaxed));
                for (size_t k = 0; k < ARRAY_SIZE(m->answer_polls); k++)
                        metrics_add(&sum->answer_polls[k],
                                    atomic_load_explicit(&m->answer_polls[k], memory_order_relaxed));
                metrics_add(&sum->connections_accepted,
                            atomic_load_explicit(&m->connections_accepted, memory_order_relaxed));
                metrics_gauge(&sum->open_connections,
                              atomic_load_explicit(&m->open_connections, memory_order_relaxed));
                metrics_gauge(&sum->open_backend_connections,
                              atomic_load_explicit(&m->open_backend_connections, memory_order_relaxed));
                metrics_add(&sum->access_log_dropped, access_queue_dropped(&p->workers[i].aq));
        }
}

const char *proxy_address(const struct proxy *p)
{
        return p->address;
}

static void worker_cleanup(struct worker *w)
{
        if (w->listen.fd >= 0)
                close(w->listen.fd);
        if (w->listen_tls.fd >= 0)
                close(w->listen_tls.fd);
        w->listen_tls.fd = -1;
        if (w->event.fd >= 0)
                close(w->event.fd);
        if (w->epfd >= 0)
                close(w->epfd);
        w->listen.fd = w->event.fd = w->epfd = -1;
        if (w->table)
                route_table_unref(w->table);
        w->table = NULL;
        while (w->n_cache_in > 0)
                free(w->cache_in[--w->n_cache_in]);
        while (w->n_cache_uin > 0)
                free(w->cache_uin[--w->n_cache_uin]);
        while (w->n_cache_small > 0)
                free(w->cache_small[--w->n_cache_small]);
        buf_release(&w->acc_line);
        buf_release(&w->xff);
}

void proxy_free(struct proxy *p)
{
        if (!p)
                return;
        for (unsigned i = 0; i < p->n_workers; i++) {
                worker_cleanup(&p->workers[i]);
                access_queue_destroy(&p->workers[i].aq);
        }
        free(p->workers);
        free(p->aqs);
        for (size_t i = 0; i < p->n_tls; i++)
                SSL_CTX_free(p->tls[i]);
        free(p->tls);
        free(p);
}

/* SNI: the first certificate whose names cover the requested host; else the first one (already set). */
static int tls_servername(SSL *ssl, int *alert, void *arg)
{
        (void)alert;
        struct proxy *p = arg;
        const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
        if (!name || !*name)
                return SSL_TLSEXT_ERR_OK;
        for (size_t i = 0; i < p->n_tls; i++) {
                X509 *cert = SSL_CTX_get0_certificate(p->tls[i]);
                if (cert && X509_check_host(cert, name, 0, 0, NULL) == 1) {
                        if (i > 0)
                                SSL_set_SSL_CTX(ssl, p->tls[i]);
                        return SSL_TLSEXT_ERR_OK;
                }
        }
        return SSL_TLSEXT_ERR_OK;
}

/* ALPN: HTTP/1.1 only (a client offering only h2 gets no protocol and may fall back or give up). */
static int tls_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                    unsigned int inlen, void *arg)
{
        (void)ssl, (void)arg;
        for (unsigned i = 0; i < inlen;) {
                unsigned l = in[i];
                if (i + 1 + l > inlen)
                        break;
                if (l == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
                        *out = in + i + 1;
                        *outlen = (unsigned char)l;
                        return SSL_TLSEXT_ERR_OK;
                }
                i += 1 + l;
        }
        return SSL_TLSEXT_ERR_NOACK;
}

static int tls_setup(struct proxy *p, const struct router_opts *o, struct berr **err)
{
        p->tls = xcalloc(o->n_tls_certs, sizeof(*p->tls));
        for (size_t i = 0; i < o->n_tls_certs; i++) {
                SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
                p->tls[p->n_tls++] = ctx;
                if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
                    SSL_CTX_use_certificate_chain_file(ctx, o->tls_certs[i].cert) != 1 ||
                    SSL_CTX_use_PrivateKey_file(ctx, o->tls_certs[i].key, SSL_FILETYPE_PEM) != 1 ||
                    SSL_CTX_check_private_key(ctx) != 1) {
                        unsigned long e = ERR_get_error();
                        char msg[256];
                        ERR_error_string_n(e, msg, sizeof(msg));
                        ERR_clear_error();
                        return berr_set(err, -EINVAL, "TLS certificate %s / key %s: %s", o->tls_certs[i].cert,
                                        o->tls_certs[i].key, e ? msg : "unusable");
                }
                SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                          SSL_MODE_RELEASE_BUFFERS);
                SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
                SSL_CTX_set_alpn_select_cb(ctx, tls_alpn, NULL);
                SSL_CTX_set_tlsext_servername_callback(ctx, tls_servername);
                SSL_CTX_set_tlsext_servername_arg(ctx, p);
        }
        return 0;
}

struct access_queue *const *proxy_access_queues(const struct proxy *p, size_t *n)
{
        *n = p->n_workers;
        return p->aqs;
}

const char *proxy_tls_address(const struct proxy *p)
{
        return p->tls_address[0] ? p->tls_address : NULL;
}

/* The CPUs this thread may run on (its affinity mask: taskset, a cpuset cgroup), at least 1. */
static unsigned cpus_allowed(void)
{
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof(set), &set) < 0)
                return (unsigned)MAX(1L, sysconf(_SC_NPROCESSORS_ONLN));
        return (unsigned)MAX(1, CPU_COUNT(&set));
}

unsigned proxy_busy_poll_us(const struct proxy *p)
{
        return p->o.busy_poll_us;
}

unsigned proxy_answer_poll_us(const struct proxy *p)
{
        return p->o.answer_poll_us;
}

unsigned proxy_cpus(const struct proxy *p)
{
        return p->n_cpus;
}

int proxy_start(const struct router_opts *o, struct route_store *store, struct proxy **ret, struct berr **err)
{
        struct addrinfo *ai = NULL;
        int r = parse_listen(o->listen, &ai, err);
        if (r < 0)
                return r;
        struct proxy *p = xcalloc(1, sizeof(*p));
        p->o = *o;
        p->store = store;
        p->n_workers = o->workers ? o->workers : 1;
        p->n_cpus = cpus_allowed();
        if (p->n_workers > p->n_cpus)
                /*
                 * A worker that polls while another worker shares its CPU takes that CPU from a worker with
                 * events, and from the SCHED_IDLE access log shipper. Measured with 2 workers on 1 CPU at 64
                 * connections: p99 5.9 ms against 3.3 ms for the same router without polling.
                 */
                p->o.busy_poll_us = p->o.answer_poll_us = 0;
        p->workers = xcalloc(p->n_workers, sizeof(*p->workers));
        for (unsigned i = 0; i < p->n_workers; i++) {
                struct worker *w = &p->workers[i];
                w->p = p;
                w->epfd = w->listen.fd = w->event.fd = w->listen_tls.fd = -1;
                w->rnd_pos = sizeof(w->rnd);
                access_queue_init(&w->aq);
        }
        p->aqs = xcalloc(p->n_workers, sizeof(*p->aqs));
        for (unsigned i = 0; i < p->n_workers; i++)
                p->aqs[i] = &p->workers[i].aq;
        struct addrinfo *tai = NULL;
        if (o->tls_listen) {
                if (o->n_tls_certs == 0) {
                        r = berr_set(err, -EINVAL, "TLS: tls_listen needs at least one certificate and key");
                        goto fail;
                }
                if ((r = tls_setup(p, o, err)) < 0 || (r = parse_listen(o->tls_listen, &tai, err)) < 0)
                        goto fail;
        }
        struct sockaddr_storage bound, tbound;
        socklen_t bound_len = 0, tbound_len = 0;
        for (unsigned i = 0; i < p->n_workers; i++) {
                struct worker *w = &p->workers[i];
                /* The first listener may bind port 0; the others join the port it got. */
                const struct sockaddr *sa = i == 0 ? ai->ai_addr : (const struct sockaddr *)&bound;
                socklen_t sl = i == 0 ? ai->ai_addrlen : bound_len;
                r = open_listener(sa, sl, i == 0, err);
                if (r < 0) {
                        r = berr_prefix(err, r, "listen on %s", o->listen);
                        goto fail;
                }
                w->listen = (struct handle){ .kind = HK_LISTEN, .fd = r };
                if (i == 0) {
                        bound_len = sizeof(bound);
                        if (getsockname(w->listen.fd, (struct sockaddr *)&bound, &bound_len) < 0) {
                                r = berr_set_errno(err, -errno, "getsockname");
                                goto fail;
                        }
                }
                if (tai) {
                        const struct sockaddr *tsa = i == 0 ? tai->ai_addr : (const struct sockaddr *)&tbound;
                        r = open_listener(tsa, i == 0 ? tai->ai_addrlen : tbound_len, i == 0, err);
                        if (r < 0) {
                                r = berr_prefix(err, r, "listen on %s", o->tls_listen);
                                goto fail;
                        }
                        w->listen_tls = (struct handle){ .kind = HK_LISTEN_TLS, .fd = r };
                        if (i == 0) {
                                tbound_len = sizeof(tbound);
                                if (getsockname(r, (struct sockaddr *)&tbound, &tbound_len) < 0) {
                                        r = berr_set_errno(err, -errno, "getsockname");
                                        goto fail;
                                }
                        }
                }
                w->epfd = epoll_create1(EPOLL_CLOEXEC);
                int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
                if (w->epfd < 0 || efd < 0) {
                        r = berr_set_errno(err, -errno, "epoll/eventfd");
                        if (efd >= 0)
                                close(efd);
                        goto fail;
                }
                w->event = (struct handle){ .kind = HK_EVENT, .fd = efd };
                handle_want(w, &w->listen, EPOLLIN);
                if (w->listen_tls.fd >= 0)
                        handle_want(w, &w->listen_tls, EPOLLIN);
                handle_want(w, &w->event, EPOLLIN);
        }
        char ip[INET6_ADDRSTRLEN];
        sockaddr_ip(&bound, ip, sizeof(ip));
        uint16_t port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                          : ((struct sockaddr_in *)&bound)->sin_port);
        snprintf(p->address, sizeof(p->address), bound.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
        if (tai) {
                sockaddr_ip(&tbound, ip, sizeof(ip));
                port = ntohs(tbound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&tbound)->sin6_port
                                                          : ((struct sockaddr_in *)&tbound)->sin_port);
                snprintf(p->tls_address, sizeof(p->tls_address),
                         tbound.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
        }
        for (unsigned i = 0; i < p->n_workers; i++) {
                struct worker *w = &p->workers[i];
                int e = pthread_create(&w->thread, NULL, worker_main, w);
                if (e != 0) {
                        r = berr_set_errno(err, -e, "start worker thread");
                        proxy_stop(p);
                        goto fail;
                }
                w->started = true;
        }
        freeaddrinfo(ai);
        if (tai)
                freeaddrinfo(tai);
        *ret = p;
        return 0;
fail:
        freeaddrinfo(ai);
        if (tai)
                freeaddrinfo(tai);
        proxy_free(p);
        return r;
}

void proxy_stop(struct proxy *p)
{
        for (unsigned i = 0; i < p->n_workers; i++) {
                struct worker *w = &p->workers[i];
                if (!w->started)
                        continue;
                uint64_t one = 1;
                if (write(w->event.fd, &one, sizeof(one)) < 0)
                        log_warn("wake worker: %s", strerror(errno));
        }
        for (unsigned i = 0; i < p->n_workers; i++) {
                struct worker *w = &p->workers[i];
                if (!w->started)
                        continue;
                pthread_join(w->thread, NULL);
                w->started = false;
        }
}
