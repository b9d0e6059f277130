/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Access logs: each worker queues one line per routed request (Gorouter's access-log format); a shipper
 * thread POSTs them in batches to the controller, which adds them to the app's logs as source RTR
 * (docs/PLATFORM.md "Internal API: router → controller"). Nothing on the request path waits for it: a full
 * queue or an unreachable controller drops lines and counts them.
 */
#include <errno.h>
#include <sys/resource.h>
#include <unistd.h>
#include <string.h>
#include <time.h>

#include "lib/http_client.h"
#include "lib/json.h"
#include "lib/log.h"
#include "router/router_internal.h"

#define AL_FLUSH_MS   200
#define AL_TIMEOUT_MS 5000

void access_queue_init(struct access_queue *q)
{
        *q = (struct access_queue){ 0 };
        pthread_mutex_init(&q->mu, NULL);
}

static void lines_free(struct access_line *v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(v[i].text);
        free(v);
}

void access_queue_destroy(struct access_queue *q)
{
        lines_free(q->v, q->n);
        q->v = NULL;
        q->n = q->cap = 0;
        pthread_mutex_destroy(&q->mu);
}

void access_queue_push(struct access_queue *q, const char *app_guid, const char *time, char *text)
{
        pthread_mutex_lock(&q->mu);
        if (q->n >= AL_QUEUE_MAX) {
                pthread_mutex_unlock(&q->mu);
                free(text);
                atomic_fetch_add_explicit(&q->dropped, 1, memory_order_relaxed);
                return;
        }
        if (q->n == q->cap) {
                q->cap = q->cap ? q->cap * 2 : 64;
                q->v = xrealloc(q->v, q->cap * sizeof(*q->v));
        }
        struct access_line *l = &q->v[q->n++];
        snprintf(l->app_guid, sizeof(l->app_guid), "%s", app_guid);
        snprintf(l->time, sizeof(l->time), "%s", time);
        l->text = text;
        pthread_mutex_unlock(&q->mu);
}

struct access_shipper {
        pthread_t thread;
        pthread_mutex_t mu;
        pthread_cond_t cond;
        bool stop;
        char *url, *token;
        struct access_queue *const *queues;
        size_t n;
};

struct sbuf {
        char *d;
        size_t n, cap;
};

static void sb_put(struct sbuf *b, const char *p, size_t n)
{
        if (b->n + n + 1 > b->cap) {
                while (b->n + n + 1 > b->cap)
                        b->cap = b->cap ? b->cap * 2 : 65536;
                b->d = xrealloc(b->d, b->cap);
        }
        memcpy(b->d + b->n, p, n);
        b->n += n;
        b->d[b->n] = '\0';
}

/* Append s as a JSON string: quoted, '"' and '\\' escaped, control bytes and bytes >= 0x7f as \u escapes. */
static void sb_json_str(struct sbuf *b, const char *s)
{
        sb_put(b, "\"", 1);
        const char *run = s;
        for (const unsigned char *p = (const unsigned char *)s;; p++) {
                unsigned char ch = *p;
                if (ch != 0 && ch != '"' && ch != '\\' && ch >= 0x20 && ch < 0x7f)
                        continue;
                sb_put(b, run, (size_t)((const char *)p - run));
                if (ch == 0)
                        break;
                char esc[8];
                if (ch == '"' || ch == '\\') {
                        esc[0] = '\\', esc[1] = (char)ch;
                        sb_put(b, esc, 2);
                } else {
                        static const char hex[] = "0123456789abcdef";
                        unsigned v = ch < 0x7f ? ch : '?';
                        memcpy(esc, "\\u00", 4);
                        esc[4] = hex[v >> 4], esc[5] = hex[v & 15];
                        sb_put(b, esc, 6);
                }
                run = (const char *)p + 1;
        }
        sb_put(b, "\"", 1);
}

static void ship(struct access_shipper *s, struct http_client *hc)
{
        struct sbuf b = { 0 };
        size_t count = 0;
        sb_put(&b, "{\"lines\":[", 10);
        for (size_t i = 0; i < s->n; i++) {
                struct access_queue *q = s->queues[i];
                pthread_mutex_lock(&q->mu);
                struct access_line *v = q->v;
                size_t n = q->n;
                q->v = NULL;
                q->n = q->cap = 0;
                pthread_mutex_unlock(&q->mu);
                for (size_t k = 0; k < n; k++) {
                        if (count++)
                                sb_put(&b, ",", 1);
                        sb_put(&b, "{\"app_guid\":", 12);
                        sb_json_str(&b, v[k].app_guid);
                        sb_put(&b, ",\"timestamp\":", 13);
                        sb_json_str(&b, v[k].time);
                        sb_put(&b, ",\"message\":", 11);
                        sb_json_str(&b, v[k].text);
                        sb_put(&b, "}", 1);
                }
                lines_free(v, n);
        }
        sb_put(&b, "]}", 2);
        if (count > 0) {
                struct http_result res = { 0 };
                _cleanup_berr_ struct berr *e = NULL;
                if (http_request(hc, "POST", s->url, NULL, "application/json", b.d, b.n, &res, &e) < 0 ||
                    res.status >= 300) {
                        static int64_t warned;
                        if (router_now_ms() - warned > 30000) {
                                warned = router_now_ms();
                                log_warn("access logs: %s", e ? berr_msg(e) : "the controller refused them");
                        }
                }
                http_result_free(&res);
        }
        free(b.d);
}

static void *shipper_thread(void *arg)
{
        struct access_shipper *s = arg;
        /* Below the workers: a batch being formatted never delays a request (per-thread nice, CFS). */
        if (setpriority(PRIO_PROCESS, (id_t)gettid(), 10) < 0)
                log_debug("access logs: setpriority: %s", strerror(errno));
        struct http_client *hc = NULL;
        struct http_client_opts o = { .timeout_ms = AL_TIMEOUT_MS, .connect_timeout_ms = 2000 };
        if (http_client_new(&o, &hc, NULL) == 0)
                http_client_set_bearer(hc, s->token);
        pthread_mutex_lock(&s->mu);
        while (!s->stop) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += AL_FLUSH_MS * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                pthread_cond_timedwait(&s->cond, &s->mu, &ts);
                bool last = s->stop;
                pthread_mutex_unlock(&s->mu);
                if (hc)
                        ship(s, hc); /* a last batch at stop: the drained requests' lines */
                pthread_mutex_lock(&s->mu);
                if (last)
                        break;
        }
        pthread_mutex_unlock(&s->mu);
        http_client_free(hc);
        return NULL;
}

int access_shipper_start(const struct router_opts *o, struct access_queue *const *queues, size_t n,
                         struct access_shipper **ret, struct berr **err)
{
        struct access_shipper *s = xcalloc(1, sizeof(*s));
        size_t cl = strlen(o->controller);
        while (cl > 0 && o->controller[cl - 1] == '/')
                cl--;
        s->url = xasprintf("%.*s/internal/v1/logs", (int)cl, o->controller);
        s->token = xstrdup(o->token ? o->token : "");
        s->queues = queues;
        s->n = n;
        pthread_mutex_init(&s->mu, NULL);
        pthread_cond_init(&s->cond, NULL);
        int e = pthread_create(&s->thread, NULL, shipper_thread, s);
        if (e != 0) {
                free(s->url);
                free(s->token);
                free(s);
                return berr_set_errno(err, -e, "access logs: start the shipper thread");
        }
        *ret = s;
        return 0;
}

void access_shipper_stop(struct access_shipper *s)
{
        if (!s)
                return;
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
        explicit_bzero(s->token, strlen(s->token));
        free(s->token);
        free(s->url);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cond);
        free(s);
}
