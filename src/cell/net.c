/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>

#include "cell/net.h"

int cell_net_setup_host(const char *data_dir, const struct cell_net_config *c, struct berr **err)
{
        (void)data_dir, (void)c;
        return berr_set(err, -ENOSYS, "networking is not implemented yet");
}

int cell_net_create(const char *data_dir, const struct cell_net_config *c, const char *id,
                    const struct cell_port_map *ports, size_t n_ports, struct cell_net_attachment *ret,
                    struct berr **err)
{
        (void)data_dir, (void)c, (void)id, (void)ports, (void)n_ports, (void)ret;
        return berr_set(err, -ENOSYS, "networking is not implemented yet");
}

int cell_net_destroy(const char *data_dir, const struct cell_net_config *c, const char *id, struct berr **err)
{
        (void)data_dir, (void)c, (void)id, (void)err;
        return 0;
}

int cell_net_teardown_host(const char *data_dir, const struct cell_net_config *c, struct berr **err)
{
        (void)data_dir, (void)c, (void)err;
        return 0;
}
