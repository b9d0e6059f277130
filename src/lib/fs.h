/* SPDX-License-Identifier: Apache-2.0 */
/* fd-relative filesystem helpers. Every fd returned is O_CLOEXEC and owned by the caller. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/err.h"

/* openat2(2) with the given resolve flags (RESOLVE_*); falls back to -ENOSYS only on kernels < 5.6. */
int fs_openat2(int dirfd, const char *path, int flags, mode_t mode, uint64_t resolve);
/* Open a directory under dirfd, resolving inside it (RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS). */
int fs_open_dir_in_root(int dirfd, const char *path);
/* mkdir -p relative to dirfd (an absolute path starts at "/"); no component may be a symlink or "..". */
int fs_mkdir_p_at(int dirfd, const char *path, mode_t mode);
/* rm -rf relative to dirfd; never follows symlinks, never crosses into other mounts. -ENOENT is success. */
int fs_rm_rf_at(int dirfd, const char *path);
/* Remove every entry inside the directory fd (which stays open and valid). */
int fs_clear_dir(int dfd);
/* Read fd to its end, at most max bytes (-EFBIG beyond); *ret_data is NUL-terminated, owned by the caller. */
int fs_read_fd(int fd, size_t max, char **ret_data, size_t *ret_len);
/* Read a whole file of at most max bytes; *ret_data is NUL-terminated and owned by the caller. */
int fs_read_file_at(int dirfd, const char *path, size_t max, char **ret_data, size_t *ret_len);
/* Write data to dirfd/path atomically: temp file, fsync, rename, fsync dir. */
int fs_write_file_atomic_at(int dirfd, const char *path, const void *data, size_t len, mode_t mode);
/* The same without fsync: readers see the old or the new content, but a power loss may lose both. */
int fs_write_file_replace_at(int dirfd, const char *path, const void *data, size_t len, mode_t mode);
/* Write all of buf to fd, retrying on EINTR and short writes. */
int fs_write_all(int fd, const void *buf, size_t len);
int fs_fsync_dir_at(int dirfd, const char *path);
/* Total bytes of regular files under dirfd/path (each inode counted once), for sizes shown to users. */
int fs_disk_usage_at(int dirfd, const char *path, uint64_t *ret_bytes);
/* A random hex string of 2*n characters (n <= 32), for temp names and ids. */
void fs_random_hex(char *out, size_t n);
