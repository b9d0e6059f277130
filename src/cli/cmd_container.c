/* SPDX-License-Identifier: Apache-2.0 */
/* Container commands: ps, logs, exec, stop, kill, rm, inspect (`run` is in cmd_run.c). */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cell/container.h"
#include "cli/cli.h"
#include "lib/json.h"
#include "lib/strv.h"

int cli_cell_open(struct cli_globals *g, const char *runtime, struct cell **ret, struct berr **err)
{
        const struct berth_config *bc = g->config;
        struct cell_config cc = {
                .data_dir = g->data_dir,
                .runtime = runtime ? runtime : bc->cell_runtime,
                .config_path = g->config_explicit ? g->config_path : NULL,
                .log_max_bytes = bc->cell_log_max_bytes,
                .log_files = (unsigned)bc->cell_log_files,
                .disk_pool_bytes = bc->cell_disk_pool_bytes,
                .net = { .bridge = bc->cell_bridge,
                         .nft_table = bc->cell_nft_table,
                         .subnet = bc->cell_subnet,
                         .ipv6 = bc->cell_ipv6,
                         .allow_host_ports = bc->cell_allow_host_ports,
                         .n_allow_host_ports = bc->n_cell_allow_host_ports },
        };
        return cell_open(&cc, ret, err);
}

bool cli_container_exists(struct cli_globals *g, const char *name)
{
        if (!name || !*name || strchr(name, '/') || name[0] == '.' || strlen(name) > 128)
                return false;
        _cleanup_free_ char *link = xasprintf("%s/cell/names/%s", g->data_dir, name);
        struct stat st;
        if (lstat(link, &st) == 0)
                return true;
        size_t n = strlen(name);
        if (n < 3 || strspn(name, "0123456789abcdef") != n)
                return false;
        _cleanup_free_ char *dir = xasprintf("%s/cell/containers", g->data_dir);
        DIR *d = opendir(dir);
        bool found = false;
        struct dirent *de;
        while (d && !found && (de = readdir(d)))
                found = strncmp(de->d_name, name, n) == 0;
        if (d)
                closedir(d);
        return found;
}

static int parse_port_num(const char *s, uint16_t *ret)
{
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < 1 || v > 65535)
                return -EINVAL;
        *ret = (uint16_t)v;
        return 0;
}

int cli_parse_port(const char *spec, struct cell_port_map *ret, struct berr **err)
{
        /* [IP:]HOSTPORT:PORT[/tcp|/udp] */
        char buf[128];
        if (strlen(spec) >= sizeof(buf))
                return berr_set(err, -EINVAL, "invalid port mapping \"%.64s\"", spec);
        snprintf(buf, sizeof(buf), "%s", spec);
        *ret = (struct cell_port_map){ .proto = IPPROTO_TCP };
        char *slash = strchr(buf, '/');
        if (slash) {
                *slash++ = '\0';
                if (!strcmp(slash, "udp"))
                        ret->proto = IPPROTO_UDP;
                else if (strcmp(slash, "tcp") != 0)
                        return berr_set(err, -EINVAL,
                                        "invalid port mapping \"%s\": protocol must be tcp or udp", spec);
        }
        char *parts[3] = { NULL };
        size_t n = 0;
        for (char *p = buf; n < 3; n++) {
                parts[n] = p;
                char *colon = strchr(p, ':');
                if (!colon) {
                        n++;
                        break;
                }
                *colon = '\0';
                p = colon + 1;
                if (n == 2)
                        return berr_set(err, -EINVAL, "invalid port mapping \"%s\"", spec);
        }
        if (n < 2)
                return berr_set(
                    err, -EINVAL,
                    "invalid port mapping \"%s\": use HOSTPORT:PORT (e.g. -p 8080:80) or IP:HOSTPORT:PORT",
                    spec);
        const char *hp = parts[n - 2], *cp = parts[n - 1];
        if (parse_port_num(hp, &ret->host_port) < 0 || parse_port_num(cp, &ret->container_port) < 0)
                return berr_set(err, -EINVAL, "invalid port mapping \"%s\": ports are 1-65535", spec);
        if (n == 3) {
                struct in_addr a;
                if (inet_pton(AF_INET, parts[0], &a) != 1)
                        return berr_set(err, -EINVAL,
                                        "invalid port mapping \"%s\": \"%s\" is not an IPv4 address", spec,
                                        parts[0]);
                /* Points into the caller's argv string at the same offset. */
                static char ips[64][16];
                static size_t next;
                char *slot = ips[next++ % ARRAY_SIZE(ips)];
                snprintf(slot, 16, "%s", parts[0]);
                ret->host_ip = slot;
        }
        return 0;
}

static time_t parse_time(const char *s)
{
        struct tm tm = { 0 };
        if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%S", &tm))
                return 0;
        return timegm(&tm);
}

static void human_duration(time_t secs, char *out, size_t n)
{
        if (secs < 1)
                snprintf(out, n, "Less than a second");
        else if (secs < 60)
                snprintf(out, n, "%ld second%s", (long)secs, secs == 1 ? "" : "s");
        else if (secs < 3600)
                snprintf(out, n, "%ld minute%s", (long)(secs / 60), secs / 60 == 1 ? "" : "s");
        else if (secs < 48 * 3600)
                snprintf(out, n, "%ld hour%s", (long)(secs / 3600), secs / 3600 == 1 ? "" : "s");
        else
                snprintf(out, n, "%ld days", (long)(secs / 86400));
}

static void status_text(const json_t *st, char *out, size_t n)
{
        const char *status = json_string_value(json_object_get(st, "Status"));
        char d[64];
        time_t now = time(NULL);
        if (!strcmp(status, "running")) {
                human_duration(now - parse_time(json_string_value(json_object_get(st, "StartedAt"))), d,
                               sizeof(d));
                snprintf(out, n, "Up %s%s", d,
                         json_is_true(json_object_get(st, "Supervised")) ? "" : " (unsupervised)");
        } else if (!strcmp(status, "exited")) {
                human_duration(now - parse_time(json_string_value(json_object_get(st, "FinishedAt"))), d,
                               sizeof(d));
                snprintf(out, n, "Exited (%d)%s %s ago",
                         (int)json_integer_value(json_object_get(st, "ExitCode")),
                         json_is_true(json_object_get(st, "OOMKilled")) ? " OOMKilled" : "", d);
        } else {
                snprintf(out, n, "Created");
        }
}

static int ps_usage(FILE *f)
{
        fprintf(f, "Usage: berth ps [-a] [--json] [-q]\n\nList running containers (-a: all).\n");
        return f == stdout ? 0 : CLI_EXIT_USAGE;
}

int cmd_ps(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const struct option opts[] = { { "all", no_argument, NULL, 'a' },
                                              { "json", no_argument, NULL, 'j' },
                                              { "quiet", no_argument, NULL, 'q' },
                                              { "help", no_argument, NULL, 'h' },
                                              { 0 } };
        bool all = false, json = false, quiet = false;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "aqh", opts, NULL)) != -1) {
                switch (c) {
                case 'a':
                        all = true;
                        break;
                case 'j':
                        json = true;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case 'h':
                        return ps_usage(stdout);
                default:
                        return ps_usage(stderr);
                }
        }
        if (optind < argc)
                return ps_usage(stderr);
        _cleanup_(cell_closep) struct cell *cell = NULL;
        _cleanup_json_ json_t *list = NULL;
        if (cli_cell_open(g, NULL, &cell, err) < 0 || cell_container_list(cell, all, &list, err) < 0)
                return CLI_EXIT_FAILURE;
        if (json) {
                _cleanup_free_ char *text = json_dump_str(list, true);
                printf("%s\n", text);
                return 0;
        }
        if (!quiet)
                printf("%-12s   %-24s   %-22s   %-16s   %-28s   %-24s   %s\n", "CONTAINER ID", "IMAGE",
                       "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES");
        size_t i;
        json_t *ct;
        json_array_foreach (list, i, ct) {
                const char *id = json_string_value(json_object_get(ct, "Id"));
                if (quiet) {
                        printf("%.12s\n", id);
                        continue;
                }
                char cmd[256] = "";
                size_t k;
                json_t *a;
                size_t len = 0;
                json_array_foreach (json_object_get(json_object_get(ct, "Config"), "Cmd"), k, a)
                        len += (size_t)snprintf(cmd + len, len < sizeof(cmd) ? sizeof(cmd) - len : 0, "%s%s",
                                                k ? " " : "", json_string_value(a));
                char qcmd[24];
                snprintf(qcmd, sizeof(qcmd), strlen(cmd) > 19 ? "\"%.18s…\"" : "\"%s\"", cmd);
                char created[64], status[96], ports[256] = "";
                human_duration(time(NULL) - parse_time(json_string_value(json_object_get(ct, "Created"))),
                               created, sizeof(created));
                strncat(created, " ago", sizeof(created) - strlen(created) - 1);
                status_text(json_object_get(ct, "State"), status, sizeof(status));
                len = 0;
                json_array_foreach (json_object_get(json_object_get(ct, "HostConfig"), "PortBindings"), k, a)
                        len += (size_t)snprintf(ports + len, len < sizeof(ports) ? sizeof(ports) - len : 0,
                                                "%s%s:%d->%d/%s", k ? ", " : "",
                                                json_string_value(json_object_get(a, "host_ip")),
                                                (int)json_integer_value(json_object_get(a, "host_port")),
                                                (int)json_integer_value(json_object_get(a, "container_port")),
                                                json_string_value(json_object_get(a, "protocol")));
                const char *name = json_string_value(json_object_get(ct, "Name"));
                printf("%.12s   %-24.24s   %-22s   %-16s   %-28s   %-24s   %s\n", id,
                       json_string_value(json_object_get(ct, "Image")), qcmd, created, status, ports,
                       name ? name : "");
        }
        return 0;
}

static int need_ids(int argc, const char *usage)
{
        if (optind >= argc) {
                fprintf(stderr, "%s", usage);
                return -1;
        }
        return 0;
}

int cmd_inspect(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const char usage[] = "Usage: berth inspect CONTAINER...\n\nPrint containers' state as JSON.\n";
        if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
                fputs(usage, stdout);
                return 0;
        }
        optind = 1;
        if (need_ids(argc, usage) < 0)
                return CLI_EXIT_USAGE;
        _cleanup_(cell_closep) struct cell *cell = NULL;
        if (cli_cell_open(g, NULL, &cell, err) < 0)
                return CLI_EXIT_FAILURE;
        _cleanup_json_ json_t *out = json_array();
        for (int i = 1; i < argc; i++) {
                _cleanup_free_ char *id = NULL;
                json_t *doc = NULL;
                if (cell_container_lookup(cell, argv[i], &id, err) < 0 ||
                    cell_container_inspect(cell, id, &doc, err) < 0)
                        return CLI_EXIT_FAILURE;
                json_array_append_new(out, doc);
        }
        _cleanup_free_ char *text = json_dump_str(out, true);
        printf("%s\n", text);
        return 0;
}

struct logs_ctx {
        bool timestamps;
};

static int print_log(int stream, const char *time, const char *text, size_t len, void *ud)
{
        struct logs_ctx *lc = ud;
        FILE *f = stream == 2 ? stderr : stdout;
        if (lc->timestamps)
                fprintf(f, "%s ", time);
        if (fwrite(text, 1, len, f) != len)
                return -EIO;
        if (len && text[len - 1] == '\n')
                fflush(f);
        return 0;
}

int cmd_logs(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const char usage[] = "Usage: berth logs [-f] [--tail N] [-t] CONTAINER\n\n"
                                    "Print a container's output (stdout to stdout, stderr to stderr);\n"
                                    "-f follows it until the container stops, -t adds timestamps.\n";
        static const struct option opts[] = { { "follow", no_argument, NULL, 'f' },
                                              { "tail", required_argument, NULL, 'n' },
                                              { "timestamps", no_argument, NULL, 't' },
                                              { "help", no_argument, NULL, 'h' },
                                              { 0 } };
        struct cell_log_opts lo = { .tail = -1, .log_fd = -1, .end_fd = -1, .proxy_signal_fd = -1 };
        struct logs_ctx lc = { 0 };
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "fn:th", opts, NULL)) != -1) {
                switch (c) {
                case 'f':
                        lo.follow = true;
                        break;
                case 'n': {
                        char *end;
                        if (!strcmp(optarg, "all")) {
                                lo.tail = -1;
                                break;
                        }
                        lo.tail = strtol(optarg, &end, 10);
                        if (*end || end == optarg || lo.tail < 0) {
                                berr_set(err, -EINVAL, "--tail must be a number or \"all\"");
                                return CLI_EXIT_USAGE;
                        }
                        break;
                }
                case 't':
                        lc.timestamps = true;
                        break;
                case 'h':
                        fputs(usage, stdout);
                        return 0;
                default:
                        fputs(usage, stderr);
                        return CLI_EXIT_USAGE;
                }
        }
        if (optind + 1 != argc) {
                fputs(usage, stderr);
                return CLI_EXIT_USAGE;
        }
        _cleanup_(cell_closep) struct cell *cell = NULL;
        _cleanup_free_ char *id = NULL;
        if (cli_cell_open(g, NULL, &cell, err) < 0 ||
            cell_container_lookup(cell, argv[optind], &id, err) < 0 ||
            cell_container_logs(cell, id, &lo, print_log, &lc, err) < 0)
                return CLI_EXIT_FAILURE;
        return 0;
}

int cmd_exec(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const char usage[] =
            "Usage: berth exec [-i] [-t] CONTAINER CMD [ARG...]\n\n"
            "Run a command in a running container, as its user, with its environment.\n";
        static const struct option opts[] = { { "interactive", no_argument, NULL, 'i' },
                                              { "tty", no_argument, NULL, 't' },
                                              { "help", no_argument, NULL, 'h' },
                                              { 0 } };
        bool interactive = false, tty = false;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "+ith", opts, NULL)) != -1) {
                switch (c) {
                case 'i':
                        interactive = true;
                        break;
                case 't':
                        tty = true;
                        break;
                case 'h':
                        fputs(usage, stdout);
                        return 0;
                default:
                        fputs(usage, stderr);
                        return CLI_EXIT_USAGE;
                }
        }
        if (optind + 2 > argc) {
                fputs(usage, stderr);
                return CLI_EXIT_USAGE;
        }
        if (tty && !isatty(STDIN_FILENO)) {
                berr_set(err, -ENOTTY, "the input device is not a TTY (drop -t)");
                return CLI_EXIT_FAILURE;
        }
        _cleanup_(cell_closep) struct cell *cell = NULL;
        _cleanup_free_ char *id = NULL;
        _cleanup_(strv_freep) char **rargv = NULL;
        _cleanup_free_ char *procfile = NULL;
        if (cli_cell_open(g, NULL, &cell, err) < 0 ||
            cell_container_lookup(cell, argv[optind], &id, err) < 0 ||
            cell_container_exec_argv(cell, id, argv + optind + 1, tty, &rargv, &procfile, err) < 0)
                return CLI_EXIT_FAILURE;
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
                unlink(procfile);
                berr_set_errno(err, -errno, "fork");
                return CLI_EXIT_FAILURE;
        }
        if (pid == 0) {
                if (!interactive && !tty) {
                        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
                        dup2(devnull, STDIN_FILENO);
                }
                execvp(rargv[0], rargv);
                _exit(127);
        }
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        unlink(procfile);
        if (WIFEXITED(st))
                return WEXITSTATUS(st);
        return 128 + WTERMSIG(st);
}

/*
 * stop, kill and rm: apply op to each CONTAINER argument (argv[optind..]) as docker does: every one is
 * tried, each failure is reported, the name is printed on success; exit 1 if any failed.
 */
typedef int (*container_op)(struct cell *cell, struct image_store *s, const char *id, const void *arg,
                            struct berr **err);

static int each_container(struct cli_globals *g, int argc, char **argv, bool with_store, container_op op,
                          const void *arg, struct berr **err)
{
        _cleanup_(cell_closep) struct cell *cell = NULL;
        _cleanup_(store_closep) struct image_store *s = NULL;
        if (cli_cell_open(g, NULL, &cell, err) < 0 ||
            (with_store && store_open(g->data_dir, g->config, &s, err) < 0))
                return CLI_EXIT_FAILURE;
        if (s)
                cell_sweep(cell, s);
        int rc = 0;
        for (int i = optind; i < argc; i++) {
                _cleanup_free_ char *id = NULL;
                _cleanup_berr_ struct berr *e = NULL;
                if (cell_container_lookup(cell, argv[i], &id, &e) < 0 || op(cell, s, id, arg, &e) < 0) {
                        cli_print_error(e);
                        rc = CLI_EXIT_FAILURE;
                        continue;
                }
                printf("%s\n", argv[i]);
        }
        return rc;
}

static int op_stop(struct cell *cell, struct image_store *s, const char *id, const void *arg,
                   struct berr **err)
{
        (void)s;
        return cell_container_stop(cell, id, *(const int *)arg, err);
}

static int op_kill(struct cell *cell, struct image_store *s, const char *id, const void *arg,
                   struct berr **err)
{
        (void)s;
        return cell_container_kill(cell, id, *(const int *)arg, err);
}

static int op_rm(struct cell *cell, struct image_store *s, const char *id, const void *arg, struct berr **err)
{
        return cell_container_remove(cell, s, id, *(const bool *)arg, err);
}

/* stop, kill and rm share the shape: [options] CONTAINER...; each given name printed on success. */
int cmd_stop(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const char usage[] =
            "Usage: berth stop [-t SECONDS] CONTAINER...\n\n"
            "Send the image's stop signal (default SIGTERM), then SIGKILL after the grace\n"
            "period (default 10 s).\n";
        static const struct option opts[] = { { "time", required_argument, NULL, 't' },
                                              { "help", no_argument, NULL, 'h' },
                                              { 0 } };
        long timeout = 10;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
                char *end;
                switch (c) {
                case 't':
                        timeout = strtol(optarg, &end, 10);
                        if (*end || end == optarg || timeout < 0 || timeout > 86400) {
                                berr_set(err, -EINVAL, "-t must be a number of seconds");
                                return CLI_EXIT_USAGE;
                        }
                        break;
                case 'h':
                        fputs(usage, stdout);
                        return 0;
                default:
                        fputs(usage, stderr);
                        return CLI_EXIT_USAGE;
                }
        }
        if (need_ids(argc, usage) < 0)
                return CLI_EXIT_USAGE;
        int t = (int)timeout;
        return each_container(g, argc, argv, false, op_stop, &t, err);
}

int cmd_kill(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const char usage[] = "Usage: berth kill [-s SIGNAL] CONTAINER...\n";
        static const struct option opts[] = { { "signal", required_argument, NULL, 's' },
                                              { "help", no_argument, NULL, 'h' },
                                              { 0 } };
        int sig = SIGKILL;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "s:h", opts, NULL)) != -1) {
                switch (c) {
                case 's':
                        if ((sig = cell_signal_parse(optarg)) < 0) {
                                berr_set(err, -EINVAL, "invalid signal \"%s\"", optarg);
                                return CLI_EXIT_USAGE;
                        }
                        break;
                case 'h':
                        fputs(usage, stdout);
                        return 0;
                default:
                        fputs(usage, stderr);
                        return CLI_EXIT_USAGE;
                }
        }
        if (need_ids(argc, usage) < 0)
                return CLI_EXIT_USAGE;
        return each_container(g, argc, argv, false, op_kill, &sig, err);
}

int cmd_rm(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const char usage[] =
            "Usage: berth rm [-f] CONTAINER...\n\n"
            "Remove containers and everything they used (-f: kill running ones first).\n";
        static const struct option opts[] = { { "force", no_argument, NULL, 'f' },
                                              { "help", no_argument, NULL, 'h' },
                                              { 0 } };
        bool force = false;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "fh", opts, NULL)) != -1) {
                switch (c) {
                case 'f':
                        force = true;
                        break;
                case 'h':
                        fputs(usage, stdout);
                        return 0;
                default:
                        fputs(usage, stderr);
                        return CLI_EXIT_USAGE;
                }
        }
        if (need_ids(argc, usage) < 0)
                return CLI_EXIT_USAGE;
        return each_container(g, argc, argv, true, op_rm, &force, err);
}

int cmd_network(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const char usage[] =
            "Usage: berth network prune\n\n"
            "Remove the containers' network from the host: the cell's bridge, its nftables table, and\n"
            "net.ipv4.ip_forward's switch if berth turned it on and no other berth bridge is left. Refused\n"
            "while a container exists; the next container sets the network up again.\n";
        if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
                fputs(usage, stdout);
                return 0;
        }
        if (argc != 2 || strcmp(argv[1], "prune") != 0) {
                fputs(usage, stderr);
                return CLI_EXIT_USAGE;
        }
        _cleanup_(cell_closep) struct cell *cell = NULL;
        if (cli_cell_open(g, NULL, &cell, err) < 0 || cell_network_prune(cell, err) < 0)
                return CLI_EXIT_FAILURE;
        return 0;
}
