/* SPDX-License-Identifier: Apache-2.0 */
#include <ctype.h>
#include <strings.h>
#include <fcntl.h>
#include <string.h>

#include "lib/config.h"
#include "lib/fs.h"
#include "lib/json.h"
#include "lib/yaml_json.h"

#define CONFIG_MAX_BYTES (1024 * 1024)

struct berth_config *config_new_default(void)
{
        struct berth_config *c = xcalloc(1, sizeof(*c));
        c->max_parallel_layers = 4;
        c->max_layer_bytes = 20ULL << 30;
        c->max_layer_entries = 2000000;
        c->max_image_bytes = 100ULL << 30;
        return c;
}

void config_free(struct berth_config *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < c->n_registries; i++) {
                free(c->registries[i].host);
                free(c->registries[i].ca_file);
        }
        free(c->registries);
        for (size_t i = 0; i < c->n_ca_files; i++)
                free(c->ca_files[i]);
        free(c->ca_files);
        free(c->cell_runtime);
        free(c->cell_bridge);
        free(c->cell_subnet);
        free(c->cell_nft_table);
        free(c->cell_allow_host_ports);
        json_decref(c->cell_agent);
        json_decref(c->controller);
        json_decref(c->router);
        free(c->internal_token_file);
        free(c);
}

static char *lower_dup(const char *s)
{
        char *d = xstrdup(s);
        for (char *p = d; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        return d;
}

static struct config_registry *registry_entry(struct berth_config *c, const char *host)
{
        _cleanup_free_ char *h = lower_dup(host);
        for (size_t i = 0; i < c->n_registries; i++)
                if (strcmp(c->registries[i].host, h) == 0)
                        return &c->registries[i];
        c->registries = xrealloc(c->registries, (c->n_registries + 1) * sizeof(*c->registries));
        struct config_registry *r = &c->registries[c->n_registries++];
        *r = (struct config_registry){ .host = TAKE_PTR(h) };
        return r;
}

static int check_keys(const json_t *obj, const char *where, const char *const *allowed, struct berr **err)
{
        const char *k;
        json_t *v;
        json_object_foreach ((json_t *)obj, k, v) {
                bool ok = false;
                for (size_t i = 0; allowed[i]; i++)
                        ok = ok || strcmp(k, allowed[i]) == 0;
                if (!ok)
                        return berr_set(err, -EINVAL, "%s: unknown key \"%.64s\"", where, k);
        }
        return 0;
}

static int get_u64(const json_t *obj, const char *key, uint64_t *ret, struct berr **err)
{
        int64_t v = -1;
        int r = json_get_int(obj, key, false, &v, err);
        if (r < 0)
                return r;
        if (!json_object_get(obj, key))
                return 0;
        if (v <= 0)
                return berr_set(err, -EINVAL, "\"%s\" must be a positive integer", key);
        *ret = (uint64_t)v;
        return 0;
}

static int parse_registries(struct berth_config *c, const json_t *regs, struct berr **err)
{
        static const char *const keys[] = { "insecure", "ca_files", "hosts", NULL };
        if (!json_is_object(regs))
                return berr_set(err, -EINVAL, "\"registries\" must be a mapping");
        int r = check_keys(regs, "registries", keys, err);
        if (r < 0)
                return r;
        json_t *ins = json_object_get(regs, "insecure");
        if (ins && !json_is_null(ins)) {
                if (!json_is_array(ins))
                        return berr_set(err, -EINVAL, "registries.insecure must be a list of host[:port]");
                size_t i;
                json_t *v;
                json_array_foreach (ins, i, v) {
                        if (!json_is_string(v) || !*json_string_value(v))
                                return berr_set(err, -EINVAL,
                                                "registries.insecure[%zu] must be a host[:port]", i);
                        registry_entry(c, json_string_value(v))->insecure = true;
                }
        }
        json_t *cas = json_object_get(regs, "ca_files");
        if (cas && !json_is_null(cas)) {
                if (!json_is_array(cas))
                        return berr_set(err, -EINVAL, "registries.ca_files must be a list of paths");
                size_t i;
                json_t *v;
                json_array_foreach (cas, i, v) {
                        if (!json_is_string(v) || json_string_value(v)[0] != '/')
                                return berr_set(err, -EINVAL,
                                                "registries.ca_files[%zu] must be an absolute path", i);
                        c->ca_files = xrealloc(c->ca_files, (c->n_ca_files + 1) * sizeof(char *));
                        c->ca_files[c->n_ca_files++] = xstrdup(json_string_value(v));
                }
        }
        json_t *hosts = json_object_get(regs, "hosts");
        if (hosts && !json_is_null(hosts)) {
                if (!json_is_object(hosts))
                        return berr_set(err, -EINVAL, "registries.hosts must be a mapping of host[:port]");
                const char *h;
                json_t *v;
                json_object_foreach (hosts, h, v) {
                        static const char *const hkeys[] = { "insecure", "ca_file", NULL };
                        if (!json_is_object(v))
                                return berr_set(err, -EINVAL, "registries.hosts.%.64s must be a mapping", h);
                        if ((r = check_keys(v, "registries.hosts entry", hkeys, err)) < 0)
                                return r;
                        struct config_registry *e = registry_entry(c, h);
                        if ((r = json_get_bool(v, "insecure", &e->insecure, err)) < 0)
                                return berr_prefix(err, r, "registries.hosts.%.64s", h);
                        const char *ca = NULL;
                        if ((r = json_get_string(v, "ca_file", false, &ca, err)) < 0)
                                return berr_prefix(err, r, "registries.hosts.%.64s", h);
                        if (ca) {
                                if (ca[0] != '/')
                                        return berr_set(
                                            err, -EINVAL,
                                            "registries.hosts.%.64s.ca_file must be an absolute path", h);
                                free(e->ca_file);
                                e->ca_file = xstrdup(ca);
                        }
                }
        }
        return 0;
}

static int get_str(const json_t *obj, const char *where, const char *key, char **ret, struct berr **err)
{
        json_t *v = json_object_get(obj, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v) || !*json_string_value(v))
                return berr_set(err, -EINVAL, "%s.%s must be a non-empty string", where, key);
        free(*ret);
        *ret = xstrdup(json_string_value(v));
        return 0;
}

static int section(const json_t *parent, const char *key, const char *where, json_t **ret, struct berr **err)
{
        json_t *v = json_object_get(parent, key);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_object(v))
                return berr_set(err, -EINVAL, "\"%s\" must be a mapping", where);
        json_decref(*ret);
        *ret = json_incref(v);
        return 0;
}

static int parse_cell(struct berth_config *c, const json_t *cell, struct berr **err)
{
        static const char *const keys[] = { "runtime", "log_max_bytes", "log_files", "disk_pool_bytes",
                                            "network", "agent",         NULL };
        static const char *const nkeys[] = {
                "bridge", "subnet", "nft_table", "ipv6", "allow_host_ports", NULL
        };
        if (!json_is_object(cell))
                return berr_set(err, -EINVAL, "\"cell\" must be a mapping");
        int r = check_keys(cell, "cell", keys, err);
        if (r < 0)
                return r;
        if ((r = get_str(cell, "cell", "runtime", &c->cell_runtime, err)) < 0)
                return r;
        if ((r = get_u64(cell, "log_max_bytes", &c->cell_log_max_bytes, err)) < 0 ||
            (r = get_u64(cell, "log_files", &c->cell_log_files, err)) < 0 ||
            (r = get_u64(cell, "disk_pool_bytes", &c->cell_disk_pool_bytes, err)) < 0)
                return berr_prefix(err, r, "cell");
        if (c->cell_log_max_bytes && c->cell_log_max_bytes < 4096)
                return berr_set(err, -EINVAL, "cell.log_max_bytes must be at least 4096");
        if (c->cell_log_files > 100)
                return berr_set(err, -EINVAL, "cell.log_files must be at most 100");
        json_t *net = json_object_get(cell, "network");
        if (!net || json_is_null(net))
                return 0;
        if (!json_is_object(net))
                return berr_set(err, -EINVAL, "cell.network must be a mapping");
        if ((r = check_keys(net, "cell.network", nkeys, err)) < 0 ||
            (r = get_str(net, "cell.network", "bridge", &c->cell_bridge, err)) < 0 ||
            (r = get_str(net, "cell.network", "subnet", &c->cell_subnet, err)) < 0 ||
            (r = get_str(net, "cell.network", "nft_table", &c->cell_nft_table, err)) < 0)
                return r;
        json_t *v6 = json_object_get(net, "ipv6");
        if (v6 && !json_is_null(v6)) {
                if (!json_is_boolean(v6))
                        return berr_set(err, -EINVAL, "cell.network.ipv6 must be true or false");
                c->cell_ipv6 = json_is_true(v6);
        }
        json_t *ports = json_object_get(net, "allow_host_ports");
        if (ports && !json_is_null(ports)) {
                if (!json_is_array(ports))
                        return berr_set(err, -EINVAL,
                                        "cell.network.allow_host_ports must be a list of ports");
                c->cell_allow_host_ports = xcalloc(json_array_size(ports) + 1, sizeof(uint16_t));
                size_t i;
                json_t *p;
                json_array_foreach (ports, i, p) {
                        if (!json_is_integer(p) || json_integer_value(p) < 1 || json_integer_value(p) > 65535)
                                return berr_set(err, -EINVAL,
                                                "cell.network.allow_host_ports: %zu: not a port (1-65535)",
                                                i);
                        c->cell_allow_host_ports[c->n_cell_allow_host_ports++] =
                            (uint16_t)json_integer_value(p);
                }
        }
        return 0;
}

int config_parse(const char *buf, size_t len, struct berth_config **ret, struct berr **err)
{
        _cleanup_json_ json_t *doc = NULL;
        int r = yaml_to_json(buf, len, &doc, err);
        if (r < 0)
                return r;
        _cleanup_(config_freep) struct berth_config *c = config_new_default();
        if (json_is_null(doc)) {
                *ret = TAKE_PTR(c);
                return 0;
        }
        if (!json_is_object(doc))
                return berr_set(err, -EINVAL, "configuration must be a mapping");
        static const char *const top[] = { "registries",          "image", "cell", "controller", "router",
                                           "internal_token_file", NULL };
        if ((r = check_keys(doc, "configuration", top, err)) < 0)
                return r;
        json_t *regs = json_object_get(doc, "registries");
        if (regs && !json_is_null(regs) && (r = parse_registries(c, regs, err)) < 0)
                return r;
        json_t *img = json_object_get(doc, "image");
        if (img && !json_is_null(img)) {
                static const char *const ikeys[] = { "max_parallel_layers", "max_layer_bytes",
                                                     "max_layer_entries", "max_image_bytes", NULL };
                if (!json_is_object(img))
                        return berr_set(err, -EINVAL, "\"image\" must be a mapping");
                if ((r = check_keys(img, "image", ikeys, err)) < 0)
                        return r;
                uint64_t par = (uint64_t)c->max_parallel_layers;
                if ((r = get_u64(img, "max_parallel_layers", &par, err)) < 0 ||
                    (r = get_u64(img, "max_layer_bytes", &c->max_layer_bytes, err)) < 0 ||
                    (r = get_u64(img, "max_layer_entries", &c->max_layer_entries, err)) < 0 ||
                    (r = get_u64(img, "max_image_bytes", &c->max_image_bytes, err)) < 0)
                        return berr_prefix(err, r, "image");
                if (par > 64)
                        return berr_set(err, -EINVAL, "image.max_parallel_layers must be at most 64");
                c->max_parallel_layers = (int)par;
        }
        json_t *cell = json_object_get(doc, "cell");
        if (cell && !json_is_null(cell) && (r = parse_cell(c, cell, err)) < 0)
                return r;
        /* The daemons' sections: kept as documents, each daemon checks its own (unknown keys included). */
        if (cell && json_is_object(cell) &&
            (r = section(cell, "agent", "cell.agent", &c->cell_agent, err)) < 0)
                return r;
        if ((r = section(doc, "controller", "controller", &c->controller, err)) < 0 ||
            (r = section(doc, "router", "router", &c->router, err)) < 0 ||
            (r = get_str(doc, "configuration", "internal_token_file", &c->internal_token_file, err)) < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

int config_load(const char *path, bool must_exist, struct berth_config **ret, struct berr **err)
{
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = fs_read_file_at(AT_FDCWD, path, CONFIG_MAX_BYTES, &buf, &len);
        if (r == -ENOENT && !must_exist) {
                *ret = config_new_default();
                return 0;
        }
        if (r < 0)
                return berr_set_errno(err, r, "read configuration %s", path);
        r = config_parse(buf, len, ret, err);
        if (r < 0)
                return berr_prefix(err, r, "configuration %s", path);
        return 0;
}

const struct config_registry *config_find_registry(const struct berth_config *c, const char *host)
{
        if (!c || !host)
                return NULL;
        for (size_t i = 0; i < c->n_registries; i++)
                if (strcasecmp(c->registries[i].host, host) == 0)
                        return &c->registries[i];
        return NULL;
}
