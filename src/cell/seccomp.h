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
#include <stdbool.h>

/*
 * The runtime-spec "linux.seccomp" object (new reference). An amd64 image gets no i386 system calls at all
 * (the architecture is not in the filter: int 0x80 kills the thread with SIGSYS). The reason: socket(2)'s
 * family filter (no AF_VSOCK, no AF_ALG) cannot hold for i386, whose socketcall(2) carries socket's
 * arguments in memory that seccomp cannot read, and libseccomp turns every conditional "socket" rule into
 * an unconditional socketcall(SYS_SOCKET) one for i386; on a VM with vsock, a container could otherwise open
 * a socket to its hypervisor. A linux/386 image (i386_image) gets the i386 ABI and socketcall, as under
 * Docker's default profile: its C library makes every socket with socketcall (Debian 12's i386 glibc does),
 * so it keeps that bypass.
 */
json_t *seccomp_profile_json(bool i386_image);
