/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Disk quotas on a real btrfs: a 512 MiB sparse pool image under a temporary data dir, attached to a loop
 * device and mounted by cell_disk_open(). Checked: open on a fresh data dir and again (idempotent), four
 * processes opening one fresh data dir at once (one image, one loop device, one mount; the default 64 GiB
 * size, sparse), a limit enforced (EDQUOT past it, usage = bytes written), the same through an overlay whose
 * lower dir is on ext4 and whose upper and work dirs are in the subvolume (written by the containers' host
 * uid, copy-up included), no limit, remove (idempotent, qgroup gone), two containers independent, invalid
 * ids, a data dir on btrfs (no image: subvolumes directly), re-open after an unmount (the loop device is
 * gone, as after a reboot) finding the subvolumes, re-open reusing a loop device still bound to the image,
 * a mounted non-btrfs pool, an mkfs failure, and teardown leaving mounts and loop devices as they were. The
 * test runs in a private mount namespace so that other processes' mounts cannot disturb the comparison, and
 * so that a crash cannot leave the mounts behind. Needs root, btrfs in the kernel, mkfs.btrfs and
 * /dev/loop-control.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/magic.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cell/disk.h"
#include "lib/fs.h"

#define MIB            (UINT64_C(1) << 20)
#define POOL_BYTES     (512 * MIB)
#define CONTAINER_ROOT 1000000000u /* host uid/gid of root in the containers (IDMAP_HOST_BASE) */
#define QGROUP_WAIT_MS 60000       /* the cleaner drops a deleted subvolume after a commit */
#define N_OPENERS      4

static struct {
        char top[64];         /* /tmp/berth-test-disk-XXXXXX */
        char data[128];       /* the main data dir */
        char pool[192];       /* its pool's mount point */
        char merged[128];     /* the overlay of the overlay test */
        char notbtrfs[192];   /* a tmpfs where a pool should be */
        char *mounts, *loops; /* before the test */
        struct cell_disk *disk;
} T;

/* ---- helpers ---- */

static double ms_since(const struct timespec *t0)
{
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static char *read_text(const char *path)
{
        char *buf = NULL;
        size_t len = 0;
        assert_int_equal(fs_read_file_at(AT_FDCWD, path, 1 << 22, &buf, &len), 0);
        return buf;
}

/* `losetup -a`, whole. */
static char *losetup_all(void)
{
        FILE *f = popen("losetup -a 2>/dev/null", "r");
        assert_non_null(f);
        char *out = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&out, &len);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
                fwrite(buf, 1, n, m);
        fclose(m);
        pclose(f);
        return out;
}

/* Lines of text containing needle. */
static int count_lines(const char *text, const char *needle)
{
        int n = 0;
        for (const char *l = text; l && *l;) {
                const char *e = strchr(l, '\n');
                size_t len = e ? (size_t)(e - l) : strlen(l);
                if (memmem(l, len, needle, strlen(needle)))
                        n++;
                l = e ? e + 1 : NULL;
        }
        return n;
}

static int mounts_at(const char *path)
{
        char *m = read_text("/proc/self/mounts");
        char needle[256];
        snprintf(needle, sizeof(needle), " %s ", path);
        int n = count_lines(m, needle);
        free(m);
        return n;
}

static int loops_of(const char *dir)
{
        char *l = losetup_all();
        int n = count_lines(l, dir);
        free(l);
        return n;
}

/* Write bytes to a new file and fsync it: 0 or the first -errno (write, fsync or close). */
static int write_file(const char *path, uint64_t bytes)
{
        static char buf[1 << 20];
        memset(buf, 0xa5, sizeof(buf));
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        int r = 0;
        for (uint64_t done = 0; done < bytes;) {
                ssize_t n = write(fd, buf, (size_t)(bytes - done < sizeof(buf) ? bytes - done : sizeof(buf)));
                if (n < 0) {
                        r = -errno;
                        break;
                }
                done += (uint64_t)n;
        }
        if (r == 0 && fsync(fd) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        return r;
}

static void expect_quota_error(int r, const char *what)
{
        if (r != -EDQUOT && r != -ENOSPC)
                fail_msg("%s: want EDQUOT or ENOSPC, got %d (%s)", what, r, strerror(-r));
        print_message("%s: %s\n", what, r == -EDQUOT ? "EDQUOT" : "ENOSPC");
}

static void usage_of(const char *id, uint64_t *used, uint64_t *limit)
{
        struct berr *err = NULL;
        if (cell_disk_usage(T.disk, id, used, limit, &err) < 0)
                fail_msg("usage %s: %s", id, berr_msg(err));
}

static char *create(const char *id, uint64_t limit)
{
        struct berr *err = NULL;
        char *path = NULL;
        if (cell_disk_create(T.disk, id, limit, &path, &err) < 0)
                fail_msg("create %s: %s", id, berr_msg(err));
        return path;
}

static void remove_ok(const char *id)
{
        struct berr *err = NULL;
        if (cell_disk_remove(T.disk, id, &err) < 0)
                fail_msg("remove %s: %s", id, berr_msg(err));
}

static void need_disk(void)
{
        if (!T.disk)
                fail_msg("no pool (the open test failed)");
}

static void join(char *out, size_t size, const char *a, const char *b)
{
        assert_true((size_t)snprintf(out, size, "%s/%s", a, b) < size);
}

/* ---- tests ---- */

static void test_open_fresh_then_again(void **state)
{
        (void)state;
        struct berr *err = NULL;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (cell_disk_open(T.data, POOL_BYTES, &T.disk, &err) < 0)
                fail_msg("open: %s", berr_msg(err));
        print_message("open on a fresh data dir: %.1f ms\n", ms_since(&t0));
        char img[256];
        snprintf(img, sizeof(img), "%s/cell/disk.img", T.data);
        struct stat st;
        assert_int_equal(stat(img, &st), 0);
        assert_int_equal((uint64_t)st.st_size, POOL_BYTES);
        assert_true((uint64_t)st.st_blocks * 512 < 32 * MIB); /* sparse */
        struct statfs sfs;
        assert_int_equal(statfs(T.pool, &sfs), 0);
        assert_true((unsigned long)sfs.f_type == (unsigned long)BTRFS_SUPER_MAGIC);
        assert_int_equal(mounts_at(T.pool), 1);
        assert_int_equal(loops_of(img), 1);
        /* nosuid, nodev: host users must not run the containers' setuid files from the pool. */
        struct statvfs svfs;
        assert_int_equal(statvfs(T.pool, &svfs), 0);
        assert_int_equal(svfs.f_flag & (ST_NOSUID | ST_NODEV), ST_NOSUID | ST_NODEV);

        struct cell_disk *again = NULL;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (cell_disk_open(T.data, POOL_BYTES, &again, &err) < 0)
                fail_msg("open again: %s", berr_msg(err));
        print_message("open again (mounted): %.2f ms\n", ms_since(&t0));
        cell_disk_close(again);
        assert_int_equal(mounts_at(T.pool), 1);
        assert_int_equal(loops_of(img), 1);
}

static void test_concurrent_opens_from_processes(void **state)
{
        (void)state;
        char data[128], pool[192], img[192];
        join(data, sizeof(data), T.top, "concurrent");
        join(pool, sizeof(pool), data, "cell/disk");
        join(img, sizeof(img), data, "cell/disk.img");
        pid_t kids[N_OPENERS];
        for (int i = 0; i < N_OPENERS; i++) {
                kids[i] = fork();
                assert_true(kids[i] >= 0);
                if (kids[i] == 0) {
                        struct cell_disk *d = NULL;
                        struct berr *err = NULL;
                        int r = cell_disk_open(data, 0, &d, &err);
                        if (r < 0)
                                fprintf(stderr, "opener %d: %s\n", i, berr_msg(err));
                        cell_disk_close(d);
                        _exit(r < 0 ? 1 : 0);
                }
        }
        int failed = 0;
        for (int i = 0; i < N_OPENERS; i++) {
                int st;
                assert_int_equal(waitpid(kids[i], &st, 0), kids[i]);
                failed += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        int mounts = mounts_at(pool), loops = loops_of(img);
        struct stat st;
        int have_img = stat(img, &st);
        struct berr *err = NULL;
        int td = cell_disk_teardown(data, &err);
        if (td < 0)
                fail_msg("teardown: %s", berr_msg(err));
        assert_int_equal(failed, 0);
        assert_int_equal(mounts, 1);
        assert_int_equal(loops, 1);
        assert_int_equal(have_img, 0);
        assert_int_equal((uint64_t)st.st_size, UINT64_C(64) << 30); /* the default size */
        assert_true((uint64_t)st.st_blocks * 512 < 64 * MIB);
        assert_int_equal(mounts_at(pool), 0);
        assert_int_equal(loops_of(img), 0);
        assert_int_equal(access(img, F_OK), -1);
        assert_int_equal(access(pool, F_OK), -1);
}

static void test_limit_enforced(void **state)
{
        (void)state;
        need_disk();
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        char *path = create("c1", 32 * MIB);
        print_message("create: %.2f ms\n", ms_since(&t0));
        char want[256];
        join(want, sizeof(want), T.pool, "containers/c1");
        assert_string_equal(path, want);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_ino, 256); /* a subvolume's root */
        assert_int_equal(st.st_mode & 07777, 0700);
        assert_int_equal(st.st_uid, 0);

        char f[256], g[256];
        join(f, sizeof(f), path, "f16");
        join(g, sizeof(g), path, "g");
        assert_int_equal(write_file(f, 16 * MIB), 0);
        uint64_t used, limit;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        usage_of("c1", &used, &limit);
        print_message("usage after writing 16 MiB: %llu bytes (%.2f ms)\n", (unsigned long long)used,
                      ms_since(&t0));
        assert_int_equal(limit, 32 * MIB);
        assert_true(used >= 16 * MIB && used < 17 * MIB);

        expect_quota_error(write_file(g, 32 * MIB), "write past the limit");
        usage_of("c1", &used, &limit);
        assert_true(used <= 32 * MIB);
        assert_true(used > 24 * MIB);
        /* Deleting gives the space back. */
        assert_int_equal(unlink(g), 0);
        usage_of("c1", &used, &limit);
        assert_true(used >= 16 * MIB && used < 17 * MIB);
        assert_int_equal(write_file(g, 8 * MIB), 0);
        assert_int_equal(unlink(g), 0);
        free(path);
}

/* In a child running as the containers' root: results of the writes through the overlay at merged. */
static void overlay_child(int fd, const char *merged)
{
        int res[3] = { 1, 1, 1 };
        char p[256];
        if (setgroups(0, NULL) < 0 || setresgid(CONTAINER_ROOT, CONTAINER_ROOT, CONTAINER_ROOT) < 0 ||
            setresuid(CONTAINER_ROOT, CONTAINER_ROOT, CONTAINER_ROOT) < 0)
                _exit(2);
        snprintf(p, sizeof(p), "%s/under", merged);
        res[0] = write_file(p, 4 * MIB);
        snprintf(p, sizeof(p), "%s/over", merged);
        res[1] = write_file(p, 8 * MIB);
        /* Opening a lower file for writing copies it up into the subvolume: 12 MiB do not fit either. */
        snprintf(p, sizeof(p), "%s/big", merged);
        int wfd = open(p, O_WRONLY | O_CLOEXEC);
        res[2] = wfd < 0 ? -errno : 0;
        if (wfd >= 0)
                close(wfd);
        _exit(write(fd, res, sizeof(res)) == sizeof(res) ? 0 : 3);
}

static void test_overlay_through_subvolume(void **state)
{
        (void)state;
        need_disk();
        char lower[128], big[160], small[160];
        join(lower, sizeof(lower), T.top, "lower");
        join(big, sizeof(big), lower, "big");
        join(small, sizeof(small), lower, "small");
        assert_int_equal(mkdir(lower, 0755), 0);
        assert_int_equal(write_file(big, 12 * MIB), 0);
        assert_int_equal(chown(big, CONTAINER_ROOT, CONTAINER_ROOT), 0);
        assert_int_equal(write_file(small, 4096), 0);

        char *base = create("ov", 8 * MIB);
        /* What store_rootfs_create() makes under upper_base. */
        char upper[256], work[256];
        join(upper, sizeof(upper), base, "upper");
        join(work, sizeof(work), base, "work");
        assert_int_equal(mkdir(upper, 0755), 0);
        assert_int_equal(mkdir(work, 0700), 0);
        assert_int_equal(chown(upper, CONTAINER_ROOT, CONTAINER_ROOT), 0);
        assert_int_equal(mkdir(T.merged, 0755), 0);
        char opts[1024];
        snprintf(opts, sizeof(opts),
                 "lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,metacopy=off,index=off", lower, upper,
                 work);
        if (mount("overlay", T.merged, "overlay", MS_NOSUID | MS_NODEV, opts) < 0)
                fail_msg("mount overlay: %s", strerror(errno));

        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
                overlay_child(p[1], T.merged);
        close(p[1]);
        int res[3] = { 1, 1, 1 };
        ssize_t n = read(p[0], res, sizeof(res));
        close(p[0]);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        assert_int_equal(n, sizeof(res));
        assert_int_equal(res[0], 0);
        expect_quota_error(res[1], "overlay: write past the limit");
        expect_quota_error(res[2], "overlay: copy-up past the limit");
        uint64_t used, limit;
        usage_of("ov", &used, &limit);
        assert_true(used >= 4 * MIB && used <= 8 * MIB);
        /* The writes landed in the subvolume, owned by the containers' root; the lower is untouched. */
        char under[300];
        join(under, sizeof(under), upper, "under");
        struct stat sb;
        assert_int_equal(stat(under, &sb), 0);
        assert_int_equal(sb.st_uid, CONTAINER_ROOT);
        assert_int_equal(sb.st_size, 4 * MIB);
        assert_int_equal(stat(big, &sb), 0);
        assert_int_equal(sb.st_size, 12 * MIB);

        assert_int_equal(umount2(T.merged, 0), 0);
        assert_int_equal(rmdir(T.merged), 0);
        /* Files of another uid and overlay's work dir (mode 0 inside): deleting the subvolume takes all. */
        remove_ok("ov");
        assert_int_equal(access(base, F_OK), -1);
        assert_int_equal(errno, ENOENT);
        free(base);
}

static void test_no_limit_counts_usage(void **state)
{
        (void)state;
        need_disk();
        char *path = create("free", 0);
        char f[256];
        join(f, sizeof(f), path, "f");
        assert_int_equal(write_file(f, 40 * MIB), 0);
        uint64_t used, limit;
        usage_of("free", &used, &limit);
        assert_int_equal(limit, 0);
        assert_true(used >= 40 * MIB && used < 41 * MIB);
        remove_ok("free");
        free(path);
}

static void subvol_ids(const char *path, uint64_t *subvol, char fsid[37])
{
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(fd >= 0);
        struct btrfs_ioctl_ino_lookup_args info;
        memset(&info, 0, sizeof(info));
        info.objectid = BTRFS_FIRST_FREE_OBJECTID;
        if (ioctl(fd, BTRFS_IOC_INO_LOOKUP, &info) < 0)
                fail_msg("BTRFS_IOC_INO_LOOKUP %s: %s", path, strerror(errno));
        struct btrfs_ioctl_fs_info_args fi;
        memset(&fi, 0, sizeof(fi));
        assert_int_equal(ioctl(fd, BTRFS_IOC_FS_INFO, &fi), 0);
        close(fd);
        *subvol = info.treeid;
        const unsigned char *u = fi.fsid;
        snprintf(fsid, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                 u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

static void test_remove_is_idempotent_and_drops_the_qgroup(void **state)
{
        (void)state;
        need_disk();
        char *path = create("gone", 16 * MIB);
        char f[256];
        join(f, sizeof(f), path, "f");
        assert_int_equal(write_file(f, 2 * MIB), 0);
        uint64_t subvol;
        char fsid[37], qg[160];
        subvol_ids(path, &subvol, fsid);
        snprintf(qg, sizeof(qg), "/sys/fs/btrfs/%s/qgroups/0_%llu", fsid, (unsigned long long)subvol);
        bool sysfs = access(qg, F_OK) == 0;

        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        remove_ok("gone");
        print_message("remove: %.2f ms\n", ms_since(&t0));
        assert_int_equal(access(path, F_OK), -1);
        remove_ok("gone");
        struct berr *err = NULL;
        uint64_t used, limit;
        assert_int_equal(cell_disk_usage(T.disk, "gone", &used, &limit, &err), -ENOENT);
        berr_free(err);
        err = NULL;
        /* The id can be used again: a new subvolume with a new qgroup, empty. */
        char *again = create("gone", 16 * MIB);
        usage_of("gone", &used, &limit);
        assert_true(used < MIB);
        assert_int_equal(limit, 16 * MIB);
        remove_ok("gone");

        /* The qgroup of the first one goes once the cleaner has dropped its tree (awaited, with a deadline).
         */
        if (!sysfs) {
                print_message("no qgroups in sysfs: qgroup removal not checked\n");
        } else {
                int fd = open(T.pool, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                assert_true(fd >= 0);
                clock_gettime(CLOCK_MONOTONIC, &t0);
                while (access(qg, F_OK) == 0 && ms_since(&t0) < QGROUP_WAIT_MS) {
                        assert_int_equal(ioctl(fd, BTRFS_IOC_SYNC), 0);
                        struct timespec pause = { 0, 10 * 1000 * 1000 };
                        nanosleep(&pause, NULL);
                }
                close(fd);
                print_message("qgroup 0/%llu gone after %.0f ms\n", (unsigned long long)subvol,
                              ms_since(&t0));
                assert_int_equal(access(qg, F_OK), -1);
        }
        free(again);
        free(path);
}

static void test_containers_are_independent(void **state)
{
        (void)state;
        need_disk();
        char *a = create("a", 8 * MIB), *b = create("b", 8 * MIB);
        char fa[256], fb[256];
        join(fa, sizeof(fa), a, "f");
        join(fb, sizeof(fb), b, "f");
        expect_quota_error(write_file(fa, 16 * MIB), "a past its limit");
        assert_int_equal(write_file(fb, 6 * MIB), 0);
        uint64_t ua, ub, la, lb;
        usage_of("a", &ua, &la);
        usage_of("b", &ub, &lb);
        assert_true(ua > 6 * MIB && ua <= 8 * MIB);
        assert_true(ub >= 6 * MIB && ub < 7 * MIB);
        remove_ok("a");
        usage_of("b", &ub, &lb);
        assert_true(ub >= 6 * MIB && ub < 7 * MIB);
        assert_int_equal(lb, 8 * MIB);
        struct stat st;
        assert_int_equal(stat(fb, &st), 0);
        assert_int_equal(st.st_size, 6 * MIB);
        remove_ok("b");
        free(a);
        free(b);
}

static void test_ids(void **state)
{
        (void)state;
        need_disk();
        static const char *const bad[] = {
                "",    ".",
                "..",  ".hidden",
                "-x",  "a/b",
                "a b", "../x",
                "x\n", "0123456789012345678901234567890123456789012345678901234567890123456789", /* 70 */
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                struct berr *err = NULL;
                char *path = NULL;
                uint64_t u, l;
                assert_int_equal(cell_disk_create(T.disk, bad[i], 0, &path, &err), -EINVAL);
                assert_non_null(strstr(berr_msg(err), "invalid container id"));
                berr_free(err);
                assert_null(path);
                assert_int_equal(cell_disk_usage(T.disk, bad[i], &u, &l, NULL), -EINVAL);
                assert_int_equal(cell_disk_remove(T.disk, bad[i], NULL), -EINVAL);
        }
        const char *longest = "abcdefABCDEF0123456789_.-abcdefABCDEF0123456789_.-0123456789abcd"; /* 64 */
        assert_int_equal(strlen(longest), 64);
        char *p = create(longest, MIB);
        struct berr *err = NULL;
        char *dup = NULL;
        assert_int_equal(cell_disk_create(T.disk, longest, MIB, &dup, &err), -EEXIST);
        assert_null(dup);
        berr_free(err);
        remove_ok(longest);
        free(p);
}

static void test_data_dir_on_btrfs(void **state)
{
        (void)state;
        need_disk();
        /* A data dir inside the pool is on btrfs: no image, no loop device, subvolumes right there. */
        char data[256], pool[300], img[300];
        join(data, sizeof(data), T.pool, "native");
        join(pool, sizeof(pool), data, "cell/disk");
        join(img, sizeof(img), data, "cell/disk.img");
        struct berr *err = NULL;
        struct cell_disk *d = NULL;
        if (cell_disk_open(data, POOL_BYTES, &d, &err) < 0)
                fail_msg("open: %s", berr_msg(err));
        assert_int_equal(access(img, F_OK), -1);
        assert_int_equal(mounts_at(pool), 0);
        char *path = NULL;
        if (cell_disk_create(d, "n1", 4 * MIB, &path, &err) < 0)
                fail_msg("create: %s", berr_msg(err));
        char f[400];
        join(f, sizeof(f), path, "f");
        int w = write_file(f, 8 * MIB);
        uint64_t used = 0, limit = 0;
        int u = cell_disk_usage(d, "n1", &used, &limit, &err);
        cell_disk_close(d);
        int t = cell_disk_teardown(data, &err);
        if (t < 0)
                fail_msg("teardown: %s", berr_msg(err));
        expect_quota_error(w, "data dir on btrfs: write past the limit");
        assert_int_equal(u, 0);
        assert_int_equal(limit, 4 * MIB);
        assert_true(used > 2 * MIB && used <= 4 * MIB);
        assert_int_equal(access(path, F_OK), -1);
        assert_int_equal(access(pool, F_OK), -1);
        free(path);
        assert_int_equal(fs_rm_rf_at(AT_FDCWD, data), 0);
}

static void test_reopen_after_unmount_finds_subvolumes(void **state)
{
        (void)state;
        need_disk();
        uint64_t used0, limit0, used, limit;
        usage_of("c1", &used0, &limit0);
        char img[256];
        join(img, sizeof(img), T.data, "cell/disk.img");
        cell_disk_close(T.disk);
        T.disk = NULL;
        /* As after a reboot: no mount, and (autoclear) no loop device. */
        assert_int_equal(umount2(T.pool, 0), 0);
        assert_int_equal(mounts_at(T.pool), 0);
        assert_int_equal(loops_of(img), 0);
        struct berr *err = NULL;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (cell_disk_open(T.data, POOL_BYTES, &T.disk, &err) < 0)
                fail_msg("open: %s", berr_msg(err));
        print_message("open after unmount (attach + mount): %.1f ms\n", ms_since(&t0));
        assert_int_equal(mounts_at(T.pool), 1);
        assert_int_equal(loops_of(img), 1);
        usage_of("c1", &used, &limit);
        assert_int_equal(used, used0);
        assert_int_equal(limit, 32 * MIB);
        char f[256];
        join(f, sizeof(f), T.pool, "containers/c1/f16");
        struct stat st;
        assert_int_equal(stat(f, &st), 0);
        assert_int_equal(st.st_size, 16 * MIB);
        /* Still enforced. */
        char g[256];
        join(g, sizeof(g), T.pool, "containers/c1/g");
        expect_quota_error(write_file(g, 20 * MIB), "after re-open: write past the limit");
        assert_int_equal(unlink(g), 0);
}

/* The image still bound to a loop device (attached by hand, without autoclear) but not mounted: re-open
 * mounts that device rather than attaching a second one, and teardown detaches it (LOOP_CLR_FD). */
static void test_reopen_reuses_a_bound_loop_device(void **state)
{
        (void)state;
        need_disk();
        char img[256], cmd[400];
        join(img, sizeof(img), T.data, "cell/disk.img");
        cell_disk_close(T.disk);
        T.disk = NULL;
        assert_int_equal(umount2(T.pool, 0), 0);
        assert_int_equal(loops_of(img), 0);
        snprintf(cmd, sizeof(cmd), "losetup -f %s", img);
        assert_int_equal(system(cmd), 0);
        assert_int_equal(loops_of(img), 1);
        struct berr *err = NULL;
        if (cell_disk_open(T.data, POOL_BYTES, &T.disk, &err) < 0)
                fail_msg("open: %s", berr_msg(err));
        assert_int_equal(mounts_at(T.pool), 1);
        assert_int_equal(loops_of(img), 1);
        uint64_t used, limit;
        usage_of("c1", &used, &limit);
        assert_int_equal(limit, 32 * MIB);
}

static void test_mounted_pool_not_btrfs(void **state)
{
        (void)state;
        char data[128];
        join(data, sizeof(data), T.top, "notbtrfs");
        assert_int_equal(fs_mkdir_p_at(AT_FDCWD, T.notbtrfs, 0700), 0);
        assert_int_equal(mount("tmpfs", T.notbtrfs, "tmpfs", 0, "size=1m"), 0);
        struct berr *err = NULL;
        struct cell_disk *d = NULL;
        int r = cell_disk_open(data, POOL_BYTES, &d, &err);
        assert_int_equal(umount2(T.notbtrfs, 0), 0);
        assert_int_equal(r, -EMEDIUMTYPE);
        assert_null(d);
        assert_non_null(strstr(berr_msg(err), "is mounted but not btrfs"));
        assert_non_null(strstr(berr_msg(err), T.notbtrfs));
        berr_free(err);
        assert_int_equal(fs_rm_rf_at(AT_FDCWD, data), 0);
}

static void test_mkfs_failure_is_reported(void **state)
{
        (void)state;
        char data[128], cell[160];
        join(data, sizeof(data), T.top, "toosmall");
        join(cell, sizeof(cell), data, "cell");
        struct berr *err = NULL;
        struct cell_disk *d = NULL;
        int r = cell_disk_open(data, 16 * MIB, &d, &err);
        assert_int_equal(r, -EIO);
        assert_null(d);
        print_message("%s\n", berr_msg(err));
        assert_non_null(strstr(berr_msg(err), "mkfs.btrfs failed: "));
        assert_non_null(strstr(berr_msg(err), "too small"));
        berr_free(err);
        char p[256];
        join(p, sizeof(p), cell, "disk.img");
        assert_int_equal(access(p, F_OK), -1);
        join(p, sizeof(p), cell, "disk.img.tmp");
        assert_int_equal(access(p, F_OK), -1);
        assert_int_equal(loops_of(data), 0);
        assert_int_equal(cell_disk_teardown(data, NULL), 0);
        assert_int_equal(fs_rm_rf_at(AT_FDCWD, data), 0);
}

/* Lines of a missing from b, printed; returns how many of them mention needle (NULL: all of them). */
static int diff_lines(const char *what, const char *a, const char *b, const char *needle)
{
        int n = 0;
        for (const char *l = a; l && *l;) {
                const char *e = strchr(l, '\n');
                size_t len = e ? (size_t)(e - l) : strlen(l);
                bool found = false;
                for (const char *m = b; m && *m && !found;) {
                        const char *f = strchr(m, '\n');
                        size_t mlen = f ? (size_t)(f - m) : strlen(m);
                        found = mlen == len && memcmp(l, m, len) == 0;
                        m = f ? f + 1 : NULL;
                }
                if (!found) {
                        print_message("%s: %.*s\n", what, (int)len, l);
                        if (!needle || memmem(l, len, needle, strlen(needle)))
                                n++;
                }
                l = e ? e + 1 : NULL;
        }
        return n;
}

static void test_teardown_restores_mounts_and_loops(void **state)
{
        (void)state;
        cell_disk_close(T.disk);
        T.disk = NULL;
        struct berr *err = NULL;
        if (cell_disk_teardown(T.data, &err) < 0)
                fail_msg("teardown: %s", berr_msg(err));
        char *mounts = read_text("/proc/self/mounts");
        char *loops = losetup_all();
        /*
         * Our own mount namespace: nothing can be added from outside; a copy of another process's mount goes
         * away here too when that process deletes its mount point (the kernel detaches mounts on a deleted
         * dentry in every namespace), so only mounts under our directory must not go.
         */
        assert_int_equal(diff_lines("mount added", mounts, T.mounts, NULL), 0);
        assert_int_equal(diff_lines("mount gone", T.mounts, mounts, T.top), 0);
        /* Loop devices are global: exactly as before, except for what other processes did meanwhile. */
        assert_int_equal(diff_lines("loop device added", loops, T.loops, T.top), 0);
        assert_int_equal(diff_lines("loop device gone", T.loops, loops, T.top), 0);
        assert_int_equal(count_lines(loops, T.top), 0);
        char p[256];
        join(p, sizeof(p), T.data, "cell/disk.img");
        assert_int_equal(access(p, F_OK), -1);
        assert_int_equal(access(T.pool, F_OK), -1);
        assert_int_equal(cell_disk_teardown(T.data, NULL), 0);
        free(mounts);
        free(loops);
}

/* ---- fixture ---- */

/* After the overlay test, also when it failed: later tests unmount the pool. */
static int unmount_overlay(void **state)
{
        (void)state;
        umount2(T.merged, MNT_DETACH);
        return 0;
}

static int setup(void **state)
{
        (void)state;
        snprintf(T.top, sizeof(T.top), "/tmp/berth-test-disk-XXXXXX");
        /* Traversable: the overlay test writes as the containers' root, as the store's 0710 dirs allow. */
        if (!mkdtemp(T.top) || chmod(T.top, 0711) < 0)
                return -1;
        join(T.data, sizeof(T.data), T.top, "data");
        join(T.pool, sizeof(T.pool), T.data, "cell/disk");
        join(T.merged, sizeof(T.merged), T.top, "merged");
        join(T.notbtrfs, sizeof(T.notbtrfs), T.top, "notbtrfs/cell/disk");
        char *buf = NULL;
        size_t len = 0;
        if (fs_read_file_at(AT_FDCWD, "/proc/self/mounts", 1 << 22, &buf, &len) < 0)
                return -1;
        T.mounts = buf;
        T.loops = losetup_all();
        return 0;
}

/* Everything, whatever failed: unmount, tear the pools down, delete the files. */
static int teardown(void **state)
{
        (void)state;
        cell_disk_close(T.disk);
        T.disk = NULL;
        umount2(T.merged, MNT_DETACH);
        umount2(T.notbtrfs, MNT_DETACH);
        static const char *const dirs[] = { "data/cell/disk/native", "data", "concurrent", "toosmall" };
        for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
                char d[256];
                join(d, sizeof(d), T.top, dirs[i]);
                cell_disk_teardown(d, NULL);
                /* Still mounted (teardown broken): rm -rf below would not cross into it. */
                char pool[300];
                join(pool, sizeof(pool), d, "cell/disk");
                umount2(pool, MNT_DETACH);
        }
        /* A loop device of ours left bound (code under test broken): detach it, it outlives the test. */
        char *loops = losetup_all();
        for (const char *l = loops; l && *l;) {
                const char *e = strchr(l, '\n');
                size_t len = e ? (size_t)(e - l) : strlen(l);
                const char *colon = memchr(l, ':', len);
                if (colon && memmem(l, len, T.top, strlen(T.top))) {
                        char cmd[64];
                        snprintf(cmd, sizeof(cmd), "losetup -d %.*s", (int)(colon - l), l);
                        if (system(cmd) != 0)
                                print_message("%s failed\n", cmd);
                }
                l = e ? e + 1 : NULL;
        }
        free(loops);
        fs_rm_rf_at(AT_FDCWD, T.top);
        free(T.mounts);
        free(T.loops);
        return 0;
}

int main(void)
{
        if (geteuid() != 0) {
                printf("1..0 # SKIP needs root\n");
                return 77;
        }
        char *fs = NULL;
        size_t len = 0;
        bool have_btrfs = fs_read_file_at(AT_FDCWD, "/proc/filesystems", 1 << 16, &fs, &len) == 0 &&
                          strstr(fs, "\tbtrfs\n");
        free(fs);
        if (!have_btrfs || access("/dev/loop-control", F_OK) < 0 ||
            (access("/usr/sbin/mkfs.btrfs", X_OK) < 0 && access("/sbin/mkfs.btrfs", X_OK) < 0)) {
                printf("1..0 # SKIP needs btrfs, mkfs.btrfs and loop devices\n");
                return 77;
        }
        /* A private mount namespace: our mounts are ours alone and die with this process. */
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                printf("1..0 # SKIP no private mount namespace: %s\n", strerror(errno));
                return 77;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_open_fresh_then_again),
                cmocka_unit_test(test_concurrent_opens_from_processes),
                cmocka_unit_test(test_limit_enforced),
                cmocka_unit_test_teardown(test_overlay_through_subvolume, unmount_overlay),
                cmocka_unit_test(test_no_limit_counts_usage),
                cmocka_unit_test(test_remove_is_idempotent_and_drops_the_qgroup),
                cmocka_unit_test(test_containers_are_independent),
                cmocka_unit_test(test_ids),
                cmocka_unit_test(test_data_dir_on_btrfs),
                cmocka_unit_test(test_reopen_after_unmount_finds_subvolumes),
                cmocka_unit_test(test_reopen_reuses_a_bound_loop_device),
                cmocka_unit_test(test_mounted_pool_not_btrfs),
                cmocka_unit_test(test_mkfs_failure_is_reported),
                cmocka_unit_test(test_teardown_restores_mounts_and_loops),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
