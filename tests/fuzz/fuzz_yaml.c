/* SPDX-License-Identifier: Apache-2.0 */
/* YAML → JSON on arbitrary bytes: never crash, never leak, bounded depth. */
#include <stdint.h>
#include <stdlib.h>

#include "lib/json.h"
#include "lib/yaml_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        json_t *j = NULL;
        struct berr *err = NULL;
        if (yaml_to_json((const char *)data, size, &j, &err) == 0) {
                char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
                free(s);
                json_decref(j);
        }
        berr_free(err);
        return 0;
}
