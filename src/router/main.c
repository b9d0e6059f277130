/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>

#include "router/router.h"

int router_main(const struct berth_config *cfg, int argc, char **argv, struct berr **err)
{
        (void)cfg, (void)argc, (void)argv;
        berr_set(err, -ENOSYS, "the router is not built yet");
        return 1;
}
