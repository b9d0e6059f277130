/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The public and internal API's dispatch: route tables of every module, authentication, JSON bodies,
 * errors in Cloud Foundry's V3 shape and paginated lists (docs/PLATFORM.md "Public API").
 */
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <zstd.h>

#include "controller/ctl.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strv.h"

/* Paths longer than this are unknown paths (no route has one). */
#define API_PATH_MAX 4096
/* Bounded error details. */
#define API_DETAIL_MAX       1024
#define API_PER_PAGE_DEFAULT 50
#define API_PER_PAGE_MAX     5000
/*
 * The most a compressed body may expand to: the HTTP server's limit on a plain body (1 MiB), so a
 * compressed body cannot carry more than a plain one (a routers' access log POST is at most about 512 KiB).
 */
#define API_DECODED_MAX (1u << 20)

/* The status of the response being written on this thread, for the request log line (0: not known). */
static __thread int api_status;

static const struct api_route *const api_tables[] = {
        api_routes_auth,   api_routes_tenancy, api_routes_flags,       api_routes_domains,
        api_routes_events, api_routes_apps,    api_routes_staging,     api_routes_routes,
        api_routes_sched,  api_routes_logs,    api_routes_deployments,
};

void api_respond(struct http_response *resp, int status, json_t *body)
{
        api_status = status;
        http_response_json(resp, status, body);
}

void api_respond_empty(struct http_response *resp, int status)
{
        api_status = status;
        http_response_body(resp, status, "application/json", "", 0);
}

json_t *api_metadata(void)
{
        return json_pack("{s:{},s:{}}", "labels", "annotations");
}

json_t *api_error_body(int code, const char *title, const char *detail)
{
        _cleanup_free_ char *t = NULL;
        if (strncmp(title, "CF-", 3) != 0)
                t = xasprintf("CF-%s", title);
        return json_pack("{s:[{s:i,s:s,s:s}]}", "errors", "code", code, "title", t ? t : title, "detail",
                         detail ? detail : "");
}

static void api_verror(struct http_response *resp, int status, int code, const char *title, const char *fmt,
                       va_list ap) _printf_(5, 0);
static void api_verror(struct http_response *resp, int status, int code, const char *title, const char *fmt,
                       va_list ap)
{
        char detail[API_DETAIL_MAX];
        vsnprintf(detail, sizeof(detail), fmt, ap);
        api_respond(resp, status, api_error_body(code, title, detail));
}

void api_error(struct http_response *resp, int status, int code, const char *title, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        api_verror(resp, status, code, title, fmt, ap);
        va_end(ap);
}

void api_not_found(struct http_response *resp, const char *what)
{
        api_error(resp, 404, 10010, "CF-ResourceNotFound", "%s not found", what);
}

void api_forbidden(struct http_response *resp)
{
        api_error(resp, 403, 10003, "CF-NotAuthorized",
                  "You are not authorized to perform the requested action");
}

void api_unprocessable(struct http_response *resp, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        api_verror(resp, 422, 10008, "CF-UnprocessableEntity", fmt, ap);
        va_end(ap);
}

void api_feature_disabled(struct ctl *c, struct http_response *resp, const char *flag)
{
        _cleanup_free_ char *msg = NULL;
        db_lock(c);
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    db_prepare(c, "SELECT custom_error_message FROM feature_flags WHERE name = ?", NULL);
                if (s) {
                        sqlite3_bind_text(s, 1, flag, -1, SQLITE_STATIC);
                        if (sqlite3_step(s) == SQLITE_ROW && db_col_text(s, 0) && *db_col_text(s, 0))
                                msg = xstrdup(db_col_text(s, 0));
                }
        }
        db_unlock(c);
        /* CF: FeatureDisabled "Feature Disabled: %s" with the flag's error_message or its name. */
        api_error(resp, 403, 330002, "CF-FeatureDisabled", "Feature Disabled: %s", msg ? msg : flag);
}

void api_server_error(struct http_response *resp, const struct berr *e)
{
        log_error("request failed: %s", e ? berr_msg(e) : "unknown error");
        api_error(resp, 500, 10001, "CF-ServerError", "An unknown error occurred.");
}

static char *api_vhref(struct ctl *c, const char *fmt, va_list ap) _printf_(2, 0);
static char *api_vhref(struct ctl *c, const char *fmt, va_list ap)
{
        char *path = NULL;
        if (vasprintf(&path, fmt, ap) < 0)
                abort();
        char *s = xasprintf("%s%s", c->external_url ? c->external_url : "", path);
        free(path);
        return s;
}

char *api_href(struct ctl *c, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        char *s = api_vhref(c, fmt, ap);
        va_end(ap);
        return s;
}

json_t *api_link(struct ctl *c, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        char *s = api_vhref(c, fmt, ap);
        va_end(ap);
        json_t *j = json_pack("{s:s}", "href", s);
        free(s);
        return j;
}

bool api_pattern_match(const char *pattern, const char *path, char *buf, size_t bufsz, const char *params[4])
{
        const char *p = pattern, *q = path;
        size_t used = 0;
        int np = 0;

        while (*p && *q) {
                if (*p != '/' || *q != '/')
                        return false;
                p++, q++;
                const char *pe = strchrnul(p, '/'), *qe = strchrnul(q, '/');
                size_t pl = (size_t)(pe - p), ql = (size_t)(qe - q);
                if (pl > 0 && p[0] == ':') {
                        if (ql == 0 || np >= 4 || used + ql + 1 > bufsz)
                                return false;
                        memcpy(buf + used, q, ql);
                        buf[used + ql] = '\0';
                        params[np++] = buf + used;
                        used += ql + 1;
                } else if (pl != ql || memcmp(p, q, pl) != 0) {
                        return false;
                }
                p = pe, q = qe;
        }
        return *p == '\0' && *q == '\0';
}

/* Parse a decimal query parameter in [min, max]; absent → def. false when present and invalid. */
static bool query_uint(const char *query, const char *name, unsigned long min, unsigned long max,
                       unsigned long def, unsigned long *ret)
{
        _cleanup_free_ char *v = http_query_get(query, name);
        if (!v) {
                *ret = def;
                return true;
        }
        char *end = NULL;
        errno = 0;
        if (v[0] < '0' || v[0] > '9')
                return false;
        unsigned long n = strtoul(v, &end, 10);
        if (errno || *end || n < min || n > max)
                return false;
        *ret = n;
        return true;
}

/* The query without its page and per_page parameters ("" or "&a=b&c=d"). Caller frees. */
static char *query_rest(const char *query)
{
        size_t len = strlen(query);
        char *out = xmalloc(len + 2);
        size_t o = 0;
        const char *p = query;
        while (*p) {
                const char *e = strchrnul(p, '&');
                size_t n = (size_t)(e - p);
                bool skip = n == 0 || (n >= 5 && strncmp(p, "page=", 5) == 0) ||
                            (n == 4 && strncmp(p, "page", 4) == 0) ||
                            (n >= 9 && strncmp(p, "per_page=", 9) == 0) ||
                            (n == 8 && strncmp(p, "per_page", 8) == 0);
                if (!skip) {
                        out[o++] = '&';
                        memcpy(out + o, p, n);
                        o += n;
                }
                p = *e ? e + 1 : e;
        }
        out[o] = '\0';
        return out;
}

static json_t *page_link(struct ctl *c, const char *path, const char *rest, unsigned long page,
                         unsigned long per_page)
{
        return api_link(c, "%s?page=%lu&per_page=%lu%s", path, page, per_page, rest);
}

json_t *api_pagination(struct ctl *c, const char *path, const char *query, size_t total, unsigned page,
                       unsigned per_page)
{
        _cleanup_free_ char *rest = query_rest(query ? query : "");
        size_t pages = per_page ? (total + per_page - 1) / per_page : 1;
        if (pages < 1)
                pages = 1; /* CF: an empty list still has one (empty) page */
        json_t *next = (size_t)page < pages ? page_link(c, path, rest, page + 1, per_page) : json_null();
        json_t *prev = page > 1 ? page_link(c, path, rest, page - 1, per_page) : json_null();
        return json_pack("{s:I,s:I,s:o,s:o,s:o,s:o}", "total_results", (json_int_t)total, "total_pages",
                         (json_int_t)pages, "first", page_link(c, path, rest, 1, per_page), "last",
                         page_link(c, path, rest, pages, per_page), "next", next, "previous", prev);
}

void api_respond_list(struct api_req *r, struct http_response *resp, const char *path, json_t *items)
{
        _cleanup_json_ json_t *all = items;
        unsigned long page, per_page;
        const char *query = r->http ? r->http->query : "";
        if (!query_uint(query, "page", 1, 1000000000UL, 1, &page)) {
                api_error(resp, 400, 10005, "CF-BadQueryParameter",
                          "The query parameter is invalid: Page must be greater than 0");
                return;
        }
        if (!query_uint(query, "per_page", 1, API_PER_PAGE_MAX, API_PER_PAGE_DEFAULT, &per_page)) {
                api_error(resp, 400, 10005, "CF-BadQueryParameter",
                          "The query parameter is invalid: Per page must be between 1 and 5000");
                return;
        }
        size_t total = json_array_size(all);
        json_t *res = json_array();
        size_t first = (size_t)(page - 1) * per_page;
        for (size_t i = first; i < total && i < first + per_page; i++)
                json_array_append(res, json_array_get(all, i));
        json_t *body = json_pack(
            "{s:o,s:o}", "pagination",
            api_pagination(r->ctl, path, query, total, (unsigned)page, (unsigned)per_page), "resources", res);
        api_respond(resp, 200, body);
}

bool api_in_list(char **list, const char *v)
{
        if (!list)
                return true;
        for (size_t i = 0; list[i]; i++)
                if (v && strcmp(list[i], v) == 0)
                        return true;
        return false;
}

char **api_query_list(struct api_req *r, const char *name)
{
        _cleanup_free_ char *v = http_query_get(r->http ? r->http->query : "", name);
        if (!v)
                return NULL;
        struct strv out = { 0 };
        const char *p = v;
        while (1) {
                const char *e = strchrnul(p, ',');
                if (e > p)
                        strv_push(&out, xstrndup(p, (size_t)(e - p)));
                if (!*e)
                        break;
                p = e + 1;
        }
        return strv_take(&out);
}

bool api_order_by(struct api_req *r, struct http_response *resp, const char **field, bool *desc)
{
        _cleanup_free_ char *v = http_query_get(r->http ? r->http->query : "", "order_by");
        *field = "created_at";
        *desc = false;
        if (!v || !*v)
                return true;
        const char *f = v;
        if (*f == '-' || *f == '+') {
                *desc = *f == '-';
                f++;
        }
        static const char *const fields[] = { "created_at", "updated_at", "name" };
        for (size_t i = 0; i < ARRAY_SIZE(fields); i++)
                if (strcmp(f, fields[i]) == 0) {
                        *field = fields[i];
                        return true;
                }
        api_error(resp, 400, 10005, "CF-BadQueryParameter",
                  "The query parameter is invalid: Order by can only be: 'created_at', 'updated_at', 'name'");
        return false;
}

bool api_tx_begin(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        db_lock(r->ctl);
        if (db_begin(r->ctl, &e) < 0) {
                db_unlock(r->ctl);
                api_server_error(resp, e);
                return false;
        }
        return true;
}

bool api_tx_commit(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        int k = db_commit(r->ctl, &e);
        db_unlock(r->ctl);
        if (k < 0) {
                api_server_error(resp, e);
                return false;
        }
        return true;
}

void api_tx_rollback(struct api_req *r)
{
        db_rollback(r->ctl);
        db_unlock(r->ctl);
}

/* The token of "Authorization: bearer TOKEN" (scheme case-insensitive), or NULL. Borrowed from h. */
static const char *bearer_token(const char *h, size_t *ret_len)
{
        if (!h || strncasecmp(h, "bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
                return NULL;
        h += 6;
        while (*h == ' ' || *h == '\t')
                h++;
        size_t n = strlen(h);
        while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
                n--;
        if (n == 0)
                return NULL;
        *ret_len = n;
        return h;
}

/* Authenticate per the route's access; false with 401 sent when refused. */
static bool api_authenticate(struct api_req *r, enum api_access access, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        if (access == API_PUBLIC)
                return true;
        const char *h = http_request_header(r->http, "Authorization");
        if (!h) {
                api_error(resp, 401, 10002, "CF-NotAuthenticated", "Authentication error");
                return false;
        }
        size_t n = 0;
        const char *tok = bearer_token(h, &n);
        if (tok && access == API_INTERNAL) {
                size_t want = c->internal_token ? strlen(c->internal_token) : 0;
                if (want > 0 && n == want && sodium_memcmp(tok, c->internal_token, n) == 0) {
                        r->user.internal = true;
                        r->user.admin = true;
                        snprintf(r->user.username, sizeof(r->user.username), "internal");
                        return true;
                }
        } else if (tok && n < 512) {
                char buf[512];
                memcpy(buf, tok, n);
                buf[n] = '\0';
                db_lock(c);
                int k = auth_token_lookup(c, buf, &r->user);
                db_unlock(c);
                sodium_memzero(buf, sizeof(buf));
                if (k == 0)
                        return true;
        }
        api_error(resp, 401, 1000, "CF-InvalidAuthToken", "Invalid Auth Token");
        return false;
}

/*
 * A body sent with "Content-Encoding: zstd" (one or more frames), decoded into *ret (caller frees) of
 * *ret_len bytes, NUL-terminated. -EMSGSIZE once it would exceed API_DECODED_MAX, -EBADMSG if it is not zstd
 * or ends inside a frame.
 */
static int body_zstd_decode(const char *in, size_t in_len, char **ret, size_t *ret_len, const char **why)
{
        *why = NULL;
        if (in_len == 0) {
                *why = "the body is empty";
                return -EBADMSG;
        }
        ZSTD_DCtx *d = ZSTD_createDCtx();
        if (!d)
                return -ENOMEM;
        size_t cap = 65536, len = 0, last = 0;
        char *out = xmalloc(cap + 1);
        ZSTD_inBuffer ib = { in, in_len, 0 };
        int r = 0;
        while (ib.pos < ib.size || last != 0) {
                if (len == cap) {
                        if (cap >= API_DECODED_MAX) {
                                r = -EMSGSIZE;
                                break;
                        }
                        cap = cap * 2 > API_DECODED_MAX ? API_DECODED_MAX : cap * 2;
                        out = xrealloc(out, cap + 1);
                }
                ZSTD_outBuffer ob = { out, cap, len };
                size_t pos = ib.pos;
                last = ZSTD_decompressStream(d, &ob, &ib);
                if (ZSTD_isError(last)) {
                        *why = ZSTD_getErrorName(last);
                        r = -EBADMSG;
                        break;
                }
                if (ob.pos == len && ib.pos == pos && ob.pos < cap) {
                        /* No progress with room left: the input ended inside a frame. */
                        *why = "the body ends inside a zstd frame";
                        r = -EBADMSG;
                        break;
                }
                len = ob.pos;
        }
        ZSTD_freeDCtx(d);
        if (r < 0) {
                free(out);
                return r;
        }
        out[len] = '\0';
        *ret = out;
        *ret_len = len;
        return 0;
}

static bool method_has_body(const char *m)
{
        return strcmp(m, "POST") == 0 || strcmp(m, "PATCH") == 0 || strcmp(m, "PUT") == 0;
}

/* Find the route; *ret_path_known tells a 405 from a 404 when none matches the method. */
static const struct api_route *api_find(const char *method, const char *path, char *buf, size_t bufsz,
                                        const char *params[4], bool *ret_path_known)
{
        *ret_path_known = false;
        for (size_t t = 0; t < ARRAY_SIZE(api_tables); t++)
                for (const struct api_route *rt = api_tables[t]; rt && rt->method; rt++) {
                        const char *p[4] = { NULL };
                        if (!api_pattern_match(rt->pattern, path, buf, bufsz, p))
                                continue;
                        if (strcmp(rt->method, method) != 0) {
                                *ret_path_known = true;
                                continue;
                        }
                        memcpy(params, p, sizeof(p));
                        return rt;
                }
        return NULL;
}

static void api_dispatch(struct ctl *c, const struct http_request *req, struct http_response *resp)
{
        char buf[API_PATH_MAX];
        struct api_req r = { .ctl = c, .http = req };
        bool known = false;
        const struct api_route *rt = NULL;

        if (strlen(req->path) < API_PATH_MAX)
                rt = api_find(req->method, req->path, buf, sizeof(buf), r.params, &known);
        if (!rt) {
                api_error(resp, known ? 405 : 404, 10000, "CF-NotFound", "Unknown request");
                return;
        }
        if (!api_authenticate(&r, rt->access, resp))
                return;
        if (method_has_body(req->method)) {
                /* UAA's token endpoint takes a form; everything else is JSON whatever the Content-Type says
                 * (curl -d sends a form type). */
                bool form = strncmp(rt->pattern, "/oauth/", 7) == 0;
                const char *body = req->body;
                size_t body_len = req->body_len;
                _cleanup_free_ char *decoded = NULL;
                /*
                 * Content-Encoding (RFC 9110 8.4): zstd is taken (the routers' access log POSTs; JSON is
                 * about 12 times smaller); any other coding is 415, as a body that cannot be read.
                 */
                const char *ce = http_request_header(req, "Content-Encoding");
                if (ce && *ce && strcasecmp(ce, "identity") != 0) {
                        const char *why = NULL;
                        int dr = strcasecmp(ce, "zstd") == 0 && !form
                                     ? body_zstd_decode(body, body_len, &decoded, &body_len, &why)
                                     : -EPROTONOSUPPORT;
                        if (dr == -EPROTONOSUPPORT) {
                                http_response_header(resp, "Accept-Encoding", "zstd");
                                api_error(resp, 415, 1001, "CF-MessageParseError",
                                          "Request invalid due to parse error: Content-Encoding %.64s is not "
                                          "supported (zstd is)",
                                          ce);
                                return;
                        }
                        if (dr == -EMSGSIZE) {
                                api_error(resp, 413, 1001, "CF-MessageParseError",
                                          "Request invalid due to parse error: the zstd body decodes to more "
                                          "than %u bytes",
                                          API_DECODED_MAX);
                                return;
                        }
                        if (dr < 0) {
                                api_error(
                                    resp, 400, 1001, "CF-MessageParseError",
                                    "Request invalid due to parse error: the zstd body is not valid: %s",
                                    why ? why : strerror(-dr));
                                return;
                        }
                        body = decoded;
                }
                if (!form && body_len == 0) {
                        r.body = json_object();
                } else if (!form) {
                        _cleanup_berr_ struct berr *e = NULL;
                        json_t *j = NULL;
                        if (json_parse_buf(body, body_len, &j, &e) < 0 || !json_is_object(j)) {
                                json_decref(j);
                                api_error(resp, 400, 1001, "CF-MessageParseError",
                                          "Request invalid due to parse error: %s",
                                          e ? berr_msg(e) : "the body must be a JSON object");
                                return;
                        }
                        r.body = j;
                }
        }
        rt->fn(&r, resp);
        json_decref(r.body);
}

void api_handle(void *userdata, const struct http_request *req, struct http_response *resp)
{
        struct ctl *c = userdata;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        api_status = 0;
        api_dispatch(c, req, resp);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (api_status)
                log_info("%s %s %d %.1fms", req->method, req->path, api_status, ms);
        else
                log_info("%s %s - %.1fms", req->method, req->path, ms);
}
