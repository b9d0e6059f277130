/* SPDX-License-Identifier: Apache-2.0 */
/*
 * berth's configuration file (YAML). Example:
 *
 *   registries:
 *     insecure: ["registry.internal:5000"]   # plain HTTP, or TLS without verification
 *     ca_files: ["/etc/berth/certs/corp-ca.pem"]  # extra CAs trusted for every registry
 *     hosts:
 *       "registry.internal:5443":
 *         ca_file: /etc/berth/certs/registry.pem
 *   image:
 *     max_parallel_layers: 4
 *     max_layer_bytes: 21474836480   # unpacked bytes per layer (bomb budget)
 *     max_layer_entries: 2000000
 *   cell:
 *     runtime: crun                  # or runc
 *     log_max_bytes: 10485760        # per container log file, rotated
 *     log_files: 2
 *     disk_pool_bytes: 68719476736   # sparse btrfs image for disk quotas (when the data dir is not btrfs)
 *     network:
 *       bridge: berth0
 *       subnet: 10.88.0.0/16
 *       nft_table: berth
 *       ipv6: false
 *       allow_host_ports: [53]       # host ports containers may reach (none by default)
 *     agent: {listen: "127.0.0.1:9023", ...}   # the cell agent (docs/PLATFORM.md)
 *   controller: {listen: "127.0.0.1:9022", domain: apps.localhost, ...}
 *   router: {listen: "127.0.0.1:9080", ...}
 *   internal_token_file: /var/lib/berth/internal-token
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "lib/err.h"

struct config_registry {
        char *host;    /* "host[:port]", lowercase */
        bool insecure; /* may use http:// or skip TLS verification */
        char *ca_file; /* extra CA bundle for this registry, or NULL */
};

struct berth_config {
        struct config_registry *registries;
        size_t n_registries;
        char **ca_files; /* global extra CA bundles */
        size_t n_ca_files;
        int max_parallel_layers;
        uint64_t max_layer_bytes;
        uint64_t max_layer_entries;
        uint64_t max_image_bytes;
        /* cell: NULL strings and zeros mean the cell's defaults */
        char *cell_runtime;
        uint64_t cell_log_max_bytes;
        uint64_t cell_log_files;
        uint64_t cell_disk_pool_bytes;
        char *cell_bridge;
        char *cell_subnet;
        char *cell_nft_table;
        bool cell_ipv6;
        uint16_t *cell_allow_host_ports;
        size_t n_cell_allow_host_ports;
        /*
         * The daemons' own sections, checked by each daemon (NULL when absent): cell.agent (the cell agent,
         * src/cell/agent.c), controller (src/controller), router (src/router). See docs/PLATFORM.md.
         */
        json_t *cell_agent;
        json_t *controller;
        json_t *router;
        char *internal_token_file; /* shared secret of the internal API; NULL: <data-dir>/internal-token */
};

/* Defaults, no registries. */
struct berth_config *config_new_default(void);
/*
 * Load path. If the file does not exist and `must_exist` is false, defaults are returned.
 * Unknown keys are an error (typos must not silently change security settings).
 */
int config_load(const char *path, bool must_exist, struct berth_config **ret, struct berr **err);
int config_parse(const char *buf, size_t len, struct berth_config **ret, struct berr **err);
void config_free(struct berth_config *c);
static inline void config_freep(struct berth_config **c)
{
        config_free(*c);
}
/* The entry for host ("host[:port]"), or NULL. */
const struct config_registry *config_find_registry(const struct berth_config *c, const char *host);
