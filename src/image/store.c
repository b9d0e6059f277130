/* SPDX-License-Identifier: Apache-2.0 */
/* The image store: layout, locking, crash recovery, image records, list/inspect/remove/prune. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image/reference.h"
#include "image/store_internal.h"
#include "lib/fs.h"
#include "lib/json.h"
#include "lib/log.h"

int store_lock(struct image_store *s, const char *name, bool exclusive, bool wait)
{
        int fd = openat(s->locks_fd, name, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        for (;;) {
                if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB)) == 0)
                        return fd;
                if (errno == EINTR)
                        continue;
                int r = -errno;
                close(fd);
                return r;
        }
}

#define UNSYNCED_AGE_SECONDS 35 /* dirty_expire_centisecs (30 s) plus a margin */

static int read_boot_id(char out[static 40])
{
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = fs_read_file_at(AT_FDCWD, "/proc/sys/kernel/random/boot_id", 64, &buf, &len);
        if (r < 0)
                return r;
        snprintf(out, 40, "%.*s", (int)strcspn(buf, "\n"), buf);
        return 0;
}

int store_layer_mark_unsynced(struct image_store *s, const char *chain_id, struct berr **err)
{
        char boot[40];
        int r = read_boot_id(boot);
        if (r < 0)
                return berr_set_errno(err, r, "read the kernel's boot id");
        _cleanup_close_ int fd =
            openat(s->unsynced_fd, digest_hex(chain_id), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || (r = fs_write_all(fd, boot, strlen(boot))) < 0)
                return berr_set_errno(err, fd < 0 ? -errno : r, "mark layer %s", chain_id);
        return 0;
}

/* See store_layer_mark_unsynced(). Failures only leave markers for the next open to retry. */
static void store_settle_unsynced(struct image_store *s)
{
        char boot[40];
        if (read_boot_id(boot) < 0)
                return;
        _cleanup_close_ int dfd = openat(s->unsynced_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = dfd >= 0 ? fdopendir(TAKE_FD(dfd)) : NULL;
        if (!d)
                return;
        char **settled = NULL;
        size_t n = 0;
        struct dirent *de;
        time_t now = time(NULL);
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                _cleanup_free_ char *buf = NULL;
                size_t len = 0;
                struct stat st;
                if (fs_read_file_at(dirfd(d), de->d_name, 64, &buf, &len) < 0 ||
                    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (strcmp(buf, boot) != 0) {
                        /* Committed before a reboot that may not have been clean: never trust it. */
                        _cleanup_free_ char *lock = xasprintf("layer-%s", de->d_name);
                        _cleanup_close_ int lk = store_lock(s, lock, true, false);
                        if (lk < 0)
                                continue;
                        if (fs_rm_rf_at(s->layers_fd, de->d_name) == 0)
                                unlinkat(dirfd(d), de->d_name, 0);
                        log_warn(
                            "image store: dropped layer %s committed before the last reboot without a sync",
                            de->d_name);
                } else if (now - st.st_mtime >= UNSYNCED_AGE_SECONDS) {
                        settled = xrealloc(settled, (n + 1) * sizeof(char *));
                        settled[n++] = xstrdup(de->d_name);
                }
        }
        /* By now the kernel has written these back on its own: the syncfs is cheap, and makes it certain. */
        if (n > 0 && syncfs(s->layers_fd) == 0)
                for (size_t i = 0; i < n; i++)
                        unlinkat(dirfd(d), settled[i], 0);
        for (size_t i = 0; i < n; i++)
                free(settled[i]);
        free(settled);
        closedir(d);
}

static int open_subdir(int root, const char *name, mode_t mode, int *ret)
{
        if (mkdirat(root, name, mode) < 0 && errno != EEXIST)
                return -errno;
        int fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        *ret = fd;
        return 0;
}

/*
 * Remove staging directories whose owner died: each owner holds an exclusive flock on its staging dir
 * for as long as it works in it, so one we can lock is abandoned. A leftover mount (an export or rootfs
 * helper killed mid-way) is detached first.
 */
static void store_recover(struct image_store *s)
{
        _cleanup_close_ int dfd = openat(s->tmp_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = dfd >= 0 ? fdopendir(TAKE_FD(dfd)) : NULL;
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                _cleanup_close_ int efd = openat(dirfd(d), de->d_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                if (efd >= 0 && flock(efd, LOCK_EX | LOCK_NB) < 0)
                        continue; /* in use by a live process */
                _cleanup_free_ char *merged = xasprintf("%s/tmp/%s/merged", s->root, de->d_name);
                umount2(merged, MNT_DETACH);
                int r = fs_rm_rf_at(dirfd(d), de->d_name);
                if (r < 0)
                        log_warn("image store: cannot remove abandoned staging %s: %s", de->d_name,
                                 strerror(-r));
                else
                        log_debug("image store: removed abandoned staging %s", de->d_name);
        }
        closedir(d);
}

int store_open(const char *data_dir, const struct berth_config *cfg, struct image_store **ret,
               struct berr **err)
{
        int r = fs_mkdir_p_at(AT_FDCWD, data_dir, 0711);
        if (r < 0)
                return berr_set_errno(err, r, "create data directory %s", data_dir);
        struct image_store *s = xcalloc(1, sizeof(*s));
        s->root_fd = s->layers_fd = s->blobs_fd = s->tmp_fd = s->locks_fd = s->containers_fd =
            s->unsynced_fd = -1;
        s->root = xasprintf("%s/%s", data_dir, STORE_DIR);
        s->cfg = cfg;
        _cleanup_close_ int dfd = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
                r = berr_set_errno(err, -errno, "open data directory %s", data_dir);
                goto fail;
        }
        if ((r = open_subdir(dfd, STORE_DIR, 0711, &s->root_fd)) < 0 ||
            (r = open_subdir(s->root_fd, "layers", 0700, &s->layers_fd)) < 0 ||
            (r = open_subdir(s->root_fd, "tmp", 0700, &s->tmp_fd)) < 0 ||
            (r = open_subdir(s->root_fd, "locks", 0700, &s->locks_fd)) < 0 ||
            (r = open_subdir(s->root_fd, "containers", 0711, &s->containers_fd)) < 0 ||
            (r = open_subdir(s->root_fd, "unsynced", 0700, &s->unsynced_fd)) < 0 ||
            (r = fs_mkdir_p_at(s->root_fd, "blobs/sha256", 0700)) < 0 ||
            (s->blobs_fd = openat(s->root_fd, "blobs/sha256", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
                r = berr_set_errno(err, r < 0 ? r : -errno, "open image store %s", s->root);
                goto fail;
        }
        store_recover(s);
        store_settle_unsynced(s);
        *ret = s;
        return 0;
fail:
        store_close(s);
        return r;
}

void store_close(struct image_store *s)
{
        if (!s)
                return;
        int *fds[] = {
                &s->root_fd, &s->layers_fd, &s->blobs_fd, &s->tmp_fd, &s->locks_fd, &s->containers_fd
        };
        for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
                closep(fds[i]);
        free(s->root);
        free(s);
}

int store_staging_new(struct image_store *s, const char *prefix, char **ret_name, int *ret_fd,
                      struct berr **err)
{
        for (int attempt = 0; attempt < 16; attempt++) {
                char rnd[17];
                fs_random_hex(rnd, 8);
                _cleanup_free_ char *name = xasprintf("%s-%s", prefix, rnd);
                if (mkdirat(s->tmp_fd, name, 0700) < 0) {
                        if (errno == EEXIST)
                                continue;
                        return berr_set_errno(err, -errno, "create staging directory in %s/tmp", s->root);
                }
                int fd = openat(s->tmp_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
                        int r = -errno;
                        if (fd >= 0)
                                close(fd);
                        unlinkat(s->tmp_fd, name, AT_REMOVEDIR);
                        return berr_set_errno(err, r, "lock staging directory");
                }
                *ret_name = TAKE_PTR(name);
                *ret_fd = fd;
                return 0;
        }
        return berr_set(err, -EEXIST, "cannot create a unique staging directory");
}

int store_images_read(struct image_store *s, json_t **ret, struct berr **err)
{
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = fs_read_file_at(s->root_fd, STORE_IMAGES_FILE, STORE_IMAGES_MAX, &buf, &len);
        if (r == -ENOENT) {
                *ret = json_pack("{s:i, s:{}, s:{}}", "version", 1, "images", "refs");
                return 0;
        }
        if (r < 0)
                return berr_set_errno(err, r, "read %s/%s", s->root, STORE_IMAGES_FILE);
        json_t *doc = NULL;
        r = json_parse_buf(buf, len, &doc, err);
        if (r < 0)
                return berr_prefix(err, r, "%s/%s is corrupt", s->root, STORE_IMAGES_FILE);
        if (!json_is_object(json_object_get(doc, "images")) ||
            !json_is_object(json_object_get(doc, "refs"))) {
                json_decref(doc);
                return berr_set(err, -EINVAL, "%s/%s is corrupt: missing images or refs", s->root,
                                STORE_IMAGES_FILE);
        }
        *ret = doc;
        return 0;
}

int store_images_open(struct image_store *s, bool exclusive, int *ret_lock, json_t **ret, struct berr **err)
{
        int lk = store_lock(s, "store", exclusive, true);
        if (lk < 0)
                return berr_set_errno(err, lk, "lock image store");
        int r = store_images_read(s, ret, err);
        if (r < 0) {
                close(lk);
                return r;
        }
        *ret_lock = lk;
        return 0;
}

int store_images_write(struct image_store *s, json_t *doc, struct berr **err)
{
        _cleanup_free_ char *text = json_dump_str(doc, true);
        int r = fs_write_file_atomic_at(s->root_fd, STORE_IMAGES_FILE, text, strlen(text), 0600);
        if (r < 0)
                return berr_set_errno(err, r, "write %s/%s", s->root, STORE_IMAGES_FILE);
        return 0;
}

int store_blob_write(struct image_store *s, const char *digest, const void *data, size_t len,
                     struct berr **err)
{
        char got[DIGEST_STR_MAX];
        sha256_str(data, len, got);
        if (strcmp(got, digest) != 0)
                return berr_set(err, -EBADMSG, "blob %s: content hashes to %s", digest, got);
        const char *hex = digest_hex(digest);
        if (faccessat(s->blobs_fd, hex, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
                return 0;
        int r = fs_write_file_atomic_at(s->blobs_fd, hex, data, len, 0600);
        if (r < 0)
                return berr_set_errno(err, r, "store blob %s", digest);
        return 0;
}

int store_blob_read(struct image_store *s, const char *digest, size_t max, char **ret, size_t *ret_len)
{
        if (digest_validate(digest, NULL) < 0 || strncmp(digest, "sha256:", 7) != 0)
                return -EINVAL;
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = fs_read_file_at(s->blobs_fd, digest_hex(digest), max, &buf, &len);
        if (r < 0)
                return r;
        char got[DIGEST_STR_MAX];
        sha256_str(buf, len, got);
        if (strcmp(got, digest) != 0)
                return -EBADMSG; /* bit rot or tampering: treat as absent, it will be fetched again */
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

bool store_layer_exists(struct image_store *s, const char *chain_id)
{
        _cleanup_free_ char *p = xasprintf("%s/%s", digest_hex(chain_id), STORE_LAYER_META);
        return faccessat(s->layers_fd, p, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

int store_image_lowers(struct image_store *s, json_t *image, char ***ret, size_t *ret_n, struct berr **err)
{
        json_t *layers = json_object_get(image, "layers");
        size_t n = json_array_size(layers);
        char **v = xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++) {
                const char *chain = json_string_value(json_object_get(json_array_get(layers, i), "chain_id"));
                if (!chain || digest_validate(chain, NULL) < 0 || !store_layer_exists(s, chain)) {
                        strv_free(v);
                        return berr_set(
                            err, -ENOENT,
                            "layer %s of the image is missing from the store; pull the image again",
                            chain ? chain : "?");
                }
                v[n - 1 - i] = xasprintf("%s/layers/%s/%s", s->root, digest_hex(chain), STORE_LAYER_DIFF);
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

int store_image_resolve(struct image_store *s, const char *ref, json_t **ret_image, char ***ret_lowers,
                        size_t *ret_n, struct berr **err)
{
        _cleanup_close_ int lk = -1;
        _cleanup_json_ json_t *doc = NULL;
        json_t *img = NULL;
        int r = store_images_open(s, false, &lk, &doc, err);
        if (r < 0 || (r = store_images_find(doc, ref, &img, NULL, err)) < 0)
                return r;
        if ((r = store_image_lowers(s, img, ret_lowers, ret_n, err)) < 0) {
                json_decref(img);
                return r;
        }
        *ret_image = img;
        return 0;
}

static bool is_hex_prefix(const char *s)
{
        size_t n = strlen(s);
        if (n < 12 || n > 64)
                return false;
        return strspn(s, "0123456789abcdef") == n;
}

int store_images_find(json_t *doc, const char *ref, json_t **ret_image, char **ret_key, struct berr **err)
{
        json_t *images = json_object_get(doc, "images");
        json_t *refs = json_object_get(doc, "refs");
        const char *want = ref;
        if (strncmp(want, "sha256:", 7) == 0)
                want += 7;
        /* An image id or manifest digest (or a unique prefix), as `docker image` accepts. */
        if (is_hex_prefix(want)) {
                const char *k, *found = NULL;
                json_t *v;
                int matches = 0;
                json_object_foreach (images, k, v) {
                        const char *cfg = json_string_value(json_object_get(v, "config_digest"));
                        if (strncmp(digest_hex(k), want, strlen(want)) == 0 ||
                            (cfg && strncmp(digest_hex(cfg), want, strlen(want)) == 0)) {
                                if (!found || strcmp(found, k) != 0)
                                        matches++;
                                found = k;
                        }
                }
                if (matches > 1)
                        return berr_set(err, -EINVAL, "image id prefix \"%s\" is ambiguous", ref);
                if (found) {
                        *ret_image = json_incref(json_object_get(images, found));
                        if (ret_key)
                                *ret_key = NULL;
                        return 0;
                }
        }
        _cleanup_(image_ref_freep) struct image_ref *r = NULL;
        _cleanup_berr_ struct berr *perr = NULL;
        if (image_ref_parse(ref, &r, &perr) < 0)
                return berr_set(err, -ENOENT, "no such image: %s (%s)", ref, berr_msg(perr));
        _cleanup_free_ char *name = image_ref_name(r);
        _cleanup_free_ char *key = NULL;
        if (r->digest) {
                key = xasprintf("%s@%s", name, r->digest);
                if (!json_object_get(images, r->digest))
                        return berr_set(err, -ENOENT, "no such image: %s", ref);
                *ret_image = json_incref(json_object_get(images, r->digest));
        } else {
                key = xasprintf("%s:%s", name, r->tag);
                const char *digest = json_string_value(json_object_get(refs, key));
                json_t *img = digest ? json_object_get(images, digest) : NULL;
                if (!img)
                        return berr_set(err, -ENOENT, "no such image: %s", key);
                *ret_image = json_incref(img);
        }
        if (ret_key)
                *ret_key = TAKE_PTR(key);
        return 0;
}

int store_list(struct image_store *s, json_t **ret, struct berr **err)
{
        _cleanup_close_ int lk = -1;
        _cleanup_json_ json_t *doc = NULL;
        int r = store_images_open(s, false, &lk, &doc, err);
        if (r < 0)
                return r;
        json_t *out = json_array();
        json_t *images = json_object_get(doc, "images");
        json_t *tagged = json_object();
        const char *key;
        json_t *v;
        json_object_foreach (json_object_get(doc, "refs"), key, v) {
                const char *digest = json_string_value(v);
                json_t *img = digest ? json_object_get(images, digest) : NULL;
                if (!img)
                        continue;
                const char *at = strrchr(key, '@');
                const char *slash = strrchr(key, '/');
                const char *colon = strrchr(key, ':');
                char *repo, *tag = NULL;
                if (at) {
                        repo = xstrndup(key, (size_t)(at - key));
                } else if (colon && (!slash || colon > slash)) {
                        repo = xstrndup(key, (size_t)(colon - key));
                        tag = xstrdup(colon + 1);
                } else
                        repo = xstrdup(key);
                if (at && json_object_get(tagged, digest)) {
                        free(repo);
                        continue; /* a digest ref is shown only for images without a tag */
                }
                if (!at)
                        json_object_set_new(tagged, digest, json_true());
                json_array_append_new(out, json_pack("{s:s, s:s?, s:s, s:O?, s:O?, s:O?, s:O?, s:O?}",
                                                     "repository", repo, "tag", tag, "digest", digest, "id",
                                                     json_object_get(img, "config_digest"), "size",
                                                     json_object_get(img, "size"), "unpacked_size",
                                                     json_object_get(img, "unpacked_size"), "created",
                                                     json_object_get(img, "created"), "platform",
                                                     json_object_get(img, "platform")));
                free(repo);
                free(tag);
        }
        /* Drop digest-only rows for images that also have a tag row listed earlier in a different order. */
        json_t *final = json_array();
        size_t i;
        json_array_foreach (out, i, v) {
                if (!json_object_get(v, "tag") &&
                    json_object_get(tagged, json_string_value(json_object_get(v, "digest"))))
                        continue;
                json_array_append(final, v);
        }
        json_decref(out);
        json_decref(tagged);
        *ret = final;
        return 0;
}

int store_inspect(struct image_store *s, const char *ref, json_t **ret, struct berr **err)
{
        _cleanup_close_ int lk = -1;
        _cleanup_json_ json_t *doc = NULL;
        int r = store_images_open(s, false, &lk, &doc, err);
        if (r < 0)
                return r;
        json_t *img = NULL;
        if ((r = store_images_find(doc, ref, &img, NULL, err)) < 0)
                return r;
        json_t *out = json_deep_copy(img);
        json_decref(img);
        const char *cfg = json_string_value(json_object_get(out, "config_digest"));
        _cleanup_free_ char *cbuf = NULL;
        size_t clen = 0;
        json_t *config = NULL;
        if (cfg && store_blob_read(s, cfg, 4 << 20, &cbuf, &clen) == 0 &&
            json_parse_buf(cbuf, clen, &config, NULL) == 0)
                json_object_set_new(out, "config", config);
        json_t *refs = json_array();
        const char *k;
        json_t *v;
        json_object_foreach (json_object_get(doc, "refs"), k, v) {
                if (json_equal(v, json_object_get(out, "digest")))
                        json_array_append_new(refs, json_string(k));
        }
        json_object_set_new(out, "references", refs);
        *ret = out;
        return 0;
}

int store_remove(struct image_store *s, const char *ref, struct berr **err)
{
        _cleanup_close_ int lk = -1;
        _cleanup_json_ json_t *doc = NULL;
        int r = store_images_open(s, true, &lk, &doc, err);
        if (r < 0)
                return r;
        _cleanup_json_ json_t *img = NULL;
        _cleanup_free_ char *key = NULL;
        if ((r = store_images_find(doc, ref, &img, &key, err)) < 0)
                return r;
        const char *digest = json_string_value(json_object_get(img, "digest"));
        json_t *refs = json_object_get(doc, "refs");
        if (key && json_object_get(refs, key)) {
                json_object_del(refs, key);
        } else {
                /* Removing by digest or id removes every reference to the image. */
                const char *k;
                json_t *v;
                void *tmp;
                json_object_foreach_safe(refs, tmp, k, v)
                {
                        if (json_is_string(v) && strcmp(json_string_value(v), digest) == 0)
                                json_object_del(refs, k);
                }
        }
        /* As `docker rmi`: once no tag names the image, its digest references and the record go too. */
        bool tagged = false;
        const char *k;
        json_t *v;
        json_object_foreach (refs, k, v)
                tagged = tagged ||
                         (json_is_string(v) && strcmp(json_string_value(v), digest) == 0 && !strchr(k, '@'));
        if (!tagged) {
                void *tmp;
                json_object_foreach_safe(refs, tmp, k, v)
                {
                        if (json_is_string(v) && strcmp(json_string_value(v), digest) == 0)
                                json_object_del(refs, k);
                }
                json_object_del(json_object_get(doc, "images"), digest);
        }
        return store_images_write(s, doc, err);
}

/* Collect every ChainID in use: by image records and by container rootfs records. */
static int collect_used_layers(struct image_store *s, json_t *doc, json_t *used, struct berr **err)
{
        const char *k;
        json_t *img;
        json_object_foreach (json_object_get(doc, "images"), k, img) {
                size_t i;
                json_t *l;
                json_array_foreach (json_object_get(img, "layers"), i, l) {
                        const char *c = json_string_value(json_object_get(l, "chain_id"));
                        if (c)
                                json_object_set_new(used, digest_hex(c), json_true());
                }
                json_object_set_new(used, k, json_true());
                const char *cfg = json_string_value(json_object_get(img, "config_digest"));
                if (cfg)
                        json_object_set_new(used, cfg, json_true());
                const char *idx = json_string_value(json_object_get(img, "index_digest"));
                if (idx)
                        json_object_set_new(used, idx, json_true());
        }
        _cleanup_close_ int cfd = openat(s->containers_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = cfd >= 0 ? fdopendir(TAKE_FD(cfd)) : NULL;
        if (!d)
                return berr_set_errno(err, -errno, "list containers");
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                _cleanup_free_ char *p = xasprintf("%s/rootfs.json", de->d_name);
                _cleanup_free_ char *buf = NULL;
                size_t len = 0;
                _cleanup_json_ json_t *rec = NULL;
                if (fs_read_file_at(s->containers_fd, p, 1 << 20, &buf, &len) < 0 ||
                    json_parse_buf(buf, len, &rec, NULL) < 0)
                        continue;
                size_t i;
                json_t *c;
                json_array_foreach (json_object_get(rec, "layers"), i, c) {
                        if (json_is_string(c))
                                json_object_set_new(used, digest_hex(json_string_value(c)), json_true());
                }
        }
        closedir(d);
        return 0;
}

int store_prune(struct image_store *s, uint64_t *ret_layers, uint64_t *ret_bytes, struct berr **err)
{
        /* Exclusive gc lock: no pull or rootfs creation is between committing a layer and recording its use.
         */
        _cleanup_close_ int gc = store_lock(s, "gc", true, true);
        if (gc < 0)
                return berr_set_errno(err, gc, "lock image store for pruning");
        _cleanup_close_ int lk = -1;
        _cleanup_json_ json_t *doc = NULL;
        int r = store_images_open(s, false, &lk, &doc, err);
        if (r < 0)
                return r;
        _cleanup_json_ json_t *used = json_object();
        if ((r = collect_used_layers(s, doc, used, err)) < 0)
                return r;
        uint64_t n = 0, bytes = 0;
        _cleanup_close_ int lfd = openat(s->layers_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = lfd >= 0 ? fdopendir(TAKE_FD(lfd)) : NULL;
        if (!d)
                return berr_set_errno(err, -errno, "list layers");
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.' || json_object_get(used, de->d_name))
                        continue;
                uint64_t sz = 0;
                fs_disk_usage_at(dirfd(d), de->d_name, &sz);
                /* Rename first so that a crash mid-removal never leaves a half layer under its ChainID. */
                char rnd[17];
                fs_random_hex(rnd, 8);
                _cleanup_free_ char *trash = xasprintf("prune-%s", rnd);
                if (renameat(dirfd(d), de->d_name, s->tmp_fd, trash) < 0) {
                        r = berr_set_errno(err, -errno, "remove layer %s", de->d_name);
                        break;
                }
                if ((r = fs_rm_rf_at(s->tmp_fd, trash)) < 0) {
                        r = berr_set_errno(err, r, "remove layer %s", de->d_name);
                        break;
                }
                n++;
                bytes += sz;
        }
        closedir(d);
        if (r < 0)
                return r;
        /* Blobs (manifests, configs) no image record names. */
        _cleanup_close_ int bfd = openat(s->blobs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        d = bfd >= 0 ? fdopendir(TAKE_FD(bfd)) : NULL;
        while (d && (de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                _cleanup_free_ char *dg = xasprintf("sha256:%s", de->d_name);
                if (json_object_get(used, dg))
                        continue;
                struct stat st;
                if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
                        bytes += (uint64_t)st.st_size;
                unlinkat(dirfd(d), de->d_name, 0);
        }
        if (d)
                closedir(d);
        *ret_layers = n;
        *ret_bytes = bytes;
        return 0;
}
