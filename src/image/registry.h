/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Registry client (distribution API v2) on libcurl.
 *
 * - /v2/ ping over https; plain http (or TLS without verification) only for registries marked insecure in
 *   the configuration, or on loopback addresses (as Docker does).
 * - Auth: anonymous, Basic, Bearer token (realm/service/scope; OAuth2 POST with GET fallback; tokens cached
 *   per scope until expiry, >= 60 s); a 401 with a fresh token is an authentication failure, not a retry.
 * - Redirects (301/302/303/307/308) followed by hand, never forwarding Authorization to another host.
 * - Retries with exponential backoff (+jitter) on 429 (Retry-After honoured), 5xx and connection resets;
 *   blob downloads resume with Range from the original URL.
 * - Every byte is verified: manifests against the digest asked for (and Docker-Content-Digest), blobs
 *   against digest and size. Size caps on everything read.
 * A client is thread-safe: several blobs may stream at once from different threads.
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "image/reference.h"
#include "lib/config.h"
#include "lib/digest.h"
#include "lib/err.h"

struct registry_client;
struct registry_blob;

struct registry_opts {
        const struct berth_config *config; /* insecure hosts, CA files; may be NULL */
        const char *username;              /* NULL for anonymous */
        const char *password;
        const char *user_agent; /* NULL: "berth/<version>" */
};

/* One client per (registry, repository). Nothing is sent until the first request. Caller owns *ret. */
int registry_client_new(const struct image_ref *ref, const struct registry_opts *o,
                        struct registry_client **ret, struct berr **err);
void registry_client_free(struct registry_client *c);
static inline void registry_client_freep(struct registry_client **c)
{
        registry_client_free(*c);
}

/*
 * GET /v2/<name>/manifests/<object> with berth's Accept list. `object` is a tag or a digest. When
 * `expected_digest` is set (pulling by digest, or a child of an index) the body must hash to it, and when
 * expected_size >= 0 it must have that size. Returns the body (NUL-terminated, caller frees), its
 * Content-Type (caller frees) and the sha256 of the exact bytes received in ret_digest.
 */
int registry_get_manifest(struct registry_client *c, const char *object, const char *expected_digest,
                          int64_t expected_size, char **ret_body, size_t *ret_len, char **ret_content_type,
                          char ret_digest[static DIGEST_STR_MAX], struct berr **err);

/* Fetch a small blob (configs) into memory, at most `max` bytes, verified against digest and size. */
int registry_get_blob(struct registry_client *c, const char *digest, int64_t size, size_t max,
                      char **ret_body, size_t *ret_len, struct berr **err);

/*
 * Stream a blob. registry_blob_read() returns the next chunk of the body in *ret_buf (valid until the next
 * call), its length (> 0), 0 at the end — only once all `size` bytes arrived and their digest matched — or
 * a negative error (-EBADMSG digest mismatch, -EFBIG more bytes than `size`, -EPROTO truncated after
 * retries, -EACCES auth...). Connection resets are resumed transparently with Range.
 */
int registry_blob_open(struct registry_client *c, const char *digest, int64_t size,
                       struct registry_blob **ret, struct berr **err);
ssize_t registry_blob_read(struct registry_blob *b, const void **ret_buf, struct berr **err);
/* Bytes of the body delivered so far. */
uint64_t registry_blob_offset(const struct registry_blob *b);
void registry_blob_close(struct registry_blob *b);
static inline void registry_blob_closep(struct registry_blob **b)
{
        registry_blob_close(*b);
}
