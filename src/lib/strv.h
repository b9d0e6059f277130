/* SPDX-License-Identifier: Apache-2.0 */
/* NULL-terminated string vectors: freeing one, and building one. */
#pragma once

#include <stddef.h>

/* Free every string of a NULL-terminated vector, then the vector (NULL is fine). */
void strv_free(char **v);
static inline void strv_freep(char ***v)
{
        strv_free(*v);
}

/* A growable vector; v is always NULL or NULL-terminated. Owns its strings. */
struct strv {
        char **v;
        size_t n, cap;
};

/* Append str (ownership passes to the vector). */
void strv_push(struct strv *s, char *str);
/* Free everything and reset to empty. */
void strv_clear(struct strv *s);
/* Hand the vector on as a NULL-terminated array (never NULL, possibly empty); s is reset. */
char **strv_take(struct strv *s);
