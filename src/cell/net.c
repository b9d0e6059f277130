/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Container networking (see net.h). Everything is done in-process: rtnetlink through libmnl for links,
 * addresses and routes, libnftables for the rules, mount(2) for the namespace files. No `ip` or `nft`.
 *
 * On-disk state under <data-dir>/cell/:
 *   net/<a.b.c.d>   the lease of one address: a symlink whose target is the container id. symlink(2)
 *                   is exclusive (EEXIST) and atomic with its content, so concurrent creators in
 *                   different processes never share an address and a crash never leaves a torn lease.
 *   net/lock        flock()ed while the netns directory's mount is set up or torn down.
 *   netns/          a bind mount of itself, shared (like `ip netns` does with /run/netns); netns/<id> is
 *                   a bind mount of the container's network namespace (nsfs).
 *
 * Host-wide, under /run/berth/ip_forward/<inode of the network namespace>/ (see fwd_open):
 *   orig            present while berth has switched net.ipv4.ip_forward on in that namespace;
 *   <bridge>        one per bridge set up there, by any data dir: the last teardown switches it back off
 *                   (a teardown forgets the entries of bridges deleted behind berth's back).
 *
 * The nftables table (family inet) of one bridge B and subnet S:
 *   map hostports  { inet_proto . inet_service : verdict }  one element per published host port, "jump
 *                  ctr_<id>": the element is the port's allocation (created with `create element`, which
 *                  fails atomically when the port is taken) and the dispatch to its container's chain.
 *   chain ctr_<id> the container's DNAT rules; destroy deletes its elements and the chain, nothing else.
 *   guard          (prerouting, raw)   from B: drop daddr 127/8 (CVE-2020-8558) and saddr outside S
 *   prerouting     (nat, dstnat)       local daddr: vmap @hostports
 *   output         (nat, -100)         local daddr: vmap @hostports (the host's own 127.0.0.1 and gateway)
 *   postrouting    (nat, srcnat)       127/8 → B: masquerade; S → anything but B: masquerade
 *   input          (filter)            from B: established/related, allowed host ports, else drop
 *   forward        (filter)            B → B: drop; → B: established/related or DNAT, else drop
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <jansson.h>
#include <libmnl/libmnl.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/ip.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <netinet/in.h>
#include <nftables/libnftables.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cell/net.h"
#include "image/idmap.h"
#include "lib/digest.h"
#include "lib/fs.h"
#include "lib/json.h"
#include "lib/log.h"

#define NET_DEFAULT_BRIDGE "berth0"
#define NET_DEFAULT_TABLE  "berth"
#define NET_DEFAULT_SUBNET "10.88.0.0/16"
#define NET_ID_MAX         64 /* a container id: [A-Za-z0-9_.-]{1,64} */
#define NET_TABLE_MAX      32 /* nft table names we accept: [A-Za-z][A-Za-z0-9_]{0,31} */
#define NET_PREFIX_MIN     8  /* /8 .. /30: at least one container address besides the gateway */
#define NET_PREFIX_MAX     30
#define NET_NL_MSG_MAX     4096       /* one rtnetlink request: a handful of attributes */
#define NET_NL_RECV_MAX    32768      /* MNL_SOCKET_DUMP_SIZE: one datagram of a dump */
#define NET_NL_DUMP_TRIES  5          /* dumps interrupted by concurrent changes are retried */
#define NET_NFT_OUT_MAX    (16 << 20) /* ceiling on an nft listing we parse */
#define NET_ALIAS_PREFIX   "berth:"
#define NET_CHAIN_PREFIX   "ctr_"

/* A validated configuration with its defaults applied. */
struct net_params {
        const char *bridge;
        const char *table;
        uint32_t net; /* host byte order */
        int prefix;
        uint32_t gw;
        char subnet[32];
        char gw_str[INET_ADDRSTRLEN];
        bool ipv6;
        const uint16_t *allow;
        size_t n_allow;
};

/* ---- validation ---- */

BERTH_STATIC bool net_valid_id(const char *id)
{
        size_t n = id ? strlen(id) : 0;
        if (n == 0 || n > NET_ID_MAX || !strcmp(id, ".") || !strcmp(id, ".."))
                return false;
        return strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static bool valid_ifname(const char *s)
{
        size_t n = strlen(s);
        return n > 0 && n < IF_NAMESIZE &&
               strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n &&
               strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Table names go into nft command text: letters, digits and '_' only, so nothing can be injected. */
static bool valid_table(const char *s)
{
        size_t n = strlen(s);
        return n > 0 && n <= NET_TABLE_MAX &&
               strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", s[0]) &&
               strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == n;
}

static void ip_str(uint32_t host_order, char out[INET_ADDRSTRLEN])
{
        struct in_addr a = { .s_addr = htonl(host_order) };
        inet_ntop(AF_INET, &a, out, INET_ADDRSTRLEN);
}

static uint32_t prefix_mask(int prefix)
{
        return prefix <= 0 ? 0 : 0xffffffffu << (32 - prefix);
}

/* Parse "a.b.c.d/n" (n in 8..30, no host bits set) into a host-order network address and prefix. */
BERTH_STATIC int net_parse_subnet(const char *s, uint32_t *ret_net, int *ret_prefix, struct berr **err)
{
        const char *slash = strchr(s, '/');
        if (!slash || slash == s || (size_t)(slash - s) >= INET_ADDRSTRLEN)
                return berr_set(err, -EINVAL,
                                "invalid subnet \"%s\": expected an IPv4 CIDR like 10.88.0.0/16", s);
        char addr[INET_ADDRSTRLEN];
        memcpy(addr, s, (size_t)(slash - s));
        addr[slash - s] = '\0';
        struct in_addr a;
        if (inet_pton(AF_INET, addr, &a) != 1)
                return berr_set(err, -EINVAL, "invalid subnet \"%s\": \"%s\" is not an IPv4 address", s,
                                addr);
        char *end = NULL;
        errno = 0;
        unsigned long p = strtoul(slash + 1, &end, 10);
        if (errno || slash[1] < '0' || slash[1] > '9' || *end || p < NET_PREFIX_MIN || p > NET_PREFIX_MAX)
                return berr_set(err, -EINVAL, "invalid subnet \"%s\": the prefix length must be %d to %d", s,
                                NET_PREFIX_MIN, NET_PREFIX_MAX);
        uint32_t net = ntohl(a.s_addr);
        /* 0/8 "this network", 127/8 loopback, 169.254/16 link-local, 224/3 multicast and reserved. */
        uint32_t last = net | ~prefix_mask((int)p);
        if ((net >> 24) == 0 || (net >> 24) == 127 || (last >> 24) == 127 || (net >> 16) == 0xa9fe ||
            (last >> 16) == 0xa9fe || (net >> 29) == 7 || (last >> 29) == 7)
                return berr_set(err, -EINVAL, "invalid subnet \"%s\": not a range of unicast host addresses",
                                s);
        if (net & ~prefix_mask((int)p)) {
                char fixed[INET_ADDRSTRLEN];
                ip_str(net & prefix_mask((int)p), fixed);
                return berr_set(err, -EINVAL,
                                "invalid subnet \"%s\": host bits are set (did you mean %s/%lu?)", s, fixed,
                                p);
        }
        *ret_net = net;
        *ret_prefix = (int)p;
        return 0;
}

static int params_from(const char *data_dir, const struct cell_net_config *c, struct net_params *p,
                       struct berr **err)
{
        if (!data_dir || data_dir[0] != '/')
                return berr_set(err, -EINVAL, "network: the data directory must be an absolute path");
        static const struct cell_net_config none = { 0 };
        if (!c)
                c = &none;
        *p = (struct net_params){ .bridge = c->bridge ?: NET_DEFAULT_BRIDGE,
                                  .table = c->nft_table ?: NET_DEFAULT_TABLE,
                                  .ipv6 = c->ipv6,
                                  .allow = c->allow_host_ports,
                                  .n_allow = c->allow_host_ports ? c->n_allow_host_ports : 0 };
        if (!valid_ifname(p->bridge))
                return berr_set(err, -EINVAL,
                                "invalid bridge name \"%s\": 1 to %d characters of [A-Za-z0-9_.-]", p->bridge,
                                IF_NAMESIZE - 1);
        if (!valid_table(p->table))
                return berr_set(err, -EINVAL,
                                "invalid nftables table name \"%s\": a letter, then up to %d of [A-Za-z0-9_]",
                                p->table, NET_TABLE_MAX - 1);
        int r = net_parse_subnet(c->subnet ?: NET_DEFAULT_SUBNET, &p->net, &p->prefix, err);
        if (r < 0)
                return r;
        p->gw = p->net + 1;
        ip_str(p->gw, p->gw_str);
        char n[INET_ADDRSTRLEN];
        ip_str(p->net, n);
        snprintf(p->subnet, sizeof(p->subnet), "%s/%d", n, p->prefix);
        for (size_t i = 0; i < p->n_allow; i++)
                if (p->allow[i] == 0)
                        return berr_set(err, -EINVAL, "invalid allowed host port 0: ports are 1 to 65535");
        return 0;
}

static const char *proto_name(uint8_t proto)
{
        return proto == IPPROTO_UDP ? "udp" : "tcp";
}

/* Is a an address of this host? bind(2) says so without sending anything. */
static bool is_local_address(struct in_addr a)
{
        _cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (s < 0)
                return false;
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr = a };
        return bind(s, (struct sockaddr *)&sin, sizeof(sin)) == 0;
}

static int validate_ports(const struct cell_port_map *ports, size_t n, struct berr **err)
{
        for (size_t i = 0; i < n; i++) {
                const struct cell_port_map *m = &ports[i];
                if (m->host_port == 0 || m->container_port == 0)
                        return berr_set(err, -EINVAL, "invalid port mapping %u:%u: ports are 1 to 65535",
                                        m->host_port, m->container_port);
                if (m->proto != 0 && m->proto != IPPROTO_TCP && m->proto != IPPROTO_UDP)
                        return berr_set(err, -EINVAL,
                                        "invalid port mapping %u:%u: protocol %u is neither tcp nor udp",
                                        m->host_port, m->container_port, m->proto);
                if (m->host_ip) {
                        struct in_addr a;
                        if (inet_pton(AF_INET, m->host_ip, &a) != 1)
                                return berr_set(
                                    err, -EINVAL,
                                    "invalid port mapping %s:%u:%u: \"%s\" is not an IPv4 address",
                                    m->host_ip, m->host_port, m->container_port, m->host_ip);
                        if (a.s_addr != htonl(INADDR_ANY) && !is_local_address(a))
                                return berr_set(err, -EADDRNOTAVAIL,
                                                "invalid port mapping %s:%u:%u: %s is not an address of this "
                                                "host",
                                                m->host_ip, m->host_port, m->container_port, m->host_ip);
                }
                for (size_t j = 0; j < i; j++)
                        if (ports[j].host_port == m->host_port &&
                            (ports[j].proto == IPPROTO_UDP) == (m->proto == IPPROTO_UDP))
                                return berr_set(err, -EINVAL, "host port %u/%s is mapped twice", m->host_port,
                                                proto_name(m->proto));
        }
        return 0;
}

/*
 * The host end of a container's veth: "bv" + 10 hex digits of SHA-256(id), which fits IFNAMSIZ for any
 * id. Two ids sharing a name cannot hijack each other: creation is exclusive, and every veth carries its
 * owner in its alias ("berth:<id>"), which destroy checks before deleting anything.
 */
BERTH_STATIC void net_veth_name(const char *id, char out[IF_NAMESIZE])
{
        char d[DIGEST_STR_MAX];
        sha256_str(id, strlen(id), d);
        snprintf(out, IF_NAMESIZE, "bv%.10s", digest_hex(d));
}

/* ---- rtnetlink ---- */

static void nl_closep(struct mnl_socket **sk)
{
        if (*sk)
                mnl_socket_close(*sk);
}
#define _cleanup_nl_ _cleanup_(nl_closep)

static unsigned net_nl_seq;

static int nl_open(struct mnl_socket **ret)
{
        struct mnl_socket *sk = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
        if (!sk)
                return -errno;
        if (mnl_socket_bind(sk, 0, MNL_SOCKET_AUTOPID) < 0) {
                int r = -errno;
                mnl_socket_close(sk);
                return r;
        }
        *ret = sk;
        return 0;
}

/*
 * Send one request and read every reply up to its ack (or NLMSG_DONE for a dump), handing data messages
 * to cb (which must return MNL_CB_OK, so that the socket is always drained). 0 or -errno from the kernel.
 */
static int nl_call(struct mnl_socket *sk, struct nlmsghdr *nlh, mnl_cb_t cb, void *data)
{
        unsigned seq = __atomic_add_fetch(&net_nl_seq, 1, __ATOMIC_RELAXED);
        nlh->nlmsg_seq = seq;
        if ((nlh->nlmsg_flags & NLM_F_DUMP) != NLM_F_DUMP)
                nlh->nlmsg_flags |= NLM_F_ACK;
        if (mnl_socket_sendto(sk, nlh, nlh->nlmsg_len) < 0)
                return -errno;
        _cleanup_free_ char *buf = xmalloc(NET_NL_RECV_MAX);
        unsigned portid = mnl_socket_get_portid(sk);
        for (;;) {
                ssize_t n = mnl_socket_recvfrom(sk, buf, NET_NL_RECV_MAX);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                errno = 0;
                int r = mnl_cb_run(buf, (size_t)n, seq, portid, cb, data);
                if (r == MNL_CB_ERROR)
                        return errno > 0 ? -errno : -EPROTO;
                if (r == MNL_CB_STOP)
                        return 0;
        }
}

static struct nlmsghdr *nl_msg(char *buf, uint16_t type, uint16_t flags)
{
        memset(buf, 0, NET_NL_MSG_MAX);
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
        nlh->nlmsg_type = type;
        nlh->nlmsg_flags = NLM_F_REQUEST | flags;
        return nlh;
}

static struct ifinfomsg *nl_put_ifinfo(struct nlmsghdr *nlh, int family, int index)
{
        struct ifinfomsg *ifm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifm));
        ifm->ifi_family = (unsigned char)family;
        ifm->ifi_index = index;
        return ifm;
}

struct link_info {
        int index;
        int master;
        char kind[32];
        char alias[256];
        bool has_stats;
        struct rtnl_link_stats64 stats;
};

static int link_attr_cb(const struct nlattr *a, void *data)
{
        struct link_info *li = data;
        switch (mnl_attr_get_type(a)) {
        case IFLA_MASTER:
                if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0)
                        li->master = (int)mnl_attr_get_u32(a);
                break;
        case IFLA_STATS64:
                if (mnl_attr_get_payload_len(a) >= sizeof(li->stats)) {
                        memcpy(&li->stats, mnl_attr_get_payload(a), sizeof(li->stats));
                        li->has_stats = true;
                }
                break;
        case IFLA_IFALIAS:
                if (mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
                        snprintf(li->alias, sizeof(li->alias), "%s", mnl_attr_get_str(a));
                break;
        case IFLA_LINKINFO: {
                const struct nlattr *n;
                mnl_attr_for_each_nested(n, a)
                {
                        if (mnl_attr_get_type(n) == IFLA_INFO_KIND &&
                            mnl_attr_validate(n, MNL_TYPE_NUL_STRING) >= 0)
                                snprintf(li->kind, sizeof(li->kind), "%s", mnl_attr_get_str(n));
                }
                break;
        }
        }
        return MNL_CB_OK;
}

static int link_cb(const struct nlmsghdr *nlh, void *data)
{
        struct link_info *li = data;
        const struct ifinfomsg *ifm = mnl_nlmsg_get_payload(nlh);
        if (nlh->nlmsg_type != RTM_NEWLINK || nlh->nlmsg_len < MNL_NLMSG_HDRLEN + sizeof(*ifm))
                return MNL_CB_OK;
        li->index = ifm->ifi_index;
        mnl_attr_parse(nlh, sizeof(*ifm), link_attr_cb, li);
        return MNL_CB_OK;
}

/* Look a link up by name: 0 and *ret filled, or -ENODEV. */
static int link_get(struct mnl_socket *sk, const char *name, struct link_info *ret)
{
        char buf[NET_NL_MSG_MAX];
        struct nlmsghdr *nlh = nl_msg(buf, RTM_GETLINK, 0);
        nl_put_ifinfo(nlh, AF_UNSPEC, 0);
        mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        struct link_info li = { 0 };
        int r = nl_call(sk, nlh, link_cb, &li);
        if (r < 0)
                return r;
        if (li.index <= 0)
                return -ENODEV;
        *ret = li;
        return 0;
}

static int link_del(struct mnl_socket *sk, int index)
{
        char buf[NET_NL_MSG_MAX];
        struct nlmsghdr *nlh = nl_msg(buf, RTM_DELLINK, 0);
        nl_put_ifinfo(nlh, AF_UNSPEC, index);
        return nl_call(sk, nlh, NULL, NULL);
}

/*
 * Forget the host's neighbour (ARP) entry for ip on the bridge: an address leased again right after its
 * previous container went away would otherwise be sent to the old MAC address until the stale entry is
 * probed again, seconds later. Absent entries are fine.
 */
static int neigh_del(struct mnl_socket *sk, int index, uint32_t ip)
{
        char buf[NET_NL_MSG_MAX];
        struct nlmsghdr *nlh = nl_msg(buf, RTM_DELNEIGH, 0);
        struct ndmsg *nd = mnl_nlmsg_put_extra_header(nlh, sizeof(*nd));
        nd->ndm_family = AF_INET;
        nd->ndm_ifindex = index;
        uint32_t be = htonl(ip);
        mnl_attr_put(nlh, NDA_DST, sizeof(be), &be);
        int r = nl_call(sk, nlh, NULL, NULL);
        return r == -ENOENT || r == -ESRCH ? 0 : r;
}

static int link_set_up(struct mnl_socket *sk, int index)
{
        char buf[NET_NL_MSG_MAX];
        struct nlmsghdr *nlh = nl_msg(buf, RTM_NEWLINK, 0);
        struct ifinfomsg *ifm = nl_put_ifinfo(nlh, AF_UNSPEC, index);
        ifm->ifi_change = IFF_UP;
        ifm->ifi_flags = IFF_UP;
        return nl_call(sk, nlh, NULL, NULL);
}

/*
 * Per-device settings through IFLA_AF_SPEC (no /proc/sys): IPv6 address generation off (a bridge or a
 * bridge port needs no link-local address, and the host gains no IPv6 presence on the bridge), and
 * optionally IPv4 route_localnet (the bridge: see cell_net_setup_host()). An alias, when given, is set too.
 */
static int link_configure(struct mnl_socket *sk, int index, bool route_localnet, const char *alias)
{
        for (int with_v6 = 1; with_v6 >= 0; with_v6--) {
                char buf[NET_NL_MSG_MAX];
                struct nlmsghdr *nlh = nl_msg(buf, RTM_NEWLINK, 0);
                nl_put_ifinfo(nlh, AF_UNSPEC, index);
                if (alias)
                        mnl_attr_put_strz(nlh, IFLA_IFALIAS, alias);
                struct nlattr *spec = mnl_attr_nest_start(nlh, IFLA_AF_SPEC);
                if (route_localnet) {
                        struct nlattr *v4 = mnl_attr_nest_start(nlh, AF_INET);
                        struct nlattr *conf = mnl_attr_nest_start(nlh, IFLA_INET_CONF);
                        mnl_attr_put_u32(nlh, IPV4_DEVCONF_ROUTE_LOCALNET, 1);
                        mnl_attr_nest_end(nlh, conf);
                        mnl_attr_nest_end(nlh, v4);
                }
                if (with_v6) {
                        struct nlattr *v6 = mnl_attr_nest_start(nlh, AF_INET6);
                        mnl_attr_put_u8(nlh, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
                        mnl_attr_nest_end(nlh, v6);
                }
                mnl_attr_nest_end(nlh, spec);
                int r = nl_call(sk, nlh, NULL, NULL);
                if (r != -EAFNOSUPPORT || !with_v6)
                        return r;
                /* A kernel without IPv6 (ipv6.disable=1): nothing to switch off. */
        }
        return 0;
}

/* IFLA_BRPORT_ISOLATED: an isolated port forwards only to non-isolated ports, i.e. to the host. */
static int brport_isolate(struct mnl_socket *sk, int index)
{
        char buf[NET_NL_MSG_MAX];
        struct nlmsghdr *nlh = nl_msg(buf, RTM_SETLINK, 0);
        nl_put_ifinfo(nlh, AF_BRIDGE, index);
        struct nlattr *pi = mnl_attr_nest_start(nlh, IFLA_PROTINFO);
        mnl_attr_put_u8(nlh, IFLA_BRPORT_ISOLATED, 1);
        mnl_attr_nest_end(nlh, pi);
        return nl_call(sk, nlh, NULL, NULL);
}

static int addr_add(struct mnl_socket *sk, int index, uint32_t ip, int prefix)
{
        char buf[NET_NL_MSG_MAX];
        struct nlmsghdr *nlh = nl_msg(buf, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
        ifa->ifa_family = AF_INET;
        ifa->ifa_prefixlen = (unsigned char)prefix;
        ifa->ifa_scope = RT_SCOPE_UNIVERSE;
        ifa->ifa_index = (unsigned)index;
        uint32_t be = htonl(ip), bcast = htonl(ip | ~prefix_mask(prefix));
        mnl_attr_put(nlh, IFA_LOCAL, sizeof(be), &be);
        mnl_attr_put(nlh, IFA_ADDRESS, sizeof(be), &be);
        mnl_attr_put(nlh, IFA_BROADCAST, sizeof(bcast), &bcast);
        return nl_call(sk, nlh, NULL, NULL);
}

static int route_add_default(struct mnl_socket *sk, int oif, uint32_t gw)
{
        char buf[NET_NL_MSG_MAX];
        struct nlmsghdr *nlh = nl_msg(buf, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
        rtm->rtm_family = AF_INET;
        rtm->rtm_table = RT_TABLE_MAIN;
        rtm->rtm_protocol = RTPROT_STATIC;
        rtm->rtm_scope = RT_SCOPE_UNIVERSE;
        rtm->rtm_type = RTN_UNICAST;
        uint32_t be = htonl(gw);
        mnl_attr_put(nlh, RTA_GATEWAY, sizeof(be), &be);
        mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t)oif);
        return nl_call(sk, nlh, NULL, NULL);
}

/* A bridge with a fixed address: otherwise it takes its lowest port's, which changes as ports come and go. */
static int bridge_create(struct mnl_socket *sk, const char *name)
{
        uint8_t mac[6];
        if (getrandom(mac, sizeof(mac), 0) != (ssize_t)sizeof(mac))
                return -EIO;
        mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02); /* unicast, locally administered */
        char buf[NET_NL_MSG_MAX];
        struct nlmsghdr *nlh = nl_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        nl_put_ifinfo(nlh, AF_UNSPEC, 0);
        mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        mnl_attr_put(nlh, IFLA_ADDRESS, sizeof(mac), mac);
        struct nlattr *li = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
        mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "bridge");
        mnl_attr_nest_end(nlh, li);
        return nl_call(sk, nlh, NULL, NULL);
}

/* A veth pair: `host` on the bridge (down), its peer created directly as "eth0" inside the namespace nsfd. */
static int veth_create(struct mnl_socket *sk, const char *host, int master, int nsfd)
{
        char buf[NET_NL_MSG_MAX];
        struct nlmsghdr *nlh = nl_msg(buf, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        nl_put_ifinfo(nlh, AF_UNSPEC, 0);
        mnl_attr_put_strz(nlh, IFLA_IFNAME, host);
        mnl_attr_put_u32(nlh, IFLA_MASTER, (uint32_t)master);
        struct nlattr *li = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
        mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
        struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
        struct nlattr *peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
        nl_put_ifinfo(nlh, AF_UNSPEC, 0); /* VETH_INFO_PEER holds an ifinfomsg, then the peer's attributes */
        mnl_attr_put_strz(nlh, IFLA_IFNAME, "eth0");
        mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t)nsfd);
        mnl_attr_nest_end(nlh, peer);
        mnl_attr_nest_end(nlh, data);
        mnl_attr_nest_end(nlh, li);
        return nl_call(sk, nlh, NULL, NULL);
}

struct route_scan {
        uint32_t net;
        int prefix;
        int bridge_index;
        bool conflict;
        char what[64];
};

static int route_attr_cb(const struct nlattr *a, void *data)
{
        const struct nlattr **tb = data;
        int t = mnl_attr_get_type(a);
        if (t <= RTA_MAX)
                tb[t] = a;
        return MNL_CB_OK;
}

static int route_scan_cb(const struct nlmsghdr *nlh, void *data)
{
        struct route_scan *rs = data;
        const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
        if (nlh->nlmsg_type != RTM_NEWROUTE || nlh->nlmsg_len < MNL_NLMSG_HDRLEN + sizeof(*rtm) ||
            rtm->rtm_family != AF_INET || rtm->rtm_dst_len == 0 || rs->conflict)
                return MNL_CB_OK;
        const struct nlattr *tb[RTA_MAX + 1] = { 0 };
        mnl_attr_parse(nlh, sizeof(*rtm), route_attr_cb, tb);
        uint32_t table = rtm->rtm_table;
        if (tb[RTA_TABLE] && mnl_attr_validate(tb[RTA_TABLE], MNL_TYPE_U32) >= 0)
                table = mnl_attr_get_u32(tb[RTA_TABLE]);
        if (table != RT_TABLE_MAIN || !tb[RTA_DST] || mnl_attr_get_payload_len(tb[RTA_DST]) != 4)
                return MNL_CB_OK;
        int oif = 0;
        if (tb[RTA_OIF] && mnl_attr_validate(tb[RTA_OIF], MNL_TYPE_U32) >= 0)
                oif = (int)mnl_attr_get_u32(tb[RTA_OIF]);
        if (oif != 0 && oif == rs->bridge_index)
                return MNL_CB_OK; /* ours */
        uint32_t dst;
        memcpy(&dst, mnl_attr_get_payload(tb[RTA_DST]), 4);
        dst = ntohl(dst);
        int common = MIN((int)rtm->rtm_dst_len, rs->prefix);
        if (((dst ^ rs->net) & prefix_mask(common)) == 0) {
                char d[INET_ADDRSTRLEN], ifn[IF_NAMESIZE] = "?";
                ip_str(dst, d);
                if (oif)
                        if_indextoname((unsigned)oif, ifn);
                rs->conflict = true;
                snprintf(rs->what, sizeof(rs->what), "%s/%u on %s", d, rtm->rtm_dst_len, ifn);
        }
        return MNL_CB_OK;
}

/*
 * A dump on a socket of its own, again while the kernel reports it inconsistent (NLM_F_DUMP_INTR, which
 * libmnl turns into EINTR): a fresh socket never holds the rest of an abandoned dump. reset clears data.
 */
static int nl_dump(struct nlmsghdr *nlh, mnl_cb_t cb, void *data, void (*reset)(void *data))
{
        for (int attempt = 0;; attempt++) {
                _cleanup_nl_ struct mnl_socket *sk = NULL;
                int r = nl_open(&sk);
                if (r < 0)
                        return r;
                reset(data);
                r = nl_call(sk, nlh, cb, data);
                if (r != -EINTR || attempt == NET_NL_DUMP_TRIES)
                        return r;
        }
}

static void route_scan_reset(void *data)
{
        struct route_scan *rs = data;
        rs->conflict = false;
        rs->what[0] = '\0';
}

/* Refuse a subnet that overlaps a route of the main table on another interface (it would hijack it). */
static int check_subnet_free(const struct net_params *p, int bridge_index, struct berr **err)
{
        char buf[NET_NL_MSG_MAX];
        struct nlmsghdr *nlh = nl_msg(buf, RTM_GETROUTE, NLM_F_DUMP);
        struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
        rtm->rtm_family = AF_INET;
        struct route_scan rs = { .net = p->net, .prefix = p->prefix, .bridge_index = bridge_index };
        int r = nl_dump(nlh, route_scan_cb, &rs, route_scan_reset);
        if (r < 0)
                return berr_set_errno(err, r, "network: list routes");
        if (rs.conflict)
                return berr_set(err, -EEXIST,
                                "network: subnet %s overlaps the route %s; choose another subnet in the cell "
                                "configuration",
                                p->subnet, rs.what);
        return 0;
}

struct port_count {
        int master;
        int n;
};

static int port_count_cb(const struct nlmsghdr *nlh, void *data)
{
        struct port_count *pc = data;
        struct link_info li = { 0 };
        link_cb(nlh, &li);
        if (li.index > 0 && li.master == pc->master)
                pc->n++;
        return MNL_CB_OK;
}

static void port_count_reset(void *data)
{
        ((struct port_count *)data)->n = 0;
}

static int bridge_count_ports(int index, int *ret)
{
        char buf[NET_NL_MSG_MAX];
        struct nlmsghdr *nlh = nl_msg(buf, RTM_GETLINK, NLM_F_DUMP);
        nl_put_ifinfo(nlh, AF_UNSPEC, 0);
        struct port_count pc = { .master = index };
        int r = nl_dump(nlh, port_count_cb, &pc, port_count_reset);
        if (r < 0)
                return r;
        *ret = pc.n;
        return 0;
}

/* ---- nftables ---- */

/*
 * libnftables (with libnftnl, libxtables and libgmp) is loaded on first use: a container without a
 * network, and every command that does not touch the network, does not pay for mapping and relocating it
 * at start (see docs/performance.md).
 */
static struct {
        struct nft_ctx *(*ctx_new)(uint32_t flags);
        void (*ctx_free)(struct nft_ctx *ctx);
        int (*buffer_output)(struct nft_ctx *ctx);
        int (*buffer_error)(struct nft_ctx *ctx);
        const char *(*get_output_buffer)(struct nft_ctx *ctx);
        const char *(*get_error_buffer)(struct nft_ctx *ctx);
        void (*output_set_flags)(struct nft_ctx *ctx, unsigned int flags);
        int (*run_cmd_from_buffer)(struct nft_ctx *nft, const char *buf);
        const char *error;
} nftlib;

static void nftlib_load(void)
{
        void *h = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
        if (!h) {
                nftlib.error = dlerror();
                return;
        }
        const struct {
                void **slot;
                const char *name;
        } syms[] = {
                { (void **)&nftlib.ctx_new, "nft_ctx_new" },
                { (void **)&nftlib.ctx_free, "nft_ctx_free" },
                { (void **)&nftlib.buffer_output, "nft_ctx_buffer_output" },
                { (void **)&nftlib.buffer_error, "nft_ctx_buffer_error" },
                { (void **)&nftlib.get_output_buffer, "nft_ctx_get_output_buffer" },
                { (void **)&nftlib.get_error_buffer, "nft_ctx_get_error_buffer" },
                { (void **)&nftlib.output_set_flags, "nft_ctx_output_set_flags" },
                { (void **)&nftlib.run_cmd_from_buffer, "nft_run_cmd_from_buffer" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(syms); i++)
                if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
                        nftlib.error = "libnftables.so.1 lacks a function berth needs";
                        nftlib.ctx_new = NULL;
                        return;
                }
}

static void nft_ctx_freep(struct nft_ctx **c)
{
        if (*c)
                nftlib.ctx_free(*c);
}

/* libnftables' error as one line: "Could not process rule: File exists (in \"<command>\")". */
static char *nft_error_text(const char *buf)
{
        if (!buf || !*buf)
                return xstrdup("unknown error");
        const char *e = strstr(buf, "Error: ");
        const char *msg = e ? e + strlen("Error: ") : buf;
        size_t n = strcspn(msg, "\n");
        const char *cmd = msg[n] == '\n' ? msg + n + 1 : NULL;
        size_t m = cmd ? strcspn(cmd, "\n") : 0;
        if (e && m)
                return xasprintf("%.*s (in \"%.*s\")", (int)n, msg, (int)m, cmd);
        return xasprintf("%.*s", (int)n, msg);
}

/*
 * Run nft commands (one transaction). json: list output as JSON into *ret_out (caller frees). Errors are
 * -EEXIST / -ENOENT when libnftables says "File exists" / "No such file or directory", else -EIO.
 */
static int nft_run(const char *cmds, bool json, char **ret_out, struct berr **err)
{
        static pthread_once_t once = PTHREAD_ONCE_INIT;
        pthread_once(&once, nftlib_load);
        if (!nftlib.ctx_new)
                return berr_set(err, -ENOSYS, "nftables: cannot load libnftables: %s", nftlib.error);
        _cleanup_(nft_ctx_freep) struct nft_ctx *ctx = nftlib.ctx_new(NFT_CTX_DEFAULT);
        if (!ctx)
                return berr_set(err, -ENOMEM, "nftables: cannot create a context");
        if (nftlib.buffer_output(ctx) < 0 || nftlib.buffer_error(ctx) < 0)
                return berr_set(err, -ENOMEM, "nftables: cannot buffer output");
        if (json)
                nftlib.output_set_flags(ctx, NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_NUMERIC_ALL);
        if (nftlib.run_cmd_from_buffer(ctx, cmds) != 0) {
                const char *e = nftlib.get_error_buffer(ctx);
                int code = -EIO;
                if (e && strstr(e, "File exists"))
                        code = -EEXIST;
                else if (e && strstr(e, "No such file or directory"))
                        code = -ENOENT;
                else if (e && strstr(e, "Operation not permitted"))
                        code = -EPERM;
                _cleanup_free_ char *msg = nft_error_text(e);
                return berr_set(err, code, "nftables: %s", msg);
        }
        if (ret_out) {
                const char *o = nftlib.get_output_buffer(ctx);
                if (o && strlen(o) > NET_NFT_OUT_MAX)
                        return berr_set(err, -EFBIG, "nftables: listing larger than %d bytes",
                                        NET_NFT_OUT_MAX);
                *ret_out = xstrdup(o ?: "");
        }
        return 0;
}

/*
 * The host's rules. Host chains are flushed and refilled in the same transaction, so a second
 * setup_host (another process, a changed allow list) never opens a window without them; the map and the
 * containers' chains are left alone.
 */
static char *host_ruleset(const struct net_params *p)
{
        const char *t = p->table, *b = p->bridge;
        char *allow = NULL;
        if (p->n_allow) {
                size_t cap = p->n_allow * 7 + 1, len = 0;
                _cleanup_free_ char *list = xmalloc(cap);
                for (size_t i = 0; i < p->n_allow; i++)
                        len += (size_t)snprintf(list + len, cap - len, "%s%u", i ? ", " : "", p->allow[i]);
                allow = xasprintf("add rule inet %s input iifname \"%s\" meta l4proto { tcp, udp } th dport "
                                  "{ %s } accept\n",
                                  t, b, list);
        }
        char *s = xasprintf(
            "add table inet %1$s\n"
            "add map inet %1$s hostports { type inet_proto . inet_service : verdict; }\n"
            "add chain inet %1$s guard { type filter hook prerouting priority raw; policy accept; }\n"
            "add chain inet %1$s prerouting { type nat hook prerouting priority dstnat; policy accept; }\n"
            "add chain inet %1$s output { type nat hook output priority -100; policy accept; }\n"
            "add chain inet %1$s postrouting { type nat hook postrouting priority srcnat; policy accept; }\n"
            "add chain inet %1$s input { type filter hook input priority filter; policy accept; }\n"
            "add chain inet %1$s forward { type filter hook forward priority filter; policy accept; }\n"
            "flush chain inet %1$s guard\n"
            "flush chain inet %1$s prerouting\n"
            "flush chain inet %1$s output\n"
            "flush chain inet %1$s postrouting\n"
            "flush chain inet %1$s input\n"
            "flush chain inet %1$s forward\n"
            /* CVE-2020-8558: route_localnet on the bridge must not open the host's 127/8 to containers. */
            "add rule inet %1$s guard iifname \"%2$s\" ip daddr 127.0.0.0/8 drop\n"
            "add rule inet %1$s guard iifname \"%2$s\" ip saddr != %3$s drop\n"
            "add rule inet %1$s prerouting fib daddr type local meta nfproto ipv4 "
            "meta l4proto . th dport vmap @hostports\n"
            "add rule inet %1$s output fib daddr type local meta nfproto ipv4 "
            "meta l4proto . th dport vmap @hostports\n"
            /* The host's own 127.0.0.1 → container: the container would drop a loopback source. */
            "add rule inet %1$s postrouting oifname \"%2$s\" ip saddr 127.0.0.0/8 masquerade\n"
            "add rule inet %1$s postrouting ip saddr %3$s oifname != \"%2$s\" masquerade\n"
            "add rule inet %1$s input iifname \"%2$s\" ct state established,related accept\n"
            "%4$s"
            "add rule inet %1$s input iifname \"%2$s\" drop\n"
            "add rule inet %1$s forward iifname \"%2$s\" oifname \"%2$s\" drop\n"
            "add rule inet %1$s forward oifname \"%2$s\" ct state established,related accept\n"
            "add rule inet %1$s forward oifname \"%2$s\" ct status dnat accept\n"
            "add rule inet %1$s forward oifname \"%2$s\" drop\n",
            t, b, p->subnet, allow ?: "");
        free(allow);
        return s;
}

static char *ctr_chain(const char *id)
{
        return xasprintf(NET_CHAIN_PREFIX "%s", id);
}

/* The map elements (rendered as nft keys, "tcp . 8080") that jump to chain. Caller frees the array. */
static int nft_elements_of(const struct net_params *p, const char *chain, char ***ret, size_t *ret_n,
                           struct berr **err)
{
        _cleanup_free_ char *cmd = xasprintf("list map inet %s hostports\n", p->table);
        _cleanup_free_ char *out = NULL;
        int r = nft_run(cmd, true, &out, err);
        if (r < 0)
                return r;
        _cleanup_json_ json_t *doc = NULL;
        if ((r = json_parse_buf(out, strlen(out), &doc, err)) < 0)
                return berr_prefix(err, r, "nftables: list map");
        char **keys = NULL;
        size_t n = 0, i, j;
        json_t *item;
        json_array_foreach (json_object_get(doc, "nftables"), i, item) {
                json_t *elems = json_object_get(json_object_get(item, "map"), "elem");
                json_t *e;
                json_array_foreach (elems, j, e) {
                        json_t *key = json_array_get(e, 0), *val = json_array_get(e, 1);
                        if (json_is_object(key) && json_object_get(key, "elem"))
                                key = json_object_get(json_object_get(key, "elem"), "val");
                        json_t *jump = json_object_get(val, "jump") ?: json_object_get(val, "goto");
                        const char *target = json_string_value(json_object_get(jump, "target"));
                        json_t *concat = json_object_get(key, "concat");
                        json_t *proto = json_array_get(concat, 0), *port = json_array_get(concat, 1);
                        if (!target || strcmp(target, chain) != 0 || !json_is_integer(port))
                                continue;
                        char *k;
                        if (json_is_string(proto) &&
                            strspn(json_string_value(proto), "abcdefghijklmnopqrstuvwxyz") ==
                                strlen(json_string_value(proto)))
                                k = xasprintf("%s . %lld", json_string_value(proto),
                                              json_integer_value(port));
                        else if (json_is_integer(proto))
                                k = xasprintf("%lld . %lld", json_integer_value(proto),
                                              json_integer_value(port));
                        else
                                continue;
                        keys = xrealloc(keys, (n + 1) * sizeof(*keys));
                        keys[n++] = k;
                }
        }
        *ret = keys;
        *ret_n = n;
        return 0;
}

static void strv_free_n(char **v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

/* Remove the container's map elements and chain; absent ones (or an absent table) are fine. */
static int nft_remove_container(const struct net_params *p, const char *id, struct berr **err)
{
        _cleanup_free_ char *chain = ctr_chain(id);
        char **keys = NULL;
        size_t n = 0;
        _cleanup_berr_ struct berr *e = NULL;
        int r = nft_elements_of(p, chain, &keys, &n, &e);
        if (r == -ENOENT)
                return 0; /* no table (or no map): nothing of ours either */
        if (r < 0) {
                berr_set(err, r, "%s", berr_msg(e));
                return r;
        }
        _cleanup_free_ char *cmd = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&cmd, &len);
        if (!f)
                abort(); /* out of memory */
        if (n) {
                fprintf(f, "delete element inet %s hostports { ", p->table);
                for (size_t i = 0; i < n; i++)
                        fprintf(f, "%s%s", i ? ", " : "", keys[i]);
                fprintf(f, " }\n");
        }
        fclose(f);
        strv_free_n(keys, n);
        /* The chain in the same transaction when it exists, so nothing dangles in between. */
        _cleanup_free_ char *with_chain = xasprintf("%sflush chain inet %s %s\ndelete chain inet %s %s\n",
                                                    cmd, p->table, chain, p->table, chain);
        berr_free(TAKE_PTR(e));
        r = nft_run(with_chain, false, NULL, &e);
        if (r == -ENOENT && n) { /* elements without their chain cannot exist; still, remove them */
                berr_free(TAKE_PTR(e));
                r = nft_run(cmd, false, NULL, &e);
        } else if (r == -ENOENT) {
                r = 0; /* no chain: a container without port mappings, or destroyed already */
        }
        if (r < 0) {
                berr_set(err, r, "%s", berr_msg(e));
                return r;
        }
        return 0;
}

/* Which of the requested host ports is taken already (after a "File exists")? -1 if none any more. */
static int nft_find_taken(const struct net_params *p, const struct cell_port_map *ports, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *cmd = xasprintf("get element inet %s hostports { %s . %u }\n", p->table,
                                                     proto_name(ports[i].proto), ports[i].host_port);
                if (nft_run(cmd, false, NULL, NULL) == 0)
                        return (int)i;
        }
        return -1;
}

/* The container's chain and map elements in one transaction: all ports are claimed, or none. */
static int nft_add_container(const struct net_params *p, const char *id, const char *ip,
                             const struct cell_port_map *ports, size_t n, struct berr **err)
{
        _cleanup_free_ char *chain = ctr_chain(id);
        _cleanup_free_ char *cmd = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&cmd, &len);
        if (!f)
                abort(); /* out of memory */
        fprintf(f, "create chain inet %s %s\n", p->table, chain);
        for (size_t i = 0; i < n; i++) {
                const struct cell_port_map *m = &ports[i];
                fprintf(f, "add rule inet %s %s ", p->table, chain);
                if (m->host_ip && strcmp(m->host_ip, "0.0.0.0") != 0) /* validated: a dotted quad */
                        fprintf(f, "ip daddr %s ", m->host_ip);
                fprintf(f, "%s dport %u dnat ip to %s:%u\n", proto_name(m->proto), m->host_port, ip,
                        m->container_port);
        }
        fprintf(f, "create element inet %s hostports { ", p->table);
        for (size_t i = 0; i < n; i++)
                fprintf(f, "%s%s . %u : jump %s", i ? ", " : "", proto_name(ports[i].proto),
                        ports[i].host_port, chain);
        fprintf(f, " }\n");
        fclose(f);
        _cleanup_berr_ struct berr *e = NULL;
        int r = nft_run(cmd, false, NULL, &e);
        if (r == -EEXIST) {
                int i = nft_find_taken(p, ports, n);
                if (i >= 0) {
                        if (ports[i].proto == IPPROTO_UDP)
                                return berr_set(err, -EADDRINUSE, "host port %u/udp is already allocated",
                                                ports[i].host_port);
                        return berr_set(err, -EADDRINUSE, "host port %u is already allocated",
                                        ports[i].host_port);
                }
        }
        if (r == -ENOENT)
                return berr_set(err, r,
                                "network: nftables table inet %s is missing (prepare the host first): %s",
                                p->table, berr_msg(e));
        if (r < 0)
                return berr_set(err, r, "network: port mappings: %s", berr_msg(e));
        return 0;
}

/* ---- files: sysctls, leases, the netns directory ---- */

static int write_file(const char *path, const char *value)
{
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        return fs_write_all(fd, value, strlen(value));
}

static bool parse_ipv4(const char *s, uint32_t *ret)
{
        struct in_addr a;
        if (inet_pton(AF_INET, s, &a) != 1)
                return false;
        *ret = ntohl(a.s_addr);
        return true;
}

/* Lease the lowest free address of the subnet (not the network, the gateway nor broadcast) for id. */
static int lease_acquire(int netfd, const struct net_params *p, const char *id, uint32_t *ret,
                         struct berr **err)
{
        uint32_t last = p->net | ~prefix_mask(p->prefix);
        for (uint32_t a = p->gw + 1; a < last; a++) {
                char name[INET_ADDRSTRLEN];
                ip_str(a, name);
                if (symlinkat(id, netfd, name) == 0) {
                        *ret = a;
                        return 0;
                }
                if (errno != EEXIST)
                        return berr_set_errno(err, -errno, "network: lease %s", name);
        }
        return berr_set(err, -ENOSPC, "network: no free address in subnet %s: all %u are leased", p->subnet,
                        last - p->gw - 1);
}

/*
 * Walk the leases: with id, remove those of id (returns how many); without, count those inside the
 * subnet (p non-NULL) or all (p NULL).
 */
static int lease_walk(int netfd, const struct net_params *p, const char *id)
{
        int dfd = openat(netfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        DIR *d = fdopendir(dfd);
        if (!d) {
                int r = -errno;
                close(dfd);
                return r;
        }
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                uint32_t a;
                if (!parse_ipv4(de->d_name, &a))
                        continue;
                if (!id) {
                        if (!p || ((a ^ p->net) & prefix_mask(p->prefix)) == 0)
                                n++;
                        continue;
                }
                char target[NET_ID_MAX + 2];
                ssize_t len = readlinkat(netfd, de->d_name, target, sizeof(target) - 1);
                if (len <= 0)
                        continue;
                target[len] = '\0';
                if (strcmp(target, id) == 0 && unlinkat(netfd, de->d_name, 0) == 0)
                        n++;
        }
        closedir(d);
        return n;
}

static int open_dir(const char *path, mode_t mode, int *ret, struct berr **err)
{
        int r = fs_mkdir_p_at(AT_FDCWD, path, mode);
        if (r < 0)
                return berr_set_errno(err, r, "network: create %s", path);
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return berr_set_errno(err, -errno, "network: open %s", path);
        *ret = fd;
        return 0;
}

static int lock_net(int netfd, struct berr **err)
{
        int fd = openat(netfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return berr_set_errno(err, -errno, "network: open the lock");
        if (flock(fd, LOCK_EX) < 0) {
                int r = -errno;
                close(fd);
                return berr_set_errno(err, r, "network: lock");
        }
        return fd;
}

static int is_mount_root(const char *path)
{
        struct statx stx;
        if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, 0, &stx) < 0)
                return -errno;
        if (!(stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT))
                return -EOPNOTSUPP; /* Linux < 5.8 */
        return !!(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

/*
 * Make <data-dir>/cell/netns a mount point of its own, shared in a peer group of its own, as `ip netns`
 * does with /run/netns: a mount namespace created later (a monitor, a runtime) gets a copy of the
 * namespace files, and our umount then propagates into it, so the namespace can actually be freed.
 * Private first, so that the bind mounts do not leak into the peer group of the mount above it. Under the
 * net lock, so that two processes do not stack two mounts.
 */
static int netns_dir_prepare(int netfd, const char *nsdir, struct berr **err)
{
        _cleanup_close_ int lock = lock_net(netfd, err);
        if (lock < 0)
                return lock;
        int r = is_mount_root(nsdir);
        if (r < 0)
                return berr_set_errno(err, r, "network: statx %s", nsdir);
        if (r)
                return 0;
        if (mount(nsdir, nsdir, NULL, MS_BIND | MS_REC, NULL) < 0)
                return berr_set_errno(err, -errno, "network: bind mount %s", nsdir);
        if (mount(NULL, nsdir, NULL, MS_PRIVATE, NULL) < 0 || mount(NULL, nsdir, NULL, MS_SHARED, NULL) < 0) {
                r = -errno;
                umount2(nsdir, MNT_DETACH);
                return berr_set_errno(err, r, "network: make %s a shared mount", nsdir);
        }
        return 0;
}

/* ---- the namespace ---- */

struct netns_job {
        bool ipv6;
        int nsfd;              /* out: the new namespace */
        struct mnl_socket *sk; /* out: rtnetlink inside it */
        int r;
        const char *failed; /* out: which step failed */
};

/*
 * A thread, so that only it ever changes namespace: unshare a new network namespace, keep an fd of it,
 * set the namespace's sysctls (/proc/sys/net is per thread's netns) and open an rtnetlink socket in it
 * (a netlink socket stays in the namespace it was created in, whoever uses it later).
 */
static void *netns_thread(void *arg)
{
        struct netns_job *j = arg;
        if (setns(j->nsfd, CLONE_NEWNET) < 0) {
                j->r = -errno;
                j->failed = "setns into the new network namespace";
                return NULL;
        }
        /* Before eth0 exists, so that it inherits "default". No IPv6: no address, no DAD, no RA. */
        static const char *const v6off[] = { "/proc/sys/net/ipv6/conf/all/disable_ipv6",
                                             "/proc/sys/net/ipv6/conf/default/disable_ipv6" };
        /* IPv6 on: the link-local address is usable at once instead of after a second of DAD. */
        static const char *const v6on[] = { "/proc/sys/net/ipv6/conf/all/accept_dad",
                                            "/proc/sys/net/ipv6/conf/default/accept_dad" };
        for (size_t i = 0; i < 2; i++) {
                const char *path = j->ipv6 ? v6on[i] : v6off[i];
                int r = write_file(path, j->ipv6 ? "0" : "1");
                if (r < 0 && r != -ENOENT) { /* ENOENT: a kernel without IPv6 */
                        j->r = r;
                        j->failed = path;
                        return NULL;
                }
        }
        int r = nl_open(&j->sk);
        if (r < 0) {
                j->r = r;
                j->failed = "rtnetlink socket";
        }
        return NULL;
}

static int write_proc(pid_t pid, const char *file, const char *text)
{
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
        return write_file(path, text);
}

/*
 * A user namespace with the containers' mapping (image/idmap.h) and a network namespace it owns. The
 * container joins both: owning its network namespace, its root may mount a fresh, read-only sysfs and use
 * CAP_NET_RAW there, as with a namespace the runtime makes itself (a netns of the host's user namespace
 * would make the runtime bind the host's /sys instead). A child process makes them (unshare(CLONE_NEWUSER)
 * needs a single-threaded caller); the parent writes the mapping and keeps fds of both.
 */
static int userns_netns_new(int *ret_userfd, int *ret_netfd, const char **failed)
{
        int to_child[2], to_parent[2];
        if (pipe2(to_child, O_CLOEXEC) < 0)
                return *failed = "pipe", -errno;
        if (pipe2(to_parent, O_CLOEXEC) < 0) {
                int r = -errno;
                close(to_child[0]);
                close(to_child[1]);
                return *failed = "pipe", r;
        }
        pid_t pid = fork();
        if (pid == 0) {
                close(to_child[1]);
                close(to_parent[0]);
                char b = 0, ok = 'u';
                if (unshare(CLONE_NEWUSER) < 0)
                        ok = 'U';
                if (write(to_parent[1], &ok, 1) != 1 || ok != 'u' || read(to_child[0], &b, 1) != 1 ||
                    b != 'm')
                        _exit(1);
                ok = unshare(CLONE_NEWNET) < 0 ? 'N' : 'n';
                if (write(to_parent[1], &ok, 1) != 1)
                        _exit(1);
                /* Held until the parent has its fds. */
                (void)!read(to_child[0], &b, 1);
                _exit(0);
        }
        int r = pid < 0 ? -errno : 0;
        close(to_child[0]);
        close(to_parent[1]);
        char b = 0;
        if (r == 0 && (read(to_parent[0], &b, 1) != 1 || b != 'u'))
                r = -EPERM, *failed = "unshare(CLONE_NEWUSER)";
        if (r == 0) {
                char map[64];
                snprintf(map, sizeof(map), "0 %u %u\n", IDMAP_HOST_BASE, IDMAP_SIZE);
                if ((r = write_proc(pid, "uid_map", map)) < 0 || (r = write_proc(pid, "gid_map", map)) < 0)
                        *failed = "write the user namespace's id map";
        }
        if (r == 0 && (write(to_child[1], "m", 1) != 1 || read(to_parent[0], &b, 1) != 1 || b != 'n'))
                r = -EPERM, *failed = "unshare(CLONE_NEWNET)";
        if (r == 0) {
                char path[64];
                snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
                *ret_userfd = open(path, O_RDONLY | O_CLOEXEC);
                snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
                *ret_netfd = open(path, O_RDONLY | O_CLOEXEC);
                if (*ret_userfd < 0 || *ret_netfd < 0) {
                        r = -errno;
                        *failed = "open the new namespaces";
                        closep(ret_userfd);
                        closep(ret_netfd);
                }
        }
        close(to_child[1]);
        close(to_parent[0]);
        if (pid > 0)
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        return r;
}

static int netns_new(bool ipv6, int *ret_userfd, int *ret_nsfd, struct mnl_socket **ret_sk, struct berr **err)
{
        struct netns_job j = { .ipv6 = ipv6, .nsfd = -1 };
        int userfd = -1;
        int r = userns_netns_new(&userfd, &j.nsfd, &j.failed);
        if (r < 0)
                return berr_set_errno(err, r, "network namespace: %s", j.failed);
        pthread_t t;
        r = pthread_create(&t, NULL, netns_thread, &j);
        if (r != 0) {
                closep(&userfd);
                closep(&j.nsfd);
                return berr_set_errno(err, -r, "network: start a thread");
        }
        pthread_join(t, NULL);
        if (j.r < 0) {
                closep(&userfd);
                closep(&j.nsfd);
                if (j.sk)
                        mnl_socket_close(j.sk);
                return berr_set_errno(err, j.r, "network namespace: %s", j.failed);
        }
        *ret_userfd = userfd;
        *ret_nsfd = j.nsfd;
        *ret_sk = j.sk;
        return 0;
}

/* Inside the namespace: lo up, eth0 with the address and up, the default route. */
static int netns_configure(struct mnl_socket *ns, uint32_t ip, const struct net_params *p, struct berr **err)
{
        int r = link_set_up(ns, 1); /* lo is always ifindex 1 (LOOPBACK_IFINDEX) */
        if (r < 0)
                return berr_set_errno(err, r, "network namespace: set lo up");
        struct link_info eth0;
        if ((r = link_get(ns, "eth0", &eth0)) < 0)
                return berr_set_errno(err, r, "network namespace: find eth0");
        if ((r = addr_add(ns, eth0.index, ip, p->prefix)) < 0)
                return berr_set_errno(err, r, "network namespace: add the address to eth0");
        if ((r = link_set_up(ns, eth0.index)) < 0)
                return berr_set_errno(err, r, "network namespace: set eth0 up");
        if ((r = route_add_default(ns, eth0.index, p->gw)) < 0)
                return berr_set_errno(err, r, "network namespace: add the default route via %s", p->gw_str);
        return 0;
}

/* ---- host ---- */

#define IP_FORWARD "/proc/sys/net/ipv4/ip_forward"
#define FWD_DIR    "/run/berth/ip_forward"

/*
 * net.ipv4.ip_forward is one per network namespace, shared by every bridge and data dir in it, so its record
 * is too: FWD_DIR/<namespace inode>/ holds "orig" while berth has switched it on there and an entry per
 * bridge set up since. Teardown switches it off again when it removes the last entry and "orig" is there.
 * (A record per data dir, as before, let one data dir's teardown switch forwarding off under another's
 * containers, and a second bridge's teardown under the first's.) flock() on the directory orders every
 * process's setups and teardowns; the last one out removes the directory, and a process that opened it just
 * before sees it unlinked once it holds the lock and opens it anew. create: false opens only an existing one
 * (*ret -1 when there is none).
 */
static int fwd_open(bool create, int *ret, char path[static 64], struct berr **err)
{
        struct stat st;
        if (stat("/proc/self/ns/net", &st) < 0)
                return berr_set_errno(err, -errno, "network: stat /proc/self/ns/net");
        snprintf(path, 64, FWD_DIR "/%llu", (unsigned long long)st.st_ino);
        for (int tries = 0; tries < 100; tries++) {
                int r, fd = -1;
                if (create && (r = open_dir(path, 0700, &fd, err)) < 0)
                        return r;
                if (!create && (fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
                        if (errno != ENOENT)
                                return berr_set_errno(err, -errno, "network: open %s", path);
                        *ret = -1;
                        return 0;
                }
                struct stat ds;
                if (flock(fd, LOCK_EX) < 0 || fstat(fd, &ds) < 0) {
                        r = -errno;
                        close(fd);
                        return berr_set_errno(err, r, "network: lock %s", path);
                }
                if (ds.st_nlink > 0) {
                        *ret = fd;
                        return 0;
                }
                close(fd); /* removed by a teardown while we waited for the lock */
        }
        return berr_set(err, -EAGAIN, "network: %s keeps being removed", path);
}

/* Switch ip_forward on (recording that berth did, if it was off) and enter bridge as one of its users. */
static int fwd_acquire(const char *bridge, struct berr **err)
{
        char path[64];
        _cleanup_close_ int fd = -1;
        int r = fwd_open(true, &fd, path, err);
        if (r < 0)
                return r;
        _cleanup_close_ int entry = openat(fd, bridge, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (entry < 0)
                return berr_set_errno(err, -errno, "network: create %s/%s", path, bridge);
        _cleanup_free_ char *v = NULL;
        size_t len = 0;
        if ((r = fs_read_file_at(AT_FDCWD, IP_FORWARD, 16, &v, &len)) < 0)
                return berr_set_errno(err, r, "network: read %s", IP_FORWARD);
        if (v[0] == '1')
                return 0;
        _cleanup_close_ int orig = openat(fd, "orig", O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (orig < 0)
                return berr_set_errno(err, -errno, "network: record the previous ip_forward in %s", path);
        if ((r = write_file(IP_FORWARD, "1")) < 0)
                return berr_set_errno(err, r, "network: enable %s (containers' traffic is forwarded)",
                                      IP_FORWARD);
        return 0;
}

/* Remove bridge from ip_forward's users; the last one switches it back off if berth switched it on. */
static int fwd_release(const char *bridge, struct berr **err)
{
        char path[64];
        _cleanup_close_ int fd = -1;
        int r = fwd_open(false, &fd, path, err);
        if (r < 0 || fd < 0)
                return r;
        if (unlinkat(fd, bridge, 0) < 0 && errno != ENOENT)
                return berr_set_errno(err, -errno, "network: remove %s/%s", path, bridge);
        DIR *d = opendir(path); /* the directory fd holds: the lock keeps it from being removed */
        if (!d)
                return berr_set_errno(err, -errno, "network: list %s", path);
        bool users = false, orig = false;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, "orig") == 0) {
                        orig = true;
                        continue;
                }
                if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                        continue;
                /*
                 * A bridge deleted behind berth's back (ip link del) needs forwarding no more: its entry
                 * goes, or it would keep forwarding on until reboot. A setup enters its bridge only once the
                 * bridge exists, and under this lock, so no live bridge's entry is taken for a stale one.
                 */
                if (if_nametoindex(de->d_name) == 0 && errno == ENODEV) {
                        if (unlinkat(fd, de->d_name, 0) < 0 && errno != ENOENT) {
                                r = berr_set_errno(err, -errno, "network: remove %s/%s", path, de->d_name);
                                closedir(d);
                                return r;
                        }
                        log_info("network: forgot bridge %s in %s: it no longer exists", de->d_name, path);
                        continue;
                }
                users = true;
        }
        closedir(d);
        if (users)
                return 0;
        if (orig) {
                if ((r = write_file(IP_FORWARD, "0")) < 0)
                        return berr_set_errno(err, r, "network: restore %s", IP_FORWARD);
                if (unlinkat(fd, "orig", 0) < 0)
                        return berr_set_errno(err, -errno, "network: remove %s/orig", path);
        }
        if (rmdir(path) < 0 && errno != ENOENT && errno != ENOTEMPTY)
                return berr_set_errno(err, -errno, "network: remove %s", path);
        return 0;
}

static char *net_path(const char *data_dir, const char *sub)
{
        return xasprintf("%s/cell/%s", data_dir, sub);
}

int cell_net_setup_host(const char *data_dir, const struct cell_net_config *c, struct berr **err)
{
        struct net_params p;
        int r = params_from(data_dir, c, &p, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *netdir = net_path(data_dir, "net");
        _cleanup_close_ int netfd = -1;
        _cleanup_nl_ struct mnl_socket *sk = NULL;
        _cleanup_free_ char *rules = NULL;
        if ((r = open_dir(netdir, 0700, &netfd, err)) < 0)
                return r;
        if ((r = nl_open(&sk)) < 0)
                return berr_set_errno(err, r, "network: rtnetlink");
        struct link_info br = { 0 };
        bool created = false;
        r = link_get(sk, p.bridge, &br);
        if (r < 0 && r != -ENODEV)
                return berr_set_errno(err, r, "network: look up %s", p.bridge);
        if ((r = check_subnet_free(&p, br.index, err)) < 0)
                return r;
        if (br.index <= 0) {
                r = bridge_create(sk, p.bridge);
                if (r < 0 && r != -EEXIST) /* EEXIST: another process was quicker */
                        return berr_set_errno(err, r, "network: create bridge %s", p.bridge);
                created = r == 0;
                if ((r = link_get(sk, p.bridge, &br)) < 0)
                        return berr_set_errno(err, r, "network: look up %s", p.bridge);
        }
        if (strcmp(br.kind, "bridge") != 0) {
                return berr_set(err, -EEXIST, "network: interface %s exists and is not a bridge", p.bridge);
        }
        /*
         * route_localnet: a host connection to 127.0.0.1:<port> is DNATed to a container and leaves through
         * the bridge with its loopback source (masqueraded in postrouting); without it the kernel refuses
         * to route a loopback source out of a non-loopback device, and the replies as martians.
         */
        if ((r = link_configure(sk, br.index, true, NULL)) < 0) {
                r = berr_set_errno(err, r, "network: configure %s", p.bridge);
                goto fail;
        }
        r = addr_add(sk, br.index, p.gw, p.prefix);
        if (r < 0 && r != -EEXIST) {
                r = berr_set_errno(err, r, "network: add %s/%d to %s", p.gw_str, p.prefix, p.bridge);
                goto fail;
        }
        if ((r = link_set_up(sk, br.index)) < 0) {
                r = berr_set_errno(err, r, "network: set %s up", p.bridge);
                goto fail;
        }
        if ((r = fwd_acquire(p.bridge, err)) < 0)
                goto fail;
        rules = host_ruleset(&p);
        if ((r = nft_run(rules, false, NULL, err)) < 0) {
                r = berr_prefix(err, r, "network: nftables table inet %s", p.table);
                goto fail;
        }
        return 0;
fail:
        if (created)
                link_del(sk, br.index);
        return r;
}

/* Everything create() made, for the way back. */
struct net_undo {
        bool nsfile, mounted, userfile, usermounted, leased;
        const char *veth; /* created by us */
};

static void undo(struct mnl_socket *sk, int netfd, const char *nspath, const char *userpath, const char *id,
                 const struct net_undo *u)
{
        struct link_info vi;
        if (u->veth && link_get(sk, u->veth, &vi) == 0)
                link_del(sk, vi.index);
        if (u->mounted)
                umount2(nspath, MNT_DETACH);
        if (u->nsfile)
                unlink(nspath);
        if (u->usermounted)
                umount2(userpath, MNT_DETACH);
        if (u->userfile)
                unlink(userpath);
        if (u->leased)
                lease_walk(netfd, NULL, id);
}

int cell_net_create(const char *data_dir, const struct cell_net_config *c, const char *id,
                    const struct cell_port_map *ports, size_t n_ports, struct cell_net_attachment *ret,
                    struct berr **err)
{
        struct net_params p;
        int r = params_from(data_dir, c, &p, err);
        if (r < 0)
                return r;
        if (!net_valid_id(id))
                return berr_set(err, -EINVAL,
                                "network: invalid container id \"%s\": 1 to %d of [A-Za-z0-9_.-]",
                                id ? id : "", NET_ID_MAX);
        if (n_ports && !ports)
                return berr_set(err, -EINVAL, "network: no port mappings given");
        if ((r = validate_ports(ports, n_ports, err)) < 0)
                return r;
        _cleanup_free_ char *netdir = net_path(data_dir, "net");
        _cleanup_free_ char *nsdir = net_path(data_dir, "netns");
        _cleanup_free_ char *nspath = xasprintf("%s/%s", nsdir, id);
        /* '@' is not allowed in ids: this name never collides with another container's. */
        _cleanup_free_ char *userpath = xasprintf("%s/%s@user", nsdir, id);
        _cleanup_free_ char *alias = xasprintf(NET_ALIAS_PREFIX "%s", id);
        _cleanup_close_ int netfd = -1, nsdirfd = -1, nsfd = -1, userfd = -1;
        _cleanup_nl_ struct mnl_socket *sk = NULL, *ns = NULL;
        struct net_undo u = { 0 };
        char veth[IF_NAMESIZE], ip_s[INET_ADDRSTRLEN], nsfd_path[64];
        uint32_t ip = 0;
        net_veth_name(id, veth);
        if ((r = nl_open(&sk)) < 0)
                return berr_set_errno(err, r, "network: rtnetlink");
        struct link_info br;
        if ((r = link_get(sk, p.bridge, &br)) < 0)
                return berr_set_errno(err, r, "network: bridge %s (is the host prepared?)", p.bridge);
        if (strcmp(br.kind, "bridge") != 0)
                return berr_set(err, -EINVAL, "network: %s is not a bridge", p.bridge);
        if ((r = open_dir(netdir, 0700, &netfd, err)) < 0 || (r = open_dir(nsdir, 0711, &nsdirfd, err)) < 0)
                return r;
        if ((r = netns_dir_prepare(netfd, nsdir, err)) < 0)
                return r;
        /* The namespace file is the container's claim on its network: exclusive. */
        int fd = openat(nsdirfd, id, O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
        if (fd < 0) {
                if (errno == EEXIST)
                        return berr_set(err, -EEXIST, "network: container %s already has a network", id);
                return berr_set_errno(err, -errno, "network: create %s", nspath);
        }
        close(fd);
        u.nsfile = true;
        if ((r = lease_acquire(netfd, &p, id, &ip, err)) < 0)
                goto fail;
        u.leased = true;
        ip_str(ip, ip_s);
        if ((r = neigh_del(sk, br.index, ip)) < 0) {
                r = berr_set_errno(err, r, "network: forget the old neighbour entry of %s", ip_s);
                goto fail;
        }
        if ((r = netns_new(p.ipv6, &userfd, &nsfd, &ns, err)) < 0)
                goto fail;
        snprintf(nsfd_path, sizeof(nsfd_path), "/proc/self/fd/%d", nsfd);
        if (mount(nsfd_path, nspath, NULL, MS_BIND, NULL) < 0) {
                r = berr_set_errno(err, -errno, "network: bind mount the namespace on %s", nspath);
                goto fail;
        }
        u.mounted = true;
        fd = openat(nsdirfd, strrchr(userpath, '/') + 1, O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                    0444);
        if (fd < 0) {
                r = berr_set_errno(err, -errno, "network: create %s", userpath);
                goto fail;
        }
        close(fd);
        u.userfile = true;
        snprintf(nsfd_path, sizeof(nsfd_path), "/proc/self/fd/%d", userfd);
        if (mount(nsfd_path, userpath, NULL, MS_BIND, NULL) < 0) {
                r = berr_set_errno(err, -errno, "network: bind mount the user namespace on %s", userpath);
                goto fail;
        }
        u.usermounted = true;
        r = veth_create(sk, veth, br.index, nsfd);
        if (r == -EEXIST) {
                r = berr_set(
                    err, r, "network: interface %s already exists (another container's, or left over)", veth);
                goto fail;
        } else if (r < 0) {
                r = berr_set_errno(err, r, "network: create veth %s", veth);
                goto fail;
        }
        u.veth = veth;
        struct link_info vi;
        if ((r = link_get(sk, veth, &vi)) < 0) {
                r = berr_set_errno(err, r, "network: look up %s", veth);
                goto fail;
        }
        if ((r = link_configure(sk, vi.index, false, alias)) < 0) {
                r = berr_set_errno(err, r, "network: configure %s", veth);
                goto fail;
        }
        /* Isolated before it is up: no frame ever passes between two containers. */
        if ((r = brport_isolate(sk, vi.index)) < 0) {
                r = berr_set_errno(err, r, "network: isolate bridge port %s", veth);
                goto fail;
        }
        if ((r = link_set_up(sk, vi.index)) < 0) {
                r = berr_set_errno(err, r, "network: set %s up", veth);
                goto fail;
        }
        if ((r = netns_configure(ns, ip, &p, err)) < 0)
                goto fail;
        if (n_ports) {
                /*
                 * A marker first, so that destroy knows there are rules to remove and can skip nftables
                 * (a listing of the table costs milliseconds) for the usual container without ports.
                 */
                _cleanup_free_ char *marker = xasprintf("ports@%s", id);
                int mfd = openat(netfd, marker, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
                if (mfd < 0) {
                        r = berr_set_errno(err, -errno, "network: create %s/%s", netdir, marker);
                        goto fail;
                }
                close(mfd);
                if ((r = nft_add_container(&p, id, ip_s, ports, n_ports, err)) < 0) {
                        unlinkat(netfd, marker, 0);
                        goto fail;
                }
        }
        *ret = (struct cell_net_attachment){ .prefix_len = p.prefix };
        memcpy(ret->ip, ip_s, sizeof(ip_s));
        memcpy(ret->gateway, p.gw_str, sizeof(p.gw_str));
        snprintf(ret->netns_path, sizeof(ret->netns_path), "%s", nspath);
        snprintf(ret->userns_path, sizeof(ret->userns_path), "%s", userpath);
        memcpy(ret->host_veth, veth, sizeof(veth));
        return 0;
fail:
        undo(sk, netfd, nspath, userpath, id, &u);
        return r;
}

int cell_net_destroy(const char *data_dir, const struct cell_net_config *c, const char *id, struct berr **err)
{
        struct net_params p;
        int r = params_from(data_dir, c, &p, err);
        if (r < 0)
                return r;
        if (!net_valid_id(id))
                return berr_set(err, -EINVAL, "network: invalid container id \"%s\"", id ? id : "");
        _cleanup_free_ char *netdir = net_path(data_dir, "net");
        _cleanup_free_ char *nspath = xasprintf("%s/cell/netns/%s", data_dir, id);
        _cleanup_nl_ struct mnl_socket *sk = NULL;
        int first = 0;
        /* The rules first (no more traffic), the lease last (the address is free only when all is gone). */
        _cleanup_free_ char *marker = xasprintf("%s/ports@%s", netdir, id);
        if (access(marker, F_OK) == 0) {
                if ((r = nft_remove_container(&p, id, err)) < 0)
                        first = first ?: r;
                else
                        unlink(marker);
        }
        if ((r = nl_open(&sk)) < 0) {
                first = first ?: berr_set_errno(err, r, "network: rtnetlink");
        } else {
                char veth[IF_NAMESIZE];
                net_veth_name(id, veth);
                _cleanup_free_ char *alias = xasprintf(NET_ALIAS_PREFIX "%s", id);
                struct link_info vi;
                r = link_get(sk, veth, &vi);
                if (r == 0 && strcmp(vi.alias, alias) == 0) {
                        r = link_del(sk, vi.index);
                        if (r < 0 && r != -ENODEV)
                                first = first ?: berr_set_errno(err, r, "network: delete %s", veth);
                } else if (r == 0) {
                        log_warn("network: %s belongs to \"%s\", not to %s; left alone", veth, vi.alias, id);
                } else if (r != -ENODEV) {
                        first = first ?: berr_set_errno(err, r, "network: look up %s", veth);
                }
        }
        if (umount2(nspath, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT)
                first = first ?: berr_set_errno(err, -errno, "network: unmount %s", nspath);
        if (unlink(nspath) < 0 && errno != ENOENT)
                first = first ?: berr_set_errno(err, -errno, "network: remove %s", nspath);
        _cleanup_free_ char *userpath = xasprintf("%s@user", nspath);
        if (umount2(userpath, MNT_DETACH | UMOUNT_NOFOLLOW) < 0 && errno != EINVAL && errno != ENOENT)
                first = first ?: berr_set_errno(err, -errno, "network: unmount %s", userpath);
        if (unlink(userpath) < 0 && errno != ENOENT)
                first = first ?: berr_set_errno(err, -errno, "network: remove %s", userpath);
        _cleanup_close_ int netfd = open(netdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (netfd >= 0) {
                if ((r = lease_walk(netfd, NULL, id)) < 0)
                        first = first ?: berr_set_errno(err, r, "network: release the lease of %s", id);
        } else if (errno != ENOENT) {
                first = first ?: berr_set_errno(err, -errno, "network: open %s", netdir);
        }
        return first;
}

int cell_net_teardown_host(const char *data_dir, const struct cell_net_config *c, struct berr **err)
{
        struct net_params p;
        int r = params_from(data_dir, c, &p, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *netdir = net_path(data_dir, "net");
        _cleanup_free_ char *nsdir = net_path(data_dir, "netns");
        _cleanup_close_ int netfd = open(netdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_nl_ struct mnl_socket *sk = NULL;
        _cleanup_close_ int lock = -1;
        if (netfd < 0 && errno != ENOENT)
                return berr_set_errno(err, -errno, "network: open %s", netdir);
        if (netfd >= 0) {
                if ((lock = lock_net(netfd, err)) < 0)
                        return lock;
                int n = lease_walk(netfd, &p, NULL);
                if (n > 0)
                        return berr_set(err, -EBUSY, "network: %d container(s) still use subnet %s", n,
                                        p.subnet);
        }
        if ((r = nl_open(&sk)) < 0)
                return berr_set_errno(err, r, "network: rtnetlink");
        struct link_info br = { 0 };
        r = link_get(sk, p.bridge, &br);
        if (r < 0 && r != -ENODEV)
                return berr_set_errno(err, r, "network: look up %s", p.bridge);
        if (r == 0) {
                int ports = 0;
                if (strcmp(br.kind, "bridge") != 0)
                        return berr_set(err, -EINVAL, "network: %s is not a bridge; left alone", p.bridge);
                if ((r = bridge_count_ports(br.index, &ports)) < 0)
                        return berr_set_errno(err, r, "network: list the ports of %s", p.bridge);
                if (ports > 0)
                        return berr_set(err, -EBUSY, "network: bridge %s still has %d port(s)", p.bridge,
                                        ports);
        }
        _cleanup_free_ char *cmd = xasprintf("delete table inet %s\n", p.table);
        _cleanup_berr_ struct berr *e = NULL;
        r = nft_run(cmd, false, NULL, &e);
        if (r < 0 && r != -ENOENT)
                return berr_set(err, r, "network: %s", berr_msg(e));
        if (br.index > 0 && (r = link_del(sk, br.index)) < 0 && r != -ENODEV)
                return berr_set_errno(err, r, "network: delete bridge %s", p.bridge);
        if ((r = fwd_release(p.bridge, err)) < 0)
                return r;
        if (netfd < 0)
                return 0;
        /* The netns directory's own mount, once no namespace file is left in it. */
        _cleanup_close_ int nsfd = open(nsdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (nsfd >= 0 && is_mount_root(nsdir) == 1) {
                DIR *d = fdopendir(nsfd);
                bool empty = true;
                if (d) {
                        nsfd = -1; /* owned by d */
                        struct dirent *de;
                        while ((de = readdir(d)))
                                if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
                                        empty = false;
                        closedir(d);
                }
                if (empty && umount2(nsdir, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
                        return berr_set_errno(err, -errno, "network: unmount %s", nsdir);
        }
        return 0;
}

int cell_net_stats(const char *id, struct cell_net_stats *ret, struct berr **err)
{
        if (!net_valid_id(id))
                return berr_set(err, -EINVAL, "network: invalid container id \"%s\"", id ? id : "");
        _cleanup_nl_ struct mnl_socket *sk = NULL;
        int r = nl_open(&sk);
        if (r < 0)
                return berr_set_errno(err, r, "network: rtnetlink");
        char veth[IF_NAMESIZE];
        net_veth_name(id, veth);
        _cleanup_free_ char *alias = xasprintf(NET_ALIAS_PREFIX "%s", id);
        struct link_info vi;
        r = link_get(sk, veth, &vi);
        if (r == -ENODEV || (r == 0 && strcmp(vi.alias, alias) != 0))
                return berr_set(err, -ENOENT, "network: container %s has no network", id);
        if (r < 0)
                return berr_set_errno(err, r, "network: look up %s", veth);
        if (!vi.has_stats)
                return berr_set(err, -EIO, "network: no counters for %s", veth);
        /* The host end's transmit is the container's receive. */
        *ret = (struct cell_net_stats){ .rx_bytes = vi.stats.tx_bytes,
                                        .rx_packets = vi.stats.tx_packets,
                                        .tx_bytes = vi.stats.rx_bytes,
                                        .tx_packets = vi.stats.rx_packets,
                                        .rx_dropped = vi.stats.tx_dropped,
                                        .tx_dropped = vi.stats.rx_dropped };
        return 0;
}
