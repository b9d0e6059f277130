/* SPDX-License-Identifier: Apache-2.0 */
/*
 * berth's one error convention.
 *
 * A function that can fail returns int: 0 (or a non-negative count) on success, a negative errno-style
 * code on failure. It may also fill an optional `struct berr **err` with a human message. Callers add
 * context on the way up with berr_prefix() ("pull nginx: layer sha256:ab..: DiffID mismatch"). Only main()
 * or a request handler prints the message. Passing err == NULL is always allowed.
 */
#pragma once

#include "lib/macro.h"

struct berr {
        int code;  /* negative errno */
        char *msg; /* owned, never NULL */
};

/* Set *err (if err and *err is NULL) from a format; returns code (which must be negative). */
int berr_set(struct berr **err, int code, const char *fmt, ...) _printf_(3, 4);
/* Like berr_set, appending ": strerror(-code)". */
int berr_set_errno(struct berr **err, int code, const char *fmt, ...) _printf_(3, 4);
/* Prepend "context: " to an existing error (or create one from strerror if none); returns code. */
int berr_prefix(struct berr **err, int code, const char *fmt, ...) _printf_(3, 4);
void berr_free(struct berr *e);
static inline void berr_freep(struct berr **e)
{
        berr_free(*e);
        *e = NULL;
}
#define _cleanup_berr_ _cleanup_(berr_freep)
const char *berr_msg(const struct berr *e);
