/* SPDX-License-Identifier: Apache-2.0 */
/* The route table: built once from the controller's JSON, then read by every worker without locks. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/json.h"
#include "lib/log.h"
#include "router/router_internal.h"

int64_t router_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rt_ep_stats_unref(struct rt_ep_stats *st)
{
        if (st && atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) == 1)
                free(st);
}

static void route_table_free(struct route_table *t)
{
        if (!t)
                return;
        for (size_t i = 0; i < t->n_routes; i++) {
                struct rt_route *r = &t->routes[i];
                for (size_t j = 0; j < r->n_eps; j++) {
                        free(r->eps[j].instance_guid);
                        free(r->eps[j].host);
                        rt_ep_stats_unref(r->eps[j].st);
                }
                free(r->eps);
                free(r->host);
                free(r->path);
                free(r->route_guid);
                free(r->app_guid);
        }
        free(t->routes);
        free(t->buckets);
        free(t);
}

struct route_table *route_table_ref(struct route_table *t)
{
        if (t)
                atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
        return t;
}

void route_table_unref(struct route_table *t)
{
        if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1)
                route_table_free(t);
}

int route_host_normalize(const char *in, size_t len, char *out, size_t outsz)
{
        size_t n = len;
        if (n > 0 && in[0] == '[') {
                const char *rb = memchr(in, ']', n);
                if (!rb)
                        return -1;
                n = (size_t)(rb - in) + 1;
        } else {
                const char *colon = memchr(in, ':', n);
                if (colon)
                        n = (size_t)(colon - in);
        }
        if (n > 0 && in[n - 1] == '.')
                n--;
        if (n == 0 || n >= outsz)
                return -1;
        for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char)in[i];
                if (ch <= ' ' || ch == 0x7f || ch == '/' || ch == '\\')
                        return -1;
                out[i] = (char)tolower(ch);
        }
        out[n] = '\0';
        return (int)n;
}

static uint64_t hash_host(const char *s, size_t n)
{
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (size_t i = 0; i < n; i++) {
                h ^= (unsigned char)s[i];
                h *= 1099511628211ULL;
        }
        return h;
}

static int route_cmp(const void *a, const void *b)
{
        const struct rt_route *x = a, *y = b;
        int c = strcmp(x->host, y->host);
        if (c)
                return c;
        if (x->path_len != y->path_len)
                return x->path_len > y->path_len ? -1 : 1; /* longest path first */
        return strcmp(x->path, y->path);
}

/* Resolve an endpoint host (normally an IP literal; a name is looked up here, in the watcher thread). */
static int endpoint_resolve(struct rt_endpoint *ep)
{
        struct sockaddr_in *in4 = (struct sockaddr_in *)&ep->addr;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ep->addr;
        memset(&ep->addr, 0, sizeof(ep->addr));
        if (inet_pton(AF_INET, ep->host, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                in4->sin_port = htons(ep->port);
                ep->addr_len = sizeof(*in4);
                return 0;
        }
        if (inet_pton(AF_INET6, ep->host, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons(ep->port);
                ep->addr_len = sizeof(*in6);
                return 0;
        }
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
        char port[8];
        snprintf(port, sizeof(port), "%u", ep->port);
        if (getaddrinfo(ep->host, port, &hints, &res) != 0 || !res)
                return -EHOSTUNREACH;
        memcpy(&ep->addr, res->ai_addr, MIN((size_t)res->ai_addrlen, sizeof(ep->addr)));
        ep->addr_len = (socklen_t)MIN((size_t)res->ai_addrlen, sizeof(ep->addr));
        freeaddrinfo(res);
        return 0;
}

/* The previous table's endpoints by address (open addressing), to carry their stats over in O(1) each. */
struct prev_index {
        const struct rt_endpoint **slot;
        size_t n; /* a power of two, or 0 */
};

static uint64_t addr_hash(const struct sockaddr_storage *a, socklen_t len)
{
        const unsigned char *p = (const unsigned char *)a;
        uint64_t h = 1469598103934665603ull;
        for (socklen_t i = 0; i < len; i++)
                h = (h ^ p[i]) * 1099511628211ull;
        return h;
}

static void prev_index_build(struct prev_index *x, const struct route_table *prev)
{
        *x = (struct prev_index){ 0 };
        size_t total = 0;
        for (size_t i = 0; prev && i < prev->n_routes; i++)
                total += prev->routes[i].n_eps;
        if (total == 0)
                return;
        x->n = 16;
        while (x->n < total * 2)
                x->n *= 2;
        x->slot = xcalloc(x->n, sizeof(*x->slot));
        for (size_t i = 0; i < prev->n_routes; i++)
                for (size_t j = 0; j < prev->routes[i].n_eps; j++) {
                        const struct rt_endpoint *ep = &prev->routes[i].eps[j];
                        size_t b = addr_hash(&ep->addr, ep->addr_len) & (x->n - 1);
                        while (x->slot[b])
                                b = (b + 1) & (x->n - 1);
                        x->slot[b] = ep;
                }
}

static const struct rt_endpoint *find_prev_endpoint(const struct prev_index *x, const struct rt_endpoint *ep)
{
        if (x->n == 0)
                return NULL;
        for (size_t b = addr_hash(&ep->addr, ep->addr_len) & (x->n - 1); x->slot[b]; b = (b + 1) & (x->n - 1))
                if (x->slot[b]->addr_len == ep->addr_len &&
                    memcmp(&x->slot[b]->addr, &ep->addr, ep->addr_len) == 0)
                        return x->slot[b];
        return NULL;
}

static int parse_path(const char *p, char **ret, size_t *ret_len)
{
        size_t n = strlen(p);
        if (n > RT_MAX_PATH)
                return -EINVAL;
        if (n > 0 && p[0] != '/')
                return -EINVAL;
        while (n > 0 && p[n - 1] == '/')
                n--;
        /* Lowercase, as Gorouter keys its routes (route.Uri.RouteKey); requests match it ignoring case. */
        char *d = xstrndup(p, n);
        for (size_t i = 0; i < n; i++)
                d[i] = (char)tolower((unsigned char)d[i]);
        *ret = d;
        *ret_len = n;
        return 0;
}

static int parse_route(const json_t *jr, size_t ri, const struct prev_index *prev, struct rt_route *r,
                       struct berr **err)
{
        const char *host = NULL, *path = NULL, *rguid = NULL, *aguid = NULL;
        int k;
        if (!json_is_object(jr))
                return berr_set(err, -EINVAL, "routes[%zu] is not an object", ri);
        if ((k = json_get_string(jr, "host", true, &host, err)) < 0 ||
            (k = json_get_string(jr, "path", false, &path, err)) < 0 ||
            (k = json_get_string(jr, "route_guid", false, &rguid, err)) < 0 ||
            (k = json_get_string(jr, "app_guid", false, &aguid, err)) < 0)
                return berr_prefix(err, k, "routes[%zu]", ri);
        char hbuf[RT_MAX_HOST + 1];
        if (route_host_normalize(host, strlen(host), hbuf, sizeof(hbuf)) < 0 || strchr(host, ':'))
                return berr_set(err, -EINVAL, "routes[%zu]: invalid host \"%.64s\"", ri, host);
        r->host = xstrdup(hbuf);
        if (parse_path(path ? path : "", &r->path, &r->path_len) < 0)
                return berr_set(err, -EINVAL, "routes[%zu]: invalid path", ri);
        r->route_guid = xstrdup(rguid ? rguid : "");
        r->app_guid = xstrdup(aguid ? aguid : "");
        json_t *eps = json_object_get(jr, "endpoints");
        if (eps && !json_is_null(eps) && !json_is_array(eps))
                return berr_set(err, -EINVAL, "routes[%zu].endpoints is not a list", ri);
        size_t n = eps ? json_array_size(eps) : 0;
        if (n > RT_MAX_ENDPOINTS)
                return berr_set(err, -E2BIG, "routes[%zu]: more than %d endpoints", ri, RT_MAX_ENDPOINTS);
        r->eps = n ? xcalloc(n, sizeof(*r->eps)) : NULL;
        for (size_t i = 0; i < n; i++) {
                json_t *je = json_array_get(eps, i);
                const char *ig = NULL, *eh = NULL;
                int64_t idx = 0, port = 0;
                if (!json_is_object(je))
                        return berr_set(err, -EINVAL, "routes[%zu].endpoints[%zu] is not an object", ri, i);
                if ((k = json_get_string(je, "instance_guid", false, &ig, err)) < 0 ||
                    (k = json_get_string(je, "host", true, &eh, err)) < 0 ||
                    (k = json_get_int(je, "index", false, &idx, err)) < 0 ||
                    (k = json_get_int(je, "port", true, &port, err)) < 0)
                        return berr_prefix(err, k, "routes[%zu].endpoints[%zu]", ri, i);
                if (port <= 0 || port > 65535 || idx < 0 || idx > INT32_MAX || strlen(eh) > RT_MAX_HOST)
                        return berr_set(err, -EINVAL, "routes[%zu].endpoints[%zu]: invalid port/index/host",
                                        ri, i);
                struct rt_endpoint *ep = &r->eps[r->n_eps];
                ep->instance_guid = xstrdup(ig ? ig : "");
                ep->host = xstrdup(eh);
                ep->port = (uint16_t)port;
                ep->index = (int)idx;
                r->n_eps++;
                if (endpoint_resolve(ep) < 0) {
                        /* One unresolvable endpoint must not take the whole table down. */
                        log_warn("route %s: endpoint %s:%u does not resolve; skipped", r->host, ep->host,
                                 ep->port);
                        free(ep->instance_guid);
                        free(ep->host);
                        r->n_eps--;
                        continue;
                }
                const struct rt_endpoint *old = find_prev_endpoint(prev, ep);
                if (old) {
                        ep->st = old->st;
                        atomic_fetch_add_explicit(&ep->st->refs, 1, memory_order_relaxed);
                } else {
                        ep->st = xcalloc(1, sizeof(*ep->st));
                        atomic_init(&ep->st->refs, 1);
                }
        }
        return 0;
}

int route_table_from_json(const json_t *doc, const struct route_table *prev, struct route_table **ret,
                          struct berr **err)
{
        if (!json_is_object(doc))
                return berr_set(err, -EINVAL, "route table is not an object");
        json_t *jidx = json_object_get(doc, "index");
        json_t *routes = json_object_get(doc, "routes");
        if (!json_is_integer(jidx) || json_integer_value(jidx) < 0)
                return berr_set(err, -EINVAL, "route table: \"index\" must be a non-negative integer");
        if (!json_is_array(routes))
                return berr_set(err, -EINVAL, "route table: \"routes\" must be a list");
        size_t n = json_array_size(routes);
        if (n > RT_MAX_ROUTES)
                return berr_set(err, -E2BIG, "route table: more than %d routes", RT_MAX_ROUTES);
        _cleanup_(route_table_unrefp) struct route_table *t = xcalloc(1, sizeof(*t));
        atomic_init(&t->refs, 1);
        t->index = (uint64_t)json_integer_value(jidx);
        t->routes = n ? xcalloc(n, sizeof(*t->routes)) : NULL;
        struct prev_index px;
        prev_index_build(&px, prev);
        for (size_t i = 0; i < n; i++) {
                int r = parse_route(json_array_get(routes, i), i, &px, &t->routes[t->n_routes], err);
                t->n_routes++;
                if (r < 0) {
                        free(px.slot);
                        return r;
                }
        }
        free(px.slot);
        if (t->n_routes > 1)
                qsort(t->routes, t->n_routes, sizeof(*t->routes), route_cmp);
        /* Duplicate (host, path) pairs: keep the first, whose endpoints win; drop the later ones' lookups. */
        t->n_buckets = 16;
        while (t->n_buckets < t->n_routes * 2)
                t->n_buckets *= 2;
        t->buckets = xmalloc(t->n_buckets * sizeof(*t->buckets));
        for (size_t i = 0; i < t->n_buckets; i++)
                t->buckets[i] = SIZE_MAX;
        for (size_t i = 0; i < t->n_routes; i++) {
                if (i > 0 && strcmp(t->routes[i - 1].host, t->routes[i].host) == 0)
                        continue; /* only the first route of a host is in the hash */
                size_t hl = strlen(t->routes[i].host);
                size_t b = hash_host(t->routes[i].host, hl) & (t->n_buckets - 1);
                while (t->buckets[b] != SIZE_MAX)
                        b = (b + 1) & (t->n_buckets - 1);
                t->buckets[b] = i;
        }
        *ret = TAKE_PTR(t);
        return 0;
}

static const struct rt_route *lookup_host(const struct route_table *t, const char *host, size_t host_len,
                                          const char *path, size_t path_len)
{
        if (!t->n_buckets)
                return NULL;
        size_t b = hash_host(host, host_len) & (t->n_buckets - 1);
        for (;; b = (b + 1) & (t->n_buckets - 1)) {
                size_t i = t->buckets[b];
                if (i == SIZE_MAX)
                        return NULL;
                const struct rt_route *r = &t->routes[i];
                if (strlen(r->host) != host_len || memcmp(r->host, host, host_len) != 0)
                        continue;
                /* The host's routes are consecutive, longest path first. */
                for (; i < t->n_routes && strcmp(t->routes[i].host, r->host) == 0; i++) {
                        const struct rt_route *c = &t->routes[i];
                        if (c->path_len == 0)
                                return c;
                        if (path_len >= c->path_len && strncasecmp(path, c->path, c->path_len) == 0 &&
                            (path_len == c->path_len || path[c->path_len] == '/'))
                                return c;
                }
                return NULL;
        }
}

const struct rt_route *route_table_lookup(const struct route_table *t, const char *host, size_t host_len,
                                          const char *path, size_t path_len)
{
        if (!t)
                return NULL;
        const char *q = memchr(path, '?', path_len);
        if (q)
                path_len = (size_t)(q - path);
        const struct rt_route *r = lookup_host(t, host, host_len, path, path_len);
        if (r)
                return r;
        /*
         * Wildcard routes, the nearest first, as Gorouter's route.Uri.NextWildcard: "a.b.apps.example" tries
         * "*.b.apps.example", then "*.apps.example", then "*.example".
         */
        if (host_len > RT_MAX_HOST)
                return NULL;
        char w[RT_MAX_HOST + 2];
        w[0] = '*';
        for (const char *dot = memchr(host, '.', host_len); dot;
             dot = memchr(dot + 1, '.', host_len - (size_t)(dot + 1 - host))) {
                size_t rest = host_len - (size_t)(dot - host);
                if (rest < 2)
                        break; /* a trailing dot: nothing after it */
                memcpy(w + 1, dot, rest);
                if ((r = lookup_host(t, w, rest + 1, path, path_len)))
                        return r;
        }
        return NULL;
}

static bool ep_full(const struct rt_endpoint *ep, unsigned max_conns)
{
        return max_conns && atomic_load_explicit(&ep->st->active, memory_order_relaxed) >= (int)max_conns;
}

int route_pick(struct rt_route *rt, enum rt_balance how, unsigned max_conns, const char *sticky,
               int64_t now_ms, uint64_t tried)
{
        size_t n = rt->n_eps;
        if (n == 0)
                return RT_PICK_NONE;
        if (sticky && *sticky)
                for (size_t i = 0; i < n; i++)
                        if (strcmp(rt->eps[i].instance_guid, sticky) == 0) {
                                if ((i >= 64 || !(tried & (1ULL << i))) && !ep_full(&rt->eps[i], max_conns) &&
                                    atomic_load_explicit(&rt->eps[i].st->failed_until_ms,
                                                         memory_order_relaxed) <= now_ms)
                                        return (int)i;
                                break;
                        }
        unsigned start = atomic_fetch_add_explicit(&rt->rr, 1, memory_order_relaxed);
        int fallback = -1, best = -1, best_active = 0;
        bool limited = false;
        for (size_t k = 0; k < n; k++) {
                size_t i = (start + k) % n;
                if (i < 64 && (tried & (1ULL << i)))
                        continue;
                if (ep_full(&rt->eps[i], max_conns)) {
                        limited = true;
                        continue;
                }
                if (atomic_load_explicit(&rt->eps[i].st->failed_until_ms, memory_order_relaxed) > now_ms) {
                        if (fallback < 0)
                                fallback = (int)i;
                        continue;
                }
                if (how == RT_ROUND_ROBIN)
                        return (int)i;
                int a = atomic_load_explicit(&rt->eps[i].st->active, memory_order_relaxed);
                if (best < 0 || a < best_active) {
                        best = (int)i;
                        best_active = a;
                }
        }
        if (best >= 0)
                return best;
        if (fallback >= 0)
                return fallback;
        return limited ? RT_PICK_LIMIT : RT_PICK_NONE;
}

int route_pick_only(const struct rt_route *rt, int i, unsigned max_conns, uint64_t tried)
{
        if (i < 64 && (tried & (1ULL << i)))
                return RT_PICK_NONE;
        return ep_full(&rt->eps[i], max_conns) ? RT_PICK_LIMIT : i;
}

void route_mark_failed(struct rt_endpoint *ep, int64_t now_ms)
{
        atomic_store_explicit(&ep->st->failed_until_ms, now_ms + RT_FAIL_SKIP_MS, memory_order_relaxed);
}

void route_store_init(struct route_store *s)
{
        pthread_mutex_init(&s->lock, NULL);
        s->cur = NULL;
        atomic_init(&s->epoch, 0);
}

void route_store_destroy(struct route_store *s)
{
        route_table_unref(s->cur);
        s->cur = NULL;
        pthread_mutex_destroy(&s->lock);
}

void route_store_swap(struct route_store *s, struct route_table *t)
{
        pthread_mutex_lock(&s->lock);
        struct route_table *old = s->cur;
        s->cur = t;
        atomic_fetch_add_explicit(&s->epoch, 1, memory_order_release);
        pthread_mutex_unlock(&s->lock);
        route_table_unref(old);
}

struct route_table *route_store_get(struct route_store *s)
{
        pthread_mutex_lock(&s->lock);
        struct route_table *t = route_table_ref(s->cur);
        pthread_mutex_unlock(&s->lock);
        return t;
}
