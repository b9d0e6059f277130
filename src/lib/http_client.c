/* SPDX-License-Identifier: Apache-2.0 */
/* The platform's HTTP client on libcurl (see http_client.h). */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lib/http_client.h"
#include "lib/json.h"
#include "lib/macro.h"

#define BODY_MAX (64u << 20)

struct http_client {
        CURL *curl;
        struct http_client_opts o;
        char *ca_file;
        char *auth_header; /* "Authorization: Bearer ..." or NULL */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
        curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* Caller owns *ret. */
int http_client_new(const struct http_client_opts *o, struct http_client **ret, struct berr **err)
{
        pthread_once(&curl_once, curl_init);
        if (curl_init_rc != CURLE_OK)
                return berr_set(err, -EIO, "cannot initialise libcurl: %s", curl_easy_strerror(curl_init_rc));
        struct http_client *c = xcalloc(1, sizeof(*c));
        if (o)
                c->o = *o;
        c->ca_file = o && o->ca_file ? xstrdup(o->ca_file) : NULL;
        c->o.ca_file = c->ca_file;
        c->curl = curl_easy_init();
        if (!c->curl) {
                http_client_free(c);
                return berr_set(err, -ENOMEM, "cannot create a libcurl handle");
        }
        *ret = c;
        return 0;
}

void http_client_free(struct http_client *c)
{
        if (!c)
                return;
        if (c->curl)
                curl_easy_cleanup(c->curl);
        free(c->ca_file);
        if (c->auth_header)
                explicit_bzero(c->auth_header, strlen(c->auth_header));
        free(c->auth_header);
        free(c);
}

void http_client_set_bearer(struct http_client *c, const char *token)
{
        if (c->auth_header)
                explicit_bzero(c->auth_header, strlen(c->auth_header));
        free(c->auth_header);
        c->auth_header = token ? xasprintf("Authorization: Bearer %s", token) : NULL;
}

void http_result_free(struct http_result *r)
{
        if (!r)
                return;
        free(r->body);
        free(r->content_type);
        *r = (struct http_result){ 0 };
}

struct sink {
        char *buf;
        size_t len, cap;
        bool too_big;
        http_stream_fn fn; /* streaming: data goes here instead */
        void *userdata;
        int fn_rc;
};

static size_t write_cb(char *data, size_t size, size_t n, void *userdata)
{
        struct sink *s = userdata;
        size_t len = size * n;
        if (s->fn) {
                int r = s->fn(data, len, s->userdata);
                if (r < 0) {
                        s->fn_rc = r;
                        return 0;
                }
                return len;
        }
        if (s->len + len > BODY_MAX) {
                s->too_big = true;
                return 0;
        }
        if (s->len + len + 1 > s->cap) {
                size_t cap = s->cap ? s->cap : 4096;
                while (cap < s->len + len + 1)
                        cap *= 2;
                s->buf = xrealloc(s->buf, cap);
                s->cap = cap;
        }
        memcpy(s->buf + s->len, data, len);
        s->len += len;
        s->buf[s->len] = '\0';
        return len;
}

/* "http://host:port/path" → "host:port" for messages (into buf). */
static const char *url_authority(const char *url, char *buf, size_t n)
{
        const char *p = strstr(url, "://");
        p = p ? p + 3 : url;
        size_t len = strcspn(p, "/?#");
        snprintf(buf, n, "%.*s", (int)MIN(len, n - 1), p);
        return buf;
}

static int curl_error(CURLcode rc, const char *method, const char *url, const char *errbuf, struct berr **err)
{
        char auth[256];
        url_authority(url, auth, sizeof(auth));
        const char *detail = errbuf && *errbuf ? errbuf : curl_easy_strerror(rc);
        switch (rc) {
        case CURLE_COULDNT_CONNECT:
                return berr_set(err, -ECONNREFUSED, "connect to %s: %s", auth, detail);
        case CURLE_COULDNT_RESOLVE_HOST:
                return berr_set(err, -EHOSTUNREACH, "resolve %s: %s", auth, detail);
        case CURLE_OPERATION_TIMEDOUT:
                return berr_set(err, -ETIMEDOUT, "%s %s: timed out (%s)", method, url, detail);
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CACERT_BADFILE:
                return berr_set(err, -EPROTO, "TLS with %s: %s", auth, detail);
        case CURLE_GOT_NOTHING:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
                return berr_set(err, -ECONNRESET, "%s %s: connection closed (%s)", method, url, detail);
        default:
                return berr_set(err, -EIO, "%s %s: %s", method, url, detail);
        }
}

static int perform(struct http_client *c, const char *method, const char *url, const char *const *headers,
                   const char *content_type, const void *body, size_t body_len, bool stream,
                   struct sink *sink, long *ret_status, char **ret_ctype, struct berr **err)
{
        CURL *h = c->curl;
        curl_easy_reset(h);
        char errbuf[CURL_ERROR_SIZE] = "";
        struct curl_slist *hl = NULL;
        if (c->auth_header)
                hl = curl_slist_append(hl, c->auth_header);
        _cleanup_free_ char *ct = content_type ? xasprintf("Content-Type: %s", content_type) : NULL;
        if (ct)
                hl = curl_slist_append(hl, ct);
        hl = curl_slist_append(hl, "Expect:");
        for (size_t i = 0; headers && headers[i]; i++)
                hl = curl_slist_append(hl, headers[i]);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, sink);
        curl_easy_setopt(h, CURLOPT_USERAGENT, "berth");
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                         (long)(c->o.connect_timeout_ms ? c->o.connect_timeout_ms : 5000));
        if (!stream)
                curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(c->o.timeout_ms ? c->o.timeout_ms : 30000));
        else {
                /* A stream ends when the server ends it; a dead peer is noticed by TCP keep-alive. */
                curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
                curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 30L);
        }
        if (c->o.ca_file)
                curl_easy_setopt(h, CURLOPT_CAINFO, c->o.ca_file);
        if (c->o.insecure) {
                curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
                curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
        }
        if (strcmp(method, "GET") == 0)
                curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        else if (strcmp(method, "HEAD") == 0)
                curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        else
                curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
            strcmp(method, "PATCH") == 0) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? (const char *)body : "");
                if (c->o.send_chunk)
                        curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE, (long)c->o.send_chunk);
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
        }
        CURLcode rc = curl_easy_perform(h);
        curl_slist_free_all(hl);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
        if (sink->fn_rc < 0)
                return sink->fn_rc;
        if (sink->too_big)
                return berr_set(err, -EFBIG, "%s %s: response larger than %u bytes", method, url, BODY_MAX);
        if (rc != CURLE_OK)
                return curl_error(rc, method, url, errbuf, err);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, ret_status);
        if (ret_ctype) {
                char *t = NULL;
                curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &t);
                *ret_ctype = t ? xstrdup(t) : NULL;
        }
        return 0;
}

int http_request(struct http_client *c, const char *method, const char *url, const char *const *headers,
                 const char *content_type, const void *body, size_t body_len, struct http_result *ret,
                 struct berr **err)
{
        *ret = (struct http_result){ 0 };
        struct sink s = { 0 };
        int r = perform(c, method, url, headers, content_type, body, body_len, false, &s, &ret->status,
                        &ret->content_type, err);
        if (r < 0) {
                free(s.buf);
                return r;
        }
        ret->body = s.buf ? s.buf : xstrdup("");
        ret->body_len = s.len;
        return 0;
}

int http_request_json(struct http_client *c, const char *method, const char *url, const json_t *body,
                      long *ret_status, json_t **ret_json, struct berr **err)
{
        _cleanup_free_ char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        struct http_result res = { 0 };
        int r = http_request(c, method, url, NULL, text ? "application/json" : NULL, text,
                             text ? strlen(text) : 0, &res, err);
        if (r < 0)
                return r;
        *ret_status = res.status;
        if (ret_json) {
                *ret_json = NULL;
                if (res.body_len > 0) {
                        json_error_t je;
                        *ret_json = json_loadb(res.body, res.body_len, JSON_REJECT_DUPLICATES, &je);
                }
        }
        http_result_free(&res);
        return 0;
}

int http_request_stream(struct http_client *c, const char *method, const char *url, long *ret_status,
                        http_stream_fn fn, void *userdata, struct berr **err)
{
        struct sink s = { .fn = fn, .userdata = userdata };
        return perform(c, method, url, NULL, NULL, NULL, 0, true, &s, ret_status, NULL, err);
}
