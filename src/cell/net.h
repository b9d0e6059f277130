/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Container networking, done natively: netlink (libmnl) for links, addresses and routes, libnftables for
 * the rules. One bridge per cell (default "berth0") holds the gateway address of a configurable IPv4
 * subnet; each container gets a network namespace (bind-mounted under <data-dir>/cell/netns/<id>), a
 * veth pair whose host end is a bridge port with port isolation (containers cannot reach each other),
 * an address from the subnet, a default route via the gateway, and IPv6 disabled unless configured.
 * One nftables table (default "berth", family inet) holds: DNAT of host ports to containers (`-p`),
 * also from the host's own loopback; masquerade of container egress; and an input filter so containers
 * reach none of the host's own ports except those allowed. Addresses are leased in files under
 * <data-dir>/cell/net/ (one per address, created with O_EXCL), so separate processes never collide.
 */
#pragma once

#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/err.h"

struct cell_net_config {
        const char *bridge;    /* NULL: "berth0" */
        const char *nft_table; /* NULL: "berth" */
        const char *subnet;    /* IPv4 CIDR; NULL: "10.88.0.0/16". The gateway is the first address. */
        bool ipv6;             /* false: IPv6 disabled inside containers */
        const uint16_t *allow_host_ports; /* host TCP/UDP ports containers may reach; may be NULL */
        size_t n_allow_host_ports;
};

struct cell_port_map {
        uint16_t host_port;
        uint16_t container_port;
        uint8_t proto;       /* IPPROTO_TCP (default when 0) or IPPROTO_UDP */
        const char *host_ip; /* NULL: every host address, including 127.0.0.1 */
};

struct cell_net_attachment {
        char ip[16]; /* dotted quad */
        char gateway[16];
        int prefix_len;
        char netns_path[4096];  /* bind mount of the namespace, for the runtime's config.json */
        char userns_path[4096]; /* the user namespace (idmap.h's mapping) owning it: the container joins it */
        char host_veth[IF_NAMESIZE];
};

/*
 * Prepare the host (idempotent; a changed allow list applies): bridge up with the gateway address,
 * ip_forward, the nft table. -EEXIST when the subnet overlaps a route on another interface.
 */
int cell_net_setup_host(const char *data_dir, const struct cell_net_config *c, struct berr **err);
/*
 * Create the container's network: namespace, veth, address lease, routes, port mappings. On error
 * everything created is removed again. Fills *ret. A host port (per protocol) belongs to one container,
 * whatever its host_ip: -EADDRINUSE "host port 8080 is already allocated". -EEXIST: id already has a
 * network; -ENOSPC: no free address in the subnet; -EINVAL: invalid id, port, protocol or host_ip.
 * Containers reach neither each other (directly or through a published port) nor the host's ports except
 * cfg->allow_host_ports; their traffic to other networks is masqueraded.
 */
int cell_net_create(const char *data_dir, const struct cell_net_config *c, const char *id,
                    const struct cell_port_map *ports, size_t n_ports, struct cell_net_attachment *ret,
                    struct berr **err);
/* Remove all of it (namespace, veth, lease, rules); idempotent: missing parts are not an error. */
int cell_net_destroy(const char *data_dir, const struct cell_net_config *c, const char *id,
                     struct berr **err);
/*
 * Remove the bridge and the nft table when no container uses them (tests, `berth network prune`): -EBUSY
 * while a lease in the subnet or a port on the bridge is left. Also unmounts <data-dir>/cell/netns once empty
 * and switches net.ipv4.ip_forward off again if cell_net_setup_host() switched it on and no other bridge set
 * up since, by this or any other data dir, is left in this network namespace.
 */
int cell_net_teardown_host(const char *data_dir, const struct cell_net_config *c, struct berr **err);

/* A container's traffic as the container sees it (its eth0): the counters of its veth. */
struct cell_net_stats {
        uint64_t rx_bytes, rx_packets, tx_bytes, tx_packets;
        uint64_t rx_dropped, tx_dropped;
};
/* -ENOENT when the container has no network (never created, or destroyed). */
int cell_net_stats(const char *id, struct cell_net_stats *ret, struct berr **err);

#ifdef BERTH_TESTING
/* Internals of net.c exported to unit tests. */
bool net_valid_id(const char *id);
/* "a.b.c.d/n" (n in 8..30, no host bits): network address in host byte order and prefix length. */
int net_parse_subnet(const char *s, uint32_t *ret_net, int *ret_prefix, struct berr **err);
/* The host end of id's veth: "bv" + 10 hex digits of SHA-256(id). */
void net_veth_name(const char *id, char out[IF_NAMESIZE]);
#endif
