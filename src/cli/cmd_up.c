/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `berth up`: a whole single-node platform in the foreground. The controller, the cell agent and the router
 * run as child processes (this executable again, as `berth controller|cell|router`), each restartable on its
 * own; their output is prefixed with their name. SIGINT/SIGTERM stops the router, then the controller, then
 * the cell (which drains its instances), and exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "lib/fs.h"
#include "lib/http_client.h"
#include "lib/json.h"
#include "lib/macro.h"
#include "lib/strv.h"

enum { C_CONTROLLER, C_CELL, C_ROUTER, N_CHILDREN };

/* Restarts: the first at once, then 0.5 s doubling to 10 s while a child keeps dying within 10 s. */
#define UP_BACKOFF_MIN_MS 500u
#define UP_BACKOFF_MAX_MS 10000u
#define UP_STABLE_MS      10000u

struct child {
        const char *name;
        char **argv; /* owned */
        pid_t pid;   /* 0: not running */
        int out_fd;  /* read end of its stdout+stderr, -1 when closed */
        char line[4096];
        size_t line_len;
        uint64_t started_ms;
        uint64_t restart_at_ms; /* 0: none pending */
        unsigned backoff_ms;
};

static uint64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void emit_line(struct child *c, const char *s, size_t n)
{
        fprintf(stderr, "%-10s | %.*s\n", c->name, (int)n, s);
}

/* Forward a child's output line by line (a line longer than the buffer is split). */
static void drain_output(struct child *c)
{
        char buf[8192];
        ssize_t n = read(c->out_fd, buf, sizeof(buf));
        if (n <= 0) {
                if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                        if (c->line_len)
                                emit_line(c, c->line, c->line_len);
                        c->line_len = 0;
                        close(c->out_fd);
                        c->out_fd = -1;
                }
                return;
        }
        for (ssize_t i = 0; i < n; i++) {
                if (buf[i] == '\n' || c->line_len == sizeof(c->line)) {
                        emit_line(c, c->line, c->line_len);
                        c->line_len = 0;
                        if (buf[i] == '\n')
                                continue;
                }
                c->line[c->line_len++] = buf[i];
        }
        fflush(stderr);
}

static int spawn(struct child *c, const sigset_t *oldmask)
{
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0) {
                int e = -errno;
                close(p[0]);
                close(p[1]);
                return e;
        }
        if (pid == 0) {
                sigprocmask(SIG_SETMASK, oldmask, NULL);
                setpgid(0, 0);
                /* If `berth up` dies, its platform stops with it (the cell drains). */
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                dup2(p[1], STDOUT_FILENO);
                dup2(p[1], STDERR_FILENO);
                int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (devnull >= 0)
                        dup2(devnull, STDIN_FILENO);
                execv(c->argv[0], c->argv);
                fprintf(stderr, "execute %s: %s\n", c->argv[0], strerror(errno));
                _exit(127);
        }
        close(p[1]);
        fcntl(p[0], F_SETFL, O_NONBLOCK);
        if (c->out_fd >= 0)
                close(c->out_fd);
        c->out_fd = p[0];
        c->pid = pid;
        c->started_ms = mono_ms();
        c->restart_at_ms = 0;
        return 0;
}

static char *self_full(void)
{
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
                return xstrdup("berth-image");
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
                *slash = '\0';
        return xasprintf("%s/berth-image", exe);
}

/* Ready: the API answers and a live cell has registered (so a first push can place instances). */
static bool platform_ready(struct http_client *hc, const char *url, const char *token)
{
        struct http_result r = { 0 };
        _cleanup_free_ char *u = xasprintf("%s/v3/info", url);
        bool ok = http_request(hc, "GET", u, NULL, NULL, NULL, 0, &r, NULL) == 0 && r.status == 200;
        http_result_free(&r);
        if (!ok)
                return false;
        http_client_set_bearer(hc, token);
        _cleanup_free_ char *cu = xasprintf("%s/internal/v1/cells", url);
        long st = 0;
        _cleanup_json_ json_t *j = NULL;
        ok = http_request_json(hc, "GET", cu, NULL, &st, &j, NULL) == 0 && st == 200;
        http_client_set_bearer(hc, NULL);
        size_t i;
        json_t *cell;
        bool live = false;
        json_array_foreach (json_object_get(j, "cells"), i, cell)
                live = live || json_is_true(json_object_get(cell, "live"));
        return ok && live;
}

/* Stop one child: SIGTERM to its process group, SIGKILL after timeout_ms; forwards its output meanwhile. */
static void stop_child(struct child *c, unsigned timeout_ms)
{
        if (c->pid <= 0)
                return;
        kill(c->pid, SIGTERM);
        uint64_t until = mono_ms() + timeout_ms;
        bool killed = false;
        for (;;) {
                int st;
                pid_t w = waitpid(c->pid, &st, WNOHANG);
                if (w == c->pid)
                        break;
                uint64_t now = mono_ms();
                if (now >= until && !killed) {
                        fprintf(stderr, "berth up: %s did not stop in %u s: killing it\n", c->name,
                                timeout_ms / 1000);
                        kill(-c->pid, SIGKILL);
                        kill(c->pid, SIGKILL);
                        killed = true;
                }
                struct pollfd p = { .fd = c->out_fd, .events = POLLIN };
                if (c->out_fd >= 0 && poll(&p, 1, 50) > 0)
                        drain_output(c);
                else if (c->out_fd < 0)
                        usleep(20000);
        }
        while (c->out_fd >= 0)
                drain_output(c);
        c->pid = 0;
}

int cmd_up(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const struct option opts[] = {
                { "api-port", required_argument, NULL, 'a' },
                { "router-port", required_argument, NULL, 'r' },
                { "cell-port", required_argument, NULL, 'c' },
                { "domain", required_argument, NULL, 'd' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        long api_port = 9022, router_port = 9080, cell_port = 9023;
        const char *domain = "apps.localhost";
        int o;
        optind = 0;
        while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                long *pp = o == 'a' ? &api_port : o == 'r' ? &router_port : o == 'c' ? &cell_port : NULL;
                if (pp) {
                        char *end;
                        *pp = strtol(optarg, &end, 10);
                        if (*end || *pp < 1 || *pp > 65535) {
                                berr_set(err, -EINVAL, "invalid port \"%s\"", optarg);
                                return CLI_EXIT_USAGE;
                        }
                } else if (o == 'd')
                        domain = optarg;
                else if (o == 'h') {
                        printf("Usage: berth [--data-dir D] [--config F] up [--api-port P] [--router-port P] "
                               "[--cell-port P] [--domain D]\n\n"
                               "Run a single-node platform (controller, cell, router) in the foreground.\n");
                        return 0;
                } else
                        return CLI_EXIT_USAGE;
        }
        if (optind != argc) {
                berr_set(err, -EINVAL, "berth up takes no arguments (see 'berth up --help')");
                return CLI_EXIT_USAGE;
        }
        if (fs_mkdir_p_at(AT_FDCWD, g->data_dir, 0711) < 0) {
                berr_set(err, -EIO, "create %s", g->data_dir);
                return CLI_EXIT_FAILURE;
        }
        _cleanup_free_ char *token_file = g->config->internal_token_file
                                              ? xstrdup(g->config->internal_token_file)
                                              : xasprintf("%s/internal-token", g->data_dir);
        if (access(token_file, F_OK) != 0) {
                unsigned char raw[32];
                char hex[65];
                int rfd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
                if (rfd < 0 || read(rfd, raw, sizeof(raw)) != (ssize_t)sizeof(raw)) {
                        if (rfd >= 0)
                                close(rfd);
                        berr_set(err, -EIO, "read /dev/urandom");
                        return CLI_EXIT_FAILURE;
                }
                close(rfd);
                for (size_t i = 0; i < sizeof(raw); i++)
                        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
                int fd = open(token_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (fd < 0 || write(fd, hex, 64) != 64) {
                        berr_set_errno(err, -errno, "write %s", token_file);
                        if (fd >= 0)
                                close(fd);
                        return CLI_EXIT_FAILURE;
                }
                close(fd);
        }
        _cleanup_free_ char *self = self_full();
        _cleanup_free_ char *api = xasprintf("http://127.0.0.1:%ld", api_port);
        _cleanup_free_ char *api_listen = xasprintf("127.0.0.1:%ld", api_port);
        _cleanup_free_ char *cell_listen = xasprintf("127.0.0.1:%ld", cell_port);
        _cleanup_free_ char *cell_url = xasprintf("http://127.0.0.1:%ld", cell_port);
        _cleanup_free_ char *router_listen = xasprintf("127.0.0.1:%ld", router_port);
        struct child ch[N_CHILDREN] = { { .name = "controller" }, { .name = "cell" }, { .name = "router" } };
        for (int i = 0; i < N_CHILDREN; i++) {
                struct strv a = { 0 };
                strv_push(&a, xstrdup(self));
                strv_push(&a, xstrdup("--data-dir"));
                strv_push(&a, xstrdup(g->data_dir));
                if (g->config_explicit) {
                        strv_push(&a, xstrdup("--config"));
                        strv_push(&a, xstrdup(g->config_path));
                }
                strv_push(&a, xstrdup(ch[i].name));
                strv_push(&a, xstrdup("--internal-token-file"));
                strv_push(&a, xstrdup(token_file));
                if (i == C_CONTROLLER) {
                        const char *v[] = {
                                "--listen", api_listen, "--external-url", api, "--domain", domain
                        };
                        for (size_t k = 0; k < ARRAY_SIZE(v); k++)
                                strv_push(&a, xstrdup(v[k]));
                } else if (i == C_CELL) {
                        const char *v[] = { "--listen",     cell_listen, "--url",          cell_url,
                                            "--controller", api,         "--drain-on-exit" };
                        for (size_t k = 0; k < ARRAY_SIZE(v); k++)
                                strv_push(&a, xstrdup(v[k]));
                } else {
                        const char *v[] = { "--listen", router_listen, "--controller", api };
                        for (size_t k = 0; k < ARRAY_SIZE(v); k++)
                                strv_push(&a, xstrdup(v[k]));
                }
                ch[i].argv = strv_take(&a);
                ch[i].out_fd = -1;
                ch[i].backoff_ms = 0;
        }

        sigset_t mask, oldmask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, &oldmask);
        int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        int rc = 0;
        _cleanup_(http_client_freep) struct http_client *hc = NULL; /* before any goto (clang) */
        for (int i = 0; i < N_CHILDREN; i++) {
                int r = spawn(&ch[i], &oldmask);
                if (r < 0) {
                        berr_set_errno(err, r, "start the %s", ch[i].name);
                        rc = CLI_EXIT_FAILURE;
                        goto stop;
                }
        }
        fprintf(stderr, "berth up: controller (%s), cell (%s), router (http://%s) starting; data in %s\n",
                api, cell_url, router_listen, g->data_dir);
        struct http_client_opts hco = { .timeout_ms = 1000, .connect_timeout_ms = 500 };
        if (http_client_new(&hco, &hc, err) < 0) {
                rc = CLI_EXIT_FAILURE;
                goto stop;
        }
        bool announced = false;
        uint64_t next_probe = 0;
        for (;;) {
                struct pollfd p[N_CHILDREN + 1];
                p[0] = (struct pollfd){ .fd = sfd, .events = POLLIN };
                for (int i = 0; i < N_CHILDREN; i++)
                        p[i + 1] = (struct pollfd){ .fd = ch[i].out_fd, .events = POLLIN };
                int timeout = announced ? 500 : 100;
                uint64_t t0 = mono_ms();
                for (int i = 0; i < N_CHILDREN; i++)
                        if (ch[i].pid == 0 && ch[i].restart_at_ms)
                                timeout = (int)MIN((uint64_t)timeout,
                                                   ch[i].restart_at_ms > t0 ? ch[i].restart_at_ms - t0 : 0);
                if (poll(p, N_CHILDREN + 1, timeout) < 0 && errno != EINTR)
                        break;
                for (int i = 0; i < N_CHILDREN; i++)
                        if (ch[i].out_fd >= 0 && (p[i + 1].revents & (POLLIN | POLLHUP)))
                                drain_output(&ch[i]);
                struct signalfd_siginfo si;
                bool stop = false;
                while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                        if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM)
                                stop = true;
                if (stop)
                        break;
                uint64_t now = mono_ms();
                for (int i = 0; i < N_CHILDREN; i++) {
                        int st;
                        if (ch[i].pid > 0 && waitpid(ch[i].pid, &st, WNOHANG) == ch[i].pid) {
                                /*
                                 * A child that had been up a while (killed, crashed once) comes back at
                                 * once: the router's and the API's clients see the shortest gap. One that
                                 * keeps dying backs off (0.5 s doubling to 10 s) instead of spinning.
                                 */
                                if (now - ch[i].started_ms > UP_STABLE_MS)
                                        ch[i].backoff_ms = 0;
                                fprintf(stderr, "berth up: the %s exited (%s %d); restarting it in %.1f s\n",
                                        ch[i].name, WIFEXITED(st) ? "status" : "signal",
                                        WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
                                        ch[i].backoff_ms / 1000.0);
                                ch[i].pid = 0;
                                ch[i].restart_at_ms = now + ch[i].backoff_ms;
                                ch[i].backoff_ms = ch[i].backoff_ms
                                                       ? MIN(ch[i].backoff_ms * 2, UP_BACKOFF_MAX_MS)
                                                       : UP_BACKOFF_MIN_MS;
                        }
                        if (ch[i].pid == 0 && ch[i].restart_at_ms && now >= ch[i].restart_at_ms) {
                                int r = spawn(&ch[i], &oldmask);
                                if (r < 0) {
                                        fprintf(stderr, "berth up: cannot restart the %s: %s\n", ch[i].name,
                                                strerror(-r));
                                        ch[i].restart_at_ms = now + UP_BACKOFF_MAX_MS;
                                }
                        }
                }
                if (!announced && now >= next_probe) {
                        next_probe = now + 200;
                        _cleanup_free_ char *token = NULL;
                        size_t tlen = 0;
                        if (fs_read_file_at(AT_FDCWD, token_file, 4096, &token, &tlen) == 0 &&
                            (token[strcspn(token, " \r\n")] = '\0', platform_ready(hc, api, token))) {
                                announced = true;
                                printf("berth is up.\n\n"
                                       "  API:     %s\n"
                                       "  apps:    http://<app>.%s:%ld/ (the router)\n"
                                       "  admin password: %s/admin-password\n\n"
                                       "Next:\n"
                                       "  berth login -a %s -u admin -p \"$(cat %s/admin-password)\"\n"
                                       "  berth enable-feature-flag diego_docker\n"
                                       "  berth push APP --docker-image REF\n\n"
                                       "Stop with Ctrl-C.\n",
                                       api, domain, router_port, g->data_dir, api, g->data_dir);
                                fflush(stdout);
                        }
                }
        }
stop:
        fprintf(stderr, "berth up: stopping\n");
        stop_child(&ch[C_ROUTER], 10000);
        stop_child(&ch[C_CONTROLLER], 10000);
        stop_child(&ch[C_CELL], 30000);
        for (int i = 0; i < N_CHILDREN; i++) {
                if (ch[i].out_fd >= 0)
                        close(ch[i].out_fd);
                strv_free(ch[i].argv);
        }
        if (sfd >= 0)
                close(sfd);
        sigprocmask(SIG_SETMASK, &oldmask, NULL);
        fprintf(stderr, "berth up: stopped\n");
        return rc;
}
