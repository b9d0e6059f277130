/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The route watcher: long-polls GET {controller}/internal/v1/routes?index=N&wait=30 in its own thread and
 * swaps each new table into the store. While the controller is unreachable the last table keeps serving
 * and the poll is retried with a backoff (100 ms doubling to 2 s, so a controller that comes back is seen
 * quickly).
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "lib/http_client.h"
#include "lib/json.h"
#include "lib/log.h"
#include "router/router_internal.h"

#define WATCH_WAIT_S         30
#define WATCH_TIMEOUT_MS     ((WATCH_WAIT_S + 15) * 1000)
#define WATCH_BACKOFF_MIN_MS 100
#define WATCH_BACKOFF_MAX_MS 2000

struct route_watch {
        pthread_t thread;
        char *url;   /* {controller}/internal/v1/routes */
        char *token; /* owned */
        struct route_store *store;
        _Atomic bool stop;
};

static void route_watch_free(struct route_watch *w)
{
        if (!w)
                return;
        free(w->url);
        if (w->token) {
                explicit_bzero(w->token, strlen(w->token));
                free(w->token);
        }
        free(w);
}

static void sleep_ms(unsigned ms)
{
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* One poll. Returns 1 if a new table was installed, 0 if unchanged, < 0 on failure. */
static int watch_once(struct route_watch *w, struct http_client *c, uint64_t *index, bool have_table,
                      bool resync, struct berr **err)
{
        /*
         * After a failure the first poll does not wait: a controller that restarted may count its index from
         * a lower value, and waiting for it to pass ours would keep a stale table for a whole poll.
         */
        _cleanup_free_ char *url = xasprintf("%s?index=%" PRIu64 "&wait=%d", w->url, have_table ? *index : 0,
                                             have_table && !resync ? WATCH_WAIT_S : 0);
        struct http_result res = { 0 };
        int r = http_request(c, "GET", url, NULL, NULL, NULL, 0, &res, err);
        if (r < 0)
                return r;
        if (res.status != 200) {
                r = berr_set(err, -EPROTO, "GET %s: HTTP %ld", w->url, res.status);
                http_result_free(&res);
                return r;
        }
        _cleanup_json_ json_t *doc = NULL;
        r = json_parse_buf(res.body, res.body_len, &doc, err);
        http_result_free(&res);
        if (r < 0)
                return berr_prefix(err, r, "GET %s", w->url);
        json_t *jidx = json_object_get(doc, "index");
        if (have_table && json_is_integer(jidx) && (uint64_t)json_integer_value(jidx) == *index)
                return 0;
        _cleanup_(route_table_unrefp) struct route_table *prev = route_store_get(w->store);
        struct route_table *t = NULL;
        r = route_table_from_json(doc, prev, &t, err);
        if (r < 0)
                return berr_prefix(err, r, "GET %s", w->url);
        *index = t->index;
        size_t n = t->n_routes, n_eps = 0;
        for (size_t i = 0; i < n; i++)
                n_eps += t->routes[i].n_eps;
        route_store_swap(w->store, t);
        log_info("route table %" PRIu64 ": %zu routes, %zu endpoints", *index, n, n_eps);
        return 1;
}

static void *watch_thread(void *arg)
{
        struct route_watch *w = arg;
        struct http_client_opts o = { .timeout_ms = WATCH_TIMEOUT_MS, .connect_timeout_ms = 2000 };
        _cleanup_(http_client_freep) struct http_client *c = NULL;
        unsigned backoff = WATCH_BACKOFF_MIN_MS;
        bool have_table = false, failing = false;
        uint64_t index = 0;
        while (!atomic_load(&w->stop)) {
                _cleanup_berr_ struct berr *err = NULL;
                int r = 0;
                if (!c) {
                        r = http_client_new(&o, &c, &err);
                        if (r >= 0)
                                http_client_set_bearer(c, w->token);
                }
                if (r >= 0)
                        r = watch_once(w, c, &index, have_table, failing, &err);
                if (atomic_load(&w->stop))
                        break;
                if (r < 0) {
                        /* Log the first failure of a series, not every retry. */
                        if (!failing)
                                log_warn("route watch: %s (keeping the %s table, retrying)", berr_msg(err),
                                         have_table ? "last" : "empty");
                        failing = true;
                        sleep_ms(backoff);
                        backoff = MIN(backoff * 2, WATCH_BACKOFF_MAX_MS);
                        continue;
                }
                if (failing)
                        log_info("route watch: controller reachable again");
                failing = false;
                backoff = WATCH_BACKOFF_MIN_MS;
                if (r > 0)
                        have_table = true;
        }
        route_watch_free(w);
        return NULL;
}

int route_watch_start(const struct router_opts *o, struct route_store *store, struct route_watch **ret,
                      struct berr **err)
{
        struct route_watch *w = xcalloc(1, sizeof(*w));
        size_t n = strlen(o->controller);
        while (n > 0 && o->controller[n - 1] == '/')
                n--;
        w->url = xasprintf("%.*s/internal/v1/routes", (int)n, o->controller);
        w->token = xstrdup(o->token);
        w->store = store;
        atomic_init(&w->stop, false);
        int r = pthread_create(&w->thread, NULL, watch_thread, w);
        if (r != 0) {
                route_watch_free(w);
                return berr_set_errno(err, -r, "start the route watcher");
        }
        *ret = w;
        return 0;
}

void route_watch_stop(struct route_watch *w)
{
        if (!w)
                return;
        /* The thread frees w itself once its current poll returns; the store outlives it (see main.c). */
        atomic_store(&w->stop, true);
        pthread_detach(w->thread);
}
