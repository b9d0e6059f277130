/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The OCI runtime-spec config.json of a container: always in its own user namespace (image/idmap.h),
 * pid/mount/network/uts/ipc/cgroup namespaces, a least-privilege capability set (no CAP_SYS_ADMIN),
 * no_new_privs, masked and read-only /proc and /sys paths, a minimal /dev without /dev/fuse, nofile 16384,
 * and memory (swap = memory) and pids limits.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cell/process.h"
#include "lib/err.h"

#define BUNDLE_DEFAULT_PIDS 1024
#define BUNDLE_NOFILE       16384

struct bundle_opts {
        const char *rootfs;       /* absolute path of the mounted rootfs */
        const char *hostname;     /* NULL: no UTS hostname set */
        const char *netns_path;   /* NULL: a new, empty network namespace */
        const char *userns_path;  /* NULL: a new user namespace with the idmap.h mapping; else one made so (it
                                     must own netns_path: the runtime can then mount a fresh, read-only
                                     sysfs; with a netns of the host's user namespace it would bind the
                                     host's /sys, cgroup mounts included) */
        const char *cgroups_path; /* NULL: the runtime's default */
        uint64_t memory_bytes;    /* 0: unlimited */
        uint64_t pids;            /* 0: BUNDLE_DEFAULT_PIDS */
        uint64_t cpu_shares;      /* 0: unset */
        bool i386_image;          /* linux/386: socket(2) through socketcall(2) stays allowed (seccomp.h) */
};

/* Build the config document. Caller owns *ret. */
int bundle_config_build(const struct process_spec *p, const struct bundle_opts *o, json_t **ret,
                        struct berr **err);
/* CPU shares proportional to memory, as Garden: 1024 × clamp(mb, 128, 8192) / 8192, at least 2. */
uint64_t bundle_cpu_shares_for_memory(uint64_t memory_bytes);
