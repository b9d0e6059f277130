/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one user-namespace mapping shared by the image store and the cell.
 *
 * Container uid/gid N (0 <= N < IDMAP_SIZE) is host uid/gid IDMAP_HOST_BASE + N. Unpacked layers are
 * stored with that host ownership, so a single unpacked copy serves every container; the cell writes the
 * same mapping into each container's uid_map/gid_map. Container root is host uid 1000000000, which owns
 * nothing else on the host. `berth image export` shifts ownership back to the image's own ids.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define IDMAP_HOST_BASE 1000000000u
#define IDMAP_SIZE      16777216u /* 2^24 ids: 0 .. 16777215 inside the container */

static inline bool idmap_in_range(uint64_t id)
{
        return id < IDMAP_SIZE;
}
static inline uint32_t idmap_to_host(uint32_t id)
{
        return IDMAP_HOST_BASE + id;
}
/* Host id back to the container's id; ids outside the range become 65534 (nobody), as the kernel shows. */
static inline uint32_t idmap_to_container(uint32_t host)
{
        return (host >= IDMAP_HOST_BASE && host - IDMAP_HOST_BASE < IDMAP_SIZE) ? host - IDMAP_HOST_BASE
                                                                                : 65534u;
}
