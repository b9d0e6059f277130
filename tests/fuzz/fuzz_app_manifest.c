/* SPDX-License-Identifier: Apache-2.0 */
/* Cloud Foundry app manifests (src/cli/manifest.c) on arbitrary bytes: never crash, never leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/manifest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct manifest *m = NULL;
        struct berr *err = NULL;
        if (manifest_parse((const char *)data, size, &m, &err) == 0) {
                /* Touch what push reads. */
                size_t n = 0;
                for (size_t i = 0; i < m->n_apps; i++) {
                        n += strlen(m->apps[i].name);
                        const struct manifest_app *a = &m->apps[i];
                        n += a->health_check_endpoint ? strlen(a->health_check_endpoint) : 0;
                        n += a->readiness_type ? strlen(a->readiness_type) : 0;
                        n += a->readiness_endpoint ? strlen(a->readiness_endpoint) : 0;
                        for (size_t j = 0; m->apps[i].routes && m->apps[i].routes[j]; j++)
                                n += strlen(m->apps[i].routes[j]);
                }
                for (size_t i = 0; m->warnings[i]; i++)
                        n += strlen(m->warnings[i]);
                (void)n;
                manifest_free(m);
        }
        berr_free(err);
        return 0;
}
