/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry authentication: WWW-Authenticate parsing (RFC 7235), Basic credentials, and Bearer tokens
 * (distribution's token.md / oauth.md) with a per-client cache. The HTTP transport is registry.c's.
 *
 * Secrets (password, tokens, Authorization lines) never reach a log line or an error message, and the
 * heap copies we make of them are wiped before they are freed.
 */
#include <ctype.h>
#include <openssl/evp.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "image/registry_internal.h"
#include "lib/http.h"
#include "lib/json.h"
#include "lib/log.h"

#define AUTH_HEADER_MAX     16384 /* one WWW-Authenticate value; real ones are a few hundred bytes */
#define AUTH_MAX_CHALLENGES 16
#define AUTH_MAX_PARAMS     32

void registry_secret_free(char *s)
{
        if (!s)
                return;
        explicit_bzero(s, strlen(s));
        free(s);
}

#define _cleanup_secret_ _cleanup_(registry_secret_freep)

/* ---- WWW-Authenticate ------------------------------------------------------------------------------ */

void auth_challenges_free(struct auth_challenge *c, size_t n)
{
        if (!c)
                return;
        for (size_t i = 0; i < n; i++) {
                free(c[i].scheme);
                free(c[i].token68);
                for (size_t j = 0; j < c[i].n_params; j++) {
                        free(c[i].params[j].name);
                        free(c[i].params[j].value);
                }
                free(c[i].params);
        }
        free(c);
}

const char *auth_challenge_param(const struct auth_challenge *c, const char *name)
{
        for (size_t i = 0; i < c->n_params; i++)
                if (strcmp(c->params[i].name, name) == 0)
                        return c->params[i].value;
        return NULL;
}

static bool is_token68_char(unsigned char ch)
{
        return isalnum(ch) || (ch && strchr("-._~+/", ch));
}

/*
 * Characters of an unquoted parameter value. RFC 7235 says token, but servers in the wild send realms
 * such as realm=https://host/token unquoted; accepting ':' '/' '@' '[' ']' '?' '=' there costs nothing.
 */
static bool is_value_char(unsigned char ch)
{
        return http_is_tchar(ch) || (ch && strchr("/:@[]?=", ch));
}

static bool is_ows(char ch)
{
        return ch == ' ' || ch == '\t';
}

static const char *skip_ows(const char *p)
{
        while (is_ows(*p))
                p++;
        return p;
}

static size_t token_len(const char *p)
{
        size_t n = 0;
        while (http_is_tchar((unsigned char)p[n]))
                n++;
        return n;
}

static char *lowercase_dup(const char *p, size_t n)
{
        char *s = xstrndup(p, n);
        for (char *q = s; *q; q++)
                *q = (char)tolower((unsigned char)*q);
        return s;
}

/* Length of a token68 at p when what follows it (after OWS) ends the challenge, else 0. */
static size_t token68_len(const char *p)
{
        size_t n = 0;
        while (is_token68_char((unsigned char)p[n]))
                n++;
        if (n == 0)
                return 0;
        while (p[n] == '=')
                n++;
        const char *q = skip_ows(p + n);
        return (*q == '\0' || *q == ',') ? n : 0;
}

/* quoted-string at *pp (which points at the opening quote); unescapes quoted-pairs. */
static int parse_quoted(const char **pp, char **ret, struct berr **err)
{
        const char *p = *pp + 1;
        size_t cap = 64, n = 0;
        _cleanup_free_ char *out = xmalloc(cap);
        for (;;) {
                unsigned char ch = (unsigned char)*p;
                if (ch == '\0')
                        return berr_set(err, -EINVAL,
                                        "invalid WWW-Authenticate header: unterminated quoted string");
                if (ch == '"')
                        break;
                if (ch == '\\') {
                        p++;
                        ch = (unsigned char)*p;
                        if (ch == '\0')
                                return berr_set(
                                    err, -EINVAL,
                                    "invalid WWW-Authenticate header: unterminated quoted string");
                        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                                return berr_set(err, -EINVAL,
                                                "invalid WWW-Authenticate header: control character escaped");
                } else if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
                        return berr_set(
                            err, -EINVAL,
                            "invalid WWW-Authenticate header: control character in quoted string");
                }
                if (n + 2 > cap)
                        out = xrealloc(out, cap *= 2);
                out[n++] = (char)ch;
                p++;
        }
        out[n] = '\0';
        *pp = p + 1;
        *ret = TAKE_PTR(out);
        return 0;
}

static struct auth_challenge *challenge_add(struct auth_challenge **v, size_t *n, const char *scheme,
                                            size_t len)
{
        *v = xrealloc(*v, (*n + 1) * sizeof(**v));
        struct auth_challenge *c = &(*v)[(*n)++];
        *c = (struct auth_challenge){ .scheme = lowercase_dup(scheme, len) };
        return c;
}

/*
 * Parse one WWW-Authenticate field value into challenges (RFC 7235 §4.1, §2.1):
 *   1#challenge;  challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 *   auth-param = token BWS "=" BWS ( token / quoted-string )
 * Several header lines are parsed one by one and their challenges concatenated by the caller. Schemes
 * and parameter names are lowercased; quoted values are unescaped. A comma followed by "token =" continues
 * the parameter list, a comma followed by a token not followed by "=" starts the next challenge.
 * Returns 0 with *ret (caller frees with auth_challenges_free; may be NULL when the value holds only
 * commas/blank) and *ret_n, or -EINVAL for anything malformed, duplicated parameters included.
 */
BERTH_STATIC int www_authenticate_parse(const char *header, struct auth_challenge **ret, size_t *ret_n,
                                        struct berr **err)
{
        struct auth_challenge *v = NULL;
        size_t n = 0;
        int r;

        if (strlen(header) > AUTH_HEADER_MAX) {
                r = berr_set(err, -EINVAL, "invalid WWW-Authenticate header: longer than %d bytes",
                             AUTH_HEADER_MAX);
                goto fail;
        }
        const char *p = header;
        for (;;) {
                while (is_ows(*p) || *p == ',')
                        p++;
                if (*p == '\0')
                        break;
                size_t sl = token_len(p);
                if (sl == 0) {
                        r = berr_set(err, -EINVAL,
                                     "invalid WWW-Authenticate header: expected an authentication scheme at "
                                     "offset %zu",
                                     (size_t)(p - header));
                        goto fail;
                }
                if (n >= AUTH_MAX_CHALLENGES) {
                        r = berr_set(err, -EINVAL, "invalid WWW-Authenticate header: more than %d challenges",
                                     AUTH_MAX_CHALLENGES);
                        goto fail;
                }
                struct auth_challenge *c = challenge_add(&v, &n, p, sl);
                p += sl;
                if (*p == '\0' || *p == ',')
                        continue;
                if (!is_ows(*p)) {
                        r = berr_set(
                            err, -EINVAL,
                            "invalid WWW-Authenticate header: unexpected character after scheme \"%s\"",
                            c->scheme);
                        goto fail;
                }
                p = skip_ows(p);
                if (*p == '\0' || *p == ',')
                        continue;
                size_t t68 = token68_len(p);
                if (t68 > 0) {
                        c->token68 = xstrndup(p, t68);
                        p = skip_ows(p + t68);
                        continue;
                }
                /* auth-param list */
                for (;;) {
                        size_t nl = token_len(p);
                        if (nl == 0) {
                                r = berr_set(
                                    err, -EINVAL,
                                    "invalid WWW-Authenticate header: expected a parameter name at offset "
                                    "%zu",
                                    (size_t)(p - header));
                                goto fail;
                        }
                        _cleanup_free_ char *name = lowercase_dup(p, nl);
                        p = skip_ows(p + nl);
                        if (*p != '=') {
                                r = berr_set(err, -EINVAL,
                                             "invalid WWW-Authenticate header: expected '=' after \"%.64s\"",
                                             name);
                                goto fail;
                        }
                        p = skip_ows(p + 1);
                        _cleanup_free_ char *value = NULL;
                        if (*p == '"') {
                                r = parse_quoted(&p, &value, err);
                                if (r < 0)
                                        goto fail;
                        } else {
                                size_t vl = 0;
                                while (is_value_char((unsigned char)p[vl]))
                                        vl++;
                                if (vl == 0) {
                                        r = berr_set(
                                            err, -EINVAL,
                                            "invalid WWW-Authenticate header: missing value for \"%.64s\"",
                                            name);
                                        goto fail;
                                }
                                value = xstrndup(p, vl);
                                p += vl;
                        }
                        if (auth_challenge_param(c, name)) {
                                r = berr_set(
                                    err, -EINVAL,
                                    "invalid WWW-Authenticate header: parameter \"%.64s\" given twice", name);
                                goto fail;
                        }
                        if (c->n_params >= AUTH_MAX_PARAMS) {
                                r = berr_set(err, -EINVAL,
                                             "invalid WWW-Authenticate header: more than %d parameters",
                                             AUTH_MAX_PARAMS);
                                goto fail;
                        }
                        c->params = xrealloc(c->params, (c->n_params + 1) * sizeof(*c->params));
                        c->params[c->n_params++] = (struct auth_param){ TAKE_PTR(name), TAKE_PTR(value) };

                        p = skip_ows(p);
                        if (*p == '\0')
                                break;
                        if (*p != ',') {
                                r = berr_set(
                                    err, -EINVAL,
                                    "invalid WWW-Authenticate header: unexpected character at offset %zu",
                                    (size_t)(p - header));
                                goto fail;
                        }
                        while (is_ows(*p) || *p == ',')
                                p++;
                        if (*p == '\0')
                                break;
                        /* Another parameter ("name =") or the next challenge ("Scheme ...")? */
                        size_t peek = token_len(p);
                        if (peek == 0 || *skip_ows(p + peek) != '=')
                                break;
                }
        }
        *ret = v;
        *ret_n = n;
        return 0;
fail:
        auth_challenges_free(v, n);
        return r;
}

/* ---- scopes and token responses ------------------------------------------------------------------- */

char *registry_scope_pull(const char *path)
{
        /* scope.md: resourcename may itself contain ':' (never here: the host is not part of it). */
        return xasprintf("repository:%s:pull", path);
}

static int parse_digits(const char **pp, int n, int *ret)
{
        int v = 0;
        for (int i = 0; i < n; i++) {
                char ch = (*pp)[i];
                if (ch < '0' || ch > '9')
                        return -EINVAL;
                v = v * 10 + (ch - '0');
        }
        *pp += n;
        *ret = v;
        return 0;
}

/*
 * RFC 3339 date-time ("2024-05-01T12:00:00Z", fractional seconds and numeric offsets allowed) to a
 * time_t. Returns 0 or -EINVAL.
 */
BERTH_STATIC int registry_rfc3339_parse(const char *s, time_t *ret)
{
        const char *p = s;
        int year, mon, day, hour, min, sec;
        if (parse_digits(&p, 4, &year) < 0 || *p++ != '-' || parse_digits(&p, 2, &mon) < 0 || *p++ != '-' ||
            parse_digits(&p, 2, &day) < 0)
                return -EINVAL;
        if (*p != 'T' && *p != 't' && *p != ' ')
                return -EINVAL;
        p++;
        if (parse_digits(&p, 2, &hour) < 0 || *p++ != ':' || parse_digits(&p, 2, &min) < 0 || *p++ != ':' ||
            parse_digits(&p, 2, &sec) < 0)
                return -EINVAL;
        if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
                return -EINVAL;
        if (*p == '.') {
                p++;
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                while (*p >= '0' && *p <= '9')
                        p++;
        }
        long offset = 0;
        if (*p == 'Z' || *p == 'z') {
                p++;
        } else if (*p == '+' || *p == '-') {
                int sign = *p++ == '-' ? -1 : 1, oh, om;
                if (parse_digits(&p, 2, &oh) < 0 || *p++ != ':' || parse_digits(&p, 2, &om) < 0 || oh > 23 ||
                    om > 59)
                        return -EINVAL;
                offset = sign * (oh * 3600L + om * 60L);
        } else {
                return -EINVAL;
        }
        if (*p != '\0')
                return -EINVAL;
        struct tm tm = { .tm_year = year - 1900,
                         .tm_mon = mon - 1,
                         .tm_mday = day,
                         .tm_hour = hour,
                         .tm_min = min,
                         .tm_sec = sec > 59 ? 59 : sec };
        time_t t = timegm(&tm);
        if (t == (time_t)-1)
                return -EINVAL;
        *ret = t - offset;
        return 0;
}

static bool token_chars_ok(const char *t)
{
        /* The token goes verbatim into "Authorization: Bearer <t>": no spaces, no CR/LF, printable. */
        for (const unsigned char *p = (const unsigned char *)t; *p; p++)
                if (*p <= 0x20 || *p >= 0x7f)
                        return false;
        return true;
}

/*
 * Parse a token server's JSON answer (token.md "Token Response Fields"). Accepts "token" or
 * "access_token" (token wins when both are set); "expires_in" defaults to 60 s and is raised to 60 s
 * when smaller; "issued_at" (RFC 3339) is the start of the lifetime when it is consistent with our clock
 * (not in the future, not already expired), else `now` is. Returns 0 with *ret_token (caller frees) and
 * *ret_expiry, or -EPROTO with a message that never includes the token.
 */
BERTH_STATIC int registry_token_parse(const char *body, size_t len, time_t now, char **ret_token,
                                      time_t *ret_expiry, struct berr **err)
{
        _cleanup_json_ json_t *j = NULL;
        _cleanup_berr_ struct berr *jerr = NULL;
        if (json_parse_buf(body, len, &j, &jerr) < 0)
                return berr_set(err, -EPROTO, "token response is not valid JSON: %s", berr_msg(jerr));
        if (!json_is_object(j))
                return berr_set(err, -EPROTO, "token response is not a JSON object");
        const char *tok = NULL, *access = NULL, *issued = NULL;
        if (json_get_string(j, "token", false, &tok, &jerr) < 0 ||
            json_get_string(j, "access_token", false, &access, &jerr) < 0 ||
            json_get_string(j, "issued_at", false, &issued, &jerr) < 0)
                return berr_set(err, -EPROTO, "invalid token response: %s", berr_msg(jerr));
        if (!tok || !*tok)
                tok = access;
        if (!tok || !*tok)
                return berr_set(err, -EPROTO, "token response has neither \"token\" nor \"access_token\"");
        if (strlen(tok) > REGISTRY_TOKEN_MAX || !token_chars_ok(tok))
                return berr_set(err, -EPROTO, "token response holds a malformed token");

        int64_t lifetime = REGISTRY_TOKEN_MIN_LIFE;
        json_t *e = json_object_get(j, "expires_in");
        if (json_is_integer(e))
                lifetime = json_integer_value(e);
        else if (json_is_real(e)) {
                /* Clamp as a double: converting an out-of-range double to an integer is undefined. */
                double d = json_real_value(e);
                lifetime = !(d > 0) ? 0 : d > 366 * 86400.0 ? 366 * 86400 : (int64_t)d;
        } else if (e && !json_is_null(e))
                return berr_set(err, -EPROTO, "invalid token response: \"expires_in\" must be a number");
        if (lifetime < REGISTRY_TOKEN_MIN_LIFE)
                lifetime = REGISTRY_TOKEN_MIN_LIFE;
        if (lifetime > 366 * 86400)
                lifetime = 366 * 86400;

        time_t base = now, t;
        if (issued && registry_rfc3339_parse(issued, &t) == 0 && t <= now && t + lifetime > now)
                base = t;
        *ret_token = xstrdup(tok);
        *ret_expiry = base + (time_t)lifetime;
        return 0;
}

/* ---- Basic ----------------------------------------------------------------------------------------- */

char *registry_basic_header(const char *user, const char *password)
{
        _cleanup_secret_ char *plain = xasprintf("%s:%s", user, password ? password : "");
        size_t n = strlen(plain);
        char *enc = xmalloc(4 * ((n + 2) / 3) + 1);
        EVP_EncodeBlock((unsigned char *)enc, (const unsigned char *)plain, (int)n);
        char *h = xasprintf("Authorization: Basic %s", enc);
        registry_secret_free(enc);
        return h;
}

/* ---- challenges → auth kind ---------------------------------------------------------------------- */

static int realm_validate(const char *realm, struct berr **err)
{
        CURLU *u = curl_url();
        if (!u)
                abort();
        _cleanup_free_ char *scheme = NULL;
        int r = 0;
        if (curl_url_set(u, CURLUPART_URL, realm, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            (strcasecmp(scheme, "https") != 0 && strcasecmp(scheme, "http") != 0))
                r = -EPROTO;
        curl_url_cleanup(u);
        if (r < 0)
                return berr_set(err, r, "Bearer challenge has an invalid realm (an http(s) URL is required)");
        return 0;
}

int registry_auth_set_challenges(struct registry_client *c, char *const *www_auth, size_t n,
                                 struct berr **err)
{
        struct auth_challenge *all = NULL;
        size_t n_all = 0;
        int r = 0;

        for (size_t i = 0; i < n && r == 0; i++) {
                struct auth_challenge *v = NULL;
                size_t nv = 0;
                r = www_authenticate_parse(www_auth[i], &v, &nv, err);
                if (r < 0)
                        break;
                all = xrealloc(all, (n_all + nv) * sizeof(*all));
                memcpy(all + n_all, v, nv * sizeof(*v));
                n_all += nv;
                free(v);
        }
        if (r < 0) {
                berr_prefix(err, r, "registry %s", c->domain);
                goto out;
        }

        const struct auth_challenge *bearer = NULL, *basic = NULL;
        for (size_t i = 0; i < n_all; i++) {
                if (!bearer && strcmp(all[i].scheme, "bearer") == 0)
                        bearer = &all[i];
                else if (!basic && strcmp(all[i].scheme, "basic") == 0)
                        basic = &all[i];
        }
        if (bearer) {
                const char *realm = auth_challenge_param(bearer, "realm");
                if (!realm) {
                        r = berr_set(err, -EPROTO, "registry %s sent a Bearer challenge without a realm",
                                     c->domain);
                        goto out;
                }
                r = realm_validate(realm, err);
                if (r < 0) {
                        berr_prefix(err, r, "registry %s", c->domain);
                        goto out;
                }
                const char *service = auth_challenge_param(bearer, "service");
                pthread_mutex_lock(&c->lock);
                c->auth_kind = REGISTRY_AUTH_BEARER;
                free(c->realm);
                free(c->service);
                c->realm = xstrdup(realm);
                c->service = service ? xstrdup(service) : NULL;
                pthread_mutex_unlock(&c->lock);
                log_debug("registry %s: bearer auth, realm %s", c->domain, realm);
        } else if (basic) {
                pthread_mutex_lock(&c->lock);
                c->auth_kind = REGISTRY_AUTH_BASIC;
                pthread_mutex_unlock(&c->lock);
                log_debug("registry %s: basic auth", c->domain);
        } else if (n_all > 0) {
                r = berr_set(err, -EPROTONOSUPPORT,
                             "registry %s asks for an unsupported authentication scheme \"%.32s\"", c->domain,
                             all[0].scheme);
        } else {
                r = berr_set(err, -EPROTO, "registry %s answered 401 without a WWW-Authenticate challenge",
                             c->domain);
        }
out:
        auth_challenges_free(all, n_all);
        return r;
}

enum registry_auth_kind registry_auth_kind_get(struct registry_client *c)
{
        pthread_mutex_lock(&c->lock);
        enum registry_auth_kind k = c->auth_kind;
        pthread_mutex_unlock(&c->lock);
        return k;
}

/* ---- Bearer tokens --------------------------------------------------------------------------------- */

static bool streq_null(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Cached token for (realm, service, scope) valid at `now` (c->lock held); a copy, caller frees. */
static char *token_cache_get(struct registry_client *c, const char *realm, const char *service, time_t now)
{
        for (size_t i = 0; i < c->n_tokens; i++) {
                struct registry_token *t = &c->tokens[i];
                if (strcmp(t->realm, realm) == 0 && streq_null(t->service, service) &&
                    strcmp(t->scope, c->scope) == 0 && now < t->expiry - REGISTRY_TOKEN_MARGIN)
                        return xstrdup(t->token);
        }
        return NULL;
}

static void token_entry_free(struct registry_token *t)
{
        free(t->realm);
        free(t->service);
        free(t->scope);
        registry_secret_free(t->token);
}

/* Replace or add (c->lock held); takes ownership of token. */
static void token_cache_put(struct registry_client *c, const char *realm, const char *service, char *token,
                            time_t expiry)
{
        for (size_t i = 0; i < c->n_tokens; i++) {
                struct registry_token *t = &c->tokens[i];
                if (strcmp(t->realm, realm) == 0 && streq_null(t->service, service) &&
                    strcmp(t->scope, c->scope) == 0) {
                        registry_secret_free(t->token);
                        t->token = token;
                        t->expiry = expiry;
                        return;
                }
        }
        c->tokens = xrealloc(c->tokens, (c->n_tokens + 1) * sizeof(*c->tokens));
        c->tokens[c->n_tokens++] = (struct registry_token){
                .realm = xstrdup(realm),
                .service = service ? xstrdup(service) : NULL,
                .scope = xstrdup(c->scope),
                .token = token,
                .expiry = expiry,
        };
}

static char *form_escape(const char *s)
{
        char *e = curl_easy_escape(NULL, s, 0);
        if (!e)
                abort();
        char *r = xstrdup(e);
        explicit_bzero(e, strlen(e));
        curl_free(e);
        return r;
}

/* realm?service=S&scope=X[&account=U] (caller frees), or NULL when the realm is not a URL. */
static char *token_get_url(const char *realm, const char *service, const char *scope, const char *account)
{
        CURLU *u = curl_url();
        if (!u)
                abort();
        char *out = NULL;
        _cleanup_free_ char *q1 = service ? xasprintf("service=%s", service) : NULL;
        _cleanup_free_ char *q2 = xasprintf("scope=%s", scope);
        _cleanup_free_ char *q3 = account ? xasprintf("account=%s", account) : NULL;
        unsigned fl = CURLU_APPENDQUERY | CURLU_URLENCODE;
        if (curl_url_set(u, CURLUPART_URL, realm, 0) != CURLUE_OK ||
            curl_url_set(u, CURLUPART_USER, NULL, 0) != CURLUE_OK ||
            curl_url_set(u, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK ||
            curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0) != CURLUE_OK ||
            (q1 && curl_url_set(u, CURLUPART_QUERY, q1, fl) != CURLUE_OK) ||
            curl_url_set(u, CURLUPART_QUERY, q2, fl) != CURLUE_OK ||
            (q3 && curl_url_set(u, CURLUPART_QUERY, q3, fl) != CURLUE_OK)) {
                curl_url_cleanup(u);
                return NULL;
        }
        char *s = NULL;
        if (curl_url_get(u, CURLUPART_URL, &s, 0) == CURLUE_OK) {
                out = xstrdup(s);
                curl_free(s);
        }
        curl_url_cleanup(u);
        return out;
}

/* Host part of a URL for messages (no path, query or userinfo: those may carry signatures). */
static char *url_host_for_display(const char *url)
{
        CURLU *u = curl_url();
        if (!u)
                abort();
        char *h = NULL, *out;
        if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
            curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK) {
                out = xstrdup(h);
                curl_free(h);
        } else {
                out = xstrdup("(invalid URL)");
        }
        curl_url_cleanup(u);
        return out;
}

static int token_status_error(struct registry_client *c, const struct http_response *res, const char *realm,
                              struct berr **err)
{
        if (res->status == 401 || res->status == 403) {
                if (c->username)
                        return berr_set(err, -EACCES, "invalid username or password for %s", c->domain);
                return berr_set(err, -EACCES,
                                "registry %s requires authentication: pass --username (password in "
                                "$BERTH_REGISTRY_PASSWORD)",
                                c->domain);
        }
        _cleanup_free_ char *host = url_host_for_display(realm);
        _cleanup_free_ char *msg = registry_error_message(res->body, res->len);
        return berr_set(err, -EIO, "token server %s answered HTTP %ld%s%s", host, res->status,
                        msg ? ": " : "", msg ? msg : "");
}

/*
 * Ask the token server for a pull token. With credentials: OAuth2 POST (oauth.md, grant_type=password),
 * and on any non-200 answer the GET form with Basic credentials (token.md), as containerd does because
 * GCR, Artifactory and ACR answer the POST with 404/401/400. Without credentials: anonymous GET.
 */
static int token_fetch(struct registry_client *c, const char *realm, const char *service, char **ret_token,
                       time_t *ret_expiry, struct berr **err)
{
        bool creds = c->username != NULL;
        _cleanup_free_ char *host = url_host_for_display(realm);
        _cleanup_free_ char *what = xasprintf("token server %s", host);
        int r;

        if (creds && strncasecmp(realm, "https://", 8) != 0 && !registry_url_insecure(c, realm))
                return berr_set(err, -EPERM,
                                "refusing to send credentials for %s to token server %s over plain http",
                                c->domain, host);

        if (creds) {
                _cleanup_free_ char *u = form_escape(c->username);
                _cleanup_secret_ char *pw = form_escape(c->password ? c->password : "");
                _cleanup_free_ char *sc = form_escape(c->scope);
                _cleanup_free_ char *sv = service ? form_escape(service) : NULL;
                _cleanup_secret_ char *body =
                    xasprintf("grant_type=password&username=%s&password=%s%s%s&client_id=berth&scope=%s", u,
                              pw, sv ? "&service=" : "", sv ? sv : "", sc);
                struct http_fetch f = { .url = realm,
                                        .accept = "application/json",
                                        .post = body,
                                        .max_body = REGISTRY_TOKEN_BODY_MAX };
                struct http_response res = { 0 };
                r = registry_http_fetch(c, &f, what, &res, err);
                if (r == 0 && res.status == 200) {
                        r = registry_token_parse(res.body, res.len, time(NULL), ret_token, ret_expiry, err);
                        if (res.body)
                                explicit_bzero(res.body, res.len);
                        http_response_done(&res);
                        if (r < 0)
                                return berr_prefix(err, r, "%s", what);
                        return 0;
                }
                long status = res.status;
                if (res.body)
                        explicit_bzero(res.body, res.len);
                http_response_done(&res);
                if (r < 0)
                        return r;
                log_debug("%s: OAuth2 POST answered HTTP %ld, trying GET", what, status);
        }

        _cleanup_free_ char *url = token_get_url(realm, service, c->scope, c->username);
        if (!url)
                return berr_set(err, -EPROTO, "registry %s sent an invalid token realm", c->domain);
        _cleanup_secret_ char *auth = creds ? registry_basic_header(c->username, c->password) : NULL;
        struct http_fetch f = { .url = url,
                                .accept = "application/json",
                                .auth = auth,
                                .auth_origin = realm,
                                .max_body = REGISTRY_TOKEN_BODY_MAX };
        struct http_response res = { 0 };
        r = registry_http_fetch(c, &f, what, &res, err);
        if (r == 0 && res.status != 200)
                r = token_status_error(c, &res, realm, err);
        else if (r == 0) {
                r = registry_token_parse(res.body, res.len, time(NULL), ret_token, ret_expiry, err);
                if (r < 0)
                        berr_prefix(err, r, "%s", what);
        }
        if (res.body)
                explicit_bzero(res.body, res.len);
        http_response_done(&res);
        return r;
}

int registry_auth_header(struct registry_client *c, char **ret, bool *ret_fresh, struct berr **err)
{
        *ret = NULL;
        *ret_fresh = false;

        pthread_mutex_lock(&c->lock);
        enum registry_auth_kind kind = c->auth_kind;
        _cleanup_free_ char *realm = c->realm ? xstrdup(c->realm) : NULL;
        _cleanup_free_ char *service = c->service ? xstrdup(c->service) : NULL;
        pthread_mutex_unlock(&c->lock);

        if (kind == REGISTRY_AUTH_NONE)
                return 0;
        if (kind == REGISTRY_AUTH_BASIC) {
                if (!c->username)
                        return berr_set(err, -EACCES,
                                        "registry %s requires authentication: pass --username (password in "
                                        "$BERTH_REGISTRY_PASSWORD)",
                                        c->domain);
                *ret = registry_basic_header(c->username, c->password);
                /* There is nothing to refresh: a 401 now means the credentials are wrong. */
                *ret_fresh = true;
                return 0;
        }

        pthread_mutex_lock(&c->lock);
        _cleanup_secret_ char *tok = token_cache_get(c, realm, service, time(NULL));
        pthread_mutex_unlock(&c->lock);
        if (tok) {
                *ret = xasprintf("Authorization: Bearer %s", tok);
                return 0;
        }

        /* One fetch at a time: parallel blob streams starting together wait for the first one's token. */
        pthread_mutex_lock(&c->token_lock);
        pthread_mutex_lock(&c->lock);
        tok = token_cache_get(c, realm, service, time(NULL));
        pthread_mutex_unlock(&c->lock);
        if (tok) {
                pthread_mutex_unlock(&c->token_lock);
                *ret = xasprintf("Authorization: Bearer %s", tok);
                return 0;
        }
        time_t expiry = 0;
        int r = token_fetch(c, realm, service, &tok, &expiry, err);
        if (r == 0) {
                pthread_mutex_lock(&c->lock);
                token_cache_put(c, realm, service, xstrdup(tok), expiry);
                pthread_mutex_unlock(&c->lock);
                log_debug("registry %s: new token for %s, valid %lld s", c->domain, c->scope,
                          (long long)(expiry - time(NULL)));
        }
        pthread_mutex_unlock(&c->token_lock);
        if (r < 0)
                return r;
        *ret = xasprintf("Authorization: Bearer %s", tok);
        *ret_fresh = true;
        return 0;
}

void registry_auth_invalidate(struct registry_client *c, const char *header)
{
        static const char prefix[] = "Authorization: Bearer ";
        if (!header || strncmp(header, prefix, sizeof(prefix) - 1) != 0)
                return;
        const char *tok = header + sizeof(prefix) - 1;
        pthread_mutex_lock(&c->lock);
        for (size_t i = 0; i < c->n_tokens; i++) {
                if (strcmp(c->tokens[i].token, tok) == 0) {
                        token_entry_free(&c->tokens[i]);
                        c->tokens[i] = c->tokens[--c->n_tokens];
                        break;
                }
        }
        pthread_mutex_unlock(&c->lock);
}

void registry_auth_free(struct registry_client *c)
{
        for (size_t i = 0; i < c->n_tokens; i++)
                token_entry_free(&c->tokens[i]);
        free(c->tokens);
        c->tokens = NULL;
        c->n_tokens = 0;
        free(c->realm);
        free(c->service);
        c->realm = c->service = NULL;
}
