/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP client for the platform's own APIs (CLI → controller, controller ↔ cells, router → controller), on
 * libcurl. Not for registries (src/image/registry.c has its own). One struct http_client per thread; it
 * keeps connections alive between requests.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "lib/err.h"

struct http_client_opts {
        const char *ca_file;         /* extra CA bundle for https, or NULL */
        bool insecure;               /* skip TLS verification (login --skip-ssl-validation) */
        unsigned timeout_ms;         /* whole request; 0: 30 s */
        unsigned connect_timeout_ms; /* 0: 5 s */
        unsigned send_chunk;         /* the most a request body's write hands the kernel at once; 0: 64 KiB */
};

struct http_client;
int http_client_new(const struct http_client_opts *o, struct http_client **ret, struct berr **err);
void http_client_free(struct http_client *c);
static inline void http_client_freep(struct http_client **c)
{
        http_client_free(*c);
}

/* "Authorization: Bearer <token>" on every request (NULL: none). Copied. */
void http_client_set_bearer(struct http_client *c, const char *token);

struct http_result {
        long status;
        char *body; /* NUL-terminated, caller frees (http_result_free) */
        size_t body_len;
        char *content_type;
};
void http_result_free(struct http_result *r);

/*
 * method url with optional body (content_type required if body); extra headers NULL or a NULL-terminated
 * list of "Name: value". A response of any status is success (r->status says); connection failures,
 * timeouts and TLS errors are errors with a specific message ("connect to 127.0.0.1:9022: Connection
 * refused"). Bodies over 64 MiB are an error.
 */
int http_request(struct http_client *c, const char *method, const char *url, const char *const *headers,
                 const char *content_type, const void *body, size_t body_len, struct http_result *ret,
                 struct berr **err);
/*
 * JSON convenience: body (borrowed, may be NULL) sent as application/json; *ret_json is the parsed response
 * (NULL if the body was empty or not JSON). *ret_status the status.
 */
int http_request_json(struct http_client *c, const char *method, const char *url, const json_t *body,
                      long *ret_status, json_t **ret_json, struct berr **err);
/*
 * Stream a response body to fn as it arrives (log follows, watches); fn returning < 0 aborts (that value is
 * returned). timeout_ms in the client's options does not apply; the stream ends when the server ends it.
 */
typedef int (*http_stream_fn)(const char *data, size_t len, void *userdata);
int http_request_stream(struct http_client *c, const char *method, const char *url, long *ret_status,
                        http_stream_fn fn, void *userdata, struct berr **err);
