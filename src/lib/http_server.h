/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small HTTP/1.1 server for the platform's APIs (controller, cell agent): one thread per connection
 * (bounded), keep-alive, Content-Length and chunked request bodies (bounded), chunked streaming responses,
 * optional TLS (OpenSSL). Handlers run on the connection's thread and may block (long polls, log follows,
 * registry round trips) without holding up other clients. Not the router: that is src/router's event loop.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"
#include "lib/http.h"

struct http_request {
        const char *method;           /* "GET", ... (NUL-terminated copy) */
        const char *path;             /* percent-decoded path, without the query ("/v3/apps/abc") */
        const char *query;            /* raw query string after '?', "" if none */
        const struct http_head *head; /* headers */
        const char *body;             /* NUL-terminated copy of the (de-chunked) body; "" if none */
        size_t body_len;
        const char *peer; /* "ip:port" of the client */
};

/* A header of the request (case-insensitive), NUL-terminated copy valid during the handler; NULL if absent.
 */
const char *http_request_header(const struct http_request *r, const char *name);

struct http_response;
/* Set once per response, before the body. */
void http_response_header(struct http_response *resp, const char *name, const char *value);
/* A whole body (copied). */
void http_response_body(struct http_response *resp, int status, const char *content_type, const void *body,
                        size_t len);
/* A JSON body; takes the reference. */
void http_response_json(struct http_response *resp, int status, json_t *body);
/*
 * Streaming: send the status and headers now (chunked), then chunks. Returns < 0 once the client went away
 * (the handler should then return). The server ends the stream when the handler returns.
 */
int http_response_stream_begin(struct http_response *resp, int status, const char *content_type);
int http_response_stream_write(struct http_response *resp, const void *buf, size_t len);

/* The status set so far (0 if none): for request logs. */
int http_response_status(const struct http_response *resp);

typedef void (*http_handler_fn)(void *userdata, const struct http_request *req, struct http_response *resp);

struct http_server_opts {
        const char *listen; /* "host:port", "[v6]:port" or ":port"; port 0 picks a free one */
        http_handler_fn handler;
        void *userdata;
        unsigned max_connections;  /* 0: 1024; further connections wait in the backlog */
        size_t max_body_bytes;     /* 0: 1 MiB; larger bodies get 413 */
        unsigned idle_timeout_ms;  /* 0: 60 s between requests on a keep-alive connection */
        unsigned head_timeout_ms;  /* 0: 10 s for a request head to arrive once begun (slowloris) */
        const char *tls_cert_file; /* both set: HTTPS */
        const char *tls_key_file;
};

struct http_server;
/* Bind and listen (the socket is ready when this returns). Caller owns *ret. */
int http_server_new(const struct http_server_opts *o, struct http_server **ret, struct berr **err);
/* The bound port (useful with port 0). */
int http_server_port(const struct http_server *s);
/* Accept and serve until http_server_stop(); returns 0 then. Runs on the calling thread. */
int http_server_run(struct http_server *s, struct berr **err);
/* Make run() return: stop accepting, let in-flight requests finish (up to 5 s). Any thread. */
void http_server_stop(struct http_server *s);
void http_server_free(struct http_server *s);
static inline void http_server_freep(struct http_server **s)
{
        http_server_free(*s);
}
