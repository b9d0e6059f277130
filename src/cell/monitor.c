/* SPDX-License-Identifier: Apache-2.0 */
/*
 * berth-monitor: one small process per container, the equivalent of conmon. It links nothing but libc
 * (its resident memory is the cost of every container on a cell, so it stays tiny) and is the parent of
 * the container's init:
 *
 *   1. holds an exclusive flock on <dir>/monitor.lock for its whole life (liveness, robust to pid reuse);
 *   2. becomes a child subreaper, runs `RUNTIME --root R run --detach --pid-file <dir>/pid -b B ID` with the
 *      container's stdout/stderr on two pipes it owns, so the container's init is reparented to it;
 *   3. reports "ok PID" or "error MESSAGE" on --sync-fd (the runtime's own log tail) and writes
 *      <dir>/state.json (status running);
 *   4. copies stdout/stderr into <dir>/container.log in the CRI format ("TIME STREAM F|P TEXT"), rotated at
 *      --log-max bytes, keeping --log-files files;
 *   5. reaps the init, reads the memory cgroup's OOM-kill counter, removes the cgroups and the runtime's
 *      state (what `RUNTIME delete` would do, which it runs only if that fails), writes state.json (status
 * exited, exit code, signal, oom_killed), sends "exit CODE" on the sync socket and exits — or, with
 * --autoremove, executes the argv after "--" (berth rm) in its place, unless an attached starter answers "rm"
 * (it removes the container itself).
 *
 * Everything it needs comes on its command line; it never reads berth's configuration. It does not
 * print: its errors go to the sync fd while starting, and to <dir>/monitor.log after.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES (16 * 1024) /* a longer line is split into partial ("P") records, as CRI does */
#define DRAIN_MS       2000        /* after the init exits, wait at most this long for the pipes' EOF */

struct stream {
        const char *name; /* "stdout" / "stderr" */
        int fd;           /* read end, -1 at EOF */
        char buf[LINE_MAX_BYTES];
        size_t len;
};

struct monitor {
        const char *runtime, *root, *bundle, *id, *dir, *oom_file, *cgroup_path;
        int dirfd, sync_fd, log_fd;
        uint64_t log_max, log_size;
        unsigned log_files;
        pid_t init_pid;
        char started_at[40];
        char **autoremove; /* argv, or NULL */
};

static void timestamp(char *out, size_t n)
{
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        size_t l = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(out + l, n - l, ".%09ldZ", ts.tv_nsec);
}

static int write_all(int fd, const char *p, size_t n)
{
        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += w;
                n -= (size_t)w;
        }
        return 0;
}

/* Diagnostics after start-up go to <dir>/monitor.log (bounded: the monitor logs only a handful of lines). */
static void __attribute__((format(printf, 2, 3))) mlog(struct monitor *m, const char *fmt, ...)
{
        char line[1024], ts[40];
        timestamp(ts, sizeof(ts));
        int l = snprintf(line, sizeof(line), "%s ", ts);
        va_list ap;
        va_start(ap, fmt);
        l += vsnprintf(line + l, sizeof(line) - (size_t)l - 1, fmt, ap);
        va_end(ap);
        if (l > (int)sizeof(line) - 2)
                l = (int)sizeof(line) - 2;
        line[l++] = '\n';
        int fd = openat(m->dirfd, "monitor.log", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) {
                write_all(fd, line, (size_t)l);
                close(fd);
        }
}

static int write_file_atomic(struct monitor *m, const char *name, const char *data)
{
        char tmp[64];
        snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
        int fd = openat(m->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        int r = write_all(fd, data, strlen(data));
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && renameat(m->dirfd, tmp, m->dirfd, name) < 0)
                r = -errno;
        return r;
}

static int log_open(struct monitor *m)
{
        m->log_fd = openat(m->dirfd, "container.log", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (m->log_fd < 0)
                return -errno;
        struct stat st;
        m->log_size = fstat(m->log_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
        return 0;
}

/* container.log → .1 → .2 ... keeping log_files files in all. */
static void log_rotate(struct monitor *m)
{
        close(m->log_fd);
        m->log_fd = -1;
        if (m->log_files <= 1) {
                unlinkat(m->dirfd, "container.log", 0);
        } else {
                char from[32], to[32];
                for (unsigned i = m->log_files - 1; i >= 1; i--) {
                        snprintf(to, sizeof(to), "container.log.%u", i);
                        if (i == 1)
                                snprintf(from, sizeof(from), "container.log");
                        else
                                snprintf(from, sizeof(from), "container.log.%u", i - 1);
                        renameat(m->dirfd, from, m->dirfd, to);
                }
        }
        if (log_open(m) < 0)
                mlog(m, "cannot reopen container.log: %s", strerror(errno));
}

static void log_record(struct monitor *m, const char *stream, bool partial, const char *text, size_t n)
{
        char head[80];
        char ts[40];
        timestamp(ts, sizeof(ts));
        int hl = snprintf(head, sizeof(head), "%s %s %c ", ts, stream, partial ? 'P' : 'F');
        uint64_t need = (uint64_t)hl + n + 1;
        if (m->log_fd >= 0 && m->log_size > 0 && m->log_size + need > m->log_max)
                log_rotate(m);
        if (m->log_fd < 0)
                return;
        struct iovec iov[3] = { { head, (size_t)hl }, { (void *)text, n }, { "\n", 1 } };
        ssize_t w = writev(m->log_fd, iov, 3);
        if (w > 0)
                m->log_size += (uint64_t)w;
}

/* Emit the complete lines in s->buf; with `flush`, the rest too. */
static void stream_emit(struct monitor *m, struct stream *s, bool flush)
{
        size_t start = 0;
        for (;;) {
                char *nl = memchr(s->buf + start, '\n', s->len - start);
                if (!nl)
                        break;
                size_t n = (size_t)(nl - (s->buf + start));
                log_record(m, s->name, false, s->buf + start, n);
                start += n + 1;
        }
        if (start < s->len && (flush || (start == 0 && s->len == sizeof(s->buf)))) {
                log_record(m, s->name, !flush, s->buf + start, s->len - start);
                start = s->len;
        }
        memmove(s->buf, s->buf + start, s->len - start);
        s->len -= start;
}

static void stream_read(struct monitor *m, struct stream *s)
{
        ssize_t n = read(s->fd, s->buf + s->len, sizeof(s->buf) - s->len);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return;
        if (n <= 0) {
                stream_emit(m, s, true);
                close(s->fd);
                s->fd = -1;
                return;
        }
        s->len += (size_t)n;
        stream_emit(m, s, false);
}

/* Run argv with stdio on /dev/null (stderr to `errfd` if >= 0); returns its wait status or -errno. */
static int run_wait(char *const argv[], int out_fd, int err_fd, const sigset_t *orig)
{
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
                dup2(devnull, STDIN_FILENO);
                dup2(out_fd >= 0 ? out_fd : devnull, STDOUT_FILENO);
                dup2(err_fd >= 0 ? err_fd : devnull, STDERR_FILENO);
                sigprocmask(SIG_SETMASK, orig, NULL);
                execvp(argv[0], argv);
                _exit(127);
        }
        int st;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return st;
}

static void sync_send(struct monitor *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sync_send(struct monitor *m, const char *fmt, ...)
{
        if (m->sync_fd < 0)
                return;
        char msg[4096];
        va_list ap;
        va_start(ap, fmt);
        int l = vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        write_all(m->sync_fd, msg, l < (int)sizeof(msg) ? (size_t)l : sizeof(msg) - 1);
}

/* The runtime's error: the last "msg" of its JSON log, or the log's last line. */
static void runtime_error(struct monitor *m, char *out, size_t n)
{
        snprintf(out, n, "the OCI runtime %s failed", m->runtime);
        int fd = openat(m->dirfd, "runtime.log", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        char buf[8192];
        off_t size = lseek(fd, 0, SEEK_END);
        off_t off = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
        ssize_t r = pread(fd, buf, sizeof(buf) - 1, off);
        close(fd);
        if (r <= 0)
                return;
        buf[r] = '\0';
        while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == ' '))
                buf[--r] = '\0';
        char *line = strrchr(buf, '\n');
        line = line ? line + 1 : buf;
        char *msg = strstr(line, "\"msg\":\"");
        if (msg) {
                msg += 7;
                char *end = msg;
                while (*end && !(*end == '"' && end[-1] != '\\'))
                        end++;
                *end = '\0';
                line = msg;
        }
        snprintf(out, n, "%.64s: %.1900s", m->runtime, line);
}

static int read_pid_file(struct monitor *m, pid_t *ret)
{
        int fd = openat(m->dirfd, "pid", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        char buf[32];
        ssize_t r = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (r <= 0)
                return -EINVAL;
        buf[r] = '\0';
        long v = strtol(buf, NULL, 10);
        if (v <= 0)
                return -EINVAL;
        *ret = (pid_t)v;
        return 0;
}

/* "oom_kill N" of cgroup v1 memory.oom_control, or cgroup2 memory.events. */
static bool oom_killed(const char *path)
{
        if (!path)
                return false;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        char buf[1024];
        ssize_t r = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (r <= 0)
                return false;
        buf[r] = '\0';
        char *p = strstr(buf, "oom_kill ");
        return p && strtoull(p + 9, NULL, 10) > 0;
}

static void write_state(struct monitor *m, const char *status, int wstatus, bool oom)
{
        char doc[512], ts[40];
        if (!strcmp(status, "running")) {
                snprintf(doc, sizeof(doc),
                         "{\"status\":\"running\",\"pid\":%d,\"monitor_pid\":%d,\"started_at\":\"%s\"}\n",
                         (int)m->init_pid, (int)getpid(), m->started_at);
        } else {
                timestamp(ts, sizeof(ts));
                int code = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
                int sig = WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0;
                snprintf(doc, sizeof(doc),
                         "{\"status\":\"exited\",\"pid\":0,\"last_pid\":%d,\"monitor_pid\":0,\"started_at\":"
                         "\"%s\",\"finished_at\":\"%s\",\"exit_code\":%d,\"signal\":%d,\"oom_killed\":%s}\n",
                         (int)m->init_pid, m->started_at, ts, code, sig, oom ? "true" : "false");
        }
        int r = write_file_atomic(m, "state.json", doc);
        if (r < 0)
                mlog(m, "cannot write state.json: %s", strerror(-r));
}

/*
 * What `RUNTIME delete` does for a container whose processes are all gone, without two more executions of
 * the runtime (about 15 ms here): remove its cgroup in every hierarchy and the runtime's state directory
 * (files only: crun keeps status, config.json, seccomp.bpf; runc state.json). Processes of the pid
 * namespace other than the init die asynchronously after it: rmdir says EBUSY until they are reaped, so
 * wait for that, boundedly. Any surprise returns < 0 and the caller runs the runtime's delete instead.
 */
static int native_delete(struct monitor *m)
{
        if (!m->cgroup_path || m->cgroup_path[0] != '/' || strstr(m->cgroup_path, ".."))
                return -EINVAL;
        DIR *d = opendir("/sys/fs/cgroup");
        if (!d)
                return -errno;
        int r = 0;
        struct dirent *de;
        char path[4096];
        /* v2 (the whole /sys/fs/cgroup is one hierarchy) or v1 (one hierarchy per entry). */
        snprintf(path, sizeof(path), "/sys/fs/cgroup%s", m->cgroup_path);
        bool v2 = access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0;
        while (r == 0 && (v2 || (de = readdir(d)))) {
                if (!v2) {
                        if (de->d_name[0] == '.')
                                continue;
                        snprintf(path, sizeof(path), "/sys/fs/cgroup/%s%s", de->d_name, m->cgroup_path);
                }
                for (int tries = 0;; tries++) {
                        if (rmdir(path) == 0 || errno == ENOENT || errno == ENOTDIR)
                                break;
                        if (errno != EBUSY || tries == 400) {
                                r = -errno;
                                break;
                        }
                        struct timespec ts = { .tv_nsec = 5 * 1000 * 1000 };
                        nanosleep(&ts, NULL);
                }
                if (v2)
                        break;
        }
        closedir(d);
        if (r < 0)
                return r;
        snprintf(path, sizeof(path), "%s/%s", m->root, m->id);
        int sfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sfd < 0)
                return errno == ENOENT ? 0 : -errno;
        DIR *sd = fdopendir(sfd);
        if (!sd) {
                close(sfd);
                return -errno;
        }
        while (r == 0 && (de = readdir(sd)))
                if (de->d_name[0] != '.' || (de->d_name[1] != '\0' && strcmp(de->d_name, "..") != 0))
                        if (unlinkat(dirfd(sd), de->d_name, 0) < 0)
                                r = -errno;
        closedir(sd);
        if (r == 0 && rmdir(path) < 0)
                r = -errno;
        return r;
}

static int64_t now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int usage_error(const char *what)
{
        /* Started only by berth, never by hand: a bad command line is a bug; say so on stderr. */
        fprintf(stderr, "berth-monitor: %s\n", what);
        return 2;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
                { "runtime", required_argument, NULL, 'r' },
                { "root", required_argument, NULL, 'R' },
                { "bundle", required_argument, NULL, 'b' },
                { "id", required_argument, NULL, 'i' },
                { "dir", required_argument, NULL, 'd' },
                { "sync-fd", required_argument, NULL, 's' },
                { "log-max", required_argument, NULL, 'm' },
                { "log-files", required_argument, NULL, 'n' },
                { "oom-file", required_argument, NULL, 'o' },
                { "autoremove", no_argument, NULL, 'a' },
                { "cgroup-path", required_argument, NULL, 'c' },
                { 0 },
        };
        struct monitor m = { .sync_fd = -1, .log_fd = -1, .log_max = 10 << 20, .log_files = 2 };
        bool autoremove = false;
        int c;
        while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
                switch (c) {
                case 'r':
                        m.runtime = optarg;
                        break;
                case 'R':
                        m.root = optarg;
                        break;
                case 'b':
                        m.bundle = optarg;
                        break;
                case 'i':
                        m.id = optarg;
                        break;
                case 'd':
                        m.dir = optarg;
                        break;
                case 's':
                        m.sync_fd = atoi(optarg);
                        break;
                case 'm':
                        m.log_max = strtoull(optarg, NULL, 10);
                        break;
                case 'n':
                        m.log_files = (unsigned)atoi(optarg);
                        break;
                case 'o':
                        m.oom_file = optarg;
                        break;
                case 'a':
                        autoremove = true;
                        break;
                case 'c':
                        m.cgroup_path = optarg;
                        break;
                default:
                        return usage_error("bad option");
                }
        }
        if (!m.runtime || !m.root || !m.bundle || !m.id || !m.dir || m.log_max < 4096 || m.log_files < 1 ||
            m.log_files > 100)
                return usage_error("--runtime, --root, --bundle, --id and --dir are required");
        if (autoremove) {
                if (optind >= argc)
                        return usage_error("--autoremove needs the command after --");
                m.autoremove = argv + optind;
        }
        if (m.sync_fd >= 0)
                fcntl(m.sync_fd, F_SETFD, FD_CLOEXEC);

        m.dirfd = open(m.dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (m.dirfd < 0) {
                sync_send(&m, "error cannot open %s: %s", m.dir, strerror(errno));
                return 1;
        }
        /* An OFD lock: others test it with F_OFD_GETLK without ever taking it. */
        int lockfd = openat(m.dirfd, "monitor.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        if (lockfd < 0 || fcntl(lockfd, F_OFD_SETLK, &fl) < 0) {
                sync_send(&m, "error container %s already has a monitor", m.id);
                return 1;
        }
        /* Signals arrive through a signalfd; the runtime and the container get the original mask. */
        sigset_t mask, orig;
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, &orig);
        signal(SIGPIPE, SIG_IGN);
        int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sfd < 0 || prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
                sync_send(&m, "error monitor setup: %s", strerror(errno));
                return 1;
        }
        int outp[2], errp[2];
        if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
                sync_send(&m, "error pipe: %s", strerror(errno));
                return 1;
        }
        int r = log_open(&m);
        if (r < 0) {
                sync_send(&m, "error cannot open container.log: %s", strerror(-r));
                return 1;
        }
        unlinkat(m.dirfd, "pid", 0);
        unlinkat(m.dirfd, "runtime.log", 0);
        char pidfile[4096], logfile[4096];
        snprintf(pidfile, sizeof(pidfile), "%s/pid", m.dir);
        snprintf(logfile, sizeof(logfile), "--log=%s/runtime.log", m.dir);
        char *rargv[] = { (char *)m.runtime,
                          "--root",
                          (char *)m.root,
                          logfile,
                          "--log-format=json",
                          "run",
                          "--detach",
                          "--pid-file",
                          pidfile,
                          "--bundle",
                          (char *)m.bundle,
                          (char *)m.id,
                          NULL };
        timestamp(m.started_at, sizeof(m.started_at));
        /* The runtime's own stdout/stderr are the container's: the pipes. */
        int st = run_wait(rargv, outp[1], errp[1], &orig);
        close(outp[1]);
        close(errp[1]);
        char emsg[2048];
        if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                if (st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 127)
                        snprintf(emsg, sizeof(emsg), "cannot execute the OCI runtime \"%s\"", m.runtime);
                else
                        runtime_error(&m, emsg, sizeof(emsg));
                sync_send(&m, "error %s", emsg);
                return 1;
        }
        if ((r = read_pid_file(&m, &m.init_pid)) < 0) {
                sync_send(&m, "error %s wrote no pid file: %s", m.runtime, strerror(-r));
                return 1;
        }
        write_state(&m, "running", 0, false);
        sync_send(&m, "ok %d %d\n", (int)m.init_pid, (int)getpid());
        /* Detached from whoever started it: its stdio is /dev/null from here on. */
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (devnull >= 0) {
                dup2(devnull, STDIN_FILENO);
                dup2(devnull, STDOUT_FILENO);
                dup2(devnull, STDERR_FILENO);
                close(devnull);
        }

        static struct stream streams[2];
        streams[0] = (struct stream){ .name = "stdout", .fd = outp[0] };
        streams[1] = (struct stream){ .name = "stderr", .fd = errp[0] };
        bool exited = false;
        int wstatus = 0;
        int64_t deadline = -1;
        while (!exited || streams[0].fd >= 0 || streams[1].fd >= 0) {
                struct pollfd pfd[3] = { { .fd = sfd, .events = POLLIN },
                                         { .fd = streams[0].fd, .events = POLLIN },
                                         { .fd = streams[1].fd, .events = POLLIN } };
                int timeout = -1;
                if (exited) {
                        int64_t left = deadline - now_ms();
                        if (left <= 0)
                                break;
                        timeout = (int)left;
                }
                int n = poll(pfd, 3, timeout);
                if (n < 0 && errno != EINTR)
                        break;
                for (int i = 0; i < 2; i++)
                        if (streams[i].fd >= 0 && (pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
                                stream_read(&m, &streams[i]);
                if (pfd[0].revents & POLLIN) {
                        struct signalfd_siginfo si;
                        while (read(sfd, &si, sizeof(si)) == sizeof(si))
                                ; /* SIGTERM/SIGINT/SIGHUP: the monitor stays with its container */
                        pid_t p;
                        int s;
                        while ((p = waitpid(-1, &s, WNOHANG)) > 0)
                                if (p == m.init_pid && !exited) {
                                        exited = true;
                                        wstatus = s;
                                        deadline = now_ms() + DRAIN_MS;
                                }
                }
        }
        for (int i = 0; i < 2; i++)
                if (streams[i].fd >= 0) {
                        stream_emit(&m, &streams[i], true);
                        close(streams[i].fd);
                }
        bool oom = oom_killed(m.oom_file);
        if ((r = native_delete(&m)) < 0) {
                char *dargv[] = { (char *)m.runtime, "--root", (char *)m.root, "delete", "-f",
                                  (char *)m.id,      NULL };
                mlog(&m, "removing the cgroups and runtime state myself failed (%s); running %s delete",
                     strerror(-r), m.runtime);
                st = run_wait(dargv, -1, -1, &orig);
                if (st != 0)
                        mlog(&m, "%s delete %s failed (status %d)", m.runtime, m.id, st);
        }
        write_state(&m, "exited", wstatus, oom);
        /* An attached starter learns the exit status here (a detached one closed its end: EPIPE, ignored). */
        sync_send(&m, "exit %d\n", WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus));
        if (m.log_fd >= 0)
                close(m.log_fd);
        if (m.autoremove) {
                /*
                 * An attached starter that is still there answers "rm" and removes the container itself (no
                 * second berth process on the hot path of `run --rm`); EOF (detached, or it died) means the
                 * monitor does it.
                 */
                char answer[8] = "";
                ssize_t n = -1;
                if (m.sync_fd >= 0)
                        while ((n = read(m.sync_fd, answer, sizeof(answer) - 1)) < 0 && errno == EINTR)
                                ;
                if (n > 0 && !strncmp(answer, "rm\n", 3))
                        return 0;
                sigprocmask(SIG_SETMASK, &orig, NULL);
                execv(m.autoremove[0], m.autoremove);
                mlog(&m, "cannot execute %s: %s", m.autoremove[0], strerror(errno));
                return 1;
        }
        return 0;
}
