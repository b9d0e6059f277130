/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Host preparation on the real host: after cell_host_prepare_cgroups() the unified hierarchy holds no
 * controller, a second call changes nothing, and crun really runs a container (it refuses before).
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cell/host.h"
#include "lib/fs.h"

static void test_prepare_is_idempotent_and_empties_cgroup2(void **state)
{
        (void)state;
        struct berr *err = NULL;
        int r = cell_host_prepare_cgroups("/sys/fs/cgroup", &err);
        if (r < 0)
                fail_msg("%s", berr_msg(err));
        char *buf = NULL;
        size_t len = 0;
        if (fs_read_file_at(AT_FDCWD, "/sys/fs/cgroup/unified/cgroup.controllers", 4096, &buf, &len) == 0) {
                assert_true(len == 0 || (len == 1 && buf[0] == '\n'));
                free(buf);
        }
        assert_int_equal(cell_host_prepare_cgroups("/sys/fs/cgroup", &err), 0);
        assert_true(cell_host_prepare_cgroups("/nonexistent", &err) < 0);
        assert_non_null(strstr(berr_msg(err), "/nonexistent"));
        berr_free(err);
}

static int run(const char *cmd)
{
        int st = system(cmd);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_crun_runs_after_prepare(void **state)
{
        (void)state;
        if (access("/usr/bin/crun", X_OK) < 0 || access("/bin/busybox", X_OK) < 0)
                skip();
        assert_true(cell_host_prepare_cgroups("/sys/fs/cgroup", NULL) >= 0);
        char dir[] = "/tmp/berth-test-crun-XXXXXX";
        assert_non_null(mkdtemp(dir));
        char cmd[1024];
        snprintf(
            cmd, sizeof(cmd),
            "set -e; cd %s; mkdir -p rootfs/bin; cp /bin/busybox rootfs/bin/; crun spec; "
            "sed -i 's/\"terminal\": true/\"terminal\": false/; s/\"sh\"/\"\\/bin\\/busybox\", \"true\"/' "
            "config.json",
            dir);
        assert_int_equal(run(cmd), 0);
        snprintf(cmd, sizeof(cmd), "crun --root %s/state run -b %s berth-test-host-$$ </dev/null", dir, dir);
        int rc = run(cmd);
        snprintf(cmd, sizeof(cmd), "crun --root %s/state delete -f berth-test-host-$$ 2>/dev/null; rm -rf %s",
                 dir, dir);
        run(cmd);
        assert_int_equal(rc, 0);
}

int main(void)
{
        if (geteuid() != 0) {
                printf("1..0 # SKIP needs root\n");
                return 77;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_prepare_is_idempotent_and_empties_cgroup2),
                cmocka_unit_test(test_crun_runs_after_prepare),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
