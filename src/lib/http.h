/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP/1.x message heads and chunked bodies: an incremental, allocation-free, bounded parser shared by the
 * API servers (lib/http_server.c) and the router (src/router). Fuzzed by tests/fuzz/fuzz_http.c.
 *
 * The parser never copies: names, values and the target point into the caller's buffer, which must stay
 * unchanged while the head is used. Strict where RFC 9112 asks for it (request smuggling): a request with
 * both Content-Length and Transfer-Encoding, several differing Content-Length values, a Transfer-Encoding
 * other than a final "chunked", obs-fold, whitespace before the colon, or bare CR is rejected.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP_MAX_HEADERS 100

/* RFC 9110 5.6.2 tchar, a byte of a token (header names, methods, auth schemes): a table lookup. */
extern const bool http_tchar[256];
static inline bool http_is_tchar(unsigned char c)
{
        return http_tchar[c];
}

struct http_header {
        const char *name;
        size_t name_len;
        const char *value; /* leading/trailing whitespace removed */
        size_t value_len;
};

struct http_limits {
        size_t max_head_bytes;   /* 0: 64 KiB. Whole head (request line + headers + CRLFCRLF) */
        size_t max_target_bytes; /* 0: 8 KiB. Request target */
        size_t max_headers;      /* 0: HTTP_MAX_HEADERS (must be <= HTTP_MAX_HEADERS) */
};

enum http_parse_error {
        HTTP_PARSE_INCOMPLETE = 0,    /* need more bytes (the head so far is within the limits) */
        HTTP_PARSE_BAD = -1,          /* 400: malformed */
        HTTP_PARSE_TOO_LARGE = -2,    /* 431: head or header count over the limit */
        HTTP_PARSE_URI_TOO_LONG = -3, /* 414 */
        HTTP_PARSE_VERSION = -4,      /* 505: not HTTP/1.0 or HTTP/1.1 */
};

struct http_head {
        /* Request: method and target; response: status and reason. */
        const char *method;
        size_t method_len;
        const char *target;
        size_t target_len;
        int status;
        const char *reason;
        size_t reason_len;
        int minor_version; /* 0 or 1 */
        struct http_header headers[HTTP_MAX_HEADERS];
        size_t n_headers;
        size_t head_len; /* bytes of the head including the final CRLFCRLF */
        /* Derived from the headers: */
        int64_t content_length; /* -1 when absent */
        bool chunked;           /* Transfer-Encoding: chunked */
        bool keep_alive;        /* HTTP/1.1 without "Connection: close", or 1.0 with "keep-alive" */
        bool upgrade;           /* Connection: upgrade with an Upgrade header */
        bool expect_continue;   /* Expect: 100-continue */
        const char *host;       /* the Host header's value (NULL if absent); exactly one Host allowed */
        size_t host_len;
};

/*
 * Parse a request head at the start of buf[0..len). Returns head_len (> 0) when complete, or an
 * enum http_parse_error (<= 0). A request without Host in HTTP/1.1 is accepted here (the caller answers 400
 * with its own body). Leading empty lines (RFC 9112 2.2) are skipped and counted in head_len.
 */
ssize_t http_parse_request(const char *buf, size_t len, const struct http_limits *lim, struct http_head *ret);
/* Same for a response head. A response to HEAD or a 1xx/204/304 has no body: the caller knows. */
ssize_t http_parse_response(const char *buf, size_t len, const struct http_limits *lim,
                            struct http_head *ret);

/* Case-insensitive header lookup: the first value, or NULL. */
const struct http_header *http_head_get(const struct http_head *h, const char *name);
/* True if a comma-separated header (e.g. Connection) lists token (case-insensitive). */
bool http_head_has_token(const struct http_head *h, const char *name, const char *token);

/*
 * Chunked body decoder (RFC 9112 7.1), incremental: feed any slice; the data bytes are reported by
 * offset into the input so nothing is copied. Chunk extensions are skipped; trailers are skipped (bounded).
 */
struct http_chunked {
        int state;
        uint64_t remaining; /* data bytes left in the current chunk */
        size_t line_len;    /* bytes of the current size/trailer line (bounded) */
};
/*
 * Decode from in[0..len): on return *ret_data_off and *ret_data_len give the next run of body data found (len
 * 0 if none in this slice before *ret_consumed). Returns 1 when the final chunk and trailers were consumed,
 * 0 when more input is needed, HTTP_PARSE_BAD on malformed framing. *ret_consumed bytes of in were used;
 * call again with the rest.
 */
int http_chunked_decode(struct http_chunked *c, const char *in, size_t len, size_t *ret_consumed,
                        size_t *ret_data_off, size_t *ret_data_len);

/* The standard reason phrase for a status ("Not Found"), "Unknown" otherwise. */
const char *http_reason(int status);
/* Percent-decode src[0..len) into dst (at least len+1 bytes); -1 on a bad escape or a decoded NUL. */
ssize_t http_percent_decode(const char *src, size_t len, char *dst);
/* Value of a query parameter in "a=1&b=2" (percent-decoded, '+' as space); caller frees; NULL if absent. */
char *http_query_get(const char *query, const char *name);
