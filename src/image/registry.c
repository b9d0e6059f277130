/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Distribution API v2 client on libcurl: transport (pooled multi handles, TLS trust, manual redirects,
 * retries), the /v2/ ping, manifests and streamed blobs. Authentication lives in registry_auth.c.
 *
 * Every request is driven through a curl multi handle in the calling thread, so one code path serves the
 * synchronous requests (ping, tokens, manifests) and the pull-style blob stream, which pauses the transfer
 * when its buffer is full. Each client keeps a few idle (multi, easy) pairs: connections live in the
 * multi handle's cache and are reused by the next request on that pair. DNS and TLS sessions are shared
 * process-wide through a locked CURLSH; connections are not shared across threads (libcurl does not
 * support that), each stream owns its pair while it runs.
 */
#include <ctype.h>
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "berth-config.h"
#include "image/registry_internal.h"
#include "image/manifest.h"
#include "lib/fs.h"
#include "lib/json.h"
#include "lib/log.h"

#define REGISTRY_MAX_REDIRECTS   5
#define REGISTRY_MAX_ATTEMPTS    5
#define REGISTRY_BACKOFF_BASE_MS 250
#define REGISTRY_WAIT_BUDGET_MS  60000 /* total sleeping per request, Retry-After included */
#define REGISTRY_CONNECT_TIMEOUT 15L
#define REGISTRY_LOW_SPEED_LIMIT 1024L /* bytes/s ... */
#define REGISTRY_LOW_SPEED_TIME  60L   /* ... for this long: the peer is stuck */
#define REGISTRY_RECV_BUFFER     (512L * 1024)
#define REGISTRY_CA_FILE_MAX     (16 * 1024 * 1024)
#ifndef BLOB_RING_SIZE                   /* a test build may shrink it to exercise pausing */
#define BLOB_RING_SIZE (2 * 1024 * 1024) /* per stream; >= 2 x the receive buffer */
#endif
#define BLOB_RESUME_ATTEMPTS 5             /* without progress between them */
#define BLOB_RESUME_PROGRESS (1024 * 1024) /* this much progress resets the count */
#define BLOB_RESUME_MAX      64            /* in total, whatever the progress */
#define SYSTEM_CA_BUNDLE     "/etc/ssl/certs/ca-certificates.crt"

/* ---- libcurl global state ----------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;
static CURLSH *curl_share;
static pthread_mutex_t curl_share_locks[CURL_LOCK_DATA_LAST];

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userp)
{
        (void)h, (void)access, (void)userp;
        if (data >= 0 && data < CURL_LOCK_DATA_LAST)
                pthread_mutex_lock(&curl_share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *userp)
{
        (void)h, (void)userp;
        if (data >= 0 && data < CURL_LOCK_DATA_LAST)
                pthread_mutex_unlock(&curl_share_locks[data]);
}

/* Once per process: curl_global_init is not thread-safe in 7.88. The share lives until exit. */
static void curl_setup_once(void)
{
        curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
        if (curl_init_result != CURLE_OK)
                return;
        for (size_t i = 0; i < ARRAY_SIZE(curl_share_locks); i++)
                pthread_mutex_init(&curl_share_locks[i], NULL);
        curl_share = curl_share_init();
        if (!curl_share)
                abort();
        curl_share_setopt(curl_share, CURLSHOPT_LOCKFUNC, share_lock);
        curl_share_setopt(curl_share, CURLSHOPT_UNLOCKFUNC, share_unlock);
        curl_share_setopt(curl_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
        curl_share_setopt(curl_share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
}

/* ---- small pure helpers (unit-tested) ------------------------------------------------------------- */

/*
 * Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date. Returns 0 with the delay in seconds,
 * capped at REGISTRY_RETRY_AFTER_MAX (a date in the past is 0), or -EINVAL.
 */
BERTH_STATIC int registry_retry_after_parse(const char *value, time_t now, unsigned *ret_seconds)
{
        const char *p = value;
        while (*p == ' ' || *p == '\t')
                p++;
        if (*p >= '0' && *p <= '9') {
                unsigned long long v = 0;
                while (*p >= '0' && *p <= '9') {
                        if (v < 1000000)
                                v = v * 10 + (unsigned)(*p - '0');
                        p++;
                }
                while (*p == ' ' || *p == '\t')
                        p++;
                if (*p)
                        return -EINVAL;
                *ret_seconds = (unsigned)MIN(v, (unsigned long long)REGISTRY_RETRY_AFTER_MAX);
                return 0;
        }
        /* curl_getdate is lenient; require at least the shape of an IMF-fixdate/RFC 850/asctime date. */
        if (strlen(p) < 20 || strlen(p) > 64)
                return -EINVAL;
        time_t t = curl_getdate(p, NULL);
        if (t == (time_t)-1)
                return -EINVAL;
        *ret_seconds =
            t <= now ? 0 : (unsigned)MIN((long long)(t - now), (long long)REGISTRY_RETRY_AFTER_MAX);
        return 0;
}

static CURLU *url_parse(const char *url)
{
        CURLU *u = curl_url();
        if (!u)
                abort();
        if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
                curl_url_cleanup(u);
                return NULL;
        }
        return u;
}

static char *url_part(CURLU *u, CURLUPart what, unsigned flags)
{
        char *s = NULL;
        if (curl_url_get(u, what, &s, flags) != CURLUE_OK)
                return NULL;
        char *r = xstrdup(s);
        curl_free(s);
        return r;
}

/* scheme, host and port (default port filled in) are equal, case-insensitively (RFC 6454 origin). */
BERTH_STATIC bool registry_url_same_origin(const char *a, const char *b)
{
        CURLU *ua = url_parse(a), *ub = url_parse(b);
        bool same = false;
        if (ua && ub) {
                _cleanup_free_ char *sa = url_part(ua, CURLUPART_SCHEME, 0);
                _cleanup_free_ char *sb = url_part(ub, CURLUPART_SCHEME, 0);
                _cleanup_free_ char *ha = url_part(ua, CURLUPART_HOST, 0);
                _cleanup_free_ char *hb = url_part(ub, CURLUPART_HOST, 0);
                _cleanup_free_ char *pa = url_part(ua, CURLUPART_PORT, CURLU_DEFAULT_PORT);
                _cleanup_free_ char *pb = url_part(ub, CURLUPART_PORT, CURLU_DEFAULT_PORT);
                same = sa && sb && ha && hb && pa && pb && strcasecmp(sa, sb) == 0 &&
                       strcasecmp(ha, hb) == 0 && strcmp(pa, pb) == 0;
        }
        curl_url_cleanup(ua);
        curl_url_cleanup(ub);
        return same;
}

/*
 * Resolve a Location header against the URL that answered it (RFC 3986 §5; relative references
 * allowed). The result must be http(s); user:password@ and #fragment are dropped. Caller frees *ret.
 */
BERTH_STATIC int registry_url_resolve(const char *base, const char *location, char **ret)
{
        CURLU *u = url_parse(base);
        if (!u)
                return -EINVAL;
        int r = -EINVAL;
        if (curl_url_set(u, CURLUPART_URL, location, 0) == CURLUE_OK) {
                _cleanup_free_ char *scheme = url_part(u, CURLUPART_SCHEME, 0);
                if (scheme && (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0)) {
                        curl_url_set(u, CURLUPART_USER, NULL, 0);
                        curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
                        curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);
                        char *s = url_part(u, CURLUPART_URL, 0);
                        if (s) {
                                *ret = s;
                                r = 0;
                        }
                }
        }
        curl_url_cleanup(u);
        return r;
}

/* "bytes <first>-<last>/<total|*>" → values (total -1 for '*'). Returns 0 or -EINVAL. */
BERTH_STATIC int registry_content_range_parse(const char *v, uint64_t *ret_first, uint64_t *ret_last,
                                              int64_t *ret_total)
{
        if (strncasecmp(v, "bytes", 5) != 0)
                return -EINVAL;
        const char *p = v + 5;
        if (*p != ' ')
                return -EINVAL;
        while (*p == ' ')
                p++;
        char *end;
        if (*p < '0' || *p > '9')
                return -EINVAL;
        errno = 0;
        unsigned long long first = strtoull(p, &end, 10);
        if (errno || *end != '-' || end[1] < '0' || end[1] > '9')
                return -EINVAL;
        unsigned long long last = strtoull(end + 1, &end, 10);
        if (errno || *end != '/' || last < first)
                return -EINVAL;
        p = end + 1;
        int64_t total;
        if (p[0] == '*' && p[1] == '\0') {
                total = -1;
        } else {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                unsigned long long t = strtoull(p, &end, 10);
                if (errno || *end != '\0' || t > INT64_MAX || last >= t)
                        return -EINVAL;
                total = (int64_t)t;
        }
        *ret_first = first;
        *ret_last = last;
        *ret_total = total;
        return 0;
}

/* scheme://host[:port]/path for messages and logs: queries of redirect targets carry signatures. */
static char *url_for_display(const char *url)
{
        CURLU *u = url_parse(url);
        if (!u)
                return xstrdup("(invalid URL)");
        curl_url_set(u, CURLUPART_USER, NULL, 0);
        curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
        curl_url_set(u, CURLUPART_QUERY, NULL, 0);
        curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);
        char *s = url_part(u, CURLUPART_URL, 0);
        curl_url_cleanup(u);
        return s ? s : xstrdup("(invalid URL)");
}

/* "host[:port]" of a URL as the configuration spells hosts (port only when explicit). */
static char *url_config_host(const char *url)
{
        CURLU *u = url_parse(url);
        if (!u)
                return NULL;
        _cleanup_free_ char *host = url_part(u, CURLUPART_HOST, 0);
        _cleanup_free_ char *port = url_part(u, CURLUPART_PORT, 0);
        curl_url_cleanup(u);
        if (!host)
                return NULL;
        return port ? xasprintf("%s:%s", host, port) : xstrdup(host);
}

static bool url_is_https(const char *url)
{
        return strncasecmp(url, "https://", 8) == 0;
}

/* ---- client configuration lookups ------------------------------------------------------------------ */

static const struct registry_host_tls *host_lookup(const struct registry_client *c, const char *host)
{
        for (size_t i = 0; i < c->n_hosts; i++)
                if (strcasecmp(c->hosts[i].host, host) == 0)
                        return &c->hosts[i];
        return NULL;
}

bool registry_url_insecure(const struct registry_client *c, const char *url)
{
        _cleanup_free_ char *host = url_config_host(url);
        if (!host)
                return false;
        if (image_ref_domain_is_loopback(host))
                return true;
        const struct registry_host_tls *h = host_lookup(c, host);
        if (h && h->insecure)
                return true;
        /* The registry's own entry may be spelled as its domain (docker.io) rather than its API host. */
        return c->self && c->self->insecure && strcasecmp(host, c->api_host) == 0;
}

/* ---- connections and transfers --------------------------------------------------------------------- */

struct registry_conn {
        CURLM *multi; /* owns the connection cache: keep the pair together */
        CURL *easy;
        char errbuf[CURL_ERROR_SIZE];
};

static void conn_destroy(struct registry_conn *cn)
{
        if (!cn)
                return;
        curl_easy_cleanup(cn->easy);
        curl_multi_cleanup(cn->multi);
        free(cn);
}

static struct registry_conn *conn_acquire(struct registry_client *c)
{
        pthread_mutex_lock(&c->lock);
        struct registry_conn *cn = c->n_pool ? c->pool[--c->n_pool] : NULL;
        pthread_mutex_unlock(&c->lock);
        if (cn)
                return cn;
        cn = xcalloc(1, sizeof(*cn));
        cn->multi = curl_multi_init();
        cn->easy = curl_easy_init();
        if (!cn->multi || !cn->easy)
                abort();
        return cn;
}

static void conn_release(struct registry_client *c, struct registry_conn *cn)
{
        if (!cn)
                return;
        pthread_mutex_lock(&c->lock);
        if (c->n_pool < REGISTRY_POOL_MAX) {
                c->pool[c->n_pool++] = cn;
                cn = NULL;
        }
        pthread_mutex_unlock(&c->lock);
        conn_destroy(cn);
}

/* One HTTP exchange on a conn, plus what we keep of its response. */
struct xfer {
        struct registry_conn *cn;
        struct curl_slist *headers;
        bool added;

        bool done;
        CURLcode result;
        long os_errno;

        long status;
        bool headers_done;
        bool header_overflow;
        size_t header_bytes;
        char *content_type, *docker_digest, *location, *retry_after, *content_range;
        char *www_auth[REGISTRY_WWW_AUTH_MAX];
        size_t n_www_auth;

        bool body_started;
        bool payload; /* 2xx: the body is the payload, else an error body */
        char *ebody;  /* error body, capped */
        size_t elen;
        bool etrunc; /* we stopped reading an over-long error body (CURLE_WRITE_ERROR is ours) */

        bool stream;         /* payload into the fixed ring (pbuf, pcap), pausing when full */
        char *pbuf;          /* sync: grows up to pmax; stream: ring of pcap bytes */
        size_t plen;         /* bytes in pbuf (stream: write position) */
        size_t pcap;         /* allocated */
        size_t pmax;         /* sync: payload cap */
        size_t prpos;        /* stream: read position */
        bool paused;         /* stream: the write callback returned CURL_WRITEFUNC_PAUSE */
        bool too_big;        /* payload exceeded its cap: transfer aborted */
        uint64_t range_from; /* stream: Range start asked for (0: none) */
        uint64_t skip;       /* stream: bytes still to drop (200 answer to a Range request) */
        uint64_t received;   /* payload bytes accepted */
        uint64_t limit;      /* stream: payload bytes allowed */
};

static void slist_free_wiped(struct curl_slist *l)
{
        /* The list may hold an Authorization line. */
        for (struct curl_slist *p = l; p; p = p->next)
                explicit_bzero(p->data, strlen(p->data));
        curl_slist_free_all(l);
}

static void xfer_clear_headers(struct xfer *x)
{
        free(x->content_type);
        free(x->docker_digest);
        free(x->location);
        free(x->retry_after);
        free(x->content_range);
        x->content_type = x->docker_digest = x->location = x->retry_after = x->content_range = NULL;
        for (size_t i = 0; i < x->n_www_auth; i++)
                free(x->www_auth[i]);
        x->n_www_auth = 0;
        x->header_bytes = 0;
}

/* Detach from the multi handle (a transfer still running is aborted: its connection is closed). */
static void xfer_end(struct xfer *x)
{
        if (x->added) {
                curl_multi_remove_handle(x->cn->multi, x->cn->easy);
                x->added = false;
        }
        slist_free_wiped(x->headers);
        x->headers = NULL;
}

/* Forget the response (not the stream ring, which the blob reuses). */
static void xfer_reset_response(struct xfer *x)
{
        xfer_clear_headers(x);
        free(x->ebody);
        x->ebody = NULL;
        x->elen = 0;
        x->etrunc = false;
        x->done = x->headers_done = x->header_overflow = x->body_started = x->payload = false;
        x->result = CURLE_OK;
        x->os_errno = 0;
        x->status = 0;
        x->paused = x->too_big = false;
        x->received = 0;
        x->skip = 0;
        if (x->stream) {
                x->plen = x->prpos = 0;
        } else {
                free(x->pbuf);
                x->pbuf = NULL;
                x->plen = x->pcap = 0;
        }
}

static void xfer_free(struct xfer *x)
{
        xfer_end(x);
        xfer_reset_response(x);
        free(x->pbuf);
        x->pbuf = NULL;
}

static char *header_value_dup(const char *v, size_t n)
{
        while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
                n--;
        while (n && (*v == ' ' || *v == '\t')) {
                v++;
                n--;
        }
        return xstrndup(v, n);
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
        struct xfer *x = userdata;
        size_t len = size * nitems;
        if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0 && !x->body_started) {
                /* A new response (after 1xx, or a proxy's CONNECT answer): forget the previous one. */
                xfer_clear_headers(x);
                x->headers_done = false;
                const char *sp = memchr(buf, ' ', len);
                long st = 0;
                if (sp && (size_t)(sp - buf) + 4 <= len && isdigit((unsigned char)sp[1]) &&
                    isdigit((unsigned char)sp[2]) && isdigit((unsigned char)sp[3]))
                        st = (sp[1] - '0') * 100 + (sp[2] - '0') * 10 + (sp[3] - '0');
                x->status = st;
                return len;
        }
        if (x->headers_done)
                return len; /* trailers of a chunked body */
        if (len <= 2 && (len == 0 || buf[0] == '\r' || buf[0] == '\n')) {
                if (x->status >= 200)
                        x->headers_done = true;
                return len;
        }
        x->header_bytes += len;
        if (x->header_bytes > REGISTRY_HEADER_MAX) {
                x->header_overflow = true;
                return 0;
        }
        const char *colon = memchr(buf, ':', len);
        if (!colon)
                return len;
        size_t nl = (size_t)(colon - buf);
        const char *v = colon + 1;
        size_t vl = len - nl - 1;
#define HDR_IS(name) (nl == sizeof(name) - 1 && strncasecmp(buf, name, nl) == 0)
        char **slot = NULL;
        if (HDR_IS("Content-Type"))
                slot = &x->content_type;
        else if (HDR_IS("Docker-Content-Digest"))
                slot = &x->docker_digest;
        else if (HDR_IS("Location"))
                slot = &x->location;
        else if (HDR_IS("Retry-After"))
                slot = &x->retry_after;
        else if (HDR_IS("Content-Range"))
                slot = &x->content_range;
        else if (HDR_IS("WWW-Authenticate")) {
                if (x->n_www_auth < REGISTRY_WWW_AUTH_MAX)
                        x->www_auth[x->n_www_auth++] = header_value_dup(v, vl);
                return len;
        }
#undef HDR_IS
        if (slot) {
                free(*slot);
                *slot = header_value_dup(v, vl);
        }
        return len;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        struct xfer *x = userdata;
        size_t len = size * nmemb;
        if (!x->body_started) {
                x->body_started = true;
                x->payload = x->status >= 200 && x->status < 300;
                /* A 200 to a Range request repeats the blob from its start: drop what we have. */
                if (x->stream && x->payload && x->status == 200)
                        x->skip = x->range_from;
        }
        if (!x->payload) {
                size_t room = REGISTRY_ERROR_BODY_MAX - x->elen;
                size_t take = MIN(room, len);
                x->ebody = xrealloc(x->ebody, x->elen + take + 1);
                memcpy(x->ebody + x->elen, ptr, take);
                x->elen += take;
                x->ebody[x->elen] = '\0';
                if (take < len) {
                        x->etrunc = true;
                        return 0; /* enough to explain the error: stop reading */
                }
                return len;
        }
        if (x->stream) {
                size_t s = (size_t)MIN(x->skip, (uint64_t)len);
                const char *data = ptr + s;
                size_t dlen = len - s;
                if (dlen > 0) {
                        if (x->received + dlen > x->limit) {
                                x->too_big = true;
                                return 0;
                        }
                        if (x->pcap - x->plen < dlen && x->prpos > 0) {
                                memmove(x->pbuf, x->pbuf + x->prpos, x->plen - x->prpos);
                                x->plen -= x->prpos;
                                x->prpos = 0;
                        }
                        if (x->pcap - x->plen < dlen && x->plen == 0) {
                                /* A chunk larger than the whole ring (libcurl hands at most 16 KiB today):
                                 * grow rather than pause with nothing to hand out, which would stall. */
                                x->pbuf = xrealloc(x->pbuf, dlen);
                                x->pcap = dlen;
                        }
                        if (x->pcap - x->plen < dlen) {
                                /* libcurl keeps this chunk and hands it again after curl_easy_pause(CONT). */
                                x->paused = true;
                                return CURL_WRITEFUNC_PAUSE;
                        }
                        memcpy(x->pbuf + x->plen, data, dlen);
                        x->plen += dlen;
                        x->received += dlen;
                }
                x->skip -= s;
                return len;
        }
        if (x->plen + len > x->pmax) {
                x->too_big = true;
                return 0;
        }
        if (x->plen + len + 1 > x->pcap) {
                size_t cap = MAX(x->pcap * 2, MAX(x->plen + len + 1, (size_t)16384));
                x->pcap = MIN(cap, x->pmax + 1);
                x->pbuf = xrealloc(x->pbuf, x->pcap);
        }
        memcpy(x->pbuf + x->plen, ptr, len);
        x->plen += len;
        x->pbuf[x->plen] = '\0';
        x->received += len;
        return len;
}

enum pump_until {
        PUMP_HEADERS, /* the final response's headers are in (or the transfer ended) */
        PUMP_DATA,    /* payload bytes are waiting in the stream ring (or the transfer ended) */
        PUMP_DONE,    /* the transfer ended */
};

static bool pump_satisfied(const struct xfer *x, enum pump_until u)
{
        if (x->done)
                return true;
        switch (u) {
        case PUMP_HEADERS:
                return x->headers_done;
        case PUMP_DATA:
                return x->plen > x->prpos;
        case PUMP_DONE:
                return false;
        }
        return true;
}

/* Drive the transfer in this thread until `u` holds. Returns 0, or -EIO when libcurl's multi fails. */
static int xfer_pump(struct xfer *x, enum pump_until u)
{
        CURLM *m = x->cn->multi;
        while (!pump_satisfied(x, u)) {
                int running = 0;
                CURLMcode mc = curl_multi_perform(m, &running);
                if (mc != CURLM_OK) {
                        x->done = true;
                        x->result = CURLE_FAILED_INIT;
                        return -EIO;
                }
                int q;
                CURLMsg *msg;
                while ((msg = curl_multi_info_read(m, &q)))
                        if (msg->msg == CURLMSG_DONE && msg->easy_handle == x->cn->easy) {
                                x->done = true;
                                x->result = msg->data.result;
                                curl_easy_getinfo(x->cn->easy, CURLINFO_OS_ERRNO, &x->os_errno);
                        }
                if (pump_satisfied(x, u))
                        break;
                mc = curl_multi_poll(m, NULL, 0, 1000, NULL);
                if (mc != CURLM_OK) {
                        x->done = true;
                        x->result = CURLE_FAILED_INIT;
                        return -EIO;
                }
        }
        return 0;
}

/* ---- requests: redirects, retries ----------------------------------------------------------------- */

struct http_req {
        struct registry_client *c;
        struct xfer *x;
        const char *what; /* "registry docker.io", "token server auth.docker.io" */
        const char *url;  /* where the request starts (retries and resumes start here again) */
        const char *accept;
        const char *auth;        /* "Authorization: ..." or NULL */
        const char *auth_origin; /* who may receive it; NULL: url's origin */
        const char *post;
        bool fail_fast;
        bool no_redirects;
        bool verify_override, verify;

        char *cur_url; /* after redirects */
        int attempt;
        long waited_ms;
};

static void tls_for_url(const struct http_req *rq, const char *url, bool *ret_verify, const char **ret_ca,
                        size_t *ret_ca_len)
{
        const struct registry_client *c = rq->c;
        _cleanup_free_ char *host = url_config_host(url);
        const struct registry_host_tls *h = host ? host_lookup(c, host) : NULL;
        bool is_registry = (c->base_url && registry_url_same_origin(url, c->base_url)) ||
                           (host && strcasecmp(host, c->api_host) == 0);
        if (!h && is_registry)
                h = c->self;
        if (rq->verify_override)
                *ret_verify = rq->verify;
        else if (is_registry && c->base_url)
                *ret_verify = c->verify_tls;
        else
                *ret_verify = !(h && h->insecure);
        if (h && h->ca) {
                *ret_ca = h->ca;
                *ret_ca_len = h->ca_len;
        } else {
                *ret_ca = c->ca_base;
                *ret_ca_len = c->ca_base_len;
        }
}

static void header_add(struct xfer *x, const char *line)
{
        struct curl_slist *l = curl_slist_append(x->headers, line);
        if (!l)
                abort(); /* only on OOM, like xmalloc */
        x->headers = l;
}

/* Configure the easy handle for one exchange with rq->cur_url and start it. */
static void xfer_begin(struct http_req *rq)
{
        struct xfer *x = rq->x;
        struct registry_client *c = rq->c;
        CURL *e = x->cn->easy;
        const char *url = rq->cur_url;

        xfer_end(x);
        xfer_reset_response(x);
        curl_easy_reset(e);
        x->cn->errbuf[0] = '\0';

        if (rq->accept) {
                _cleanup_free_ char *h = xasprintf("Accept: %s", rq->accept);
                header_add(x, h);
        }
        if (rq->auth && registry_url_same_origin(url, rq->auth_origin ? rq->auth_origin : rq->url))
                header_add(x, rq->auth);
        if (x->stream && x->range_from > 0) {
                char h[64];
                snprintf(h, sizeof(h), "Range: bytes=%llu-", (unsigned long long)x->range_from);
                header_add(x, h);
        }
        if (rq->post)
                header_add(x, "Expect:");

        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        /* HTTP/1.1: one connection per stream, and pausing an HTTP/2 stream in 7.88 stalls its siblings. */
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, REGISTRY_CONNECT_TIMEOUT);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, REGISTRY_LOW_SPEED_LIMIT);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, REGISTRY_LOW_SPEED_TIME);
        curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
        curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS,
                         1L); /* a proxy's answer is not the registry's */
        if (x->stream)
                curl_easy_setopt(e, CURLOPT_BUFFERSIZE, REGISTRY_RECV_BUFFER);
        curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->cn->errbuf);
        curl_easy_setopt(e, CURLOPT_SHARE, curl_share);
        if (rq->post) {
                curl_easy_setopt(e, CURLOPT_POSTFIELDS, rq->post);
                curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(rq->post));
        }

        bool verify;
        const char *ca;
        size_t ca_len;
        tls_for_url(rq, url, &verify, &ca, &ca_len);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
        if (ca) {
                struct curl_blob blob = { .data = (void *)ca, .len = ca_len, .flags = CURL_BLOB_NOCOPY };
                /* The bundle is authoritative: do not add the compiled-in default file/dir. */
                curl_easy_setopt(e, CURLOPT_CAINFO, NULL);
                curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
                curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &blob);
        }

        if (log_get_level() >= LOG_LEVEL_DEBUG) {
                _cleanup_free_ char *d = url_for_display(url);
                log_debug("%s %s%s", rq->post ? "POST" : "GET", d,
                          x->range_from ? " (resuming with Range)" : "");
        }
        if (curl_multi_add_handle(x->cn->multi, e) != CURLM_OK)
                abort();
        x->added = true;
}

static bool is_redirect(long st)
{
        return st == 301 || st == 302 || st == 303 || st == 307 || st == 308;
}

static bool is_transient_status(long st)
{
        return st == 429 || st == 500 || st == 502 || st == 503 || st == 504;
}

/* Transport failures worth another attempt. On the first ping, "nobody is there" is final. */
static bool transport_retryable(const struct http_req *rq, CURLcode cr)
{
        switch (cr) {
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_CONNECT:
        case CURLE_SSL_CONNECT_ERROR:
                return !rq->fail_fast;
        case CURLE_OPERATION_TIMEDOUT:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
        case CURLE_PARTIAL_FILE:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
                return true;
        default:
                return false;
        }
}

static unsigned jitter_rand(void)
{
        static __thread unsigned seed;
        if (!seed) {
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                seed = (unsigned)(ts.tv_nsec ^ (long)getpid() ^ (long)(uintptr_t)&ts) | 1u;
        }
        return (unsigned)rand_r(&seed);
}

/* 0.25 s * 2^n, plus up to 50% jitter so parallel streams do not retry in lockstep. */
static long backoff_ms(int n)
{
        long ms = REGISTRY_BACKOFF_BASE_MS << MIN(n, 8);
        return ms + (long)(jitter_rand() % (unsigned)(ms / 2 + 1));
}

static void sleep_ms(long ms)
{
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/*
 * Decide whether another attempt is allowed and sleep before it: Retry-After (when given) or backoff,
 * within REGISTRY_MAX_ATTEMPTS and the request's sleeping budget.
 */
static bool wait_before_retry(struct http_req *rq, const char *retry_after)
{
        if (rq->attempt + 1 >= REGISTRY_MAX_ATTEMPTS)
                return false;
        long ms = backoff_ms(rq->attempt);
        unsigned ra;
        if (retry_after && registry_retry_after_parse(retry_after, time(NULL), &ra) == 0)
                ms = MAX(ms, (long)ra * 1000);
        if (rq->waited_ms + ms > REGISTRY_WAIT_BUDGET_MS)
                return false;
        log_debug("%s: retrying in %ld ms (attempt %d)", rq->what, ms, rq->attempt + 2);
        sleep_ms(ms);
        rq->waited_ms += ms;
        rq->attempt++;
        return true;
}

static void lowercase_first(char *s)
{
        if (s && s[0] && isupper((unsigned char)s[0]) && !isupper((unsigned char)s[1]))
                s[0] = (char)tolower((unsigned char)s[0]);
}

/* A message for a failed transfer; never includes URLs' queries or any header. */
static int transport_error(const struct http_req *rq, CURLcode cr, long os_errno, struct berr **err)
{
        const char *eb = rq->x->cn->errbuf;
        const char *detail = eb[0] ? eb : curl_easy_strerror(cr);
        switch (cr) {
        case CURLE_COULDNT_CONNECT: {
                _cleanup_free_ char *why = xstrdup(os_errno ? strerror((int)os_errno) : detail);
                lowercase_first(why);
                return berr_set(err, os_errno == ECONNREFUSED ? -ECONNREFUSED : -EHOSTUNREACH,
                                "cannot reach %s: %s", rq->what, why);
        }
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return berr_set(err, -EHOSTUNREACH, "cannot reach %s: %s", rq->what, detail);
        case CURLE_OPERATION_TIMEDOUT:
                return berr_set(err, -ETIMEDOUT, "cannot reach %s: %s", rq->what, detail);
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_ISSUER_ERROR:
                return berr_set(err, -EPROTO,
                                "TLS verification failed for %s: %s (add its CA to berth's configuration "
                                "with ca_file, or list the registry as insecure)",
                                rq->what, detail);
        default:
                return berr_set(err, -EIO, "%s: %s", rq->what, detail);
        }
}

/*
 * Send rq (GET/POST), following redirects by hand (Authorization only to auth_origin) and retrying
 * transient failures. Returns 0 once a final response arrived: for 2xx the payload is still to be pumped
 * (PUMP_DATA / PUMP_DONE); for anything else the (error) body has been read. Negative on transport errors.
 */
static int http_open(struct http_req *rq, struct berr **err)
{
        struct xfer *x = rq->x;
        int redirects = 0;

        free(rq->cur_url);
        rq->cur_url = xstrdup(rq->url);
        for (;;) {
                xfer_begin(rq);
                if (xfer_pump(x, PUMP_HEADERS) < 0)
                        return berr_set(err, -EIO, "%s: libcurl multi interface failed", rq->what);
                if (!x->headers_done) {
                        CURLcode cr = x->result;
                        long os_errno = x->os_errno;
                        if (x->header_overflow)
                                return berr_set(err, -EPROTO, "%s: response headers larger than %d bytes",
                                                rq->what, REGISTRY_HEADER_MAX);
                        if (transport_retryable(rq, cr) && wait_before_retry(rq, NULL)) {
                                /* A redirect target (a presigned URL) may be what failed: start over. */
                                free(rq->cur_url);
                                rq->cur_url = xstrdup(rq->url);
                                redirects = 0;
                                continue;
                        }
                        return transport_error(rq, cr, os_errno, err);
                }
                long st = x->status;
                if (is_redirect(st) && !rq->no_redirects) {
                        xfer_pump(x, PUMP_DONE);
                        if (!x->location)
                                return berr_set(err, -EPROTO, "%s answered HTTP %ld without a Location",
                                                rq->what, st);
                        if (++redirects > REGISTRY_MAX_REDIRECTS)
                                return berr_set(err, -ELOOP, "%s: more than %d redirects", rq->what,
                                                REGISTRY_MAX_REDIRECTS);
                        char *next = NULL;
                        if (registry_url_resolve(rq->cur_url, x->location, &next) < 0)
                                return berr_set(err, -EPROTO, "%s: invalid redirect location", rq->what);
                        if (url_is_https(rq->cur_url) && !url_is_https(next) &&
                            !registry_url_insecure(rq->c, next)) {
                                _cleanup_free_ char *d = url_for_display(next);
                                free(next);
                                return berr_set(err, -EPERM, "%s: refusing redirect from https to %s",
                                                rq->what, d);
                        }
                        free(rq->cur_url);
                        rq->cur_url = next;
                        continue;
                }
                if (!(st >= 200 && st < 300))
                        xfer_pump(x, PUMP_DONE);
                if (is_transient_status(st) && wait_before_retry(rq, x->retry_after))
                        continue;
                return 0;
        }
}

/* After http_open (or registry_open) for a synchronous request: read the payload within its cap. */
static int http_finish_sync(struct http_req *rq, struct berr **err, bool *ret_retry)
{
        struct xfer *x = rq->x;
        *ret_retry = false;
        if (x->status >= 200 && x->status < 300) {
                curl_off_t cl = -1;
                curl_easy_getinfo(x->cn->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
                if (cl > (curl_off_t)x->pmax)
                        x->too_big = true;
                else if (xfer_pump(x, PUMP_DONE) < 0)
                        return berr_set(err, -EIO, "%s: libcurl multi interface failed", rq->what);
        }
        if (x->too_big) {
                xfer_end(x);
                return -EFBIG; /* the caller knows what the body was */
        }
        if (x->result != CURLE_OK && !(x->result == CURLE_WRITE_ERROR && x->etrunc)) {
                CURLcode cr = x->result;
                long os_errno = x->os_errno;
                xfer_end(x);
                if (transport_retryable(rq, cr) && wait_before_retry(rq, NULL)) {
                        *ret_retry = true;
                        return 0;
                }
                return transport_error(rq, cr, os_errno, err);
        }
        xfer_end(x);
        return 0;
}

static void response_take(struct xfer *x, struct http_response *res)
{
        res->status = x->status;
        if (x->payload) {
                res->body = TAKE_PTR(x->pbuf);
                res->len = x->plen;
                x->plen = x->pcap = 0;
        } else {
                res->body = TAKE_PTR(x->ebody);
                res->len = x->elen;
                x->elen = 0;
        }
        res->content_type = TAKE_PTR(x->content_type);
        res->docker_digest = TAKE_PTR(x->docker_digest);
        for (size_t i = 0; i < x->n_www_auth; i++)
                res->www_auth[i] = TAKE_PTR(x->www_auth[i]);
        res->n_www_auth = x->n_www_auth;
        x->n_www_auth = 0;
}

void http_response_done(struct http_response *r)
{
        free(r->body);
        free(r->content_type);
        free(r->docker_digest);
        for (size_t i = 0; i < r->n_www_auth; i++)
                free(r->www_auth[i]);
        *r = (struct http_response){ 0 };
}

int registry_http_fetch(struct registry_client *c, const struct http_fetch *f, const char *what,
                        struct http_response *res, struct berr **err)
{
        struct xfer x = { .cn = conn_acquire(c), .pmax = f->max_body };
        struct http_req rq = {
                .c = c,
                .x = &x,
                .what = what,
                .url = f->url,
                .accept = f->accept,
                .auth = f->auth,
                .auth_origin = f->auth_origin,
                .post = f->post,
                .fail_fast = f->fail_fast,
                .no_redirects = f->no_redirects,
                .verify_override = f->verify_override,
                .verify = f->verify,
        };
        int r;
        bool retry;
        do {
                r = http_open(&rq, err);
                if (r < 0)
                        break;
                r = http_finish_sync(&rq, err, &retry);
        } while (r == 0 && retry);
        if (r == -EFBIG)
                berr_set(err, r, "%s: response larger than %zu bytes", what, f->max_body);
        res->curl_result = x.result;
        res->os_errno = x.os_errno;
        if (r == 0)
                response_take(&x, res);
        xfer_free(&x);
        conn_release(c, x.cn);
        free(rq.cur_url);
        return r;
}

/* ---- error bodies ------------------------------------------------------------------------------------ */

static void append_sanitized(char **out, size_t *n, const char *s, size_t max)
{
        for (const unsigned char *p = (const unsigned char *)s; *p && *n < max; p++) {
                *out = xrealloc(*out, *n + 2);
                (*out)[(*n)++] = (*p < 0x20 || *p == 0x7f) ? ' ' : (char)*p;
                (*out)[*n] = '\0';
        }
}

char *registry_error_message(const char *body, size_t len)
{
        enum { MAX = 400 };
        if (!body || len == 0)
                return NULL;
        json_t *j = json_loadb(body, len, 0, NULL);
        if (!j)
                return NULL;
        char *out = NULL;
        size_t n = 0;
        json_t *errors = json_object_get(j, "errors");
        if (json_is_array(errors)) {
                size_t i;
                json_t *e;
                json_array_foreach (errors, i, e) {
                        if (i >= 3)
                                break;
                        const char *m = json_string_value(json_object_get(e, "message"));
                        const char *code = json_string_value(json_object_get(e, "code"));
                        const char *s = (m && *m) ? m : code;
                        if (!s || !*s)
                                continue;
                        if (n)
                                append_sanitized(&out, &n, "; ", MAX);
                        append_sanitized(&out, &n, s, MAX);
                }
        }
        /* Token servers: {"details": "..."} (Docker Hub), OAuth2 {"error": "...", "error_description"}. */
        static const char *const alt[] = { "details", "error_description", "error", "message" };
        for (size_t i = 0; !n && i < ARRAY_SIZE(alt); i++) {
                const char *s = json_string_value(json_object_get(j, alt[i]));
                if (s && *s)
                        append_sanitized(&out, &n, s, MAX);
        }
        json_decref(j);
        return out;
}

/* ---- the client ----------------------------------------------------------------------------------- */

static bool path_valid(const char *p)
{
        size_t n = strlen(p);
        if (n == 0 || n > IMAGE_NAME_MAX || p[0] == '/' || p[n - 1] == '/' || strstr(p, "//"))
                return false;
        for (const char *q = p; *q; q++)
                if (!(islower((unsigned char)*q) || isdigit((unsigned char)*q) || strchr("._-/", *q)))
                        return false;
        return true;
}

static bool domain_valid(const char *d)
{
        size_t n = strlen(d);
        if (n == 0 || n > IMAGE_NAME_MAX)
                return false;
        for (const char *q = d; *q; q++)
                if (!(isalnum((unsigned char)*q) || strchr(".-:[]", *q)))
                        return false;
        return true;
}

static bool tag_valid(const char *t)
{
        size_t n = strlen(t);
        if (n == 0 || n > IMAGE_TAG_MAX || !(isalnum((unsigned char)t[0]) || t[0] == '_'))
                return false;
        for (const char *q = t; *q; q++)
                if (!(isalnum((unsigned char)*q) || strchr("._-", *q)))
                        return false;
        return true;
}

static int ca_append_file(char **buf, size_t *len, const char *path, bool must_exist, struct berr **err)
{
        _cleanup_free_ char *data = NULL;
        size_t n = 0;
        int r = fs_read_file_at(AT_FDCWD, path, REGISTRY_CA_FILE_MAX, &data, &n);
        if (r == -ENOENT && !must_exist)
                return 0;
        if (r < 0)
                return berr_set_errno(err, r, "cannot read CA file %s", path);
        *buf = xrealloc(*buf, *len + n + 2);
        memcpy(*buf + *len, data, n);
        *len += n;
        (*buf)[(*len)++] = '\n';
        (*buf)[*len] = '\0';
        return 0;
}

/*
 * Trust anchors. Without any extra CA (and without $SSL_CERT_FILE) libcurl's default bundle is used.
 * Otherwise one PEM bundle per client: the system bundle ($SSL_CERT_FILE replaces it, as for OpenSSL and
 * Go) + the global ca_files, and per host with a ca_file: that bundle + the host's file. libcurl takes
 * them with CURLOPT_CAINFO_BLOB (CAINFO accepts a single file).
 */
static int client_load_trust(struct registry_client *c, const struct berth_config *cfg, struct berr **err)
{
        const char *env = getenv("SSL_CERT_FILE");
        bool custom = env && *env;
        if (cfg) {
                custom = custom || cfg->n_ca_files > 0;
                for (size_t i = 0; i < cfg->n_registries; i++)
                        custom = custom || cfg->registries[i].ca_file;
                c->hosts = xcalloc(cfg->n_registries, sizeof(*c->hosts));
                for (size_t i = 0; i < cfg->n_registries; i++) {
                        c->hosts[i].host = xstrdup(cfg->registries[i].host);
                        c->hosts[i].insecure = cfg->registries[i].insecure;
                }
                c->n_hosts = cfg->n_registries;
        }
        if (!custom)
                return 0;
        char *base = NULL;
        size_t base_len = 0;
        int r = ca_append_file(&base, &base_len, (env && *env) ? env : SYSTEM_CA_BUNDLE, env && *env, err);
        for (size_t i = 0; r == 0 && cfg && i < cfg->n_ca_files; i++)
                r = ca_append_file(&base, &base_len, cfg->ca_files[i], true, err);
        for (size_t i = 0; r == 0 && cfg && i < cfg->n_registries; i++) {
                if (!cfg->registries[i].ca_file)
                        continue;
                struct registry_host_tls *h = &c->hosts[i];
                h->ca = xmalloc(base_len + 1);
                memcpy(h->ca, base ? base : "", base_len);
                h->ca[base_len] = '\0';
                h->ca_len = base_len;
                r = ca_append_file(&h->ca, &h->ca_len, cfg->registries[i].ca_file, true, err);
        }
        if (r < 0) {
                free(base);
                return r;
        }
        if (!base)
                base = xstrdup("");
        c->ca_base = base;
        c->ca_base_len = base_len;
        return 0;
}

int registry_client_new(const struct image_ref *ref, const struct registry_opts *o,
                        struct registry_client **ret, struct berr **err)
{
        pthread_once(&curl_once, curl_setup_once);
        if (curl_init_result != CURLE_OK)
                return berr_set(err, -EIO, "cannot initialise libcurl: %s",
                                curl_easy_strerror(curl_init_result));
        if (!ref || !ref->domain || !ref->path)
                return berr_set(err, -EINVAL, "image reference without registry or repository");
        if (!domain_valid(ref->domain))
                return berr_set(err, -EINVAL, "invalid registry host \"%.256s\"", ref->domain);
        if (!path_valid(ref->path))
                return berr_set(err, -EINVAL, "invalid repository name \"%.256s\"", ref->path);
        const char *user = o ? o->username : NULL;
        if (user && strchr(user, ':'))
                return berr_set(err, -EINVAL, "invalid username: it must not contain ':'");

        struct registry_client *c = xcalloc(1, sizeof(*c));
        pthread_mutex_init(&c->lock, NULL);
        pthread_mutex_init(&c->ping_lock, NULL);
        pthread_mutex_init(&c->token_lock, NULL);
        c->domain = xstrdup(ref->domain);
        c->api_host = xstrdup(image_ref_api_host(ref));
        c->path = xstrdup(ref->path);
        c->scope = registry_scope_pull(ref->path);
        if (user) {
                c->username = xstrdup(user);
                c->password = xstrdup(o->password ? o->password : "");
        }
        c->user_agent = xstrdup(o && o->user_agent ? o->user_agent : "berth/" BERTH_VERSION);

        const struct berth_config *cfg = o ? o->config : NULL;
        int r = client_load_trust(c, cfg, err);
        if (r < 0) {
                registry_client_free(c);
                return r;
        }
        c->self = host_lookup(c, c->domain);
        if (!c->self)
                c->self = host_lookup(c, c->api_host);
        c->insecure = (c->self && c->self->insecure) || image_ref_domain_is_loopback(c->domain);
        *ret = c;
        return 0;
}

void registry_client_free(struct registry_client *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < c->n_pool; i++)
                conn_destroy(c->pool[i]);
        registry_auth_free(c);
        for (size_t i = 0; i < c->n_hosts; i++) {
                free(c->hosts[i].host);
                free(c->hosts[i].ca);
        }
        free(c->hosts);
        free(c->ca_base);
        free(c->base_url);
        free(c->domain);
        free(c->api_host);
        free(c->path);
        free(c->scope);
        free(c->username);
        registry_secret_free(c->password);
        free(c->user_agent);
        pthread_mutex_destroy(&c->lock);
        pthread_mutex_destroy(&c->ping_lock);
        pthread_mutex_destroy(&c->token_lock);
        free(c);
}

/* A TLS attempt failed in a way that plain HTTP on the same port might not (insecure registries only). */
static bool tls_fallback_allowed(CURLcode cr)
{
        return cr != CURLE_COULDNT_CONNECT && cr != CURLE_COULDNT_RESOLVE_HOST &&
               cr != CURLE_COULDNT_RESOLVE_PROXY;
}

/*
 * GET /v2/ once per client: picks the scheme (https; for insecure/loopback registries https without
 * verification, then http when TLS fails, as Docker) and the authentication the registry wants.
 */
static int client_ping(struct registry_client *c, struct berr **err)
{
        pthread_mutex_lock(&c->ping_lock);
        if (c->pinged) {
                pthread_mutex_unlock(&c->ping_lock);
                return 0;
        }
        _cleanup_free_ char *what = xasprintf("registry %s", c->domain);
        static const char *const schemes[] = { "https", "http" };
        int r = 0;
        for (size_t i = 0; i < (c->insecure ? 2u : 1u); i++) {
                _cleanup_free_ char *base = xasprintf("%s://%s", schemes[i], c->api_host);
                _cleanup_free_ char *url = xasprintf("%s/v2/", base);
                struct http_fetch f = { .url = url,
                                        .accept = "application/json",
                                        .max_body = REGISTRY_ERROR_BODY_MAX,
                                        .fail_fast = true,
                                        .verify_override = true,
                                        .verify = !c->insecure };
                struct http_response res = { 0 };
                _cleanup_berr_ struct berr *e = NULL;
                r = registry_http_fetch(c, &f, what, &res, &e);
                if (r < 0 && c->insecure && i == 0 && tls_fallback_allowed(res.curl_result)) {
                        log_debug("%s: https failed (%s), trying http", what, berr_msg(e));
                        http_response_done(&res);
                        continue;
                }
                if (r < 0) {
                        if (err && !*err)
                                *err = TAKE_PTR(e);
                        http_response_done(&res);
                        break;
                }
                if (res.status == 200 || res.status == 401) {
                        c->base_url = TAKE_PTR(base);
                        c->verify_tls = !c->insecure;
                        if (res.status == 401)
                                r = registry_auth_set_challenges(c, res.www_auth, res.n_www_auth, err);
                        if (r == 0)
                                c->pinged = true;
                        else {
                                free(c->base_url);
                                c->base_url = NULL;
                        }
                } else {
                        r = berr_set(
                            err, -EPROTO,
                            "registry %s does not speak the distribution API v2 (GET /v2/ answered HTTP "
                            "%ld)",
                            c->domain, res.status);
                }
                http_response_done(&res);
                break;
        }
        pthread_mutex_unlock(&c->ping_lock);
        return r;
}

/* rq with registry authentication: ping first, attach credentials, handle 401 (refresh once or fail). */
static int registry_open(struct registry_client *c, struct http_req *rq, struct berr **err)
{
        int r = client_ping(c, err);
        if (r < 0)
                return r;
        for (int round = 0;; round++) {
                _cleanup_(registry_secret_freep) char *auth = NULL;
                bool fresh = false;
                r = registry_auth_header(c, &auth, &fresh, err);
                if (r < 0)
                        return r;
                rq->auth = auth;
                rq->auth_origin = c->base_url;
                r = http_open(rq, err);
                rq->auth = NULL;
                if (r < 0)
                        return r;
                struct xfer *x = rq->x;
                if (x->status != 401 || !registry_url_same_origin(rq->cur_url, c->base_url))
                        return 0;
                xfer_end(x);
                if (round < 2 && !auth && x->n_www_auth > 0) {
                        /* /v2/ was open but this repository is not: adopt this answer's challenges. */
                        r = registry_auth_set_challenges(c, x->www_auth, x->n_www_auth, err);
                        if (r < 0)
                                return r;
                        if (registry_auth_kind_get(c) != REGISTRY_AUTH_NONE)
                                continue;
                }
                if (round < 2 && auth && !fresh) {
                        /* A cached token expired or was revoked: get a new one, once. */
                        registry_auth_invalidate(c, auth);
                        continue;
                }
                _cleanup_free_ char *msg = registry_error_message(x->ebody, x->elen);
                if (registry_auth_kind_get(c) == REGISTRY_AUTH_BASIC)
                        return berr_set(err, -EACCES, "invalid username or password for %s", c->domain);
                return berr_set(err, -EACCES, "authentication failed for %s/%s: %s%s", c->domain, c->path,
                                msg ? msg : "access denied",
                                c->username ? ""
                                            : " (anonymous access; for a private repository pass --username, "
                                              "password in $BERTH_REGISTRY_PASSWORD)");
        }
}

/* Map a final non-success status to an error about `subject` ("image docker.io/library/x:1"). */
static int status_error(const struct registry_client *c, const struct xfer *x, const char *subject,
                        struct berr **err)
{
        _cleanup_free_ char *msg = registry_error_message(x->ebody, x->elen);
        const char *sep = msg ? ": " : "";
        const char *m = msg ? msg : "";
        switch (x->status) {
        case 401:
                return berr_set(err, -EACCES, "%s: authentication failed%s%s", subject, sep, m);
        case 403:
                return berr_set(err, -EACCES, "access to %s denied%s%s", subject, sep, m);
        case 404:
                return berr_set(err, -ENOENT, "%s not found%s%s", subject, sep, m);
        case 429:
                return berr_set(err, -EAGAIN, "registry %s: too many requests for %s%s%s", c->domain, subject,
                                sep, m);
        default:
                return berr_set(err, x->status >= 500 ? -EIO : -EPROTO,
                                "registry %s answered HTTP %ld for %s%s%s", c->domain, x->status, subject,
                                sep, m);
        }
}

/* ---- manifests ------------------------------------------------------------------------------------ */

int registry_get_manifest(struct registry_client *c, const char *object, const char *expected_digest,
                          int64_t expected_size, char **ret_body, size_t *ret_len, char **ret_content_type,
                          char ret_digest[static DIGEST_STR_MAX], struct berr **err)
{
        bool by_digest = object && strchr(object, ':');
        int r;
        if (!object || (by_digest ? digest_validate(object, NULL) < 0 : !tag_valid(object)))
                return berr_set(err, -EINVAL, "invalid tag or digest \"%.200s\"", object ? object : "");
        if (by_digest) {
                if (expected_digest && strcmp(expected_digest, object) != 0)
                        return berr_set(err, -EINVAL,
                                        "manifest %s requested with a different expected digest", object);
                expected_digest = object;
        }
        if (expected_digest) {
                r = digest_validate(expected_digest, err);
                if (r < 0)
                        return r;
                if (strncmp(expected_digest, "sha256:", 7) != 0)
                        return berr_set(err, -ENOTSUP,
                                        "cannot verify %.80s: only sha256 digests are supported",
                                        expected_digest);
        }
        _cleanup_free_ char *subject =
            xasprintf("image %s/%s%s%s", c->domain, c->path, by_digest ? "@" : ":", object);
        if (expected_size > MANIFEST_MAX_BYTES)
                return berr_set(err, -EFBIG, "%s: manifest larger than 4 MiB", subject);

        r = client_ping(c, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *url = xasprintf("%s/v2/%s/manifests/%s", c->base_url, c->path, object);
        _cleanup_free_ char *what = xasprintf("registry %s", c->domain);
        struct xfer x = { .cn = conn_acquire(c), .pmax = MANIFEST_MAX_BYTES };
        struct http_req rq = { .c = c, .x = &x, .what = what, .url = url, .accept = MANIFEST_ACCEPT };
        bool retry = false;
        do {
                r = registry_open(c, &rq, err);
                if (r == 0)
                        r = http_finish_sync(&rq, err, &retry);
        } while (r == 0 && retry);
        if (r == -EFBIG)
                berr_set(err, r, "%s: manifest larger than 4 MiB", subject);
        if (r == 0 && x.status == 404)
                r = berr_set(err, -ENOENT, "%s not found", subject);
        else if (r == 0 && x.status != 200)
                r = status_error(c, &x, subject, err);
        if (r < 0)
                goto out;

        char digest[DIGEST_STR_MAX];
        sha256_str(x.pbuf ? x.pbuf : "", x.plen, digest);
        if (x.docker_digest && strncmp(x.docker_digest, "sha256:", 7) == 0 &&
            strcmp(x.docker_digest, digest) != 0) {
                r = berr_set(err, -EBADMSG,
                             "%s: manifest digest mismatch (registry says %.80s, content is %s)", subject,
                             x.docker_digest, digest);
                goto out;
        }
        if (expected_digest && strcmp(expected_digest, digest) != 0) {
                r = berr_set(err, -EBADMSG, "%s: manifest digest mismatch (expected %s, got %s)", subject,
                             expected_digest, digest);
                goto out;
        }
        if (expected_size >= 0 && (uint64_t)expected_size != x.plen) {
                r = berr_set(err, -EBADMSG, "%s: manifest size mismatch (expected %lld bytes, got %zu)",
                             subject, (long long)expected_size, x.plen);
                goto out;
        }
        if (!x.pbuf)
                x.pbuf = xstrdup("");
        *ret_body = TAKE_PTR(x.pbuf);
        *ret_len = x.plen;
        *ret_content_type = x.content_type ? TAKE_PTR(x.content_type) : NULL;
        memcpy(ret_digest, digest, DIGEST_STR_MAX);
out:
        xfer_free(&x);
        conn_release(c, x.cn);
        free(rq.cur_url);
        return r;
}

/* ---- blobs ---------------------------------------------------------------------------------------- */

struct registry_blob {
        struct registry_client *c;
        char digest[DIGEST_STR_MAX];
        uint64_t size;
        char *url;     /* the registry's blob URL: every (re)start begins here, never at a redirect target */
        char *what;    /* "registry <domain>" */
        char *subject; /* "blob sha256:... of <domain>/<path>" */
        struct xfer x;
        struct http_req rq;
        struct sha256_ctx *sha;
        uint64_t pos;       /* blob bytes received (in the ring or delivered) */
        uint64_t delivered; /* blob bytes handed to the caller (and hashed) */
        bool active;        /* an exchange is running */
        bool eof;
        int failed; /* sticky error */
        char *failmsg;
        int resume_attempts; /* consecutive, reset by progress */
        int resumes;         /* in total */
        uint64_t pos_at_failure;
};

/* Make the error sticky: later reads return it again. */
static int blob_fail(struct registry_blob *b, int r, struct berr **err)
{
        b->failed = r;
        free(b->failmsg);
        b->failmsg = (err && *err) ? xstrdup((*err)->msg) : xasprintf("%s: %s", b->subject, strerror(-r));
        xfer_end(&b->x);
        b->active = false;
        return r;
}

/* Start (or resume at b->pos) the blob GET; checks what the answer says about sizes and ranges. */
static int blob_start(struct registry_blob *b, struct berr **err)
{
        struct xfer *x = &b->x;
        x->range_from = b->pos;
        x->limit = b->size - b->pos;
        b->rq.attempt = 0;
        b->rq.waited_ms = 0;
        int r = registry_open(b->c, &b->rq, err);
        if (r < 0)
                return r;
        long st = x->status;
        if (st == 404)
                return berr_set(err, -ENOENT, "%s not found", b->subject);
        if (st == 416)
                return berr_set(err, -EPROTO, "%s: registry refused to resume at byte %llu (HTTP 416)",
                                b->subject, (unsigned long long)b->pos);
        if (st != 200 && st != 206)
                return status_error(b->c, x, b->subject, err);
        curl_off_t cl = -1;
        curl_easy_getinfo(x->cn->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        if (st == 200) {
                if (cl >= 0 && (uint64_t)cl > b->size)
                        return berr_set(err, -EFBIG, "%s: registry sends %lld bytes, more than its size %llu",
                                        b->subject, (long long)cl, (unsigned long long)b->size);
                if (b->pos > 0)
                        log_debug("%s: registry ignored Range, skipping the first %llu bytes again",
                                  b->subject, (unsigned long long)b->pos);
        } else {
                uint64_t first, last;
                int64_t total;
                if (!x->content_range ||
                    registry_content_range_parse(x->content_range, &first, &last, &total) < 0 ||
                    first != b->pos || (total >= 0 && (uint64_t)total != b->size))
                        return berr_set(err, -EPROTO,
                                        "%s: invalid Content-Range in answer to Range bytes=%llu-",
                                        b->subject, (unsigned long long)b->pos);
                if (last >= b->size)
                        return berr_set(err, -EFBIG, "%s: registry sends more bytes than its size %llu",
                                        b->subject, (unsigned long long)b->size);
        }
        b->active = true;
        return 0;
}

int registry_blob_open(struct registry_client *c, const char *digest, int64_t size,
                       struct registry_blob **ret, struct berr **err)
{
        int r = digest_validate(digest, err);
        if (r < 0)
                return r;
        if (strncmp(digest, "sha256:", 7) != 0)
                return berr_set(err, -ENOTSUP, "cannot verify blob %.80s: only sha256 digests are supported",
                                digest);
        if (size < 0)
                return berr_set(err, -EINVAL, "blob %s: negative size", digest);
        r = client_ping(c, err);
        if (r < 0)
                return r;

        struct registry_blob *b = xcalloc(1, sizeof(*b));
        b->c = c;
        snprintf(b->digest, sizeof(b->digest), "%s", digest);
        b->size = (uint64_t)size;
        b->url = xasprintf("%s/v2/%s/blobs/%s", c->base_url, c->path, digest);
        b->what = xasprintf("registry %s", c->domain);
        b->subject = xasprintf("blob %s of %s/%s", digest, c->domain, c->path);
        b->sha = sha256_new();
        b->x = (struct xfer){ .cn = conn_acquire(c), .stream = true, .pcap = BLOB_RING_SIZE };
        b->x.pbuf = xmalloc(BLOB_RING_SIZE);
        b->rq = (struct http_req){ .c = c, .x = &b->x, .what = b->what, .url = b->url };

        r = blob_start(b, err);
        if (r < 0) {
                registry_blob_close(b);
                return r;
        }
        *ret = b;
        return 0;
}

/*
 * The exchange ended and every byte it brought was delivered. Returns 1 when the blob is complete and
 * verified, 0 to resume, negative to fail.
 */
static int blob_exchange_done(struct registry_blob *b, struct berr **err)
{
        struct xfer *x = &b->x;
        CURLcode cr = x->result;
        bool too_big = x->too_big, skip_left = x->skip > 0;
        b->pos = x->range_from + x->received;
        xfer_end(x);
        b->active = false;

        if (too_big)
                return berr_set(err, -EFBIG, "%s: more bytes than its size %llu", b->subject,
                                (unsigned long long)b->size);
        if (cr == CURLE_OK && !skip_left && b->pos == b->size) {
                char got[DIGEST_STR_MAX];
                sha256_final_str(b->sha, got);
                if (strcmp(got, b->digest) != 0)
                        return berr_set(err, -EBADMSG, "blob %s digest mismatch (got %s)", b->digest, got);
                return 1;
        }
        if (cr != CURLE_OK && !transport_retryable(&b->rq, cr))
                return transport_error(&b->rq, cr, x->os_errno, err);

        /* Truncated (reset, timeout, early close): resume with Range from the registry URL. */
        if (b->pos - b->pos_at_failure >= BLOB_RESUME_PROGRESS)
                b->resume_attempts = 0;
        b->pos_at_failure = b->pos;
        if (++b->resume_attempts > BLOB_RESUME_ATTEMPTS || ++b->resumes > BLOB_RESUME_MAX)
                return berr_set(err, -EPROTO, "%s truncated: got %llu of %llu bytes (%s)", b->subject,
                                (unsigned long long)b->pos, (unsigned long long)b->size,
                                cr == CURLE_OK ? "connection closed early" : curl_easy_strerror(cr));
        long ms = backoff_ms(b->resume_attempts - 1);
        log_debug("%s: transfer interrupted at %llu of %llu bytes (%s), resuming in %ld ms", b->subject,
                  (unsigned long long)b->pos, (unsigned long long)b->size,
                  cr == CURLE_OK ? "connection closed early" : curl_easy_strerror(cr), ms);
        sleep_ms(ms);
        return 0;
}

/* A resume after a truncated transfer failed: the blob is truncated (-EPROTO), say why. */
static int blob_resume_failed(struct registry_blob *b, int r, struct berr **err)
{
        if (!err)
                return -EPROTO;
        const char *why = *err ? (*err)->msg : strerror(-r);
        size_t sl = strlen(b->subject);
        if (strncmp(why, b->subject, sl) == 0 && strncmp(why + sl, ": ", 2) == 0)
                why += sl + 2;
        char *m = xasprintf("%s truncated at %llu of %llu bytes: resuming failed: %s", b->subject,
                            (unsigned long long)b->pos, (unsigned long long)b->size, why);
        berr_free(*err);
        *err = NULL;
        berr_set(err, -EPROTO, "%s", m);
        free(m);
        return -EPROTO;
}

ssize_t registry_blob_read(struct registry_blob *b, const void **ret_buf, struct berr **err)
{
        struct xfer *x = &b->x;
        if (b->failed)
                return berr_set(err, b->failed, "%s", b->failmsg);
        if (b->eof)
                return 0;

        /* The chunk handed out last time is consumed now; bytes after it (if any) move to the front. */
        if (x->prpos > 0) {
                memmove(x->pbuf, x->pbuf + x->prpos, x->plen - x->prpos);
                x->plen -= x->prpos;
                x->prpos = 0;
        }
        if (x->paused) {
                x->paused = false;
                curl_easy_pause(x->cn->easy, CURLPAUSE_CONT);
        }
        for (;;) {
                if (x->plen > x->prpos) {
                        const char *p = x->pbuf + x->prpos;
                        size_t n = x->plen - x->prpos;
                        x->prpos = x->plen;
                        sha256_update(b->sha, p, n);
                        b->delivered += n;
                        *ret_buf = p;
                        return (ssize_t)n;
                }
                if (!b->active) {
                        int r = blob_start(b, err);
                        if (r < 0) {
                                if (b->pos > 0 && r != -ENOENT && r != -EACCES && r != -EFBIG)
                                        r = blob_resume_failed(b, r, err);
                                return blob_fail(b, r, err);
                        }
                        continue;
                }
                if (x->done) {
                        int r = blob_exchange_done(b, err);
                        if (r < 0)
                                return blob_fail(b, r, err);
                        if (r > 0) {
                                b->eof = true;
                                return 0;
                        }
                        continue;
                }
                if (xfer_pump(x, PUMP_DATA) < 0)
                        return blob_fail(
                            b, berr_set(err, -EIO, "%s: libcurl multi interface failed", b->subject), err);
        }
}

uint64_t registry_blob_offset(const struct registry_blob *b)
{
        return b->delivered;
}

void registry_blob_close(struct registry_blob *b)
{
        if (!b)
                return;
        xfer_free(&b->x);
        conn_release(b->c, b->x.cn);
        sha256_free(b->sha);
        free(b->rq.cur_url);
        free(b->url);
        free(b->what);
        free(b->subject);
        free(b->failmsg);
        free(b);
}

int registry_get_blob(struct registry_client *c, const char *digest, int64_t size, size_t max,
                      char **ret_body, size_t *ret_len, struct berr **err)
{
        if (size < 0)
                return berr_set(err, -EINVAL, "blob %.80s: negative size", digest);
        if ((uint64_t)size > max)
                return berr_set(err, -EFBIG, "blob %.80s is %lld bytes, more than the %zu allowed", digest,
                                (long long)size, max);
        _cleanup_(registry_blob_closep) struct registry_blob *b = NULL;
        int r = registry_blob_open(c, digest, size, &b, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *buf = xmalloc((size_t)size + 1);
        size_t len = 0;
        for (;;) {
                const void *p;
                ssize_t n = registry_blob_read(b, &p, err);
                if (n < 0)
                        return (int)n;
                if (n == 0)
                        break;
                /* The stream never delivers more than `size` bytes. */
                memcpy(buf + len, p, (size_t)n);
                len += (size_t)n;
        }
        buf[len] = '\0';
        *ret_body = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}
