/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Disk quotas for containers' writable layers: a btrfs filesystem with quotas (qgroups) enabled, one
 * subvolume per container whose qgroup carries the limit. When the data dir is not on btrfs (ext4 here,
 * and this kernel has no ext4/XFS project quotas), the cell makes a sparse image file
 * <data-dir>/cell/disk.img, attaches it to a loop device (LOOP_CONFIGURE, autoclear), formats it with
 * mkfs.btrfs once and mounts it at <data-dir>/cell/disk. The container's overlay upper and work
 * directories live in its subvolume, so writes past the limit fail with EDQUOT.
 */
#pragma once

#include <stdint.h>

#include "lib/err.h"

struct cell_disk;

/* Open (setting up if needed, idempotent) the pool. pool_bytes: size of a new image file (0: 64 GiB, sparse).
 */
int cell_disk_open(const char *data_dir, uint64_t pool_bytes, struct cell_disk **ret, struct berr **err);
void cell_disk_close(struct cell_disk *d);
static inline void cell_disk_closep(struct cell_disk **d)
{
        cell_disk_close(*d);
}
/* Create the subvolume for container id with a limit (0: none, usage still counted). *ret_path: its path. */
int cell_disk_create(struct cell_disk *d, const char *id, uint64_t limit_bytes, char **ret_path,
                     struct berr **err);
/* Bytes used (referenced by the subvolume's qgroup) and its limit (0: none). */
int cell_disk_usage(struct cell_disk *d, const char *id, uint64_t *ret_used, uint64_t *ret_limit,
                    struct berr **err);
/* Delete the subvolume and its qgroup; idempotent. */
int cell_disk_remove(struct cell_disk *d, const char *id, struct berr **err);
/* Unmount the pool, detach its loop device and delete the image (tests, `berth cell reset`). */
int cell_disk_teardown(const char *data_dir, struct berr **err);
