/* SPDX-License-Identifier: Apache-2.0 */
/* The berth command line: global options and the command table. Only this layer prints or exits. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "lib/config.h"
#include "lib/err.h"

struct cli_globals {
        const char *data_dir;    /* --data-dir / $BERTH_DATA_DIR / default */
        const char *config_path; /* --config / $BERTH_CONFIG / <data-dir>/config.yaml */
        bool config_explicit;    /* a missing explicit config file is an error */
        struct berth_config *config;
};

/* A command returns a process exit code; errors are printed by main from *err. */
typedef int (*cli_command_fn)(struct cli_globals *g, int argc, char **argv, struct berr **err);

int cmd_image(struct cli_globals *g, int argc, char **argv, struct berr **err);
int cmd_run(struct cli_globals *g, int argc, char **argv, struct berr **err);
int cmd_ps(struct cli_globals *g, int argc, char **argv, struct berr **err);
int cmd_logs(struct cli_globals *g, int argc, char **argv, struct berr **err);
int cmd_exec(struct cli_globals *g, int argc, char **argv, struct berr **err);
int cmd_stop(struct cli_globals *g, int argc, char **argv, struct berr **err);
int cmd_kill(struct cli_globals *g, int argc, char **argv, struct berr **err);
int cmd_rm(struct cli_globals *g, int argc, char **argv, struct berr **err);
int cmd_network(struct cli_globals *g, int argc, char **argv, struct berr **err);
int cmd_inspect(struct cli_globals *g, int argc, char **argv, struct berr **err);
/* The platform (full binary only): argv[0] is the command name (login, push, app-stop, stop, logs, ...). */
int cmd_platform(struct cli_globals *g, int argc, char **argv, struct berr **err);
/* `berth up` (src/cli/cmd_up.c) and the daemons (argv[0]: controller, cell, router). */
int cmd_up(struct cli_globals *g, int argc, char **argv, struct berr **err);
int cmd_daemon(struct cli_globals *g, int argc, char **argv, struct berr **err);
/* True if name_or_id names a container of this host's cell (without side effects; false on any error). */
bool cli_container_exists(struct cli_globals *g, const char *name_or_id);

struct cell;
struct cell_port_map;
/* The cell with this invocation's configuration (runtime: NULL for the configured one). */
int cli_cell_open(struct cli_globals *g, const char *runtime, struct cell **ret, struct berr **err);
/* "[IP:]HOSTPORT:PORT[/tcp|/udp]". */
int cli_parse_port(const char *spec, struct cell_port_map *ret, struct berr **err);
/*
 * (build/berth only) Run build/berth-image with this invocation's --data-dir/--config and args, its stdout
 * on stdout_to (-1: ours); returns its exit status.
 */
int cli_run_full(struct cli_globals *g, char *const *args, int stdout_to);
/* "256M", "1G", "512k", "1048576" → bytes; 0 on error. */
uint64_t cli_parse_size(const char *s);

/* Print an error the way every berth command does: "berth: <message>" on stderr. */
void cli_print_error(const struct berr *e);
/* Exit code for an error: 2 for usage errors (-EINVAL from option parsing), 1 otherwise. */
#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE   2

/* Progress display for pulls: bars on a TTY, plain lines otherwise. */
struct pull_progress;
struct progress_ui;
struct progress_ui *progress_ui_new(bool quiet);
/* The same on another stream (`berth run` keeps stdout for the container). */
struct progress_ui *progress_ui_new_on(FILE *out, bool quiet);
void progress_ui_event(void *ui, const struct pull_progress *p);
void progress_ui_free(struct progress_ui *ui);
