/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image references, parsed and normalized the way Docker does it (distribution/reference's grammar and
 * ParseNormalizedNamed), so that "nginx" here names the same image as `docker pull nginx`:
 *
 *   reference   := name [ ":" tag ] [ "@" digest ]
 *   name        := [ domain "/" ] path            (at most IMAGE_NAME_MAX characters once normalized)
 *   domain      := host [ ":" port ]
 *   host        := label ( "." label )* | "[" ipv6 "]"
 *   label       := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
 *   path        := component ( "/" component )*
 *   component   := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
 *   tag         := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
 *   digest      := as accepted by digest_validate()
 *
 * Two deliberate additions to Docker's rules: a port must be 1..65535 (Docker only wants digits), and an
 * IPv6 literal must really be one (inet_pton), because neither could ever be connected to otherwise.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "image/reference.h"

/* How much of an offending reference an error message quotes. */
#define REF_QUOTE_MAX 256

static bool is_lower_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
        return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_word(char c)
{
        return is_alnum(c) || c == '_';
}

static bool is_digit(char c)
{
        return c >= '0' && c <= '9';
}

static bool has_upper(const char *s, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (s[i] >= 'A' && s[i] <= 'Z')
                        return true;
        return false;
}

/*
 * Fail with "invalid reference "<s>": <detail>". Only called after the reference was checked to be
 * printable ASCII, so quoting it cannot smuggle terminal escapes into a message.
 */
_printf_(4, 5) static int ref_fail(struct berr **err, int code, const char *s, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        char *detail = NULL;
        if (vasprintf(&detail, fmt, ap) < 0)
                abort();
        va_end(ap);
        size_t n = strlen(s);
        berr_set(err, code, "invalid reference \"%.*s%s\": %s", (int)MIN(n, (size_t)REF_QUOTE_MAX), s,
                 n > REF_QUOTE_MAX ? "..." : "", detail);
        free(detail);
        return code;
}

/* A port: 1..65535, decimal digits only. */
static bool port_valid(const char *p, size_t n)
{
        if (n == 0 || n > 5)
                return false;
        unsigned v = 0;
        for (size_t i = 0; i < n; i++) {
                if (!is_digit(p[i]))
                        return false;
                v = v * 10 + (unsigned)(p[i] - '0');
        }
        return v >= 1 && v <= 65535;
}

/*
 * Validate the registry part (the first path component, already known to be one). `s` is the whole
 * reference, for messages. Returns 0 or -EINVAL.
 */
static int domain_validate(const char *s, const char *d, size_t n, struct berr **err)
{
        const char *host = d;
        size_t host_len;
        const char *port = NULL;
        size_t port_len = 0;

        if (n == 0)
                return ref_fail(err, -EINVAL, s, "empty registry name");
        if (d[0] == '[') {
                const char *close = memchr(d, ']', n);
                if (!close)
                        return ref_fail(err, -EINVAL, s, "registry \"%.*s\": missing ']' after IPv6 address",
                                        (int)n, d);
                size_t in_len = (size_t)(close - d - 1);
                char addr[INET6_ADDRSTRLEN + 1];
                bool ok = in_len > 0 && in_len < sizeof(addr);
                for (size_t i = 0; ok && i < in_len; i++) {
                        char c = d[1 + i];
                        ok = is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':';
                }
                struct in6_addr a6;
                if (ok) {
                        memcpy(addr, d + 1, in_len);
                        addr[in_len] = '\0';
                        ok = inet_pton(AF_INET6, addr, &a6) == 1;
                }
                if (!ok)
                        return ref_fail(err, -EINVAL, s, "registry \"%.*s\": \"%.*s\" is not an IPv6 address",
                                        (int)n, d, (int)(close - d + 1), d);
                host_len = (size_t)(close - d + 1);
                if (host_len < n) {
                        if (d[host_len] != ':')
                                return ref_fail(err, -EINVAL, s,
                                                "registry \"%.*s\": unexpected \"%c\" after IPv6 address",
                                                (int)n, d, d[host_len]);
                        port = d + host_len + 1;
                        port_len = n - host_len - 1;
                }
        } else {
                const char *colon = memchr(d, ':', n);
                host_len = colon ? (size_t)(colon - d) : n;
                if (colon) {
                        port = colon + 1;
                        port_len = n - host_len - 1;
                }
                if (host_len == 0)
                        return ref_fail(err, -EINVAL, s, "registry \"%.*s\" has an empty host name", (int)n,
                                        d);
                /* Labels: alphanumerics with inner hyphens, separated by single dots. */
                size_t label_start = 0;
                for (size_t i = 0; i <= host_len; i++) {
                        if (i < host_len && host[i] != '.') {
                                if (!is_alnum(host[i]) && host[i] != '-')
                                        return ref_fail(
                                            err, -EINVAL, s,
                                            "registry \"%.*s\": invalid character '%c' in host name", (int)n,
                                            d, host[i]);
                                continue;
                        }
                        size_t ll = i - label_start;
                        if (ll == 0)
                                return ref_fail(err, -EINVAL, s,
                                                "registry \"%.*s\": empty label in host name", (int)n, d);
                        if (host[label_start] == '-' || host[i - 1] == '-')
                                return ref_fail(err, -EINVAL, s,
                                                "registry \"%.*s\": a host name label must not start or end "
                                                "with '-'",
                                                (int)n, d);
                        label_start = i + 1;
                }
        }
        if (port && !port_valid(port, port_len))
                return ref_fail(err, -EINVAL, s, "registry \"%.*s\": invalid port \"%.*s\" (want 1-65535)",
                                (int)n, d, (int)port_len, port);
        return 0;
}

/*
 * Check one path component against [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*. On failure returns the offset of
 * the first offending character (or n when the component ends in a separator), else -1.
 */
static long path_component_bad_offset(const char *c, size_t n)
{
        size_t i = 0;
        if (n == 0)
                return 0;
        for (;;) {
                if (i >= n || !is_lower_alnum(c[i]))
                        return (long)i;
                while (i < n && is_lower_alnum(c[i]))
                        i++;
                if (i == n)
                        return -1;
                if (c[i] == '.') {
                        i++;
                } else if (c[i] == '_') {
                        i++;
                        if (i < n && c[i] == '_')
                                i++;
                } else if (c[i] == '-') {
                        while (i < n && c[i] == '-')
                                i++;
                } else {
                        return (long)i;
                }
        }
}

/* Validate the repository path (after normalization). Returns 0 or -EINVAL with the component named. */
static int path_validate(const char *s, const char *path, struct berr **err)
{
        if (!*path)
                return ref_fail(err, -EINVAL, s, "empty repository path");
        if (has_upper(path, strlen(path)))
                return ref_fail(err, -EINVAL, s, "repository name must be lowercase (\"%s\")", path);
        const char *p = path;
        for (unsigned idx = 1;; idx++) {
                const char *slash = strchr(p, '/');
                size_t n = slash ? (size_t)(slash - p) : strlen(p);
                if (n == 0)
                        return ref_fail(err, -EINVAL, s, "repository path \"%s\" has an empty component",
                                        path);
                long bad = path_component_bad_offset(p, n);
                if (bad >= 0) {
                        if ((size_t)bad >= n)
                                return ref_fail(err, -EINVAL, s,
                                                "repository path component \"%.*s\" must not end with a "
                                                "separator",
                                                (int)n, p);
                        return ref_fail(
                            err, -EINVAL, s,
                            "repository path component %u \"%.*s\": unexpected '%c' at offset %ld "
                            "(allowed: a-z, 0-9, and '.', '_', '__' or '-' between them)",
                            idx, (int)n, p, p[bad], bad);
                }
                if (!slash)
                        return 0;
                p = slash + 1;
        }
}

/* Docker rejects a bare 64-hex string: it would be confused with an image ID. */
static bool is_hex64(const char *s)
{
        for (size_t i = 0; i < 64; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return s[64] == '\0';
}

void image_ref_free(struct image_ref *r)
{
        if (!r)
                return;
        free(r->domain);
        free(r->path);
        free(r->tag);
        free(r->digest);
        free(r);
}

/*
 * Parse and normalize `s` (see the grammar at the top). Checks run in order of the reference's parts so
 * the first thing wrong is the one reported. The caller owns *ret (image_ref_free); *ret is written only
 * on success. Every error is -EINVAL.
 */
int image_ref_parse(const char *s, struct image_ref **ret, struct berr **err)
{
        if (!s || !*s)
                return berr_set(err, -EINVAL, "invalid reference: empty image reference");
        size_t len = strnlen(s, IMAGE_REF_MAX + 1);
        if (len > IMAGE_REF_MAX)
                return berr_set(err, -EINVAL, "invalid reference: longer than %d characters", IMAGE_REF_MAX);
        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];
                if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f')
                        return berr_set(err, -EINVAL,
                                        "invalid reference: whitespace at offset %zu (references contain no "
                                        "spaces)",
                                        i);
                if (c < 0x21 || c > 0x7e)
                        return berr_set(
                            err, -EINVAL,
                            "invalid reference: non-printable or non-ASCII byte 0x%02x at offset %zu", c, i);
        }
        if (len == 64 && is_hex64(s))
                return ref_fail(err, -EINVAL, s,
                                "a 64-character hexadecimal string is an image ID, not a repository name");

        /* name [":" tag] ["@" digest]: the digest starts at the first '@'. */
        const char *at = strchr(s, '@');
        size_t name_len = at ? (size_t)(at - s) : len;
        _cleanup_free_ char *digest = NULL;
        if (at) {
                struct berr *derr = NULL;
                if (digest_validate(at + 1, &derr) < 0) {
                        int r = ref_fail(err, -EINVAL, s, "bad digest: %s", berr_msg(derr));
                        berr_free(derr);
                        return r;
                }
                digest = xstrdup(at + 1);
        }
        if (name_len == 0)
                return ref_fail(err, -EINVAL, s, "empty repository name");

        /* The tag follows the last ':' that comes after the last '/' (a ':' before it is a port). */
        _cleanup_free_ char *name = xstrndup(s, name_len);
        _cleanup_free_ char *tag = NULL;
        char *last_slash = strrchr(name, '/');
        char *colon = strrchr(last_slash ? last_slash : name, ':');
        if (colon) {
                *colon = '\0';
                const char *t = colon + 1;
                size_t tl = strlen(t);
                if (tl == 0)
                        return ref_fail(err, -EINVAL, s, "empty tag after ':'");
                if (tl > IMAGE_TAG_MAX)
                        return ref_fail(err, -EINVAL, s, "tag is %zu characters, more than %d", tl,
                                        IMAGE_TAG_MAX);
                if (!is_word(t[0]))
                        return ref_fail(err, -EINVAL, s,
                                        "bad tag \"%s\": must start with a letter, digit or '_'", t);
                for (size_t i = 1; i < tl; i++)
                        if (!is_word(t[i]) && t[i] != '.' && t[i] != '-')
                                return ref_fail(err, -EINVAL, s,
                                                "bad tag \"%s\": unexpected '%c' (allowed: letters, digits, "
                                                "'_', '.', '-')",
                                                t, t[i]);
                tag = xstrdup(t);
        }
        if (!*name)
                return ref_fail(err, -EINVAL, s, "empty repository name");

        /* Docker's splitDockerDomain: the first component is a registry only if it looks like a host. */
        _cleanup_free_ char *domain = NULL;
        const char *remainder;
        char *slash = strchr(name, '/');
        if (slash) {
                size_t fl = (size_t)(slash - name);
                bool is_domain = memchr(name, '.', fl) || memchr(name, ':', fl) ||
                                 (fl == 9 && memcmp(name, "localhost", 9) == 0) || has_upper(name, fl);
                if (is_domain) {
                        int r = domain_validate(s, name, fl, err);
                        if (r < 0)
                                return r;
                        domain = xstrndup(name, fl);
                        remainder = slash + 1;
                } else {
                        remainder = name;
                }
        } else {
                remainder = name;
        }
        if (!domain || strcmp(domain, "index.docker.io") == 0 ||
            strcmp(domain, "registry-1.docker.io") == 0) {
                free(domain);
                domain = xstrdup(IMAGE_DOCKER_DOMAIN);
        }

        /* Only Docker Hub's official images live under library/. */
        _cleanup_free_ char *path = NULL;
        if (strcmp(domain, IMAGE_DOCKER_DOMAIN) == 0 && !strchr(remainder, '/') && *remainder)
                path = xasprintf("library/%s", remainder);
        else
                path = xstrdup(remainder);
        int r = path_validate(s, path, err);
        if (r < 0)
                return r;

        size_t full = strlen(domain) + 1 + strlen(path);
        if (full > IMAGE_NAME_MAX)
                return ref_fail(err, -EINVAL, s, "repository name \"%s/%s\" is %zu characters, more than %d",
                                domain, path, full, IMAGE_NAME_MAX);

        if (!tag && !digest)
                tag = xstrdup("latest");

        struct image_ref *ref = xcalloc(1, sizeof(*ref));
        ref->domain = TAKE_PTR(domain);
        ref->path = TAKE_PTR(path);
        ref->tag = TAKE_PTR(tag);
        ref->digest = TAKE_PTR(digest);
        *ret = ref;
        return 0;
}

char *image_ref_name(const struct image_ref *r)
{
        return xasprintf("%s/%s", r->domain, r->path);
}

char *image_ref_string(const struct image_ref *r)
{
        return xasprintf("%s/%s%s%s%s%s", r->domain, r->path, r->tag ? ":" : "", r->tag ? r->tag : "",
                         r->digest ? "@" : "", r->digest ? r->digest : "");
}

const char *image_ref_api_host(const struct image_ref *r)
{
        if (strcmp(r->domain, IMAGE_DOCKER_DOMAIN) == 0)
                return "registry-1.docker.io";
        return r->domain;
}

const char *image_ref_object(const struct image_ref *r)
{
        return r->digest ? r->digest : r->tag;
}

bool image_ref_domain_is_loopback(const char *domain)
{
        if (!domain || !*domain)
                return false;
        size_t n = strnlen(domain, 300);
        if (n >= 300)
                return false;
        const char *host = domain;
        size_t host_len;
        const char *port = NULL;

        if (domain[0] == '[') {
                const char *close = strchr(domain, ']');
                if (!close)
                        return false;
                host = domain + 1;
                host_len = (size_t)(close - domain - 1);
                if (close[1] == ':')
                        port = close + 2;
                else if (close[1] != '\0')
                        return false;
                char buf[INET6_ADDRSTRLEN + 1];
                if (host_len == 0 || host_len >= sizeof(buf))
                        return false;
                memcpy(buf, host, host_len);
                buf[host_len] = '\0';
                struct in6_addr a6;
                if (inet_pton(AF_INET6, buf, &a6) != 1)
                        return false;
                /* ::1, or 127.0.0.0/8 written as an IPv4-mapped address. */
                bool loop = IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
                if (!loop)
                        return false;
        } else {
                const char *colon = strchr(domain, ':');
                host_len = colon ? (size_t)(colon - domain) : n;
                if (colon)
                        port = colon + 1;
                char buf[INET_ADDRSTRLEN + 1];
                if (host_len == 9 && strncasecmp(host, "localhost", 9) == 0) {
                        /* fine */
                } else {
                        if (host_len == 0 || host_len >= sizeof(buf))
                                return false;
                        memcpy(buf, host, host_len);
                        buf[host_len] = '\0';
                        struct in_addr a4;
                        if (inet_pton(AF_INET, buf, &a4) != 1)
                                return false;
                        if (((const unsigned char *)&a4.s_addr)[0] != 127)
                                return false;
                }
        }
        return !port || port_valid(port, strlen(port));
}
