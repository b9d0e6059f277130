/* SPDX-License-Identifier: Apache-2.0 */
#include <stdlib.h>

#include "lib/macro.h"
#include "lib/strv.h"

void strv_free(char **v)
{
        if (!v)
                return;
        for (char **p = v; *p; p++)
                free(*p);
        free(v);
}

void strv_push(struct strv *s, char *str)
{
        if (s->n + 2 > s->cap) {
                s->cap = s->cap ? s->cap * 2 : 8;
                s->v = xrealloc(s->v, s->cap * sizeof(char *));
        }
        s->v[s->n++] = str;
        s->v[s->n] = NULL;
}

void strv_clear(struct strv *s)
{
        strv_free(s->v);
        *s = (struct strv){ 0 };
}

char **strv_take(struct strv *s)
{
        if (!s->v)
                s->v = xcalloc(1, sizeof(char *));
        char **v = s->v;
        *s = (struct strv){ 0 };
        return v;
}
