/* SPDX-License-Identifier: Apache-2.0 */
/* `berth run`: create and start a container; in the foreground stream its output and exit with its code. */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cell/container.h"
#include "cli/cli.h"
#include "lib/fs.h"
#include "lib/json.h"
#include "lib/strv.h"

static void run_usage(FILE *f)
{
        fprintf(f,
                "Usage: berth run [--rm] [-d] [--name N] [-e K=V]... [--env-file F] [-m 256M] [--disk 1G]\n"
                "                 [--pids N] [-p [IP:]HOSTPORT:PORT[/udp]]... [--network bridge|none]\n"
                "                 [--user U] [--workdir D] [--entrypoint E] [--runtime crun|runc]\n"
                "                 IMAGE [CMD...]\n\n"
                "Pulls IMAGE if needed and runs it in its own user, pid, mount, network, uts, ipc and\n"
                "cgroup namespaces under a berth-monitor. In the foreground it streams the output and\n"
                "exits with the container's exit code; with -d it prints the container id.\n");
}

/* As docker: "K=V" as given; "K" alone takes the caller's value, and is skipped when the caller has none. */
static void env_add(struct strv *env, const char *item)
{
        if (strchr(item, '=')) {
                strv_push(env, xstrdup(item));
                return;
        }
        const char *v = getenv(item);
        if (v)
                strv_push(env, xasprintf("%s=%s", item, v));
}

/*
 * Docker's --env-file: one env_add() item per line; blank lines and lines starting with '#' are ignored.
 * At most 1 MiB.
 */
static int read_env_file(const char *path, struct strv *env, struct berr **err)
{
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = fs_read_file_at(AT_FDCWD, path, 1 << 20, &buf, &len);
        if (r < 0)
                return berr_set_errno(err, r, "--env-file %s", path);
        if (strlen(buf) != len)
                return berr_set(err, -EINVAL, "--env-file %s: contains a NUL byte", path);
        size_t lineno = 0;
        char *save = NULL;
        for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                lineno++;
                line += strspn(line, " \t");
                size_t l = strlen(line);
                while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t'))
                        line[--l] = '\0';
                if (l == 0 || line[0] == '#')
                        continue;
                if (line[0] == '=')
                        return berr_set(err, -EINVAL, "--env-file %s line %zu: variable name is empty", path,
                                        lineno);
                env_add(env, line);
        }
        return 0;
}

/* "256M", "1G", "512k", "1048576" → bytes; 0 on error. */
uint64_t cli_parse_size(const char *s)
{
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || v == 0)
                return 0;
        uint64_t mult = 1;
        switch (*end) {
        case 'k':
        case 'K':
                mult = 1ULL << 10;
                end++;
                break;
        case 'm':
        case 'M':
                mult = 1ULL << 20;
                end++;
                break;
        case 'g':
        case 'G':
                mult = 1ULL << 30;
                end++;
                break;
        case '\0':
                break;
        default:
                return 0;
        }
        if (*end == 'b' || *end == 'B')
                end++;
        if (*end != '\0' || v > UINT64_MAX / mult)
                return 0;
        return v * mult;
}

static void remove_quietly(struct image_store *s, struct cell *cell, const char *id)
{
        _cleanup_berr_ struct berr *e = NULL;
        cell_container_remove(cell, s, id, true, &e);
}

static int print_record(int stream, const char *time, const char *text, size_t len, void *ud)
{
        (void)time, (void)ud;
        FILE *f = stream == 2 ? stderr : stdout;
        if (fwrite(text, 1, len, f) != len)
                return -EIO;
        /* Interleaving of the two streams follows the container's: flush at record ends. */
        if (len && text[len - 1] == '\n')
                fflush(f);
        return 0;
}

/*
 * Foreground: open the log before the start (an instant exit must not lose a line), proxy SIGINT/SIGTERM/
 * SIGHUP/SIGQUIT to the container as docker's sig-proxy does, stream until the monitor ends, return the
 * container's exit code (docker's 125/126/127 when it could not start).
 */
static int run_attached(struct image_store *s, struct cell *cell, const char *id, bool autoremove,
                        struct berr **err)
{
        _cleanup_free_ char *logp = cell_container_log_path(cell, id);
        _cleanup_close_ int logfd = open(logp, O_RDONLY | O_CREAT | O_CLOEXEC, 0640);
        if (logfd < 0)
                return berr_set_errno(err, -errno, "open %s", logp), CLI_EXIT_FAILURE;
        sigset_t mask, orig;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGQUIT);
        sigprocmask(SIG_BLOCK, &mask, &orig);
        _cleanup_close_ int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        struct cell_attach a = { .monitor_pid = -1, .sync_fd = -1 };
        if (cell_container_start(cell, id, &a, err) < 0) {
                sigprocmask(SIG_SETMASK, &orig, NULL);
                if (autoremove)
                        remove_quietly(s, cell, id);
                const char *m = berr_msg(*err);
                if (strstr(m, "executable file not found") || strstr(m, "No such file or directory"))
                        return 127;
                if (strstr(m, "ermission denied") || strstr(m, "Operation not permitted"))
                        return 126;
                return 125;
        }
        struct cell_log_opts lo = {
                .tail = -1, .follow = true, .log_fd = logfd, .end_fd = a.sync_fd, .proxy_signal_fd = sfd
        };
        _cleanup_berr_ struct berr *lerr = NULL;
        if (cell_container_logs(cell, id, &lo, print_record, NULL, &lerr) < 0)
                fprintf(stderr, "berth: logs of %.12s: %s\n", id, berr_msg(lerr));
        fflush(stdout);
        int code = 0;
        int r = cell_container_wait_child(cell, id, &a, autoremove, &code, err);
        if (r == 0 && autoremove)
                remove_quietly(s, cell, id);
        sigprocmask(SIG_SETMASK, &orig, NULL);
        return r < 0 ? CLI_EXIT_FAILURE : code;
}

int cmd_run(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const struct option opts[] = {
                { "rm", no_argument, NULL, 'R' },
                { "name", required_argument, NULL, 'n' },
                { "env", required_argument, NULL, 'e' },
                { "memory", required_argument, NULL, 'm' },
                { "pids", required_argument, NULL, 'P' },
                { "user", required_argument, NULL, 'u' },
                { "workdir", required_argument, NULL, 'w' },
                { "entrypoint", required_argument, NULL, 'E' },
                { "runtime", required_argument, NULL, 'r' },
                { "detach", no_argument, NULL, 'd' },
                { "env-file", required_argument, NULL, 'F' },
                { "disk", required_argument, NULL, 'D' },
                { "publish", required_argument, NULL, 'p' },
                { "network", required_argument, NULL, 'N' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        struct cell_create_opts o = { 0 };
        const char *runtime = NULL;
        bool detach = false;
        struct cell_port_map ports[64];
        /* Declared before any goto: the cleanup attributes run at every exit. */
        _cleanup_(store_closep) struct image_store *s = NULL;
        _cleanup_(cell_closep) struct cell *cell = NULL;
        _cleanup_free_ char *id = NULL;
        _cleanup_json_ json_t *img = NULL;
        struct strv env = { 0 };
        char *entry[2] = { NULL, NULL };
        int c, rc = CLI_EXIT_USAGE;
        optind = 0;
        /* '+': options end at the image name; the command after it is the container's. */
        while ((c = getopt_long(argc, argv, "+e:m:u:w:p:dh", opts, NULL)) != -1) {
                switch (c) {
                case 'R':
                        o.autoremove = true;
                        break;
                case 'n':
                        o.name = optarg;
                        break;
                case 'e':
                        env_add(&env, optarg);
                        break;
                case 'm':
                        if (!(o.memory_bytes = cli_parse_size(optarg))) {
                                berr_set(err, -EINVAL, "invalid memory size \"%s\" (use e.g. 256M or 1G)",
                                         optarg);
                                goto out;
                        }
                        break;
                case 'P':
                        if (!(o.pids = cli_parse_size(optarg))) {
                                berr_set(err, -EINVAL, "invalid --pids \"%s\"", optarg);
                                goto out;
                        }
                        break;
                case 'u':
                        o.process.user = optarg;
                        break;
                case 'w':
                        if (optarg[0] != '/') {
                                berr_set(err, -EINVAL, "--workdir must be an absolute path");
                                goto out;
                        }
                        o.process.workdir = optarg;
                        break;
                case 'E':
                        entry[0] = *optarg ? optarg : NULL;
                        o.process.entrypoint = entry;
                        o.process.entrypoint_set = true;
                        break;
                case 'r':
                        if (strcmp(optarg, "crun") != 0 && strcmp(optarg, "runc") != 0 && optarg[0] != '/') {
                                berr_set(err, -EINVAL, "--runtime must be crun, runc or an absolute path");
                                goto out;
                        }
                        runtime = optarg;
                        break;
                case 'D':
                        if (!(o.disk_bytes = cli_parse_size(optarg))) {
                                berr_set(err, -EINVAL, "invalid disk size \"%s\" (use e.g. 1G)", optarg);
                                goto out;
                        }
                        break;
                case 'p':
                        if (o.n_ports == ARRAY_SIZE(ports)) {
                                berr_set(err, -EINVAL, "at most %zu port mappings", ARRAY_SIZE(ports));
                                goto out;
                        }
                        if (cli_parse_port(optarg, &ports[o.n_ports], err) < 0)
                                goto out;
                        o.n_ports++;
                        break;
                case 'N':
                        if (!strcmp(optarg, "none")) {
                                o.network = CELL_NET_NONE;
                        } else if (!strcmp(optarg, "bridge")) {
                                o.network = CELL_NET_BRIDGE;
                        } else {
                                berr_set(err, -EINVAL, "--network must be bridge or none");
                                goto out;
                        }
                        break;
                case 'F':
                        if (read_env_file(optarg, &env, err) < 0)
                                goto out;
                        break;
                case 'd':
                        detach = true;
                        break;
                case 'h':
                        run_usage(stdout);
                        rc = 0;
                        goto out;
                default:
                        goto out;
                }
        }
        if (optind >= argc) {
                run_usage(stderr);
                goto out;
        }
        o.image = argv[optind];
        o.process.cmd = optind + 1 < argc ? argv + optind + 1 : NULL;
        o.process.env = env.v;
        rc = CLI_EXIT_FAILURE;
        if (store_open(g->data_dir, g->config, &s, err) < 0)
                goto out;
        if (store_inspect(s, o.image, &img, NULL) < 0) {
#ifdef BERTH_LIGHT
                /* This binary has no registry client: `berth-image image pull`, its output on stderr. */
                char *pull[] = { "image", "pull", (char *)o.image, NULL };
                int st = cli_run_full(g, pull, STDERR_FILENO);
                if (st != 0)
                        goto out; /* it said why */
#else
                struct progress_ui *ui = progress_ui_new_on(stderr, false);
                struct pull_opts po = { .progress = progress_ui_event, .progress_userdata = ui };
                int r = store_pull(s, o.image, &po, NULL, err);
                progress_ui_free(ui);
                if (r < 0)
                        goto out;
#endif
        }
        o.ports = ports;
        if (cli_cell_open(g, runtime, &cell, err) < 0)
                goto out;
        cell_sweep(cell, s);
        if (cell_container_create(cell, s, &o, &id, err) < 0)
                goto out;
        /* The store stays open (directory fds, no lock) for the removal of a --rm container. */
        if (detach) {
                if (cell_container_start(cell, id, NULL, err) < 0) {
                        if (o.autoremove)
                                remove_quietly(s, cell, id);
                        goto out;
                }
                printf("%s\n", id);
                rc = 0;
                goto out;
        }
        rc = run_attached(s, cell, id, o.autoremove, err);
out:
        strv_clear(&env);
        return rc;
}
