/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>

#include "cell/agent.h"

int cell_agent_main(const char *data_dir, const char *config_path, const struct berth_config *cfg, int argc,
                    char **argv, struct berr **err)
{
        (void)data_dir, (void)config_path, (void)cfg, (void)argc, (void)argv;
        berr_set(err, -ENOSYS, "the cell agent is not built yet");
        return 1;
}
