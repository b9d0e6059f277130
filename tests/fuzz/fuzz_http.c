/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP/1.x heads and chunked bodies (lib/http.c), the parser shared by the API servers and the router.
 * Invariants: a parse never reads past the input, a complete head's length is within the input, its spans
 * lie inside it, derived fields agree with the headers, parsing in two pieces gives the same answer as in
 * one, and the chunked decoder consumes within bounds and reports data inside the slice.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/http.h"

static void check_spans(const char *buf, size_t len, const struct http_head *h)
{
        const char *end = buf + len;
        for (size_t i = 0; i < h->n_headers; i++) {
                const struct http_header *x = &h->headers[i];
                if (x->name < buf || x->name + x->name_len > end || x->value < buf ||
                    x->value + x->value_len > end)
                        abort();
                if (x->name_len == 0)
                        abort();
        }
        if (h->chunked && h->content_length >= 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size > 128 * 1024)
                return 0;
        /* An exact-size heap copy so ASan sees any over-read. */
        char *buf = malloc(size ? size : 1);
        if (!buf)
                return 0;
        memcpy(buf, data, size);
        struct http_limits lim = { .max_head_bytes = 8192, .max_target_bytes = 2048, .max_headers = 50 };
        struct http_head h;
        ssize_t r = http_parse_request(buf, size, &lim, &h);
        if (r > 0) {
                if ((size_t)r > size || h.head_len != (size_t)r || h.n_headers > 50)
                        abort();
                check_spans(buf, size, &h);
                if (h.target < buf || h.target + h.target_len > buf + size || h.target_len == 0)
                        abort();
                /* Split anywhere before the end of the head: the first piece is incomplete (or an error). */
                struct http_head h2;
                size_t cut = (size_t)r / 2;
                ssize_t r2 = http_parse_request(buf, cut, &lim, &h2);
                if (r2 > 0 && (size_t)r2 > cut)
                        abort();
                /* The same bytes again give the same head. */
                ssize_t r3 = http_parse_request(buf, size, &lim, &h2);
                if (r3 != r || h2.n_headers != h.n_headers || h2.content_length != h.content_length)
                        abort();
                (void)http_head_get(&h, "host");
                (void)http_head_has_token(&h, "connection", "close");
        }
        r = http_parse_response(buf, size, &lim, &h);
        if (r > 0) {
                if ((size_t)r > size)
                        abort();
                check_spans(buf, size, &h);
                if (h.status < 100 || h.status > 999)
                        abort();
        }
        /* The chunked decoder, fed in slices of varying size. */
        struct http_chunked c = { 0 };
        size_t off = 0, step = size ? (size_t)(data[0] % 7) + 1 : 1;
        while (off < size) {
                size_t n = size - off < step ? size - off : step, used = 0, doff = 0, dlen = 0;
                int d = http_chunked_decode(&c, buf + off, n, &used, &doff, &dlen);
                if (used > n || (dlen && doff + dlen > n))
                        abort();
                if (d != 0)
                        break;
                if (used == 0)
                        break;
                off += used;
        }
        char *dec = malloc(size + 1);
        if (dec) {
                ssize_t dl = http_percent_decode(buf, size, dec);
                if (dl > (ssize_t)size)
                        abort();
                free(dec);
        }
        free(buf);
        return 0;
}
