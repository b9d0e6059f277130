/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Disk quotas with btrfs qgroups (see disk.h). Under <data-dir>/cell:
 *
 *   disk.lock          flock: pool setup and teardown, one process at a time
 *   disk.img           the sparse image (only when cell/ is not on btrfs), made once via disk.img.tmp
 *   disk/              the pool: where disk.img is mounted, or a plain directory when cell/ is on btrfs
 *     containers/<id>  one subvolume per container; its qgroup 0/<subvolid> carries the limit
 *
 * Nothing is recorded about the loop device: it is found again by the image's device and inode number
 * (LOOP_GET_STATUS64), and after a reboot, when it is gone, a new one is attached. The mount is found by
 * statx's STATX_ATTR_MOUNT_ROOT on disk/.
 */
#include <dirent.h>
#include <endian.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/loop.h>
#include <linux/magic.h>
#include <spawn.h>
#include <stdbool.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cell/disk.h"
#include "lib/fs.h"
#include "lib/log.h"

#define DISK_ID_MAX             64
#define DISK_DEFAULT_POOL_BYTES (UINT64_C(64) << 30)
/* What is kept of mkfs.btrfs's stderr for an error message; the rest is drained and dropped. */
#define DISK_MKFS_STDERR_MAX 2048
/* LOOP_CTL_GET_FREE then LOOP_CONFIGURE can lose the device to another process; retry this often. */
#define DISK_LOOP_ATTEMPTS 64
/* Mounts stacked on the pool (several opens racing without berth's lock) that teardown unmounts. */
#define DISK_UMOUNT_MAX 16
/* A kernel message from a mount context ("e btrfs: ..."). */
#define DISK_FC_MSG_MAX 512

struct cell_disk {
        char *pool;        /* absolute path of <data-dir>/cell/disk */
        int pool_fd;       /* the pool's root directory */
        int containers_fd; /* <pool>/containers */
};

static bool disk_id_valid(const char *id)
{
        size_t n = strlen(id);
        if (n == 0 || n > DISK_ID_MAX || id[0] == '.' || id[0] == '-')
                return false;
        return strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static bool fd_is_btrfs(int fd)
{
        struct statfs sfs;
        return fstatfs(fd, &sfs) == 0 && (unsigned long)sfs.f_type == (unsigned long)BTRFS_SUPER_MAGIC;
}

/* The flock serialising setup and teardown of the pool; returns the fd holding it (caller closes). */
static int disk_lock(int cellfd)
{
        int fd = openat(cellfd, "disk.lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;
        while (flock(fd, LOCK_EX) < 0) {
                if (errno != EINTR) {
                        int r = -errno;
                        close(fd);
                        return r;
                }
        }
        return fd;
}

/* Whether dirfd/name is the root of a mount. */
static int is_mount_root(int dirfd, const char *name, bool *ret)
{
        struct statx stx;
        if (statx(dirfd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_INO, &stx) < 0)
                return -errno;
        if (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) {
                *ret = !!(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
                return 0;
        }
        /* Kernels before 5.8: a mount point's device differs from its parent's (cell/ is not btrfs here). */
        struct stat parent;
        if (fstat(dirfd, &parent) < 0)
                return -errno;
        *ret = makedev(stx.stx_dev_major, stx.stx_dev_minor) != parent.st_dev;
        return 0;
}

/* The subvolume id of the subvolume whose root fd is; -ENOTDIR if fd is a directory but no subvolume root. */
static int subvol_id(int fd, uint64_t *ret)
{
        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode) || st.st_ino != BTRFS_FIRST_FREE_OBJECTID)
                return -ENOTDIR;
        /* treeid 0: the kernel fills in the id of fd's subvolume, without searching a tree. */
        struct btrfs_ioctl_ino_lookup_args args;
        memset(&args, 0, sizeof(args));
        args.objectid = BTRFS_FIRST_FREE_OBJECTID;
        if (ioctl(fd, BTRFS_IOC_INO_LOOKUP, &args) < 0)
                return -errno;
        *ret = args.treeid;
        return 0;
}

/*
 * Look up the item (objectid, type, offset) of a tree with BTRFS_IOC_TREE_SEARCH (CAP_SYS_ADMIN). Copies
 * at most size bytes of it to item (may be NULL). Returns 1 if found, 0 if not, -ENOENT if the tree does
 * not exist (the quota tree while quotas are off), another negative errno on failure.
 */
static int tree_lookup(int fd, uint64_t tree, uint64_t objectid, uint32_t type, uint64_t offset, void *item,
                       size_t size)
{
        struct btrfs_ioctl_search_args args;
        memset(&args, 0, sizeof(args));
        struct btrfs_ioctl_search_key *k = &args.key;
        k->tree_id = tree;
        k->min_objectid = k->max_objectid = objectid;
        k->min_type = k->max_type = type;
        k->min_offset = k->max_offset = offset;
        k->max_transid = UINT64_MAX;
        k->nr_items = 1;
        if (ioctl(fd, BTRFS_IOC_TREE_SEARCH, &args) < 0)
                return -errno;
        if (k->nr_items == 0)
                return 0;
        struct btrfs_ioctl_search_header h;
        memcpy(&h, args.buf, sizeof(h));
        if (h.objectid != objectid || h.type != type || h.offset != offset)
                return 0;
        if (item) {
                if (h.len > BTRFS_SEARCH_ARGS_BUFSIZE - sizeof(h))
                        return -EIO;
                memset(item, 0, size);
                memcpy(item, args.buf + sizeof(h), MIN(size, (size_t)h.len));
        }
        return 1;
}

/* Turn quotas on for the filesystem of fd unless they are (the quota tree's status item exists). */
static int quota_ensure(int fd, const char *pool, struct berr **err)
{
        int r = tree_lookup(fd, BTRFS_QUOTA_TREE_OBJECTID, 0, BTRFS_QGROUP_STATUS_KEY, 0, NULL, 0);
        if (r == 1)
                return 0;
        if (r < 0 && r != -ENOENT)
                return berr_set_errno(err, r, "read quota status of %s", pool);
        struct btrfs_ioctl_quota_ctl_args qa = { .cmd = BTRFS_QUOTA_CTL_ENABLE };
        if (ioctl(fd, BTRFS_IOC_QUOTA_CTL, &qa) < 0)
                return berr_set_errno(err, -errno, "enable quotas on %s", pool);
        return 0;
}

/* mkfs.btrfs, if installed: its path, or NULL. */
static const char *mkfs_find(void)
{
        static const char *const paths[] = { "/usr/sbin/mkfs.btrfs", "/sbin/mkfs.btrfs",
                                             "/usr/bin/mkfs.btrfs", "/bin/mkfs.btrfs" };
        for (size_t i = 0; i < ARRAY_SIZE(paths); i++)
                if (access(paths[i], X_OK) == 0)
                        return paths[i];
        return NULL;
}

/* Its "ERROR: " lines joined with "; " (all of the text if it has none), in place. */
static void mkfs_summarize(char *text)
{
        char *out = text;
        bool any = strstr(text, "ERROR: ") != NULL;
        for (char *line = text, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                if (any && strncmp(line, "ERROR: ", 7) != 0)
                        continue;
                if (any)
                        line += 7;
                size_t n = strlen(line);
                while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
                        n--;
                if (n == 0)
                        continue;
                if (out != text) {
                        memcpy(out, "; ", 2);
                        out += 2;
                }
                memmove(out, line, n);
                out += n;
        }
        *out = '\0';
}

/*
 * mkfs.btrfs on the image file at path (which this process has just created: hence -f). A subprocess, the
 * only one here: the on-disk format is btrfs-progs' business. Its stderr goes into the error.
 */
static int mkfs_run(const char *path, struct berr **err)
{
        const char *prog = mkfs_find();
        if (!prog)
                return berr_set(err, -ENOENT, "mkfs.btrfs not found (install btrfs-progs)");
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return berr_set_errno(err, -errno, "pipe");
        _cleanup_close_ int rd = p[0];
        _cleanup_close_ int wr = p[1];
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, wr, 2);
        /* -K: no discard of the fresh sparse file (nothing to discard; it only costs time). */
        char *const argv[] = { "mkfs.btrfs", "-q", "-f", "-K", "-L", "berth-disk", (char *)path, NULL };
        char *const envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL };
        pid_t pid;
        int r = posix_spawn(&pid, prog, &fa, NULL, argv, envp);
        posix_spawn_file_actions_destroy(&fa);
        closep(&wr);
        wr = -1;
        if (r != 0)
                return berr_set_errno(err, -r, "run %s", prog);
        char msg[DISK_MKFS_STDERR_MAX];
        size_t len = 0;
        for (;;) {
                char buf[512];
                ssize_t n = read(rd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                size_t keep = MIN((size_t)n, sizeof(msg) - 1 - len);
                memcpy(msg + len, buf, keep);
                len += keep;
        }
        msg[len] = '\0';
        int status;
        while (waitpid(pid, &status, 0) < 0) {
                if (errno != EINTR)
                        return berr_set_errno(err, -errno, "wait for mkfs.btrfs");
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
                return 0;
        mkfs_summarize(msg);
        if (msg[0])
                return berr_set(err, -EIO, "mkfs.btrfs failed: %s", msg);
        if (WIFSIGNALED(status))
                return berr_set(err, -EIO, "mkfs.btrfs failed: killed by signal %d", WTERMSIG(status));
        return berr_set(err, -EIO, "mkfs.btrfs failed: exit status %d", WEXITSTATUS(status));
}

/* Make cell/disk.img: a sparse file of `bytes`, formatted, renamed into place only once complete. */
static int image_create(int cellfd, const char *cell, uint64_t bytes, struct berr **err)
{
        _cleanup_free_ char *tmp = xasprintf("%s/disk.img.tmp", cell);
        if (bytes > (uint64_t)INT64_MAX)
                return berr_set(err, -EFBIG, "disk quota pool of %llu bytes is too large",
                                (unsigned long long)bytes);
        /* O_TRUNC: a leftover is from a crash of the lock's previous holder. */
        _cleanup_close_ int fd =
            openat(cellfd, "disk.img.tmp", O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return berr_set_errno(err, -errno, "create %s", tmp);
        int r;
        if (ftruncate(fd, (off_t)bytes) < 0) {
                r = berr_set_errno(err, -errno, "create %s of %llu bytes", tmp, (unsigned long long)bytes);
                goto fail;
        }
        if ((r = mkfs_run(tmp, err)) < 0)
                goto fail;
        if (fsync(fd) < 0 || renameat(cellfd, "disk.img.tmp", cellfd, "disk.img") < 0) {
                r = berr_set_errno(err, -errno, "install %s", tmp);
                goto fail;
        }
        fsync(cellfd);
        return 0;
fail:
        unlinkat(cellfd, "disk.img.tmp", 0);
        return r;
}

/*
 * The loop device bound to the file st describes, opened (an opener keeps autoclear from detaching it);
 * its path in dev. -ENOENT if there is none.
 */
static int loop_find(const struct stat *st, char *dev, size_t size)
{
        int sfd = open("/sys/block", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sfd < 0)
                return -ENOENT;
        DIR *dir = fdopendir(sfd);
        if (!dir) {
                close(sfd);
                return -ENOENT;
        }
        int found = -ENOENT;
        struct dirent *de;
        while (found < 0 && (de = readdir(dir))) {
                if (strncmp(de->d_name, "loop", 4) != 0)
                        continue;
                char *end;
                errno = 0;
                unsigned long n = strtoul(de->d_name + 4, &end, 10);
                if (end == de->d_name + 4 || *end || errno || n > INT32_MAX)
                        continue;
                /* loop/ exists while the device is bound: skip opening the others. */
                char attr[sizeof(de->d_name) + 32];
                snprintf(attr, sizeof(attr), "%s/loop/backing_file", de->d_name);
                if (faccessat(dirfd(dir), attr, F_OK, 0) < 0)
                        continue;
                snprintf(dev, size, "/dev/loop%lu", n);
                int fd = open(dev, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                struct loop_info64 info;
                if (ioctl(fd, LOOP_GET_STATUS64, &info) == 0 && info.lo_device == (uint64_t)st->st_dev &&
                    info.lo_inode == (uint64_t)st->st_ino)
                        found = fd;
                else
                        close(fd);
        }
        closedir(dir);
        return found;
}

/*
 * Attach the image (imgfd, named path) to a free loop device with autoclear, so that the device goes away
 * with the last user (the mount). Returns the loop device's fd (caller closes it once mounted) and its path
 * in dev.
 */
static int loop_attach(int imgfd, const char *path, char *dev, size_t size, struct berr **err)
{
        _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (ctl < 0)
                return berr_set_errno(err, -errno, "no free loop device: open /dev/loop-control");
        /* Direct I/O keeps the image's pages out of the page cache (btrfs caches them already). */
        bool dio = true;
        for (int attempt = 0; attempt < DISK_LOOP_ATTEMPTS; attempt++) {
                int n = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (n < 0)
                        return berr_set_errno(err, -errno, "no free loop device");
                snprintf(dev, size, "/dev/loop%d", n);
                _cleanup_close_ int lfd = open(dev, O_RDWR | O_CLOEXEC);
                if (lfd < 0)
                        return berr_set_errno(err, -errno, "open %s", dev);
                struct loop_config cfg;
                memset(&cfg, 0, sizeof(cfg));
                cfg.fd = (uint32_t)imgfd;
                cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (dio ? LO_FLAGS_DIRECT_IO : 0);
                snprintf((char *)cfg.info.lo_file_name, sizeof(cfg.info.lo_file_name), "%s", path);
                if (ioctl(lfd, LOOP_CONFIGURE, &cfg) == 0)
                        return TAKE_FD(lfd);
                int r = -errno;
                if (r == -EBUSY) /* another process configured it since LOOP_CTL_GET_FREE */
                        continue;
                if (r == -EINVAL && dio) {
                        dio = false;
                        continue;
                }
                return berr_set_errno(err, r, "attach %s to %s", path, dev);
        }
        return berr_set(err, -EBUSY, "no free loop device: other processes took %d in a row",
                        DISK_LOOP_ATTEMPTS);
}

/* The last error message the kernel left on a filesystem context ("btrfs: ..."), or "". */
static void fc_message(int fsfd, char *out, size_t size)
{
        out[0] = '\0';
        char buf[DISK_FC_MSG_MAX];
        ssize_t n;
        while ((n = read(fsfd, buf, sizeof(buf) - 1)) > 0) {
                buf[n] = '\0';
                if (n > 2 && buf[0] == 'e' && buf[1] == ' ') {
                        size_t len = (size_t)n - 2;
                        while (len && buf[2 + len - 1] == '\n')
                                len--;
                        snprintf(out, size, ": %.*s", (int)len, buf + 2);
                }
        }
}

/* Mount the btrfs on dev at cellfd/"disk" (path: its name in messages), nosuid and nodev. */
static int pool_mount(int cellfd, const char *dev, const char *path, struct berr **err)
{
        /*
         * nosuid, nodev: the containers' upper dirs hold their setuid files with host-shifted owners; no host
         * user may run them from here (the overlays on top are nosuid and nodev as well).
         */
        _cleanup_close_ int fsfd = fsopen("btrfs", FSOPEN_CLOEXEC);
        if (fsfd < 0 && errno == ENOSYS) {
                if (mount(dev, path, "btrfs", MS_NOSUID | MS_NODEV | MS_NOATIME, NULL) < 0)
                        return berr_set_errno(err, -errno, "mount %s at %s", dev, path);
                return 0;
        }
        if (fsfd < 0)
                return berr_set_errno(err, -errno, "mount %s at %s: fsopen btrfs", dev, path);
        char msg[DISK_FC_MSG_MAX];
        if (fsconfig(fsfd, FSCONFIG_SET_STRING, "source", dev, 0) < 0 ||
            fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
                int r = -errno;
                fc_message(fsfd, msg, sizeof(msg));
                return berr_set_errno(err, r, "mount %s at %s%s", dev, path, msg);
        }
        _cleanup_close_ int mfd =
            fsmount(fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOATIME);
        if (mfd < 0)
                return berr_set_errno(err, -errno, "mount %s at %s", dev, path);
        if (move_mount(mfd, "", cellfd, "disk", MOVE_MOUNT_F_EMPTY_PATH) < 0)
                return berr_set_errno(err, -errno, "mount %s at %s", dev, path);
        return 0;
}

/* Mount cell/disk.img (made first if missing) at cell/disk, reusing a loop device already bound to it. */
static int pool_attach(int cellfd, const char *cell, const char *pool, uint64_t bytes, struct berr **err)
{
        _cleanup_free_ char *img = xasprintf("%s/disk.img", cell);
        int r;
        if (faccessat(cellfd, "disk.img", F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
                if (errno != ENOENT)
                        return berr_set_errno(err, -errno, "access %s", img);
                if ((r = image_create(cellfd, cell, bytes ? bytes : DISK_DEFAULT_POOL_BYTES, err)) < 0)
                        return r;
        }
        _cleanup_close_ int imgfd = openat(cellfd, "disk.img", O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        if (imgfd < 0 || fstat(imgfd, &st) < 0)
                return berr_set_errno(err, -errno, "open %s", img);
        if (!S_ISREG(st.st_mode))
                return berr_set(err, -EINVAL, "%s is not a regular file", img);
        char dev[32];
        /* Still bound (mounted elsewhere, or attached by hand): a second loop would show btrfs the
         * same device twice. */
        _cleanup_close_ int lfd = loop_find(&st, dev, sizeof(dev));
        if (lfd < 0 && (lfd = loop_attach(imgfd, img, dev, sizeof(dev), err)) < 0)
                return lfd;
        log_debug("disk: mounting %s (%s) at %s", img, dev, pool);
        /* Closing lfd after the mount leaves the mount as the device's only user (autoclear). */
        return pool_mount(cellfd, dev, pool, err);
}

int cell_disk_open(const char *data_dir, uint64_t pool_bytes, struct cell_disk **ret, struct berr **err)
{
        _cleanup_free_ char *cell_rel = xasprintf("%s/cell", data_dir);
        int r = fs_mkdir_p_at(AT_FDCWD, cell_rel, 0711);
        if (r < 0)
                return berr_set_errno(err, r, "create %s", cell_rel);
        /* Absolute paths: the overlay mounts and the cell use them from any working directory. */
        _cleanup_free_ char *cell = realpath(cell_rel, NULL);
        if (!cell)
                return berr_set_errno(err, -errno, "resolve %s", cell_rel);
        _cleanup_close_ int cellfd = open(cell, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (cellfd < 0)
                return berr_set_errno(err, -errno, "open %s", cell);
        _cleanup_close_ int lock = disk_lock(cellfd);
        if (lock < 0)
                return berr_set_errno(err, lock, "lock %s/disk.lock", cell);
        _cleanup_free_ char *pool = xasprintf("%s/disk", cell);
        if (mkdirat(cellfd, "disk", 0700) < 0 && errno != EEXIST)
                return berr_set_errno(err, -errno, "create %s", pool);
        if (!fd_is_btrfs(cellfd)) {
                bool mounted;
                if ((r = is_mount_root(cellfd, "disk", &mounted)) < 0)
                        return berr_set_errno(err, r, "stat %s", pool);
                if (!mounted && (r = pool_attach(cellfd, cell, pool, pool_bytes, err)) < 0)
                        return berr_prefix(err, r, "disk quota pool");
        }
        _cleanup_close_ int pfd = openat(cellfd, "disk", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (pfd < 0)
                return berr_set_errno(err, -errno, "open %s", pool);
        if (!fd_is_btrfs(pfd))
                return berr_set(err, -EMEDIUMTYPE, "disk quota pool %s is mounted but not btrfs", pool);
        if ((r = quota_ensure(pfd, pool, err)) < 0)
                return r;
        if (mkdirat(pfd, "containers", 0700) < 0 && errno != EEXIST)
                return berr_set_errno(err, -errno, "create %s/containers", pool);
        int cfd = openat(pfd, "containers", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (cfd < 0)
                return berr_set_errno(err, -errno, "open %s/containers", pool);
        struct cell_disk *d = xcalloc(1, sizeof(*d));
        d->pool = TAKE_PTR(pool);
        d->pool_fd = TAKE_FD(pfd);
        d->containers_fd = cfd;
        *ret = d;
        return 0;
}

void cell_disk_close(struct cell_disk *d)
{
        if (!d)
                return;
        closep(&d->containers_fd);
        closep(&d->pool_fd);
        free(d->pool);
        free(d);
}

static void vol_args_init(struct btrfs_ioctl_vol_args *va, const char *name)
{
        memset(va, 0, sizeof(*va));
        size_t n = strlen(name); /* <= DISK_ID_MAX, checked by the callers */
        memcpy(va->name, name, MIN(n, sizeof(va->name) - 1));
}

int cell_disk_create(struct cell_disk *d, const char *id, uint64_t limit_bytes, char **ret_path,
                     struct berr **err)
{
        if (!disk_id_valid(id))
                return berr_set(err, -EINVAL, "invalid container id \"%.64s\" for a disk", id);
        struct btrfs_ioctl_vol_args va;
        vol_args_init(&va, id);
        if (ioctl(d->containers_fd, BTRFS_IOC_SUBVOL_CREATE, &va) < 0) {
                if (errno == EEXIST)
                        return berr_set(err, -EEXIST, "disk of container %s exists already", id);
                return berr_set_errno(err, -errno, "create subvolume %s/containers/%s", d->pool, id);
        }
        int r;
        uint64_t subvol = 0;
        _cleanup_close_ int sfd =
            openat(d->containers_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sfd < 0 || fchmod(sfd, 0700) < 0) {
                r = berr_set_errno(err, -errno, "open subvolume %s/containers/%s", d->pool, id);
                goto fail;
        }
        if ((r = subvol_id(sfd, &subvol)) < 0) {
                r = berr_set_errno(err, r, "subvolume %s/containers/%s", d->pool, id);
                goto fail;
        }
        /* Creating the subvolume made its qgroup 0/<subvolid> (quotas are on); give it the limit. */
        if (limit_bytes) {
                struct btrfs_ioctl_qgroup_limit_args la;
                memset(&la, 0, sizeof(la));
                la.qgroupid = subvol;
                la.lim.flags = BTRFS_QGROUP_LIMIT_MAX_RFER;
                la.lim.max_rfer = limit_bytes;
                if (ioctl(d->pool_fd, BTRFS_IOC_QGROUP_LIMIT, &la) < 0) {
                        r = berr_set_errno(err, -errno, "limit qgroup 0/%llu of %s/containers/%s",
                                           (unsigned long long)subvol, d->pool, id);
                        goto fail;
                }
        }
        *ret_path = xasprintf("%s/containers/%s", d->pool, id);
        return 0;
fail:
        closep(&sfd);
        sfd = -1;
        cell_disk_remove(d, id, NULL);
        return r;
}

int cell_disk_usage(struct cell_disk *d, const char *id, uint64_t *ret_used, uint64_t *ret_limit,
                    struct berr **err)
{
        if (!disk_id_valid(id))
                return berr_set(err, -EINVAL, "invalid container id \"%.64s\" for a disk", id);
        _cleanup_close_ int sfd =
            openat(d->containers_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sfd < 0) {
                if (errno == ENOENT)
                        return berr_set(err, -ENOENT, "container %s has no disk", id);
                return berr_set_errno(err, -errno, "open %s/containers/%s", d->pool, id);
        }
        uint64_t subvol;
        int r = subvol_id(sfd, &subvol);
        if (r < 0)
                return berr_set_errno(err, r, "subvolume %s/containers/%s", d->pool, id);
        /* qgroups are brought up to date when a transaction commits: flush and commit first. */
        if (ioctl(sfd, BTRFS_IOC_SYNC) < 0)
                return berr_set_errno(err, -errno, "sync %s", d->pool);
        struct btrfs_qgroup_info_item info;
        r = tree_lookup(d->pool_fd, BTRFS_QUOTA_TREE_OBJECTID, 0, BTRFS_QGROUP_INFO_KEY, subvol, &info,
                        sizeof(info));
        if (r == 0 || r == -ENOENT)
                return berr_set(err, -ENODATA, "no qgroup 0/%llu for the disk of container %s (quotas off?)",
                                (unsigned long long)subvol, id);
        if (r < 0)
                return berr_set_errno(err, r, "read qgroup 0/%llu", (unsigned long long)subvol);
        struct btrfs_qgroup_limit_item lim;
        r = tree_lookup(d->pool_fd, BTRFS_QUOTA_TREE_OBJECTID, 0, BTRFS_QGROUP_LIMIT_KEY, subvol, &lim,
                        sizeof(lim));
        if (r < 0)
                return berr_set_errno(err, r, "read limit of qgroup 0/%llu", (unsigned long long)subvol);
        uint64_t limit = 0;
        if (r == 1 && (le64toh(lim.flags) & BTRFS_QGROUP_LIMIT_MAX_RFER))
                limit = le64toh(lim.max_rfer);
        *ret_used = le64toh(info.rfer);
        *ret_limit = limit;
        return 0;
}

/* Delete the subvolume dirfd/name (a directory that is no subvolume root: rm -rf) and its qgroup. */
static int subvol_destroy(int dirfd, const char *name, int pool_fd, const char *path, struct berr **err)
{
        int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
                if (errno == ENOENT)
                        return 0;
                return berr_set_errno(err, -errno, "open %s", path);
        }
        uint64_t subvol;
        int r = subvol_id(fd, &subvol);
        close(fd);
        if (r == -ENOTDIR) {
                if ((r = fs_rm_rf_at(dirfd, name)) < 0)
                        return berr_set_errno(err, r, "remove %s", path);
                return 0;
        }
        if (r < 0)
                return berr_set_errno(err, r, "subvolume %s", path);
        /* Deleting the subvolume deletes everything in it, whoever owns it (overlay work dirs too). */
        struct btrfs_ioctl_vol_args va;
        vol_args_init(&va, name);
        if (ioctl(dirfd, BTRFS_IOC_SNAP_DESTROY, &va) < 0 && errno != ENOENT)
                return berr_set_errno(err, -errno, "delete subvolume %s", path);
        /*
         * The qgroup: the kernel refuses (EBUSY) while the cleaner has not yet dropped the subvolume's
         * tree, and since Linux 6.x deletes it itself once it has; older kernels delete it right away
         * here. ENOENT: gone already; ENOTCONN: quotas are off.
         */
        struct btrfs_ioctl_qgroup_create_args qa = { .create = 0, .qgroupid = subvol };
        if (ioctl(pool_fd, BTRFS_IOC_QGROUP_CREATE, &qa) < 0 && errno != ENOENT && errno != EBUSY &&
            errno != ENOTCONN)
                return berr_set_errno(err, -errno, "delete qgroup 0/%llu of %s", (unsigned long long)subvol,
                                      path);
        return 0;
}

int cell_disk_remove(struct cell_disk *d, const char *id, struct berr **err)
{
        if (!disk_id_valid(id))
                return berr_set(err, -EINVAL, "invalid container id \"%.64s\" for a disk", id);
        _cleanup_free_ char *path = xasprintf("%s/containers/%s", d->pool, id);
        return subvol_destroy(d->containers_fd, id, d->pool_fd, path, err);
}

/* Teardown of a pool on the data dir's own btrfs: delete every container's subvolume, then disk/. */
static int teardown_native(int cellfd, const char *pool, struct berr **err)
{
        int pfd = openat(cellfd, "disk", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (pfd < 0) {
                if (errno == ENOENT)
                        return 0;
                return berr_set_errno(err, -errno, "open %s", pool);
        }
        int r = 0;
        int cfd = openat(pfd, "containers", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        DIR *dir = cfd >= 0 ? fdopendir(cfd) : NULL;
        if (dir) {
                struct dirent *de;
                while ((de = readdir(dir))) {
                        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                                continue;
                        _cleanup_free_ char *p = xasprintf("%s/containers/%s", pool, de->d_name);
                        int r2 = subvol_destroy(dirfd(dir), de->d_name, pfd, p, err);
                        if (r2 < 0 && r == 0)
                                r = r2;
                }
                closedir(dir);
        } else if (cfd >= 0) {
                close(cfd);
        }
        close(pfd);
        if (r < 0)
                return r;
        if ((r = fs_rm_rf_at(cellfd, "disk")) < 0)
                return berr_set_errno(err, r, "remove %s", pool);
        return 0;
}

int cell_disk_teardown(const char *data_dir, struct berr **err)
{
        _cleanup_free_ char *cell = xasprintf("%s/cell", data_dir);
        _cleanup_close_ int cellfd = open(cell, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (cellfd < 0) {
                if (errno == ENOENT)
                        return 0;
                return berr_set_errno(err, -errno, "open %s", cell);
        }
        _cleanup_close_ int lock = disk_lock(cellfd);
        if (lock < 0)
                return berr_set_errno(err, lock, "lock %s/disk.lock", cell);
        _cleanup_free_ char *pool = xasprintf("%s/disk", cell);
        if (fd_is_btrfs(cellfd))
                return teardown_native(cellfd, pool, err);
        int r;
        for (int i = 0; i < DISK_UMOUNT_MAX; i++) {
                bool mounted;
                if ((r = is_mount_root(cellfd, "disk", &mounted)) == -ENOENT)
                        break;
                if (r < 0)
                        return berr_set_errno(err, r, "stat %s", pool);
                if (!mounted)
                        break;
                /* Busy (an overlay still on a container's upper dir): detach; it goes with its last user. */
                if (umount2(pool, UMOUNT_NOFOLLOW) < 0 &&
                    (errno != EBUSY || umount2(pool, MNT_DETACH | UMOUNT_NOFOLLOW) < 0))
                        return berr_set_errno(err, -errno, "unmount %s", pool);
        }
        /* The loop device detaches itself (autoclear) once unmounted; make sure, or detach it. */
        char busy[32] = "";
        _cleanup_close_ int imgfd = openat(cellfd, "disk.img", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        if (imgfd >= 0 && fstat(imgfd, &st) == 0) {
                char dev[32], tried[32] = "";
                for (int i = 0; i < DISK_UMOUNT_MAX; i++) {
                        int lfd = loop_find(&st, dev, sizeof(dev));
                        if (lfd < 0)
                                break;
                        if (!strcmp(dev, tried)) { /* LOOP_CLR_FD did not detach it: someone uses it */
                                close(lfd);
                                snprintf(busy, sizeof(busy), "%s", dev);
                                break;
                        }
                        /* Detaches on the last close (ours, below) unless the device is still in use. */
                        ioctl(lfd, LOOP_CLR_FD);
                        close(lfd);
                        snprintf(tried, sizeof(tried), "%s", dev);
                }
        }
        closep(&imgfd);
        imgfd = -1;
        if (unlinkat(cellfd, "disk.img", 0) < 0 && errno != ENOENT)
                return berr_set_errno(err, -errno, "remove %s/disk.img", cell);
        unlinkat(cellfd, "disk.img.tmp", 0);
        if ((r = fs_rm_rf_at(cellfd, "disk")) < 0)
                return berr_set_errno(err, r, "remove %s", pool);
        if (busy[0])
                return berr_set(err, -EBUSY,
                                "disk quota pool %s is still in use: %s detaches with its last user", pool,
                                busy);
        return 0;
}
