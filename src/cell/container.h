/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Containers of a cell: create, start (under a berth-monitor), stop, kill, remove, list, inspect, exec,
 * logs. All state is in files under <data-dir>/cell/, so any berth process (the CLI, a cell daemon after a
 * restart) finds the containers again and reports them accurately:
 *
 *   containers/<id>/  config.json (the OCI bundle), container.json (what was asked: image, command,
 *                     limits, ports, network), state.json (written by the monitor: running/exited, pids,
 *                     exit code, OOM), monitor.lock (held by the live monitor), container.log[.N] (CRI
 *                     format), hosts, hostname, resolv.conf
 *   names/<name>      symlink to the id
 *   runtime/          the OCI runtime's state root
 *
 * A container's id is 64 hex digits; every function taking an id also accepts a unique prefix of at least
 * 3 characters or a name (cell_container_lookup).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "cell/net.h"
#include "cell/process.h"
#include "image/store.h"
#include "lib/err.h"

struct cell_config {
        const char *data_dir;
        const char *runtime;      /* NULL: "crun" */
        const char *monitor_path; /* NULL: "berth-monitor" next to the running executable */
        const char *self_path;    /* NULL: the running executable (for --rm: "berth rm") */
        const char *config_path;  /* passed on to "berth rm" (may be NULL) */
        struct cell_net_config net;
        uint64_t log_max_bytes; /* 0: 10 MiB per file */
        unsigned log_files;     /* 0: 2 files */
        uint64_t disk_pool_bytes;
};

struct cell;

int cell_open(const struct cell_config *cfg, struct cell **ret, struct berr **err);
void cell_close(struct cell *c);
static inline void cell_closep(struct cell **c)
{
        cell_close(*c);
}

enum cell_network_mode {
        CELL_NET_BRIDGE = 0, /* default: veth on the cell's bridge, address, port mappings */
        CELL_NET_NONE,       /* a network namespace with only loopback */
};

struct cell_create_opts {
        const char *image; /* a reference, digest or id in the store (already pulled) */
        const char *name;  /* NULL: none */
        struct process_overrides process;
        uint64_t memory_bytes; /* 0: unlimited */
        uint64_t pids;         /* 0: default */
        uint64_t disk_bytes;   /* 0: no quota (the writable layer stays in the image store) */
        const struct cell_port_map *ports;
        size_t n_ports;
        enum cell_network_mode network;
        bool autoremove; /* removed by its monitor when it exits (--rm) */
        /*
         * Stop with SIGKILL at once when the container's init does not catch the stop signal (the kernel
         * would discard it). Platform instances: Cloud Foundry runs apps under an init that passes SIGTERM
         * on, so an app without a handler ends at once there too. Docker-like containers keep waiting.
         */
        bool stop_uncaught_now;
        /*
         * Optional: env computed once the address is leased (the cell agent's CF_INSTANCE_*): called with
         * the container's IP ("" without a network); returns "K=V" entries (NULL-terminated, caller of the
         * hook frees) appended after every other env, or NULL for none.
         */
        char **(*env_after_lease)(const char *ip, void *userdata);
        void *env_after_lease_userdata;
};

/*
 * Remove what crashed creates left (a "creating" marker whose creator no longer holds its lock). Returns
 * the number of containers swept. Run by commands that open the store anyway (run, rm).
 */
int cell_sweep(struct cell *c, struct image_store *s);
/* Create (not start) a container. *ret_id: its id (caller frees). Nothing is left behind on error. */
int cell_container_create(struct cell *c, struct image_store *s, const struct cell_create_opts *o,
                          char **ret_id, struct berr **err);
/* A monitor started attached: a child of this process, and the read end of its status pipe. */
struct cell_attach {
        int monitor_pid;
        int sync_fd;
};
/*
 * Start it under a new berth-monitor. attach NULL (detached): the monitor is not a child of this process and
 * outlives it. Otherwise the monitor is a child, for cell_container_wait_child().
 */
int cell_container_start(struct cell *c, const char *id, struct cell_attach *attach, struct berr **err);
/*
 * Wait for an attached monitor; *ret_exit_code is the container's (128+N for signal N). Closes a->sync_fd.
 * remove_self: the caller removes an autoremove container itself (the monitor then does not).
 */
int cell_container_wait_child(struct cell *c, const char *id, struct cell_attach *a, bool remove_self,
                              int *ret_exit_code, struct berr **err);
/* Resolve a name, full id or unique id prefix. */
int cell_container_lookup(struct cell *c, const char *name_or_id, char **ret_id, struct berr **err);
/* Docker-like inspect document: Id, Name, Created, Image, Config, State, NetworkSettings, HostConfig, Usage.
 */
int cell_container_inspect(struct cell *c, const char *id, json_t **ret, struct berr **err);
/*
 * Is it running (1) or not (0)? Cheaper than inspect (no usage): the state file and the monitor's lock.
 * *ret_monitor_pid (optional): the live monitor's pid, 0 if it runs unsupervised or not at all.
 */
int cell_container_running(struct cell *c, const char *id, int *ret_monitor_pid, struct berr **err);
/* Inspect documents of all containers (all=false: only running), newest first. */
int cell_container_list(struct cell *c, bool all, json_t **ret, struct berr **err);
/*
 * Remove the containers' network from the host (cell_net_teardown_host: the bridge, its nftables table, and
 * ip_forward if berth switched it on and no other berth bridge is left). -EBUSY while a container of this
 * data dir exists or any container is on the bridge. Idempotent; the next container sets it up again.
 */
int cell_network_prune(struct cell *c, struct berr **err);
/* Send the image's StopSignal (default SIGTERM), SIGKILL after timeout_s; waits until it exited. */
int cell_container_stop(struct cell *c, const char *id, int timeout_s, struct berr **err);
int cell_container_kill(struct cell *c, const char *id, int sig, struct berr **err);
/* Remove; a running container only with force (killed first). Leaves nothing behind. */
int cell_container_remove(struct cell *c, struct image_store *s, const char *id, bool force,
                          struct berr **err);
/*
 * The argv to run `cmd` inside a running container with the container's user, env, cwd, capabilities and
 * limits (the OCI runtime's exec). *ret_process_file is a file the caller removes after the run.
 */
int cell_container_exec_argv(struct cell *c, const char *id, char *const *cmd, bool tty, char ***ret_argv,
                             char **ret_process_file, struct berr **err);

/* One log record: stream 1 (stdout) or 2 (stderr), its RFC 3339 time, its text (with its newline if any). */
typedef int (*cell_log_fn)(int stream, const char *time, const char *text, size_t len, void *userdata);

struct cell_log_opts {
        long tail;           /* the last `tail` lines; -1: all */
        bool follow;         /* then new lines until the container stops */
        int log_fd;          /* -1, or container.log opened before the container started (run's attach) */
        int end_fd;          /* -1, or an fd whose readability ends the follow (run's attach: the monitor's
                                socket, readable once the container exited and its output was logged) */
        int proxy_signal_fd; /* -1, or a signalfd: signals read from it are sent to the container */
};

/* Feed the container's logs to fn. fn returning < 0 stops early with that value. */
int cell_container_logs(struct cell *c, const char *id, const struct cell_log_opts *o, cell_log_fn fn,
                        void *userdata, struct berr **err);
/* "SIGTERM", "TERM", "15", "RTMIN+3" → the signal number; -1 if unknown. */
int cell_signal_parse(const char *s);
/* Container directory's log path (for run's attach, opened before the start). Caller frees. */
char *cell_container_log_path(struct cell *c, const char *id);
