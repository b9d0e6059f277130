/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Arbitrary bytes as an uncompressed layer tar, unpacked into a fresh directory with small budgets and
 * then removed. Besides crashes and sanitizer reports, the harness aborts when unpack_layer
 *  - leaks a file descriptor,
 *  - writes anything outside the layer directory: a sibling "outside" directory holding a sentinel file
 *    must stay exactly as it was, and nothing else may appear next to the layer.
 * Blocks carrying the ustar magic get their header checksum recomputed first, so that mutations reach
 * the meaning of headers instead of dying at libarchive's checksum test (bad checksums stay reachable
 * through blocks without the magic, and are unit-tested).
 * Run as root it also exercises chown/mknod/trusted.* paths. When fuzzing as root, protect the host
 * (absolute symlinks name real paths): run under `unshare -m` with read-only bind mounts over /etc, /usr ...
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/unpack.h"
#include "lib/fs.h"

#define SENTINEL "sentinel: must never change\n"

static int top = -1;
static char dir[] = "/tmp/berth-fuzz-tar-XXXXXX";

static void fuzz_cleanup(void)
{
        fs_rm_rf_at(AT_FDCWD, dir);
}

static void fuzz_setup(void)
{
        if (!mkdtemp(dir))
                abort();
        atexit(fuzz_cleanup);
        top = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (top < 0 || mkdirat(top, "outside", 0755) < 0)
                abort();
        int f = openat(top, "outside/sentinel", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (f < 0 || fs_write_all(f, SENTINEL, strlen(SENTINEL)) < 0)
                abort();
        close(f);
}

static int count_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        if (!d)
                abort();
        int n = 0;
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

/* Abort unless dfd holds exactly the names in `want` (NULL-terminated). */
static void check_listing(int dfd, const char *const *want)
{
        DIR *d = fdopendir(openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!d)
                abort();
        size_t n = 0, nwant = 0;
        while (want[nwant])
                nwant++;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                bool ok = false;
                for (size_t i = 0; i < nwant; i++)
                        ok = ok || strcmp(de->d_name, want[i]) == 0;
                if (!ok) {
                        fprintf(stderr, "fuzz_tar: unexpected %s outside the layer\n", de->d_name);
                        abort();
                }
                n++;
        }
        closedir(d);
        if (n != nwant)
                abort();
}

static void check_outside(void)
{
        check_listing(top, (const char *const[]){ "outside", NULL });
        int out = openat(top, "outside", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (out < 0)
                abort();
        check_listing(out, (const char *const[]){ "sentinel", NULL });
        struct stat st;
        if (fstatat(out, "sentinel", &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
            (st.st_mode & 07777) != 0644 || st.st_nlink != 1 || st.st_uid != geteuid())
                abort();
        char *data = NULL;
        if (fs_read_file_at(out, "sentinel", 4096, &data, NULL) < 0 || strcmp(data, SENTINEL) != 0)
                abort();
        free(data);
        if (fstat(out, &st) < 0 || (st.st_mode & 07777) != 0755 || st.st_uid != geteuid())
                abort();
        close(out);
}

struct memsrc {
        const uint8_t *p;
        size_t len, pos, chunk;
};

static ssize_t memsrc_read(void *userdata, const void **ret_buf, struct berr **err)
{
        (void)err;
        struct memsrc *s = userdata;
        size_t n = MIN(s->chunk, s->len - s->pos);
        *ret_buf = s->p + s->pos;
        s->pos += n;
        return (ssize_t)n;
}

static void fix_checksums(uint8_t *p, size_t n)
{
        for (size_t off = 0; off + 512 <= n; off += 512) {
                uint8_t *h = p + off;
                if (memcmp(h + 257, "ustar", 5) != 0)
                        continue;
                memset(h + 148, ' ', 8);
                unsigned sum = 0;
                for (int i = 0; i < 512; i++)
                        sum += h[i];
                char tmp[8];
                snprintf(tmp, sizeof(tmp), "%06o", sum & 0777777);
                memcpy(h + 148, tmp, 7); /* six digits, NUL, and the space already there */
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (top < 0)
                fuzz_setup();
        uint8_t *copy = malloc(size ? size : 1);
        if (!copy)
                abort();
        if (size)
                memcpy(copy, data, size);
        fix_checksums(copy, size);
        data = copy;
        int fds = count_fds();
        if (mkdirat(top, "layer", 0700) < 0)
                abort();
        int layer = openat(top, "layer", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (layer < 0)
                abort();
        /* An odd chunk size so headers straddle source chunks. */
        struct memsrc s = { .p = data, .len = size, .chunk = 4093 };
        struct unpack_opts o = { .max_bytes = 8u << 20, .max_entries = 2000, .shift_ids = geteuid() == 0 };
        struct unpack_result res = { 0 };
        struct berr *err = NULL;
        int r = unpack_layer(layer, memsrc_read, &s, &o, &res, &err);
        if (r == 0) {
                /* The fixup walks the same tree as upper and as its own lower. */
                const int lowers[] = { layer };
                (void)unpack_fixup_implicit_dirs(layer, res.implicit_dirs, res.n_implicit_dirs, lowers, 1,
                                                 NULL);
                unpack_result_done(&res);
        } else if (!err || !berr_msg(err)[0]) {
                abort(); /* every failure carries a message */
        }
        berr_free(err);
        close(layer);
        if (fs_rm_rf_at(top, "layer") < 0)
                abort();
        check_outside();
        if (count_fds() != fds) {
                fprintf(stderr, "fuzz_tar: fd leak\n");
                abort();
        }
        free(copy);
        return 0;
}
