/* SPDX-License-Identifier: Apache-2.0 */
/* Content digests ("sha256:<64 lowercase hex>") and streaming SHA-256 (OpenSSL EVP, SHA-NI when present). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

#define DIGEST_SHA256_HEX_LEN 64
#define DIGEST_STR_MAX        (7 + 128 + 1) /* "sha512:" + 128 hex + NUL */

struct sha256_ctx;

struct sha256_ctx *sha256_new(void);
void sha256_update(struct sha256_ctx *c, const void *data, size_t n);
/* Writes "sha256:<hex>" into out (DIGEST_STR_MAX bytes). The context may be reused after sha256_reset. */
void sha256_final_str(struct sha256_ctx *c, char out[static DIGEST_STR_MAX]);
void sha256_reset(struct sha256_ctx *c);
void sha256_free(struct sha256_ctx *c);
static inline void sha256_freep(struct sha256_ctx **c)
{
        sha256_free(*c);
}
/* One-shot: "sha256:<hex>" of a buffer. */
void sha256_str(const void *data, size_t n, char out[static DIGEST_STR_MAX]);

/*
 * Validate a digest string per the OCI descriptor grammar. Only sha256 (64 lowercase hex) and sha512
 * (128) are accepted; anything else is -EINVAL with a precise message.
 */
int digest_validate(const char *d, struct berr **err);
/* The hex part of a validated digest (pointer into d). */
const char *digest_hex(const char *d);
/* ChainID(parent, diff_id) = sha256("<parent> <diff_id>"), or diff_id when parent is NULL. */
void digest_chain_id(const char *parent, const char *diff_id, char out[static DIGEST_STR_MAX]);
