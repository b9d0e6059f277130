/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image references: arbitrary bytes (up to the first NUL) must either be rejected with a message or parse
 * to a reference whose normalized string is a fixed point (parsing it again gives the same string).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/reference.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size > IMAGE_REF_MAX + 16)
                return 0;
        char *s = malloc(size + 1);
        if (!s)
                return 0;
        memcpy(s, data, size);
        s[size] = '\0';

        (void)image_ref_domain_is_loopback(s);

        struct image_ref *r = NULL;
        struct berr *err = NULL;
        if (image_ref_parse(s, &r, &err) < 0) {
                /* A failure always comes with a message. */
                if (!err || !berr_msg(err) || !*berr_msg(err))
                        abort();
                berr_free(err);
                free(s);
                return 0;
        }
        if (err)
                abort();

        char *str = image_ref_string(r);
        char *name = image_ref_name(r);
        if (strlen(name) > IMAGE_NAME_MAX || (!r->tag && !r->digest) || !image_ref_object(r) ||
            !image_ref_api_host(r))
                abort();
        (void)image_ref_domain_is_loopback(r->domain);

        struct image_ref *r2 = NULL;
        if (image_ref_parse(str, &r2, NULL) < 0)
                abort();
        char *str2 = image_ref_string(r2);
        if (strcmp(str, str2) != 0 || strcmp(r->domain, r2->domain) != 0 || strcmp(r->path, r2->path) != 0)
                abort();

        free(str2);
        image_ref_free(r2);
        free(name);
        free(str);
        image_ref_free(r);
        free(s);
        return 0;
}
