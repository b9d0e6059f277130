/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `berth image export`: the image's merged filesystem, with the image's own ownership, into a directory
 * or a tar. The layers are overlay-mounted read-only in a child process with a private mount namespace,
 * so the mount can never outlive the export, whatever happens to the process.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "image/idmap.h"
#include "image/store_internal.h"
#include "lib/fs.h"
#include "lib/json.h"

#define XATTR_LIST_MAX_BYTES 65536
#define COPY_CHUNK           (1 << 20)

struct inode_seen {
        dev_t dev;
        ino_t ino;
        char *path;
};

struct exporter {
        bool to_tar;
        struct archive *ar; /* tar */
        int dest_fd;        /* directory */
        struct inode_seen *seen;
        size_t n_seen, cap_seen;
        char *buf;
        struct berr **err;
};

/* A v3 (namespaced) file capability whose root is berth's container root becomes a plain v2 again. */
static size_t unshift_capability(char *val, size_t len)
{
        if (len != sizeof(struct vfs_ns_cap_data))
                return len;
        struct vfs_ns_cap_data cap;
        memcpy(&cap, val, sizeof(cap));
        if ((le32toh(cap.magic_etc) & VFS_CAP_REVISION_MASK) != VFS_CAP_REVISION_3 ||
            le32toh(cap.rootid) != idmap_to_host(0))
                return len;
        struct vfs_cap_data v2;
        v2.magic_etc = htole32((le32toh(cap.magic_etc) & ~VFS_CAP_REVISION_MASK) | VFS_CAP_REVISION_2);
        memcpy(v2.data, cap.data, sizeof(v2.data));
        memcpy(val, &v2, sizeof(v2));
        return sizeof(v2);
}

struct xattr_list {
        size_t n;
        char *names[256];
        char *values[256];
        size_t lens[256];
};

static void xattr_list_free(struct xattr_list *x)
{
        for (size_t i = 0; i < x->n; i++) {
                free(x->names[i]);
                free(x->values[i]);
        }
        x->n = 0;
}

/* Read the xattrs of dirfd/name without following a final symlink. */
static int read_xattrs(int dirfd, const char *name, struct xattr_list *x)
{
        char path[64 + NAME_MAX];
        snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dirfd, name);
        char list[XATTR_LIST_MAX_BYTES];
        ssize_t n = llistxattr(path, list, sizeof(list));
        if (n < 0)
                return errno == ENOTSUP ? 0 : -errno;
        for (char *k = list; k < list + n && x->n < ARRAY_SIZE(x->names); k += strlen(k) + 1) {
                if (strncmp(k, "trusted.overlay.", 16) == 0 || strncmp(k, "user.overlay.", 13) == 0)
                        continue;
                char val[XATTR_LIST_MAX_BYTES];
                ssize_t vl = lgetxattr(path, k, val, sizeof(val));
                if (vl < 0)
                        continue;
                size_t len = (size_t)vl;
                if (strcmp(k, "security.capability") == 0)
                        len = unshift_capability(val, len);
                x->names[x->n] = xstrdup(k);
                x->values[x->n] = xmalloc(len ? len : 1);
                memcpy(x->values[x->n], val, len);
                x->lens[x->n] = len;
                x->n++;
        }
        return 0;
}

static const char *seen_link(struct exporter *e, const struct stat *st, const char *path)
{
        if (S_ISDIR(st->st_mode) || st->st_nlink < 2)
                return NULL;
        for (size_t i = 0; i < e->n_seen; i++)
                if (e->seen[i].dev == st->st_dev && e->seen[i].ino == st->st_ino)
                        return e->seen[i].path;
        if (e->n_seen == e->cap_seen) {
                e->cap_seen = e->cap_seen ? e->cap_seen * 2 : 64;
                e->seen = xrealloc(e->seen, e->cap_seen * sizeof(*e->seen));
        }
        e->seen[e->n_seen++] = (struct inode_seen){ st->st_dev, st->st_ino, xstrdup(path) };
        return NULL;
}

static int tar_entry(struct exporter *e, int dirfd, const char *name, const char *path, const struct stat *st,
                     struct xattr_list *x)
{
        struct archive_entry *ae = archive_entry_new();
        archive_entry_set_pathname(ae, path);
        archive_entry_set_uid(ae, idmap_to_container(st->st_uid));
        archive_entry_set_gid(ae, idmap_to_container(st->st_gid));
        archive_entry_set_mode(ae, st->st_mode);
        archive_entry_set_mtime(ae, st->st_mtim.tv_sec, st->st_mtim.tv_nsec);
        for (size_t i = 0; i < x->n; i++)
                archive_entry_xattr_add_entry(ae, x->names[i], x->values[i], x->lens[i]);
        int r = 0;
        _cleanup_close_ int fd = -1;
        const char *link = seen_link(e, st, path);
        if (link) {
                archive_entry_set_hardlink(ae, link);
                archive_entry_set_size(ae, 0);
        } else if (S_ISLNK(st->st_mode)) {
                char target[PATH_MAX];
                ssize_t n = readlinkat(dirfd, name, target, sizeof(target) - 1);
                if (n < 0) {
                        r = berr_set_errno(e->err, -errno, "read link %s", path);
                        goto out;
                }
                target[n] = '\0';
                archive_entry_set_symlink(ae, target);
        } else if (S_ISREG(st->st_mode)) {
                fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0) {
                        r = berr_set_errno(e->err, -errno, "open %s", path);
                        goto out;
                }
                archive_entry_set_size(ae, st->st_size);
        } else {
                archive_entry_set_size(ae, 0);
        }
        if (archive_write_header(e->ar, ae) != ARCHIVE_OK) {
                r = berr_set(e->err, -EIO, "write tar header for %s: %s", path, archive_error_string(e->ar));
                goto out;
        }
        if (fd >= 0) {
                for (;;) {
                        ssize_t n = read(fd, e->buf, COPY_CHUNK);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0) {
                                r = berr_set_errno(e->err, -errno, "read %s", path);
                                goto out;
                        }
                        if (n == 0)
                                break;
                        if (archive_write_data(e->ar, e->buf, (size_t)n) != n) {
                                r = berr_set(e->err, -EIO, "write tar data for %s: %s", path,
                                             archive_error_string(e->ar));
                                goto out;
                        }
                }
        }
out:
        archive_entry_free(ae);
        return r;
}

static int apply_meta(int dirfd, const char *name, const struct stat *st, struct xattr_list *x,
                      struct exporter *e, const char *path)
{
        if (fchownat(dirfd, name, idmap_to_container(st->st_uid), idmap_to_container(st->st_gid),
                     AT_SYMLINK_NOFOLLOW) < 0)
                return berr_set_errno(e->err, -errno, "chown %s", path);
        char p[64 + NAME_MAX];
        snprintf(p, sizeof(p), "/proc/self/fd/%d/%s", dirfd, name);
        for (size_t i = 0; i < x->n; i++)
                if (lsetxattr(p, x->names[i], x->values[i], x->lens[i], 0) < 0 && errno != ENOTSUP &&
                    errno != EPERM)
                        return berr_set_errno(e->err, -errno, "set xattr %s on %s", x->names[i], path);
        if (!S_ISLNK(st->st_mode) && fchmodat(dirfd, name, st->st_mode & 07777, 0) < 0)
                return berr_set_errno(e->err, -errno, "chmod %s", path);
        struct timespec ts[2] = { st->st_atim, st->st_mtim };
        if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
                return berr_set_errno(e->err, -errno, "set times of %s", path);
        return 0;
}

static int dir_entry(struct exporter *e, int src_dir, int dst_dir, const char *name, const char *path,
                     const struct stat *st, struct xattr_list *x)
{
        const char *link = seen_link(e, st, path);
        if (link) {
                if (linkat(e->dest_fd, link, e->dest_fd, path, 0) < 0)
                        return berr_set_errno(e->err, -errno, "link %s", path);
                return 0;
        }
        if (S_ISLNK(st->st_mode)) {
                char target[PATH_MAX];
                ssize_t n = readlinkat(src_dir, name, target, sizeof(target) - 1);
                if (n < 0)
                        return berr_set_errno(e->err, -errno, "read link %s", path);
                target[n] = '\0';
                if (symlinkat(target, dst_dir, name) < 0)
                        return berr_set_errno(e->err, -errno, "create symlink %s", path);
        } else if (S_ISREG(st->st_mode)) {
                _cleanup_close_ int in = openat(src_dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                _cleanup_close_ int out =
                    openat(dst_dir, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (in < 0 || out < 0)
                        return berr_set_errno(e->err, -errno, "copy %s", path);
                off_t left = st->st_size;
                while (left > 0) {
                        ssize_t n =
                            copy_file_range(in, NULL, out, NULL, (size_t)MIN(left, (off_t)1 << 30), 0);
                        if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) {
                                n = read(in, e->buf, COPY_CHUNK);
                                if (n > 0 && fs_write_all(out, e->buf, (size_t)n) < 0)
                                        n = -1;
                        }
                        if (n < 0)
                                return berr_set_errno(e->err, -errno, "copy %s", path);
                        if (n == 0)
                                break;
                        left -= n;
                }
        } else if (S_ISFIFO(st->st_mode)) {
                if (mknodat(dst_dir, name, S_IFIFO | 0600, 0) < 0)
                        return berr_set_errno(e->err, -errno, "create fifo %s", path);
        } else {
                return 0; /* sockets, devices: never in berth's layers */
        }
        return apply_meta(dst_dir, name, st, x, e, path);
}

static int strcmp_ptr(const void *a, const void *b)
{
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int walk(struct exporter *e, int src_dir, int dst_dir, const char *prefix)
{
        _cleanup_close_ int dup_fd = openat(src_dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = dup_fd >= 0 ? fdopendir(TAKE_FD(dup_fd)) : NULL;
        if (!d)
                return berr_set_errno(e->err, -errno, "read directory /%s", prefix);
        /* Sorted output makes tars reproducible. */
        size_t n = 0, cap = 64;
        char **names = xmalloc(cap * sizeof(char *));
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                if (n == cap)
                        names = xrealloc(names, (cap *= 2) * sizeof(char *));
                names[n++] = xstrdup(de->d_name);
        }
        qsort(names, n, sizeof(char *), strcmp_ptr);
        int r = 0;
        for (size_t i = 0; i < n && r == 0; i++) {
                const char *name = names[i];
                _cleanup_free_ char *path = *prefix ? xasprintf("%s/%s", prefix, name) : xstrdup(name);
                struct stat st;
                if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        r = berr_set_errno(e->err, -errno, "stat /%s", path);
                        break;
                }
                struct xattr_list x = { 0 };
                read_xattrs(dirfd(d), name, &x);
                if (S_ISDIR(st.st_mode)) {
                        _cleanup_close_ int sub =
                            openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        _cleanup_close_ int dsub = -1;
                        if (sub < 0) {
                                r = berr_set_errno(e->err, -errno, "open /%s", path);
                        } else if (e->to_tar) {
                                _cleanup_free_ char *dpath = xasprintf("%s/", path);
                                r = tar_entry(e, dirfd(d), name, dpath, &st, &x);
                                if (r == 0)
                                        r = walk(e, sub, -1, path);
                        } else if (mkdirat(dst_dir, name, 0700) < 0 ||
                                   (dsub = openat(dst_dir, name,
                                                  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
                                r = berr_set_errno(e->err, -errno, "create directory %s", path);
                        } else {
                                r = walk(e, sub, dsub, path);
                                /* Metadata after the children: a read-only dir must not block its own
                                 * contents. */
                                if (r == 0)
                                        r = apply_meta(dst_dir, name, &st, &x, e, path);
                        }
                } else if (e->to_tar) {
                        r = tar_entry(e, dirfd(d), name, path, &st, &x);
                } else {
                        r = dir_entry(e, dirfd(d), dst_dir, name, path, &st, &x);
                }
                xattr_list_free(&x);
        }
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
        closedir(d);
        return r;
}

/* The export proper, in the child: mount, walk, write. */
static int export_child(struct image_store *s, char **lowers, size_t n, const char *staging, const char *dest,
                        bool to_tar, struct berr **err)
{
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
                return berr_set_errno(err, -errno, "create a private mount namespace");
        _cleanup_free_ char *merged = xasprintf("%s/tmp/%s/merged", s->root, staging);
        _cleanup_free_ char *empty = xasprintf("%s/tmp/%s/empty", s->root, staging);
        int r;
        if (mkdir(merged, 0700) < 0 || mkdir(empty, 0700) < 0)
                return berr_set_errno(err, -errno, "create export mount point");
        const char *src = empty;
        if (n > 0) {
                if ((r = rootfs_mount_overlay(lowers, n, empty, NULL, NULL, merged, err)) < 0)
                        return r;
                src = merged;
        }
        _cleanup_close_ int sfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sfd < 0)
                return berr_set_errno(err, -errno, "open %s", src);
        struct exporter e = { .to_tar = to_tar, .dest_fd = -1, .err = err };
        e.buf = xmalloc(COPY_CHUNK);
        if (to_tar) {
                e.ar = archive_write_new();
                archive_write_set_format_pax_restricted(e.ar);
                archive_write_set_bytes_in_last_block(e.ar, 1);
                if (archive_write_open_filename(e.ar, dest) != ARCHIVE_OK) {
                        r = berr_set(err, -EIO, "create %s: %s", dest, archive_error_string(e.ar));
                        archive_write_free(e.ar);
                        free(e.buf);
                        return r;
                }
                r = walk(&e, sfd, -1, "");
                if (archive_write_close(e.ar) != ARCHIVE_OK && r == 0)
                        r = berr_set(err, -EIO, "finish %s: %s", dest, archive_error_string(e.ar));
                archive_write_free(e.ar);
        } else {
                e.dest_fd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (e.dest_fd < 0)
                        r = berr_set_errno(err, -errno, "open %s", dest);
                else
                        r = walk(&e, sfd, e.dest_fd, "");
                if (r == 0) {
                        /* The root directory takes the image's "/" metadata too. */
                        struct stat st;
                        if (fstat(sfd, &st) == 0) {
                                fchown(e.dest_fd, idmap_to_container(st.st_uid),
                                       idmap_to_container(st.st_gid));
                                fchmod(e.dest_fd, st.st_mode & 07777);
                        }
                }
                closep(&e.dest_fd);
        }
        for (size_t i = 0; i < e.n_seen; i++)
                free(e.seen[i].path);
        free(e.seen);
        free(e.buf);
        if (n > 0)
                umount2(merged, MNT_DETACH);
        return r;
}

int store_export(struct image_store *s, const char *ref, const char *dest, struct berr **err)
{
        size_t dl = strlen(dest);
        bool to_tar = dl > 4 && strcmp(dest + dl - 4, ".tar") == 0;
        _cleanup_free_ char *absdest = dest[0] == '/' ? xstrdup(dest) : NULL;
        if (!absdest) {
                char cwd[PATH_MAX];
                if (!getcwd(cwd, sizeof(cwd)))
                        return berr_set_errno(err, -errno, "getcwd");
                absdest = xasprintf("%s/%s", cwd, dest);
        }
        bool created_dir = false;
        if (to_tar) {
                struct stat st;
                if (stat(absdest, &st) == 0 && S_ISDIR(st.st_mode))
                        return berr_set(err, -EISDIR, "%s is a directory", dest);
        } else {
                if (mkdir(absdest, 0755) == 0)
                        created_dir = true;
                else if (errno != EEXIST)
                        return berr_set_errno(err, -errno, "create %s", dest);
                else {
                        DIR *d = opendir(absdest);
                        if (!d)
                                return berr_set_errno(err, -errno, "open %s", dest);
                        struct dirent *de;
                        bool empty = true;
                        while ((de = readdir(d)))
                                empty =
                                    empty && (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0);
                        closedir(d);
                        if (!empty)
                                return berr_set(err, -ENOTEMPTY, "%s exists and is not empty", dest);
                }
        }
        _cleanup_close_ int gc = store_lock(s, "gc", false, true);
        if (gc < 0)
                return berr_set_errno(err, gc, "lock image store");
        _cleanup_json_ json_t *img = NULL;
        _cleanup_free_ char *staging = NULL;
        _cleanup_close_ int sfd = -1;
        char **lowers = NULL;
        size_t n = 0;
        int r = store_image_resolve(s, ref, &img, &lowers, &n, err);
        if (r < 0)
                goto cleanup_dest;
        if ((r = store_staging_new(s, "export", &staging, &sfd, err)) < 0)
                goto out;
        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0) {
                r = berr_set_errno(err, -errno, "pipe");
                goto out;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
                r = berr_set_errno(err, -errno, "fork");
                close(pipefd[0]);
                close(pipefd[1]);
                goto out;
        }
        if (pid == 0) {
                close(pipefd[0]);
                struct berr *cerr = NULL;
                int cr = export_child(s, lowers, n, staging, absdest, to_tar, &cerr);
                if (cr < 0) {
                        const char *m = berr_msg(cerr);
                        fs_write_all(pipefd[1], m, strlen(m));
                }
                _exit(cr < 0 ? 1 : 0);
        }
        close(pipefd[1]);
        char msg[4096];
        size_t ml = 0;
        for (;;) {
                ssize_t k = read(pipefd[0], msg + ml, sizeof(msg) - 1 - ml);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0 || (ml += (size_t)k) >= sizeof(msg) - 1)
                        break;
        }
        msg[ml] = '\0';
        close(pipefd[0]);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                r = berr_set(err, -EIO, "export %s: %s", ref, ml ? msg : "export process failed");
        else
                r = 0;
out:
        if (staging)
                fs_rm_rf_at(s->tmp_fd, staging);
cleanup_dest:
        strv_free(lowers);
        if (r < 0) {
                if (to_tar)
                        unlink(absdest);
                else if (created_dir)
                        fs_rm_rf_at(AT_FDCWD, absdest);
        }
        return r;
}
