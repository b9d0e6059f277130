/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Access logs: each worker queues one line per routed request (Gorouter's access-log format); a shipper
 * thread POSTs them in batches to the controller, which adds them to the app's logs as source RTR
 * (docs/PLATFORM.md "Internal API: router → controller"). Nothing on the request path waits for it: a full
 * queue or an unreachable controller drops lines and counts them.
 */
#include <endian.h>
#include <errno.h>
#include <linux/capability.h>
#include <sched.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "lib/http_client.h"
#include "lib/json.h"
#include "lib/log.h"
#include "router/router_internal.h"

#define AL_TIMEOUT_MS 5000
/*
 * The most a POST hands the kernel in one write (curl's least upload buffer; its default is 64 KiB). On
 * loopback a write also runs the receiver's TCP input, and this kernel does not preempt a thread inside a
 * system call, so a worker woken meanwhile waits for the write to end even though the shipper is
 * SCHED_IDLE. At 11,600 requests/s (1 connection, bench/router.sh) the shipper spends 1.5 % of the time in
 * system calls (60 ms in 4 s), as large a share as p99 looks at; in 64 KiB writes, that is stretches of
 * 50-140 µs (timed by strace). Two sets of 20 interleaved rounds at 1 connection, median p99: 310 and
 * 214 µs with 64 KiB writes, 204 and 183 µs with 16 KiB ones, nginx 202 and 184 µs.
 */
#define AL_SEND_CHUNK 16384
/*
 * The POSTs go zstd-compressed (level 1: about 12 times smaller, at about 0.7 µs of the shipper's time per
 * line, which a worker's wake-up preempts, as it does not preempt the system calls that send the bytes). What
 * the shipper sends and the controller receives on the proxy's CPU is what moved p99 at 1 connection: two
 * sets of 20 interleaved rounds (bench/router.sh's set-up), median p99 with a plain body 211, 203 µs;
 * compressed 175, 194 µs; with no access log at all 176, 188 µs; nginx 198, 194 µs. A controller that answers
 * 415 gets plain JSON from then on.
 */
#define AL_ZSTD_LEVEL 1

void access_queue_init(struct access_queue *q)
{
        *q = (struct access_queue){ 0 };
        pthread_mutex_init(&q->mu, NULL);
}

static void batch_free(struct access_batch *b)
{
        free(b->d);
        *b = (struct access_batch){ 0 };
}

void access_queue_destroy(struct access_queue *q)
{
        batch_free(&q->cur);
        pthread_mutex_destroy(&q->mu);
}

struct sbuf {
        char *d;
        size_t n, cap;
};

struct access_shipper {
        pthread_t thread;
        pthread_mutex_t mu;
        pthread_cond_t cond;
        bool stop;
        char *url, *token;
        struct access_queue *const *queues;
        struct access_batch *taken; /* per queue: the batch last taken from it, emptied and handed back */
        size_t *inbody;             /* per queue: its lines in the body being built */
        size_t n;
        struct sbuf body;  /* the JSON body, kept between batches (no allocation once it has grown) */
        struct sbuf zbody; /* the same compressed (kept likewise) */
        ZSTD_CCtx *zctx;   /* NULL: the bodies go plain (the controller refused zstd, or no memory) */
        bool can_idle;     /* CAP_SYS_NICE: may leave SCHED_IDLE again (see shipper_sched) */
        _Atomic pid_t tid; /* the shipper thread's, once it runs with can_idle (0 before) */
        bool kicked;       /* under mu: a worker's batch reached AL_SHIP_BYTES */
        _Atomic bool busy; /* set with kicked, cleared once no kicked batch is left (access_queue_shipping) */
        unsigned flush_ms; /* the timer: ship at least this often */
};

/*
 * Wake the shipper before its timer: a worker's batch reached AL_SHIP_BYTES. Shipping in small batches keeps
 * the shipper's buffers (the lines and the JSON body) small enough to stay in the caches the workers use and
 * its batches small enough to run as SCHED_IDLE (shipper_sched). Measured at 36,000 requests/s with one
 * worker: a 200 ms batch was 7,000 lines (3 MB), which put the shipper at nice 10, where the scheduler can
 * let it finish a slice before a woken worker runs. Once per batch: the worker pays one futex wake-up.
 */
static void shipper_kick(struct access_shipper *s)
{
        pthread_mutex_lock(&s->mu);
        s->kicked = true;
        atomic_store_explicit(&s->busy, true, memory_order_relaxed);
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->mu);
}

/*
 * A worker's batch reached a quarter of the queue's limits: the shipper, if it runs as SCHED_IDLE, is not
 * keeping up, most likely because the workers keep the CPUs busy (an idle-class thread then gets almost
 * none: measured at 1,000 connections, 3 % of a CPU and a third of the lines dropped at the queue limits).
 * It cannot lift itself out of SCHED_IDLE before it has shipped, so the worker lifts it to SCHED_OTHER at
 * nice 10 (CAP_SYS_NICE, which can_idle has checked); shipper_sched puts it back once batches are small.
 */
static void shipper_raise(struct access_shipper *s)
{
        pid_t tid = atomic_load_explicit(&s->tid, memory_order_relaxed);
        struct sched_param sp = { 0 };
        if (tid > 0 && sched_getscheduler(tid) == SCHED_IDLE &&
            sched_setscheduler(tid, SCHED_OTHER, &sp) == 0)
                (void)setpriority(PRIO_PROCESS, (id_t)tid, 10);
}

void access_queue_push(struct access_queue *q, const char *app_guid, const char *time, const char *text,
                       size_t text_len)
{
        size_t gl = strlen(app_guid), tl = strlen(time);
        size_t need = gl + 1 + tl + 1 + text_len + 1;
        pthread_mutex_lock(&q->mu);
        struct access_batch *b = &q->cur;
        if (b->n >= AL_QUEUE_MAX || b->len + need > AL_QUEUE_BYTES) {
                pthread_mutex_unlock(&q->mu);
                atomic_fetch_add_explicit(&q->dropped, 1, memory_order_relaxed);
                return;
        }
        if (b->len + need > b->cap) {
                /* Rare: the shipper hands back its emptied buffer; capacity carries over between batches. */
                size_t cap = b->cap ? b->cap : AL_BATCH_INIT;
                while (cap < b->len + need)
                        cap *= 2;
                b->d = xrealloc(b->d, cap);
                b->cap = cap;
        }
        char *d = b->d + b->len;
        memcpy(d, app_guid, gl + 1);
        d += gl + 1;
        memcpy(d, time, tl + 1);
        d += tl + 1;
        memcpy(d, text, text_len);
        d[text_len] = '\0';
        b->len += need;
        b->n++;
        bool kick = b->len >= AL_SHIP_BYTES && !b->kicked;
        if (kick)
                b->kicked = true;
        bool behind = (b->n >= AL_QUEUE_MAX / 4 || b->len >= AL_QUEUE_BYTES / 4) && !b->raised;
        if (behind)
                b->raised = true;
        pthread_mutex_unlock(&q->mu);
        struct access_shipper *s =
            kick || behind ? atomic_load_explicit(&q->shipper, memory_order_acquire) : NULL;
        if (s && kick)
                shipper_kick(s);
        if (s && behind)
                shipper_raise(s);
}

/*
 * Whether the shipper has a kicked batch to take or is shipping one. A busy-polling worker (worker_main)
 * would keep its CPU from this SCHED_IDLE thread: measured at 64 connections with a 1 ms window, the
 * shipper got 2 % of the CPU and 38 % of the lines were dropped at the queue limits. So workers sleep when
 * they have no events while this holds.
 */
bool access_queue_shipping(const struct access_queue *q)
{
        struct access_shipper *s = atomic_load_explicit(&q->shipper, memory_order_acquire);
        return s && atomic_load_explicit(&s->busy, memory_order_relaxed);
}

uint64_t access_queue_dropped(const struct access_queue *q)
{
        return atomic_load_explicit(&q->dropped, memory_order_relaxed);
}

/* Make room for n more bytes (and a NUL). */
static void sb_reserve(struct sbuf *b, size_t n)
{
        if (b->n + n + 1 <= b->cap)
                return;
        while (b->n + n + 1 > b->cap)
                b->cap = b->cap ? b->cap * 2 : 65536;
        b->d = xrealloc(b->d, b->cap);
}

static void sb_put(struct sbuf *b, const char *p, size_t n)
{
        sb_reserve(b, n);
        memcpy(b->d + b->n, p, n);
        b->n += n;
        b->d[b->n] = '\0';
}

/* Bytes that access_json_escape passes through as they are: printable ASCII except '"' and '\\'. */
static bool json_plain(unsigned char ch)
{
        return ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\';
}

/*
 * The bytes of w (8 of the string, in memory order) that are not json_plain get their high bit set; a byte
 * after the first such one may be marked too (a borrow or carry moves up), so only the lowest mark counts.
 */
static inline uint64_t json_marks(uint64_t w)
{
        const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
        uint64_t q = w ^ (ones * '"'), bs = w ^ (ones * '\\');
        uint64_t ctl = (w - ones * 0x20) & ~w; /* < 0x20 */
        uint64_t quote = (q - ones) & ~q, backslash = (bs - ones) & ~bs;
        uint64_t top = (w + ones) | w; /* >= 0x7f */
        return (ctl | quote | backslash | top) & high;
}

size_t access_json_escape(char *out, const char *s, size_t len)
{
        static const char hex[] = "0123456789abcdef";
        char *o = out;
        size_t i = 0;
        *o++ = '"';
        for (;;) {
                /*
                 * Eight bytes at a time while none needs an escape (a line has one about every 20 bytes: its
                 * quoted fields); the word is stored whole and o moves past its plain bytes only. The store
                 * stays inside 6 * len + 2: before it, o is at most 1 + 6 * i and i + 8 <= len.
                 */
                while (i + 8 <= len) {
                        uint64_t w, m;
                        memcpy(&w, s + i, 8);
                        memcpy(o, &w, 8);
                        m = json_marks(le64toh(w));
                        if (m) {
                                size_t k = (size_t)__builtin_ctzll(m) >> 3;
                                o += k, i += k;
                                break;
                        }
                        o += 8, i += 8;
                }
                if (i >= len)
                        break;
                unsigned char ch = (unsigned char)s[i++];
                if (json_plain(ch)) {
                        *o++ = (char)ch;
                } else if (ch == '"' || ch == '\\') {
                        *o++ = '\\';
                        *o++ = (char)ch;
                } else {
                        unsigned v = ch < 0x7f ? ch : '?';
                        memcpy(o, "\\u00", 4);
                        o[4] = hex[v >> 4], o[5] = hex[v & 15];
                        o += 6;
                }
        }
        *o++ = '"';
        return (size_t)(o - out);
}

/* Append s (len bytes) as a JSON string (access_json_escape). */
static void sb_json_str(struct sbuf *b, const char *s, size_t len)
{
        sb_reserve(b, 6 * len + 2); /* the longest escape is 6 bytes */
        b->n += access_json_escape(b->d + b->n, s, len);
        b->d[b->n] = '\0';
}

#define AL_BODY_START "{\"lines\":["

/* POST the JSON body b, compressed unless s->zctx is NULL (or compressing failed). */
static int post_body(struct access_shipper *s, struct http_client *hc, const struct sbuf *b,
                     struct http_result *res, struct berr **err)
{
        if (s->zctx) {
                struct sbuf *z = &s->zbody;
                z->n = 0;
                sb_reserve(z, ZSTD_compressBound(b->n));
                size_t zn = ZSTD_compressCCtx(s->zctx, z->d, z->cap, b->d, b->n, AL_ZSTD_LEVEL);
                if (!ZSTD_isError(zn)) {
                        static const char *const zh[] = { "Content-Encoding: zstd", NULL };
                        return http_request(hc, "POST", s->url, zh, "application/json", z->d, zn, res, err);
                }
        }
        return http_request(hc, "POST", s->url, NULL, "application/json", b->d, b->n, res, err);
}

/*
 * POST the body built so far (if it holds a line: s->inbody[i] of them from worker i) and start the next.
 * Lines the controller does not accept are lost, and counted as dropped.
 */
static void post_lines(struct access_shipper *s, struct http_client *hc, struct sbuf *b)
{
        if (b->n > strlen(AL_BODY_START)) {
                sb_put(b, "]}", 2);
                struct http_result res = { 0 };
                _cleanup_berr_ struct berr *e = NULL;
                int r = post_body(s, hc, b, &res, &e);
                if (r == 0 && res.status == 415 && s->zctx) {
                        /* A controller without zstd: plain JSON from now on, this body too. */
                        log_info("access logs: the controller does not take zstd bodies; sending them plain");
                        ZSTD_freeCCtx(s->zctx);
                        s->zctx = NULL;
                        http_result_free(&res);
                        res = (struct http_result){ 0 };
                        r = post_body(s, hc, b, &res, &e);
                }
                if (r < 0 || res.status >= 300) {
                        for (size_t i = 0; i < s->n; i++)
                                atomic_fetch_add_explicit(&s->queues[i]->dropped, s->inbody[i],
                                                          memory_order_relaxed);
                        static int64_t warned;
                        if (router_now_ms() - warned > 30000) {
                                warned = router_now_ms();
                                if (e)
                                        log_warn("access logs: %s", berr_msg(e));
                                else
                                        log_warn("access logs: the controller answered %ld",
                                                 (long)res.status);
                        }
                }
                http_result_free(&res);
        }
        memset(s->inbody, 0, s->n * sizeof(*s->inbody));
        b->n = 0;
        sb_put(b, AL_BODY_START, strlen(AL_BODY_START));
}

/*
 * Take every worker's batch (a pointer swap under its lock: the worker never waits for more than that),
 * build JSON bodies from them here, off the request path, and POST them, each at most about AL_POST_BYTES
 * (a batch that grew while the controller was slow goes in several: the controller takes 1 MiB at most).
 */
static void ship(struct access_shipper *s, struct http_client *hc)
{
        struct sbuf b = s->body;
        post_lines(s, hc, &b); /* starts the body */
        for (size_t i = 0; i < s->n; i++) {
                struct access_queue *q = s->queues[i];
                struct access_batch *t = &s->taken[i];
                t->len = t->n = 0;
                pthread_mutex_lock(&q->mu);
                struct access_batch tmp = q->cur;
                q->cur = *t;
                q->cur.kicked = q->cur.raised = false;
                *t = tmp;
                pthread_mutex_unlock(&q->mu);
                const char *p = t->d, *end = t->d + t->len;
                while (p < end) {
                        const char *guid = p;
                        size_t gl = strlen(guid);
                        const char *time = guid + gl + 1;
                        size_t tl = strlen(time);
                        const char *text = time + tl + 1;
                        size_t xl = strlen(text);
                        p = text + xl + 1;
                        if (b.n > strlen(AL_BODY_START))
                                sb_put(&b, ",", 1);
                        sb_put(&b, "{\"app_guid\":", 12);
                        sb_json_str(&b, guid, gl);
                        sb_put(&b, ",\"timestamp\":", 13);
                        sb_json_str(&b, time, tl);
                        sb_put(&b, ",\"message\":", 11);
                        sb_json_str(&b, text, xl);
                        sb_put(&b, "}", 1);
                        s->inbody[i]++;
                        if (b.n >= AL_POST_BYTES)
                                post_lines(s, hc, &b);
                }
        }
        post_lines(s, hc, &b);
        s->body = b;
}

/* Whether this thread has CAP_SYS_NICE, which leaving SCHED_IDLE needs (sched(7)). */
static bool have_cap_sys_nice(void)
{
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
        struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = { 0 };
        if (syscall(SYS_capget, &h, d) < 0)
                return false;
        return (d[CAP_TO_INDEX(CAP_SYS_NICE)].effective & CAP_TO_MASK(CAP_SYS_NICE)) != 0;
}

/*
 * The shipper's scheduling class. It runs as SCHED_IDLE while the batches are small: it then only ever gets
 * a CPU no worker wants, and a worker's wake-up preempts it at once (a nice-10 thread can keep its CPU until
 * its slice ends). With the bench's 1-connection load its tail latency came closer to nginx's. A worker that
 * keeps its CPU busy would starve an idle-class thread, so when a batch reaches a quarter of a queue's limits
 * the worker lifts the shipper to SCHED_OTHER at nice 10 (shipper_raise); here, after shipping, it goes
 * back to SCHED_IDLE once its batches are under an eighth. Leaving SCHED_IDLE needs CAP_SYS_NICE; without it
 * the shipper stays at nice 10 throughout.
 */
static void shipper_sched(const struct access_shipper *s, size_t most_lines, size_t most_bytes)
{
        if (!s->can_idle || most_lines >= AL_QUEUE_MAX / 8 || most_bytes >= AL_QUEUE_BYTES / 8)
                return;
        struct sched_param sp = { 0 };
        if (sched_getscheduler(0) != SCHED_IDLE && sched_setscheduler(0, SCHED_IDLE, &sp) < 0)
                log_debug("access logs: SCHED_IDLE: %s", strerror(errno));
}

static void *shipper_thread(void *arg)
{
        struct access_shipper *s = arg;
        /* Below the workers: a batch being formatted or sent never delays a request (shipper_sched). */
        if (setpriority(PRIO_PROCESS, (id_t)gettid(), 10) < 0)
                log_debug("access logs: setpriority: %s", strerror(errno));
        s->can_idle = have_cap_sys_nice();
        if (s->can_idle)
                atomic_store_explicit(&s->tid, gettid(), memory_order_relaxed);
        shipper_sched(s, 0, 0);
        struct http_client *hc = NULL;
        struct http_client_opts o = { .timeout_ms = AL_TIMEOUT_MS,
                                      .connect_timeout_ms = 2000,
                                      .send_chunk = AL_SEND_CHUNK };
        if (http_client_new(&o, &hc, NULL) == 0)
                http_client_set_bearer(hc, s->token);
        pthread_mutex_lock(&s->mu);
        while (!s->stop) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_sec += s->flush_ms / 1000;
                ts.tv_nsec += (long)(s->flush_ms % 1000) * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                if (!s->kicked && !s->stop)
                        pthread_cond_timedwait(&s->cond, &s->mu, &ts);
                s->kicked = false;
                bool last = s->stop;
                pthread_mutex_unlock(&s->mu);
                if (hc) {
                        ship(s, hc); /* a last batch at stop: the drained requests' lines */
                        size_t most_lines = 0, most_bytes = 0;
                        for (size_t i = 0; i < s->n; i++) {
                                most_lines = MAX(most_lines, s->taken[i].n);
                                most_bytes = MAX(most_bytes, s->taken[i].len);
                        }
                        shipper_sched(s, most_lines, most_bytes);
                }
                pthread_mutex_lock(&s->mu);
                if (!s->kicked)
                        atomic_store_explicit(&s->busy, false, memory_order_relaxed);
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
        s->flush_ms = o->access_log_flush_ms ? o->access_log_flush_ms : AL_FLUSH_MS;
        s->queues = queues;
        s->taken = xcalloc(n ? n : 1, sizeof(*s->taken));
        s->inbody = xcalloc(n ? n : 1, sizeof(*s->inbody));
        s->n = n;
        s->zctx = ZSTD_createCCtx(); /* NULL: plain bodies */
        pthread_mutex_init(&s->mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the timer does not jump with the wall clock */
        pthread_cond_init(&s->cond, &ca);
        pthread_condattr_destroy(&ca);
        int e = pthread_create(&s->thread, NULL, shipper_thread, s);
        if (e != 0) {
                ZSTD_freeCCtx(s->zctx);
                free(s->url);
                free(s->token);
                free(s->taken);
                free(s->inbody);
                free(s);
                return berr_set_errno(err, -e, "access logs: start the shipper thread");
        }
        for (size_t i = 0; i < n; i++)
                atomic_store_explicit(&queues[i]->shipper, s, memory_order_release);
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
        for (size_t i = 0; i < s->n; i++)
                atomic_store_explicit(&s->queues[i]->shipper, NULL, memory_order_release);
        explicit_bzero(s->token, strlen(s->token));
        free(s->token);
        free(s->url);
        for (size_t i = 0; i < s->n; i++)
                batch_free(&s->taken[i]);
        free(s->taken);
        free(s->inbody);
        free(s->body.d);
        free(s->zbody.d);
        ZSTD_freeCCtx(s->zctx);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cond);
        free(s);
}
