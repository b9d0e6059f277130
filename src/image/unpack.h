/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Extract one layer's tar stream into an empty directory, in overlayfs form, safely.
 *
 * - Every path is resolved relative to the layer directory fd; no entry can write outside it ("../",
 *   absolute names, symlinked parents, hardlinks to outside or to symlinks are rejected).
 * - Whiteouts: ".wh.NAME" becomes a 0/0 character device NAME; ".wh..wh..opq" sets
 *   trusted.overlay.opaque=y on its directory. A bare ".wh." is an error.
 * - Ownership is shifted to the host range of image/idmap.h; ids outside the range are an error.
 * - Modes (setuid/setgid/sticky), mtimes, xattrs (PAX SCHILY.xattr.*), hardlinks, symlinks, FIFOs are kept.
 *   Block and character devices are rejected.
 * - Budgets: total bytes, entry count, path length and depth; a decompression bomb is stopped there.
 * - The DiffID (sha256 of the whole uncompressed stream, including trailing padding) is computed.
 * On error the directory holds partial output; the caller (the store) discards it.
 */
#pragma once

#include <stdint.h>

#include "image/decompress.h"
#include "lib/digest.h"
#include "lib/err.h"

#define UNPACK_MAX_PATH  4096
#define UNPACK_MAX_DEPTH 256

struct unpack_opts {
        uint64_t max_bytes;   /* uncompressed tar bytes; 0 = default 20 GiB */
        uint64_t max_entries; /* 0 = default 2,000,000 */
        bool shift_ids;       /* shift ownership into the idmap range (the store always does) */
};

struct unpack_result {
        char diff_id[DIGEST_STR_MAX];
        uint64_t tar_bytes; /* uncompressed stream length */
        uint64_t entries;
        uint64_t content_bytes; /* regular file bytes written */
        char **implicit_dirs;   /* parents created without a tar entry (relative paths), NULL-terminated */
        size_t n_implicit_dirs;
};

/* `src` yields the uncompressed tar stream. `dfd` is an empty directory (caller keeps ownership). */
int unpack_layer(int dfd, stream_source_fn src, void *userdata, const struct unpack_opts *o,
                 struct unpack_result *ret, struct berr **err);
void unpack_result_done(struct unpack_result *r);

/*
 * Give each implicit parent directory of `upper_dfd` the metadata (mode, owner, xattrs, mtime) of the
 * same directory in the nearest lower layer (lower_dfds[0] is the layer just below), stopping at a
 * whiteout, a non-directory, or an opaque directory. Directories absent from all lowers keep 0755 root.
 */
int unpack_fixup_implicit_dirs(int upper_dfd, char *const *implicit_dirs, size_t n, const int *lower_dfds,
                               size_t n_lowers, struct berr **err);

/* Overlay xattr names (trusted.* as the store is unpacked by host root for host-side overlay mounts). */
#define OVERLAY_OPAQUE_XATTR "trusted.overlay.opaque"
