/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>

#include "controller/controller.h"

int controller_main(const char *data_dir, const struct berth_config *cfg, int argc, char **argv,
                    struct berr **err)
{
        (void)data_dir, (void)cfg, (void)argc, (void)argv;
        berr_set(err, -ENOSYS, "the controller is not built yet");
        return 1;
}
