/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "berth-config.h"
#include "cli/cli.h"
#include "lib/log.h"
#include "lib/strv.h"

#ifdef BERTH_LIGHT
/*
 * build/berth: every command but the image commands, without the registry client and the tar machinery
 * (libcurl and libarchive with their 40 shared objects cost 20-30 ms at every start); `berth image ...`
 * executes build/berth-image, the full command line, with the same arguments.
 */
static char *full_path(void)
{
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n > 0) {
                exe[n] = '\0';
                char *slash = strrchr(exe, '/');
                if (slash) {
                        *slash = '\0';
                        char *p = xasprintf("%s/berth-image", exe);
                        if (access(p, X_OK) == 0)
                                return p;
                        free(p);
                }
        }
        return xstrdup("berth-image");
}

static char **main_argv;

static int cmd_image_exec(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        (void)g, (void)argc, (void)argv;
        char *full = full_path();
        main_argv[0] = full;
        execvp(full, main_argv);
        berr_set_errno(err, -errno, "execute %s (the image commands)", full);
        free(full);
        return CLI_EXIT_FAILURE;
}

int cli_run_full(struct cli_globals *g, char *const *args, int stdout_to)
{
        _cleanup_free_ char *full = full_path();
        struct strv a = { 0 };
        strv_push(&a, xstrdup(full));
        strv_push(&a, xstrdup("--data-dir"));
        strv_push(&a, xstrdup(g->data_dir));
        if (g->config_explicit) {
                strv_push(&a, xstrdup("--config"));
                strv_push(&a, xstrdup(g->config_path));
        }
        for (size_t i = 0; args[i]; i++)
                strv_push(&a, xstrdup(args[i]));
        _cleanup_(strv_freep) char **av = strv_take(&a);
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                if (stdout_to >= 0)
                        dup2(stdout_to, STDOUT_FILENO);
                execvp(av[0], av);
                fprintf(stderr, "berth: execute %s: %s\n", av[0], strerror(errno));
                _exit(127);
        }
        int st = 0;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
#define CMD_IMAGE    cmd_image_exec
#define CMD_PLATFORM cmd_image_exec
#define CMD_UP       cmd_image_exec
#define CMD_DAEMON   cmd_image_exec
#else
#define CMD_IMAGE    cmd_image
#define CMD_PLATFORM cmd_platform
#define CMD_UP       cmd_up
#define CMD_DAEMON   cmd_daemon
#endif

/*
 * `stop` and `logs` name a local container (docker's verbs) or an app (cf's verbs): a name, id or id
 * prefix of a container on this host wins; anything else is an app of the targeted space. `berth container
 * stop|logs` and `berth app-stop|app-logs` say which explicitly.
 */
static bool names_local_container(struct cli_globals *g, int argc, char **argv)
{
        const char *name = NULL;
        for (int i = 1; i < argc; i++) {
                if (argv[i][0] == '-') {
                        /* Only container options take a value; app options (--recent) do not. */
                        if (strcmp(argv[i], "-t") == 0 || strcmp(argv[i], "--time") == 0 ||
                            strcmp(argv[i], "--tail") == 0)
                                return true;
                        if (strcmp(argv[i], "--recent") == 0)
                                return false;
                        continue;
                }
                name = argv[i];
                break;
        }
        if (!name)
                return true; /* the container command prints its usage */
        if (cli_container_exists(g, name))
                return true;
        /* Not logged in to a platform: a container command (which says "no such container"). */
        const char *home = getenv("BERTH_HOME");
        _cleanup_free_ char *login =
            home && *home ? xasprintf("%s/config.json", home)
                          : xasprintf("%s/.berth/config.json", getenv("HOME") ? getenv("HOME") : "/root");
        return access(login, F_OK) != 0;
}

static int cmd_stop_any(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        if (names_local_container(g, argc, argv))
                return cmd_stop(g, argc, argv, err);
        return CMD_PLATFORM(g, argc, argv, err);
}

static int cmd_logs_any(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        if (names_local_container(g, argc, argv))
                return cmd_logs(g, argc, argv, err);
        return CMD_PLATFORM(g, argc, argv, err);
}

static int cmd_container(struct cli_globals *g, int argc, char **argv, struct berr **err);

static const struct {
        const char *name;
        cli_command_fn fn;
        const char *summary;
} commands[] = {
        { "image", CMD_IMAGE, "pull, list, inspect, export and remove images" },
        { "run", cmd_run, "run an image as a container (foreground, or -d detached)" },
        { "ps", cmd_ps, "list containers" },
        { "logs", cmd_logs_any, "print or follow a container's (or an app's) output" },
        { "exec", cmd_exec, "run a command in a running container" },
        { "stop", cmd_stop_any, "stop containers (stop signal, then SIGKILL), or an app" },
        { "kill", cmd_kill, "send a signal to containers" },
        { "rm", cmd_rm, "remove containers" },
        { "inspect", cmd_inspect, "print containers' state as JSON" },
        { "container", cmd_container, "the container commands by their full name (container stop ...)" },
        { "network", cmd_network,
          "network prune: remove the containers' bridge and rules once none is left" },
        { "up", CMD_UP, "run a whole single-node platform (controller, cell, router) in the foreground" },
        { "controller", CMD_DAEMON, "run the controller daemon (API, store, scheduler)" },
        { "cell", CMD_DAEMON, "run the cell agent daemon (runs app instances)" },
        { "router", CMD_DAEMON, "run the router daemon (HTTP routing to app instances)" },
};

/* The platform commands (src/cli/platform*.c), in the cf CLI's spirit; all talk to the controller's API. */
static const struct {
        const char *name;
        const char *summary;
} platform_commands[] = {
        { "login", "log in to a berth API (login -a URL -u USER [-p PASSWORD] [--ca-file PEM])" },
        { "logout", "forget the login" },
        { "target", "show or set the targeted org and space" },
        { "orgs", "list orgs" },
        { "spaces", "list spaces of the targeted org" },
        { "create-org", "create an org" },
        { "delete-org", "delete an org" },
        { "create-space", "create a space" },
        { "delete-space", "delete a space" },
        { "create-user", "create a user (admin)" },
        { "delete-user", "delete a user (admin)" },
        { "set-space-role", "give a user a role in a space" },
        { "unset-space-role", "take a user's role in a space away" },
        { "space-users", "list a space's users by role" },
        { "push", "push an app from a Docker image (push APP --docker-image REF, or push -f manifest.yml)" },
        { "apps", "list apps of the targeted space" },
        { "app", "show an app and its instances" },
        { "start", "start an app" },
        { "app-stop", "stop an app (also `berth stop APP`)" },
        { "restart", "restart an app (--strategy rolling: one instance at a time)" },
        { "restage", "re-resolve an app's image and restart it" },
        { "delete", "delete an app (-r: and its routes)" },
        { "scale", "change an app's instances, memory or disk" },
        { "get-health-check", "show an app's health check and readiness health check" },
        { "set-health-check",
          "change an app's health check (process, port or http; applies after a restart)" },
        { "set-readiness-health-check", "change an app's readiness health check (applies after a restart)" },
        { "env", "show an app's environment" },
        { "set-env", "set an app's environment variable" },
        { "unset-env", "remove an app's environment variable" },
        { "feature-flags", "list feature flags" },
        { "feature-flag", "show a feature flag" },
        { "enable-feature-flag", "enable a feature flag (admin)" },
        { "disable-feature-flag", "disable a feature flag (admin)" },
        { "domains", "list domains" },
        { "routes", "list routes" },
        { "create-route", "create a route" },
        { "delete-route", "delete a route" },
        { "map-route", "map a route to an app" },
        { "unmap-route", "unmap a route from an app" },
        { "app-logs", "show or stream an app's logs (also `berth logs APP [--recent]`)" },
        { "events", "show an app's recent events" },
};

static int cmd_container(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const struct {
                const char *name;
                cli_command_fn fn;
        } sub[] = {
                { "run", cmd_run },   { "ps", cmd_ps },           { "logs", cmd_logs },
                { "exec", cmd_exec }, { "stop", cmd_stop },       { "kill", cmd_kill },
                { "rm", cmd_rm },     { "inspect", cmd_inspect }, { "ls", cmd_ps },
        };
        if (argc < 2)
                return berr_set(err, -EINVAL,
                                "usage: berth container run|ps|logs|exec|stop|kill|rm|inspect ..."),
                       CLI_EXIT_USAGE;
        for (size_t i = 0; i < ARRAY_SIZE(sub); i++)
                if (strcmp(argv[1], sub[i].name) == 0)
                        return sub[i].fn(g, argc - 1, argv + 1, err);
        berr_set(err, -EINVAL, "unknown container command \"%s\"", argv[1]);
        return CLI_EXIT_USAGE;
}

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: berth [--data-dir DIR] [--config FILE] COMMAND [ARGS...]\n\n"
                "Run Docker/OCI images as routed, supervised web apps.\n\n"
                "Global options:\n"
                "  --data-dir DIR   state directory (env BERTH_DATA_DIR, default %s)\n"
                "  --config FILE    configuration file (env BERTH_CONFIG, default DATA_DIR/config.yaml)\n"
                "  --debug          verbose diagnostics on stderr\n"
                "  -h, --help       this help\n"
                "  --version        print the version\n\n"
                "Commands:\n",
                BERTH_DEFAULT_DATA_DIR);
        for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
                fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
        fprintf(f, "\nPlatform commands (talk to a berth API; see 'berth login'):\n");
        for (size_t i = 0; i < ARRAY_SIZE(platform_commands); i++)
                fprintf(f, "  %-26s %s\n", platform_commands[i].name, platform_commands[i].summary);
        fprintf(f, "\nRun 'berth COMMAND --help' for a command's options.\n");
}

void cli_print_error(const struct berr *e)
{
        fprintf(stderr, "berth: %s\n", berr_msg(e));
}

int main(int argc, char **argv)
{
        struct cli_globals g = { 0 };
#ifdef BERTH_LIGHT
        main_argv = argv;
#endif
        _cleanup_free_ char *default_config = NULL;
        static const struct option opts[] = {
                { "data-dir", required_argument, NULL, 'd' }, { "config", required_argument, NULL, 'c' },
                { "debug", no_argument, NULL, 'D' },          { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },        { 0 },
        };
        log_init(LOG_LEVEL_WARN);
        g.data_dir = getenv("BERTH_DATA_DIR");
        g.config_path = getenv("BERTH_CONFIG");
        g.config_explicit = g.config_path != NULL;
        int c;
        /* '+': stop at the first non-option so commands parse their own options. */
        while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
                switch (c) {
                case 'd':
                        g.data_dir = optarg;
                        break;
                case 'c':
                        g.config_path = optarg;
                        g.config_explicit = true;
                        break;
                case 'D':
                        log_set_level(LOG_LEVEL_DEBUG);
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case 'V':
                        printf("berth %s\n", BERTH_VERSION);
                        return 0;
                default:
                        usage(stderr);
                        return CLI_EXIT_USAGE;
                }
        }
        if (!g.data_dir || !*g.data_dir)
                g.data_dir = BERTH_DEFAULT_DATA_DIR;
        if (g.data_dir[0] != '/') {
                fprintf(stderr, "berth: --data-dir must be an absolute path, got \"%s\"\n", g.data_dir);
                return CLI_EXIT_USAGE;
        }
        if (optind >= argc) {
                usage(stderr);
                return CLI_EXIT_USAGE;
        }
        const char *name = argv[optind];
        cli_command_fn fn = NULL;
        for (size_t i = 0; i < ARRAY_SIZE(commands) && !fn; i++)
                if (strcmp(name, commands[i].name) == 0)
                        fn = commands[i].fn;
        for (size_t i = 0; i < ARRAY_SIZE(platform_commands) && !fn; i++)
                if (strcmp(name, platform_commands[i].name) == 0)
                        fn = CMD_PLATFORM;
        if (fn) {
                if (!g.config_path) {
                        default_config = xasprintf("%s/config.yaml", g.data_dir);
                        g.config_path = default_config;
                }
                _cleanup_berr_ struct berr *err = NULL;
                int r = config_load(g.config_path, g.config_explicit, &g.config, &err);
                if (r < 0) {
                        cli_print_error(err);
                        return CLI_EXIT_FAILURE;
                }
                int rc = fn(&g, argc - optind, argv + optind, &err);
                if (err)
                        cli_print_error(err);
                config_free(g.config);
                return rc;
        }
        fprintf(stderr, "berth: unknown command \"%s\" (see 'berth --help')\n", name);
        return CLI_EXIT_USAGE;
}
