/* SPDX-License-Identifier: Apache-2.0 */
/* Host preparation the OCI runtime needs, done idempotently by the cell before its first container. */
#pragma once

#include "lib/err.h"

/*
 * cgroups: on a hybrid host (cgroup v1 hierarchies plus a cgroup2 "unified" mount) crun 1.8 refuses to
 * run while the unified hierarchy holds any controller ("cgroups in hybrid mode not supported, drop all
 * controllers from cgroupv2"). As Garden does, give each such controller (here: hugetlb) its own v1
 * hierarchy under /sys/fs/cgroup/<name>, which moves it out of cgroup2. A pure cgroup2 host or a host
 * whose unified hierarchy is already empty needs nothing. `cgroup_root` is "/sys/fs/cgroup" except in
 * tests. Returns the number of controllers moved (0 when nothing was needed).
 */
int cell_host_prepare_cgroups(const char *cgroup_root, struct berr **err);
