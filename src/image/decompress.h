/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Streaming decompression of layer blobs: gzip (ISA-L igzip when available, zlib otherwise; multi-member,
 * trailing zero padding tolerated), zstd (multi-frame, skippable frames), or none. The format is sniffed
 * from the magic bytes; a declared compression that disagrees with the bytes is trusted to the bytes
 * (bzip2/xz magic is an -EPROTONOSUPPORT error naming the format).
 */
#pragma once

#include <sys/types.h>

#include "image/manifest.h"
#include "lib/err.h"

/* A pull source: next chunk into *ret_buf (valid until the next call); 0 at end; <0 error. */
typedef ssize_t (*stream_source_fn)(void *userdata, const void **ret_buf, struct berr **err);

struct decompressor;

/* `declared` is only a hint. The source is owned by the caller and must outlive the decompressor. */
int decompressor_new(enum layer_compression declared, stream_source_fn src, void *userdata,
                     struct decompressor **ret, struct berr **err);
/* Next decompressed chunk (valid until the next call); 0 at end of the compressed stream; <0 error. */
ssize_t decompressor_read(struct decompressor *d, const void **ret_buf, struct berr **err);
/* What was detected: "gzip", "zstd", "none" (valid after the first read). */
const char *decompressor_format(const struct decompressor *d);
void decompressor_free(struct decompressor *d);
static inline void decompressor_freep(struct decompressor **d)
{
        decompressor_free(*d);
}
