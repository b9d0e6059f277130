/* SPDX-License-Identifier: Apache-2.0 */
/*
 * WWW-Authenticate parsing (untrusted: any registry or man in the middle of plain http sends it), plus
 * the other small parsers of registry answers fed the same bytes: token responses, Retry-After,
 * Content-Range, RFC 3339 dates, error bodies. Checks the parser's output invariants, not just crashes.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/registry_internal.h"

static void check(bool ok)
{
        if (!ok)
                __builtin_trap();
}

static bool lower_token(const char *s)
{
        if (!s || !*s)
                return false;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (*p <= 0x20 || *p >= 0x7f || isupper(*p) || strchr("\"(),/:;<=>?@[\\]{}", *p))
                        return false;
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size > 64 * 1024)
                return 0;
        char *s = xmalloc(size + 1);
        memcpy(s, data, size);
        s[size] = '\0';

        struct auth_challenge *v = NULL;
        size_t n = 0;
        struct berr *err = NULL;
        int r = www_authenticate_parse(s, &v, &n, &err);
        if (r == 0) {
                check(err == NULL);
                check(n <= 16);
                check((n == 0) == (v == NULL));
                for (size_t i = 0; i < n; i++) {
                        check(lower_token(v[i].scheme));
                        check(!(v[i].token68 && v[i].n_params));
                        check(v[i].n_params <= 32);
                        for (size_t j = 0; j < v[i].n_params; j++) {
                                check(lower_token(v[i].params[j].name));
                                check(v[i].params[j].value != NULL);
                                for (const unsigned char *p = (const unsigned char *)v[i].params[j].value; *p;
                                     p++)
                                        check(*p >= 0x20 || *p == '\t');
                                /* Names are unique within a challenge. */
                                for (size_t k = 0; k < j; k++)
                                        check(strcmp(v[i].params[j].name, v[i].params[k].name) != 0);
                                check(auth_challenge_param(&v[i], v[i].params[j].name) ==
                                      v[i].params[j].value);
                        }
                }
                auth_challenges_free(v, n);
        } else {
                check(r == -EINVAL);
                check(err != NULL && err->code == r);
                berr_free(err);
        }

        char *tok = NULL;
        time_t exp = 0;
        err = NULL;
        if (registry_token_parse((const char *)data, size, 1700000000, &tok, &exp, &err) == 0) {
                check(tok && *tok && strlen(tok) <= REGISTRY_TOKEN_MAX);
                for (const unsigned char *p = (const unsigned char *)tok; *p; p++)
                        check(*p > 0x20 && *p < 0x7f);
                check(exp >= 1700000000 - 366 * 86400 && exp <= 1700000000 + 366 * 86400);
                free(tok);
        } else {
                check(err != NULL);
                berr_free(err);
        }

        unsigned secs = 0;
        if (registry_retry_after_parse(s, 1700000000, &secs) == 0)
                check(secs <= REGISTRY_RETRY_AFTER_MAX);
        uint64_t first, last;
        int64_t total;
        if (registry_content_range_parse(s, &first, &last, &total) == 0)
                check(first <= last && (total < 0 || last < (uint64_t)total));
        time_t t;
        (void)registry_rfc3339_parse(s, &t);
        char *m = registry_error_message((const char *)data, size);
        if (m) {
                check(strlen(m) <= 400);
                free(m);
        }
        free(s);
        return 0;
}
