/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HTTP/1.x heads and chunked bodies (RFC 9110, RFC 9112). See http.h for the contract.
 *
 * The head parsers are stateless: each call parses from the start of the buffer, so a caller just appends
 * bytes and calls again. Errors are reported as soon as the bytes seen so far are certainly wrong, so a
 * garbage stream is rejected before the limits are reached. Lines end in CRLF only: a bare LF or a bare CR
 * is rejected (RFC 9112 2.2 lets a recipient accept a bare LF; berth does not, because a proxy in front of
 * it that disagrees is the classic request-smuggling setup).
 */
#include "lib/http.h"

#include <string.h>
#include <strings.h>

#include "lib/macro.h"

#define HTTP_DEFAULT_MAX_HEAD   (64 * 1024)
#define HTTP_DEFAULT_MAX_TARGET (8 * 1024)
/* A chunk-size line with its extensions, and the whole trailer section. */
#define HTTP_CHUNKED_MAX_LINE    4096
#define HTTP_CHUNKED_MAX_TRAILER (64 * 1024)

const bool http_tchar[256] = {
        ['0' ... '9'] = true, ['A' ... 'Z'] = true, ['a' ... 'z'] = true, ['!'] = true,  ['#'] = true,
        ['$'] = true,         ['%'] = true,         ['&'] = true,         ['\''] = true, ['*'] = true,
        ['+'] = true,         ['-'] = true,         ['.'] = true,         ['^'] = true,  ['_'] = true,
        ['`'] = true,         ['|'] = true,         ['~'] = true,
};

/* RFC 9110 5.5: field-vchar, SP and HTAB (obs-text included); no other controls, no DEL. */
static bool is_field_char(unsigned char c)
{
        return c == ' ' || c == '\t' || (c > 0x20 && c != 0x7f);
}

static bool is_digit(unsigned char c)
{
        return c >= '0' && c <= '9';
}

static int hex_value(unsigned char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

static bool eq_ci(const char *a, size_t a_len, const char *b)
{
        size_t b_len = strlen(b);
        return a_len == b_len && strncasecmp(a, b, a_len) == 0;
}

struct head_parser {
        const char *buf;
        size_t len;  /* bytes available to look at: min(len, max_head) */
        bool at_max; /* len is the head limit: running out means 431 */
        size_t max_target;
        size_t max_headers;
};

static ssize_t need_more(const struct head_parser *p)
{
        return p->at_max ? HTTP_PARSE_TOO_LARGE : HTTP_PARSE_INCOMPLETE;
}

/*
 * Expects CRLF at *i. Returns 1 and advances past it, 0 if the buffer ends first, -1 if something else is
 * there.
 */
static int expect_crlf(const struct head_parser *p, size_t *i)
{
        if (*i >= p->len)
                return 0;
        if (p->buf[*i] != '\r')
                return -1;
        if (*i + 1 >= p->len)
                return 0;
        if (p->buf[*i + 1] != '\n')
                return -1;
        *i += 2;
        return 1;
}

/* "HTTP/" DIGIT "." DIGIT at *i (RFC 9112 2.3). */
static ssize_t parse_version(const struct head_parser *p, size_t *i, struct http_head *h)
{
        static const char pattern[] = "HTTP/d.d";
        size_t start = *i;
        for (size_t k = 0; k < sizeof(pattern) - 1; k++) {
                if (start + k >= p->len)
                        return need_more(p);
                unsigned char c = (unsigned char)p->buf[start + k];
                if (pattern[k] == 'd' ? !is_digit(c) : c != (unsigned char)pattern[k])
                        return HTTP_PARSE_BAD;
        }
        *i = start + sizeof(pattern) - 1;
        if (p->buf[start + 5] != '1' || (p->buf[start + 7] != '0' && p->buf[start + 7] != '1'))
                return HTTP_PARSE_VERSION;
        h->minor_version = p->buf[start + 7] - '0';
        return 1;
}

/* method SP request-target SP HTTP-version CRLF (RFC 9112 3). */
static ssize_t parse_request_line(const struct head_parser *p, size_t *pos, struct http_head *h)
{
        size_t i = *pos;
        while (i < p->len && http_is_tchar((unsigned char)p->buf[i]))
                i++;
        if (i >= p->len)
                return need_more(p);
        if (p->buf[i] != ' ' || i == *pos)
                return HTTP_PARSE_BAD;
        h->method = p->buf + *pos;
        h->method_len = i - *pos;
        i++;

        size_t t = i;
        /* Visible ASCII only: a target with spaces, controls or raw 8-bit bytes is not a URI. */
        while (i < p->len && (unsigned char)p->buf[i] > 0x20 && (unsigned char)p->buf[i] < 0x7f) {
                i++;
                if (i - t > p->max_target)
                        return HTTP_PARSE_URI_TOO_LONG;
        }
        if (i >= p->len)
                return need_more(p);
        if (p->buf[i] != ' ' || i == t)
                return HTTP_PARSE_BAD;
        h->target = p->buf + t;
        h->target_len = i - t;
        i++;

        ssize_t r = parse_version(p, &i, h);
        if (r <= 0)
                return r;
        int c = expect_crlf(p, &i);
        if (c <= 0)
                return c < 0 ? HTTP_PARSE_BAD : need_more(p);
        *pos = i;
        return 1;
}

/* HTTP-version SP 3DIGIT SP [reason] CRLF (RFC 9112 4); a missing SP after the code is tolerated. */
static ssize_t parse_status_line(const struct head_parser *p, size_t *pos, struct http_head *h)
{
        size_t i = *pos;
        ssize_t r = parse_version(p, &i, h);
        if (r <= 0)
                return r;
        if (i >= p->len)
                return need_more(p);
        if (p->buf[i++] != ' ')
                return HTTP_PARSE_BAD;
        int status = 0;
        for (int k = 0; k < 3; k++, i++) {
                if (i >= p->len)
                        return need_more(p);
                if (!is_digit((unsigned char)p->buf[i]))
                        return HTTP_PARSE_BAD;
                status = status * 10 + (p->buf[i] - '0');
        }
        if (status < 100)
                return HTTP_PARSE_BAD;
        h->status = status;
        if (i >= p->len)
                return need_more(p);
        if (p->buf[i] == ' ') {
                i++;
                size_t s = i;
                while (i < p->len && p->buf[i] != '\r') {
                        if (!is_field_char((unsigned char)p->buf[i]))
                                return HTTP_PARSE_BAD;
                        i++;
                }
                h->reason = p->buf + s;
                h->reason_len = i - s;
        } else {
                h->reason = p->buf + i;
                h->reason_len = 0;
        }
        int c = expect_crlf(p, &i);
        if (c <= 0)
                return c < 0 ? HTTP_PARSE_BAD : need_more(p);
        *pos = i;
        return 1;
}

/*
 * Header lines up to and including the empty line (RFC 9112 5). Returns 1 with *pos past the final CRLF.
 */
static ssize_t parse_fields(const struct head_parser *p, size_t *pos, struct http_head *h)
{
        size_t i = *pos;
        for (;;) {
                if (i >= p->len)
                        return need_more(p);
                if (p->buf[i] == '\r') {
                        int c = expect_crlf(p, &i);
                        if (c <= 0)
                                return c < 0 ? HTTP_PARSE_BAD : need_more(p);
                        *pos = i;
                        return 1;
                }
                /* RFC 9112 5.2: obs-fold (a line starting with whitespace) is rejected. */
                size_t n = i;
                while (i < p->len && http_is_tchar((unsigned char)p->buf[i]))
                        i++;
                if (i >= p->len)
                        return need_more(p);
                /* RFC 9112 5.1: no whitespace between the name and the colon. */
                if (p->buf[i] != ':' || i == n)
                        return HTTP_PARSE_BAD;
                size_t name_len = i - n;
                i++;
                while (i < p->len && (p->buf[i] == ' ' || p->buf[i] == '\t'))
                        i++;
                size_t v = i;
                while (i < p->len && p->buf[i] != '\r') {
                        if (!is_field_char((unsigned char)p->buf[i]))
                                return HTTP_PARSE_BAD; /* bare LF, NUL, other controls */
                        i++;
                }
                size_t v_end = i;
                int c = expect_crlf(p, &i);
                if (c <= 0)
                        return c < 0 ? HTTP_PARSE_BAD : need_more(p);
                while (v_end > v && (p->buf[v_end - 1] == ' ' || p->buf[v_end - 1] == '\t'))
                        v_end--;
                if (h->n_headers >= p->max_headers)
                        return HTTP_PARSE_TOO_LARGE;
                h->headers[h->n_headers++] = (struct http_header){
                        .name = p->buf + n, .name_len = name_len, .value = p->buf + v, .value_len = v_end - v
                };
        }
}

/* Calls fn for each non-empty element of a comma-separated list, whitespace trimmed; stops at fn's false. */
typedef bool (*list_fn)(const char *s, size_t len, void *userdata);
static bool list_foreach(const char *s, size_t len, list_fn fn, void *userdata)
{
        size_t i = 0;
        while (i <= len) {
                size_t e = i;
                while (e < len && s[e] != ',')
                        e++;
                size_t a = i, b = e;
                while (a < b && (s[a] == ' ' || s[a] == '\t'))
                        a++;
                while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
                        b--;
                if (b > a && !fn(s + a, b - a, userdata))
                        return false;
                i = e + 1;
        }
        return true;
}

struct cl_state {
        int64_t value;
        bool bad;
};

/* RFC 9112 6.3: Content-Length is 1*DIGIT; a list of identical values may be treated as one. */
static bool cl_element(const char *s, size_t len, void *userdata)
{
        struct cl_state *st = userdata;
        int64_t v = 0;
        for (size_t i = 0; i < len; i++) {
                if (!is_digit((unsigned char)s[i]) || v > (INT64_MAX - (s[i] - '0')) / 10) {
                        st->bad = true;
                        return false;
                }
                v = v * 10 + (s[i] - '0');
        }
        if (st->value >= 0 && st->value != v) {
                st->bad = true;
                return false;
        }
        st->value = v;
        return true;
}

struct te_state {
        size_t count;
        bool last_chunked;
        bool chunked_before_last;
};

static bool te_element(const char *s, size_t len, void *userdata)
{
        struct te_state *st = userdata;
        if (st->last_chunked)
                st->chunked_before_last = true;
        st->count++;
        st->last_chunked = eq_ci(s, len, "chunked");
        return true;
}

struct token_state {
        const char *token;
        bool found;
};

static bool token_element(const char *s, size_t len, void *userdata)
{
        struct token_state *st = userdata;
        if (eq_ci(s, len, st->token)) {
                st->found = true;
                return false;
        }
        return true;
}

/* Framing and connection semantics from the fields (RFC 9112 6, 9.3); the smuggling rules live here. */
static ssize_t derive(struct http_head *h, bool request)
{
        struct cl_state cl = { .value = -1 };
        struct te_state te = { 0 };
        bool has_cl = false, has_te = false;
        size_t hosts = 0;
        for (size_t k = 0; k < h->n_headers; k++) {
                const struct http_header *f = &h->headers[k];
                if (eq_ci(f->name, f->name_len, "content-length")) {
                        has_cl = true;
                        /* An empty value or an empty list element is no length either. */
                        if (f->value_len == 0 || f->value[0] == ',' || f->value[f->value_len - 1] == ',')
                                return HTTP_PARSE_BAD;
                        list_foreach(f->value, f->value_len, cl_element, &cl);
                        if (cl.bad || cl.value < 0)
                                return HTTP_PARSE_BAD;
                } else if (eq_ci(f->name, f->name_len, "transfer-encoding")) {
                        has_te = true;
                        list_foreach(f->value, f->value_len, te_element, &te);
                } else if (eq_ci(f->name, f->name_len, "host")) {
                        hosts++;
                        h->host = f->value;
                        h->host_len = f->value_len;
                }
        }
        if (hosts > 1)
                return HTTP_PARSE_BAD; /* RFC 9112 3.2 */
        h->content_length = has_cl ? cl.value : -1;
        if (has_te) {
                /* RFC 9112 6.1: TE in HTTP/1.0 is faulty framing; TE with CL is a smuggling attempt. */
                if (h->minor_version == 0 || has_cl)
                        return HTTP_PARSE_BAD;
                /* chunked must be applied exactly once and last (RFC 9112 6.3). */
                if (te.chunked_before_last)
                        return HTTP_PARSE_BAD;
                if (request && (te.count != 1 || !te.last_chunked))
                        return HTTP_PARSE_BAD; /* berth decodes no other coding of a request */
                if (te.count == 0)
                        return HTTP_PARSE_BAD;
                /* A response with a non-chunked final coding is delimited by the close (RFC 9112 6.3 #7). */
                h->chunked = te.last_chunked;
        }
        bool close = http_head_has_token(h, "connection", "close");
        bool keep = http_head_has_token(h, "connection", "keep-alive");
        h->keep_alive = !close && (h->minor_version == 1 || keep);
        h->upgrade = http_head_has_token(h, "connection", "upgrade") && http_head_get(h, "upgrade") != NULL;
        if (request && h->minor_version == 1) {
                const struct http_header *e = http_head_get(h, "expect");
                h->expect_continue = e && eq_ci(e->value, e->value_len, "100-continue");
        }
        return 1;
}

static ssize_t parse_head(const char *buf, size_t len, const struct http_limits *lim, struct http_head *h,
                          bool request)
{
        size_t max_head = lim && lim->max_head_bytes ? lim->max_head_bytes : HTTP_DEFAULT_MAX_HEAD;
        struct head_parser p = {
                .buf = buf,
                .len = MIN(len, max_head),
                .at_max = len >= max_head,
                .max_target = lim && lim->max_target_bytes ? lim->max_target_bytes : HTTP_DEFAULT_MAX_TARGET,
                .max_headers = lim && lim->max_headers ? MIN(lim->max_headers, (size_t)HTTP_MAX_HEADERS)
                                                       : HTTP_MAX_HEADERS,
        };
        h->method = h->target = h->reason = h->host = NULL;
        h->method_len = h->target_len = h->reason_len = h->host_len = 0;
        h->status = 0;
        h->minor_version = 0;
        h->n_headers = 0;
        h->head_len = 0;
        h->content_length = -1;
        h->chunked = h->keep_alive = h->upgrade = h->expect_continue = false;

        size_t i = 0;
        if (request) {
                /* RFC 9112 2.2: empty lines before the request line are ignored. */
                for (;;) {
                        if (i >= p.len)
                                return need_more(&p);
                        if (buf[i] != '\r')
                                break;
                        int c = expect_crlf(&p, &i);
                        if (c <= 0)
                                return c < 0 ? HTTP_PARSE_BAD : need_more(&p);
                }
        }
        ssize_t r = request ? parse_request_line(&p, &i, h) : parse_status_line(&p, &i, h);
        if (r <= 0)
                return r;
        r = parse_fields(&p, &i, h);
        if (r <= 0)
                return r;
        r = derive(h, request);
        if (r <= 0)
                return r;
        h->head_len = i;
        return (ssize_t)i;
}

ssize_t http_parse_request(const char *buf, size_t len, const struct http_limits *lim, struct http_head *ret)
{
        return parse_head(buf, len, lim, ret, true);
}

ssize_t http_parse_response(const char *buf, size_t len, const struct http_limits *lim, struct http_head *ret)
{
        return parse_head(buf, len, lim, ret, false);
}

const struct http_header *http_head_get(const struct http_head *h, const char *name)
{
        for (size_t k = 0; k < h->n_headers; k++)
                if (eq_ci(h->headers[k].name, h->headers[k].name_len, name))
                        return &h->headers[k];
        return NULL;
}

bool http_head_has_token(const struct http_head *h, const char *name, const char *token)
{
        struct token_state st = { .token = token };
        for (size_t k = 0; k < h->n_headers && !st.found; k++)
                if (eq_ci(h->headers[k].name, h->headers[k].name_len, name))
                        list_foreach(h->headers[k].value, h->headers[k].value_len, token_element, &st);
        return st.found;
}

/* The decoder's states; a zeroed struct http_chunked starts at CHUNK_SIZE. */
enum {
        CHUNK_SIZE = 0, /* hex digits of chunk-size */
        CHUNK_EXT_BWS,  /* whitespace after the size, before ';' or CR */
        CHUNK_EXT,      /* chunk extensions up to CR */
        CHUNK_SIZE_LF,  /* LF ending the size line */
        CHUNK_DATA,     /* remaining bytes of data */
        CHUNK_DATA_CR,  /* CRLF after the data */
        CHUNK_DATA_LF,
        CHUNK_TRAILER, /* start of a trailer line or of the final CRLF */
        CHUNK_TRAILER_LINE,
        CHUNK_TRAILER_LF,
        CHUNK_END_LF, /* LF of the final CRLF */
        CHUNK_DONE,
        CHUNK_ERROR,
};

int http_chunked_decode(struct http_chunked *c, const char *in, size_t len, size_t *ret_consumed,
                        size_t *ret_data_off, size_t *ret_data_len)
{
        size_t i = 0;
        *ret_data_off = 0;
        *ret_data_len = 0;
        *ret_consumed = 0;
        while (i < len) {
                unsigned char ch = (unsigned char)in[i];
                switch (c->state) {
                case CHUNK_SIZE: {
                        int v = hex_value(ch);
                        if (v >= 0) {
                                /* Leading zeros are allowed, but bounded with the rest of the line. */
                                if (c->remaining > (UINT64_MAX >> 4) || ++c->line_len > HTTP_CHUNKED_MAX_LINE)
                                        goto bad;
                                c->remaining = c->remaining * 16 + (uint64_t)v;
                                i++;
                                break;
                        }
                        if (c->line_len == 0)
                                goto bad; /* no digits */
                        if (c->remaining > INT64_MAX)
                                goto bad;
                        c->state = CHUNK_EXT_BWS;
                        break; /* look at ch again */
                }
                case CHUNK_EXT_BWS:
                        /* BWS ";" (RFC 9112 7.1.1): after the size only whitespace, ';' or the CR. */
                        if (ch == ';') {
                                c->state = CHUNK_EXT;
                        } else if (ch == '\r') {
                                c->state = CHUNK_SIZE_LF;
                        } else if (ch != ' ' && ch != '\t') {
                                goto bad;
                        }
                        if (++c->line_len > HTTP_CHUNKED_MAX_LINE)
                                goto bad;
                        i++;
                        break;
                case CHUNK_EXT:
                        /* Extensions are skipped; controls (a bare LF above all) are malformed. */
                        if (ch == '\r') {
                                c->state = CHUNK_SIZE_LF;
                        } else if (!is_field_char(ch)) {
                                goto bad;
                        }
                        if (++c->line_len > HTTP_CHUNKED_MAX_LINE)
                                goto bad;
                        i++;
                        break;
                case CHUNK_SIZE_LF:
                        if (ch != '\n')
                                goto bad;
                        i++;
                        c->line_len = 0;
                        if (c->remaining == 0) {
                                c->state = CHUNK_TRAILER; /* remaining now counts trailer bytes */
                        } else {
                                c->state = CHUNK_DATA;
                        }
                        break;
                case CHUNK_DATA: {
                        size_t n = (size_t)MIN((uint64_t)(len - i), c->remaining);
                        c->remaining -= n;
                        if (c->remaining == 0)
                                c->state = CHUNK_DATA_CR;
                        *ret_data_off = i;
                        *ret_data_len = n;
                        *ret_consumed = i + n;
                        return 0;
                }
                case CHUNK_DATA_CR:
                        if (ch != '\r')
                                goto bad;
                        c->state = CHUNK_DATA_LF;
                        i++;
                        break;
                case CHUNK_DATA_LF:
                        if (ch != '\n')
                                goto bad;
                        c->state = CHUNK_SIZE;
                        c->remaining = 0;
                        c->line_len = 0;
                        i++;
                        break;
                case CHUNK_TRAILER:
                        if (ch == '\r') {
                                c->state = CHUNK_END_LF;
                                i++;
                                break;
                        }
                        c->state = CHUNK_TRAILER_LINE;
                        break;
                case CHUNK_TRAILER_LINE:
                        /* Trailer fields are not used: checked for framing only (no bare LF or NUL). */
                        if (ch == '\r') {
                                c->state = CHUNK_TRAILER_LF;
                        } else if (!is_field_char(ch)) {
                                goto bad;
                        }
                        if (++c->remaining > HTTP_CHUNKED_MAX_TRAILER ||
                            ++c->line_len > HTTP_CHUNKED_MAX_LINE)
                                goto bad;
                        i++;
                        break;
                case CHUNK_TRAILER_LF:
                        if (ch != '\n')
                                goto bad;
                        c->state = CHUNK_TRAILER;
                        c->line_len = 0;
                        i++;
                        break;
                case CHUNK_END_LF:
                        if (ch != '\n')
                                goto bad;
                        c->state = CHUNK_DONE;
                        *ret_consumed = i + 1;
                        return 1;
                case CHUNK_DONE:
                        *ret_consumed = i;
                        return 1;
                default:
                        goto bad;
                }
        }
        *ret_consumed = i;
        return c->state == CHUNK_DONE ? 1 : 0;
bad:
        c->state = CHUNK_ERROR;
        *ret_consumed = i;
        return HTTP_PARSE_BAD;
}

const char *http_reason(int status)
{
        static const struct {
                int status;
                const char *reason;
        } table[] = {
                { 100, "Continue" },
                { 101, "Switching Protocols" },
                { 200, "OK" },
                { 201, "Created" },
                { 202, "Accepted" },
                { 203, "Non-Authoritative Information" },
                { 204, "No Content" },
                { 205, "Reset Content" },
                { 206, "Partial Content" },
                { 300, "Multiple Choices" },
                { 301, "Moved Permanently" },
                { 302, "Found" },
                { 303, "See Other" },
                { 304, "Not Modified" },
                { 307, "Temporary Redirect" },
                { 308, "Permanent Redirect" },
                { 400, "Bad Request" },
                { 401, "Unauthorized" },
                { 402, "Payment Required" },
                { 403, "Forbidden" },
                { 404, "Not Found" },
                { 405, "Method Not Allowed" },
                { 406, "Not Acceptable" },
                { 407, "Proxy Authentication Required" },
                { 408, "Request Timeout" },
                { 409, "Conflict" },
                { 410, "Gone" },
                { 411, "Length Required" },
                { 412, "Precondition Failed" },
                { 413, "Content Too Large" },
                { 414, "URI Too Long" },
                { 415, "Unsupported Media Type" },
                { 416, "Range Not Satisfiable" },
                { 417, "Expectation Failed" },
                { 421, "Misdirected Request" },
                { 422, "Unprocessable Content" },
                { 426, "Upgrade Required" },
                { 428, "Precondition Required" },
                { 429, "Too Many Requests" },
                { 431, "Request Header Fields Too Large" },
                { 500, "Internal Server Error" },
                { 501, "Not Implemented" },
                { 502, "Bad Gateway" },
                { 503, "Service Unavailable" },
                { 504, "Gateway Timeout" },
                { 505, "HTTP Version Not Supported" },
        };
        for (size_t k = 0; k < ARRAY_SIZE(table); k++)
                if (table[k].status == status)
                        return table[k].reason;
        return "Unknown";
}

static ssize_t percent_decode(const char *src, size_t len, char *dst, bool plus_is_space)
{
        size_t o = 0;
        for (size_t i = 0; i < len; i++) {
                char ch = src[i];
                if (ch == '%') {
                        if (len - i < 3)
                                return -1;
                        int hi = hex_value((unsigned char)src[i + 1]);
                        int lo = hex_value((unsigned char)src[i + 2]);
                        if (hi < 0 || lo < 0)
                                return -1;
                        ch = (char)(hi * 16 + lo);
                        i += 2;
                } else if (ch == '+' && plus_is_space) {
                        ch = ' ';
                }
                if (ch == '\0')
                        return -1;
                dst[o++] = ch;
        }
        dst[o] = '\0';
        return (ssize_t)o;
}

ssize_t http_percent_decode(const char *src, size_t len, char *dst)
{
        return percent_decode(src, len, dst, false);
}

char *http_query_get(const char *query, const char *name)
{
        if (!query || !name)
                return NULL;
        size_t name_len = strlen(name);
        const char *p = query;
        for (;;) {
                const char *amp = strchr(p, '&');
                size_t pair_len = amp ? (size_t)(amp - p) : strlen(p);
                const char *eq = memchr(p, '=', pair_len);
                size_t key_len = eq ? (size_t)(eq - p) : pair_len;
                /* The decoded key is never longer than the raw one. */
                if (key_len >= name_len && key_len <= 3 * name_len + 3) {
                        char *key = xmalloc(key_len + 1);
                        bool match = percent_decode(p, key_len, key, true) >= 0 && strcmp(key, name) == 0;
                        free(key);
                        if (match) {
                                const char *v = eq ? eq + 1 : p + pair_len;
                                size_t v_len = eq ? pair_len - key_len - 1 : 0;
                                char *value = xmalloc(v_len + 1);
                                if (percent_decode(v, v_len, value, true) >= 0)
                                        return value;
                                free(value); /* a bad escape: as if absent */
                        }
                }
                if (!amp)
                        return NULL;
                p = amp + 1;
        }
}
