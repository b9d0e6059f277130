/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What registry.c (transport, requests, manifests, blobs) and registry_auth.c (challenges, Basic, Bearer
 * tokens) share. Not part of the public registry API: only these two files and the unit tests include it.
 */
#pragma once

#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "image/registry.h"

/* ---- caps on everything read from the network ------------------------------------------------ */
#define REGISTRY_ERROR_BODY_MAX  (64 * 1024)   /* error bodies are only parsed for a message */
#define REGISTRY_TOKEN_BODY_MAX  (1024 * 1024) /* as containers/image iolimits.MaxAuthTokenBodySize */
#define REGISTRY_TOKEN_MAX       (64 * 1024)   /* a bearer token that goes into a header */
#define REGISTRY_HEADER_MAX      (64 * 1024)   /* response header bytes we keep (per response) */
#define REGISTRY_WWW_AUTH_MAX    8             /* WWW-Authenticate header lines kept per response */
#define REGISTRY_TOKEN_MIN_LIFE  60            /* token.md: never less than 60 s; default when omitted */
#define REGISTRY_TOKEN_MARGIN    10            /* refresh a cached token this many seconds early */
#define REGISTRY_RETRY_AFTER_MAX 60            /* seconds we are willing to honour in Retry-After */

/* ---- WWW-Authenticate (RFC 7235 §4.1) ------------------------------------------------------------ */
struct auth_param {
        char *name; /* lowercased */
        char *value;
};

struct auth_challenge {
        char *scheme;  /* lowercased: "basic", "bearer", ... */
        char *token68; /* "Scheme token68" form, else NULL */
        struct auth_param *params;
        size_t n_params;
};

void auth_challenges_free(struct auth_challenge *c, size_t n);
/* Value of parameter `name` (lowercase) or NULL. */
const char *auth_challenge_param(const struct auth_challenge *c, const char *name);

enum registry_auth_kind {
        REGISTRY_AUTH_NONE = 0,
        REGISTRY_AUTH_BASIC,
        REGISTRY_AUTH_BEARER,
};

struct registry_token {
        char *realm;
        char *service; /* may be NULL */
        char *scope;
        char *token;
        time_t expiry;
};

struct registry_conn; /* a pooled curl multi+easy pair (registry.c) */

/* A configured registry host, as the client sees it (a private copy of the config entry). */
struct registry_host_tls {
        char *host;    /* "host[:port]" */
        bool insecure; /* plain http / TLS without verification allowed */
        char *ca;      /* PEM: system bundle + global CAs + this host's ca_file; NULL: none configured */
        size_t ca_len;
};

#define REGISTRY_POOL_MAX 8

struct registry_client {
        /* What the user asked for, and where to send it. */
        char *domain;   /* "docker.io", "localhost:5000" (messages, config lookups) */
        char *api_host; /* "registry-1.docker.io", "localhost:5000" */
        char *path;     /* "library/nginx" */
        char *scope;    /* "repository:library/nginx:pull" */
        char *username; /* NULL: anonymous */
        char *password;
        char *user_agent;
        bool insecure; /* config says so, or loopback: http or TLS without verification allowed */

        /* Trust: the system bundle + global extra CAs (+ the registry's own ca_file for its host). */
        char *ca_base; /* NULL: libcurl's default bundle */
        size_t ca_base_len;
        struct registry_host_tls *hosts; /* per-host settings from the config */
        size_t n_hosts;
        const struct registry_host_tls *self; /* the registry's own entry, or NULL */

        /* Decided by the /v2/ ping (under ping_lock; read-only afterwards). */
        pthread_mutex_t ping_lock;
        bool pinged;
        char *base_url; /* "https://host[:port]" or "http://host[:port]" */
        bool verify_tls;

        /* Authentication state (under lock). */
        pthread_mutex_t lock;
        enum registry_auth_kind auth_kind;
        char *realm;   /* Bearer */
        char *service; /* Bearer, may be NULL */
        struct registry_token *tokens;
        size_t n_tokens;
        pthread_mutex_t token_lock; /* held while fetching, so parallel streams fetch one token */

        /* Idle connections (under lock). */
        struct registry_conn *pool[REGISTRY_POOL_MAX];
        size_t n_pool;
};

/* ---- synchronous requests (registry.c), used for pings, manifests and token requests ------------- */
struct http_fetch {
        const char *url;
        const char *accept;      /* Accept header value, or NULL */
        const char *auth;        /* a complete "Authorization: ..." line, or NULL */
        const char *auth_origin; /* URL whose scheme+host+port may receive `auth`; NULL = url's */
        const char *post;        /* x-www-form-urlencoded body: POST instead of GET; never logged */
        size_t max_body;         /* cap for a 2xx body; exceeding it is -EFBIG */
        bool fail_fast;          /* connection refused / unresolvable host are final (the first ping) */
        bool no_redirects;       /* hand 3xx back instead of following */
        bool verify_override;    /* use `verify` instead of the per-host default */
        bool verify;
};

struct http_response {
        long status;
        char *body; /* 2xx: payload (NUL-terminated); other: error body (capped, NUL-terminated) */
        size_t len;
        char *content_type;
        char *docker_digest;
        char *www_auth[REGISTRY_WWW_AUTH_MAX];
        size_t n_www_auth;
        CURLcode curl_result; /* transport outcome of the last attempt */
        long os_errno;
};

void http_response_done(struct http_response *r);
/*
 * GET (or POST) with redirects and retries. Returns 0 with *res filled for every HTTP status (the caller
 * decides), or a negative error for transport failures ("cannot reach <what>: ..."; res->curl_result
 * says which) and -EFBIG when the body exceeds max_body. *res must be zeroed by the caller and released
 * with http_response_done() in every case.
 */
int registry_http_fetch(struct registry_client *c, const struct http_fetch *f, const char *what,
                        struct http_response *res, struct berr **err);
/* "message" from a {"errors":[{"code","message"}]} body, else NULL (caller frees). Never long. */
char *registry_error_message(const char *body, size_t len);

/* ---- authentication (registry_auth.c) ------------------------------------------------------------- */
/* Adopt the challenges of a 401 (ping or request): decides c->auth_kind. Takes c->lock itself. */
int registry_auth_set_challenges(struct registry_client *c, char *const *www_auth, size_t n,
                                 struct berr **err);
/*
 * The Authorization line for a request to the registry, or NULL for none (*ret = NULL). For Bearer,
 * a cached token when still valid, else a new one (*ret_fresh = true). Caller frees *ret (secret: use
 * registry_secret_free).
 */
int registry_auth_header(struct registry_client *c, char **ret, bool *ret_fresh, struct berr **err);
/* Forget the cached token that produced `header` (it was refused). */
void registry_auth_invalidate(struct registry_client *c, const char *header);
enum registry_auth_kind registry_auth_kind_get(struct registry_client *c);
void registry_auth_free(struct registry_client *c);
/* "repository:<path>:pull" (caller frees). The registry host is never part of a scope. */
char *registry_scope_pull(const char *path);
/* True when plain http / unverified TLS is allowed for url's host (config "insecure" or loopback). */
bool registry_url_insecure(const struct registry_client *c, const char *url);
/* Wipe and free a string that held a secret. */
void registry_secret_free(char *s);
static inline void registry_secret_freep(char **s)
{
        registry_secret_free(*s);
}
/* "Authorization: Basic base64(user:pass)" (caller frees with registry_secret_free). */
char *registry_basic_header(const char *user, const char *password);

/* ---- helpers exported for the unit tests ---------------------------------------------------------- */
#ifdef BERTH_TESTING
int www_authenticate_parse(const char *header, struct auth_challenge **ret, size_t *ret_n, struct berr **err);
int registry_token_parse(const char *body, size_t len, time_t now, char **ret_token, time_t *ret_expiry,
                         struct berr **err);
int registry_rfc3339_parse(const char *s, time_t *ret);
int registry_retry_after_parse(const char *value, time_t now, unsigned *ret_seconds);
bool registry_url_same_origin(const char *a, const char *b);
int registry_url_resolve(const char *base, const char *location, char **ret);
int registry_content_range_parse(const char *v, uint64_t *ret_first, uint64_t *ret_last, int64_t *ret_total);
#endif
