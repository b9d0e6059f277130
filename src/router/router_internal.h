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

struct rt_endpoint {
        char *instance_guid;
        int index;
        char *host;
        uint16_t port;
        struct sockaddr_storage addr;
        socklen_t addr_len;
        /* Monotonic ms until which the endpoint is skipped after a failed dial; shared by the workers. */
        _Atomic int64_t failed_until_ms;
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

/*
 * Round-robin choice among rt's endpoints, skipping the ones in tried (bitmask of indexes < 64) and,
 * while others remain, the ones marked failed at now_ms. Returns an index, or -1 if none is left.
 */
int route_pick(struct rt_route *rt, int64_t now_ms, uint64_t tried);
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
/* The bound address ("127.0.0.1:9080"); valid until proxy_free. */
const char *proxy_address(const struct proxy *p);
/* Stop accepting, let in-flight requests finish up to drain_timeout_ms, join the workers. */
void proxy_stop(struct proxy *p);
void proxy_free(struct proxy *p);
