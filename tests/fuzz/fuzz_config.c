/* SPDX-License-Identifier: Apache-2.0 */
/* The configuration parser on arbitrary bytes. */
#include <stdint.h>

#include "lib/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct berth_config *c = NULL;
        struct berr *err = NULL;
        if (config_parse((const char *)data, size, &c, &err) == 0)
                (void)config_find_registry(c, "localhost:5000");
        config_free(c);
        berr_free(err);
        return 0;
}
