/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

void *xmalloc(size_t n)
{
        void *p = malloc(n ? n : 1);
        if (!p)
                abort();
        return p;
}

void *xcalloc(size_t n, size_t m)
{
        void *p = calloc(n ? n : 1, m ? m : 1);
        if (!p)
                abort();
        return p;
}

void *xrealloc(void *p, size_t n)
{
        p = realloc(p, n ? n : 1);
        if (!p)
                abort();
        return p;
}

char *xstrdup(const char *s)
{
        char *p = strdup(s);
        if (!p)
                abort();
        return p;
}

char *xstrndup(const char *s, size_t n)
{
        char *p = strndup(s, n);
        if (!p)
                abort();
        return p;
}

static char *vasprintf_or_die(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static char *vasprintf_or_die(const char *fmt, va_list ap)
{
        char *s = NULL;
        if (vasprintf(&s, fmt, ap) < 0)
                abort();
        return s;
}

char *xasprintf(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        char *s = vasprintf_or_die(fmt, ap);
        va_end(ap);
        return s;
}

static int set_msg(struct berr **err, int code, char *msg)
{
        if (!err || *err) {
                free(msg);
                return code;
        }
        struct berr *e = xmalloc(sizeof(*e));
        e->code = code;
        e->msg = msg;
        *err = e;
        return code;
}

int berr_set(struct berr **err, int code, const char *fmt, ...)
{
        if (!err || *err)
                return code;
        va_list ap;
        va_start(ap, fmt);
        char *m = vasprintf_or_die(fmt, ap);
        va_end(ap);
        return set_msg(err, code, m);
}

int berr_set_errno(struct berr **err, int code, const char *fmt, ...)
{
        if (!err || *err)
                return code;
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *m = vasprintf_or_die(fmt, ap);
        va_end(ap);
        return set_msg(err, code, xasprintf("%s: %s", m, strerror(code < 0 ? -code : code)));
}

int berr_prefix(struct berr **err, int code, const char *fmt, ...)
{
        if (!err)
                return code;
        va_list ap;
        va_start(ap, fmt);
        _cleanup_free_ char *ctx = vasprintf_or_die(fmt, ap);
        va_end(ap);
        if (!*err)
                return set_msg(err, code, xasprintf("%s: %s", ctx, strerror(code < 0 ? -code : code)));
        char *m = xasprintf("%s: %s", ctx, (*err)->msg);
        free((*err)->msg);
        (*err)->msg = m;
        return code;
}

void berr_free(struct berr *e)
{
        if (!e)
                return;
        free(e->msg);
        free(e);
}

const char *berr_msg(const struct berr *e)
{
        return e ? e->msg : "unknown error";
}
