/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layer extraction (see unpack.h for the contract).
 *
 * libarchive parses the tar stream (format only, no filters: the stream is already decompressed); every
 * byte it reads comes through unpack_read_cb, which hashes it (DiffID) and enforces the byte budget.
 * Entries are written by this file, never by archive_write_disk, and only through file descriptors:
 *
 * - the parent directory of each entry is opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
 *   RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV) relative to the layer directory, so neither "..", nor an
 *   absolute symlink, nor a symlink planted by an earlier entry can lead outside it (CVE-2018-15664,
 *   CVE-2021-29136, CVE-2025-47290 are all variants of following a path the layer controls);
 * - the last component is operated on with *at() calls that never follow it (O_NOFOLLOW, O_EXCL,
 *   AT_SYMLINK_NOFOLLOW), and metadata is set on the opened fd where one exists (CVE-2021-32760);
 * - the extraction is single-threaded and nothing else writes into the staging directory, so a check
 *   followed by an *at() call on the same parent fd cannot be raced.
 *
 * The parent fd of the previous entry is cached (tars list siblings together, so this saves a path walk
 * per entry); the cache is dropped whenever an entry removes something at or above the cached directory,
 * which is the only way a directory can turn into a symlink. Everything is O(entries + bytes): no
 * rescans of the tree (GHSA-rp3h-jf77-q9p4), directory mtimes are applied in one pass at the end.
 */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "image/idmap.h"
#include "image/unpack.h"
#include "image/unpack_internal.h"
#include "lib/fs.h"
#include "lib/strv.h"

#define UNPACK_DEFAULT_MAX_BYTES   (20ULL << 30)
#define UNPACK_DEFAULT_MAX_ENTRIES 2000000ULL
#define UNPACK_RESOLVE             (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
#define UNPACK_XATTR_MAX           65536 /* XATTR_SIZE_MAX: the kernel's limit for one value */
#define UNPACK_XATTR_LIST_MAX      65536 /* XATTR_LIST_MAX */
#define UNPACK_LABEL_MAX           200   /* bytes of an entry name quoted in an error message */
#define UNPACK_LABEL_SIZE          (UNPACK_LABEL_MAX * 4 + 4)
#ifndef UNPACK_ASYNC_HASH_MIN
#define UNPACK_ASYNC_HASH_MIN (64 * 1024) /* chunks at least this big are hashed on the helper thread */
#endif

#define WH_PREFIX     ".wh."
#define WH_META       ".wh..wh."
#define WH_OPAQUE     ".wh..wh..opq"
#define OVERLAY_USER  "user.overlay."
#define OVERLAY_TRUST "trusted.overlay."

/* A growable byte arena for paths recorded during the walk (no malloc per entry). */
struct strbuf {
        char *p;
        size_t len, cap;
};

static size_t strbuf_add(struct strbuf *b, const char *s, size_t n)
{
        if (b->len + n + 1 > b->cap) {
                size_t cap = MAX(b->cap * 2, (size_t)4096);
                while (cap < b->len + n + 1)
                        cap *= 2;
                b->p = xrealloc(b->p, cap);
                b->cap = cap;
        }
        size_t off = b->len;
        memcpy(b->p + off, s, n);
        b->p[off + n] = '\0';
        b->len += n + 1;
        return off;
}

/* A directory whose mtime is set after all entries are written (creating children changes it). */
struct dir_time {
        size_t off, len; /* path in ctx->dir_paths */
        struct timespec ts[2];
};

/*
 * Parents created without a tar entry, in creation order, with a hash index so an explicit entry can
 * drop its path in O(1). `implicit` is false once an entry defined the directory.
 */
struct idir {
        size_t off, len; /* path in ctx->idir_paths */
        bool implicit;
};

/*
 * The DiffID is hashed on a helper thread, overlapping SHA-256 (~1.5 GB/s here, as costly as a third of
 * the inflate) with libarchive's parsing and the write()s of the same chunk. A chunk stays valid only
 * until the next source call, so ctx_pull waits for the previous chunk's hash before pulling the next.
 */
struct hasher {
        pthread_t thread;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        bool running; /* the thread exists */
        bool busy;    /* a chunk is being hashed */
        bool quit;
        const void *buf;
        size_t len;
        struct sha256_ctx *sha;
};

static void *hasher_main(void *userdata)
{
        struct hasher *h = userdata;
        pthread_mutex_lock(&h->mu);
        for (;;) {
                while (!h->busy && !h->quit)
                        pthread_cond_wait(&h->cv, &h->mu);
                if (!h->busy)
                        break;
                pthread_mutex_unlock(&h->mu);
                sha256_update(h->sha, h->buf, h->len);
                pthread_mutex_lock(&h->mu);
                h->busy = false;
                pthread_cond_broadcast(&h->cv);
        }
        pthread_mutex_unlock(&h->mu);
        return NULL;
}

static void hasher_start(struct hasher *h, struct sha256_ctx *sha)
{
        h->sha = sha;
        pthread_mutex_init(&h->mu, NULL);
        pthread_cond_init(&h->cv, NULL);
        /* Without a thread (resource limits) every chunk is simply hashed inline. */
        h->running = pthread_create(&h->thread, NULL, hasher_main, h) == 0;
}

/* Block until the helper has finished the chunk it was given (the source may then reuse it). */
static void hasher_wait(struct hasher *h)
{
        if (!h->running)
                return;
        pthread_mutex_lock(&h->mu);
        while (h->busy)
                pthread_cond_wait(&h->cv, &h->mu);
        pthread_mutex_unlock(&h->mu);
}

static void hasher_add(struct hasher *h, const void *buf, size_t len)
{
        if (!h->running || len < UNPACK_ASYNC_HASH_MIN) {
                hasher_wait(h); /* keep the order of the bytes */
                sha256_update(h->sha, buf, len);
                return;
        }
        pthread_mutex_lock(&h->mu);
        while (h->busy)
                pthread_cond_wait(&h->cv, &h->mu);
        h->buf = buf;
        h->len = len;
        h->busy = true;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
}

static void hasher_stop(struct hasher *h)
{
        if (!h->sha)
                return;
        if (h->running) {
                pthread_mutex_lock(&h->mu);
                h->quit = true;
                pthread_cond_broadcast(&h->cv);
                pthread_mutex_unlock(&h->mu);
                pthread_join(h->thread, NULL); /* finishes a pending chunk first */
                h->running = false;
        }
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->cv);
        h->sha = NULL;
}

struct unpack_ctx {
        int root; /* our own O_RDONLY fd of the layer directory */
        bool shift;
        uint64_t max_bytes, max_entries;
        stream_source_fn src;
        void *userdata;
        bool src_eof;
        int src_code;         /* error raised inside the read callback (source failure or budget) */
        struct berr *src_err; /* its message */
        struct sha256_ctx *sha;
        struct hasher hasher;
        uint64_t tar_bytes, entries, content_bytes;

        /* The parent directory of the previous entry. */
        int cache_fd;
        size_t cache_len;
        char cache_path[UNPACK_MAX_PATH + 1];

        struct dir_time *dirs;
        size_t n_dirs, cap_dirs;
        struct strbuf dir_paths;

        struct idir *idirs;
        size_t n_idirs, cap_idirs;
        uint32_t *idir_slots; /* index + 1; 0 = empty; power-of-two size */
        size_t n_slots;
        struct strbuf idir_paths;
        bool root_implicit;

        char path[UNPACK_MAX_PATH + 1];  /* the current entry, cleaned */
        char lpath[UNPACK_MAX_PATH + 1]; /* its hardlink target, cleaned */
        char label[2][UNPACK_LABEL_SIZE];
        uint8_t *xbuf; /* UNPACK_XATTR_MAX scratch for rewritten xattr values */
        struct berr **err;
};

/*
 * Render n bytes of an untrusted name printable (control characters and backslashes as \xNN) and
 * bounded (UNPACK_LABEL_MAX bytes, then "...") into out, which has UNPACK_LABEL_SIZE bytes.
 */
static const char *quote_name(const char *s, size_t n, char *out)
{
        static const char hex[] = "0123456789abcdef";
        size_t o = 0, i = 0;
        for (; i < n && s[i] && i < UNPACK_LABEL_MAX; i++) {
                unsigned char ch = (unsigned char)s[i];
                if (ch < 0x20 || ch == 0x7f || ch == '\\') {
                        out[o++] = '\\';
                        out[o++] = 'x';
                        out[o++] = hex[ch >> 4];
                        out[o++] = hex[ch & 15];
                } else {
                        out[o++] = (char)ch;
                }
        }
        if (i < n && s[i]) {
                memcpy(out + o, "...", 3);
                o += 3;
        }
        out[o] = '\0';
        return out;
}

/* The entry name for an error message. */
static const char *ctx_label(struct unpack_ctx *c, const char *name)
{
        if (!name)
                return "(no name)";
        return quote_name(name, strlen(name), c->label[0]);
}

/* A second untrusted string (a parent, a link target, an xattr name) in the same message. */
static const char *ctx_quote(struct unpack_ctx *c, const char *s, size_t n)
{
        return quote_name(s, n, c->label[1]);
}

static uint64_t hash_path(const char *s, size_t n)
{
        uint64_t h = 1469598103934665603ULL; /* FNV-1a */
        for (size_t i = 0; i < n; i++)
                h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
        return h;
}

/* The slot holding `path` or the empty slot where it would go. */
static size_t idir_slot(const struct unpack_ctx *c, const char *path, size_t len)
{
        size_t mask = c->n_slots - 1, i = (size_t)hash_path(path, len) & mask;
        for (;;) {
                uint32_t v = c->idir_slots[i];
                if (v == 0)
                        return i;
                const struct idir *d = &c->idirs[v - 1];
                if (d->len == len && memcmp(c->idir_paths.p + d->off, path, len) == 0)
                        return i;
                i = (i + 1) & mask;
        }
}

static void idir_grow(struct unpack_ctx *c)
{
        size_t n = c->n_slots ? c->n_slots * 2 : 64;
        free(c->idir_slots);
        c->idir_slots = xcalloc(n, sizeof(*c->idir_slots));
        c->n_slots = n;
        for (size_t k = 0; k < c->n_idirs; k++) {
                const struct idir *d = &c->idirs[k];
                c->idir_slots[idir_slot(c, c->idir_paths.p + d->off, d->len)] = (uint32_t)(k + 1);
        }
}

/* Record that `path` was created implicitly (implicit) or defined by an entry (!implicit). */
static void idir_mark(struct unpack_ctx *c, const char *path, size_t len, bool implicit)
{
        if (!implicit && c->n_idirs == 0)
                return;
        if ((c->n_idirs + 1) * 2 > c->n_slots)
                idir_grow(c);
        size_t s = idir_slot(c, path, len);
        if (c->idir_slots[s]) {
                c->idirs[c->idir_slots[s] - 1].implicit = implicit;
                return;
        }
        if (!implicit)
                return;
        if (c->n_idirs == c->cap_idirs) {
                c->cap_idirs = c->cap_idirs ? c->cap_idirs * 2 : 64;
                c->idirs = xrealloc(c->idirs, c->cap_idirs * sizeof(*c->idirs));
        }
        c->idirs[c->n_idirs] = (struct idir){ strbuf_add(&c->idir_paths, path, len), len, true };
        c->idir_slots[s] = (uint32_t)++c->n_idirs;
}

static void cache_drop(struct unpack_ctx *c)
{
        closep(&c->cache_fd);
        c->cache_fd = -1;
        c->cache_len = 0;
}

/* Forget the cached parent if `path` is it or one of its ancestors (the entry may have replaced it). */
static void cache_invalidate(struct unpack_ctx *c, const char *path, size_t len)
{
        if (c->cache_fd < 0 || len > c->cache_len)
                return;
        if (memcmp(c->cache_path, path, len) == 0 && (len == c->cache_len || c->cache_path[len] == '/'))
                cache_drop(c);
}

/* Move the error raised in the read callback into *c->err; returns its code. */
static int ctx_take_src_error(struct unpack_ctx *c)
{
        int code = c->src_code;
        if (c->err && !*c->err)
                *c->err = TAKE_PTR(c->src_err);
        berr_free(c->src_err);
        c->src_err = NULL;
        return code;
}

/* An error reported by libarchive: the callback's own error if it caused it, else a damaged tar. */
static int ctx_archive_error(struct unpack_ctx *c, struct archive *a, const char *name)
{
        if (c->src_code < 0)
                return ctx_take_src_error(c);
        const char *why = archive_error_string(a);
        if (name)
                return berr_set(c->err, -EBADMSG, "entry %s: damaged tar: %s", ctx_label(c, name),
                                why ? why : "unknown error");
        return berr_set(c->err, -EBADMSG, "damaged tar: %s", why ? why : "unknown error");
}

/*
 * Pull one chunk of the uncompressed stream from the source, hash it and count it against the byte
 * budget. Returns its length, 0 at EOF, or a negative code (recorded in c->src_code/src_err).
 */
static ssize_t ctx_pull(struct unpack_ctx *c, const void **ret_buf)
{
        if (c->src_eof)
                return 0;
        if (c->src_code < 0)
                return c->src_code;
        const void *buf = NULL;
        hasher_wait(&c->hasher); /* the previous chunk is ours until it is hashed */
        ssize_t n = c->src(c->userdata, &buf, &c->src_err);
        if (n < 0) {
                c->src_code = (int)n;
                if (!c->src_err)
                        berr_set_errno(&c->src_err, (int)n, "reading layer");
                return n;
        }
        if (n == 0) {
                c->src_eof = true;
                return 0;
        }
        if ((uint64_t)n > c->max_bytes - c->tar_bytes) {
                c->src_code =
                    berr_set(&c->src_err, -EFBIG, "layer exceeds the %llu-byte budget (decompression bomb?)",
                             (unsigned long long)c->max_bytes);
                return c->src_code;
        }
        hasher_add(&c->hasher, buf, (size_t)n);
        c->tar_bytes += (uint64_t)n;
        *ret_buf = buf;
        return n;
}

static la_ssize_t unpack_read_cb(struct archive *a, void *userdata, const void **ret_buf)
{
        struct unpack_ctx *c = userdata;
        ssize_t n = ctx_pull(c, ret_buf);
        if (n < 0) {
                archive_set_error(a, EIO, "layer source failed");
                return ARCHIVE_FATAL;
        }
        return n;
}

BERTH_STATIC int unpack_clean_path(const char *name, char *out, size_t out_size, size_t *ret_depth)
{
        if (!name || !*name || name[0] == '/')
                return -EINVAL;
        size_t o = 0, depth = 0;
        const char *p = name;
        while (*p) {
                const char *s = p;
                while (*p && *p != '/')
                        p++;
                size_t l = (size_t)(p - s);
                while (*p == '/')
                        p++;
                if (l == 0 || (l == 1 && s[0] == '.'))
                        continue;
                if (l == 2 && s[0] == '.' && s[1] == '.')
                        return -EINVAL;
                if (++depth > UNPACK_MAX_DEPTH)
                        return -E2BIG;
                size_t need = o + (o ? 1 : 0) + l;
                if (need > UNPACK_MAX_PATH || need + 1 > out_size)
                        return -ENAMETOOLONG;
                if (o)
                        out[o++] = '/';
                memcpy(out + o, s, l);
                o += l;
        }
        out[o] = '\0';
        *ret_depth = depth;
        return 0;
}

/* Clean `name` into buf; on failure set a message naming the entry (`what` is "" or "hardlink target "). */
static int ctx_clean(struct unpack_ctx *c, const char *entry, const char *what, const char *name, char *buf)
{
        size_t depth;
        int r = unpack_clean_path(name, buf, UNPACK_MAX_PATH + 1, &depth);
        if (r == 0)
                return 0;
        const char *l = ctx_label(c, entry);
        if (!name || !*name)
                return berr_set(c->err, -EINVAL, "entry %s: empty %sname", l, what);
        if (name[0] == '/')
                return berr_set(c->err, -EINVAL, "entry %s: %sabsolute path is not allowed in a layer", l,
                                what);
        if (r == -EINVAL)
                return berr_set(c->err, -EINVAL, "entry %s: %spath contains \"..\" (escapes the layer)", l,
                                what);
        if (r == -E2BIG)
                return berr_set(c->err, -E2BIG, "entry %s: %spath is deeper than %d components", l, what,
                                UNPACK_MAX_DEPTH);
        return berr_set(c->err, -E2BIG, "entry %s: %spath is longer than %d bytes", l, what, UNPACK_MAX_PATH);
}

/* Ownership and times of the current entry, already validated and shifted. */
struct entry_meta {
        uid_t uid;
        gid_t gid;
        mode_t mode; /* permission bits incl. setuid/setgid/sticky */
        struct timespec ts[2];
        bool has_xattrs;
};

static uint32_t le32(const uint8_t *p)
{
        return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
        p[0] = (uint8_t)v;
        p[1] = (uint8_t)(v >> 8);
        p[2] = (uint8_t)(v >> 16);
        p[3] = (uint8_t)(v >> 24);
}

/*
 * File capabilities: a v2 xattr written by host root would grant its capabilities to whoever runs the
 * file, in any user namespace (including the host if the layer directory is ever reachable there).
 * A v3 xattr carries a rootid and only applies in user namespaces whose root maps to it, so with
 * shifted ids we store v3 with rootid = host id of container root. `berth image export` converts v3
 * back to v2 (rootid = idmap_to_container(rootid) = 0).
 */
BERTH_STATIC int unpack_convert_capability(const uint8_t *in, size_t n, bool shift, uint8_t out[24],
                                           size_t *ret_len)
{
        if (n < 4)
                return -EINVAL;
        uint32_t magic = le32(in), rev = magic & VFS_CAP_REVISION_MASK,
                 flags = magic & ~VFS_CAP_REVISION_MASK;
        if (flags & ~(uint32_t)VFS_CAP_FLAGS_EFFECTIVE)
                return -EINVAL;
        uint32_t rootid = 0;
        if (rev == VFS_CAP_REVISION_1) {
                if (n != XATTR_CAPS_SZ_1)
                        return -EINVAL;
        } else if (rev == VFS_CAP_REVISION_2) {
                if (n != XATTR_CAPS_SZ_2)
                        return -EINVAL;
        } else if (rev == VFS_CAP_REVISION_3) {
                if (n != XATTR_CAPS_SZ_3)
                        return -EINVAL;
                rootid = le32(in + XATTR_CAPS_SZ_2);
        } else {
                return -EINVAL;
        }
        if (!shift) {
                memcpy(out, in, n);
                *ret_len = n;
                return 0;
        }
        if (!idmap_in_range(rootid))
                return -ERANGE;
        memset(out, 0, XATTR_CAPS_SZ_3);
        put_le32(out, VFS_CAP_REVISION_3 | flags);
        memcpy(out + 4, in + 4, rev == VFS_CAP_REVISION_1 ? 8 : 16); /* permitted/inheritable lo (+hi) */
        put_le32(out + XATTR_CAPS_SZ_2, idmap_to_host(rootid));
        *ret_len = XATTR_CAPS_SZ_3;
        return 0;
}

/* POSIX ACL xattrs name users and groups by id: those must move into the host range like owners. */
BERTH_STATIC int unpack_shift_acl(const uint8_t *in, size_t n, uint8_t *out)
{
        if (n < 4 || (n - 4) % 8 != 0 || le32(in) != 2 /* POSIX_ACL_XATTR_VERSION */)
                return -EINVAL;
        memcpy(out, in, n);
        for (size_t o = 4; o < n; o += 8) {
                unsigned tag = (unsigned)in[o] | (unsigned)in[o + 1] << 8;
                if (tag != 0x02 /* ACL_USER */ && tag != 0x08 /* ACL_GROUP */)
                        continue;
                uint32_t id = le32(in + o + 4);
                if (!idmap_in_range(id))
                        return -ERANGE;
                put_le32(out + o + 4, idmap_to_host(id));
        }
        return 0;
}

/*
 * Apply the entry's xattrs (PAX SCHILY.xattr.* / LIBARCHIVE.xattr.*, as libarchive reports them) to the
 * file: through `fd` when it is a real open fd, else through `pathfd` (an O_PATH|O_NOFOLLOW fd of a
 * symlink) via setxattr("/proc/self/fd/N"), which acts on the symlink itself: the magic link resolves
 * to the fd's inode and is not followed further (lsetxattr on it would hit the procfs link instead).
 * `special` is true for symlinks and FIFOs, where the kernel refuses user.* (skipped, as containerd does).
 */
static int ctx_apply_xattrs(struct unpack_ctx *c, struct archive_entry *e, const char *entry, int fd,
                            int pathfd, bool special)
{
        if (archive_entry_xattr_reset(e) == 0)
                return 0;
        char proc[64];
        if (fd < 0)
                snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pathfd);
        const char *name;
        const void *value;
        size_t size;
        while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK) {
                const char *l = ctx_label(c, entry);
                if (!name || !*name)
                        return berr_set(c->err, -EINVAL, "entry %s: xattr without a name", l);
                if (!value)
                        value = "";
                if (size > UNPACK_XATTR_MAX)
                        return berr_set(c->err, -E2BIG, "entry %s: xattr %s is larger than %d bytes", l,
                                        ctx_quote(c, name, strlen(name)), UNPACK_XATTR_MAX);
                if (strncmp(name, OVERLAY_TRUST, strlen(OVERLAY_TRUST)) == 0 ||
                    strncmp(name, OVERLAY_USER, strlen(OVERLAY_USER)) == 0)
                        return berr_set(c->err, -EPERM, "entry %s: overlay xattrs are reserved (%s)", l,
                                        ctx_quote(c, name, strlen(name)));
                if (strncmp(name, "trusted.", 8) == 0)
                        return berr_set(c->err, -EPERM,
                                        "entry %s: trusted.* xattrs are not accepted from layers (%s)", l,
                                        ctx_quote(c, name, strlen(name)));
                if (strcmp(name, "security.capability") == 0) {
                        if (!c->xbuf)
                                c->xbuf = xmalloc(UNPACK_XATTR_MAX);
                        int r = unpack_convert_capability(value, size, c->shift, c->xbuf, &size);
                        if (r < 0)
                                return berr_set(c->err, r, "entry %s: %s security.capability", l,
                                                r == -ERANGE ? "out-of-range rootid in" : "malformed");
                        value = c->xbuf;
                } else if (strcmp(name, "system.posix_acl_access") == 0 ||
                           strcmp(name, "system.posix_acl_default") == 0) {
                        if (c->shift) {
                                if (!c->xbuf)
                                        c->xbuf = xmalloc(UNPACK_XATTR_MAX);
                                int r = unpack_shift_acl(value, size, c->xbuf);
                                if (r < 0)
                                        return berr_set(c->err, r, "entry %s: %s %s", l,
                                                        r == -ERANGE ? "out-of-range id in" : "malformed",
                                                        name);
                                value = c->xbuf;
                        }
                } else if (strncmp(name, "user.", 5) != 0 && strncmp(name, "security.", 9) != 0) {
                        return berr_set(c->err, -EPERM, "entry %s: unsupported xattr namespace (%s)", l,
                                        ctx_quote(c, name, strlen(name)));
                }
                int r = fd >= 0 ? fsetxattr(fd, name, value, size, 0) : setxattr(proc, name, value, size, 0);
                if (r < 0) {
                        if (errno == EOPNOTSUPP)
                                continue; /* the filesystem has no such namespace: as containerd, skip */
                        if (errno == EPERM && special && strncmp(name, "user.", 5) == 0)
                                continue;
                        return berr_set_errno(c->err, -errno, "entry %s: setting xattr %s", l,
                                              ctx_quote(c, name, strlen(name)));
                }
        }
        return 0;
}

/* Remember a directory's times for the final pass. */
static void ctx_record_dir_time(struct unpack_ctx *c, const char *path, size_t len,
                                const struct timespec ts[2])
{
        if (c->n_dirs == c->cap_dirs) {
                c->cap_dirs = c->cap_dirs ? c->cap_dirs * 2 : 256;
                c->dirs = xrealloc(c->dirs, c->cap_dirs * sizeof(*c->dirs));
        }
        c->dirs[c->n_dirs++] =
            (struct dir_time){ strbuf_add(&c->dir_paths, path, len), len, { ts[0], ts[1] } };
}

/*
 * Owner, mode, xattrs and times through an open fd. chown comes first: it clears setuid/setgid and file
 * capabilities, which the later chmod and setxattr then set for good. Directories get their times at
 * the end (writing children would change them).
 */
static int ctx_apply_meta_fd(struct unpack_ctx *c, struct archive_entry *e, const char *entry,
                             const struct entry_meta *m, int fd, bool is_dir, bool special)
{
        if (fchown(fd, m->uid, m->gid) < 0)
                return berr_set_errno(c->err, -errno, "entry %s: chown", ctx_label(c, entry));
        if (fchmod(fd, m->mode) < 0)
                return berr_set_errno(c->err, -errno, "entry %s: chmod", ctx_label(c, entry));
        if (m->has_xattrs) {
                int r = ctx_apply_xattrs(c, e, entry, fd, -1, special);
                if (r < 0)
                        return r;
        }
        if (is_dir)
                ctx_record_dir_time(c, c->path, strlen(c->path), m->ts);
        else if (futimens(fd, m->ts) < 0)
                return berr_set_errno(c->err, -errno, "entry %s: setting times", ctx_label(c, entry));
        return 0;
}

/*
 * Walk `parent` (NUL-terminated, cleaned, non-empty) component by component from the layer root,
 * creating missing directories as implicit parents (0755, container root). Used when the one-call
 * openat2 failed, to create what is missing and to say exactly which component is wrong. For a
 * whiteout entry a parent that is itself a whiteout makes the entry moot: *ret_skip is set.
 */
static int ctx_walk_parent(struct unpack_ctx *c, const char *entry, const char *parent, bool whiteout,
                           int *ret_fd, bool *ret_skip)
{
        _cleanup_close_ int cur = -1;
        int at = c->root;
        const char *p = parent;
        char comp[NAME_MAX + 1];
        while (*p) {
                const char *s = p;
                while (*p && *p != '/')
                        p++;
                size_t l = (size_t)(p - s), upto = (size_t)(p - parent);
                if (*p)
                        p++;
                if (l > NAME_MAX)
                        return berr_set(c->err, -ENAMETOOLONG,
                                        "entry %s: path component longer than %d bytes", ctx_label(c, entry),
                                        NAME_MAX);
                memcpy(comp, s, l);
                comp[l] = '\0';
                struct stat st;
                int nfd;
                if (fstatat(at, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno != ENOENT)
                                return berr_set_errno(c->err, -errno, "entry %s: parent %s",
                                                      ctx_label(c, entry), ctx_quote(c, parent, upto));
                        if (mkdirat(at, comp, 0755) < 0)
                                return berr_set_errno(c->err, -errno, "entry %s: creating parent %s",
                                                      ctx_label(c, entry), ctx_quote(c, parent, upto));
                        nfd = openat(at, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (nfd < 0)
                                return berr_set_errno(c->err, -errno, "entry %s: opening parent %s",
                                                      ctx_label(c, entry), ctx_quote(c, parent, upto));
                        uid_t root_id = c->shift ? idmap_to_host(0) : 0;
                        if (fchown(nfd, root_id, root_id) < 0 || fchmod(nfd, 0755) < 0) {
                                int r = -errno;
                                close(nfd);
                                return berr_set_errno(c->err, r, "entry %s: implicit parent %s",
                                                      ctx_label(c, entry), ctx_quote(c, parent, upto));
                        }
                        idir_mark(c, parent, upto, true);
                } else if (S_ISDIR(st.st_mode)) {
                        nfd = openat(at, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                        if (nfd < 0)
                                return berr_set_errno(c->err, -errno, "entry %s: opening parent %s",
                                                      ctx_label(c, entry), ctx_quote(c, parent, upto));
                } else if (S_ISLNK(st.st_mode)) {
                        return berr_set(c->err, -ELOOP, "entry %s: parent %s is a symlink",
                                        ctx_label(c, entry), ctx_quote(c, parent, upto));
                } else if (whiteout && S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
                        *ret_skip = true;
                        return 0;
                } else {
                        return berr_set(c->err, -ENOTDIR, "entry %s: parent %s is not a directory",
                                        ctx_label(c, entry), ctx_quote(c, parent, upto));
                }
                closep(&cur);
                cur = nfd;
                at = cur;
        }
        *ret_fd = TAKE_FD(cur);
        return 0;
}

/*
 * The parent directory fd of c->path, whose parent part is c->path[0..plen). The fd is borrowed (the
 * layer root or the cache). With *ret_skip set nothing is returned (whiteout under a whiteout).
 */
static int ctx_parent(struct unpack_ctx *c, const char *entry, size_t plen, bool whiteout, int *ret_fd,
                      bool *ret_skip)
{
        *ret_skip = false;
        if (plen == 0) {
                *ret_fd = c->root;
                return 0;
        }
        if (c->cache_fd >= 0 && c->cache_len == plen && memcmp(c->cache_path, c->path, plen) == 0) {
                *ret_fd = c->cache_fd;
                return 0;
        }
        char saved = c->path[plen];
        c->path[plen] = '\0';
        int fd = fs_openat2(c->root, c->path, O_PATH | O_DIRECTORY, 0, UNPACK_RESOLVE);
        int r = 0;
        if (fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP || fd == -EXDEV)
                r = ctx_walk_parent(c, entry, c->path, whiteout, &fd, ret_skip);
        else if (fd < 0)
                r = berr_set_errno(c->err, fd, "entry %s: opening parent %s", ctx_label(c, entry),
                                   ctx_quote(c, c->path, strlen(c->path)));
        c->path[plen] = saved;
        if (r < 0 || *ret_skip)
                return r;
        cache_drop(c);
        memcpy(c->cache_path, c->path, plen);
        c->cache_path[plen] = '\0';
        c->cache_len = plen;
        c->cache_fd = fd;
        *ret_fd = fd;
        return 0;
}

/*
 * Clear the way for a new entry at pfd/name (full path c->path): if something is there, remove it
 * (recursively for a directory), unless it is a directory and keep_dir is set (*ret_kept then).
 */
static int ctx_make_room(struct unpack_ctx *c, const char *entry, int pfd, const char *name, bool keep_dir,
                         bool *ret_kept)
{
        struct stat st;
        if (ret_kept)
                *ret_kept = false;
        if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return errno == ENOENT ? 0 : berr_set_errno(c->err, -errno, "entry %s", ctx_label(c, entry));
        if (S_ISDIR(st.st_mode) && keep_dir) {
                *ret_kept = true;
                return 0;
        }
        int r = S_ISDIR(st.st_mode) ? fs_rm_rf_at(pfd, name) : (unlinkat(pfd, name, 0) < 0 ? -errno : 0);
        if (r < 0)
                return berr_set_errno(c->err, r, "entry %s: replacing the existing file",
                                      ctx_label(c, entry));
        cache_invalidate(c, c->path, strlen(c->path));
        return 0;
}

static int ctx_write_regular(struct unpack_ctx *c, struct archive *a, struct archive_entry *e,
                             const char *entry, const struct entry_meta *m, int pfd, const char *name)
{
        int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
        _cleanup_close_ int fd = openat(pfd, name, flags, 0600);
        if (fd < 0 && errno == EEXIST) {
                int r = ctx_make_room(c, entry, pfd, name, false, NULL);
                if (r < 0)
                        return r;
                fd = openat(pfd, name, flags, 0600);
        }
        if (fd < 0)
                return berr_set_errno(c->err, -errno, "entry %s: creating file", ctx_label(c, entry));

        int64_t size = archive_entry_size(e), pos = 0;
        uint64_t written = 0;
        bool sparse = archive_entry_sparse_count(e) > 0;
        for (;;) {
                const void *buf;
                size_t len;
                la_int64_t off;
                int r = archive_read_data_block(a, &buf, &len, &off);
                if (r == ARCHIVE_EOF)
                        break;
                if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
                        return ctx_archive_error(c, a, entry);
                if (off < pos || off > size || (uint64_t)len > (uint64_t)(size - off))
                        return berr_set(c->err, -EBADMSG, "entry %s: data outside the file's declared size",
                                        ctx_label(c, entry));
                if (off != pos && lseek(fd, off, SEEK_SET) < 0)
                        return berr_set_errno(c->err, -errno, "entry %s: seeking", ctx_label(c, entry));
                int w = fs_write_all(fd, buf, len);
                if (w < 0)
                        return berr_set_errno(c->err, w, "entry %s: writing", ctx_label(c, entry));
                pos = off + (int64_t)len;
                written += len;
        }
        if (!sparse && written != (uint64_t)size)
                return berr_set(c->err, -EBADMSG, "entry %s: header says %lld bytes but %llu were read",
                                ctx_label(c, entry), (long long)size, (unsigned long long)written);
        if (pos < size && ftruncate(fd, size) < 0) /* a trailing hole of a sparse file */
                return berr_set_errno(c->err, -errno, "entry %s: truncating", ctx_label(c, entry));
        c->content_bytes += written;
        return ctx_apply_meta_fd(c, e, entry, m, fd, false, false);
}

static int ctx_write_dir(struct unpack_ctx *c, struct archive_entry *e, const char *entry,
                         const struct entry_meta *m, int pfd, const char *name)
{
        _cleanup_close_ int fd = -1;
        size_t len = strlen(c->path);
        if (len == 0) {
                fd = openat(c->root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                c->root_implicit = false;
        } else {
                if (mkdirat(pfd, name, 0700) < 0) {
                        if (errno != EEXIST)
                                return berr_set_errno(c->err, -errno, "entry %s: mkdir", ctx_label(c, entry));
                        bool kept;
                        int r = ctx_make_room(c, entry, pfd, name, true, &kept);
                        if (r < 0)
                                return r;
                        if (!kept && mkdirat(pfd, name, 0700) < 0)
                                return berr_set_errno(c->err, -errno, "entry %s: mkdir", ctx_label(c, entry));
                }
                fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                idir_mark(c, c->path, len, false);
        }
        if (fd < 0)
                return berr_set_errno(c->err, -errno, "entry %s: opening directory", ctx_label(c, entry));
        return ctx_apply_meta_fd(c, e, entry, m, fd, true, false);
}

static int ctx_write_symlink(struct unpack_ctx *c, struct archive_entry *e, const char *entry,
                             const struct entry_meta *m, int pfd, const char *name)
{
        /* Any target is fine: it is stored, never followed by berth (only by the container, inside it). */
        const char *target = archive_entry_symlink(e);
        if (!target || !*target)
                return berr_set(c->err, -EBADMSG, "entry %s: symlink without a target", ctx_label(c, entry));
        if (symlinkat(target, pfd, name) < 0) {
                if (errno != EEXIST)
                        return berr_set_errno(c->err, -errno, "entry %s: symlink", ctx_label(c, entry));
                int r = ctx_make_room(c, entry, pfd, name, false, NULL);
                if (r < 0)
                        return r;
                if (symlinkat(target, pfd, name) < 0)
                        return berr_set_errno(c->err, -errno, "entry %s: symlink", ctx_label(c, entry));
        }
        if (fchownat(pfd, name, m->uid, m->gid, AT_SYMLINK_NOFOLLOW) < 0)
                return berr_set_errno(c->err, -errno, "entry %s: chown", ctx_label(c, entry));
        /* No chmod: symlink modes are meaningless on Linux and fchmodat cannot change them. */
        if (m->has_xattrs) {
                _cleanup_close_ int pathfd = openat(pfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
                if (pathfd < 0)
                        return berr_set_errno(c->err, -errno, "entry %s: opening symlink",
                                              ctx_label(c, entry));
                int r = ctx_apply_xattrs(c, e, entry, -1, pathfd, true);
                if (r < 0)
                        return r;
        }
        if (utimensat(pfd, name, m->ts, AT_SYMLINK_NOFOLLOW) < 0)
                return berr_set_errno(c->err, -errno, "entry %s: setting times", ctx_label(c, entry));
        return 0;
}

static int ctx_write_fifo(struct unpack_ctx *c, struct archive_entry *e, const char *entry,
                          const struct entry_meta *m, int pfd, const char *name)
{
        if (mknodat(pfd, name, S_IFIFO | 0600, 0) < 0) {
                if (errno != EEXIST)
                        return berr_set_errno(c->err, -errno, "entry %s: mkfifo", ctx_label(c, entry));
                int r = ctx_make_room(c, entry, pfd, name, false, NULL);
                if (r < 0)
                        return r;
                if (mknodat(pfd, name, S_IFIFO | 0600, 0) < 0)
                        return berr_set_errno(c->err, -errno, "entry %s: mkfifo", ctx_label(c, entry));
        }
        /* A FIFO opens for reading without blocking when O_NONBLOCK is given: metadata then goes by fd. */
        _cleanup_close_ int fd = openat(pfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
                return berr_set_errno(c->err, -errno, "entry %s: opening fifo", ctx_label(c, entry));
        return ctx_apply_meta_fd(c, e, entry, m, fd, false, true);
}

/*
 * A hardlink to a file of this layer. The target is cleaned like a name and resolved under the layer
 * root without following symlinks; it must exist and must not be a directory or a whiteout. linkat()
 * without AT_SYMLINK_FOLLOW links a symlink itself, never its target. The link shares the target's
 * inode, so the entry's own metadata is not applied (it would change the target too).
 */
static int ctx_write_hardlink(struct unpack_ctx *c, const char *entry, const char *hl, int pfd,
                              const char *name)
{
        int r = ctx_clean(c, entry, "hardlink target ", hl, c->lpath);
        if (r < 0)
                return r;
        if (!c->lpath[0])
                return berr_set(c->err, -EINVAL, "entry %s: hardlink to the layer root", ctx_label(c, entry));
        if (strcmp(c->lpath, c->path) == 0)
                return berr_set(c->err, -EINVAL, "entry %s: hardlink to itself", ctx_label(c, entry));
        char *slash = strrchr(c->lpath, '/');
        const char *tname = slash ? slash + 1 : c->lpath;
        _cleanup_close_ int tpfd = -1;
        if (slash) {
                *slash = '\0';
                tpfd = fs_openat2(c->root, c->lpath, O_PATH | O_DIRECTORY, 0, UNPACK_RESOLVE);
                *slash = '/';
                if (tpfd < 0)
                        return berr_set_errno(c->err, tpfd,
                                              "entry %s: hardlink target %s not found in this layer",
                                              ctx_label(c, entry), ctx_quote(c, c->lpath, strlen(c->lpath)));
        }
        int tdir = slash ? tpfd : c->root;
        struct stat st;
        if (fstatat(tdir, tname, &st, AT_SYMLINK_NOFOLLOW) < 0)
                return berr_set_errno(c->err, -errno, "entry %s: hardlink target %s not found in this layer",
                                      ctx_label(c, entry), ctx_quote(c, c->lpath, strlen(c->lpath)));
        if (S_ISDIR(st.st_mode))
                return berr_set(c->err, -EPERM, "entry %s: hardlink to a directory (%s)", ctx_label(c, entry),
                                ctx_quote(c, c->lpath, strlen(c->lpath)));
        if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
                return berr_set(c->err, -EPERM, "entry %s: hardlink to a whiteout (%s)", ctx_label(c, entry),
                                ctx_quote(c, c->lpath, strlen(c->lpath)));
        if (linkat(tdir, tname, pfd, name, 0) < 0) {
                if (errno != EEXIST)
                        return berr_set_errno(c->err, -errno, "entry %s: link", ctx_label(c, entry));
                struct stat cur;
                if (fstatat(pfd, name, &cur, AT_SYMLINK_NOFOLLOW) == 0 && cur.st_dev == st.st_dev &&
                    cur.st_ino == st.st_ino)
                        return 0; /* already that file */
                r = ctx_make_room(c, entry, pfd, name, false, NULL);
                if (r < 0)
                        return r;
                if (linkat(tdir, tname, pfd, name, 0) < 0)
                        return berr_set_errno(c->err, -errno, "entry %s: link to %s", ctx_label(c, entry),
                                              ctx_quote(c, c->lpath, strlen(c->lpath)));
        }
        return 0;
}

/*
 * ".wh.NAME": a 0/0 character device NAME, owned as the entry says (overlayfs whiteout). c->path has
 * already been rewritten to the whiteout's own path (parent/NAME).
 */
static int ctx_write_whiteout(struct unpack_ctx *c, const char *entry, const struct entry_meta *m, int pfd,
                              const char *target)
{
        if (mknodat(pfd, target, S_IFCHR, makedev(0, 0)) < 0) {
                if (errno != EEXIST)
                        return berr_set_errno(c->err, -errno, "entry %s: creating whiteout",
                                              ctx_label(c, entry));
                int r = ctx_make_room(c, entry, pfd, target, false, NULL);
                if (r < 0)
                        return r;
                if (mknodat(pfd, target, S_IFCHR, makedev(0, 0)) < 0)
                        return berr_set_errno(c->err, -errno, "entry %s: creating whiteout",
                                              ctx_label(c, entry));
        }
        if (fchownat(pfd, target, m->uid, m->gid, AT_SYMLINK_NOFOLLOW) < 0)
                return berr_set_errno(c->err, -errno, "entry %s: chown", ctx_label(c, entry));
        return 0;
}

/* ".wh..wh..opq": the directory hides everything below it in lower layers, whatever the entry order. */
static int ctx_write_opaque(struct unpack_ctx *c, const char *entry, int pfd)
{
        _cleanup_close_ int fd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return berr_set_errno(c->err, -errno, "entry %s: opening directory", ctx_label(c, entry));
        if (fsetxattr(fd, OVERLAY_OPAQUE_XATTR, "y", 1, 0) < 0)
                return berr_set_errno(c->err, -errno, "entry %s: setting %s", ctx_label(c, entry),
                                      OVERLAY_OPAQUE_XATTR);
        return 0;
}

static int ctx_check_id(struct unpack_ctx *c, const char *entry, const char *what, int64_t id)
{
        if (id < 0 || !idmap_in_range((uint64_t)id))
                return berr_set(c->err, -ERANGE, "entry %s: %s %lld is outside the range berth maps (0-%u)",
                                ctx_label(c, entry), what, (long long)id, IDMAP_SIZE - 1);
        return 0;
}

static int ctx_entry(struct unpack_ctx *c, struct archive *a, struct archive_entry *e)
{
        const char *entry = archive_entry_pathname(e);
        if (!entry)
                entry = archive_entry_pathname_utf8(e);
        int r = ctx_clean(c, entry, "", entry, c->path);
        if (r < 0)
                return r;

        int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
        if ((r = ctx_check_id(c, entry, "uid", uid)) < 0 || (r = ctx_check_id(c, entry, "gid", gid)) < 0)
                return r;
        struct entry_meta m = {
                .uid = c->shift ? idmap_to_host((uint32_t)uid) : (uid_t)uid,
                .gid = c->shift ? idmap_to_host((uint32_t)gid) : (gid_t)gid,
                .mode = archive_entry_perm(e) & 07777,
                .has_xattrs = archive_entry_xattr_count(e) > 0,
        };
        int64_t size = archive_entry_size(e);
        if (size < 0)
                return berr_set(c->err, -EBADMSG, "entry %s: negative size", ctx_label(c, entry));
        if ((uint64_t)size > c->max_bytes - c->tar_bytes)
                return berr_set(c->err, -EFBIG,
                                "entry %s: layer exceeds the %llu-byte budget (decompression bomb?)",
                                ctx_label(c, entry), (unsigned long long)c->max_bytes);
        m.ts[1].tv_sec = archive_entry_mtime(e);
        m.ts[1].tv_nsec = archive_entry_mtime_nsec(e);
        if (archive_entry_atime_is_set(e)) {
                m.ts[0].tv_sec = archive_entry_atime(e);
                m.ts[0].tv_nsec = archive_entry_atime_nsec(e);
        } else {
                m.ts[0] = m.ts[1];
        }
        for (int i = 0; i < 2; i++)
                if (m.ts[i].tv_nsec < 0 || m.ts[i].tv_nsec >= 1000000000L)
                        m.ts[i].tv_nsec = 0;

        /* Split into parent and last component; check the whiteout conventions on every component. */
        char *slash = strrchr(c->path, '/');
        size_t plen = slash ? (size_t)(slash - c->path) : 0;
        const char *base = slash ? slash + 1 : c->path;
        for (const char *p = c->path; p < base; p = strchr(p, '/') + 1) {
                if (strncmp(p, WH_META, strlen(WH_META)) == 0)
                        return 0; /* aufs metadata (.wh..wh.plnk/...): not part of the image */
                if (strncmp(p, WH_PREFIX, strlen(WH_PREFIX)) == 0)
                        return berr_set(c->err, -EINVAL, "entry %s: a whiteout name is used as a directory",
                                        ctx_label(c, entry));
        }
        bool is_opaque = strcmp(base, WH_OPAQUE) == 0;
        bool is_whiteout = !is_opaque && strncmp(base, WH_PREFIX, strlen(WH_PREFIX)) == 0;
        if (is_whiteout && strncmp(base, WH_META, strlen(WH_META)) == 0)
                return 0; /* .wh..wh.plnk, .wh..wh.aufs: aufs metadata */
        if (is_whiteout) {
                const char *t = base + strlen(WH_PREFIX);
                if (!*t || strcmp(t, ".") == 0 || strcmp(t, "..") == 0)
                        return berr_set(c->err, -EINVAL, "entry %s: invalid whiteout name",
                                        ctx_label(c, entry));
        }

        const char *hl = archive_entry_hardlink(e);
        mode_t type = archive_entry_filetype(e);
        if (!is_opaque && !is_whiteout && !hl) {
                if (type == AE_IFCHR || type == AE_IFBLK)
                        return berr_set(c->err, -EPERM, "entry %s: device nodes are not allowed in layers",
                                        ctx_label(c, entry));
                if (type == AE_IFSOCK)
                        return 0; /* sockets are runtime objects; tar writers should not emit them */
                if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK && type != AE_IFIFO)
                        return berr_set(c->err, -EBADMSG, "entry %s: unsupported entry type %#o",
                                        ctx_label(c, entry), (unsigned)type);
                if (c->path[0] == '\0' && type != AE_IFDIR)
                        /* CVE-2021-29136: an entry must never replace the layer root. */
                        return berr_set(c->err, -EINVAL, "entry %s: only a directory may name the layer root",
                                        ctx_label(c, entry));
        }
        if (hl && c->path[0] == '\0')
                return berr_set(c->err, -EINVAL, "entry %s: only a directory may name the layer root",
                                ctx_label(c, entry));

        int pfd;
        bool skip;
        r = ctx_parent(c, entry, plen, is_whiteout || is_opaque, &pfd, &skip);
        if (r < 0 || skip)
                return r;
        if (is_opaque)
                return ctx_write_opaque(c, entry, pfd);
        if (is_whiteout) {
                /* From here on c->path is the path the whiteout occupies: parent/NAME. */
                char *b = c->path + (base - c->path);
                memmove(b, b + strlen(WH_PREFIX), strlen(b + strlen(WH_PREFIX)) + 1);
                return ctx_write_whiteout(c, entry, &m, pfd, b);
        }
        if (hl || type != AE_IFDIR)
                idir_mark(c, c->path, strlen(c->path), false); /* replaced by a non-directory */
        if (hl)
                return ctx_write_hardlink(c, entry, hl, pfd, base);
        switch (type) {
        case AE_IFREG:
                return ctx_write_regular(c, a, e, entry, &m, pfd, base);
        case AE_IFDIR:
                return ctx_write_dir(c, e, entry, &m, pfd, base);
        case AE_IFLNK:
                return ctx_write_symlink(c, e, entry, &m, pfd, base);
        default:
                return ctx_write_fifo(c, e, entry, &m, pfd, base);
        }
}

/* Directory times, last, in one pass (children were all written). Vanished directories are skipped. */
static int ctx_apply_dir_times(struct unpack_ctx *c)
{
        for (size_t i = 0; i < c->n_dirs; i++) {
                const struct dir_time *d = &c->dirs[i];
                const char *path = c->dir_paths.p + d->off;
                _cleanup_close_ int fd = fs_openat2(c->root, d->len ? path : ".",
                                                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, UNPACK_RESOLVE);
                if (fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP)
                        continue;
                if (fd < 0)
                        return berr_set_errno(c->err, fd, "directory %s: opening",
                                              ctx_label(c, d->len ? path : "."));
                if (futimens(fd, d->ts) < 0)
                        return berr_set_errno(c->err, -errno, "directory %s: setting times",
                                              ctx_label(c, d->len ? path : "."));
        }
        return 0;
}

static void ctx_done(struct unpack_ctx *c)
{
        hasher_stop(&c->hasher);
        closep(&c->root);
        closep(&c->cache_fd);
        berr_free(c->src_err);
        sha256_free(c->sha);
        free(c->dirs);
        free(c->dir_paths.p);
        free(c->idirs);
        free(c->idir_slots);
        free(c->idir_paths.p);
        free(c->xbuf);
        free(c);
}

static void ctx_donep(struct unpack_ctx **c)
{
        if (*c)
                ctx_done(*c);
}

static void archive_read_freep(struct archive **a)
{
        if (*a)
                archive_read_free(*a);
}

int unpack_layer(int dfd, stream_source_fn src, void *userdata, const struct unpack_opts *o,
                 struct unpack_result *ret, struct berr **err)
{
        if (!src || !ret)
                return berr_set(err, -EINVAL, "unpack: no source");
        _cleanup_(ctx_donep) struct unpack_ctx *c = xcalloc(1, sizeof(*c));
        c->cache_fd = -1;
        c->root = -1;
        c->err = err;
        c->src = src;
        c->userdata = userdata;
        c->shift = o && o->shift_ids;
        c->max_bytes = o && o->max_bytes ? o->max_bytes : UNPACK_DEFAULT_MAX_BYTES;
        c->max_entries = o && o->max_entries ? o->max_entries : UNPACK_DEFAULT_MAX_ENTRIES;
        c->root_implicit = true;
        c->sha = sha256_new();
        hasher_start(&c->hasher, c->sha);

        c->root = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->root < 0)
                return berr_set_errno(err, -errno, "unpack: opening the layer directory");
        /* The root is an implicit directory too, unless the tar has a "./" entry. */
        if (c->shift && fchown(c->root, idmap_to_host(0), idmap_to_host(0)) < 0)
                return berr_set_errno(err, -errno, "unpack: chown of the layer directory");
        if (fchmod(c->root, 0755) < 0)
                return berr_set_errno(err, -errno, "unpack: chmod of the layer directory");

        _cleanup_(archive_read_freep) struct archive *a = archive_read_new();
        if (!a)
                abort();
        if (archive_read_support_format_tar(a) != ARCHIVE_OK)
                return berr_set(err, -ENOTSUP, "unpack: libarchive has no tar support");
        if (archive_read_open(a, c, NULL, unpack_read_cb, NULL) != ARCHIVE_OK) {
                /* An empty stream is an empty layer, as Go's archive/tar (and so Docker) reads it. */
                if (!(c->src_eof && c->tar_bytes == 0))
                        return c->src_code < 0 ? ctx_take_src_error(c)
                                               : berr_set(err, -EBADMSG, "layer is not a tar archive: %s",
                                                          archive_error_string(a) ?: "unrecognised format");
        } else {
                for (;;) {
                        struct archive_entry *e;
                        int r = archive_read_next_header(a, &e);
                        if (r == ARCHIVE_EOF)
                                break;
                        if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
                                return ctx_archive_error(c, a, NULL);
                        if (++c->entries > c->max_entries)
                                return berr_set(err, -E2BIG, "layer exceeds the %llu-entry budget",
                                                (unsigned long long)c->max_entries);
                        r = ctx_entry(c, a, e);
                        if (r < 0)
                                return r;
                }
        }
        /* The DiffID covers the whole stream, including the padding after the end-of-archive blocks. */
        for (;;) {
                const void *buf;
                ssize_t n = ctx_pull(c, &buf);
                if (n < 0)
                        return ctx_take_src_error(c);
                if (n == 0)
                        break;
        }
        int r = ctx_apply_dir_times(c);
        if (r < 0)
                return r;

        size_t n = c->root_implicit ? 1 : 0;
        for (size_t i = 0; i < c->n_idirs; i++)
                n += c->idirs[i].implicit;
        char **list = xcalloc(n + 1, sizeof(char *));
        size_t k = 0;
        if (c->root_implicit)
                list[k++] = xstrdup(".");
        for (size_t i = 0; i < c->n_idirs; i++)
                if (c->idirs[i].implicit)
                        list[k++] = xstrdup(c->idir_paths.p + c->idirs[i].off);

        *ret = (struct unpack_result){
                .tar_bytes = c->tar_bytes,
                .entries = c->entries,
                .content_bytes = c->content_bytes,
                .implicit_dirs = list,
                .n_implicit_dirs = n,
        };
        hasher_stop(&c->hasher);
        sha256_final_str(c->sha, ret->diff_id);
        return 0;
}

void unpack_result_done(struct unpack_result *r)
{
        if (!r)
                return;
        strv_free(r->implicit_dirs);
        r->implicit_dirs = NULL;
        r->n_implicit_dirs = 0;
}

/* ---- unpack_fixup_implicit_dirs ---- */

static bool fd_is_opaque(int fd)
{
        char v[2];
        ssize_t n = fgetxattr(fd, OVERLAY_OPAQUE_XATTR, v, sizeof(v));
        return n == 1 && v[0] == 'y';
}

/*
 * Look `path` (cleaned; "" = root) up in one lower layer the way overlayfs would. Returns 1 with the
 * directory in *ret_fd when found; 0 when absent (with *ret_stop when nothing further down can be
 * visible: a whiteout, a non-directory, or an opaque directory on the way); <0 on I/O errors.
 */
static int lower_lookup(int lower, const char *path, int *ret_fd, bool *ret_stop)
{
        *ret_stop = false;
        _cleanup_close_ int cur = openat(lower, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cur < 0)
                return -errno;
        bool opaque_above = false;
        const char *p = path;
        char comp[NAME_MAX + 1];
        while (*p) {
                const char *s = p;
                while (*p && *p != '/')
                        p++;
                size_t l = (size_t)(p - s);
                if (*p)
                        p++;
                if (l > NAME_MAX)
                        return -ENAMETOOLONG;
                memcpy(comp, s, l);
                comp[l] = '\0';
                struct stat st;
                if (fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        if (errno != ENOENT)
                                return -errno;
                        *ret_stop = opaque_above;
                        return 0;
                }
                if (!S_ISDIR(st.st_mode)) { /* whiteout (0/0 char device) or any other non-directory */
                        *ret_stop = true;
                        return 0;
                }
                int nfd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (nfd < 0)
                        return -errno;
                closep(&cur);
                cur = nfd;
                if (*p && fd_is_opaque(cur))
                        opaque_above = true;
        }
        *ret_fd = TAKE_FD(cur);
        return 1;
}

/* Owner, mode, xattrs (not overlay's own) and times of directory `from` onto directory `to`. */
static int copy_dir_meta(int from, int to, uint8_t *buf, char *names)
{
        struct stat st;
        if (fstat(from, &st) < 0)
                return -errno;
        if (fchown(to, st.st_uid, st.st_gid) < 0 || fchmod(to, st.st_mode & 07777) < 0)
                return -errno;
        ssize_t ln = flistxattr(from, names, UNPACK_XATTR_LIST_MAX);
        if (ln < 0 && errno != EOPNOTSUPP)
                return -errno;
        for (ssize_t i = 0; i < ln; i += (ssize_t)strlen(names + i) + 1) {
                const char *name = names + i;
                if (strncmp(name, OVERLAY_TRUST, strlen(OVERLAY_TRUST)) == 0 ||
                    strncmp(name, OVERLAY_USER, strlen(OVERLAY_USER)) == 0)
                        continue;
                ssize_t vn = fgetxattr(from, name, buf, UNPACK_XATTR_MAX);
                if (vn < 0) {
                        if (errno == ENODATA)
                                continue;
                        return -errno;
                }
                if (fsetxattr(to, name, buf, (size_t)vn, 0) < 0 && errno != EOPNOTSUPP)
                        return -errno;
        }
        struct timespec ts[2] = { st.st_atim, st.st_mtim };
        if (futimens(to, ts) < 0)
                return -errno;
        return 0;
}

/* True if a proper ancestor of `path` in the upper layer is opaque (lowers are then hidden there). */
static int upper_ancestor_opaque(int upper, const char *path, bool *ret)
{
        *ret = false;
        _cleanup_close_ int cur = openat(upper, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cur < 0)
                return -errno;
        const char *p = path;
        char comp[NAME_MAX + 1];
        for (;;) {
                if (fd_is_opaque(cur)) {
                        *ret = true;
                        return 0;
                }
                const char *s = p;
                while (*p && *p != '/')
                        p++;
                if (!*p)
                        return 0; /* what is left is the directory itself */
                size_t l = (size_t)(p - s);
                p++;
                if (l > NAME_MAX)
                        return -ENAMETOOLONG;
                memcpy(comp, s, l);
                comp[l] = '\0';
                int nfd = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (nfd < 0)
                        return -errno;
                closep(&cur);
                cur = nfd;
        }
}

int unpack_fixup_implicit_dirs(int upper_dfd, char *const *implicit_dirs, size_t n, const int *lower_dfds,
                               size_t n_lowers, struct berr **err)
{
        if (n == 0 || n_lowers == 0)
                return 0;
        _cleanup_free_ uint8_t *buf = xmalloc(UNPACK_XATTR_MAX);
        _cleanup_free_ char *names = xmalloc(UNPACK_XATTR_LIST_MAX);
        _cleanup_free_ char *path = xmalloc(UNPACK_MAX_PATH + 1);
        char q[UNPACK_LABEL_SIZE];
        for (size_t i = 0; i < n; i++) {
                if (!implicit_dirs[i])
                        return berr_set(err, -EINVAL, "implicit directory %zu: no path", i);
                const char *qn = quote_name(implicit_dirs[i], strlen(implicit_dirs[i]), q);
                size_t depth;
                if (unpack_clean_path(implicit_dirs[i], path, UNPACK_MAX_PATH + 1, &depth) < 0)
                        return berr_set(err, -EINVAL, "implicit directory %s: invalid path", qn);
                _cleanup_close_ int up = fs_openat2(upper_dfd, path[0] ? path : ".",
                                                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, UNPACK_RESOLVE);
                if (up == -ENOENT || up == -ENOTDIR || up == -ELOOP)
                        continue; /* removed or replaced later in the same layer */
                if (up < 0)
                        return berr_set_errno(err, up, "implicit directory %s", qn);
                bool hidden;
                int r = path[0] ? upper_ancestor_opaque(upper_dfd, path, &hidden) : (hidden = false, 0);
                if (r < 0)
                        return berr_set_errno(err, r, "implicit directory %s", qn);
                for (size_t k = 0; k < n_lowers && !hidden; k++) {
                        _cleanup_close_ int lfd = -1;
                        bool stop;
                        r = lower_lookup(lower_dfds[k], path, &lfd, &stop);
                        if (r < 0)
                                return berr_set_errno(err, r, "implicit directory %s: lower layer %zu", qn,
                                                      k);
                        if (r > 0) {
                                r = copy_dir_meta(lfd, up, buf, names);
                                if (r < 0)
                                        return berr_set_errno(err, r,
                                                              "implicit directory %s: copying metadata", qn);
                                break;
                        }
                        if (stop)
                                break;
                }
        }
        return 0;
}
