/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <fcntl.h>
#include <stdbool.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lib/fs.h"

int fs_openat2(int dirfd, const char *path, int flags, mode_t mode, uint64_t resolve)
{
        struct open_how how = {
                .flags = (uint64_t)(flags | O_CLOEXEC),
                .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
                .resolve = resolve,
        };
        for (;;) {
                long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
                if (fd >= 0)
                        return (int)fd;
                if (errno != EINTR && errno != EAGAIN)
                        return -errno;
        }
}

int fs_open_dir_in_root(int dirfd, const char *path)
{
        return fs_openat2(dirfd, path, O_RDONLY | O_DIRECTORY, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
}

int fs_mkdir_p_at(int dirfd, const char *path, mode_t mode)
{
        _cleanup_free_ char *p = xstrdup(path);
        _cleanup_close_ int cur = -1;
        int at = dirfd;
        if (path[0] == '/') {
                cur = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (cur < 0)
                        return -errno;
                at = cur;
        }
        char *save = NULL;
        for (char *c = strtok_r(p, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                if (strcmp(c, ".") == 0)
                        continue;
                if (strcmp(c, "..") == 0)
                        return -EINVAL;
                if (mkdirat(at, c, mode) < 0 && errno != EEXIST)
                        return -errno;
                int nfd = openat(at, c, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (nfd < 0)
                        return -errno;
                closep(&cur);
                cur = nfd;
                at = cur;
        }
        return 0;
}

static int rm_rf_children(int dfd, dev_t dev)
{
        DIR *d = fdopendir(dfd);
        if (!d) {
                int r = -errno;
                close(dfd);
                return r;
        }
        int ret = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno != ENOENT)
                                ret = ret ? ret : -errno;
                        continue;
                }
                if (S_ISDIR(st.st_mode)) {
                        if (st.st_dev != dev) {
                                ret = ret ? ret : -EXDEV; /* a mount point: never descend */
                                continue;
                        }
                        int cfd =
                            openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (cfd < 0) {
                                ret = ret ? ret : -errno;
                                continue;
                        }
                        int r = rm_rf_children(cfd, dev);
                        if (r < 0 && !ret)
                                ret = r;
                        if (unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT && !ret)
                                ret = -errno;
                } else if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT && !ret) {
                        ret = -errno;
                }
        }
        closedir(d);
        return ret;
}

int fs_clear_dir(int dfd)
{
        struct stat st;
        if (fstat(dfd, &st) < 0)
                return -errno;
        int c = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c < 0)
                return -errno;
        return rm_rf_children(c, st.st_dev);
}

int fs_rm_rf_at(int dirfd, const char *path)
{
        struct stat st;
        if (fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(st.st_mode))
                return unlinkat(dirfd, path, 0) < 0 && errno != ENOENT ? -errno : 0;
        int cfd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (cfd < 0)
                return -errno;
        int r = rm_rf_children(cfd, st.st_dev);
        if (r < 0)
                return r;
        if (unlinkat(dirfd, path, AT_REMOVEDIR) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

int fs_read_fd(int fd, size_t max, char **ret_data, size_t *ret_len)
{
        size_t cap = 4096, len = 0;
        _cleanup_free_ char *buf = xmalloc(cap + 1);
        for (;;) {
                if (len == cap) {
                        if (cap > max)
                                return -EFBIG;
                        cap *= 2;
                        buf = xrealloc(buf, cap + 1);
                }
                ssize_t n = read(fd, buf + len, cap - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
                if (len > max)
                        return -EFBIG;
        }
        buf[len] = '\0';
        if (ret_len)
                *ret_len = len;
        *ret_data = TAKE_PTR(buf);
        return 0;
}

int fs_read_file_at(int dirfd, const char *path, size_t max, char **ret_data, size_t *ret_len)
{
        _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return -errno;
        return fs_read_fd(fd, max, ret_data, ret_len);
}

int fs_write_all(int fd, const void *buf, size_t len)
{
        const char *p = buf;
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

void fs_random_hex(char *out, size_t n)
{
        unsigned char b[32];
        static const char hex[] = "0123456789abcdef";
        n = MIN(n, sizeof(b));
        if (getrandom(b, n, 0) != (ssize_t)n)
                abort();
        for (size_t i = 0; i < n; i++) {
                out[2 * i] = hex[b[i] >> 4];
                out[2 * i + 1] = hex[b[i] & 15];
        }
        out[2 * n] = '\0';
}

int fs_fsync_dir_at(int dirfd, const char *path)
{
        _cleanup_close_ int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return fsync(fd) < 0 ? -errno : 0;
}

static int write_replace(int dirfd, const char *path, const void *data, size_t len, mode_t mode, bool durable)
{
        char rnd[17];
        fs_random_hex(rnd, 8);
        _cleanup_free_ char *tmp = xasprintf("%s.tmp-%s", path, rnd);
        _cleanup_close_ int fd =
            openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;
        int r = fs_write_all(fd, data, len);
        if (r == 0 && durable && fsync(fd) < 0)
                r = -errno;
        if (r == 0 && renameat(dirfd, tmp, dirfd, path) < 0)
                r = -errno;
        if (r < 0) {
                unlinkat(dirfd, tmp, 0);
                return r;
        }
        if (!durable)
                return 0;
        _cleanup_free_ char *dir = xstrdup(path);
        char *slash = strrchr(dir, '/');
        if (slash)
                *slash = '\0';
        return fs_fsync_dir_at(dirfd, slash ? dir : ".");
}

int fs_write_file_atomic_at(int dirfd, const char *path, const void *data, size_t len, mode_t mode)
{
        return write_replace(dirfd, path, data, len, mode, true);
}

int fs_write_file_replace_at(int dirfd, const char *path, const void *data, size_t len, mode_t mode)
{
        return write_replace(dirfd, path, data, len, mode, false);
}

static int du_walk(int dfd, uint64_t *acc)
{
        DIR *d = fdopendir(dfd);
        if (!d) {
                close(dfd);
                return -errno;
        }
        struct dirent *de;
        int ret = 0;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (S_ISREG(st.st_mode) && (st.st_nlink == 1 || st.st_nlink > 1))
                        *acc += st.st_nlink > 1 ? (uint64_t)st.st_size / st.st_nlink : (uint64_t)st.st_size;
                else if (S_ISDIR(st.st_mode)) {
                        int c = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (c >= 0) {
                                int r = du_walk(c, acc);
                                if (r < 0 && !ret)
                                        ret = r;
                        }
                }
        }
        closedir(d);
        return ret;
}

int fs_disk_usage_at(int dirfd, const char *path, uint64_t *ret_bytes)
{
        int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        uint64_t acc = 0;
        int r = du_walk(fd, &acc);
        *ret_bytes = acc;
        return r;
}
