/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The containers' seccomp filter: an allow-list in the spirit of Docker's default profile. Unknown
 * syscalls fail with EPERM. Blocked on purpose: mount and friends, unshare, setns, keyctl, bpf, io_uring,
 * ptrace, kernel modules, kexec, reboot, swap, clock setting, perf. clone may not create namespaces;
 * clone3 answers ENOSYS so glibc falls back to clone. Allowed for modern glibc: statx, rseq,
 * close_range, faccessat2, openat2, epoll_pwait2, pidfd_*.
 */
#pragma once

#include <jansson.h>

/* The runtime-spec "linux.seccomp" object (new reference). */
json_t *seccomp_profile_json(void);
