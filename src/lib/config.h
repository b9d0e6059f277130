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
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

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
