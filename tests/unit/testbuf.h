/* SPDX-License-Identifier: Apache-2.0 */
/* A growable byte buffer for building test inputs (tars, compressed streams). */
#pragma once

#include <stdint.h>
#include <string.h>

#include "lib/macro.h"

struct buf {
        uint8_t *p;
        size_t len, cap;
};

static inline void buf_add(struct buf *b, const void *d, size_t n)
{
        if (b->len + n > b->cap) {
                b->cap = MAX(b->cap * 2, b->len + n);
                b->p = xrealloc(b->p, b->cap);
        }
        if (n)
                memcpy(b->p + b->len, d, n);
        b->len += n;
}
