/* SPDX-License-Identifier: Apache-2.0 */
/* Internals of unpack.c exported to unit tests (BERTH_TESTING builds only). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef BERTH_TESTING
/*
 * Clean a tar entry name into `out` (out_size bytes): "." and empty components dropped, no leading or
 * trailing "/", "" for the layer root. Returns 0 and the component count in *ret_depth; -EINVAL for an
 * empty or absolute name or a ".." component; -ENAMETOOLONG when longer than UNPACK_MAX_PATH (or
 * out_size); -E2BIG when deeper than UNPACK_MAX_DEPTH.
 */
int unpack_clean_path(const char *name, char *out, size_t out_size, size_t *ret_depth);
/*
 * Rewrite a security.capability value (v1, v2 or v3) for a layer: with `shift`, into v3 whose rootid is
 * the host id of the container's rootid (0 for v1/v2), so the capability only takes effect inside the
 * cell's user namespace; without, unchanged. Writes at most 24 bytes into out. -EINVAL if malformed,
 * -ERANGE if a v3 rootid is outside the idmap range.
 */
int unpack_convert_capability(const uint8_t *in, size_t n, bool shift, uint8_t out[24], size_t *ret_len);
/* Shift the ACL_USER/ACL_GROUP ids of a system.posix_acl_* value (n bytes, into out of n bytes). */
int unpack_shift_acl(const uint8_t *in, size_t n, uint8_t *out);
#endif
