/* SPDX-License-Identifier: Apache-2.0 */
/* What the router's files share: the route table, its store, the watcher and the proxy workers. */
#pragma once

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>

#include "lib/err.h"

/* Ceilings on what the controller may hand us (a table is untrusted input too). */
#define RT_MAX_ROUTES      100000
#define RT_MAX_ENDPOINTS   1000 /* per route */
#define RT_MAX_HOST        253
#define RT_MAX_PATH        1024
#define RT_FAIL_SKIP_MS    30000 /* Gorouter's retryAfterFailure */
#define RT_MAX_TABLE_BYTES (64u << 20)

/*
 * What the router knows about one backend address across tables (each table listing the address holds a
 * reference), shared by the workers: the failure mark and the load.
 */
struct rt_ep_stats {
        _Atomic long refs;
        _Atomic int64_t failed_until_ms; /* monotonic ms until which it is skipped after a failed dial */
        _Atomic int active;              /* requests in flight to it, all workers */
};
void rt_ep_stats_unref(struct rt_ep_stats *st);

struct rt_endpoint {
        char *instance_guid;
        int index;
        char *host;
        uint16_t port;
        struct sockaddr_storage addr;
        socklen_t addr_len;
        struct rt_ep_stats *st; /* a reference */
};

struct rt_route {
        char *host; /* lowercase, no port */
        char *path; /* "" or "/seg[/seg...]", no trailing '/' */
        size_t path_len;
        char *route_guid;
        char *app_guid;
        struct rt_endpoint *eps;
        size_t n_eps;
        _Atomic unsigned rr; /* round-robin cursor */
};

/*
 * An immutable table (only the atomics above change). Routes are sorted by host, then longest path first;
 * buckets is an open-addressing hash of host → index of its first route.
 */
struct route_table {
        _Atomic long refs;
        uint64_t index;
        struct rt_route *routes;
        size_t n_routes;
        size_t *buckets; /* SIZE_MAX: empty */
        size_t n_buckets;
};

/*
 * Build a table from the controller's {"index":V,"routes":[...]} body. prev (borrowed, may be NULL) gives
 * the endpoints' failure marks, carried over for the same address. *ret has one reference.
 */
int route_table_from_json(const json_t *doc, const struct route_table *prev, struct route_table **ret,
                          struct berr **err);
struct route_table *route_table_ref(struct route_table *t);
void route_table_unref(struct route_table *t);
static inline void route_table_unrefp(struct route_table **t)
{
        if (*t)
                route_table_unref(*t);
}

/*
 * Normalise a Host header value into out (size outsz): lowercase, port and a trailing dot removed,
 * "[v6]" kept with brackets. Returns the length, or -1 if empty or invalid.
 */
int route_host_normalize(const char *in, size_t len, char *out, size_t outsz);

/*
 * The route for a normalised host and a request target's path (query ignored): exact host, else a
 * "*.parent" wildcard; among the host's routes the longest path prefix at a '/' boundary. NULL: none.
 * The pointer is valid while the caller holds a reference on t.
 */
const struct rt_route *route_table_lookup(const struct route_table *t, const char *host, size_t host_len,
                                          const char *path, size_t path_len);

enum rt_balance { RT_ROUND_ROBIN, RT_LEAST_CONN };
#define RT_PICK_NONE  (-1) /* every endpoint was tried */
#define RT_PICK_LIMIT (-2) /* every untried endpoint is at max_conns */

/*
 * Choose one of rt's endpoints, skipping the ones in tried (bitmask of indexes < 64), the ones with
 * max_conns requests in flight (0: no limit) and, while others remain, the ones marked failed at now_ms:
 * round-robin, or the fewest requests in flight (ties broken by rotation). A sticky instance guid (may be
 * NULL) wins when it is listed, untried, not failed and under the limit. Returns an index or RT_PICK_*.
 */
int route_pick(struct rt_route *rt, enum rt_balance how, unsigned max_conns, const char *sticky,
               int64_t now_ms, uint64_t tried);
/* Endpoint i of rt and no other (X-CF-App-Instance): i, or RT_PICK_NONE once tried, RT_PICK_LIMIT when full.
 */
int route_pick_only(const struct rt_route *rt, int i, unsigned max_conns, uint64_t tried);
void route_mark_failed(struct rt_endpoint *ep, int64_t now_ms);

/* The current table, shared by the watcher (writer) and the workers (readers). */
struct route_store {
        pthread_mutex_t lock;
        struct route_table *cur; /* owned reference, NULL before the first table */
        _Atomic uint64_t epoch;  /* bumped at each swap; workers compare it to their cached copy */
};
void route_store_init(struct route_store *s);
void route_store_destroy(struct route_store *s);
/* Install t (takes the caller's reference); in-flight users keep the old table until they drop it. */
void route_store_swap(struct route_store *s, struct route_table *t);
/* A new reference on the current table, or NULL. */
struct route_table *route_store_get(struct route_store *s);

int64_t router_now_ms(void);

struct router_opts {
        char *listen;     /* HOST:PORT */
        char *controller; /* base URL */
        char *token;      /* internal token */
        unsigned workers;
        unsigned dial_timeout_ms;
        unsigned request_timeout_ms;
        unsigned idle_timeout_ms;
        unsigned head_timeout_ms;
        unsigned drain_timeout_ms;
        enum rt_balance balance;
        char *metrics_listen; /* HOST:PORT, or NULL: no metrics server */
        char *tls_listen;     /* HOST:PORT, or NULL: no TLS listener */
        struct router_tls_cert {
                char *cert, *key; /* PEM files: the chain, the key */
        } * tls_certs;
        size_t n_tls_certs;
        unsigned backend_max_conns; /* per backend address, all workers; 0: no limit */
        unsigned busy_poll_us; /* how long a worker polls without sleeping after its last event; 0: never */
        unsigned
            answer_poll_us; /* how long a worker polls for a backend's answer instead of sleeping; 0: never */
        unsigned access_log_flush_ms; /* the longest a line waits to be shipped (a full batch goes at once) */
};

/* The route watcher: long-polls the controller in its own thread until stop is set. */
struct route_watch;
int route_watch_start(const struct router_opts *o, struct route_store *store, struct route_watch **ret,
                      struct berr **err);
/* Ask the thread to stop and detach it (it may sit in a long poll; it touches nothing shared after). */
void route_watch_stop(struct route_watch *w);

/* The proxy: one epoll loop per worker thread, each with its own SO_REUSEPORT listener. */
struct proxy;
int proxy_start(const struct router_opts *o, struct route_store *store, struct proxy **ret,
                struct berr **err);
/* Each worker's access log queue (n of them), for the shipper; valid until proxy_free. */
struct access_queue;
struct access_queue *const *proxy_access_queues(const struct proxy *p, size_t *n);
/* The TLS listener's bound address, or NULL; valid until proxy_free. */
const char *proxy_tls_address(const struct proxy *p);
/* The bound address ("127.0.0.1:9080"); valid until proxy_free. */
const char *proxy_address(const struct proxy *p);
/* The busy-poll window the workers use: router.busy_poll_us, or 0 with more workers than proxy_cpus. */
unsigned proxy_busy_poll_us(const struct proxy *p);
/* The answer-poll window the workers use: router.answer_poll_us, or 0 as with busy polling. */
unsigned proxy_answer_poll_us(const struct proxy *p);
/* The CPUs the router may run on (its affinity mask when it started). */
unsigned proxy_cpus(const struct proxy *p);
/* Stop accepting, let in-flight requests finish up to drain_timeout_ms, join the workers. */
void proxy_stop(struct proxy *p);
void proxy_free(struct proxy *p);

/* ---- cookies (cookie.c): Gorouter's sticky sessions ---- */

/* Copy the value of cookie `name` from a Cookie header value into out (size n); "" if absent or too long. */
void cookie_value(const char *v, size_t len, const char *name, char *out, size_t n);
/* Whether a Set-Cookie header value sets the cookie `name`. */
bool set_cookie_is(const char *v, size_t len, const char *name);

struct cookie_attrs {
        bool secure, partitioned, max_age_negative;
        char same_site[16];
        char expires[64];
};
/* The attributes of a Set-Cookie value that Gorouter copies to __VCAP_ID__. */
void set_cookie_attrs(const char *v, size_t len, struct cookie_attrs *a);
/*
 * The __VCAP_ID__ cookie's Set-Cookie value for instance guid on a route with path ("" → "/"), with the
 * copied attributes, into out (size n). Returns its length, or -1 if it does not fit.
 */
int vcap_cookie_format(char *out, size_t n, const char *guid, const char *path, const struct cookie_attrs *a);

/* ---- metrics (metrics.c), Prometheus text on a port of its own ---- */

#define RM_LATENCY_BUCKETS 14
extern const double rm_latency_bounds_s[RM_LATENCY_BUCKETS];

/* One worker's counters: written by its thread only, read by the metrics thread (relaxed atomics). */
struct router_metrics {
        _Atomic uint64_t requests[6]; /* by status class: [1] 1xx ... [5] 5xx, [0] other */
        _Atomic uint64_t latency[RM_LATENCY_BUCKETS + 1]; /* per bucket (not cumulative), last: +Inf */
        _Atomic uint64_t latency_sum_us;
        _Atomic uint64_t backend_errors; /* failed dials, and backends lost before a response */
        /* Answer polling (router.answer_poll_us): [0] the worker slept first, [1] the answer came. */
        _Atomic uint64_t answer_polls[2];
        _Atomic uint64_t connections_accepted;
        _Atomic int64_t open_connections;         /* client connections */
        _Atomic int64_t open_backend_connections; /* in use or pooled */
        _Atomic uint64_t access_log_dropped;      /* filled from the access log queues when summed */
};

static inline void metrics_add(_Atomic uint64_t *c, uint64_t n)
{
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}
static inline void metrics_gauge(_Atomic int64_t *g, int64_t d)
{
        atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + d, memory_order_relaxed);
}
void metrics_request(struct router_metrics *m, int status, int64_t latency_us);
/* The sum of every worker's counters. */
void proxy_metrics(const struct proxy *p, struct router_metrics *sum);
/* Render sum as Prometheus text (exposition format 0.0.4); returns a malloc'ed string. */
char *metrics_render(const struct router_metrics *sum);

struct metrics_server;
/* Serve GET /metrics on listen (HOST:PORT) from a thread of its own. */
int metrics_start(const char *listen, const struct proxy *p, struct metrics_server **ret, struct berr **err);
void metrics_stop(struct metrics_server *s);

/* ---- access logs (accesslog.c): one line per request, shipped to the controller as the app's RTR logs ----
 */

#define AL_QUEUE_MAX   10000      /* lines waiting per worker; more are dropped (counted) */
#define AL_QUEUE_BYTES (4u << 20) /* bytes of them waiting per worker; the same */
#define AL_BATCH_INIT  65536
#define AL_FLUSH_MS    200          /* router.access_log_flush_ms's default */
#define AL_SHIP_BYTES  65536        /* a batch this big is shipped at once (access_queue_push) */
#define AL_POST_BYTES  (512u << 10) /* a POST's body ends after the line that reaches this */

/*
 * Lines in one buffer: each is its app guid, its time (RFC 3339 with nanoseconds, like the cells' log
 * lines) and its text, each NUL-terminated, one after the other.
 */
struct access_batch {
        char *d;
        size_t len, cap; /* bytes */
        size_t n;        /* lines */
        bool kicked;     /* the shipper was woken for this batch */
        bool raised;     /* the shipper was lifted out of SCHED_IDLE for this batch (shipper_raise) */
};

/*
 * One worker's queue: the worker appends to cur under the lock; the shipper swaps cur for its emptied
 * previous batch under the same lock (double buffering: no allocation per line or per batch once the
 * buffers have grown, and no formatting while holding the lock).
 */
struct access_shipper;
struct access_queue {
        pthread_mutex_t mu;
        struct access_batch cur;
        _Atomic uint64_t dropped; /* lines dropped: queue full, or the controller did not take them */
        struct access_shipper *_Atomic shipper; /* to wake when cur reaches AL_SHIP_BYTES; NULL: none */
};
void access_queue_init(struct access_queue *q);
void access_queue_destroy(struct access_queue *q);
/* Queue a line (copied); drops it when the queue is full. */
void access_queue_push(struct access_queue *q, const char *app_guid, const char *time, const char *text,
                       size_t text_len);
uint64_t access_queue_dropped(const struct access_queue *q);
/* Whether the shipper has a full batch waiting or is shipping one (workers then do not busy-poll). */
bool access_queue_shipping(const struct access_queue *q);

/*
 * Write s (len bytes) to out as a JSON string: quoted, '"' and '\\' escaped, control bytes as \u escapes and
 * bytes >= 0x7f as "\u003f" ('?': the lines are ASCII; a stray byte of another encoding must not make a batch
 * invalid UTF-8). out has room for 6 * len + 2 bytes (it may be written anywhere in that range); returns the
 * bytes written (no NUL).
 */
size_t access_json_escape(char *out, const char *s, size_t len);

/*
 * POST the queued lines to {controller}/internal/v1/logs from a thread of its own, every access_log_flush_ms
 * or as soon as a worker's batch reaches AL_SHIP_BYTES (best effort: a controller that is down loses them,
 * counted). index is the router's RTR/<index>.
 */
int access_shipper_start(const struct router_opts *o, struct access_queue *const *queues, size_t n,
                         struct access_shipper **ret, struct berr **err);
void access_shipper_stop(struct access_shipper *s);
