/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>

#include "cell/disk.h"

int cell_disk_open(const char *data_dir, uint64_t pool_bytes, struct cell_disk **ret, struct berr **err)
{
        (void)data_dir, (void)pool_bytes, (void)ret;
        return berr_set(err, -ENOSYS, "disk quotas are not implemented yet");
}

void cell_disk_close(struct cell_disk *d)
{
        (void)d;
}

int cell_disk_create(struct cell_disk *d, const char *id, uint64_t limit_bytes, char **ret_path,
                     struct berr **err)
{
        (void)d, (void)id, (void)limit_bytes, (void)ret_path;
        return berr_set(err, -ENOSYS, "disk quotas are not implemented yet");
}

int cell_disk_usage(struct cell_disk *d, const char *id, uint64_t *ret_used, uint64_t *ret_limit,
                    struct berr **err)
{
        (void)d, (void)id, (void)ret_used, (void)ret_limit;
        return berr_set(err, -ENOSYS, "disk quotas are not implemented yet");
}

int cell_disk_remove(struct cell_disk *d, const char *id, struct berr **err)
{
        (void)d, (void)id, (void)err;
        return 0;
}

int cell_disk_teardown(const char *data_dir, struct berr **err)
{
        (void)data_dir, (void)err;
        return 0;
}
