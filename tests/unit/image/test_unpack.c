/* SPDX-License-Identifier: Apache-2.0 */
/*
 * unpack_layer / unpack_fixup_implicit_dirs. Tars are built in memory with libarchive's pax writer (it
 * writes hostile names verbatim) or, where a header must be malformed, by hand. Every hostile case runs
 * in a sandbox holding the layer directory next to an "outside" directory with a sentinel file, and
 * checks both the error and that nothing outside the layer changed.
 */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include <cmocka.h>

#include "image/decompress.h"
#include "image/idmap.h"
#include "image/unpack.h"
#include "image/unpack_internal.h"
#include "lib/fs.h"

#define SENTINEL "root:x:0:0:sentinel\n"

#include "../testbuf.h"

/* ---- sandbox: <tmp>/layer (unpacked into) and <tmp>/outside (must never change) ---- */

struct sandbox {
        char dir[64];
        char outside[96];
        int top, layer, out;
};

static int sb_setup(void **state)
{
        if (geteuid() != 0) {
                print_message("unpack tests need root (chown, mknod, trusted.* xattrs)\n");
                return -1;
        }
        struct sandbox *sb = xcalloc(1, sizeof(*sb));
        snprintf(sb->dir, sizeof(sb->dir), "/tmp/berth-test-unpack-XXXXXX");
        assert_non_null(mkdtemp(sb->dir));
        snprintf(sb->outside, sizeof(sb->outside), "%s/outside", sb->dir);
        sb->top = open(sb->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(sb->top >= 0);
        assert_int_equal(mkdirat(sb->top, "layer", 0700), 0);
        assert_int_equal(mkdirat(sb->top, "outside", 0755), 0);
        sb->layer = openat(sb->top, "layer", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        sb->out = openat(sb->top, "outside", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(sb->layer >= 0 && sb->out >= 0);
        int f = openat(sb->out, "passwd", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        assert_true(f >= 0);
        assert_int_equal(fs_write_all(f, SENTINEL, strlen(SENTINEL)), 0);
        close(f);
        *state = sb;
        return 0;
}

static int sb_teardown(void **state)
{
        struct sandbox *sb = *state;
        if (!sb)
                return 0;
        close(sb->layer);
        close(sb->out);
        close(sb->top);
        assert_int_equal(fs_rm_rf_at(AT_FDCWD, sb->dir), 0);
        free(sb);
        return 0;
}

/* Nothing was created, changed or removed outside the layer directory. */
static void assert_outside_clean(struct sandbox *sb)
{
        DIR *d = fdopendir(openat(sb->top, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        assert_non_null(d);
        struct dirent *de;
        int n = 0;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                assert_true(strcmp(de->d_name, "layer") == 0 || strcmp(de->d_name, "outside") == 0);
                n++;
        }
        closedir(d);
        assert_int_equal(n, 2);
        d = fdopendir(openat(sb->out, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        assert_non_null(d);
        n = 0;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                assert_string_equal(de->d_name, "passwd");
                n++;
        }
        closedir(d);
        assert_int_equal(n, 1);
        struct stat st;
        assert_int_equal(fstatat(sb->out, "passwd", &st, AT_SYMLINK_NOFOLLOW), 0);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0644);
        assert_int_equal(st.st_uid, 0);
        assert_int_equal(st.st_nlink, 1);
        char *data = NULL;
        assert_int_equal(fs_read_file_at(sb->out, "passwd", 4096, &data, NULL), 0);
        assert_string_equal(data, SENTINEL);
        free(data);
        char names[256];
        assert_int_equal(flistxattr(sb->out, names, sizeof(names)), 0);
        int pf = openat(sb->out, "passwd", O_RDONLY | O_CLOEXEC);
        assert_int_equal(flistxattr(pf, names, sizeof(names)), 0);
        close(pf);
        assert_int_equal(fstat(sb->out, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0755);
        assert_int_equal(st.st_uid, 0);
}

/* ---- tar builder ---- */

struct xa {
        const char *name;
        const void *value;
        size_t len;
};

struct tent {
        const char *path;
        mode_t type; /* AE_IF*; 0 = hardlink */
        mode_t mode;
        int64_t uid, gid;
        const char *data;
        size_t len;
        const char *link; /* symlink or hardlink target */
        time_t mtime;
        struct xa xattrs[4];
        dev_t rdev;
};

static la_ssize_t tb_write_cb(struct archive *a, void *ud, const void *buf, size_t n)
{
        (void)a;
        buf_add(ud, buf, n);
        return (la_ssize_t)n;
}

struct tarb {
        struct archive *a;
        struct buf out;
};

static struct tarb *tb_new(void)
{
        struct tarb *t = xcalloc(1, sizeof(*t));
        t->a = archive_write_new();
        assert_int_equal(archive_write_set_format_pax(t->a), ARCHIVE_OK);
        assert_int_equal(archive_write_open(t->a, &t->out, NULL, tb_write_cb, NULL), ARCHIVE_OK);
        return t;
}

static void tb_add(struct tarb *t, const struct tent *te)
{
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, te->path);
        if (te->type == 0) {
                archive_entry_set_filetype(e, AE_IFREG);
                archive_entry_set_hardlink(e, te->link);
        } else {
                archive_entry_set_filetype(e, te->type);
        }
        archive_entry_set_perm(e, te->mode ? te->mode : (te->type == AE_IFDIR ? 0755 : 0644));
        archive_entry_set_uid(e, te->uid);
        archive_entry_set_gid(e, te->gid);
        archive_entry_set_mtime(e, te->mtime ? te->mtime : 1000000000, 0);
        if (te->type == AE_IFLNK)
                archive_entry_set_symlink(e, te->link);
        if (te->type == AE_IFCHR || te->type == AE_IFBLK)
                archive_entry_set_rdev(e, te->rdev);
        size_t len = te->data ? (te->len ? te->len : strlen(te->data)) : 0;
        archive_entry_set_size(e, te->type == AE_IFREG ? (int64_t)len : 0);
        for (int i = 0; i < 4 && te->xattrs[i].name; i++)
                archive_entry_xattr_add_entry(e, te->xattrs[i].name, te->xattrs[i].value, te->xattrs[i].len);
        int r = archive_write_header(t->a, e);
        assert_true(r == ARCHIVE_OK || r == ARCHIVE_WARN);
        if (te->type == AE_IFREG && len)
                assert_int_equal(archive_write_data(t->a, te->data, len), (la_ssize_t)len);
        archive_entry_free(e);
}

static struct buf tb_finish(struct tarb *t)
{
        assert_int_equal(archive_write_close(t->a), ARCHIVE_OK);
        archive_write_free(t->a);
        struct buf b = t->out;
        free(t);
        return b;
}

static struct buf make_tar(const struct tent *ents, size_t n)
{
        struct tarb *t = tb_new();
        for (size_t i = 0; i < n; i++)
                tb_add(t, &ents[i]);
        return tb_finish(t);
}

/* A hand-made ustar header (for what libarchive's writer will not produce). */
static void raw_header(uint8_t h[512], const char *name, char type, uint64_t size, const char *link)
{
        memset(h, 0, 512);
        snprintf((char *)h, 100, "%s", name);
        snprintf((char *)h + 100, 8, "%07o", 0644);
        snprintf((char *)h + 108, 8, "%07o", 0);
        snprintf((char *)h + 116, 8, "%07o", 0);
        snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
        snprintf((char *)h + 136, 12, "%011o", 1000000000);
        h[156] = (uint8_t)type;
        if (link)
                snprintf((char *)h + 157, 100, "%s", link);
        memcpy(h + 257, "ustar", 6);
        memcpy(h + 263, "00", 2);
        memset(h + 148, ' ', 8);
        unsigned sum = 0;
        for (int i = 0; i < 512; i++)
                sum += h[i];
        snprintf((char *)h + 148, 8, "%06o", sum);
}

/* ---- running unpack_layer ---- */

struct memsrc {
        const uint8_t *p;
        size_t len, pos, chunk;
        size_t fail_after; /* >0: -EIO once this many bytes were handed out */
};

static ssize_t memsrc_read(void *userdata, const void **ret_buf, struct berr **err)
{
        struct memsrc *s = userdata;
        if (s->fail_after && s->pos >= s->fail_after)
                return berr_set(err, -EIO, "connection reset");
        size_t n = MIN(s->chunk, s->len - s->pos);
        *ret_buf = s->p + s->pos;
        s->pos += n;
        return (ssize_t)n;
}

static int unpack_buf(struct sandbox *sb, const struct buf *tar, size_t chunk, const struct unpack_opts *o,
                      struct unpack_result *res, struct berr **err)
{
        struct memsrc s = { .p = tar->p, .len = tar->len, .chunk = chunk ? chunk : 10007 };
        struct unpack_opts def = { .shift_ids = true };
        assert_int_equal(fs_clear_dir(sb->layer), 0); /* unpack_layer wants an empty directory */
        return unpack_layer(sb->layer, memsrc_read, &s, o ? o : &def, res, err);
}

/* Unpack `ents`; expect `code` (and an error message containing `msg` when it fails). */
static void expect(struct sandbox *sb, const struct tent *ents, size_t n, int code, const char *msg)
{
        struct buf tar = make_tar(ents, n);
        struct unpack_result res = { 0 };
        _cleanup_berr_ struct berr *err = NULL;
        int r = unpack_buf(sb, &tar, 0, NULL, &res, &err);
        if (r != code || (msg && (!err || !strstr(berr_msg(err), msg))))
                print_message("got %d (%s), want %d (%s)\n", r, err ? berr_msg(err) : "-", code,
                              msg ? msg : "-");
        assert_int_equal(r, code);
        if (msg)
                assert_non_null(strstr(berr_msg(err), msg));
        if (r == 0)
                unpack_result_done(&res);
        free(tar.p);
        assert_outside_clean(sb);
}

static void lstat_at(int dfd, const char *p, struct stat *st)
{
        if (fstatat(dfd, p, st, AT_SYMLINK_NOFOLLOW) < 0)
                fail_msg("lstat %s: %m", p);
}

static bool has_implicit(const struct unpack_result *r, const char *p)
{
        for (size_t i = 0; i < r->n_implicit_dirs; i++)
                if (strcmp(r->implicit_dirs[i], p) == 0)
                        return true;
        return false;
}

static void read_file(int dfd, const char *p, char *out, size_t n)
{
        char *data = NULL;
        assert_int_equal(fs_read_file_at(dfd, p, n, &data, NULL), 0);
        snprintf(out, n, "%s", data);
        free(data);
}

#define H(x) idmap_to_host(x)

/* ---- tests ---- */

static void test_clean_path(void **state)
{
        (void)state;
        char out[UNPACK_MAX_PATH + 1];
        size_t depth;
        assert_int_equal(unpack_clean_path("./etc//passwd", out, sizeof(out), &depth), 0);
        assert_string_equal(out, "etc/passwd");
        assert_int_equal(depth, 2);
        assert_int_equal(unpack_clean_path("usr/./bin/", out, sizeof(out), &depth), 0);
        assert_string_equal(out, "usr/bin");
        assert_int_equal(unpack_clean_path("./", out, sizeof(out), &depth), 0);
        assert_string_equal(out, "");
        assert_int_equal(unpack_clean_path("...", out, sizeof(out), &depth), 0);
        assert_string_equal(out, "...");
        assert_int_equal(unpack_clean_path("a/..b", out, sizeof(out), &depth), 0);
        assert_int_equal(unpack_clean_path("../x", out, sizeof(out), &depth), -EINVAL);
        assert_int_equal(unpack_clean_path("a/../../x", out, sizeof(out), &depth), -EINVAL);
        assert_int_equal(unpack_clean_path("a/..", out, sizeof(out), &depth), -EINVAL);
        assert_int_equal(unpack_clean_path("/etc/x", out, sizeof(out), &depth), -EINVAL);
        assert_int_equal(unpack_clean_path("", out, sizeof(out), &depth), -EINVAL);
        assert_int_equal(unpack_clean_path(NULL, out, sizeof(out), &depth), -EINVAL);
        char deep[2 * (UNPACK_MAX_DEPTH + 1) + 1];
        for (int i = 0; i <= UNPACK_MAX_DEPTH; i++)
                memcpy(deep + 2 * i, "a/", 2);
        deep[2 * (UNPACK_MAX_DEPTH + 1)] = '\0';
        assert_int_equal(unpack_clean_path(deep, out, sizeof(out), &depth), -E2BIG);
        deep[2 * UNPACK_MAX_DEPTH] = '\0';
        assert_int_equal(unpack_clean_path(deep, out, sizeof(out), &depth), 0);
        char *lng = xmalloc(UNPACK_MAX_PATH + 2);
        memset(lng, 'x', UNPACK_MAX_PATH + 1);
        lng[UNPACK_MAX_PATH + 1] = '\0';
        assert_int_equal(unpack_clean_path(lng, out, sizeof(out), &depth), -ENAMETOOLONG);
        lng[UNPACK_MAX_PATH] = '\0';
        assert_int_equal(unpack_clean_path(lng, out, sizeof(out), &depth), 0);
        free(lng);
}

static void test_entry_types(void **state)
{
        struct sandbox *sb = *state;
        size_t big_len = 3 * 1024 * 1024 + 5;
        char *big = xmalloc(big_len);
        for (size_t i = 0; i < big_len; i++)
                big[i] = (char)('a' + i % 23);
        const struct tent ents[] = {
                { .path = "./", .type = AE_IFDIR, .mode = 0755, .mtime = 1111 },
                { .path = "bin/", .type = AE_IFDIR, .mode = 0750, .uid = 1000, .gid = 1001, .mtime = 2222 },
                { .path = "bin/su", .type = AE_IFREG, .mode = 04755, .data = "ELF", .mtime = 3333 },
                { .path = "bin/sg", .type = AE_IFREG, .mode = 02711, .uid = 5, .gid = 6, .data = "x" },
                { .path = "tmp/", .type = AE_IFDIR, .mode = 01777 },
                { .path = "bin/big", .type = AE_IFREG, .data = big, .len = big_len, .mode = 0600 },
                { .path = "bin/empty", .type = AE_IFREG, .mode = 0444 },
                { .path = "bin/sh",
                  .type = AE_IFLNK,
                  .link = "/bin/busybox",
                  .uid = 7,
                  .gid = 8,
                  .mtime = 4444 },
                { .path = "bin/dangling", .type = AE_IFLNK, .link = "../../../../nowhere" },
                { .path = "bin/su2", .type = 0, .link = "bin/su" },
                { .path = "run/fifo", .type = AE_IFIFO, .mode = 0620, .uid = 9 },
                { .path = "bin/file-in-dir", .type = AE_IFREG, .data = "late child" },
        };
        struct buf tar = make_tar(ents, ARRAY_SIZE(ents));
        struct unpack_result res = { 0 };
        _cleanup_berr_ struct berr *err = NULL;
        int r = unpack_buf(sb, &tar, 0, NULL, &res, &err);
        if (r < 0)
                print_message("%s\n", berr_msg(err));
        assert_int_equal(r, 0);
        assert_outside_clean(sb);
        assert_int_equal(res.entries, ARRAY_SIZE(ents));
        assert_int_equal(res.tar_bytes, tar.len);
        assert_int_equal(res.content_bytes, 3 + 1 + big_len + 10);
        char want[DIGEST_STR_MAX];
        sha256_str(tar.p, tar.len, want);
        assert_string_equal(res.diff_id, want);

        struct stat st;
        lstat_at(sb->layer, ".", &st);
        assert_int_equal(st.st_mode & 07777, 0755);
        assert_int_equal(st.st_uid, H(0));
        assert_int_equal(st.st_mtime, 1111);
        lstat_at(sb->layer, "bin", &st);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0750);
        assert_int_equal(st.st_uid, H(1000));
        assert_int_equal(st.st_gid, H(1001));
        assert_int_equal(st.st_mtime, 2222); /* set after its children were written */
        lstat_at(sb->layer, "bin/su", &st);
        assert_true(S_ISREG(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 04755); /* setuid survives the chown */
        assert_int_equal(st.st_uid, H(0));
        assert_int_equal(st.st_mtime, 3333);
        assert_int_equal(st.st_nlink, 2);
        ino_t su_ino = st.st_ino;
        lstat_at(sb->layer, "bin/su2", &st);
        assert_int_equal(st.st_ino, su_ino);
        lstat_at(sb->layer, "bin/sg", &st);
        assert_int_equal(st.st_mode & 07777, 02711);
        assert_int_equal(st.st_uid, H(5));
        assert_int_equal(st.st_gid, H(6));
        lstat_at(sb->layer, "tmp", &st);
        assert_int_equal(st.st_mode & 07777, 01777);
        lstat_at(sb->layer, "bin/big", &st);
        assert_int_equal(st.st_size, big_len);
        char *data = NULL;
        size_t len;
        assert_int_equal(fs_read_file_at(sb->layer, "bin/big", big_len + 1, &data, &len), 0);
        assert_int_equal(len, big_len);
        assert_memory_equal(data, big, big_len);
        free(data);
        lstat_at(sb->layer, "bin/empty", &st);
        assert_int_equal(st.st_size, 0);
        assert_int_equal(st.st_mode & 07777, 0444);
        lstat_at(sb->layer, "bin/sh", &st);
        assert_true(S_ISLNK(st.st_mode));
        assert_int_equal(st.st_uid, H(7));
        assert_int_equal(st.st_gid, H(8));
        assert_int_equal(st.st_mtime, 4444);
        char lnk[64] = { 0 };
        assert_int_equal(readlinkat(sb->layer, "bin/sh", lnk, sizeof(lnk)), strlen("/bin/busybox"));
        assert_string_equal(lnk, "/bin/busybox");
        lstat_at(sb->layer, "bin/dangling", &st);
        assert_true(S_ISLNK(st.st_mode));
        lstat_at(sb->layer, "run/fifo", &st);
        assert_true(S_ISFIFO(st.st_mode));
        assert_int_equal(st.st_mode & 07777, 0620);
        assert_int_equal(st.st_uid, H(9));
        /* "run" had no entry: an implicit parent, 0755 container root; "." had one. */
        lstat_at(sb->layer, "run", &st);
        assert_int_equal(st.st_mode & 07777, 0755);
        assert_int_equal(st.st_uid, H(0));
        assert_int_equal(res.n_implicit_dirs, 1);
        assert_string_equal(res.implicit_dirs[0], "run");
        assert_null(res.implicit_dirs[1]);
        unpack_result_done(&res);
        free(tar.p);
        free(big);
}

static void test_no_shift_and_id_range(void **state)
{
        struct sandbox *sb = *state;
        const struct tent ents[] = {
                { .path = "f", .type = AE_IFREG, .uid = 1234, .gid = 4321, .data = "x" },
        };
        struct buf tar = make_tar(ents, 1);
        struct unpack_opts o = { .shift_ids = false };
        struct unpack_result res = { 0 };
        assert_int_equal(unpack_buf(sb, &tar, 0, &o, &res, NULL), 0);
        struct stat st;
        lstat_at(sb->layer, "f", &st);
        assert_int_equal(st.st_uid, 1234);
        assert_int_equal(st.st_gid, 4321);
        unpack_result_done(&res);
        free(tar.p);

        const struct tent big_uid[] = { { .path = "g", .type = AE_IFREG, .uid = IDMAP_SIZE, .data = "x" } };
        expect(sb, big_uid, 1, -ERANGE, "entry g: uid 16777216 is outside the range berth maps (0-16777215)");
        const struct tent big_gid[] = { { .path = "g", .type = AE_IFDIR, .gid = 4000000000LL } };
        expect(sb, big_gid, 1, -ERANGE, "gid 4000000000 is outside the range");
}

static void test_whiteouts(void **state)
{
        struct sandbox *sb = *state;
        const struct tent ents[] = {
                { .path = "a/", .type = AE_IFDIR },
                { .path = "a/.wh.b", .type = AE_IFREG, .uid = 3, .gid = 4 },
                { .path = "c/.wh..wh..opq", .type = AE_IFREG },                    /* c only implied */
                { .path = "d/.wh..wh..opq", .type = AE_IFREG },                    /* before d's entry */
                { .path = "d/", .type = AE_IFDIR, .mode = 0700 },                  /* d stays opaque */
                { .path = "d/kept", .type = AE_IFREG, .data = "new" },             /* upper content stays */
                { .path = "e", .type = AE_IFREG, .data = "replaced by whiteout" }, /* later wins */
                { .path = ".wh.e", .type = AE_IFREG },
                { .path = ".wh.gone", .type = AE_IFREG },
                { .path = "gone/.wh.x", .type = AE_IFREG }, /* moot: its parent is whited out */
                { .path = ".wh..wh.plnk/1234.5678", .type = AE_IFREG, .data = "aufs" }, /* aufs metadata */
                { .path = ".wh..wh..opq", .type = AE_IFREG },                           /* the root itself */
        };
        struct buf tar = make_tar(ents, ARRAY_SIZE(ents));
        struct unpack_result res = { 0 };
        _cleanup_berr_ struct berr *err = NULL;
        int r = unpack_buf(sb, &tar, 0, NULL, &res, &err);
        if (r < 0)
                print_message("%s\n", berr_msg(err));
        assert_int_equal(r, 0);
        assert_outside_clean(sb);
        struct stat st;
        const char *wh[] = { "a/b", "e", "gone" };
        for (size_t i = 0; i < ARRAY_SIZE(wh); i++) {
                lstat_at(sb->layer, wh[i], &st);
                assert_true(S_ISCHR(st.st_mode));
                assert_int_equal(st.st_rdev, makedev(0, 0));
        }
        lstat_at(sb->layer, "a/b", &st);
        assert_int_equal(st.st_uid, H(3));
        assert_int_equal(st.st_gid, H(4));
        assert_int_equal(fstatat(sb->layer, "a/.wh.b", &st, AT_SYMLINK_NOFOLLOW), -1);
        assert_int_equal(fstatat(sb->layer, "c/.wh..wh..opq", &st, AT_SYMLINK_NOFOLLOW), -1);
        assert_int_equal(fstatat(sb->layer, ".wh..wh.plnk", &st, AT_SYMLINK_NOFOLLOW), -1);
        const char *opaque[] = { "c", "d", "." };
        for (size_t i = 0; i < ARRAY_SIZE(opaque); i++) {
                int fd = openat(sb->layer, opaque[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                char v[4] = { 0 };
                assert_int_equal(fgetxattr(fd, "trusted.overlay.opaque", v, sizeof(v)), 1);
                assert_string_equal(v, "y");
                close(fd);
        }
        lstat_at(sb->layer, "d", &st);
        assert_int_equal(st.st_mode & 07777, 0700);
        char data[16];
        read_file(sb->layer, "d/kept", data, sizeof(data));
        assert_string_equal(data, "new");
        assert_true(has_implicit(&res, "c"));
        assert_false(has_implicit(&res, "d"));
        assert_false(has_implicit(&res, "a"));
        unpack_result_done(&res);
        free(tar.p);
}

static void test_whiteout_names_invalid(void **state)
{
        struct sandbox *sb = *state;
        const struct tent bare[] = { { .path = "a/.wh.", .type = AE_IFREG } };
        expect(sb, bare, 1, -EINVAL, "entry a/.wh.: invalid whiteout name");
        const struct tent dot[] = { { .path = ".wh..", .type = AE_IFREG } };
        expect(sb, dot, 1, -EINVAL, "invalid whiteout name");
        const struct tent dotdot[] = { { .path = "x/.wh...", .type = AE_IFREG } };
        expect(sb, dotdot, 1, -EINVAL, "invalid whiteout name");
        const struct tent asdir[] = { { .path = ".wh.x/y", .type = AE_IFREG } };
        expect(sb, asdir, 1, -EINVAL, "whiteout name is used as a directory");
}

static void test_hardlinks(void **state)
{
        struct sandbox *sb = *state;
        const struct tent ok[] = {
                { .path = "f", .type = AE_IFREG, .data = "data" },
                { .path = "s", .type = AE_IFLNK, .link = "/etc/shadow" },
                { .path = "d/hf", .type = 0, .link = "./f" },
                { .path = "hs", .type = 0, .link = "s" }, /* a link to the symlink itself */
                { .path = "p", .type = AE_IFIFO },
                { .path = "hp", .type = 0, .link = "p" },
        };
        struct buf tar = make_tar(ok, ARRAY_SIZE(ok));
        struct unpack_result res = { 0 };
        _cleanup_berr_ struct berr *err = NULL;
        assert_int_equal(unpack_buf(sb, &tar, 0, NULL, &res, &err), 0);
        struct stat a, b;
        lstat_at(sb->layer, "f", &a);
        lstat_at(sb->layer, "d/hf", &b);
        assert_int_equal(a.st_ino, b.st_ino);
        lstat_at(sb->layer, "s", &a);
        lstat_at(sb->layer, "hs", &b);
        assert_true(S_ISLNK(b.st_mode));
        assert_int_equal(a.st_ino, b.st_ino);
        lstat_at(sb->layer, "hp", &b);
        assert_true(S_ISFIFO(b.st_mode));
        unpack_result_done(&res);
        free(tar.p);
        assert_outside_clean(sb);

        const struct tent todir[] = { { .path = "d/", .type = AE_IFDIR },
                                      { .path = "l", .type = 0, .link = "d" } };
        expect(sb, todir, 2, -EPERM, "entry l: hardlink to a directory");
        const struct tent missing[] = { { .path = "l", .type = 0, .link = "nothere" } };
        expect(sb, missing, 1, -ENOENT, "hardlink target nothere not found in this layer");
        const struct tent outside[] = { { .path = "l", .type = 0, .link = "../../etc/passwd" } };
        expect(sb, outside, 1, -EINVAL, "entry l: hardlink target path contains \"..\"");
        const struct tent outside2[] = { { .path = "l", .type = 0, .link = "../outside/passwd" } };
        expect(sb, outside2, 1, -EINVAL, "escapes the layer");
        char abs[160];
        snprintf(abs, sizeof(abs), "%s/passwd", sb->outside);
        const struct tent absl[] = { { .path = "l", .type = 0, .link = abs } };
        expect(sb, absl, 1, -EINVAL, "hardlink target absolute path");
        /* A target reached through a symlinked directory is not "in this layer". */
        const struct tent viasym[] = { { .path = "o", .type = AE_IFLNK, .link = "../outside" },
                                       { .path = "l", .type = 0, .link = "o/passwd" } };
        expect(sb, viasym, 2, -ELOOP, "hardlink target o/passwd not found");
        const struct tent self[] = { { .path = "l", .type = 0, .link = "./l" } };
        expect(sb, self, 1, -EINVAL, "hardlink to itself");
}

/* A hardlink to a symlink that points outside, then entries written "through" both: never followed. */
static void test_write_through_links(void **state)
{
        struct sandbox *sb = *state;
        char abs[160];
        snprintf(abs, sizeof(abs), "%s/passwd", sb->outside);
        const struct tent ents[] = {
                { .path = "l", .type = AE_IFLNK, .link = abs },
                { .path = "rel", .type = AE_IFLNK, .link = "../outside/passwd" },
                { .path = "h", .type = 0, .link = "l" },
                { .path = "h", .type = AE_IFREG, .data = "pwned\n", .mode = 0777 },
                { .path = "rel", .type = AE_IFREG, .data = "pwned\n" },
                { .path = "l", .type = AE_IFDIR },
                { .path = "l/x", .type = AE_IFREG, .data = "in the layer" },
                { .path = "dl", .type = AE_IFLNK, .link = "../outside" },
                { .path = "dl",
                  .type = AE_IFDIR,
                  .mode = 0700 }, /* replaces the symlink, no chmod through it */
                { .path = "fl", .type = AE_IFLNK, .link = abs },
                { .path = "fl", .type = AE_IFIFO, .mode = 0600 },
        };
        struct buf tar = make_tar(ents, ARRAY_SIZE(ents));
        struct unpack_result res = { 0 };
        _cleanup_berr_ struct berr *err = NULL;
        int r = unpack_buf(sb, &tar, 0, NULL, &res, &err);
        if (r < 0)
                print_message("%s\n", berr_msg(err));
        assert_int_equal(r, 0);
        assert_outside_clean(sb);
        struct stat st;
        lstat_at(sb->layer, "h", &st);
        assert_true(S_ISREG(st.st_mode));
        lstat_at(sb->layer, "rel", &st);
        assert_true(S_ISREG(st.st_mode));
        lstat_at(sb->layer, "l/x", &st);
        assert_true(S_ISREG(st.st_mode));
        lstat_at(sb->layer, "dl", &st);
        assert_true(S_ISDIR(st.st_mode));
        lstat_at(sb->layer, "fl", &st);
        assert_true(S_ISFIFO(st.st_mode));
        unpack_result_done(&res);
        free(tar.p);
}

static void test_escapes(void **state)
{
        struct sandbox *sb = *state;
        char abs_out[160], abs_x[200];
        snprintf(abs_out, sizeof(abs_out), "%s", sb->outside);
        snprintf(abs_x, sizeof(abs_x), "%s/x", sb->outside);
        const struct tent dotdot[] = { { .path = "../x", .type = AE_IFREG, .data = "x" } };
        expect(sb, dotdot, 1, -EINVAL, "entry ../x: path contains \"..\"");
        const struct tent dotdot_out[] = { { .path = "../outside/x", .type = AE_IFREG, .data = "x" } };
        expect(sb, dotdot_out, 1, -EINVAL, "escapes the layer");
        const struct tent absolute[] = { { .path = abs_x, .type = AE_IFREG, .data = "x" } };
        expect(sb, absolute, 1, -EINVAL, "absolute path is not allowed");
        const struct tent etc[] = { { .path = "/etc/x", .type = AE_IFREG, .data = "x" } };
        expect(sb, etc, 1, -EINVAL, "entry /etc/x: absolute path");
        const struct tent mid[] = { { .path = "a/../../x", .type = AE_IFREG, .data = "x" } };
        expect(sb, mid, 1, -EINVAL, "path contains \"..\"");
        const struct tent mid2[] = { { .path = "a/b/../../../outside/x", .type = AE_IFDIR } };
        expect(sb, mid2, 1, -EINVAL, "path contains \"..\"");
        /* Symlinked parents: absolute, "..", relative to outside. */
        const struct tent sym_abs[] = { { .path = "a", .type = AE_IFLNK, .link = abs_out },
                                        { .path = "a/passwd", .type = AE_IFREG, .data = "x" } };
        expect(sb, sym_abs, 2, -ELOOP, "entry a/passwd: parent a is a symlink");
        const struct tent sym_etc[] = { { .path = "a", .type = AE_IFLNK, .link = "/etc" },
                                        { .path = "a/passwd", .type = AE_IFREG, .data = "x" } };
        expect(sb, sym_etc, 2, -ELOOP, "parent a is a symlink");
        const struct tent sym_up[] = { { .path = "a", .type = AE_IFLNK, .link = ".." },
                                       { .path = "a/outside/x", .type = AE_IFREG, .data = "x" } };
        expect(sb, sym_up, 2, -ELOOP, "parent a is a symlink");
        const struct tent sym_up2[] = { { .path = "a", .type = AE_IFLNK, .link = ".." },
                                        { .path = "a/x", .type = AE_IFDIR } };
        expect(sb, sym_up2, 2, -ELOOP, "parent a is a symlink");
        const struct tent sym_deep[] = { { .path = "d/e/", .type = AE_IFDIR },
                                         { .path = "d/e/s", .type = AE_IFLNK, .link = "../../../outside" },
                                         { .path = "d/e/s/passwd", .type = AE_IFREG, .data = "x" } };
        expect(sb, sym_deep, 3, -ELOOP, "parent d/e/s is a symlink");
        /* Whiteouts and opaque markers through a symlinked parent. */
        const struct tent wh[] = { { .path = "w", .type = AE_IFLNK, .link = "../outside" },
                                   { .path = "w/.wh.passwd", .type = AE_IFREG } };
        expect(sb, wh, 2, -ELOOP, "parent w is a symlink");
        const struct tent opq[] = { { .path = "w", .type = AE_IFLNK, .link = abs_out },
                                    { .path = "w/.wh..wh..opq", .type = AE_IFREG } };
        expect(sb, opq, 2, -ELOOP, "parent w is a symlink");
        /* Hardlink and symlink entries created inside a symlinked parent. */
        const struct tent hl[] = { { .path = "f", .type = AE_IFREG, .data = "x" },
                                   { .path = "w", .type = AE_IFLNK, .link = "../outside" },
                                   { .path = "w/l", .type = 0, .link = "f" } };
        expect(sb, hl, 3, -ELOOP, "parent w is a symlink");
        /* A non-directory parent. */
        const struct tent filep[] = { { .path = "f", .type = AE_IFREG, .data = "x" },
                                      { .path = "f/g", .type = AE_IFREG, .data = "x" } };
        expect(sb, filep, 2, -ENOTDIR, "parent f is not a directory");
        /* The layer root can only be a directory (CVE-2021-29136). */
        const struct tent root_sym[] = { { .path = ".", .type = AE_IFLNK, .link = abs_out },
                                         { .path = "passwd", .type = AE_IFREG, .data = "x" } };
        expect(sb, root_sym, 2, -EINVAL, "only a directory may name the layer root");
        const struct tent root_file[] = { { .path = ".", .type = AE_IFREG, .data = "x" } };
        expect(sb, root_file, 1, -EINVAL, "only a directory may name the layer root");
        const struct tent root_link[] = { { .path = "f", .type = AE_IFREG, .data = "x" },
                                          { .path = ".", .type = 0, .link = "f" } };
        expect(sb, root_link, 2, -EINVAL, "only a directory may name the layer root");
}

/* The cached parent directory is replaced by a symlink; the next entry under it must not follow it. */
static void test_cached_parent_replaced(void **state)
{
        struct sandbox *sb = *state;
        const struct tent ents[] = {
                { .path = "d/", .type = AE_IFDIR },
                { .path = "d/f1", .type = AE_IFREG, .data = "1" },
                { .path = "d/f2", .type = AE_IFREG, .data = "2" },
                { .path = "d", .type = AE_IFLNK, .link = "../outside" },
                { .path = "d/f3", .type = AE_IFREG, .data = "3" },
        };
        expect(sb, ents, ARRAY_SIZE(ents), -ELOOP, "entry d/f3: parent d is a symlink");
        /* Same with the cached parent deeper and an ancestor replaced. */
        const struct tent deep[] = {
                { .path = "a/b/c/f1", .type = AE_IFREG, .data = "1" },
                { .path = "a/b", .type = AE_IFLNK, .link = "../../outside" },
                { .path = "a/b/c/f2", .type = AE_IFREG, .data = "2" },
        };
        expect(sb, deep, ARRAY_SIZE(deep), -ELOOP, "parent a/b is a symlink");
        /* A whiteout removing the cached parent, then a symlink in its place. */
        const struct tent wh[] = {
                { .path = "a/b/f1", .type = AE_IFREG, .data = "1" },
                { .path = "a/.wh.b", .type = AE_IFREG },
                { .path = "a/b", .type = AE_IFLNK, .link = "../../outside" },
                { .path = "a/b/f2", .type = AE_IFREG, .data = "2" },
        };
        expect(sb, wh, ARRAY_SIZE(wh), -ELOOP, "parent a/b is a symlink");
        /* A file replacing the cached parent: later wins, the old children are gone. */
        const struct tent file[] = {
                { .path = "a/b/f1", .type = AE_IFREG, .data = "1" },
                { .path = "a/b", .type = AE_IFREG, .data = "now a file" },
                { .path = "a/c", .type = AE_IFREG, .data = "c" },
        };
        expect(sb, file, ARRAY_SIZE(file), 0, NULL);
        struct stat st;
        lstat_at(sb->layer, "a/b", &st);
        assert_true(S_ISREG(st.st_mode));
}

static void test_devices_rejected(void **state)
{
        struct sandbox *sb = *state;
        const struct tent chr[] = { { .path = "dev/null", .type = AE_IFCHR, .rdev = makedev(1, 3) } };
        expect(sb, chr, 1, -EPERM, "entry dev/null: device nodes are not allowed in layers");
        const struct tent blk[] = { { .path = "dev/sda", .type = AE_IFBLK, .rdev = makedev(8, 0) } };
        expect(sb, blk, 1, -EPERM, "device nodes are not allowed");
        /* An overlay whiteout smuggled as a raw 0/0 device is a device too. */
        const struct tent wh[] = { { .path = "x", .type = AE_IFCHR, .rdev = makedev(0, 0) } };
        expect(sb, wh, 1, -EPERM, "device nodes are not allowed");
        struct stat st;
        assert_int_equal(fstatat(sb->layer, "dev/null", &st, AT_SYMLINK_NOFOLLOW), -1);
}

static void cap_v2(uint8_t v[20], uint32_t flags, uint32_t permitted)
{
        memset(v, 0, 20);
        uint32_t magic = VFS_CAP_REVISION_2 | flags;
        for (int i = 0; i < 4; i++) {
                v[i] = (uint8_t)(magic >> (8 * i));
                v[4 + i] = (uint8_t)(permitted >> (8 * i));
        }
}

static uint32_t rd32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void test_xattrs(void **state)
{
        struct sandbox *sb = *state;
        uint8_t cap[20];
        cap_v2(cap, VFS_CAP_FLAGS_EFFECTIVE, 1u << 13 /* CAP_NET_RAW */);
        /* An ACL granting uid 1000 and gid 50: header, USER_OBJ, USER 1000, GROUP_OBJ, GROUP 50, MASK, OTHER
         */
        uint8_t acl[4 + 6 * 8] = { 2, 0, 0, 0 };
        const struct {
                uint16_t tag, perm;
                uint32_t id;
        } ae[6] = { { 1, 7, UINT32_MAX }, { 2, 6, 1000 },          { 4, 5, UINT32_MAX },
                    { 8, 4, 50 },         { 0x10, 7, UINT32_MAX }, { 0x20, 4, UINT32_MAX } };
        for (int i = 0; i < 6; i++) {
                uint8_t *p = acl + 4 + 8 * i;
                p[0] = (uint8_t)ae[i].tag;
                p[2] = (uint8_t)ae[i].perm;
                for (int k = 0; k < 4; k++)
                        p[4 + k] = (uint8_t)(ae[i].id >> (8 * k));
        }
        const struct tent ents[] = {
                { .path = "ping",
                  .type = AE_IFREG,
                  .mode = 04755,
                  .data = "ELF",
                  .xattrs = { { "security.capability", cap, sizeof(cap) }, { "user.mime", "app/x", 5 } } },
                { .path = "dir/",
                  .type = AE_IFDIR,
                  .xattrs = { { "user.d", "1", 1 }, { "system.posix_acl_default", acl, sizeof(acl) } } },
                { .path = "acl",
                  .type = AE_IFREG,
                  .data = "a",
                  .xattrs = { { "system.posix_acl_access", acl, sizeof(acl) } } },
                { .path = "sym", .type = AE_IFLNK, .link = "ping", .xattrs = { { "user.skipped", "x", 1 } } },
        };
        struct buf tar = make_tar(ents, ARRAY_SIZE(ents));
        struct unpack_result res = { 0 };
        _cleanup_berr_ struct berr *err = NULL;
        int r = unpack_buf(sb, &tar, 0, NULL, &res, &err);
        if (r < 0)
                print_message("%s\n", berr_msg(err));
        assert_int_equal(r, 0);
        unpack_result_done(&res);
        free(tar.p);
        assert_outside_clean(sb);

        int fd = openat(sb->layer, "ping", O_RDONLY | O_CLOEXEC);
        uint8_t v[64];
        assert_int_equal(fgetxattr(fd, "security.capability", v, sizeof(v)), XATTR_CAPS_SZ_3);
        assert_int_equal(rd32(v), VFS_CAP_REVISION_3 | VFS_CAP_FLAGS_EFFECTIVE);
        assert_int_equal(rd32(v + 4), 1u << 13);
        assert_int_equal(rd32(v + 20), H(0)); /* rootid: container root */
        assert_int_equal(fgetxattr(fd, "user.mime", v, sizeof(v)), 5);
        assert_memory_equal(v, "app/x", 5);
        struct stat st;
        assert_int_equal(fstat(fd, &st), 0);
        assert_int_equal(st.st_mode & 07777, 04755); /* neither chown nor setxattr lost the setuid bit */
        close(fd);
        fd = openat(sb->layer, "dir", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_int_equal(fgetxattr(fd, "user.d", v, sizeof(v)), 1);
        ssize_t n = fgetxattr(fd, "system.posix_acl_default", v, sizeof(v));
        close(fd);
        if (n >= 0) { /* the filesystem keeps ACLs */
                assert_int_equal(n, sizeof(acl));
                assert_int_equal(rd32(v + 4 + 8 + 4), H(1000));
                assert_int_equal(rd32(v + 4 + 24 + 4), H(50));
        }
        fd = openat(sb->layer, "acl", O_RDONLY | O_CLOEXEC);
        n = fgetxattr(fd, "system.posix_acl_access", v, sizeof(v));
        close(fd);
        if (n >= 0)
                assert_int_equal(rd32(v + 4 + 8 + 4), H(1000));
        assert_int_equal(lgetxattr(sb->outside, "user.skipped", v, sizeof(v)), -1);

        /* Without shifting, the capability stays as the image has it. */
        assert_int_equal(fs_clear_dir(sb->layer), 0);
        const struct tent plain[] = {
                { .path = "ping",
                  .type = AE_IFREG,
                  .data = "ELF",
                  .xattrs = { { "security.capability", cap, sizeof(cap) } } },
        };
        tar = make_tar(plain, 1);
        struct unpack_opts o = { .shift_ids = false };
        assert_int_equal(unpack_buf(sb, &tar, 0, &o, &res, NULL), 0);
        unpack_result_done(&res);
        free(tar.p);
        fd = openat(sb->layer, "ping", O_RDONLY | O_CLOEXEC);
        assert_int_equal(fgetxattr(fd, "security.capability", v, sizeof(v)), XATTR_CAPS_SZ_2);
        assert_memory_equal(v, cap, sizeof(cap));
        close(fd);
}

static void test_xattrs_refused(void **state)
{
        struct sandbox *sb = *state;
        const struct tent opq[] = {
                { .path = "d/", .type = AE_IFDIR, .xattrs = { { "trusted.overlay.opaque", "y", 1 } } }
        };
        expect(sb, opq, 1, -EPERM, "entry d/: overlay xattrs are reserved");
        const struct tent redir[] = {
                { .path = "d/", .type = AE_IFDIR, .xattrs = { { "trusted.overlay.redirect", "/etc", 5 } } }
        };
        expect(sb, redir, 1, -EPERM, "overlay xattrs are reserved");
        const struct tent user[] = {
                { .path = "f", .type = AE_IFREG, .xattrs = { { "user.overlay.opaque", "y", 1 } } }
        };
        expect(sb, user, 1, -EPERM, "overlay xattrs are reserved");
        const struct tent meta[] = {
                { .path = "f", .type = AE_IFREG, .xattrs = { { "trusted.overlay.metacopy", "", 0 } } }
        };
        expect(sb, meta, 1, -EPERM, "overlay xattrs are reserved");
        const struct tent trusted[] = {
                { .path = "f", .type = AE_IFREG, .xattrs = { { "trusted.other", "x", 1 } } }
        };
        expect(sb, trusted, 1, -EPERM, "trusted.* xattrs are not accepted");
        const struct tent badcap[] = {
                { .path = "f", .type = AE_IFREG, .xattrs = { { "security.capability", "xyz", 3 } } }
        };
        expect(sb, badcap, 1, -EINVAL, "malformed security.capability");
        uint8_t v3[24] = { 0, 0, 0, 3 };
        v3[20] = 0x00, v3[21] = 0x00, v3[22] = 0x00, v3[23] = 0x02; /* rootid 2^25: outside the range */
        const struct tent badroot[] = {
                { .path = "f", .type = AE_IFREG, .xattrs = { { "security.capability", v3, 24 } } }
        };
        expect(sb, badroot, 1, -ERANGE, "out-of-range rootid");
}

static void test_capability_convert(void **state)
{
        (void)state;
        uint8_t v2[20], out[24];
        size_t n;
        cap_v2(v2, 0, 0x12345678);
        v2[8] = 0xaa;  /* inheritable lo */
        v2[12] = 0x01; /* permitted hi */
        assert_int_equal(unpack_convert_capability(v2, 20, true, out, &n), 0);
        assert_int_equal(n, 24);
        assert_int_equal(rd32(out), VFS_CAP_REVISION_3);
        assert_memory_equal(out + 4, v2 + 4, 16);
        assert_int_equal(rd32(out + 20), H(0));
        assert_int_equal(unpack_convert_capability(v2, 20, false, out, &n), 0);
        assert_int_equal(n, 20);
        assert_memory_equal(out, v2, 20);
        /* v1: 32-bit sets only. */
        uint8_t v1[12] = { 0, 0, 0, 1, 0x20, 0, 0, 0, 0, 0, 0, 0 };
        assert_int_equal(unpack_convert_capability(v1, 12, true, out, &n), 0);
        assert_int_equal(rd32(out + 4), 0x20);
        assert_int_equal(rd32(out + 12), 0);
        /* v3 with rootid 5 in the image: container uid 5 -> host. */
        uint8_t v3[24] = { 1, 0, 0, 3 };
        v3[20] = 5;
        assert_int_equal(unpack_convert_capability(v3, 24, true, out, &n), 0);
        assert_int_equal(rd32(out), VFS_CAP_REVISION_3 | 1);
        assert_int_equal(rd32(out + 20), H(5));
        assert_int_equal(unpack_convert_capability(v2, 19, true, out, &n), -EINVAL);
        assert_int_equal(unpack_convert_capability(v3, 20, true, out, &n), -EINVAL);
        v2[0] = 2; /* an unknown flag */
        assert_int_equal(unpack_convert_capability(v2, 20, true, out, &n), -EINVAL);
        uint8_t v4[24] = { 0, 0, 0, 4 };
        assert_int_equal(unpack_convert_capability(v4, 24, true, out, &n), -EINVAL);
        assert_int_equal(unpack_convert_capability(v4, 2, true, out, &n), -EINVAL);
}

static void test_implicit_dirs(void **state)
{
        struct sandbox *sb = *state;
        const struct tent ents[] = {
                { .path = "a/b/c/file", .type = AE_IFREG, .data = "x" },
                { .path = "x/y/", .type = AE_IFDIR, .mode = 0700 },
                { .path = "a/", .type = AE_IFDIR, .mode = 0711 }, /* defined after all: no longer implicit */
                { .path = "gone/sub/f", .type = AE_IFREG },
                { .path = "gone", .type = AE_IFREG, .data = "file now" }, /* replaces gone/ and gone/sub/ */
        };
        struct buf tar = make_tar(ents, ARRAY_SIZE(ents));
        struct unpack_result res = { 0 };
        assert_int_equal(unpack_buf(sb, &tar, 0, NULL, &res, NULL), 0);
        const char *want[] = { ".", "a/b", "a/b/c", "x", "gone/sub" };
        for (size_t i = 0; i < ARRAY_SIZE(want); i++)
                if (!has_implicit(&res, want[i]))
                        fail_msg("%s missing from the implicit list", want[i]);
        assert_false(has_implicit(&res, "a"));
        assert_false(has_implicit(&res, "gone"));
        assert_false(has_implicit(&res, "x/y"));
        assert_int_equal(res.n_implicit_dirs, ARRAY_SIZE(want));
        assert_null(res.implicit_dirs[res.n_implicit_dirs]);
        assert_string_equal(res.implicit_dirs[0], ".");
        struct stat st;
        lstat_at(sb->layer, "a/b", &st);
        assert_int_equal(st.st_mode & 07777, 0755);
        assert_int_equal(st.st_uid, H(0));
        assert_int_equal(st.st_gid, H(0));
        lstat_at(sb->layer, "a", &st);
        assert_int_equal(st.st_mode & 07777, 0711);
        unpack_result_done(&res);
        free(tar.p);
}

/* Unpack `ents` into a fresh directory `name` under the sandbox; returns its fd. */
static int layer_dir(struct sandbox *sb, const char *name, const struct tent *ents, size_t n,
                     struct unpack_result *res)
{
        assert_int_equal(mkdirat(sb->top, name, 0700), 0);
        int fd = openat(sb->top, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(fd >= 0);
        struct buf tar = make_tar(ents, n);
        struct memsrc s = { .p = tar.p, .len = tar.len, .chunk = 4096 };
        struct unpack_opts o = { .shift_ids = true };
        _cleanup_berr_ struct berr *err = NULL;
        int r = unpack_layer(fd, memsrc_read, &s, &o, res, &err);
        if (r < 0)
                fail_msg("%s", berr_msg(err));
        free(tar.p);
        return fd;
}

static void test_fixup_implicit_dirs(void **state)
{
        struct sandbox *sb = *state;
        /* Bottom layer: the directories with real metadata. */
        const struct tent base[] = {
                { .path = "./", .type = AE_IFDIR, .mode = 0751, .mtime = 777 },
                { .path = "etc/",
                  .type = AE_IFDIR,
                  .mode = 0750,
                  .uid = 1000,
                  .gid = 1001,
                  .mtime = 123456,
                  .xattrs = { { "user.origin", "base", 4 } } },
                { .path = "srv/", .type = AE_IFDIR, .mode = 0700, .uid = 33 },
                { .path = "srv/www/", .type = AE_IFDIR, .mode = 0770, .uid = 33 },
                { .path = "opt/", .type = AE_IFDIR, .mode = 0701 },
                { .path = "opt/app/", .type = AE_IFDIR, .mode = 0705, .uid = 2 },
                { .path = "var/", .type = AE_IFDIR, .mode = 0711 },
                { .path = "var/lib/", .type = AE_IFDIR, .mode = 0703, .uid = 3 },
                { .path = "home/", .type = AE_IFDIR, .mode = 0702, .uid = 4 },
        };
        /* Middle layer: hides some of them. */
        const struct tent mid[] = {
                { .path = ".wh.srv", .type = AE_IFREG },              /* whiteout */
                { .path = "opt/.wh..wh..opq", .type = AE_IFREG },     /* opaque, without opt/app */
                { .path = "var/", .type = AE_IFDIR, .mode = 0711 },   /* explicit but transparent */
                { .path = "home", .type = AE_IFREG, .data = "file" }, /* a non-directory */
                { .path = "etc/.wh..wh..opq", .type = AE_IFREG },     /* opaque, but etc itself is visible */
        };
        /* Top layer: files whose parents it does not define. */
        const struct tent top[] = {
                { .path = "etc/hosts", .type = AE_IFREG, .data = "h" },
                { .path = "srv/www/index.html", .type = AE_IFREG, .data = "i" },
                { .path = "opt/app/bin", .type = AE_IFREG, .data = "b" },
                { .path = "var/lib/x", .type = AE_IFREG, .data = "x" },
                { .path = "home/u", .type = AE_IFREG, .data = "u" },
                { .path = "new/dir/f", .type = AE_IFREG, .data = "f" },
        };
        struct unpack_result r0 = { 0 }, r1 = { 0 }, r2 = { 0 };
        int l0 = layer_dir(sb, "l0", base, ARRAY_SIZE(base), &r0);
        int l1 = layer_dir(sb, "l1", mid, ARRAY_SIZE(mid), &r1);
        int up = layer_dir(sb, "up", top, ARRAY_SIZE(top), &r2);
        /* As the store does: each layer is fixed up against the ones below it, bottom to top. */
        int below_l1[] = { l0 };
        _cleanup_berr_ struct berr *err = NULL;
        assert_int_equal(
            unpack_fixup_implicit_dirs(l1, r1.implicit_dirs, r1.n_implicit_dirs, below_l1, 1, &err), 0);
        int lowers[] = { l1, l0 };
        int r = unpack_fixup_implicit_dirs(up, r2.implicit_dirs, r2.n_implicit_dirs, lowers, 2, &err);
        if (r < 0)
                print_message("%s\n", berr_msg(err));
        assert_int_equal(r, 0);
        struct stat st;
        /* etc: from the base layer, through the middle layer's opaque etc (which is itself visible). */
        lstat_at(up, "etc", &st);
        assert_int_equal(st.st_mode & 07777, 0750);
        assert_int_equal(st.st_uid, H(1000));
        assert_int_equal(st.st_gid, H(1001));
        char v[16] = { 0 };
        int fd = openat(up, "etc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_int_equal(fgetxattr(fd, "user.origin", v, sizeof(v)), 4);
        close(fd);
        /* srv: whited out in the middle layer -> defaults. */
        lstat_at(up, "srv", &st);
        assert_int_equal(st.st_mode & 07777, 0755);
        assert_int_equal(st.st_uid, H(0));
        lstat_at(up, "srv/www", &st);
        assert_int_equal(st.st_mode & 07777, 0755);
        /* opt: the middle layer's opt is found first (fixed up from the base); opt/app is hidden by
         * that opt's opacity even though the base has one. */
        lstat_at(up, "opt", &st);
        assert_int_equal(st.st_mode & 07777, 0701);
        lstat_at(up, "opt/app", &st);
        assert_int_equal(st.st_mode & 07777, 0755);
        assert_int_equal(st.st_uid, H(0));
        /* var/lib: not in the middle layer, var there is transparent -> from the base. */
        lstat_at(up, "var/lib", &st);
        assert_int_equal(st.st_mode & 07777, 0703);
        assert_int_equal(st.st_uid, H(3));
        lstat_at(up, "var", &st);
        assert_int_equal(st.st_mode & 07777, 0711);
        /* home: a file in the middle layer -> defaults. */
        lstat_at(up, "home", &st);
        assert_int_equal(st.st_mode & 07777, 0755);
        lstat_at(up, "new/dir", &st);
        assert_int_equal(st.st_mode & 07777, 0755);
        /* The root: from the base layer's "./" entry. */
        lstat_at(up, ".", &st);
        assert_int_equal(st.st_mode & 07777, 0751);
        assert_int_equal(st.st_mtime, 777);
        /* The middle layer's opaque marker never leaks into the upper directory. */
        fd = openat(up, "opt", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_int_equal(fgetxattr(fd, "trusted.overlay.opaque", v, sizeof(v)), -1);
        close(fd);
        fd = openat(up, "etc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_int_equal(fgetxattr(fd, "trusted.overlay.opaque", v, sizeof(v)), -1);
        close(fd);

        /* Directly on the base layer: xattrs and mtime are copied too. */
        const int only_base[] = { l0 };
        assert_int_equal(mkdirat(sb->top, "up2", 0700), 0);
        int up2 = openat(sb->top, "up2", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_int_equal(mkdirat(up2, "etc", 0755), 0);
        char *list[] = { "etc", NULL };
        assert_int_equal(unpack_fixup_implicit_dirs(up2, list, 1, only_base, 1, NULL), 0);
        lstat_at(up2, "etc", &st);
        assert_int_equal(st.st_mode & 07777, 0750);
        assert_int_equal(st.st_mtime, 123456);
        fd = openat(up2, "etc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_int_equal(fgetxattr(fd, "user.origin", v, sizeof(v)), 4);
        assert_memory_equal(v, "base", 4);
        close(fd);
        /* Paths that vanished or are not directories are skipped, hostile ones refused. */
        char *gone[] = { "nothere", NULL };
        assert_int_equal(unpack_fixup_implicit_dirs(up2, gone, 1, only_base, 1, NULL), 0);
        char *bad[] = { "../outside", NULL };
        assert_int_equal(unpack_fixup_implicit_dirs(up2, bad, 1, only_base, 1, NULL), -EINVAL);
        /* An opaque ancestor in the upper layer hides the lowers. */
        assert_int_equal(mkdirat(up2, "srv", 0755), 0);
        assert_int_equal(mkdirat(up2, "srv/www", 0755), 0);
        fd = openat(up2, "srv", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_int_equal(fsetxattr(fd, "trusted.overlay.opaque", "y", 1, 0), 0);
        close(fd);
        char *www[] = { "srv/www", NULL };
        assert_int_equal(unpack_fixup_implicit_dirs(up2, www, 1, only_base, 1, NULL), 0);
        lstat_at(up2, "srv/www", &st);
        assert_int_equal(st.st_mode & 07777, 0755);
        close(up2);
        close(l0);
        close(l1);
        close(up);
        unpack_result_done(&r0);
        unpack_result_done(&r1);
        unpack_result_done(&r2);
}

static void test_duplicates_later_wins(void **state)
{
        struct sandbox *sb = *state;
        const struct tent ents[] = {
                { .path = "f", .type = AE_IFREG, .data = "first" },
                { .path = "f", .type = AE_IFREG, .data = "second", .mode = 0600 },
                { .path = "d/child", .type = AE_IFREG, .data = "c" },
                { .path = "d", .type = AE_IFREG, .data = "file now" },
                { .path = "e", .type = AE_IFREG, .data = "file" },
                { .path = "e/", .type = AE_IFDIR, .mode = 0700 },
                { .path = "s", .type = AE_IFLNK, .link = "a" },
                { .path = "s", .type = AE_IFLNK, .link = "b" },
                { .path = "g/", .type = AE_IFDIR, .mode = 0700 },
                { .path = "g/x", .type = AE_IFREG, .data = "kept" },
                { .path = "g/", .type = AE_IFDIR, .mode = 0711 }, /* attributes only: x stays */
        };
        expect(sb, ents, ARRAY_SIZE(ents), 0, NULL);
        char data[32];
        read_file(sb->layer, "f", data, sizeof(data));
        assert_string_equal(data, "second");
        read_file(sb->layer, "d", data, sizeof(data));
        assert_string_equal(data, "file now");
        read_file(sb->layer, "g/x", data, sizeof(data));
        assert_string_equal(data, "kept");
        struct stat st;
        lstat_at(sb->layer, "e", &st);
        assert_true(S_ISDIR(st.st_mode));
        lstat_at(sb->layer, "g", &st);
        assert_int_equal(st.st_mode & 07777, 0711);
        char lnk[8] = { 0 };
        assert_int_equal(readlinkat(sb->layer, "s", lnk, sizeof(lnk)), 1);
        assert_string_equal(lnk, "b");
}

/* The gzip of a tar holding one 100 MB file of zeros: ~100 KB compressed. */
static struct buf gzip_bomb(size_t file_size)
{
        struct buf gz = { 0 };
        z_stream z = { 0 };
        assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
        uint8_t hdr[512], zeros[65536] = { 0 }, out[65536];
        raw_header(hdr, "bomb", '0', file_size, NULL);
        size_t left = file_size + 512 - file_size % 512 + 1024;
        bool first = true;
        int flush = Z_NO_FLUSH;
        while (flush != Z_FINISH) {
                if (first) {
                        z.next_in = hdr;
                        z.avail_in = 512;
                        first = false;
                } else {
                        size_t n = MIN(left, sizeof(zeros));
                        z.next_in = zeros;
                        z.avail_in = (uInt)n;
                        left -= n;
                        if (left == 0)
                                flush = Z_FINISH;
                }
                do {
                        z.next_out = out;
                        z.avail_out = sizeof(out);
                        deflate(&z, flush);
                        buf_add(&gz, out, sizeof(out) - z.avail_out);
                } while (z.avail_out == 0);
        }
        deflateEnd(&z);
        return gz;
}

static ssize_t dec_read(void *userdata, const void **ret_buf, struct berr **err)
{
        return decompressor_read(userdata, ret_buf, err);
}

static double now(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void test_budgets(void **state)
{
        struct sandbox *sb = *state;
        /* A decompression bomb: stopped at the header, before 100 MB are inflated or written. */
        struct buf gz = gzip_bomb(100 * 1000 * 1000);
        assert_true(gz.len < 1024 * 1024);
        struct memsrc s = { .p = gz.p, .len = gz.len, .chunk = 65536 };
        struct decompressor *d = NULL;
        assert_int_equal(decompressor_new(COMPRESSION_GZIP, memsrc_read, &s, &d, NULL), 0);
        struct unpack_opts o = { .max_bytes = 10 * 1000 * 1000, .shift_ids = true };
        struct unpack_result res = { 0 };
        _cleanup_berr_ struct berr *err = NULL;
        double t0 = now();
        assert_int_equal(unpack_layer(sb->layer, dec_read, d, &o, &res, &err), -EFBIG);
        assert_true(now() - t0 < 2.0);
        assert_non_null(
            strstr(berr_msg(err), "layer exceeds the 10000000-byte budget (decompression bomb?)"));
        assert_true(s.pos < s.len); /* not even all of the compressed stream was needed */
        decompressor_free(d);
        free(gz.p);
        assert_outside_clean(sb);

        /* The stream budget: many small files adding up. */
        assert_int_equal(fs_clear_dir(sb->layer), 0);
        static char mb[1000 * 1000];
        memset(mb, 'z', sizeof(mb));
        struct tarb *t = tb_new();
        char name[32];
        for (int i = 0; i < 20; i++) {
                snprintf(name, sizeof(name), "f%d", i);
                tb_add(t, &(struct tent){ .path = name, .type = AE_IFREG, .data = mb, .len = sizeof(mb) });
        }
        struct buf tar = tb_finish(t);
        berr_freep(&err);
        assert_int_equal(unpack_buf(sb, &tar, 0, &o, &res, &err), -EFBIG);
        assert_non_null(strstr(berr_msg(err), "decompression bomb?"));
        free(tar.p);

        /* Trailing data after the end-of-archive counts too. */
        assert_int_equal(fs_clear_dir(sb->layer), 0);
        const struct tent one[] = { { .path = "f", .type = AE_IFREG, .data = "x" } };
        tar = make_tar(one, 1);
        uint8_t *zeros = xcalloc(1, 200000);
        buf_add(&tar, zeros, 200000);
        free(zeros);
        struct unpack_opts small = { .max_bytes = 100000, .shift_ids = true };
        berr_freep(&err);
        assert_int_equal(unpack_buf(sb, &tar, 0, &small, &res, &err), -EFBIG);
        free(tar.p);

        /* Entry count. */
        assert_int_equal(fs_clear_dir(sb->layer), 0);
        t = tb_new();
        for (int i = 0; i < 50; i++) {
                snprintf(name, sizeof(name), "e%d", i);
                tb_add(t, &(struct tent){ .path = name, .type = AE_IFREG });
        }
        tar = tb_finish(t);
        struct unpack_opts few = { .max_entries = 10, .shift_ids = true };
        berr_freep(&err);
        assert_int_equal(unpack_buf(sb, &tar, 0, &few, &res, &err), -E2BIG);
        assert_string_equal(berr_msg(err), "layer exceeds the 10-entry budget");
        free(tar.p);
        struct unpack_opts enough = { .max_entries = 50, .shift_ids = true };
        assert_int_equal(fs_clear_dir(sb->layer), 0);
        tar = make_tar(NULL, 0);
        assert_int_equal(unpack_buf(sb, &tar, 0, &enough, &res, NULL), 0);
        unpack_result_done(&res);
        free(tar.p);

        /* Path length and depth. */
        char *lng = xmalloc(UNPACK_MAX_PATH + 100);
        memset(lng, 'a', UNPACK_MAX_PATH + 50);
        for (int i = 200; i < UNPACK_MAX_PATH + 50; i += 200)
                lng[i] = '/';
        lng[UNPACK_MAX_PATH + 50] = '\0';
        const struct tent longp[] = { { .path = lng, .type = AE_IFREG } };
        expect(sb, longp, 1, -E2BIG, "path is longer than 4096 bytes");
        free(lng);
        char *deep = xmalloc(2 * UNPACK_MAX_DEPTH + 10);
        for (int i = 0; i <= UNPACK_MAX_DEPTH; i++)
                memcpy(deep + 2 * i, "d/", 2);
        deep[2 * UNPACK_MAX_DEPTH + 1] = '\0';
        const struct tent deepp[] = { { .path = deep, .type = AE_IFDIR } };
        expect(sb, deepp, 1, -E2BIG, "path is deeper than 256 components");
        free(deep);
}

static void test_truncated_and_garbage(void **state)
{
        struct sandbox *sb = *state;
        static char data[100000];
        memset(data, 'q', sizeof(data));
        const struct tent ents[] = {
                { .path = "a", .type = AE_IFREG, .data = "hello" },
                { .path = "b", .type = AE_IFREG, .data = data, .len = sizeof(data) },
        };
        struct buf tar = make_tar(ents, 2);
        size_t cuts[] = { 700, 1024 + 512 + 300, 1024 + 512 + 50000 };
        for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
                assert_int_equal(fs_clear_dir(sb->layer), 0);
                struct buf part = { tar.p, cuts[i], cuts[i] };
                struct unpack_result res = { 0 };
                _cleanup_berr_ struct berr *err = NULL;
                int r = unpack_buf(sb, &part, 0, NULL, &res, &err);
                assert_int_equal(r, -EBADMSG);
                assert_non_null(strstr(berr_msg(err), "damaged tar"));
        }
        free(tar.p);
        /* Not a tar at all. */
        struct buf junk = { (uint8_t *)"this is not a tar archive, just some text that goes on for a while",
                            66, 66 };
        struct unpack_result res = { 0 };
        _cleanup_berr_ struct berr *err = NULL;
        assert_int_equal(unpack_buf(sb, &junk, 0, NULL, &res, &err), -EBADMSG);
        /* A header with a bad checksum after a good entry. */
        assert_int_equal(fs_clear_dir(sb->layer), 0);
        uint8_t raw[512 * 4] = { 0 };
        raw_header(raw, "good", '0', 0, NULL);
        raw_header(raw + 512, "bad", '0', 0, NULL);
        raw[512 + 148] = '7';
        struct buf rb = { raw, sizeof(raw), sizeof(raw) };
        berr_freep(&err);
        assert_int_equal(unpack_buf(sb, &rb, 0, NULL, &res, &err), -EBADMSG);
        /* A source failure surfaces with its own code and message. */
        const struct tent one[] = { { .path = "b", .type = AE_IFREG, .data = data, .len = sizeof(data) } };
        tar = make_tar(one, 1);
        struct memsrc s = { .p = tar.p, .len = tar.len, .chunk = 4096, .fail_after = 50000 };
        struct unpack_opts o = { .shift_ids = true };
        berr_freep(&err);
        assert_int_equal(unpack_layer(sb->layer, memsrc_read, &s, &o, &res, &err), -EIO);
        assert_non_null(strstr(berr_msg(err), "connection reset"));
        free(tar.p);
        assert_outside_clean(sb);
}

static void test_diff_id(void **state)
{
        struct sandbox *sb = *state;
        const struct tent ents[] = {
                { .path = "etc/", .type = AE_IFDIR },
                { .path = "etc/os-release", .type = AE_IFREG, .data = "ID=test\n" },
        };
        struct buf tar = make_tar(ents, 2);
        /* Extra zero blocks after the end-of-archive marker, as some writers add. */
        uint8_t pad[4096] = { 0 };
        buf_add(&tar, pad, sizeof(pad));
        char want[DIGEST_STR_MAX];
        sha256_str(tar.p, tar.len, want);
        size_t chunks[] = { 1, 511, 512, 100000 };
        for (size_t i = 0; i < ARRAY_SIZE(chunks); i++) {
                assert_int_equal(fs_clear_dir(sb->layer), 0);
                struct unpack_result res = { 0 };
                assert_int_equal(unpack_buf(sb, &tar, chunks[i], NULL, &res, NULL), 0);
                assert_string_equal(res.diff_id, want);
                assert_int_equal(res.tar_bytes, tar.len);
                assert_int_equal(res.entries, 2);
                unpack_result_done(&res);
        }
        free(tar.p);
        /* An empty stream is an empty layer. */
        assert_int_equal(fs_clear_dir(sb->layer), 0);
        struct buf empty = { (uint8_t *)"", 0, 0 };
        struct unpack_result res = { 0 };
        assert_int_equal(unpack_buf(sb, &empty, 0, NULL, &res, NULL), 0);
        sha256_str("", 0, want);
        assert_string_equal(res.diff_id, want);
        assert_int_equal(res.entries, 0);
        unpack_result_done(&res);
}

static void test_long_and_odd_names(void **state)
{
        struct sandbox *sb = *state;
        char lng[400];
        memset(lng, 'n', sizeof(lng) - 1);
        lng[150] = '/';
        lng[sizeof(lng) - 1] = '\0';
        const struct tent ents[] = {
                { .path = lng, .type = AE_IFREG, .data = "long" },
                { .path = "caf\xc3\xa9/na\xc3\xafve", .type = AE_IFREG, .data = "utf8" },
                { .path = "sp ace/tab\there", .type = AE_IFREG, .data = "ws" },
                { .path = ".wh-not-a-whiteout", .type = AE_IFREG, .data = "x" },
        };
        expect(sb, ents, ARRAY_SIZE(ents), 0, NULL);
        char data[16];
        read_file(sb->layer, lng, data, sizeof(data));
        assert_string_equal(data, "long");
        read_file(sb->layer, "caf\xc3\xa9/na\xc3\xafve", data, sizeof(data));
        assert_string_equal(data, "utf8");
        read_file(sb->layer, "sp ace/tab\there", data, sizeof(data));
        assert_string_equal(data, "ws");
        /* Control characters are escaped in messages. */
        const struct tent ctl[] = { { .path = "\x1b[31mred/../x", .type = AE_IFREG } };
        expect(sb, ctl, 1, -EINVAL, "entry \\x1b[31mred/../x");
        const struct tent ctlp[] = { { .path = "\x1b[2J", .type = AE_IFLNK, .link = "/" },
                                     { .path = "\x1b[2J/x", .type = AE_IFREG } };
        expect(sb, ctlp, 2, -ELOOP, "entry \\x1b[2J/x: parent \\x1b[2J is a symlink");
}

static void test_sparse(void **state)
{
        struct sandbox *sb = *state;
        /* A GNU old-style sparse header ('S'): 4096 bytes of data at 1 MiB, file size 2 MiB. */
        uint8_t raw[512 * 11] = { 0 };
        raw_header(raw, "sparse", 'S', 4096, NULL);
        /* sparse map at 386: offset(12) numbytes(12); realsize at 483. */
        snprintf((char *)raw + 386, 12, "%011o", 1024 * 1024);
        snprintf((char *)raw + 398, 12, "%011o", 4096);
        snprintf((char *)raw + 483, 12, "%011o", 2 * 1024 * 1024);
        memcpy(raw + 257, "ustar  ", 8); /* GNU magic */
        memset(raw + 148, ' ', 8);
        unsigned sum = 0;
        for (int i = 0; i < 512; i++)
                sum += raw[i];
        snprintf((char *)raw + 148, 8, "%06o", sum);
        memset(raw + 512, 'S', 4096);
        struct buf tar = { raw, sizeof(raw), sizeof(raw) };
        struct unpack_result res = { 0 };
        _cleanup_berr_ struct berr *err = NULL;
        int r = unpack_buf(sb, &tar, 0, NULL, &res, &err);
        if (r < 0)
                print_message("%s\n", berr_msg(err));
        assert_int_equal(r, 0);
        struct stat st;
        lstat_at(sb->layer, "sparse", &st);
        assert_int_equal(st.st_size, 2 * 1024 * 1024);
        int fd = openat(sb->layer, "sparse", O_RDONLY | O_CLOEXEC);
        uint8_t b[8];
        assert_int_equal(pread(fd, b, 1, 0), 1);
        assert_int_equal(b[0], 0);
        assert_int_equal(pread(fd, b, 1, 1024 * 1024), 1);
        assert_int_equal(b[0], 'S');
        assert_int_equal(pread(fd, b, 1, 1024 * 1024 + 4096), 1);
        assert_int_equal(b[0], 0);
        close(fd);
        assert_int_equal(res.content_bytes, 4096);
        unpack_result_done(&res);
        assert_outside_clean(sb);
}

static void test_many_small_files(void **state)
{
        struct sandbox *sb = *state;
        /* Siblings reuse the cached parent; 3 directories of 1000 files each, interleaved at the end. */
        struct tarb *t = tb_new();
        char name[64];
        for (int d = 0; d < 3; d++)
                for (int i = 0; i < 1000; i++) {
                        snprintf(name, sizeof(name), "dir%d/sub/f%04d", d, i);
                        tb_add(t, &(struct tent){ .path = name, .type = AE_IFREG, .data = name });
                }
        for (int i = 0; i < 30; i++) {
                snprintf(name, sizeof(name), "dir%d/sub/late%d", i % 3, i);
                tb_add(t, &(struct tent){ .path = name, .type = AE_IFREG, .data = "late" });
        }
        struct buf tar = tb_finish(t);
        struct unpack_result res = { 0 };
        assert_int_equal(unpack_buf(sb, &tar, 0, NULL, &res, NULL), 0);
        assert_int_equal(res.entries, 3030);
        char data[64];
        read_file(sb->layer, "dir2/sub/f0999", data, sizeof(data));
        assert_string_equal(data, "dir2/sub/f0999");
        read_file(sb->layer, "dir1/sub/late28", data, sizeof(data));
        assert_string_equal(data, "late");
        assert_int_equal(res.n_implicit_dirs, 7); /* ".", dirN, dirN/sub */
        unpack_result_done(&res);
        free(tar.p);
}

static void test_replacements(void **state)
{
        struct sandbox *sb = *state;
        const struct tent ents[] = {
                { .path = "f", .type = AE_IFREG, .data = "f" },
                { .path = "g", .type = AE_IFREG, .data = "g" },
                { .path = "g", .type = 0, .link = "f" }, /* a hardlink replacing a file */
                { .path = "g", .type = 0, .link = "f" }, /* the same link again: nothing to do */
                { .path = "d/sub/x", .type = AE_IFREG, .data = "x" },
                { .path = "d", .type = 0, .link = "f" }, /* a hardlink replacing a directory tree */
                { .path = ".wh.w", .type = AE_IFREG },
                { .path = ".wh.w", .type = AE_IFREG, .uid = 7 }, /* a duplicate whiteout */
                { .path = "s", .type = AE_IFLNK, .link = "/" },
                { .path = ".wh.s", .type = AE_IFREG }, /* a whiteout replacing a symlink */
                { .path = "t/u/", .type = AE_IFDIR },
                { .path = ".wh.t", .type = AE_IFREG }, /* ... and a directory tree */
        };
        expect(sb, ents, ARRAY_SIZE(ents), 0, NULL);
        struct stat f, st;
        lstat_at(sb->layer, "f", &f);
        assert_int_equal(f.st_nlink, 3);
        lstat_at(sb->layer, "g", &st);
        assert_int_equal(st.st_ino, f.st_ino);
        lstat_at(sb->layer, "d", &st);
        assert_int_equal(st.st_ino, f.st_ino);
        const char *wh[] = { "w", "s", "t" };
        for (size_t i = 0; i < ARRAY_SIZE(wh); i++) {
                lstat_at(sb->layer, wh[i], &st);
                assert_true(S_ISCHR(st.st_mode));
                assert_int_equal(st.st_rdev, makedev(0, 0));
        }
        lstat_at(sb->layer, "w", &st);
        assert_int_equal(st.st_uid, H(7));
        const struct tent to_wh[] = { { .path = ".wh.x", .type = AE_IFREG },
                                      { .path = "y", .type = 0, .link = "x" } };
        expect(sb, to_wh, 2, -EPERM, "entry y: hardlink to a whiteout (x)");
}

static void test_xattr_namespaces(void **state)
{
        struct sandbox *sb = *state;
        const struct tent sys[] = {
                { .path = "f", .type = AE_IFREG, .xattrs = { { "system.nfs4_acl", "x", 1 } } }
        };
        expect(sb, sys, 1, -EPERM, "unsupported xattr namespace (system.nfs4_acl)");
        const struct tent odd[] = { { .path = "f", .type = AE_IFREG, .xattrs = { { "bogus", "x", 1 } } } };
        expect(sb, odd, 1, -EPERM, "unsupported xattr namespace (bogus)");
        const struct tent acl[] = { { .path = "f",
                                      .type = AE_IFREG,
                                      .xattrs = { { "system.posix_acl_access", "\2\0\0\0abc", 7 } } } };
        expect(sb, acl, 1, -EINVAL, "malformed system.posix_acl_access");
        uint8_t big_id[12] = { 2, 0, 0, 0, 2, 0, 7, 0, 0, 0, 0, 1 }; /* ACL_USER 2^24 */
        const struct tent aclr[] = {
                { .path = "f", .type = AE_IFREG, .xattrs = { { "system.posix_acl_access", big_id, 12 } } }
        };
        expect(sb, aclr, 1, -ERANGE, "out-of-range id in system.posix_acl_access");
        /* An empty value is a value. */
        const struct tent empty[] = {
                { .path = "f", .type = AE_IFREG, .xattrs = { { "user.empty", "", 0 } } }
        };
        expect(sb, empty, 1, 0, NULL);
        char v[4];
        int fd = openat(sb->layer, "f", O_RDONLY | O_CLOEXEC);
        assert_int_equal(fgetxattr(fd, "user.empty", v, sizeof(v)), 0);
        close(fd);
}

/* Many implicit parents (the index grows and rehashes), half of them defined later. */
static void test_many_implicit_dirs(void **state)
{
        struct sandbox *sb = *state;
        struct tarb *t = tb_new();
        char name[64];
        for (int i = 0; i < 300; i++) {
                snprintf(name, sizeof(name), "p%03d/q/f", i);
                tb_add(t, &(struct tent){ .path = name, .type = AE_IFREG });
        }
        for (int i = 0; i < 300; i += 2) {
                snprintf(name, sizeof(name), "p%03d/", i);
                tb_add(t, &(struct tent){ .path = name, .type = AE_IFDIR, .mode = 0700 });
        }
        struct buf tar = tb_finish(t);
        struct unpack_result res = { 0 };
        assert_int_equal(unpack_buf(sb, &tar, 0, NULL, &res, NULL), 0);
        assert_int_equal(res.n_implicit_dirs, 1 + 300 + 150);
        for (int i = 0; i < 300; i++) {
                snprintf(name, sizeof(name), "p%03d", i);
                assert_int_equal(has_implicit(&res, name), i % 2 == 1);
                snprintf(name, sizeof(name), "p%03d/q", i);
                assert_true(has_implicit(&res, name));
        }
        unpack_result_done(&res);
        free(tar.p);
}

/* No fd is leaked, on success or on error. */
static void test_no_fd_leak(void **state)
{
        struct sandbox *sb = *state;
        int before = 0, after = 0;
        DIR *d = opendir("/proc/self/fd");
        while (readdir(d))
                before++;
        closedir(d);
        const struct tent ok[] = { { .path = "a/b/c", .type = AE_IFREG, .data = "x" },
                                   { .path = "a/b/d", .type = AE_IFREG, .data = "y" } };
        expect(sb, ok, 2, 0, NULL);
        const struct tent bad[] = { { .path = "a/b/c", .type = AE_IFREG, .data = "x" },
                                    { .path = "a/b", .type = AE_IFLNK, .link = "/" },
                                    { .path = "a/b/e", .type = AE_IFREG, .data = "x" } };
        expect(sb, bad, 3, -ELOOP, NULL);
        d = opendir("/proc/self/fd");
        while (readdir(d))
                after++;
        closedir(d);
        assert_int_equal(before, after);
}

#define T(f) cmocka_unit_test_setup_teardown(f, sb_setup, sb_teardown)

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_clean_path),
                cmocka_unit_test(test_capability_convert),
                T(test_entry_types),
                T(test_no_shift_and_id_range),
                T(test_whiteouts),
                T(test_whiteout_names_invalid),
                T(test_hardlinks),
                T(test_write_through_links),
                T(test_escapes),
                T(test_cached_parent_replaced),
                T(test_devices_rejected),
                T(test_xattrs),
                T(test_xattrs_refused),
                T(test_implicit_dirs),
                T(test_fixup_implicit_dirs),
                T(test_duplicates_later_wins),
                T(test_budgets),
                T(test_truncated_and_garbage),
                T(test_diff_id),
                T(test_long_and_odd_names),
                T(test_sparse),
                T(test_many_small_files),
                T(test_replacements),
                T(test_xattr_namespaces),
                T(test_many_implicit_dirs),
                T(test_no_fd_leak),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
