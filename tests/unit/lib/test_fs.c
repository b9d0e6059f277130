/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/fs.h"

static void test_mkdir_write_read_rm(void **state)
{
        (void)state;
        char tmpl[] = "/tmp/berth-test-fs-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        _cleanup_close_ int d = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(d >= 0);
        assert_int_equal(fs_mkdir_p_at(d, "a/b/c", 0755), 0);
        assert_int_equal(fs_mkdir_p_at(d, "a/../x", 0755), -EINVAL);
        assert_int_equal(fs_write_file_atomic_at(d, "a/b/c/f", "hello", 5, 0600), 0);
        char *data = NULL;
        size_t len = 0;
        assert_int_equal(fs_read_file_at(d, "a/b/c/f", 100, &data, &len), 0);
        assert_int_equal(len, 5);
        assert_string_equal(data, "hello");
        free(data);
        assert_int_equal(fs_read_file_at(d, "a/b/c/f", 3, &data, &len), -EFBIG);
        /* A symlink is never followed by rm -rf. */
        assert_int_equal(symlinkat("/etc", d, "a/link"), 0);
        uint64_t du = 0;
        assert_int_equal(fs_disk_usage_at(d, "a", &du), 0);
        assert_int_equal(du, 5);
        assert_int_equal(fs_rm_rf_at(d, "a"), 0);
        assert_int_equal(faccessat(d, "a", F_OK, AT_SYMLINK_NOFOLLOW), -1);
        assert_int_equal(access("/etc/passwd", F_OK), 0);
        assert_int_equal(fs_rm_rf_at(d, "absent"), 0);
        assert_int_equal(fs_rm_rf_at(AT_FDCWD, tmpl), 0);
}

static void test_openat2_in_root(void **state)
{
        (void)state;
        char tmpl[] = "/tmp/berth-test-fs-XXXXXX";
        assert_non_null(mkdtemp(tmpl));
        _cleanup_close_ int d = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_int_equal(symlinkat("/", d, "root"), 0);
        /* RESOLVE_IN_ROOT: "/" inside the root is the root itself, never the host's. */
        _cleanup_close_ int f = fs_open_dir_in_root(d, "root/../..");
        assert_true(f >= 0);
        struct stat a, b;
        assert_int_equal(fstat(f, &a), 0);
        assert_int_equal(fstat(d, &b), 0);
        assert_int_equal(a.st_ino, b.st_ino);
        char hex[65];
        fs_random_hex(hex, 32);
        assert_int_equal(strlen(hex), 64);
        assert_int_equal(fs_rm_rf_at(AT_FDCWD, tmpl), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_mkdir_write_read_rm),
                cmocka_unit_test(test_openat2_in_root),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
