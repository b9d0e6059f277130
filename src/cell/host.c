/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "cell/host.h"
#include "lib/fs.h"
#include "lib/log.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

/* Controller names are short lowercase words; anything else in the file is not trusted as a path. */
static bool valid_controller(const char *c)
{
        size_t n = strlen(c);
        return n > 0 && n < 32 && strspn(c, "abcdefghijklmnopqrstuvwxyz_") == n;
}

int cell_host_prepare_cgroups(const char *cgroup_root, struct berr **err)
{
        struct statfs sfs;
        if (statfs(cgroup_root, &sfs) < 0)
                return berr_set_errno(err, -errno, "cgroups: %s", cgroup_root);
        if ((unsigned long)sfs.f_type == CGROUP2_SUPER_MAGIC)
                return 0; /* pure cgroup v2: nothing to do */
        _cleanup_free_ char *unified = xasprintf("%s/unified", cgroup_root);
        _cleanup_free_ char *controllers = xasprintf("%s/cgroup.controllers", unified);
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = fs_read_file_at(AT_FDCWD, controllers, 4096, &buf, &len);
        if (r == -ENOENT)
                return 0; /* legacy v1 only */
        if (r < 0)
                return berr_set_errno(err, r, "cgroups: read %s", controllers);
        int moved = 0;
        char *save = NULL;
        for (char *c = strtok_r(buf, " \n", &save); c; c = strtok_r(NULL, " \n", &save)) {
                if (!valid_controller(c))
                        return berr_set(err, -EINVAL, "cgroups: unexpected controller name in %s",
                                        controllers);
                _cleanup_free_ char *dir = xasprintf("%s/%s", cgroup_root, c);
                if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                        return berr_set_errno(
                            err, -errno,
                            "cgroups: cannot create %s to move the %s controller out of cgroup2 "
                            "(crun refuses hybrid hosts whose cgroup2 holds controllers)",
                            dir, c);
                if (mount("cgroup", dir, "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC, c) < 0 && errno != EBUSY)
                        return berr_set_errno(
                            err, -errno,
                            "cgroups: cannot mount the %s controller on its own v1 hierarchy at %s "
                            "(crun refuses hybrid hosts whose cgroup2 holds controllers)",
                            c, dir);
                log_info("cgroups: moved the %s controller from cgroup2 to %s", c, dir);
                moved++;
        }
        return moved;
}
