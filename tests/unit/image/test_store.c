/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The store's local operations on a hand-made store: records, lookup, rootfs overlay mounts (the cell's
 * API), prune honouring containers, crash recovery of abandoned staging dirs. Needs root (mounts).
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include "image/idmap.h"
#include "image/store_internal.h"
#include "lib/fs.h"
#include "lib/json.h"

struct fixture {
        char dir[64];
        struct image_store *s;
        char chain[2][DIGEST_STR_MAX];
};

static void write_at(int dfd, const char *path, const char *text)
{
        _cleanup_close_ int fd = openat(dfd, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(fs_write_all(fd, text, strlen(text)), 0);
}

/* Two layers: base has etc/a, etc/gone, dir/x; top whites out etc/gone and makes dir opaque with dir/y. */
static void make_layer(struct fixture *f, int i)
{
        char diff_id[DIGEST_STR_MAX];
        sha256_str(i ? "top" : "base", i ? 3 : 4, diff_id);
        digest_chain_id(i ? f->chain[0] : NULL, diff_id, f->chain[i]);
        _cleanup_free_ char *p = xasprintf("layers/%s/diff", digest_hex(f->chain[i]));
        assert_int_equal(fs_mkdir_p_at(f->s->root_fd, p, 0755), 0);
        _cleanup_close_ int d = openat(f->s->root_fd, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(d >= 0);
        if (i == 0) {
                assert_int_equal(mkdirat(d, "etc", 0755), 0);
                write_at(d, "etc/a", "a\n");
                write_at(d, "etc/gone", "gone\n");
                assert_int_equal(mkdirat(d, "dir", 0755), 0);
                write_at(d, "dir/x", "x\n");
        } else {
                assert_int_equal(mkdirat(d, "etc", 0755), 0);
                assert_int_equal(mknodat(d, "etc/gone", S_IFCHR | 0, makedev(0, 0)), 0);
                assert_int_equal(mkdirat(d, "dir", 0755), 0);
                _cleanup_free_ char *dp =
                    xasprintf("%s/layers/%s/diff/dir", f->s->root, digest_hex(f->chain[i]));
                assert_int_equal(setxattr(dp, "trusted.overlay.opaque", "y", 1, 0), 0);
                write_at(d, "dir/y", "y\n");
        }
        _cleanup_free_ char *m = xasprintf("layers/%s/layer.json", digest_hex(f->chain[i]));
        write_at(f->s->root_fd, m, "{}");
}

static int setup(void **state)
{
        struct fixture *f = xcalloc(1, sizeof(*f));
        snprintf(f->dir, sizeof(f->dir), "/tmp/berth-test-store-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        struct berr *err = NULL;
        assert_int_equal(store_open(f->dir, NULL, &f->s, &err), 0);
        make_layer(f, 0);
        make_layer(f, 1);
        _cleanup_json_ json_t *doc = NULL;
        assert_int_equal(store_images_read(f->s, &doc, NULL), 0);
        const char *digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        json_object_set_new(
            json_object_get(doc, "images"), digest,
            json_pack("{s:s, s:s, s:[{s:s},{s:s}]}", "digest", digest, "config_digest",
                      "sha256:2222222222222222222222222222222222222222222222222222222222222222", "layers",
                      "chain_id", f->chain[0], "chain_id", f->chain[1]));
        json_object_set_new(json_object_get(doc, "refs"), "example.com/test/app:v1", json_string(digest));
        assert_int_equal(store_images_write(f->s, doc, NULL), 0);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        store_close(f->s);
        fs_rm_rf_at(AT_FDCWD, f->dir);
        free(f);
        return 0;
}

static void test_find(void **state)
{
        struct fixture *f = *state;
        _cleanup_json_ json_t *doc = NULL, *img = NULL, *img2 = NULL;
        assert_int_equal(store_images_read(f->s, &doc, NULL), 0);
        assert_int_equal(store_images_find(doc, "example.com/test/app:v1", &img, NULL, NULL), 0);
        assert_int_equal(store_images_find(doc, "111111111111", &img2, NULL, NULL), 0);
        assert_true(json_equal(img, img2));
        json_t *none = NULL;
        struct berr *err = NULL;
        assert_int_equal(store_images_find(doc, "example.com/test/app:v2", &none, NULL, &err), -ENOENT);
        assert_non_null(strstr(berr_msg(err), "no such image"));
        berr_free(err);
}

static void test_rootfs_overlay_and_prune(void **state)
{
        struct fixture *f = *state;
        char *rootfs = NULL;
        struct berr *err = NULL;
        int r = store_rootfs_create(f->s, "example.com/test/app:v1", "c1", NULL, &rootfs, &err);
        if (r < 0)
                fail_msg("%s", berr_msg(err));
        _cleanup_close_ int m = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(m >= 0);
        assert_int_equal(faccessat(m, "etc/a", F_OK, 0), 0);
        assert_int_equal(faccessat(m, "etc/gone", F_OK, AT_SYMLINK_NOFOLLOW), -1); /* whiteout */
        assert_int_equal(faccessat(m, "dir/x", F_OK, AT_SYMLINK_NOFOLLOW), -1);    /* opaque */
        assert_int_equal(faccessat(m, "dir/y", F_OK, 0), 0);
        /* Writes land in the container's own upper dir; the shared layer stays untouched. */
        write_at(m, "etc/a", "changed\n");
        _cleanup_free_ char *lower =
            xasprintf("%s/image/layers/%s/diff/etc/a", f->dir, digest_hex(f->chain[0]));
        char *data = NULL;
        size_t len = 0;
        assert_int_equal(fs_read_file_at(AT_FDCWD, lower, 100, &data, &len), 0);
        assert_string_equal(data, "a\n");
        free(data);
        struct stat st;
        _cleanup_free_ char *upper = xasprintf("%s/image/containers/c1/upper", f->dir);
        assert_int_equal(stat(upper, &st), 0);
        assert_int_equal(st.st_uid, idmap_to_host(0));
        /* A second container with the same id is refused. */
        char *again = NULL;
        assert_true(store_rootfs_create(f->s, "example.com/test/app:v1", "c1", NULL, &again, NULL) < 0);
        /* Untag the image: prune must keep the layers the container still uses. */
        assert_int_equal(store_remove(f->s, "example.com/test/app:v1", NULL), 0);
        uint64_t n = 0, bytes = 0;
        assert_int_equal(store_prune(f->s, &n, &bytes, NULL), 0);
        assert_int_equal(n, 0);
        closep(&m);
        assert_int_equal(store_rootfs_remove(f->s, "c1", &err), 0);
        _cleanup_free_ char *merged = xasprintf("%s/image/containers/c1", f->dir);
        assert_int_equal(access(merged, F_OK), -1);
        assert_int_equal(store_prune(f->s, &n, &bytes, NULL), 0);
        assert_int_equal(n, 2);
        assert_int_equal(store_rootfs_remove(f->s, "c1", NULL), -ENOENT);
        assert_int_equal(store_rootfs_create(f->s, "x", "../evil", NULL, &again, NULL), -EINVAL);
        free(rootfs);
}

static void test_recovery_removes_only_abandoned_staging(void **state)
{
        struct fixture *f = *state;
        char *live = NULL, *dead = NULL;
        int live_fd = -1, dead_fd = -1;
        assert_int_equal(store_staging_new(f->s, "layer", &live, &live_fd, NULL), 0);
        assert_int_equal(store_staging_new(f->s, "layer", &dead, &dead_fd, NULL), 0);
        close(dead_fd); /* its owner "died" */
        struct image_store *s2 = NULL;
        assert_int_equal(store_open(f->dir, NULL, &s2, NULL), 0);
        assert_int_equal(faccessat(f->s->tmp_fd, live, F_OK, 0), 0);
        assert_int_equal(faccessat(f->s->tmp_fd, dead, F_OK, 0), -1);
        store_close(s2);
        close(live_fd);
        free(live);
        free(dead);
}

static void test_unsynced_layers_settle(void **state)
{
        struct fixture *f = *state;
        /* A layer committed without a sync before a reboot is dropped; one from this boot, once old enough,
         * is synced and its marker removed; a fresh one keeps its marker. */
        _cleanup_close_ int u = openat(f->s->root_fd, "unsynced", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(u >= 0);
        write_at(u, digest_hex(f->chain[1]), "00000000-0000-0000-0000-000000000000");
        assert_int_equal(store_layer_mark_unsynced(f->s, f->chain[0], NULL), 0);
        struct image_store *s2 = NULL;
        assert_int_equal(store_open(f->dir, NULL, &s2, NULL), 0);
        assert_false(store_layer_exists(s2, f->chain[1]));
        assert_int_equal(faccessat(u, digest_hex(f->chain[1]), F_OK, 0), -1);
        assert_true(store_layer_exists(s2, f->chain[0]));
        assert_int_equal(faccessat(u, digest_hex(f->chain[0]), F_OK, 0), 0); /* too fresh to settle */
        store_close(s2);
        struct timespec old[2] = { { .tv_sec = 1000000000 }, { .tv_sec = 1000000000 } };
        assert_int_equal(utimensat(u, digest_hex(f->chain[0]), old, 0), 0);
        assert_int_equal(store_open(f->dir, NULL, &s2, NULL), 0);
        assert_true(store_layer_exists(s2, f->chain[0]));
        assert_int_equal(faccessat(u, digest_hex(f->chain[0]), F_OK, 0), -1);
        store_close(s2);
}

int main(void)
{
        if (geteuid() != 0) {
                printf("1..0 # SKIP needs root for overlay mounts\n");
                return 77;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_find, setup, teardown),
                cmocka_unit_test_setup_teardown(test_rootfs_overlay_and_prune, setup, teardown),
                cmocka_unit_test_setup_teardown(test_recovery_removes_only_abandoned_staging, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_unsynced_layers_settle, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
