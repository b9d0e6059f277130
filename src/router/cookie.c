/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cookies for Gorouter's sticky sessions (shared/reference/cloud-foundry-behaviour.md section 8): when a
 * response sets JSESSIONID the router adds __VCAP_ID__=<instance guid> (HttpOnly, the route's path, and
 * Secure, SameSite, Expires, Partitioned copied from JSESSIONID, Max-Age only if negative); a request
 * carrying __VCAP_ID__ goes back to that instance while it lives.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "router/router_internal.h"

static bool is_space(char ch)
{
        return ch == ' ' || ch == '\t';
}

/* The next "; "-separated piece of [*p, end): its trimmed bounds; false when none is left. */
static bool next_piece(const char **p, const char *end, const char **ps, const char **pe)
{
        while (*p < end && (is_space(**p) || **p == ';'))
                (*p)++;
        if (*p >= end)
                return false;
        const char *semi = memchr(*p, ';', (size_t)(end - *p));
        const char *e = semi ? semi : end;
        *ps = *p;
        *pe = e;
        while (*pe > *ps && is_space((*pe)[-1]))
                (*pe)--;
        *p = e;
        return true;
}

/* Whether [s, e) is "name=..." (the name compared exactly, as cookie names are case-sensitive). */
static const char *value_of(const char *s, const char *e, const char *name)
{
        size_t nl = strlen(name);
        const char *eq = memchr(s, '=', (size_t)(e - s));
        if (!eq)
                return NULL;
        const char *ne = eq;
        while (ne > s && is_space(ne[-1]))
                ne--;
        if ((size_t)(ne - s) != nl || memcmp(s, name, nl) != 0)
                return NULL;
        eq++;
        while (eq < e && is_space(*eq))
                eq++;
        return eq;
}

/* RFC 6265's cookie-octet: printable US-ASCII but for '"', ',', ';' and '\\'. */
static bool cookie_octet(unsigned char ch)
{
        return ch > 0x20 && ch < 0x7f && ch != '"' && ch != ',' && ch != ';' && ch != '\\';
}

void cookie_value(const char *v, size_t len, const char *name, char *out, size_t n)
{
        const char *p = v, *end = v + len, *s, *e;
        while (next_piece(&p, end, &s, &e)) {
                const char *val = value_of(s, e, name);
                if (!val)
                        continue;
                if (e - val >= 2 && *val == '"' && e[-1] == '"')
                        val++, e--;
                size_t vl = (size_t)(e - val);
                if (vl >= n)
                        break; /* longer than any guid: not ours */
                for (size_t i = 0; i < vl; i++)
                        if (!cookie_octet((unsigned char)val[i]))
                                goto absent; /* not a cookie value (RFC 6265 4.1.1): not ours either */
                memcpy(out, val, vl);
                out[vl] = '\0';
                return;
        }
absent:
        if (n)
                out[0] = '\0';
}

bool set_cookie_is(const char *v, size_t len, const char *name)
{
        const char *p = v, *end = v + len, *s, *e;
        return next_piece(&p, end, &s, &e) && value_of(s, e, name) != NULL;
}

static void copy_attr(char *out, size_t n, const char *s, const char *e)
{
        size_t l = (size_t)(e - s);
        if (l >= n)
                l = n - 1;
        memcpy(out, s, l);
        out[l] = '\0';
        /* Nothing that could end the header or add another attribute. */
        for (char *q = out; *q; q++)
                if (*q == '\r' || *q == '\n' || *q == ';')
                        *q = '\0';
}

void set_cookie_attrs(const char *v, size_t len, struct cookie_attrs *a)
{
        *a = (struct cookie_attrs){ 0 };
        const char *p = v, *end = v + len, *s, *e;
        if (!next_piece(&p, end, &s, &e)) /* the cookie itself */
                return;
        while (next_piece(&p, end, &s, &e)) {
                const char *eq = memchr(s, '=', (size_t)(e - s));
                size_t kl = (size_t)((eq ? eq : e) - s);
                while (kl > 0 && is_space(s[kl - 1]))
                        kl--;
                const char *val = eq ? eq + 1 : e;
                while (val < e && is_space(*val))
                        val++;
                if (kl == 6 && strncasecmp(s, "secure", 6) == 0)
                        a->secure = true;
                else if (kl == 11 && strncasecmp(s, "partitioned", 11) == 0)
                        a->partitioned = true;
                else if (kl == 8 && strncasecmp(s, "samesite", 8) == 0 && eq)
                        copy_attr(a->same_site, sizeof(a->same_site), val, e);
                else if (kl == 7 && strncasecmp(s, "expires", 7) == 0 && eq)
                        copy_attr(a->expires, sizeof(a->expires), val, e);
                else if (kl == 7 && strncasecmp(s, "max-age", 7) == 0 && eq)
                        a->max_age_negative = val < e && *val == '-';
        }
}

int vcap_cookie_format(char *out, size_t n, const char *guid, const char *path, const struct cookie_attrs *a)
{
        int k = snprintf(out, n, "__VCAP_ID__=%s; Path=%s%s%s%s; HttpOnly%s%s%s%s", guid,
                         path && *path ? path : "/", a->expires[0] ? "; Expires=" : "", a->expires,
                         a->max_age_negative ? "; Max-Age=0" : "", a->secure ? "; Secure" : "",
                         a->same_site[0] ? "; SameSite=" : "", a->same_site,
                         a->partitioned ? "; Partitioned" : "");
        return k < 0 || (size_t)k >= n ? -1 : k;
}
