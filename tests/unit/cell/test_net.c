/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Container networking against the real kernel: namespaces, veths, a bridge and an nftables table of this
 * test's own (names and subnets derived from the pid), and real TCP/UDP traffic, all on loopback, the
 * bridge and namespaces the test creates. Checked: the inside of a namespace (address, route, lo, IPv6
 * off or on without DAD), isolation between containers and from the host's ports (except allowed ones),
 * port mappings from 127.0.0.1, from the gateway and from another network (a namespace standing for the
 * outside, with a veth to the host), egress masquerade, CVE-2020-8558 (a container routing 127.0.0.1 to the
 * host), a host port allocated twice, concurrent leases and exhaustion, a clash of host veth names, destroy
 * removing exactly one container's parts, ip_forward restored, and the host left as it was found.
 * Needs root, iproute2 (ip, nsenter) and nft for the checks.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cell/net.h"
#include "lib/fs.h"

#define MAX_IDS       64
#define MAX_KIDS      32
#define FAIL_TIMEOUT  1000 /* ms: a connection that must not succeed */
#define REACH_TIMEOUT 5000 /* ms: one that must */

static struct {
        pid_t pid;
        char dir[64];
        char bridge[16], table[32], subnet[32], gw[16];
        char bridge2[16], table2[32], subnet2[32];
        char ext_ns[32], ext_veth[16], ext_host[16], ext_peer[16], ext_net[32];
        uint16_t hp; /* base of the host ports used for mappings */
        struct cell_net_config cfg, cfg2;
        uint16_t allow[1];
        char *before;
        pid_t kids[MAX_KIDS];
        int n_kids;
        char ids[MAX_IDS][80];
        int n_ids;
        int first_id_of_test;
} T;

/* ---- helpers ---- */

/* Run a shell command; its stdout (caller frees) and, in *status, its exit code. */
static char *sh(int *status, const char *fmt, ...) _printf_(2, 3);
static char *sh(int *status, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        char *cmd = NULL;
        assert_true(vasprintf(&cmd, fmt, ap) >= 0);
        va_end(ap);
        FILE *f = popen(cmd, "r");
        assert_non_null(f);
        char *out = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&out, &len);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
                fwrite(buf, 1, n, m);
        fclose(m);
        int st = pclose(f);
        if (status)
                *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        free(cmd);
        return out;
}

#define SH_OK(...)                           \
        do {                                 \
                int _st;                     \
                free(sh(&_st, __VA_ARGS__)); \
                assert_int_equal(_st, 0);    \
        } while (0)

static bool contains(const char *hay, const char *needle)
{
        return hay && strstr(hay, needle) != NULL;
}

static const char *track(const char *id)
{
        assert_true(T.n_ids < MAX_IDS);
        snprintf(T.ids[T.n_ids], sizeof(T.ids[0]), "%s", id);
        return T.ids[T.n_ids++];
}

/* A unique container id for this run. */
static const char *new_id(const char *name)
{
        char id[80];
        snprintf(id, sizeof(id), "t%d-%s", (int)T.pid, name);
        return track(id);
}

static void kid_add(pid_t p)
{
        assert_true(T.n_kids < MAX_KIDS);
        T.kids[T.n_kids++] = p;
}

static void kids_kill(void)
{
        for (int i = 0; i < T.n_kids; i++) {
                kill(T.kids[i], SIGKILL);
                waitpid(T.kids[i], NULL, 0);
        }
        T.n_kids = 0;
}

static void enter_netns(const char *path)
{
        if (!path)
                return;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
                _exit(90);
        close(fd);
}

static long long now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/*
 * A server in the network namespace at nspath (NULL: the host's) on bind_ip:port (port 0: any), TCP or UDP.
 * It answers each connection or datagram with "<tag> <peer address>\n". Returns the bound port.
 */
static uint16_t server(const char *nspath, int proto, const char *bind_ip, uint16_t port, const char *tag)
{
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(p[0]);
                enter_netns(nspath);
                int s = socket(AF_INET, proto == IPPROTO_UDP ? SOCK_DGRAM : SOCK_STREAM, 0);
                int one = 1;
                setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
                struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
                inet_pton(AF_INET, bind_ip, &a.sin_addr);
                if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
                    (proto != IPPROTO_UDP && listen(s, 16) < 0))
                        _exit(91);
                socklen_t al = sizeof(a);
                getsockname(s, (struct sockaddr *)&a, &al);
                uint16_t bound = ntohs(a.sin_port);
                if (write(p[1], &bound, sizeof(bound)) != sizeof(bound))
                        _exit(92);
                close(p[1]);
                for (;;) {
                        struct sockaddr_in peer;
                        socklen_t pl = sizeof(peer);
                        char msg[128], ip[INET_ADDRSTRLEN];
                        if (proto == IPPROTO_UDP) {
                                char in[64];
                                if (recvfrom(s, in, sizeof(in), 0, (struct sockaddr *)&peer, &pl) < 0)
                                        continue;
                                inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip));
                                int n = snprintf(msg, sizeof(msg), "%s %s\n", tag, ip);
                                sendto(s, msg, (size_t)n, 0, (struct sockaddr *)&peer, pl);
                        } else {
                                int c = accept(s, (struct sockaddr *)&peer, &pl);
                                if (c < 0)
                                        continue;
                                inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip));
                                int n = snprintf(msg, sizeof(msg), "%s %s\n", tag, ip);
                                (void)!write(c, msg, (size_t)n); /* a client gone early is fine */
                                close(c);
                        }
                }
        }
        close(p[1]);
        kid_add(pid);
        struct pollfd pfd = { .fd = p[0], .events = POLLIN };
        assert_int_equal(poll(&pfd, 1, REACH_TIMEOUT), 1);
        uint16_t bound = 0;
        assert_int_equal(read(p[0], &bound, sizeof(bound)), (ssize_t)sizeof(bound));
        close(p[0]);
        return bound;
}

/*
 * From the namespace at nspath (NULL: the host), connect (TCP) or send a datagram (UDP) to ip:port and
 * read the answer into out. 0 on an answer within timeout_ms, -1 otherwise (refused, dropped, timed out).
 */
static int request(const char *nspath, int proto, const char *ip, uint16_t port, int timeout_ms, char *out,
                   size_t outsz)
{
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(p[0]);
                enter_netns(nspath);
                long long deadline = now_ms() + timeout_ms;
                int s = socket(AF_INET, (proto == IPPROTO_UDP ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
                struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
                inet_pton(AF_INET, ip, &a.sin_addr);
                if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS)
                        _exit(1);
                struct pollfd pfd = { .fd = s };
                if (proto == IPPROTO_UDP) {
                        if (send(s, "ping", 4, 0) != 4)
                                _exit(1);
                } else {
                        pfd.events = POLLOUT;
                        int left = (int)(deadline - now_ms());
                        if (left <= 0 || poll(&pfd, 1, left) != 1)
                                _exit(1);
                        int e = 0;
                        socklen_t el = sizeof(e);
                        getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el);
                        if (e)
                                _exit(1);
                }
                char buf[256];
                size_t len = 0;
                for (;;) {
                        pfd.events = POLLIN;
                        int left = (int)(deadline - now_ms());
                        if (left <= 0 || poll(&pfd, 1, left) != 1)
                                _exit(1);
                        ssize_t n = recv(s, buf + len, sizeof(buf) - 1 - len, 0);
                        if (n <= 0)
                                break;
                        len += (size_t)n;
                        if (proto == IPPROTO_UDP || memchr(buf, '\n', len) || len == sizeof(buf) - 1)
                                break;
                }
                if (len == 0 || write(p[1], buf, len) != (ssize_t)len)
                        _exit(1);
                _exit(0);
        }
        close(p[1]);
        char buf[256];
        ssize_t n = 0, k;
        while ((k = read(p[0], buf + n, sizeof(buf) - 1 - (size_t)n)) > 0)
                n += k;
        close(p[0]);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        buf[n > 0 ? n : 0] = '\0';
        char *nl = strchr(buf, '\n');
        if (nl)
                *nl = '\0';
        if (out)
                snprintf(out, outsz, "%s", buf);
        return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* A UDP server on the host that appends each sender's address to the file at path. Returns its port. */
static uint16_t udp_sink(const char *bind_ip, const char *path)
{
        int p[2];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                close(p[0]);
                int s = socket(AF_INET, SOCK_DGRAM, 0);
                struct sockaddr_in a = { .sin_family = AF_INET };
                inet_pton(AF_INET, bind_ip, &a.sin_addr);
                socklen_t al = sizeof(a);
                if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 ||
                    getsockname(s, (struct sockaddr *)&a, &al) < 0)
                        _exit(91);
                uint16_t bound = ntohs(a.sin_port);
                if (write(p[1], &bound, sizeof(bound)) != sizeof(bound))
                        _exit(92);
                close(p[1]);
                for (;;) {
                        struct sockaddr_in peer;
                        socklen_t pl = sizeof(peer);
                        char in[64], ip[INET_ADDRSTRLEN], line[INET_ADDRSTRLEN + 1];
                        if (recvfrom(s, in, sizeof(in), 0, (struct sockaddr *)&peer, &pl) < 0)
                                continue;
                        inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof(ip));
                        int n = snprintf(line, sizeof(line), "%s\n", ip);
                        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
                        if (fd >= 0 && write(fd, line, (size_t)n) < 0)
                                _exit(93);
                        close(fd);
                }
        }
        close(p[1]);
        kid_add(pid);
        struct pollfd pfd = { .fd = p[0], .events = POLLIN };
        assert_int_equal(poll(&pfd, 1, REACH_TIMEOUT), 1);
        uint16_t bound = 0;
        assert_int_equal(read(p[0], &bound, sizeof(bound)), (ssize_t)sizeof(bound));
        close(p[0]);
        return bound;
}

/* Poll (every 10 ms, until timeout_ms) for the file at path to contain needle. */
static bool wait_file_contains(const char *path, const char *needle, int timeout_ms)
{
        long long deadline = now_ms() + timeout_ms;
        for (;;) {
                char *text = NULL;
                size_t len = 0;
                bool found =
                    fs_read_file_at(AT_FDCWD, path, 1 << 16, &text, &len) == 0 && contains(text, needle);
                free(text);
                if (found || now_ms() >= deadline)
                        return found;
                struct timespec ts = { .tv_nsec = 10 * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
}

static void expect_reach(const char *nspath, int proto, const char *ip, uint16_t port, const char *answer)
{
        char got[256];
        if (request(nspath, proto, ip, port, REACH_TIMEOUT, got, sizeof(got)) < 0)
                fail_msg("%s:%u/%s from %s: no answer (expected \"%s\")", ip, port,
                         proto == IPPROTO_UDP ? "udp" : "tcp", nspath ? nspath : "the host", answer);
        if (answer && strcmp(got, answer) != 0)
                fail_msg("%s:%u from %s: answer \"%s\", expected \"%s\"", ip, port,
                         nspath ? nspath : "the host", got, answer);
}

static void expect_blocked(const char *nspath, int proto, const char *ip, uint16_t port)
{
        char got[256];
        if (request(nspath, proto, ip, port, FAIL_TIMEOUT, got, sizeof(got)) == 0)
                fail_msg("%s:%u/%s from %s: answered \"%s\", but must be unreachable", ip, port,
                         proto == IPPROTO_UDP ? "udp" : "tcp", nspath ? nspath : "the host", got);
}

/* Output of a command run inside a namespace (caller frees). */
static char *in_ns(const char *nspath, const char *cmd)
{
        int st;
        char *out = sh(&st, "nsenter --net=%s sh -c '%s' 2>&1", nspath, cmd);
        if (st != 0)
                fail_msg("in %s: %s: exit %d: %s", nspath, cmd, st, out);
        return out;
}

static bool link_exists(const char *name)
{
        int st;
        free(sh(&st, "ip -o link show dev %s >/dev/null 2>&1", name));
        return st == 0;
}

/* The table as JSON (NULL if it does not exist). */
static json_t *nft_table(const char *table)
{
        int st;
        char *out = sh(&st, "nft -j list table inet %s 2>/dev/null", table);
        json_t *doc = st == 0 ? json_loads(out, 0, NULL) : NULL;
        free(out);
        return doc;
}

static bool nft_has_chain(json_t *doc, const char *chain)
{
        size_t i;
        json_t *it;
        json_array_foreach (json_object_get(doc, "nftables"), i, it) {
                const char *n = json_string_value(json_object_get(json_object_get(it, "chain"), "name"));
                if (n && !strcmp(n, chain))
                        return true;
        }
        return false;
}

/* How many hostports elements jump to chain (or, chain NULL, exist at all). */
static int nft_elements(json_t *doc, const char *chain)
{
        int n = 0;
        size_t i, j;
        json_t *it, *e;
        json_array_foreach (json_object_get(doc, "nftables"), i, it) {
                json_t *map = json_object_get(it, "map");
                if (!map || strcmp(json_string_value(json_object_get(map, "name")) ?: "", "hostports"))
                        continue;
                json_array_foreach (json_object_get(map, "elem"), j, e) {
                        json_t *jump = json_object_get(json_array_get(e, 1), "jump");
                        const char *t = json_string_value(json_object_get(jump, "target"));
                        if (!chain || (t && !strcmp(t, chain)))
                                n++;
                }
        }
        return n;
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The table as sorted lines, one per object, rule and map element, leaving out everything of skip_chain
 * (caller frees): two fingerprints are equal when the tables hold the same things apart from that chain.
 */
static char *nft_fingerprint(const char *table, const char *skip_chain)
{
        json_t *doc = nft_table(table);
        assert_non_null(doc);
        char **lines = NULL;
        size_t n = 0, i, j;
        json_t *it, *e;
        json_array_foreach (json_object_get(doc, "nftables"), i, it) {
                json_t *obj = json_object_get(it, "rule");
                const char *chain = json_string_value(json_object_get(obj, "chain"));
                if (!obj) {
                        obj = json_object_get(it, "chain");
                        chain = json_string_value(json_object_get(obj, "name"));
                }
                if (chain && skip_chain && !strcmp(chain, skip_chain))
                        continue;
                json_t *copy = json_deep_copy(it);
                json_t *map = json_object_get(copy, "map");
                json_array_foreach (json_object_get(map, "elem"), j, e) {
                        json_t *jump = json_object_get(json_array_get(e, 1), "jump");
                        const char *t = json_string_value(json_object_get(jump, "target"));
                        if (t && skip_chain && !strcmp(t, skip_chain))
                                continue;
                        lines = xrealloc(lines, (n + 1) * sizeof(*lines));
                        lines[n++] = json_dumps(e, JSON_COMPACT);
                }
                if (map)
                        json_object_del(map, "elem");
                lines = xrealloc(lines, (n + 1) * sizeof(*lines));
                lines[n++] = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
                json_decref(copy);
        }
        json_decref(doc);
        qsort(lines, n, sizeof(*lines), cmp_str);
        char *out = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&out, &len);
        for (i = 0; i < n; i++) {
                fprintf(m, "%s\n", lines[i]);
                free(lines[i]);
        }
        fclose(m);
        free(lines);
        return out;
}

static int leases_of(const char *id)
{
        char *dir = xasprintf("%s/cell/net", T.dir);
        int n = 0;
        DIR *d = opendir(dir);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d))) {
                        char target[128], *path = xasprintf("%s/%s", dir, de->d_name);
                        ssize_t len = readlink(path, target, sizeof(target) - 1);
                        free(path);
                        if (len > 0) {
                                target[len] = '\0';
                                if (!id || !strcmp(target, id))
                                        n++;
                        }
                }
                closedir(d);
        }
        free(dir);
        return n;
}

static bool mounted(const char *path)
{
        char *m = NULL;
        size_t len = 0;
        assert_int_equal(fs_read_file_at(AT_FDCWD, "/proc/self/mountinfo", 1 << 24, &m, &len), 0);
        char *needle = xasprintf(" %s ", path);
        bool r = contains(m, needle);
        free(needle);
        free(m);
        return r;
}

static void create_ok(const struct cell_net_config *cfg, const char *id, const struct cell_port_map *ports,
                      size_t n, struct cell_net_attachment *att)
{
        struct berr *err = NULL;
        if (cell_net_create(T.dir, cfg, id, ports, n, att, &err) < 0)
                fail_msg("create %s: %s", id, berr_msg(err));
}

static void destroy_ok(const struct cell_net_config *cfg, const char *id)
{
        struct berr *err = NULL;
        if (cell_net_destroy(T.dir, cfg, id, &err) < 0)
                fail_msg("destroy %s: %s", id, berr_msg(err));
}

/*
 * What this test could leave on the host: mounts under its data dir and its outside namespace, its links
 * and routes, its tables, and ip_forward. (Only these: other unit tests run in parallel and change the
 * rest of /proc/mounts and `ip link` at the same time.)
 */
static char *host_state(void)
{
        char vnames[MAX_IDS * 20] = "";
        size_t off = 0;
        for (int i = 0; i < T.n_ids; i++) {
                char v[IF_NAMESIZE];
                net_veth_name(T.ids[i], v);
                off += (size_t)snprintf(vnames + off, sizeof(vnames) - off, "|%s", v);
        }
        return sh(
            NULL,
            "grep -E '%s|%s' /proc/mounts; ip -o link | sed 's/^[0-9]*: //' | grep -E '(%s|%s|%s%s)[:@]'; "
            "ip -4 route | grep -E '%s|%s|%s|%s|%s'; ip netns list | grep -E '%s'; "
            "nft list tables | grep -E ' (%s|%s)$'; cat /proc/sys/net/ipv4/ip_forward",
            T.dir, T.ext_ns, T.bridge, T.bridge2, T.ext_veth, vnames, T.bridge, T.bridge2, T.ext_veth,
            T.subnet, T.subnet2, T.ext_ns, T.table, T.table2);
}

/* Remove everything the test may have created, whatever state it is in. */
static void cleanup_all(void)
{
        kids_kill();
        for (int i = 0; i < T.n_ids; i++) {
                cell_net_destroy(T.dir, &T.cfg, T.ids[i], NULL);
                cell_net_destroy(T.dir, &T.cfg2, T.ids[i], NULL);
        }
        cell_net_teardown_host(T.dir, &T.cfg, NULL);
        cell_net_teardown_host(T.dir, &T.cfg2, NULL);
        free(sh(NULL,
                "{ ip netns del %s; ip link del %s; nft delete table inet %s; nft delete table inet %s; "
                "ip link del %s; ip link del %s; grep -o ' %s[^ ]*' /proc/mounts | sort -r | "
                "xargs -r -n1 umount -l; } >/dev/null 2>&1",
                T.ext_ns, T.ext_veth, T.table, T.table2, T.bridge, T.bridge2, T.dir));
        fs_rm_rf_at(AT_FDCWD, T.dir);
}

/* ---- tests ---- */

static void test_validation(void **state)
{
        (void)state;
        struct cell_net_attachment att;
        struct berr *err = NULL;
        static const char *const bad_ids[] = {
                "",
                ".",
                "..",
                "a/b",
                "a b",
                "x;y",
                "01234567890123456789012345678901234567890123456789012345678901234" /* 65 */
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad_ids); i++) {
                assert_false(net_valid_id(bad_ids[i]));
                assert_int_equal(cell_net_create(T.dir, &T.cfg, bad_ids[i], NULL, 0, &att, &err), -EINVAL);
                assert_true(contains(berr_msg(err), "invalid container id"));
                berr_free(err);
                err = NULL;
        }
        assert_true(net_valid_id("abc-DEF_1.2"));
        assert_true(net_valid_id("0123456789012345678901234567890123456789012345678901234567890123"));

        uint32_t net;
        int prefix;
        assert_int_equal(net_parse_subnet("10.1.2.0/24", &net, &prefix, NULL), 0);
        assert_int_equal(net, 0x0a010200);
        assert_int_equal(prefix, 24);
        static const char *const bad_subnets[] = {
                "10.0.0.0/7",  "10.1.2.0/31", "10.1.2.0/32",  "10.1.2.5/24", "10.1.2.0",  "10.1.2/24",
                "10.1.2.0/2x", "/24",         "10.1.2.0/ 24", "127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16",
                "224.0.0.0/8", "240.0.0.0/8", "126.0.0.0/7",  "10.1.2.0/-8"
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad_subnets); i++) {
                assert_int_equal(net_parse_subnet(bad_subnets[i], &net, &prefix, &err), -EINVAL);
                assert_true(contains(berr_msg(err), bad_subnets[i]));
                berr_free(err);
                err = NULL;
        }
        assert_int_equal(net_parse_subnet("10.1.2.5/24", &net, &prefix, &err), -EINVAL);
        assert_true(contains(berr_msg(err), "did you mean 10.1.2.0/24"));
        berr_free(err);
        err = NULL;

        const char *id = new_id("invalid");
        struct {
                struct cell_port_map m[2];
                size_t n;
                const char *msg;
        } bad_ports[] = {
                { { { .host_port = 0, .container_port = 80 } }, 1, "ports are 1 to 65535" },
                { { { .host_port = 80, .container_port = 0 } }, 1, "ports are 1 to 65535" },
                { { { .host_port = 80, .container_port = 80, .proto = 99 } }, 1, "neither tcp nor udp" },
                { { { .host_port = 80, .container_port = 80, .host_ip = "1.2.3" } },
                  1,
                  "not an IPv4 address" },
                { { { .host_port = 80, .container_port = 80, .host_ip = "192.0.2.254" } },
                  1,
                  "not an address of this host" },
                { { { .host_port = 80, .container_port = 80 }, { .host_port = 80, .container_port = 81 } },
                  2,
                  "host port 80/tcp is mapped twice" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad_ports); i++) {
                assert_true(cell_net_create(T.dir, &T.cfg, id, bad_ports[i].m, bad_ports[i].n, &att, &err) <
                            0);
                if (!contains(berr_msg(err), bad_ports[i].msg))
                        fail_msg("ports case %zu: \"%s\" lacks \"%s\"", i, berr_msg(err), bad_ports[i].msg);
                berr_free(err);
                err = NULL;
        }
        struct cell_net_config c = T.cfg;
        c.bridge = "this-name-is-too-long";
        assert_int_equal(cell_net_setup_host(T.dir, &c, &err), -EINVAL);
        assert_true(contains(berr_msg(err), "invalid bridge name"));
        berr_free(err);
        err = NULL;
        c = T.cfg;
        c.nft_table = "x\" ; flush ruleset";
        assert_int_equal(cell_net_setup_host(T.dir, &c, &err), -EINVAL);
        assert_true(contains(berr_msg(err), "invalid nftables table name"));
        berr_free(err);
        err = NULL;
        c = T.cfg;
        c.subnet = "10.1.0.0/31";
        assert_int_equal(cell_net_setup_host(T.dir, &c, &err), -EINVAL);
        berr_free(err);
        err = NULL;
        assert_int_equal(cell_net_create("relative/dir", &T.cfg, id, NULL, 0, &att, &err), -EINVAL);
        berr_free(err);
        err = NULL;
        /* Nothing of the rejected container exists. */
        assert_int_equal(leases_of(id), 0);
        char *p = xasprintf("%s/cell/netns/%s", T.dir, id);
        assert_int_equal(access(p, F_OK), -1);
        free(p);
        char v[IF_NAMESIZE];
        net_veth_name(id, v);
        assert_int_equal(strlen(v), 12);
        assert_false(link_exists(v));
}

static void test_host_prepared(void **state)
{
        (void)state;
        struct berr *err = NULL;
        /* Idempotent: group setup prepared it once already. */
        if (cell_net_setup_host(T.dir, &T.cfg, &err) < 0)
                fail_msg("%s", berr_msg(err));
        char *out = sh(NULL, "ip -o -4 addr show dev %s", T.bridge);
        char *want = xasprintf("inet %s/24", T.gw);
        assert_true(contains(out, want));
        free(want);
        free(out);
        out = sh(NULL, "ip -o link show dev %s", T.bridge);
        assert_true(contains(out, ",UP"));
        free(out);
        out = sh(NULL, "ip -o -6 addr show dev %s", T.bridge);
        assert_string_equal(out, ""); /* no IPv6 presence of the host on the bridge */
        free(out);
        out =
            sh(NULL, "cat /proc/sys/net/ipv4/conf/%s/route_localnet /proc/sys/net/ipv4/ip_forward", T.bridge);
        assert_string_equal(out, "1\n1\n");
        free(out);
        json_t *doc = nft_table(T.table);
        assert_non_null(doc);
        static const char *const chains[] = { "guard",       "prerouting", "output",
                                              "postrouting", "input",      "forward" };
        for (size_t i = 0; i < ARRAY_SIZE(chains); i++)
                assert_true(nft_has_chain(doc, chains[i]));
        json_decref(doc);
        /* Exactly one copy of each rule after two setups. */
        int st;
        out = sh(&st, "nft list chain inet %s input | grep -c 'iifname \"%s\" drop'", T.table, T.bridge);
        assert_string_equal(out, "1\n");
        free(out);
}

static void test_inside_namespace(void **state)
{
        (void)state;
        const char *a = new_id("inside-a"), *b = new_id("inside-b");
        struct cell_net_attachment aa, ab;
        create_ok(&T.cfg, a, NULL, 0, &aa);
        create_ok(&T.cfg, b, NULL, 0, &ab);
        assert_string_equal(aa.gateway, T.gw);
        assert_int_equal(aa.prefix_len, 24);
        assert_string_not_equal(aa.ip, ab.ip);
        char *p = xasprintf("%s/cell/netns/%s", T.dir, a);
        assert_string_equal(aa.netns_path, p);
        assert_true(mounted(p));
        free(p);
        char v[IF_NAMESIZE];
        net_veth_name(a, v);
        assert_string_equal(aa.host_veth, v);
        assert_int_equal(leases_of(a), 1);

        char *out = in_ns(aa.netns_path, "ip -4 -o addr show dev eth0");
        char *want = xasprintf("inet %s/24", aa.ip);
        assert_true(contains(out, want));
        free(want);
        free(out);
        out = in_ns(aa.netns_path, "ip -4 route show default");
        want = xasprintf("default via %s dev eth0", T.gw);
        assert_true(contains(out, want));
        free(want);
        free(out);
        out = in_ns(aa.netns_path, "ip -o link show lo");
        assert_true(contains(out, "LOOPBACK,UP"));
        free(out);
        out = in_ns(aa.netns_path, "ip -o link | grep -c ': '");
        assert_string_equal(out, "2\n"); /* lo and eth0, nothing else */
        free(out);
        out = in_ns(aa.netns_path, "cat /proc/sys/net/ipv6/conf/all/disable_ipv6 "
                                   "/proc/sys/net/ipv6/conf/default/disable_ipv6 "
                                   "/proc/sys/net/ipv6/conf/eth0/disable_ipv6; ip -6 -o addr");
        assert_string_equal(out, "1\n1\n1\n");
        free(out);
        /* The host end: on the bridge, isolated, up, carrying its owner. */
        out = sh(NULL, "ip -d -o link show dev %s", aa.host_veth);
        want = xasprintf("master %s", T.bridge);
        assert_true(contains(out, want));
        assert_true(contains(out, "isolated on"));
        assert_true(contains(out, "state UP"));
        free(want);
        free(out);
        out = sh(NULL, "ip -o -6 addr show dev %s", aa.host_veth);
        assert_string_equal(out, ""); /* no link-local address on the host end */
        free(out);
        out = sh(NULL, "ip -o link show dev %s | grep -o 'alias.*'", aa.host_veth);
        want = xasprintf("alias berth:%s\n", a);
        assert_string_equal(out, want);
        free(want);
        free(out);
        /* The same id twice: refused, and the first is untouched. */
        struct berr *err = NULL;
        struct cell_net_attachment again;
        assert_int_equal(cell_net_create(T.dir, &T.cfg, a, NULL, 0, &again, &err), -EEXIST);
        assert_true(contains(berr_msg(err), "already has a network"));
        berr_free(err);
        assert_true(link_exists(aa.host_veth));
        assert_int_equal(leases_of(a), 1);
        /* The host reaches a container directly (the cell's router will). */
        server(ab.netns_path, IPPROTO_TCP, "0.0.0.0", 7000, "B");
        char *answer = xasprintf("B %s", T.gw);
        expect_reach(NULL, IPPROTO_TCP, ab.ip, 7000, answer);
        free(answer);
        kids_kill();
        destroy_ok(&T.cfg, a);
        destroy_ok(&T.cfg, b);
}

static void test_isolation(void **state)
{
        (void)state;
        const char *a = new_id("iso-a"), *b = new_id("iso-b");
        struct cell_net_attachment aa, ab;
        create_ok(&T.cfg, a, NULL, 0, &aa);
        create_ok(&T.cfg, b, NULL, 0, &ab);
        /* B listens; the host reaches it (the listener works) but A does not. */
        server(ab.netns_path, IPPROTO_TCP, "0.0.0.0", 7001, "B");
        server(ab.netns_path, IPPROTO_UDP, "0.0.0.0", 7001, "B");
        expect_reach(NULL, IPPROTO_TCP, ab.ip, 7001, NULL);
        expect_reach(NULL, IPPROTO_UDP, ab.ip, 7001, NULL);
        expect_blocked(aa.netns_path, IPPROTO_TCP, ab.ip, 7001);
        expect_blocked(aa.netns_path, IPPROTO_UDP, ab.ip, 7001);
        /* Host services: on the gateway address and on 0.0.0.0. */
        uint16_t on_gw = server(NULL, IPPROTO_TCP, T.gw, 0, "HOST-GW");
        uint16_t on_any = server(NULL, IPPROTO_TCP, "0.0.0.0", 0, "HOST-ANY");
        uint16_t on_any_udp = server(NULL, IPPROTO_UDP, "0.0.0.0", 0, "HOST-UDP");
        expect_reach(NULL, IPPROTO_TCP, T.gw, on_gw, NULL);
        expect_reach(NULL, IPPROTO_TCP, "127.0.0.1", on_any, NULL);
        expect_blocked(aa.netns_path, IPPROTO_TCP, T.gw, on_gw);
        expect_blocked(aa.netns_path, IPPROTO_TCP, T.gw, on_any);
        expect_blocked(aa.netns_path, IPPROTO_UDP, T.gw, on_any_udp);
        /* Allowed ports are reachable (a changed allow list applies on the next setup_host). */
        T.allow[0] = on_any;
        struct berr *err = NULL;
        int r = cell_net_setup_host(T.dir, &T.cfg, &err);
        if (r < 0)
                fail_msg("%s", berr_msg(err));
        char *answer = xasprintf("HOST-ANY %s", aa.ip);
        expect_reach(aa.netns_path, IPPROTO_TCP, T.gw, on_any, answer);
        free(answer);
        expect_blocked(aa.netns_path, IPPROTO_TCP, T.gw, on_gw); /* still not the others */
        /*
         * CVE-2020-8558: the bridge has route_localnet (for the host's 127.0.0.1 port mappings). A container
         * root with CAP_NET_ADMIN over its namespace can route 127.0.0.1 to the gateway; the host's loopback
         * services (here a UDP one on an allowed port) must not receive what it sends.
         */
        char *log = xasprintf("%s/sink.log", T.dir);
        uint16_t sink = udp_sink("127.0.0.1", log);
        uint16_t sink_any = udp_sink("0.0.0.0", log);
        uint16_t allow2[] = { sink, sink_any };
        T.cfg.allow_host_ports = allow2;
        T.cfg.n_allow_host_ports = 2;
        r = cell_net_setup_host(T.dir, &T.cfg, &err);
        T.cfg.allow_host_ports = T.allow;
        T.cfg.n_allow_host_ports = 1;
        if (r < 0)
                fail_msg("%s", berr_msg(err));
        request(aa.netns_path, IPPROTO_UDP, T.gw, sink_any, 0, NULL, 0); /* the sink works: */
        assert_true(wait_file_contains(log, aa.ip, REACH_TIMEOUT));
        assert_int_equal(truncate(log, 0), 0);
        char *hack =
            xasprintf("set -e; for f in all eth0; do echo 1 >/proc/sys/net/ipv4/conf/$f/route_localnet; "
                      "done; ip route del local 127.0.0.1 dev lo table local; "
                      "ip route del local 127.0.0.0/8 dev lo table local; "
                      "ip route add 127.0.0.1/32 via %s dev eth0",
                      T.gw);
        free(in_ns(aa.netns_path, hack));
        free(hack);
        request(aa.netns_path, IPPROTO_UDP, "127.0.0.1", sink, 0, NULL, 0);
        assert_false(wait_file_contains(log, aa.ip, FAIL_TIMEOUT));
        free(log);
        T.allow[0] = 1;
        assert_int_equal(cell_net_setup_host(T.dir, &T.cfg, NULL), 0);
        expect_blocked(aa.netns_path, IPPROTO_TCP, T.gw, on_any);
        kids_kill();
        destroy_ok(&T.cfg, a);
        destroy_ok(&T.cfg, b);
}

static void test_port_mapping(void **state)
{
        (void)state;
        const char *a = new_id("map-a"), *b = new_id("map-b");
        uint16_t h_tcp = T.hp, h_udp = T.hp + 1, h_lo = T.hp + 2;
        struct cell_port_map ports[] = {
                { .host_port = h_tcp, .container_port = 80 },
                { .host_port = h_udp, .container_port = 53, .proto = IPPROTO_UDP },
                { .host_port = h_lo, .container_port = 81, .host_ip = "127.0.0.1" },
        };
        struct cell_net_attachment aa, ab;
        create_ok(&T.cfg, a, ports, ARRAY_SIZE(ports), &aa);
        create_ok(&T.cfg, b, NULL, 0, &ab);
        server(aa.netns_path, IPPROTO_TCP, "0.0.0.0", 80, "A80");
        server(aa.netns_path, IPPROTO_UDP, "0.0.0.0", 53, "A53");
        server(aa.netns_path, IPPROTO_TCP, "0.0.0.0", 81, "A81");
        /* From the host's loopback and its gateway address; 127.0.0.1 arrives masqueraded as the gateway. */
        char *via_gw = xasprintf("A80 %s", T.gw);
        expect_reach(NULL, IPPROTO_TCP, "127.0.0.1", h_tcp, via_gw);
        struct cell_net_stats before, after;
        struct berr *err = NULL;
        if (cell_net_stats(a, &before, &err) < 0)
                fail_msg("%s", berr_msg(err));
        expect_reach(NULL, IPPROTO_TCP, T.gw, h_tcp, via_gw);
        free(via_gw);
        assert_int_equal(cell_net_stats(a, &after, NULL), 0);
        /* SYN, ACK, FIN, ACK at least each way, and the answer in. */
        assert_true(after.rx_packets >= before.rx_packets + 3);
        assert_true(after.tx_packets >= before.tx_packets + 3);
        assert_true(after.tx_bytes > before.tx_bytes + strlen("A80 "));
        char *udp_gw = xasprintf("A53 %s", T.gw);
        expect_reach(NULL, IPPROTO_UDP, "127.0.0.1", h_udp, udp_gw);
        free(udp_gw);
        /* host_ip 127.0.0.1: there only. */
        expect_reach(NULL, IPPROTO_TCP, "127.0.0.1", h_lo, NULL);
        expect_blocked(NULL, IPPROTO_TCP, T.gw, h_lo);
        /* Another container cannot use the published port to reach A (nor can A itself, via the host). */
        expect_blocked(ab.netns_path, IPPROTO_TCP, T.gw, h_tcp);
        expect_blocked(ab.netns_path, IPPROTO_TCP, aa.ip, 80);

        /* The outside: a namespace behind a veth, with a route to the containers' subnet via the host. */
        SH_OK("set -e; ip netns add %s; ip link add %s type veth peer name eth0 netns %s; "
              "ip addr add %s/30 dev %s; ip link set %s up; ip -n %s addr add %s/30 dev eth0; "
              "ip -n %s link set eth0 up; ip -n %s link set lo up; ip -n %s route add %s via %s",
              T.ext_ns, T.ext_veth, T.ext_ns, T.ext_host, T.ext_veth, T.ext_veth, T.ext_ns, T.ext_peer,
              T.ext_ns, T.ext_ns, T.ext_ns, T.subnet, T.ext_host);
        char *ext = xasprintf("/run/netns/%s", T.ext_ns);
        /* Outside → host port: DNAT, not masqueraded (A sees the client). */
        char *from_ext = xasprintf("A80 %s", T.ext_peer);
        expect_reach(ext, IPPROTO_TCP, T.ext_host, h_tcp, from_ext);
        free(from_ext);
        expect_blocked(ext, IPPROTO_TCP, T.ext_host, h_lo);
        /* Outside → a container's address directly: not forwarded, published or not. */
        expect_blocked(ext, IPPROTO_TCP, aa.ip, 80);
        expect_blocked(ext, IPPROTO_TCP, aa.ip, 81);
        /* Container → outside: masqueraded behind the host's address on that side. */
        server(ext, IPPROTO_TCP, "0.0.0.0", 7002, "EXT");
        char *masq = xasprintf("EXT %s", T.ext_host);
        expect_reach(aa.netns_path, IPPROTO_TCP, T.ext_peer, 7002, masq);
        expect_reach(ab.netns_path, IPPROTO_TCP, T.ext_peer, 7002, masq);
        free(masq);
        free(ext);
        kids_kill();
        SH_OK("ip netns del %s; ip link del %s 2>/dev/null || true", T.ext_ns, T.ext_veth);
        destroy_ok(&T.cfg, a);
        destroy_ok(&T.cfg, b);
        assert_int_equal(cell_net_stats(a, &after, &err), -ENOENT);
        berr_free(err);
        /* The ports are free again. */
        json_t *doc = nft_table(T.table);
        assert_int_equal(nft_elements(doc, NULL), 0);
        json_decref(doc);
}

static void test_same_host_port_twice(void **state)
{
        (void)state;
        const char *a = new_id("dup-a"), *c = new_id("dup-c");
        uint16_t h = T.hp + 3, other = T.hp + 4;
        struct cell_port_map pa[] = { { .host_port = h, .container_port = 80 } };
        struct cell_port_map pc[] = { { .host_port = other, .container_port = 80 },
                                      { .host_port = h, .container_port = 8080 } };
        struct cell_net_attachment aa, ac;
        create_ok(&T.cfg, a, pa, 1, &aa);
        struct berr *err = NULL;
        assert_int_equal(cell_net_create(T.dir, &T.cfg, c, pc, 2, &ac, &err), -EADDRINUSE);
        char *want = xasprintf("host port %u is already allocated", h);
        if (!contains(berr_msg(err), want))
                fail_msg("\"%s\" lacks \"%s\"", berr_msg(err), want);
        free(want);
        berr_free(err);
        /* Nothing of c is left: lease, namespace, veth, chain, its other port. */
        assert_int_equal(leases_of(c), 0);
        char *p = xasprintf("%s/cell/netns/%s", T.dir, c);
        assert_false(mounted(p));
        assert_int_equal(access(p, F_OK), -1);
        free(p);
        char v[IF_NAMESIZE];
        net_veth_name(c, v);
        assert_false(link_exists(v));
        json_t *doc = nft_table(T.table);
        char *chain = xasprintf("ctr_%s", c);
        assert_false(nft_has_chain(doc, chain));
        assert_int_equal(nft_elements(doc, chain), 0);
        free(chain);
        assert_int_equal(nft_elements(doc, NULL), 1); /* a's, and not c's `other` */
        json_decref(doc);
        /* a still works; udp on the same number is another port. */
        server(aa.netns_path, IPPROTO_TCP, "0.0.0.0", 80, "A");
        expect_reach(NULL, IPPROTO_TCP, "127.0.0.1", h, NULL);
        struct cell_port_map pu[] = { { .host_port = h, .container_port = 80, .proto = IPPROTO_UDP } };
        create_ok(&T.cfg, c, pu, 1, &ac);
        kids_kill();
        destroy_ok(&T.cfg, a);
        destroy_ok(&T.cfg, c);
}

/* The host end's name is a hash: a clash is refused, and destroy leaves an interface it does not own. */
static void test_veth_name_clash(void **state)
{
        (void)state;
        const char *id = new_id("clash");
        char v[IF_NAMESIZE];
        net_veth_name(id, v);
        SH_OK("ip link add %s type veth peer name %sp", v, v);
        struct cell_net_attachment att;
        struct berr *err = NULL;
        assert_int_equal(cell_net_create(T.dir, &T.cfg, id, NULL, 0, &att, &err), -EEXIST);
        if (!contains(berr_msg(err), "already exists"))
                fail_msg("%s", berr_msg(err));
        berr_free(err);
        assert_int_equal(leases_of(id), 0);
        char *p = xasprintf("%s/cell/netns/%s", T.dir, id);
        assert_false(mounted(p));
        assert_int_equal(access(p, F_OK), -1);
        free(p);
        destroy_ok(&T.cfg, id);
        assert_true(link_exists(v));
        char *out = sh(NULL, "ip -o link show dev %s", v);
        assert_false(contains(out, "alias")); /* not even touched */
        free(out);
        SH_OK("ip link del %s", v);
}

static void test_destroy_removes_exactly_its_parts(void **state)
{
        (void)state;
        const char *a = new_id("rm-a"), *d = new_id("rm-d");
        struct cell_port_map pa[] = { { .host_port = T.hp + 5, .container_port = 80 } };
        struct cell_port_map pd[] = { { .host_port = T.hp + 6, .container_port = 80 },
                                      { .host_port = T.hp + 6, .container_port = 53, .proto = IPPROTO_UDP } };
        struct cell_net_attachment aa, ad;
        create_ok(&T.cfg, a, pa, 1, &aa);
        create_ok(&T.cfg, d, pd, 2, &ad);
        char *ca = xasprintf("ctr_%s", a), *cd = xasprintf("ctr_%s", d);
        json_t *doc = nft_table(T.table);
        assert_true(nft_has_chain(doc, cd));
        assert_int_equal(nft_elements(doc, cd), 2);
        assert_int_equal(nft_elements(doc, ca), 1);
        json_decref(doc);
        char *before = nft_fingerprint(T.table, cd);

        destroy_ok(&T.cfg, d);
        assert_false(mounted(ad.netns_path));
        assert_int_equal(access(ad.netns_path, F_OK), -1);
        assert_false(link_exists(ad.host_veth));
        assert_int_equal(leases_of(d), 0);
        doc = nft_table(T.table);
        assert_false(nft_has_chain(doc, cd));
        assert_int_equal(nft_elements(doc, cd), 0);
        assert_true(nft_has_chain(doc, ca));
        assert_int_equal(nft_elements(doc, ca), 1);
        json_decref(doc);
        /* Apart from d's chain and elements, the table is what it was. */
        char *after = nft_fingerprint(T.table, cd);
        assert_string_equal(before, after);
        free(before);
        free(after);
        /* Idempotent, and a's container is untouched. */
        destroy_ok(&T.cfg, d);
        assert_true(link_exists(aa.host_veth));
        assert_true(mounted(aa.netns_path));
        assert_int_equal(leases_of(a), 1);
        /* teardown refuses while a container is left. */
        struct berr *err = NULL;
        assert_int_equal(cell_net_teardown_host(T.dir, &T.cfg, &err), -EBUSY);
        berr_free(err);
        assert_true(link_exists(T.bridge));
        destroy_ok(&T.cfg, a);
        /* Destroying what never existed is fine. */
        destroy_ok(&T.cfg, new_id("never"));
        free(ca);
        free(cd);
}

/* Six processes race for the five addresses of a /29; the namespaces have IPv6, without DAD. */
static void test_leases_concurrent_and_exhausted(void **state)
{
        (void)state;
        struct berr *err = NULL;
        if (cell_net_setup_host(T.dir, &T.cfg2, &err) < 0)
                fail_msg("%s", berr_msg(err));
        enum { N = 6 };
        const char *ids[N];
        int go[2], res[2];
        assert_int_equal(pipe2(go, O_CLOEXEC), 0);
        assert_int_equal(pipe2(res, O_CLOEXEC), 0);
        pid_t pids[N];
        for (int i = 0; i < N; i++) {
                char name[16];
                snprintf(name, sizeof(name), "race-%d", i);
                ids[i] = new_id(name);
                pids[i] = fork();
                assert_true(pids[i] >= 0);
                if (pids[i] == 0) {
                        close(go[1]);
                        char c;
                        if (read(go[0], &c, 1) < 0) /* EOF: all start together */
                                _exit(93);
                        struct cell_net_attachment att;
                        struct berr *e = NULL;
                        char line[256];
                        int n;
                        if (cell_net_create(T.dir, &T.cfg2, ids[i], NULL, 0, &att, &e) == 0)
                                n = snprintf(line, sizeof(line), "OK %d %s\n", i, att.ip);
                        else
                                n = snprintf(line, sizeof(line), "ERR %d %s\n", i, berr_msg(e));
                        if (write(res[1], line, (size_t)n) < 0)
                                _exit(94);
                        _exit(0);
                }
        }
        close(go[0]);
        close(go[1]);
        close(res[1]);
        for (int i = 0; i < N; i++) {
                int st;
                assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
                assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        }
        char buf[4096];
        ssize_t n = 0, k;
        while ((k = read(res[0], buf + n, sizeof(buf) - 1 - (size_t)n)) > 0)
                n += k;
        close(res[0]);
        buf[n] = '\0';
        int ok = 0, failed = 0, loser = -1;
        char seen[N][INET_ADDRSTRLEN];
        char *save = NULL;
        for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                int idx;
                char ip[INET_ADDRSTRLEN];
                if (sscanf(line, "OK %d %15s", &idx, ip) == 2) {
                        for (int j = 0; j < ok; j++)
                                assert_string_not_equal(seen[j], ip);
                        snprintf(seen[ok++], sizeof(seen[0]), "%s", ip);
                } else {
                        failed++;
                        sscanf(line, "ERR %d", &loser);
                        if (!contains(line, "no free address in subnet"))
                                fail_msg("unexpected failure: %s", line);
                }
        }
        assert_int_equal(ok, 5);
        assert_int_equal(failed, 1);
        assert_true(loser >= 0 && loser < N);
        assert_int_equal(leases_of(ids[loser]), 0);
        /* IPv6 on: a link-local address, usable at once (no DAD, so never "tentative"). */
        int first = loser == 0 ? 1 : 0;
        char *path = xasprintf("%s/cell/netns/%s", T.dir, ids[first]);
        char *out = in_ns(path, "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6; ip -6 -o addr show dev eth0");
        assert_true(!strncmp(out, "0\n", 2));
        assert_true(contains(out, "inet6 fe80::"));
        assert_false(contains(out, "tentative"));
        free(out);
        free(path);
        for (int i = 0; i < N; i++) {
                destroy_ok(&T.cfg2, ids[i]);
                assert_int_equal(leases_of(ids[i]), 0);
        }
        if (cell_net_teardown_host(T.dir, &T.cfg2, &err) < 0)
                fail_msg("%s", berr_msg(err));
        assert_false(link_exists(T.bridge2));
}

static void test_overlapping_subnet_refused(void **state)
{
        (void)state;
        /* A route of the test's own: the outside veth's /30. */
        SH_OK("ip link add %s type veth peer name %sp && ip addr add %s/30 dev %s && ip link set %s up",
              T.ext_veth, T.ext_veth, T.ext_host, T.ext_veth, T.ext_veth);
        struct cell_net_config c = T.cfg2;
        char *subnet = xasprintf("%s/24", T.ext_net);
        c.subnet = subnet;
        struct berr *err = NULL;
        assert_int_equal(cell_net_setup_host(T.dir, &c, &err), -EEXIST);
        if (!contains(berr_msg(err), "overlaps the route"))
                fail_msg("%s", berr_msg(err));
        berr_free(err);
        assert_false(link_exists(T.bridge2));
        assert_null(nft_table(T.table2));
        free(subnet);
        SH_OK("ip link del %s", T.ext_veth);
}

static int read_ip_forward(void)
{
        char *v = NULL;
        size_t len = 0;
        if (fs_read_file_at(AT_FDCWD, "/proc/sys/net/ipv4/ip_forward", 16, &v, &len) < 0)
                return -1;
        int r = v[0] == '1';
        free(v);
        return r;
}

static bool write_ip_forward(const char *v)
{
        int fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);
        bool ok = fd >= 0 && write(fd, v, 1) == 1;
        if (fd >= 0)
                close(fd);
        return ok;
}

/*
 * ip_forward is switched on by setup and back off by the last teardown only if it was off. The rest of
 * this file's tests need it on in the host's namespace, so this runs in a namespace of its own, where
 * ip_forward is per namespace.
 */
static void test_ip_forward_restored(void **state)
{
        (void)state;
        char *dir = xasprintf("%s/fwd", T.dir);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct cell_net_config c = { .bridge = "bfwd0",
                                             .nft_table = "bfwd",
                                             .subnet = "10.204.0.0/24" };
                if (unshare(CLONE_NEWNET) < 0)
                        _exit(10);
                if (!write_ip_forward("0"))
                        _exit(11);
                if (cell_net_setup_host(dir, &c, NULL) < 0)
                        _exit(12);
                if (read_ip_forward() != 1)
                        _exit(13);
                if (cell_net_teardown_host(dir, &c, NULL) < 0)
                        _exit(14);
                if (read_ip_forward() != 0)
                        _exit(15);
                /* On already: left on. */
                if (!write_ip_forward("1"))
                        _exit(16);
                if (cell_net_setup_host(dir, &c, NULL) < 0 || cell_net_teardown_host(dir, &c, NULL) < 0)
                        _exit(17);
                if (read_ip_forward() != 1)
                        _exit(18);
                /*
                 * Off, then two bridges of two data dirs: the one that switched forwarding on is torn down
                 * first and leaves it on for the other's containers; the last one switches it off and leaves
                 * no record behind.
                 */
                if (!write_ip_forward("0"))
                        _exit(19);
                struct cell_net_config c2 = { .bridge = "bfwd1",
                                              .nft_table = "bfwd1",
                                              .subnet = "10.204.1.0/24" };
                char *dir2 = xasprintf("%s/fwd2", T.dir);
                if (cell_net_setup_host(dir2, &c2, NULL) < 0 || cell_net_setup_host(dir, &c, NULL) < 0)
                        _exit(20);
                if (cell_net_teardown_host(dir2, &c2, NULL) < 0 || read_ip_forward() != 1)
                        _exit(21);
                if (cell_net_teardown_host(dir, &c, NULL) < 0 || read_ip_forward() != 0)
                        _exit(22);
                struct stat ns;
                if (stat("/proc/self/ns/net", &ns) < 0)
                        _exit(23);
                char *rec = xasprintf("/run/berth/ip_forward/%llu", (unsigned long long)ns.st_ino);
                if (access(rec, F_OK) == 0 || errno != ENOENT)
                        _exit(24);
                /*
                 * A bridge deleted behind berth's back: its entry would keep forwarding on, so the next
                 * teardown forgets it, and the last one switches forwarding off and removes the record.
                 */
                if (cell_net_setup_host(dir2, &c2, NULL) < 0 || cell_net_setup_host(dir, &c, NULL) < 0)
                        _exit(25);
                if (system("ip link del bfwd1") != 0 || read_ip_forward() != 1)
                        _exit(26);
                if (cell_net_teardown_host(dir, &c, NULL) < 0 || read_ip_forward() != 0)
                        _exit(27);
                _exit(access(rec, F_OK) < 0 && errno == ENOENT ? 0 : 28);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
        free(dir);
}

static void test_teardown_leaves_host_as_found(void **state)
{
        (void)state;
        struct berr *err = NULL;
        if (cell_net_teardown_host(T.dir, &T.cfg, &err) < 0)
                fail_msg("%s", berr_msg(err));
        assert_false(link_exists(T.bridge));
        assert_null(nft_table(T.table));
        char *nsdir = xasprintf("%s/cell/netns", T.dir);
        assert_false(mounted(nsdir));
        free(nsdir);
        assert_int_equal(cell_net_teardown_host(T.dir, &T.cfg, NULL), 0); /* again: nothing to do */
        char *after = host_state();
        assert_string_equal(T.before, after);
        free(after);
}

static int test_setup(void **state)
{
        (void)state;
        T.first_id_of_test = T.n_ids;
        return 0;
}

/* After each test, also a failed one: its servers and its containers are gone. */
static int test_teardown(void **state)
{
        (void)state;
        kids_kill();
        for (int i = T.first_id_of_test; i < T.n_ids; i++) {
                cell_net_destroy(T.dir, &T.cfg, T.ids[i], NULL);
                cell_net_destroy(T.dir, &T.cfg2, T.ids[i], NULL);
        }
        free(sh(NULL, "{ ip netns del %s; ip link del %s; } >/dev/null 2>&1", T.ext_ns, T.ext_veth));
        cell_net_teardown_host(T.dir, &T.cfg2, NULL);        /* only test_leases_... prepares it */
        for (int i = T.first_id_of_test; i < T.n_ids; i++) { /* test_veth_name_clash's impostor */
                char v[IF_NAMESIZE];
                net_veth_name(T.ids[i], v);
                free(sh(NULL, "ip -o link show dev %sp >/dev/null 2>&1 && ip link del %s", v, v));
        }
        return 0;
}

static int group_setup(void **state)
{
        (void)state;
        T.pid = getpid();
        int n = (int)(T.pid % 200) + 20;
        snprintf(T.dir, sizeof(T.dir), "/tmp/berth-test-net-XXXXXX");
        if (!mkdtemp(T.dir))
                return -1;
        snprintf(T.bridge, sizeof(T.bridge), "btest%d", (int)(T.pid % 10000));
        snprintf(T.table, sizeof(T.table), "btest%d", (int)T.pid);
        snprintf(T.subnet, sizeof(T.subnet), "10.200.%d.0/24", n);
        snprintf(T.gw, sizeof(T.gw), "10.200.%d.1", n);
        snprintf(T.bridge2, sizeof(T.bridge2), "btesu%d", (int)(T.pid % 10000));
        snprintf(T.table2, sizeof(T.table2), "btesu%d", (int)T.pid);
        snprintf(T.subnet2, sizeof(T.subnet2), "10.201.%d.0/29", n);
        snprintf(T.ext_ns, sizeof(T.ext_ns), "btestext%d", (int)T.pid);
        snprintf(T.ext_veth, sizeof(T.ext_veth), "btx%d", (int)(T.pid % 10000));
        snprintf(T.ext_net, sizeof(T.ext_net), "10.202.%d.0", n);
        snprintf(T.ext_host, sizeof(T.ext_host), "10.202.%d.1", n);
        snprintf(T.ext_peer, sizeof(T.ext_peer), "10.202.%d.2", n);
        T.hp = (uint16_t)(20000 + (T.pid % 4000) * 8);
        T.allow[0] = 1;
        T.cfg = (struct cell_net_config){ .bridge = T.bridge,
                                          .nft_table = T.table,
                                          .subnet = T.subnet,
                                          .allow_host_ports = T.allow,
                                          .n_allow_host_ports = 1 };
        T.cfg2 = (struct cell_net_config){
                .bridge = T.bridge2, .nft_table = T.table2, .subnet = T.subnet2, .ipv6 = true
        };
        T.before = host_state();
        struct berr *err = NULL;
        if (cell_net_setup_host(T.dir, &T.cfg, &err) < 0) {
                fprintf(stderr, "setup_host: %s\n", berr_msg(err));
                berr_free(err);
                cleanup_all();
                return -1;
        }
        return 0;
}

static int group_teardown(void **state)
{
        (void)state;
        cleanup_all();
        free(T.before);
        return 0;
}

int main(void)
{
        if (geteuid() != 0) {
                printf("1..0 # SKIP needs root\n");
                return 77;
        }
        if (system(
                "command -v nft >/dev/null && command -v ip >/dev/null && command -v nsenter >/dev/null") !=
            0) {
                printf("1..0 # SKIP needs nft, ip and nsenter\n");
                return 77;
        }
#define T_(f) cmocka_unit_test_setup_teardown(f, test_setup, test_teardown)
        const struct CMUnitTest tests[] = {
                T_(test_validation),
                T_(test_host_prepared),
                T_(test_inside_namespace),
                T_(test_isolation),
                T_(test_port_mapping),
                T_(test_same_host_port_twice),
                T_(test_veth_name_clash),
                T_(test_destroy_removes_exactly_its_parts),
                T_(test_leases_concurrent_and_exhausted),
                T_(test_overlapping_subnet_refused),
                T_(test_ip_forward_restored),
                T_(test_teardown_leaves_host_as_found),
        };
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
