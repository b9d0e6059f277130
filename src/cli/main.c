/* SPDX-License-Identifier: Apache-2.0 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth-config.h"
#include "cli/cli.h"
#include "lib/log.h"

static const struct {
        const char *name;
        cli_command_fn fn;
        const char *summary;
} commands[] = {
        { "image", cmd_image, "pull, list, inspect, export and remove images" },
        { "run", cmd_run, "run an image as a container (foreground, or -d detached)" },
        { "ps", cmd_ps, "list containers" },
        { "logs", cmd_logs, "print or follow a container's output" },
        { "exec", cmd_exec, "run a command in a running container" },
        { "stop", cmd_stop, "stop containers (stop signal, then SIGKILL)" },
        { "kill", cmd_kill, "send a signal to containers" },
        { "rm", cmd_rm, "remove containers" },
        { "inspect", cmd_inspect, "print containers' state as JSON" },
};

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
        fprintf(f, "\nRun 'berth COMMAND --help' for a command's options.\n");
}

void cli_print_error(const struct berr *e)
{
        fprintf(stderr, "berth: %s\n", berr_msg(e));
}

int main(int argc, char **argv)
{
        struct cli_globals g = { 0 };
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
        for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
                if (strcmp(name, commands[i].name) != 0)
                        continue;
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
                int rc = commands[i].fn(&g, argc - optind, argv + optind, &err);
                if (err)
                        cli_print_error(err);
                config_free(g.config);
                return rc;
        }
        fprintf(stderr, "berth: unknown command \"%s\" (see 'berth --help')\n", name);
        return CLI_EXIT_USAGE;
}
