/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A hostile container process for tests/e2e/test_security.py. Built statically (gcc -static) at test time
 * and put into a busybox image as /hostile, /hostile-suid (setuid root) and /hostile-fcap (file caps).
 *
 * Every attempt prints one line "R <name> <value>": <value> is OK when the call succeeded, else the errno's
 * name (EPERM, EROFS...), or a measured value (bytes=0, a list...). The test holds the expected values:
 * this program only tries and reports, so a hole shows up as an unexpected value, not as a crash.
 *
 * Modes:
 *   main HOSTIP PORT HOST_SHM HOST_ABS PEER_PID PEER_SHM PEER_ABS   the attempts (run as container root)
 *   victim SHMKEY ABSNAME PORT       a peer: SysV shm, abstract socket, TCP PORT answering "hello", READY
 *   suidcheck PREFIX                 report uid/euid/caps and try setuid(0) (run setuid / with file caps)
 *   status PREFIX                    uid, caps, seccomp, no_new_privs of this process (for berth exec)
 *   memhog                           allocate and touch memory until killed
 *   diskfill PATH                    write PATH until it fails; report; then check the container still works
 *   probe LABEL=IP:PORT...           parallel TCP connects (3 s timeout), one result per label
 *   l2syn LABEL=IP:PORT@MAC|gw...    hand-made TCP SYN frames (AF_PACKET): synack, rst or none per label
 *   sleeper FD                       write one byte to FD, then sleep (a ptrace target)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <linux/reboot.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#ifndef AF_ALG
#define AF_ALG 38
#endif
#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif

static void out(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(const char *name, const char *fmt, ...)
{
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        for (char *p = buf; *p; p++)
                if (*p == ' ' || *p == '\n' || *p == '\t')
                        *p = ',';
        printf("R %s %s\n", name, buf[0] ? buf : "-");
        fflush(stdout);
}

static const char *ename(int e)
{
        const char *n = strerrorname_np(e);
        return n ? n : "EUNKNOWN";
}

/* rc >= 0: OK; else errno (or -rc for raw int 0x80 results, see sys32()). */
static void res(const char *name, long rc)
{
        if (rc >= 0)
                out(name, "OK");
        else
                out(name, "%s", ename(errno));
}

/* ---- helpers ---- */

static int write_file(const char *path, const char *data, size_t len)
{
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -1;
        ssize_t n = write(fd, data, len);
        int e = errno;
        close(fd);
        errno = e;
        return n < 0 ? -1 : 0;
}

/* Write back what is there already: harmless should the write ever be allowed. */
static void try_write_back(const char *name, const char *path)
{
        char buf[4096];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
        if (fd >= 0)
                close(fd);
        if (n <= 0) {
                buf[0] = '\n';
                n = 1;
        }
        res(name, write_file(path, buf, (size_t)n));
}

static void try_read(const char *name, const char *path)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) {
                out(name, "%s", ename(errno));
                return;
        }
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof buf);
        int e = errno;
        close(fd);
        if (n < 0)
                out(name, "%s", ename(e));
        else
                out(name, "bytes=%zd", n);
}

static void status_field(const char *prefix, const char *field)
{
        FILE *f = fopen("/proc/self/status", "re");
        char line[256], name[128];
        snprintf(name, sizeof name, "%s%s", prefix, field);
        size_t fl = strlen(field);
        while (f && fgets(line, sizeof line, f))
                if (!strncmp(line, field, fl) && line[fl] == ':') {
                        char *v = line + fl + 1;
                        v += strspn(v, " \t");
                        v[strcspn(v, "\n")] = '\0';
                        out(name, "%s", v);
                        fclose(f);
                        return;
                }
        if (f)
                fclose(f);
        out(name, "missing");
}

static void print_file(const char *name, const char *path)
{
        char buf[512] = "";
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                out(name, "%s", ename(errno));
                return;
        }
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[n > 0 ? n : 0] = '\0';
        /* squeeze runs of blanks */
        char *w = buf;
        for (char *r = buf; *r; r++)
                if (!(*r == ' ' || *r == '\t' || *r == '\n') || (w > buf && w[-1] != ' '))
                        *w++ = (*r == '\t' || *r == '\n') ? ' ' : *r;
        while (w > buf && w[-1] == ' ')
                w--;
        *w = '\0';
        out(name, "%s", buf);
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_dir(const char *name, const char *path)
{
        DIR *d = opendir(path);
        if (!d) {
                out(name, "%s", ename(errno));
                return;
        }
        char *names[512];
        size_t n = 0;
        struct dirent *de;
        while ((de = readdir(d)) && n < 512)
                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                        names[n++] = strdup(de->d_name);
        closedir(d);
        qsort(names, n, sizeof *names, cmp_str);
        char buf[1000] = "";
        size_t len = 0;
        for (size_t i = 0; i < n; i++) {
                len += (size_t)snprintf(buf + len, len < sizeof buf ? sizeof buf - len : 0, "%s%s",
                                        i ? "," : "", names[i]);
                free(names[i]);
        }
        out(name, "%s", n ? buf : "(empty)");
}

static int count_pids(void)
{
        DIR *d = opendir("/proc");
        int n = 0;
        struct dirent *de;
        while (d && (de = readdir(d)))
                if (de->d_name[0] >= '0' && de->d_name[0] <= '9')
                        n++;
        if (d)
                closedir(d);
        return n;
}

/* i386 system call through int 0x80 from this 64-bit process (seccomp sees AUDIT_ARCH_I386). -errno. */
static long sys32(long nr, long a, long b, long c)
{
        long ret;
        __asm__ volatile("int $0x80"
                         : "=a"(ret)
                         : "a"(nr), "b"(a), "c"(b), "d"(c)
                         : "memory", "r8", "r9", "r10", "r11");
        return ret;
}

static void res32(const char *name, long rc)
{
        if (rc >= 0)
                out(name, "OK");
        else
                out(name, "%s", ename((int)-rc));
}

/* ---- the attempts ---- */

/* descriptors this process did not open itself (a leaked host directory fd is an escape: CVE-2024-21626) */
static void fds_and_paths(const char *prefix)
{
        char n[64], buf[1024] = "", l[256];
        size_t len = 0;
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        while (d && (de = readdir(d))) {
                int fd = atoi(de->d_name);
                if (de->d_name[0] == '.' || fd <= 2 || fd == dirfd(d))
                        continue;
                char p[64];
                snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
                ssize_t k = readlink(p, l, sizeof l - 1);
                l[k > 0 ? k : 0] = '\0';
                len += (size_t)snprintf(buf + len, len < sizeof buf ? sizeof buf - len : 0, "%s%d=%s",
                                        len ? ";" : "", fd, l);
        }
        if (d)
                closedir(d);
        snprintf(n, sizeof n, "%sextra_fds", prefix);
        out(n, "%s", len ? buf : "none");
        ssize_t k = readlink("/proc/self/cwd", l, sizeof l - 1);
        l[k > 0 ? k : 0] = '\0';
        snprintf(n, sizeof n, "%scwd", prefix);
        out(n, "%s", l);
        snprintf(n, sizeof n, "%scwd_is_root", prefix);
        struct stat a, b;
        out(n, "%s",
            stat(".", &a) == 0 && stat("/", &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev ? "yes"
                                                                                                     : "no");
}

static void ns_and_identity(void)
{
        fds_and_paths("");
        static const char *const nss[] = { "user", "pid", "mnt", "net", "uts", "ipc", "cgroup", "time" };
        for (size_t i = 0; i < sizeof nss / sizeof *nss; i++) {
                char p[64], l[128], name[64];
                snprintf(p, sizeof p, "/proc/self/ns/%s", nss[i]);
                snprintf(name, sizeof name, "ns_%s", nss[i]);
                ssize_t n = readlink(p, l, sizeof l - 1);
                if (n < 0)
                        out(name, "%s", ename(errno));
                else
                        out(name, "%.*s", (int)n, l);
        }
        out("pid", "%d", getpid());
        out("uid", "%d", getuid());
        print_file("uid_map", "/proc/self/uid_map");
        print_file("gid_map", "/proc/self/gid_map");
        print_file("setgroups", "/proc/self/setgroups");
        status_field("", "CapInh");
        status_field("", "CapPrm");
        status_field("", "CapEff");
        status_field("", "CapBnd");
        status_field("", "CapAmb");
        status_field("", "NoNewPrivs");
        status_field("", "Seccomp");
        out("proc_pids", "%d", count_pids());
        /* there is no cgroup namespace: the host's cgroup path shows (it names the container, nothing more)
         */
        FILE *cg = fopen("/proc/self/cgroup", "re");
        char line[512];
        while (cg && fgets(line, sizeof line, cg))
                if (strstr(line, ":pids:")) {
                        line[strcspn(line, "\n")] = '\0';
                        out("cgroup_pids_path", "%s", strstr(line, ":pids:") + 6);
                }
        if (cg)
                fclose(cg);
        list_dir("dev_entries", "/dev");
        /* stdio is not the caller's terminal: nothing to inject keystrokes into */
        for (int fd = 0; fd < 3; fd++) {
                char name[32], c = '#';
                snprintf(name, sizeof name, "tiocsti_fd%d", fd);
                res(name, ioctl(fd, TIOCSTI, &c));
        }
        int t = open("/dev/tty", O_RDWR | O_CLOEXEC);
        res("open_dev_tty", t);
        if (t >= 0)
                close(t);
}

static void mounts(void)
{
        mkdir("/mnt", 0755);
        res("mount_tmpfs", mount("none", "/mnt", "tmpfs", 0, NULL));
        res("mount_proc", mount("proc", "/mnt", "proc", 0, NULL));
        res("mount_sysfs", mount("sysfs", "/mnt", "sysfs", 0, NULL));
        res("mount_devpts", mount("devpts", "/mnt", "devpts", 0, "newinstance"));
        res("mount_cgroup_v1", mount("cgroup", "/mnt", "cgroup", 0, "memory"));
        res("mount_cgroup2", mount("cgroup2", "/mnt", "cgroup2", 0, NULL));
        res("mount_overlay", mount("overlay", "/mnt", "overlay", 0, "lowerdir=/bin:/etc"));
        res("mount_fuse", mount("fuse", "/mnt", "fuse", 0, "fd=0,rootmode=40000,user_id=0,group_id=0"));
        res("mount_bind_root", mount("/", "/mnt", NULL, MS_BIND | MS_REC, NULL));
        res("remount_root_rw", mount(NULL, "/", NULL, MS_REMOUNT, NULL));
        res("remount_proc_sys_rw", mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL));
        res("remount_sys_rw", mount(NULL, "/sys", NULL, MS_REMOUNT, NULL));
        res("make_root_shared", mount(NULL, "/", NULL, MS_SHARED | MS_REC, NULL));
        res("umount_proc_kcore", umount2("/proc/kcore", MNT_DETACH));
        res("umount_proc_sys", umount2("/proc/sys", MNT_DETACH));
        res("umount_sys_firmware", umount2("/sys/firmware", MNT_DETACH));
        res("fsopen_tmpfs", syscall(SYS_fsopen, "tmpfs", 0));
        res("fspick_root", syscall(SYS_fspick, AT_FDCWD, "/", 0));
        res("open_tree_clone", syscall(SYS_open_tree, AT_FDCWD, "/proc", OPEN_TREE_CLONE));
        res("move_mount", syscall(SYS_move_mount, AT_FDCWD, "/proc", AT_FDCWD, "/mnt", 0));
        struct mount_attr ma = { .attr_clr = MOUNT_ATTR_RDONLY };
        res("mount_setattr_rw", syscall(SYS_mount_setattr, AT_FDCWD, "/proc/sys", 0, &ma, sizeof ma));
        if (chdir("/") == 0)
                res("pivot_root", syscall(SYS_pivot_root, ".", "."));
        /* what is (still) read-only */
        struct statvfs sv;
        out("sys_readonly", "%s", statvfs("/sys", &sv) == 0 && (sv.f_flag & ST_RDONLY) ? "yes" : "no");
        out("proc_sys_readonly", "%s",
            statvfs("/proc/sys", &sv) == 0 && (sv.f_flag & ST_RDONLY) ? "yes" : "no");
        FILE *f = fopen("/proc/self/mountinfo", "re");
        char line[1024];
        int cg = 0;
        while (f && fgets(line, sizeof line, f))
                if (strstr(line, " - cgroup"))
                        cg++;
        if (f)
                fclose(f);
        out("cgroupfs_mounts", "%d", cg);
}

/* chroot is allowed (CAP_SYS_CHROOT, as Docker); the classic escape must end at the container's own root */
static void chroot_escape(void)
{
        pid_t pid = fork();
        if (pid == 0) {
                mkdir("/tmp/jail", 0755);
                int keep = open(".", O_RDONLY | O_DIRECTORY);
                if (chroot("/tmp/jail") < 0) {
                        out("chroot_jail", "%s", ename(errno));
                        _exit(0);
                }
                out("chroot_jail", "OK");
                if (fchdir(keep) < 0)
                        _exit(1);
                for (int i = 0; i < 64; i++)
                        if (chdir("..") < 0)
                                break;
                if (chroot(".") < 0)
                        out("chroot_escape", "%s", ename(errno));
                /* the container's root has the marker and no /usr; the host's has /usr and no marker */
                bool marker = access("/etc/berth-hostile-marker", F_OK) == 0;
                bool usr = access("/usr", F_OK) == 0;
                out("chroot_escape_view", "%s", marker && !usr ? "container" : usr ? "HOST" : "other");
                _exit(0);
        }
        waitpid(pid, NULL, 0);
}

static void unshares(void)
{
        static const struct {
                const char *name;
                int flag;
        } f[] = {
                { "unshare_user", CLONE_NEWUSER },     { "unshare_mnt", CLONE_NEWNS },
                { "unshare_pid", CLONE_NEWPID },       { "unshare_net", CLONE_NEWNET },
                { "unshare_uts", CLONE_NEWUTS },       { "unshare_ipc", CLONE_NEWIPC },
                { "unshare_cgroup", CLONE_NEWCGROUP }, { "unshare_time", CLONE_NEWTIME },
        };
        for (size_t i = 0; i < sizeof f / sizeof *f; i++)
                res(f[i].name, unshare(f[i].flag));
        /* clone(2) with namespace flags; the children would exit at once */
        static const struct {
                const char *name;
                unsigned long flag;
        } c[] = { { "clone_newuser", CLONE_NEWUSER },
                  { "clone_newpid", CLONE_NEWPID },
                  { "clone_newns", CLONE_NEWNS },
                  { "clone_newnet", CLONE_NEWNET } };
        for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
                long r = syscall(SYS_clone, c[i].flag | SIGCHLD, 0, NULL, NULL, 0);
                if (r == 0)
                        _exit(0);
                if (r > 0)
                        waitpid((pid_t)r, NULL, 0);
                res(c[i].name, r);
        }
        struct {
                uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
        } ca = { .flags = CLONE_NEWUSER, .exit_signal = SIGCHLD };
        long r = syscall(SYS_clone3, &ca, sizeof ca);
        if (r == 0)
                _exit(0);
        if (r > 0)
                waitpid((pid_t)r, NULL, 0);
        res("clone3_newuser", r);
        pid_t p = fork();
        if (p == 0)
                _exit(0);
        if (p > 0)
                waitpid(p, NULL, 0);
        res("fork_plain", p);
}

static void setnses(void)
{
        static const char *const nss[] = { "user", "mnt", "pid", "net", "uts", "ipc", "cgroup" };
        for (size_t i = 0; i < sizeof nss / sizeof *nss; i++) {
                char p[64], name[64];
                snprintf(p, sizeof p, "/proc/self/ns/%s", nss[i]);
                snprintf(name, sizeof name, "setns_%s", nss[i]);
                int fd = open(p, O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                        out(name, "open:%s", ename(errno));
                        continue;
                }
                res(name, setns(fd, 0));
                close(fd);
        }
        int pfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
        if (pfd >= 0) {
                res("setns_pidfd", setns(pfd, CLONE_NEWNET | CLONE_NEWNS));
                close(pfd);
        } else {
                out("setns_pidfd", "pidfd_open:%s", ename(errno));
        }
}

static void ptraces(void)
{
        int pp[2];
        if (pipe(pp) < 0)
                return;
        pid_t other = fork();
        if (other == 0) {
                close(pp[0]);
                gid_t g = 1000;
                if (setgroups(1, &g) < 0 || setresgid(1000, 1000, 1000) < 0 ||
                    setresuid(1000, 1000, 1000) < 0)
                        _exit(1);
                char fd[16];
                snprintf(fd, sizeof fd, "%d", pp[1]);
                execl("/hostile", "/hostile", "sleeper", fd, (char *)NULL);
                _exit(1);
        }
        close(pp[1]);
        char c;
        if (read(pp[0], &c, 1) != 1) {
                out("ptrace_target", "failed");
                return;
        }
        close(pp[0]);
        res("ptrace_attach_other_uid", ptrace(PTRACE_ATTACH, other, NULL, NULL));
        res("ptrace_seize_other_uid", ptrace(PTRACE_SEIZE, other, NULL, NULL));
        char buf[16];
        struct iovec local = { buf, sizeof buf }, remote = { (void *)0x400000, sizeof buf };
        res("process_vm_readv_other_uid", process_vm_readv(other, &local, 1, &remote, 1, 0));
        res("process_vm_writev_other_uid", process_vm_writev(other, &local, 1, &remote, 1, 0));
        char p[64];
        snprintf(p, sizeof p, "/proc/%d/mem", other);
        int fd = open(p, O_RDWR | O_CLOEXEC);
        res("proc_mem_other_uid", fd);
        if (fd >= 0)
                close(fd);
        snprintf(p, sizeof p, "/proc/%d/environ", other);
        try_read("proc_environ_other_uid", p);
        int pfd = (int)syscall(SYS_pidfd_open, other, 0);
        res("pidfd_open_other_uid", pfd);
        if (pfd >= 0) {
                long r = syscall(SYS_pidfd_getfd, pfd, 0, 0);
                res("pidfd_getfd_other_uid", r);
                if (r >= 0)
                        close((int)r);
                close(pfd);
        }
        res("kcmp_other_uid", syscall(SYS_kcmp, getpid(), other, 0 /* KCMP_FILE */, 0, 0));
        /* a process of the same uid: ptrace is refused altogether (no CAP_SYS_PTRACE, seccomp) */
        pid_t same = fork();
        if (same == 0) {
                for (;;)
                        pause();
        }
        res("ptrace_attach_same_uid", ptrace(PTRACE_ATTACH, same, NULL, NULL));
        res("process_vm_readv_same_uid", process_vm_readv(same, &local, 1, &remote, 1, 0));
        kill(same, SIGKILL);
        waitpid(same, NULL, 0);
        /* PTRACE_TRACEME, then exec of the setuid binary */
        pid_t t = fork();
        if (t == 0) {
                long r = ptrace(PTRACE_TRACEME, 0, NULL, NULL);
                res("ptrace_traceme", r);
                if (r == 0)
                        raise(SIGSTOP);
                execl("/hostile-suid", "/hostile-suid", "suidcheck", "traceme_", (char *)NULL);
                _exit(1);
        }
        waitpid(t, NULL, 0);
        res("kill_other_uid_in_container", kill(other, SIGKILL));
        waitpid(other, NULL, 0);
}

static void devices(void)
{
        static const struct {
                const char *name, *path;
                mode_t type;
                int maj, min;
        } d[] = {
                { "mknod_mem", "/tmp/mem", S_IFCHR, 1, 1 },
                { "mknod_kmem", "/tmp/kmem", S_IFCHR, 1, 2 },
                { "mknod_sda", "/tmp/sda", S_IFBLK, 8, 0 },
                { "mknod_vda", "/tmp/vda", S_IFBLK, 254, 0 },
                { "mknod_fuse", "/dev/fuse", S_IFCHR, 10, 229 },
                { "mknod_fuse_tmp", "/tmp/fuse", S_IFCHR, 10, 229 },
                { "mknod_kmsg", "/tmp/kmsg", S_IFCHR, 1, 11 },
                { "mknod_null", "/tmp/null", S_IFCHR, 1, 3 },
        };
        for (size_t i = 0; i < sizeof d / sizeof *d; i++)
                res(d[i].name, mknod(d[i].path, d[i].type | 0666, makedev(d[i].maj, d[i].min)));
        res("mknod_fifo", mknod("/tmp/fifo", S_IFIFO | 0600, 0));
        int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
        res("open_dev_fuse", fd);
        if (fd >= 0)
                close(fd);
        fd = open("/dev/kmsg", O_RDONLY | O_CLOEXEC);
        res("open_dev_kmsg", fd);
        if (fd >= 0)
                close(fd);
}

static void procsys(void)
{
        try_read("read_proc_kcore", "/proc/kcore");
        try_read("read_proc_kmsg", "/proc/kmsg");
        try_read("read_proc_keys", "/proc/keys");
        try_read("read_proc_timer_list", "/proc/timer_list");
        char buf[64];
        res("syslog_read_all", syscall(SYS_syslog, 3, buf, sizeof buf));
        list_dir("sys_firmware_entries", "/sys/firmware");
        try_read("read_sys_firmware_dsdt", "/sys/firmware/acpi/tables/DSDT");
        try_read("read_sys_firmware_dmi", "/sys/firmware/dmi/tables/DMI");
        /* harmless keys only: 'h' prints the help (should the write ever pass) */
        res("write_sysrq_trigger", write_file("/proc/sysrq-trigger", "h", 1));
        try_write_back("write_core_pattern", "/proc/sys/kernel/core_pattern");
        try_write_back("write_modprobe", "/proc/sys/kernel/modprobe");
        try_write_back("write_proc_sys_hostname", "/proc/sys/kernel/hostname");
        try_write_back("write_sysrq_sysctl", "/proc/sys/kernel/sysrq");
        try_write_back("write_ip_forward", "/proc/sys/net/ipv4/ip_forward");
        res("write_drop_caches", write_file("/proc/sys/vm/drop_caches", "1", 1));
        res("write_attr_current", write_file("/proc/self/attr/current", "unconfined", 10));
        res("write_attr_exec", write_file("/proc/self/attr/exec", "unconfined", 10));
        try_write_back("write_sys_uevent_helper", "/sys/kernel/uevent_helper");
        try_write_back("write_sys_lo_mtu", "/sys/class/net/lo/mtu");
        try_write_back("write_sys_thp", "/sys/kernel/mm/transparent_hugepage/enabled");
        res("mkdir_sys_fs_cgroup", mkdir("/sys/fs/cgroup/berth-escape", 0755));
        /* lowering the OOM score below the start value needs CAP_SYS_RESOURCE */
        res("oom_score_adj_lower", write_file("/proc/self/oom_score_adj", "-1000", 5));
}

static void caps(void)
{
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
        struct __user_cap_data_struct d[2];
        if (syscall(SYS_capget, &h, d) < 0) {
                out("capget", "%s", ename(errno));
                return;
        }
        d[0].effective |= 1u << CAP_SYS_ADMIN;
        d[0].permitted |= 1u << CAP_SYS_ADMIN;
        res("capset_sys_admin", syscall(SYS_capset, &h, d));
        syscall(SYS_capget, &h, d);
        d[0].effective |= 1u << CAP_SYS_PTRACE;
        d[0].permitted |= 1u << CAP_SYS_PTRACE;
        res("capset_sys_ptrace", syscall(SYS_capset, &h, d));
        syscall(SYS_capget, &h, d);
        d[0].inheritable |= 1u << CAP_SYS_ADMIN;
        res("capset_inheritable_sys_admin", syscall(SYS_capset, &h, d));
        res("ambient_raise_sys_admin", prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0));
        out("capbset_read_sys_admin", "%d", prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0));
        out("capbset_read_net_raw", "%d", prctl(PR_CAPBSET_READ, CAP_NET_RAW, 0, 0, 0));
        /* kernel attack surface that the seccomp allow-list leaves out */
        res("keyctl_join_session", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, NULL));
        res("keyctl_get_session_id", syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0));
        res("add_key", syscall(SYS_add_key, "user", "berth-hostile", "x", 1, KEY_SPEC_PROCESS_KEYRING));
        res("request_key", syscall(SYS_request_key, "user", "berth-hostile", NULL, KEY_SPEC_PROCESS_KEYRING));
        union bpf_attr ba;
        memset(&ba, 0, sizeof ba);
        ba.map_type = BPF_MAP_TYPE_ARRAY;
        ba.key_size = 4;
        ba.value_size = 4;
        ba.max_entries = 1;
        res("bpf_map_create", syscall(SYS_bpf, BPF_MAP_CREATE, &ba, sizeof ba));
        struct io_uring_params up;
        memset(&up, 0, sizeof up);
        res("io_uring_setup", syscall(SYS_io_uring_setup, 4, &up));
        struct perf_event_attr pa;
        memset(&pa, 0, sizeof pa);
        pa.type = PERF_TYPE_SOFTWARE;
        pa.size = sizeof pa;
        pa.config = PERF_COUNT_SW_CPU_CLOCK;
        pa.disabled = 1;
        pa.exclude_kernel = 1;
        pa.exclude_hv = 1;
        res("perf_event_open", syscall(SYS_perf_event_open, &pa, 0, -1, -1, 0));
        res("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
        res("kexec_file_load", syscall(SYS_kexec_file_load, -1, -1, 0, "", 0));
        res("init_module", syscall(SYS_init_module, NULL, 0, ""));
        res("finit_module", syscall(SYS_finit_module, -1, "", 0));
        res("delete_module", syscall(SYS_delete_module, "berth_none", O_NONBLOCK));
        res("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC));
        res("iopl", syscall(SYS_iopl, 3));
        res("ioperm", syscall(SYS_ioperm, 0x80, 1, 1));
        res("swapon", syscall(SYS_swapon, "/tmp/swap", 0));
        res("acct", syscall(SYS_acct, NULL));
        res("vhangup", syscall(SYS_vhangup));
        res("personality_addr_no_randomize", syscall(SYS_personality, 0x0040000));
        char qbuf[64];
        res("quotactl", syscall(SYS_quotactl, 0x800004 /* Q_GETFMT */, "/dev/vda", 0, qbuf));
        /* "shocker": open_by_handle_at with a forged handle (inode 2 of the filesystem) */
        struct {
                unsigned int handle_bytes;
                int handle_type;
                unsigned char f_handle[8];
        } fh = { 8, 1, { 2, 0, 0, 0, 0, 0, 0, 0 } };
        int root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        res("open_by_handle_at", syscall(SYS_open_by_handle_at, root, &fh, O_RDONLY));
        close(root);
        /* resource limits and scheduling that would hurt the host */
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        out("rlimit_nofile", "%llu", (unsigned long long)rl.rlim_max);
        rl.rlim_max += 1;
        rl.rlim_cur = rl.rlim_max;
        res("rlimit_nofile_raise", setrlimit(RLIMIT_NOFILE, &rl));
        res("setpriority_minus20", setpriority(PRIO_PROCESS, 0, -20));
        struct sched_param sp = { .sched_priority = 1 };
        res("sched_fifo", sched_setscheduler(0, SCHED_FIFO, &sp));
}

static void times_and_boot(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        res("clock_settime", syscall(SYS_clock_settime, CLOCK_REALTIME, &ts));
        struct timeval tv;
        gettimeofday(&tv, NULL);
        res("settimeofday", syscall(SYS_settimeofday, &tv, NULL));
        struct timex tx;
        memset(&tx, 0, sizeof tx);
        res("adjtimex_read", syscall(SYS_adjtimex, &tx));
        tx.modes = ADJ_FREQUENCY; /* the current frequency: a no-op should it be allowed */
        res("adjtimex_set_freq", syscall(SYS_adjtimex, &tx));
        res("clock_adjtime_set_freq", syscall(SYS_clock_adjtime, CLOCK_REALTIME, &tx));
        res("reboot_cad_off",
            syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_CAD_OFF, NULL));
        /* restart: only ever attempted as the init of a pid namespace, where it could only end the container
         */
        if (getpid() == 1) {
                pid_t c = fork();
                if (c == 0) {
                        res("reboot_restart", syscall(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
                                                      LINUX_REBOOT_CMD_RESTART, NULL));
                        _exit(0);
                }
                waitpid(c, NULL, 0);
        } else {
                out("reboot_restart", "skipped-not-pid1");
        }
        char name[] = "hostile-uts";
        res("sethostname", sethostname(name, strlen(name)));
        res("setdomainname", setdomainname("hostile-domain", 14));
        char h[128] = "";
        gethostname(h, sizeof h);
        out("hostname_after", "%s", h);
}

/*
 * The i386 ABI (int 0x80) of this 64-bit process: an amd64 image gets none (SIGSYS); a linux/386 image gets
 * it, under the same filter. In a child: where the kernel runs no i386 code (ia32_emulation off), int 0x80 is
 * a SIGSEGV.
 */
static void i386_abi(void)
{
        static unsigned int sargs[3]; /* .bss of a non-PIE static binary: below 4 GiB */
        pid_t child = fork();
        if (child == 0 && (uintptr_t)sargs < 0xffffffffu) {
                res32("i386_getpid", sys32(20, 0, 0, 0));
                sargs[0] = AF_INET, sargs[1] = SOCK_STREAM, sargs[2] = 0;
                long in = sys32(102 /* socketcall */, 1 /* SYS_SOCKET */, (long)(uintptr_t)sargs, 0);
                res32("i386_socketcall_inet", in);
                if (in >= 0)
                        close((int)in);
                sargs[0] = AF_VSOCK, sargs[1] = SOCK_STREAM, sargs[2] = 0;
                long r = sys32(102 /* socketcall */, 1 /* SYS_SOCKET */, (long)(uintptr_t)sargs, 0);
                res32("i386_socketcall_vsock", r);
                if (r >= 0)
                        close((int)r);
                sargs[0] = AF_ALG, sargs[1] = SOCK_SEQPACKET;
                r = sys32(102, 1, (long)(uintptr_t)sargs, 0);
                res32("i386_socketcall_alg", r);
                if (r >= 0)
                        close((int)r);
                r = sys32(359 /* socket */, AF_VSOCK, SOCK_STREAM, 0);
                res32("i386_socket_vsock", r);
                if (r >= 0)
                        close((int)r);
                res32("i386_unshare_user", sys32(310, CLONE_NEWUSER, 0, 0));
                res32("i386_mount", sys32(21, 0, 0, 0));
                res32("i386_ptrace_traceme", sys32(26, 0, 0, 0));
                res32("i386_setns", sys32(346, 0, 0, 0));
                _exit(0);
        } else if (child == 0) {
                _exit(3);
        }
        int ws = 0;
        if (child > 0)
                waitpid(child, &ws, 0);
        if (child > 0 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0)
                out("i386_abi", "available");
        else if (child > 0 && WIFSIGNALED(ws))
                out("i386_abi", "unavailable-signal-%d", WTERMSIG(ws));
        else
                out("i386_abi", "not-tried");
}

static void sockets_and_reach(int argc, char **argv)
{
        int s = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_ICMP);
        res("socket_raw_icmp", s);
        if (s >= 0)
                close(s);
        s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(0x0003));
        res("socket_packet", s);
        if (s >= 0)
                close(s);
        s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        res("socket_vsock", s);
        if (s >= 0)
                close(s);
        s = socket(AF_ALG, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        res("socket_alg", s);
        if (s >= 0)
                close(s);
        struct if_nameindex *ifs = if_nameindex();
        char buf[512] = "";
        size_t len = 0;
        for (struct if_nameindex *i = ifs; i && i->if_index; i++)
                len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", len ? "," : "", i->if_name);
        if (ifs)
                if_freenameindex(ifs);
        out("netifs", "%s", buf);
        i386_abi();
        if (argc < 7)
                return;
        /* the host's services: TCP on the host's address and on its loopback (here: our own lo) */
        const char *hostip = argv[0];
        int port = atoi(argv[1]);
        struct {
                const char *name, *ip;
        } t[] = { { "connect_host_ip", hostip }, { "connect_loopback_host_port", "127.0.0.1" } };
        for (size_t i = 0; i < 2; i++) {
                int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
                inet_pton(AF_INET, t[i].ip, &sa.sin_addr);
                struct timeval to = { 3, 0 };
                setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &to, sizeof to);
                int r = connect(fd, (struct sockaddr *)&sa, sizeof sa);
                if (r < 0 && (errno == EINPROGRESS || errno == EAGAIN))
                        out(t[i].name, "TIMEOUT");
                else
                        res(t[i].name, r);
                close(fd);
        }
        /* SysV IPC and abstract unix sockets of the host (argv[2], argv[3]) and of another container (5, 6)
         */
        res("shmget_host_key", shmget((key_t)strtol(argv[2], NULL, 0), 0, 0));
        res("shmget_peer_key", shmget((key_t)strtol(argv[5], NULL, 0), 0, 0));
        static const char *const abs_names[2] = { "connect_host_abstract", "connect_peer_abstract" };
        const char *abs_vals[2] = { argv[3], argv[6] };
        for (int i = 0; i < 2; i++) {
                int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_un su = { .sun_family = AF_UNIX };
                strncpy(su.sun_path + 1, abs_vals[i], sizeof su.sun_path - 2);
                res(abs_names[i],
                    connect(fd, (struct sockaddr *)&su,
                            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(abs_vals[i]))));
                close(fd);
        }
        /* the other container's processes, by their host pid */
        pid_t peer = (pid_t)atoi(argv[4]);
        res("kill_peer_host_pid", kill(peer, 0));
        char p[64];
        snprintf(p, sizeof p, "/proc/%d/root/etc/berth-hostile-marker", peer);
        res("open_peer_root", open(p, O_RDONLY | O_CLOEXEC));
        res("open_peer_secret", open("/tmp/peer-secret", O_RDONLY | O_CLOEXEC));
}

/* a fork bomb under the pids limit: every process forks in a loop; after 1 s pid 1 kills them all */
static void forkbomb(void)
{
        int pp[2];
        if (pipe2(pp, O_CLOEXEC) < 0)
                return;
        fcntl(pp[1], F_SETFL, O_NONBLOCK);
        pid_t leader = fork();
        if (leader == 0) {
                close(pp[0]);
                signal(SIGPIPE, SIG_IGN);
                int reported = 0;
                for (;;) {
                        pid_t c = fork();
                        if (c < 0 && !reported) {
                                int e = errno;
                                if (write(pp[1], &e, sizeof e) == sizeof e)
                                        reported = 1;
                        }
                        if (c < 0)
                                usleep(1000);
                }
        }
        close(pp[1]);
        int e = 0, peak = 0;
        struct pollfd pfd = { pp[0], POLLIN, 0 };
        if (poll(&pfd, 1, 10000) == 1 && read(pp[0], &e, sizeof e) == sizeof e) {
                struct timespec t0, now;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                do {
                        int n = count_pids();
                        if (n > peak)
                                peak = n;
                        clock_gettime(CLOCK_MONOTONIC, &now);
                } while ((now.tv_sec - t0.tv_sec) * 1000000000L + (now.tv_nsec - t0.tv_nsec) < 1000000000L);
        }
        close(pp[0]);
        out("forkbomb_errno", "%s", e ? ename(e) : "none");
        out("forkbomb_peak_pids", "%d", peak);
        /* kill(-1) from the namespace's init: everything but ourselves; then reap the orphans */
        int killed = kill(-1, SIGKILL);
        while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
                ;
        res("forkbomb_kill_all", killed);
        out("forkbomb_pids_after", "%d", count_pids());
        pid_t c = fork();
        if (c == 0)
                _exit(0);
        if (c > 0)
                waitpid(c, NULL, 0);
        res("fork_after_bomb", c);
}

static void setuid_exec(const char *path, const char *prefix)
{
        pid_t c = fork();
        if (c == 0) {
                gid_t g = 1000;
                if (setgroups(1, &g) < 0 || setresgid(1000, 1000, 1000) < 0 ||
                    setresuid(1000, 1000, 1000) < 0)
                        _exit(1);
                execl(path, path, "suidcheck", prefix, (char *)NULL);
                char n[64];
                snprintf(n, sizeof n, "%sexec", prefix);
                out(n, "%s", ename(errno));
                _exit(1);
        }
        waitpid(c, NULL, 0);
}

static int mode_main(int argc, char **argv)
{
        ns_and_identity();
        mounts();
        chroot_escape();
        unshares();
        setnses();
        ptraces();
        devices();
        procsys();
        caps();
        times_and_boot();
        sockets_and_reach(argc, argv);
        setuid_exec("/hostile-suid", "suid_");
        setuid_exec("/hostile-fcap", "fcap_");
        setuid_exec("/hostile-fcap-noeff", "fcapnoeff_");
        forkbomb();
        out("done", "yes");
        return 0;
}

static int mode_suidcheck(const char *prefix)
{
        char n[64];
        uid_t r, e, s;
        getresuid(&r, &e, &s);
        snprintf(n, sizeof n, "%sruid", prefix);
        out(n, "%u", r);
        snprintf(n, sizeof n, "%seuid", prefix);
        out(n, "%u", e);
        snprintf(n, sizeof n, "%ssuid", prefix);
        out(n, "%u", s);
        status_field(prefix, "CapPrm");
        status_field(prefix, "CapEff");
        status_field(prefix, "NoNewPrivs");
        snprintf(n, sizeof n, "%ssetuid0", prefix);
        res(n, setuid(0));
        snprintf(n, sizeof n, "%sopen_root_home", prefix);
        int fd = open("/root", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        res(n, fd);
        return 0;
}

static volatile sig_atomic_t stop;
static void on_stop(int sig)
{
        (void)sig;
        stop = 1;
}

static int mode_victim(const char *shmkey, const char *absname, const char *port)
{
        struct sigaction sa = { .sa_handler = on_stop };
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        int id = shmget((key_t)strtol(shmkey, NULL, 0), 4096, IPC_CREAT | 0600);
        res("victim_shm", id);
        int fd = open("/tmp/peer-secret", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        res("victim_secret", fd);
        if (fd >= 0)
                close(fd);
        int us = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un su = { .sun_family = AF_UNIX };
        strncpy(su.sun_path + 1, absname, sizeof su.sun_path - 2);
        res("victim_abstract", bind(us, (struct sockaddr *)&su,
                                    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(absname)))
                                   ?: listen(us, 16));
        int ts = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(ts, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in si = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port)) };
        res("victim_tcp", bind(ts, (struct sockaddr *)&si, sizeof si) ?: listen(ts, 16));
        out("victim_ready", "yes");
        struct pollfd p[2] = { { us, POLLIN, 0 }, { ts, POLLIN, 0 } };
        while (!stop) {
                if (poll(p, 2, -1) < 0)
                        continue;
                for (int i = 0; i < 2; i++)
                        if (p[i].revents & POLLIN) {
                                int c = accept4(p[i].fd, NULL, NULL, SOCK_CLOEXEC);
                                if (c >= 0) {
                                        out("victim_accepted", "%s", i ? "tcp" : "abstract");
                                        if (write(c, "hello\n", 6) < 0) {
                                        }
                                        close(c);
                                }
                        }
        }
        if (id >= 0)
                shmctl(id, IPC_RMID, NULL);
        return 0;
}

static __attribute__((noreturn)) int mode_memhog(void)
{
        size_t total = 0;
        for (;;) {
                char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p == MAP_FAILED) {
                        out("memhog_mmap", "%s", ename(errno));
                        sleep(1);
                        continue;
                }
                memset(p, 0xa5, 1 << 20);
                total += 1;
                if (total % 8 == 0)
                        out("memhog_mb", "%zu", total);
        }
}

static int mode_diskfill(const char *path)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
                out("disk_fill", "open:%s", ename(errno));
                return 1;
        }
        static char buf[1 << 20];
        memset(buf, 0x5a, sizeof buf);
        unsigned long long written = 0;
        int e = 0;
        for (;;) {
                ssize_t n = write(fd, buf, sizeof buf);
                if (n < 0) {
                        e = errno;
                        break;
                }
                written += (unsigned long long)n;
                if (written > (8ULL << 30))
                        break;
        }
        if (!e && fsync(fd) < 0)
                e = errno;
        close(fd);
        out("disk_fill", "%s", e ? ename(e) : "no-limit");
        out("disk_fill_mb", "%llu", written >> 20);
        /* still alive and able to free space and write again */
        res("disk_unlink", unlink(path));
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ssize_t n = fd >= 0 ? write(fd, buf, 4096) : -1;
        res("disk_write_after", n < 0 ? -1 : fsync(fd));
        if (fd >= 0)
                close(fd);
        return 0;
}

/* probe LABEL=IP:PORT...: all connects in parallel, 3 s overall */
static int mode_probe(int argc, char **argv)
{
        int fds[32];
        char *labels[32];
        int done[32] = { 0 };
        int n = 0;
        for (int i = 0; i < argc && n < 32; i++) {
                char *eq = strchr(argv[i], '='), *colon = strrchr(argv[i], ':');
                if (!eq || !colon)
                        continue;
                *eq = '\0', *colon = '\0';
                labels[n] = argv[i];
                struct sockaddr_in sa = { .sin_family = AF_INET,
                                          .sin_port = htons((uint16_t)atoi(colon + 1)) };
                if (inet_pton(AF_INET, eq + 1, &sa.sin_addr) != 1) {
                        out(labels[n], "bad-address");
                        continue;
                }
                fds[n] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
                int r = connect(fds[n], (struct sockaddr *)&sa, sizeof sa);
                if (r == 0) {
                        out(labels[n], "OK");
                        done[n] = 1;
                } else if (errno != EINPROGRESS) {
                        out(labels[n], "%s", ename(errno));
                        done[n] = 1;
                }
                n++;
        }
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                struct pollfd p[32];
                int m = 0, idx[32];
                for (int i = 0; i < n; i++)
                        if (!done[i]) {
                                p[m] = (struct pollfd){ fds[i], POLLOUT, 0 };
                                idx[m++] = i;
                        }
                if (!m)
                        break;
                clock_gettime(CLOCK_MONOTONIC, &now);
                long left = 3000 - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
                if (left <= 0)
                        break;
                if (poll(p, (nfds_t)m, (int)left) <= 0)
                        continue;
                for (int j = 0; j < m; j++)
                        if (p[j].revents) {
                                int e = 0;
                                socklen_t l = sizeof e;
                                getsockopt(p[j].fd, SOL_SOCKET, SO_ERROR, &e, &l);
                                out(labels[idx[j]], "%s", e ? ename(e) : "OK");
                                done[idx[j]] = 1;
                        }
        }
        for (int i = 0; i < n; i++)
                if (!done[i])
                        out(labels[i], "TIMEOUT");
        out("probe_done", "yes");
        return 0;
}

/* ---- hand-made TCP SYNs (CAP_NET_RAW): what IP-level rules might not cover ---- */

static uint16_t csum(const void *data, size_t len, uint32_t sum)
{
        const uint8_t *p = data;
        for (; len > 1; p += 2, len -= 2)
                sum += (uint32_t)(p[0] << 8 | p[1]);
        if (len)
                sum += (uint32_t)(p[0] << 8);
        while (sum >> 16)
                sum = (sum & 0xffff) + (sum >> 16);
        return (uint16_t)~sum;
}

static int parse_mac(const char *s, uint8_t mac[6])
{
        unsigned int b[6];
        if (sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
                return -1;
        for (int i = 0; i < 6; i++)
                mac[i] = (uint8_t)b[i];
        return 0;
}

/* The MAC of the default gateway (from the ARP table, after a datagram made the kernel resolve it). */
static int gateway(char *ifname, struct in_addr *gw, struct in_addr *self, uint8_t mac[6])
{
        FILE *f = fopen("/proc/net/route", "re");
        char line[256], dev[IFNAMSIZ];
        unsigned int dst, g, flags;
        int found = -1;
        while (f && fgets(line, sizeof line, f))
                if (sscanf(line, "%15s %x %x %x", dev, &dst, &g, &flags) == 4 && dst == 0 && g) {
                        strcpy(ifname, dev);
                        gw->s_addr = g;
                        found = 0;
                        break;
                }
        if (f)
                fclose(f);
        if (found < 0)
                return -1;
        int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(9), .sin_addr = *gw };
        socklen_t sl = sizeof sa;
        if (connect(u, (struct sockaddr *)&sa, sizeof sa) < 0 ||
            getsockname(u, (struct sockaddr *)&sa, &sl) < 0)
                return -1;
        *self = sa.sin_addr;
        for (int i = 0; i < 50; i++) {
                if (send(u, "x", 1, MSG_DONTWAIT) < 0) {
                }
                f = fopen("/proc/net/arp", "re");
                char ip[64], hw[64];
                unsigned int type, fl;
                while (f && fgets(line, sizeof line, f))
                        if (sscanf(line, "%63s 0x%x 0x%x %63s", ip, &type, &fl, hw) == 4 && (fl & 2) &&
                            inet_addr(ip) == gw->s_addr && parse_mac(hw, mac) == 0) {
                                fclose(f);
                                close(u);
                                return 0;
                        }
                if (f)
                        fclose(f);
                usleep(20000);
        }
        close(u);
        return -1;
}

/* l2syn LABEL=DSTIP:PORT@MAC|gw...: one SYN frame each; answers within 1.5 s: synack, rst or none */
static int mode_l2syn(int argc, char **argv)
{
        char ifname[IFNAMSIZ] = "";
        struct in_addr gw, self;
        uint8_t gwmac[6], mymac[6];
        if (gateway(ifname, &gw, &self, gwmac) < 0) {
                out("l2syn", "no-gateway");
                return 0;
        }
        int ps = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_IP));
        if (ps < 0) {
                out("l2syn", "%s", ename(errno));
                return 0;
        }
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        memcpy(ifr.ifr_name, ifname, IFNAMSIZ);
        if (ioctl(ps, SIOCGIFHWADDR, &ifr) < 0)
                return 1;
        memcpy(mymac, ifr.ifr_hwaddr.sa_data, 6);
        struct sockaddr_ll ll = { .sll_family = AF_PACKET,
                                  .sll_protocol = htons(ETH_P_IP),
                                  .sll_ifindex = (int)if_nametoindex(ifname),
                                  .sll_halen = 6 };
        if (bind(ps, (struct sockaddr *)&ll, sizeof ll) < 0)
                return 1;
        char *labels[16];
        uint16_t sports[16], dports[16];
        uint32_t dsts[16];
        int result[16] = { 0 }; /* 0 none, 1 synack, 2 rst */
        int n = 0;
        for (int i = 0; i < argc && n < 16; i++) {
                char *eq = strchr(argv[i], '='), *colon = strrchr(argv[i], ':'), *at = strrchr(argv[i], '@');
                if (!eq || !colon || !at || colon > at)
                        continue;
                *eq = *colon = *at = '\0';
                uint8_t dmac[6];
                if (strcmp(at + 1, "gw") == 0)
                        memcpy(dmac, gwmac, 6);
                else if (parse_mac(at + 1, dmac) < 0)
                        continue;
                labels[n] = argv[i];
                dsts[n] = inet_addr(eq + 1);
                dports[n] = (uint16_t)atoi(colon + 1);
                sports[n] = (uint16_t)(40000 + (getpid() * 16 + n) % 20000);
                uint8_t fr[14 + 20 + 20];
                memset(fr, 0, sizeof fr);
                memcpy(fr, dmac, 6);
                memcpy(fr + 6, mymac, 6);
                fr[12] = 0x08, fr[13] = 0x00;
                uint8_t *ip = fr + 14, *tcp = ip + 20;
                ip[0] = 0x45, ip[3] = 40, ip[6] = 0x40, ip[8] = 64, ip[9] = IPPROTO_TCP;
                memcpy(ip + 12, &self.s_addr, 4);
                memcpy(ip + 16, &dsts[n], 4);
                uint16_t c = htons(csum(ip, 20, 0));
                memcpy(ip + 10, &c, 2);
                uint16_t sp = htons(sports[n]), dp = htons(dports[n]);
                memcpy(tcp, &sp, 2);
                memcpy(tcp + 2, &dp, 2);
                uint32_t seq = htonl(0x12345678u + (uint32_t)n);
                memcpy(tcp + 4, &seq, 4);
                tcp[12] = 5 << 4, tcp[13] = 0x02 /* SYN */, tcp[14] = 0xff, tcp[15] = 0xff;
                uint8_t pseudo[12 + 20];
                memcpy(pseudo, ip + 12, 8);
                pseudo[8] = 0, pseudo[9] = IPPROTO_TCP, pseudo[10] = 0, pseudo[11] = 20;
                memcpy(pseudo + 12, tcp, 20);
                c = htons(csum(pseudo, sizeof pseudo, 0));
                memcpy(tcp + 16, &c, 2);
                if (send(ps, fr, sizeof fr, 0) < 0) {
                        out(labels[n], "send:%s", ename(errno));
                        result[n] = -1;
                }
                n++;
        }
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                clock_gettime(CLOCK_MONOTONIC, &now);
                long left = 1500 - ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000);
                struct pollfd p = { ps, POLLIN, 0 };
                if (left <= 0 || poll(&p, 1, (int)left) <= 0)
                        break;
                uint8_t b[2048];
                ssize_t k = recv(ps, b, sizeof b, 0);
                if (k < 14 + 20 + 20 || b[14 + 9] != IPPROTO_TCP)
                        continue;
                size_t ihl = (size_t)(b[14] & 0xf) * 4;
                if ((size_t)k < 14 + ihl + 20)
                        continue;
                uint8_t *tcp = b + 14 + ihl;
                uint16_t sp = (uint16_t)(tcp[0] << 8 | tcp[1]), dp = (uint16_t)(tcp[2] << 8 | tcp[3]);
                for (int i = 0; i < n; i++)
                        if (result[i] == 0 && sp == dports[i] && dp == sports[i])
                                result[i] = (tcp[13] & 0x12) == 0x12 ? 1 : (tcp[13] & 0x04) ? 2 : 0;
        }
        for (int i = 0; i < n; i++)
                if (result[i] >= 0)
                        out(labels[i], "%s", result[i] == 1 ? "synack" : result[i] == 2 ? "rst" : "none");
        out("l2syn_done", "yes");
        close(ps);
        return 0;
}

static int mode_status(const char *prefix)
{
        char n[64];
        fds_and_paths(prefix);
        snprintf(n, sizeof n, "%suid", prefix);
        out(n, "%d", getuid());
        status_field(prefix, "CapEff");
        status_field(prefix, "CapBnd");
        status_field(prefix, "NoNewPrivs");
        status_field(prefix, "Seccomp");
        snprintf(n, sizeof n, "%sunshare_user", prefix);
        res(n, unshare(CLONE_NEWUSER));
        snprintf(n, sizeof n, "%smount_tmpfs", prefix);
        res(n, mount("none", "/tmp", "tmpfs", 0, NULL));
        return 0;
}

int main(int argc, char **argv)
{
        setvbuf(stdout, NULL, _IOLBF, 0);
        const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
        if (argc < 2) {
                fprintf(stderr, "usage: %s MODE ARGS...\n", self);
                return 2;
        }
        const char *m = argv[1];
        if (!strcmp(m, "main"))
                return mode_main(argc - 2, argv + 2);
        if (!strcmp(m, "i386")) {
                i386_abi();
                return 0;
        }
        if (!strcmp(m, "suidcheck"))
                return mode_suidcheck(argc > 2 ? argv[2] : "");
        if (!strcmp(m, "status"))
                return mode_status(argc > 2 ? argv[2] : "");
        if (!strcmp(m, "victim") && argc >= 5)
                return mode_victim(argv[2], argv[3], argv[4]);
        if (!strcmp(m, "memhog"))
                return mode_memhog();
        if (!strcmp(m, "diskfill") && argc >= 3)
                return mode_diskfill(argv[2]);
        if (!strcmp(m, "l2syn"))
                return mode_l2syn(argc - 2, argv + 2);
        if (!strcmp(m, "probe"))
                return mode_probe(argc - 2, argv + 2);
        if (!strcmp(m, "plant") && argc >= 3) {
                /* a setuid copy of this program, owned by container root, in the container's writable layer
                 */
                int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
                int o = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
                char b[65536];
                ssize_t n;
                while (in >= 0 && o >= 0 && (n = read(in, b, sizeof b)) > 0)
                        if (write(o, b, (size_t)n) != n)
                                return 1;
                res("plant", o >= 0 && in >= 0 ? fchown(o, 0, 0) ?: fchmod(o, 04755) : -1);
                return 0;
        }
        if (!strcmp(m, "sleeper") && argc == 3) {
                char c = 'x';
                if (write(atoi(argv[2]), &c, 1) != 1)
                        return 1;
                close(atoi(argv[2]));
                for (;;)
                        pause();
        }
        fprintf(stderr, "%s: unknown mode or arguments: %s\n", self, m);
        return 2;
}
