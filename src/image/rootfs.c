/* SPDX-License-Identifier: Apache-2.0 */
/* Container root filesystems: overlay mounts of an image's layers plus a private upper dir. */
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/idmap.h"
#include "image/store_internal.h"
#include "lib/fs.h"
#include "lib/json.h"

static int mount_new_api(char *const *lowers, size_t n, const char *upper, const char *work,
                         const char *target)
{
        _cleanup_close_ int fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
        if (fsfd < 0)
                return -errno;
        for (size_t i = 0; i < n; i++)
                if (fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir+", lowers[i], 0) < 0)
                        return -errno;
        if (upper && (fsconfig(fsfd, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0 ||
                      fsconfig(fsfd, FSCONFIG_SET_STRING, "workdir", work, 0) < 0))
                return -errno;
        /* Never trust redirect/metacopy xattrs an image could carry; index off keeps lowers shareable. */
        if (fsconfig(fsfd, FSCONFIG_SET_STRING, "redirect_dir", "off", 0) < 0 ||
            fsconfig(fsfd, FSCONFIG_SET_STRING, "metacopy", "off", 0) < 0 ||
            fsconfig(fsfd, FSCONFIG_SET_STRING, "index", "off", 0) < 0)
                return -errno;
        if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
                return -errno;
        _cleanup_close_ int mfd = fsmount(
            fsfd, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | (upper ? 0 : MOUNT_ATTR_RDONLY));
        if (mfd < 0)
                return -errno;
        if (move_mount(mfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
                return -errno;
        return 0;
}

static int mount_legacy(char *const *lowers, size_t n, const char *upper, const char *work,
                        const char *target)
{
        /* Build "lowerdir=a:b,upperdir=..,workdir=..,opts" with bounded appends. */
        size_t cap = 256 + (upper ? strlen(upper) + strlen(work) : 0);
        for (size_t i = 0; i < n; i++)
                cap += strlen(lowers[i]) + 1;
        _cleanup_free_ char *opts = xmalloc(cap);
        size_t len = (size_t)snprintf(opts, cap, "lowerdir=");
        for (size_t i = 0; i < n; i++) {
                if (strchr(lowers[i], ':') || strchr(lowers[i], ','))
                        return -EINVAL;
                len += (size_t)snprintf(opts + len, cap - len, "%s%s", i ? ":" : "", lowers[i]);
        }
        if (upper)
                len += (size_t)snprintf(opts + len, cap - len, ",upperdir=%s,workdir=%s", upper, work);
        snprintf(opts + len, cap - len, ",redirect_dir=off,metacopy=off,index=off");
        if (strlen(opts) >= (size_t)sysconf(_SC_PAGESIZE))
                return -E2BIG;
        if (mount("overlay", target, "overlay", MS_NODEV | MS_NOSUID | (upper ? 0 : MS_RDONLY), opts) < 0)
                return -errno;
        return 0;
}

int rootfs_mount_overlay(char *const *lowers, size_t n, const char *empty_dir, const char *upper,
                         const char *work, const char *target, struct berr **err)
{
        char *two[2];
        if (n == 0 || (n == 1 && !upper)) {
                two[0] = n ? lowers[0] : (char *)empty_dir;
                two[1] = (char *)empty_dir;
                lowers = two;
                n = n ? 2 : (upper ? 1 : 2);
        }
        int r = mount_new_api(lowers, n, upper, work, target);
        if (r == -EINVAL || r == -ENOSYS || r == -EOPNOTSUPP) {
                int r2 = mount_legacy(lowers, n, upper, work, target);
                if (r2 == 0)
                        return 0;
        }
        if (r < 0)
                return berr_set_errno(err, r, "mount overlay of %zu layers at %s", n, target);
        return 0;
}

static bool valid_container_id(const char *id)
{
        size_t n = strlen(id);
        if (n == 0 || n > 128 || id[0] == '.')
                return false;
        return strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

int store_rootfs_create(struct image_store *s, const char *ref, const char *container_id,
                        const char *upper_base, char **ret_rootfs, struct berr **err)
{
        if (!valid_container_id(container_id))
                return berr_set(err, -EINVAL, "invalid container id \"%.64s\"", container_id);
        _cleanup_close_ int gc = store_lock(s, "gc", false, true);
        if (gc < 0)
                return berr_set_errno(err, gc, "lock image store");
        _cleanup_json_ json_t *img = NULL;
        char **lowers = NULL;
        size_t n = 0;
        int r = store_image_resolve(s, ref, &img, &lowers, &n, err);
        if (r < 0)
                return r;
        /*
         * 0710 root:IDMAP_HOST_BASE: the containers' root (the OCI runtime sets up the rootfs as that user)
         * may traverse to the rootfs; no other host user may, or it could run a setuid file of the
         * container's upper dir and become the containers' host uid (as Docker's userns-remap directories).
         */
        if (mkdirat(s->containers_fd, container_id, 0710) < 0) {
                r = berr_set_errno(err, -errno, "create container %s", container_id);
                strv_free(lowers);
                return r;
        }
        if (fchownat(s->containers_fd, container_id, 0, idmap_to_host(0), AT_SYMLINK_NOFOLLOW) < 0) {
                r = berr_set_errno(err, -errno, "chown container %s", container_id);
                unlinkat(s->containers_fd, container_id, AT_REMOVEDIR);
                strv_free(lowers);
                return r;
        }
        _cleanup_close_ int cfd =
            openat(s->containers_fd, container_id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        _cleanup_free_ char *cdir = xasprintf("%s/containers/%s", s->root, container_id);
        _cleanup_free_ char *ubase = xstrdup(upper_base ? upper_base : cdir);
        _cleanup_free_ char *upper = xasprintf("%s/upper", ubase);
        _cleanup_free_ char *work = xasprintf("%s/work", ubase);
        _cleanup_free_ char *merged = xasprintf("%s/merged", cdir);
        _cleanup_free_ char *empty = xasprintf("%s/empty", cdir);
        /*
         * The record first: prune must see the layers as used before anything is mounted on them. Not
         * fsynced: a power loss ends every container, mounts included.
         */
        json_t *chains = json_array();
        size_t i;
        json_t *l;
        json_array_foreach (json_object_get(img, "layers"), i, l)
                json_array_append(chains, json_object_get(l, "chain_id"));
        _cleanup_json_ json_t *rec =
            json_pack("{s:s, s:O, s:o, s:s, s:s}", "id", container_id, "image",
                      json_object_get(img, "digest"), "layers", chains, "upper", upper, "merged", merged);
        _cleanup_free_ char *text = json_dump_str(rec, true);
        if (cfd < 0 || (r = fs_write_file_replace_at(cfd, "rootfs.json", text, strlen(text), 0600)) < 0) {
                r = berr_set_errno(err, cfd < 0 ? -errno : r, "record container %s", container_id);
                goto fail;
        }
        /* Container root (host uid IDMAP_HOST_BASE) owns the upper dir's root so it can write "/". */
        if ((r = fs_mkdir_p_at(AT_FDCWD, upper, 0755)) < 0 || (r = fs_mkdir_p_at(AT_FDCWD, work, 0700)) < 0 ||
            mkdirat(cfd, "merged", 0755) < 0 || mkdirat(cfd, "empty", 0755) < 0) {
                r = berr_set_errno(err, r < 0 ? r : -errno, "create container %s directories", container_id);
                goto fail;
        }
        if (chown(upper, idmap_to_host(0), idmap_to_host(0)) < 0) {
                r = berr_set_errno(err, -errno, "chown %s", upper);
                goto fail;
        }
        if ((r = rootfs_mount_overlay(lowers, n, empty, upper, work, merged, err)) < 0)
                goto fail;
        strv_free(lowers);
        *ret_rootfs = TAKE_PTR(merged);
        return 0;
fail:
        strv_free(lowers);
        umount2(merged, MNT_DETACH);
        if (upper_base) {
                fs_rm_rf_at(AT_FDCWD, upper);
                fs_rm_rf_at(AT_FDCWD, work);
        }
        fs_rm_rf_at(s->containers_fd, container_id);
        return r;
}

int store_rootfs_remove(struct image_store *s, const char *container_id, struct berr **err)
{
        if (!valid_container_id(container_id))
                return berr_set(err, -EINVAL, "invalid container id \"%.64s\"", container_id);
        _cleanup_free_ char *p = xasprintf("%s/rootfs.json", container_id);
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        _cleanup_json_ json_t *rec = NULL;
        int r = fs_read_file_at(s->containers_fd, p, 1 << 20, &buf, &len);
        if (r == -ENOENT && faccessat(s->containers_fd, container_id, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
                return berr_set(err, -ENOENT, "no rootfs for container %s", container_id);
        if (r == 0)
                json_parse_buf(buf, len, &rec, NULL);
        _cleanup_free_ char *merged = xasprintf("%s/containers/%s/merged", s->root, container_id);
        if (umount2(merged, MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
                return berr_set_errno(err, -errno, "unmount %s", merged);
        const char *upper = json_string_value(json_object_get(rec, "upper"));
        _cleanup_free_ char *own_upper = xasprintf("%s/containers/%s/upper", s->root, container_id);
        if (upper && strcmp(upper, own_upper) != 0) {
                /* Upper dir elsewhere (a quota volume): remove upper/ and work/ there. */
                _cleanup_free_ char *base = xstrdup(upper);
                char *slash = strrchr(base, '/');
                if (slash) {
                        *slash = '\0';
                        _cleanup_free_ char *w = xasprintf("%s/work", base);
                        fs_rm_rf_at(AT_FDCWD, upper);
                        fs_rm_rf_at(AT_FDCWD, w);
                }
        }
        if ((r = fs_rm_rf_at(s->containers_fd, container_id)) < 0)
                return berr_set_errno(err, r, "remove container %s rootfs", container_id);
        return 0;
}
