/* SPDX-License-Identifier: Apache-2.0 */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cell/bundle.h"
#include "cell/container.h"
#include "cell/disk.h"
#include "cell/host.h"
#include "image/idmap.h"
#include "lib/fs.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strv.h"

#define ID_HEX_LEN 64

struct cell {
        char *data_dir, *cell_dir, *containers_dir, *names_dir, *runtime_root;
        char *runtime, *monitor_path, *self_path, *config_path;
        struct cell_net_config net;
        char *net_bridge, *net_table, *net_subnet;
        uint16_t *net_allow;
        uint64_t log_max_bytes, disk_pool_bytes;
        unsigned log_files;
        bool cgroup_v1;
};

/* ---- small helpers ---- */

static char *sibling_of_self(const char *name)
{
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
                return NULL;
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (!slash)
                return NULL;
        *slash = '\0';
        char *p = xasprintf("%s/%s", exe, name);
        if (access(p, X_OK) == 0)
                return p;
        free(p);
        return NULL;
}

/* An absolute path for a bare command name, searched in $PATH once (the runtime runs on every start). */
static char *find_in_path(const char *name)
{
        if (strchr(name, '/'))
                return xstrdup(name);
        const char *path = getenv("PATH");
        _cleanup_free_ char *copy =
            xstrdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
        char *save = NULL;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
                if (dir[0] != '/')
                        continue;
                char *p = xasprintf("%s/%s", dir, name);
                if (access(p, X_OK) == 0)
                        return p;
                free(p);
        }
        return xstrdup(name);
}

static char *self_exe(void)
{
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
                return xstrdup("berth");
        exe[n] = '\0';
        return xstrdup(exe);
}

static void now_rfc3339(char *out, size_t n)
{
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        size_t l = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(out + l, n - l, ".%09ldZ", ts.tv_nsec);
}

static bool valid_name(const char *n)
{
        size_t l = strlen(n);
        return l > 0 && l <= 64 &&
               ((n[0] >= 'a' && n[0] <= 'z') || (n[0] >= 'A' && n[0] <= 'Z') ||
                (n[0] >= '0' && n[0] <= '9')) &&
               strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == l;
}

static bool is_hex_id(const char *s)
{
        return strlen(s) == ID_HEX_LEN && strspn(s, "0123456789abcdef") == ID_HEX_LEN;
}

/* Run argv to completion with stdio on /dev/null (stderr captured into err_buf when given). */
static int run_quiet(char *const argv[], char *err_buf, size_t err_len)
{
        int p[2] = { -1, -1 };
        if (err_buf && pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0) {
                int e = -errno;
                if (err_buf) {
                        close(p[0]);
                        close(p[1]);
                }
                return e;
        }
        if (pid == 0) {
                int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
                dup2(devnull, STDIN_FILENO);
                dup2(devnull, STDOUT_FILENO);
                dup2(err_buf ? p[1] : devnull, STDERR_FILENO);
                execvp(argv[0], argv);
                _exit(127);
        }
        if (err_buf) {
                close(p[1]);
                size_t len = 0;
                ssize_t r;
                while (len + 1 < err_len && (r = read(p[0], err_buf + len, err_len - 1 - len)) != 0) {
                        if (r < 0 && errno == EINTR)
                                continue;
                        if (r < 0)
                                break;
                        len += (size_t)r;
                }
                err_buf[len] = '\0';
                while (len > 0 && err_buf[len - 1] == '\n')
                        err_buf[--len] = '\0';
                close(p[0]);
        }
        int st = 0;
        while (waitpid(pid, &st, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return st;
}

/*
 * Container root (host uid IDMAP_HOST_BASE) must be able to traverse every directory down to its rootfs:
 * add search permission for others (only that, as Docker does for its remapped root) where it is missing.
 */
static int ensure_traversable(const char *path, struct berr **err)
{
        _cleanup_free_ char *p = xstrdup(path);
        for (char *slash = p + 1;; slash++) {
                char saved = *slash;
                if (saved != '/' && saved != '\0')
                        continue;
                *slash = '\0';
                struct stat st;
                if (stat(p, &st) < 0)
                        return berr_set_errno(err, -errno, "stat %s", p);
                bool by_group = st.st_gid == idmap_to_host(0) && (st.st_mode & S_IXGRP);
                if (S_ISDIR(st.st_mode) && !(st.st_mode & S_IXOTH) && !by_group) {
                        if (chmod(p, (st.st_mode & 07777) | S_IXOTH) < 0)
                                return berr_set_errno(
                                    err, -errno, "%s must be searchable by the containers' user namespace",
                                    p);
                        log_info(
                            "added search permission for others to %s (containers must reach their rootfs)",
                            p);
                }
                *slash = saved;
                if (saved == '\0')
                        return 0;
        }
}

/* ---- open/close ---- */

int cell_open(const struct cell_config *cfg, struct cell **ret, struct berr **err)
{
        struct cell *c = xcalloc(1, sizeof(*c));
        c->data_dir = xstrdup(cfg->data_dir);
        c->cell_dir = xasprintf("%s/cell", cfg->data_dir);
        c->containers_dir = xasprintf("%s/containers", c->cell_dir);
        c->names_dir = xasprintf("%s/names", c->cell_dir);
        c->runtime_root = xasprintf("%s/runtime", c->cell_dir);
        c->runtime = find_in_path(cfg->runtime ? cfg->runtime : "crun");
        c->monitor_path = cfg->monitor_path ? xstrdup(cfg->monitor_path) : sibling_of_self("berth-monitor");
        if (!c->monitor_path)
                c->monitor_path = xstrdup("berth-monitor");
        c->self_path = cfg->self_path ? xstrdup(cfg->self_path) : self_exe();
        c->config_path = cfg->config_path ? xstrdup(cfg->config_path) : NULL;
        c->net_bridge = xstrdup(cfg->net.bridge ? cfg->net.bridge : "berth0");
        c->net_table = xstrdup(cfg->net.nft_table ? cfg->net.nft_table : "berth");
        c->net_subnet = xstrdup(cfg->net.subnet ? cfg->net.subnet : "10.88.0.0/16");
        c->net = cfg->net;
        c->net.bridge = c->net_bridge;
        c->net.nft_table = c->net_table;
        c->net.subnet = c->net_subnet;
        if (cfg->net.n_allow_host_ports) {
                c->net_allow = xmalloc(cfg->net.n_allow_host_ports * sizeof(uint16_t));
                memcpy(c->net_allow, cfg->net.allow_host_ports,
                       cfg->net.n_allow_host_ports * sizeof(uint16_t));
                c->net.allow_host_ports = c->net_allow;
        }
        c->log_max_bytes = cfg->log_max_bytes ? cfg->log_max_bytes : 10 << 20;
        c->log_files = cfg->log_files ? cfg->log_files : 2;
        c->disk_pool_bytes = cfg->disk_pool_bytes;
        c->cgroup_v1 = access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0 ||
                       access("/sys/fs/cgroup/memory", F_OK) == 0;
        int r;
        if ((r = fs_mkdir_p_at(AT_FDCWD, c->cell_dir, 0711)) < 0 ||
            (r = fs_mkdir_p_at(AT_FDCWD, c->containers_dir, 0711)) < 0 ||
            (r = fs_mkdir_p_at(AT_FDCWD, c->names_dir, 0700)) < 0 ||
            (r = fs_mkdir_p_at(AT_FDCWD, c->runtime_root, 0700)) < 0) {
                berr_set_errno(err, r, "create %s", c->cell_dir);
                cell_close(c);
                return r;
        }
        *ret = c;
        return 0;
}

void cell_close(struct cell *c)
{
        if (!c)
                return;
        free(c->data_dir);
        free(c->cell_dir);
        free(c->containers_dir);
        free(c->names_dir);
        free(c->runtime_root);
        free(c->runtime);
        free(c->monitor_path);
        free(c->self_path);
        free(c->config_path);
        free(c->net_bridge);
        free(c->net_table);
        free(c->net_subnet);
        free(c->net_allow);
        free(c);
}

static char *ctr_dir(struct cell *c, const char *id)
{
        return xasprintf("%s/%s", c->containers_dir, id);
}

static int read_json_file(const char *path, json_t **ret)
{
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = fs_read_file_at(AT_FDCWD, path, 4 << 20, &buf, &len);
        if (r < 0)
                return r;
        return json_parse_buf(buf, len, ret, NULL) < 0 ? -EBADMSG : 0;
}

static int write_json_file(const char *path, const json_t *doc)
{
        _cleanup_free_ char *text = json_dump_str(doc, true);
        return fs_write_file_replace_at(AT_FDCWD, path, text, strlen(text), 0644);
}

/* ---- lookup ---- */

int cell_container_lookup(struct cell *c, const char *name_or_id, char **ret_id, struct berr **err)
{
        if (!name_or_id || !*name_or_id || strlen(name_or_id) > 128 || strchr(name_or_id, '/') ||
            name_or_id[0] == '.')
                return berr_set(err, -EINVAL, "invalid container name or id \"%.64s\"", name_or_id);
        if (is_hex_id(name_or_id)) {
                _cleanup_free_ char *d = ctr_dir(c, name_or_id);
                if (access(d, F_OK) == 0) {
                        *ret_id = xstrdup(name_or_id);
                        return 0;
                }
        }
        char target[128];
        _cleanup_free_ char *link = xasprintf("%s/%s", c->names_dir, name_or_id);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n > 0) {
                target[n] = '\0';
                if (is_hex_id(target)) {
                        *ret_id = xstrdup(target);
                        return 0;
                }
        }
        size_t plen = strlen(name_or_id);
        if (plen >= 3 && strspn(name_or_id, "0123456789abcdef") == plen) {
                DIR *d = opendir(c->containers_dir);
                char *found = NULL;
                int matches = 0;
                struct dirent *de;
                while (d && (de = readdir(d)))
                        if (is_hex_id(de->d_name) && strncmp(de->d_name, name_or_id, plen) == 0) {
                                matches++;
                                free(found);
                                found = xstrdup(de->d_name);
                        }
                if (d)
                        closedir(d);
                if (matches == 1) {
                        *ret_id = found;
                        return 0;
                }
                free(found);
                if (matches > 1)
                        return berr_set(err, -EINVAL, "multiple containers match the id prefix \"%s\"",
                                        name_or_id);
        }
        return berr_set(err, -ENOENT, "no such container: %s", name_or_id);
}

/* ---- state ---- */

struct cstate {
        char status[16]; /* created, running, exited */
        int pid, monitor_pid, exit_code, signal;
        bool oom_killed, monitor_alive, monitor_lost;
        char started_at[48], finished_at[48];
};

/* Is the monitor's OFD lock on monitor.lock held? Testing never takes the lock. */
static bool monitor_alive(const char *dir)
{
        _cleanup_free_ char *p = xasprintf("%s/monitor.lock", dir);
        _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
                return false;
        return fl.l_type != F_UNLCK;
}

/* Is pid a process of container id (its cgroup path names it)? */
static bool pid_in_container(int pid, const char *id)
{
        if (pid <= 0)
                return false;
        char p[64];
        snprintf(p, sizeof(p), "/proc/%d/cgroup", pid);
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        if (fs_read_file_at(AT_FDCWD, p, 1 << 16, &buf, &len) < 0)
                return false;
        _cleanup_free_ char *needle = xasprintf("/berth/%s\n", id);
        return strstr(buf, needle) != NULL;
}

static void read_state(struct cell *c, const char *id, struct cstate *st)
{
        memset(st, 0, sizeof(*st));
        snprintf(st->status, sizeof(st->status), "created");
        _cleanup_free_ char *dir = ctr_dir(c, id);
        _cleanup_free_ char *p = xasprintf("%s/state.json", dir);
        _cleanup_json_ json_t *doc = NULL;
        if (read_json_file(p, &doc) < 0)
                return;
        const char *s = json_string_value(json_object_get(doc, "status"));
        if (s)
                snprintf(st->status, sizeof(st->status), "%s", s);
        st->pid = (int)json_integer_value(json_object_get(doc, "pid"));
        st->monitor_pid = (int)json_integer_value(json_object_get(doc, "monitor_pid"));
        st->exit_code = (int)json_integer_value(json_object_get(doc, "exit_code"));
        st->signal = (int)json_integer_value(json_object_get(doc, "signal"));
        st->oom_killed = json_is_true(json_object_get(doc, "oom_killed"));
        const char *t = json_string_value(json_object_get(doc, "started_at"));
        snprintf(st->started_at, sizeof(st->started_at), "%s", t ? t : "");
        t = json_string_value(json_object_get(doc, "finished_at"));
        snprintf(st->finished_at, sizeof(st->finished_at), "%s", t ? t : "");
        if (strcmp(st->status, "running") != 0)
                return;
        st->monitor_alive = monitor_alive(dir);
        if (st->monitor_alive)
                return;
        /* The monitor died (kill -9, a crash, a reboot) without recording the end. */
        if (pid_in_container(st->pid, id)) {
                st->monitor_lost = true; /* still running, unsupervised: its logs are no longer collected */
                return;
        }
        snprintf(st->status, sizeof(st->status), "exited");
        st->exit_code = -1;
        st->pid = 0;
}

static char *cgroup_file(struct cell *c, const char *controller, const char *id, const char *file)
{
        if (c->cgroup_v1)
                return xasprintf("/sys/fs/cgroup/%s/berth/%s/%s", controller, id, file);
        return xasprintf("/sys/fs/cgroup/berth/%s/%s", id, file);
}

static bool read_u64_file(const char *path, const char *key, uint64_t *ret)
{
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        if (fs_read_file_at(AT_FDCWD, path, 1 << 16, &buf, &len) < 0)
                return false;
        const char *p = buf;
        if (key) {
                size_t kl = strlen(key);
                for (p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
                        if (strncmp(p, key, kl) == 0 && p[kl] == ' ')
                                break;
                if (!p || !*p)
                        return false;
                p += kl + 1;
        }
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (errno || end == p)
                return false;
        *ret = v;
        return true;
}

/* ---- create ---- */

static int write_etc_files(struct cell *c, const char *dir, const char *hostname, const char *ip,
                           struct berr **err)
{
        _cleanup_free_ char *hosts = xasprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost "
                                               "ip6-loopback\n%s\t%s\n",
                                               ip && *ip ? ip : "127.0.1.1", hostname);
        _cleanup_free_ char *hn = xasprintf("%s\n", hostname);
        /* The host's resolvers, minus loopback ones (unreachable from the container's namespace). */
        struct strv rc = { 0 };
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        if (fs_read_file_at(AT_FDCWD, "/etc/resolv.conf", 1 << 16, &buf, &len) == 0) {
                char *save = NULL;
                for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                        if (strncmp(line, "nameserver", 10) == 0) {
                                const char *a = line + 10 + strspn(line + 10, " \t");
                                if (!strncmp(a, "127.", 4) || !strncmp(a, "::1", 3))
                                        continue;
                        }
                        strv_push(&rc, xasprintf("%s\n", line));
                }
        }
        size_t total = 1;
        for (size_t i = 0; i < rc.n; i++)
                total += strlen(rc.v[i]);
        _cleanup_free_ char *resolv = xmalloc(total);
        resolv[0] = '\0';
        for (size_t i = 0; i < rc.n; i++)
                strcat(resolv, rc.v[i]);
        strv_clear(&rc);
        const struct {
                const char *name, *data;
        } files[] = { { "hosts", hosts }, { "hostname", hn }, { "resolv.conf", resolv } };
        (void)c;
        for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
                _cleanup_free_ char *p = xasprintf("%s/%s", dir, files[i].name);
                int r = fs_write_file_replace_at(AT_FDCWD, p, files[i].data, strlen(files[i].data), 0644);
                /* Owned by container root, which may edit them as in Docker. */
                if (r < 0 || chown(p, idmap_to_host(0), idmap_to_host(0)) < 0)
                        return berr_set_errno(err, r < 0 ? r : -errno, "write %s", p);
        }
        return 0;
}

static void add_bind(json_t *doc, const char *dest, const char *src)
{
        json_t *m = json_pack("{s:s, s:s, s:s, s:[s, s, s, s]}", "destination", dest, "type", "bind",
                              "source", src, "options", "rbind", "rprivate", "nosuid", "nodev");
        json_array_append_new(json_object_get(doc, "mounts"), m);
}

static json_t *ports_json(const struct cell_port_map *p, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(a, json_pack("{s:s, s:i, s:i, s:s}", "host_ip",
                                                   p[i].host_ip ? p[i].host_ip : "0.0.0.0", "host_port",
                                                   p[i].host_port, "container_port", p[i].container_port,
                                                   "protocol", p[i].proto == IPPROTO_UDP ? "udp" : "tcp"));
        return a;
}

/* Undo everything of a container except its directory's removal; every step tolerates absence. */
static void teardown(struct cell *c, struct image_store *s, const char *id, const json_t *meta)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_free_ char *runtime =
            xstrdup(json_string_value(json_object_get(meta, "runtime")) ?: c->runtime);
        char *dargv[] = { runtime, "--root", c->runtime_root, "delete", "-f", (char *)id, NULL };
        _cleanup_free_ char *rstate = xasprintf("%s/%s", c->runtime_root, id);
        /* The monitor deletes the runtime's container when it ends; only a crash leaves it. */
        if (access(rstate, F_OK) == 0)
                run_quiet(dargv, NULL, 0);
        const char *netmode =
            json_string_value(json_object_get(json_object_get(meta, "host_config"), "network"));
        if (!netmode || !strcmp(netmode, "bridge")) {
                if (cell_net_destroy(c->data_dir, &c->net, id, &e) < 0) {
                        log_warn("container %s: network: %s", id, berr_msg(e));
                        berr_free(TAKE_PTR(e));
                }
        }
        if (store_rootfs_remove(s, id, &e) < 0 && e && e->code != -ENOENT)
                log_warn("container %s: rootfs: %s", id, berr_msg(e));
        berr_free(TAKE_PTR(e));
        if (json_integer_value(json_object_get(json_object_get(meta, "host_config"), "disk")) > 0) {
                _cleanup_(cell_disk_closep) struct cell_disk *d = NULL;
                if (cell_disk_open(c->data_dir, c->disk_pool_bytes, &d, &e) < 0 ||
                    cell_disk_remove(d, id, &e) < 0)
                        log_warn("container %s: disk: %s", id, berr_msg(e));
                berr_free(TAKE_PTR(e));
        }
        const char *name = json_string_value(json_object_get(meta, "name"));
        if (name && valid_name(name)) {
                _cleanup_free_ char *link = xasprintf("%s/%s", c->names_dir, name);
                char target[128];
                ssize_t n = readlink(link, target, sizeof(target) - 1);
                if (n > 0) {
                        target[n] = '\0';
                        if (!strcmp(target, id))
                                unlink(link);
                }
        }
}

int cell_container_create(struct cell *c, struct image_store *s, const struct cell_create_opts *o,
                          char **ret_id, struct berr **err)
{
        char id[ID_HEX_LEN + 1];
        fs_random_hex(id, ID_HEX_LEN / 2);
        char hostname[13];
        snprintf(hostname, sizeof(hostname), "%.12s", id);
        if (o->name && !valid_name(o->name))
                return berr_set(
                    err, -EINVAL,
                    "invalid container name \"%.64s\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", o->name);
        if (o->disk_bytes && o->disk_bytes < (1 << 20))
                return berr_set(err, -EINVAL, "disk quota must be at least 1M");
        _cleanup_json_ json_t *image = NULL;
        _cleanup_json_ json_t *meta = NULL;
        _cleanup_json_ json_t *doc = NULL;
        _cleanup_(process_spec_freep) struct process_spec *p = NULL;
        _cleanup_(cell_disk_closep) struct cell_disk *disk = NULL;
        _cleanup_free_ char *dir = ctr_dir(c, id);
        _cleanup_free_ char *upper_base = NULL;
        _cleanup_free_ char *rootfs = NULL;
        _cleanup_free_ char *link = NULL;
        _cleanup_close_ int rfd = -1;
        _cleanup_close_ int oplock = -1;
        _cleanup_free_ char *lockp = xasprintf("%s/op.lock", dir);
        _cleanup_free_ char *creating = xasprintf("%s/creating", dir);
        _cleanup_free_ char *metap = xasprintf("%s/container.json", dir);
        _cleanup_free_ char *cgpath = xasprintf("/berth/%s", id);
        _cleanup_free_ char *cfgp = xasprintf("%s/config.json", dir);
        struct cell_net_attachment att = { 0 };
        char created[48];
        now_rfc3339(created, sizeof(created));
        int r = cell_host_prepare_cgroups("/sys/fs/cgroup", err);
        if (r < 0)
                return r;
        if ((r = store_inspect(s, o->image, &image, err)) < 0)
                return r;
        /* 0710 root:containers' root, as the rootfs's directory (see store_rootfs_create). */
        if (mkdir(dir, 0710) < 0)
                return berr_set_errno(err, -errno, "create %s", dir);
        if (chown(dir, 0, idmap_to_host(0)) < 0) {
                r = berr_set_errno(err, -errno, "chown %s", dir);
                rmdir(dir);
                return r;
        }
        /* Held until created: a crashed create is recognised (lock free, "creating" present) and swept. */
        oplock = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (oplock < 0 || flock(oplock, LOCK_EX) < 0) {
                r = berr_set_errno(err, -errno, "lock %s", lockp);
                goto fail_dir;
        }
        close(open(creating, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
        const json_t *icfg = json_object_get(json_object_get(image, "config"), "config");
        const char *stop_signal = json_string_value(json_object_get(icfg, "StopSignal"));
        meta = json_pack(
            "{s:s, s:s?, s:s, s:s, s:O?, s:s, s:{s:I, s:I, s:I, s:s, s:o, s:b}}", "id", id, "name", o->name,
            "created", created, "image", o->image, "image_id", json_object_get(image, "digest"), "runtime",
            c->runtime, "host_config", "memory", (json_int_t)o->memory_bytes, "pids",
            (json_int_t)(o->pids ? o->pids : BUNDLE_DEFAULT_PIDS), "disk", (json_int_t)o->disk_bytes,
            "network", o->network == CELL_NET_NONE ? "none" : "bridge", "ports",
            ports_json(o->ports, o->n_ports), "autoremove", o->autoremove);
        if (!meta || write_json_file(metap, meta) < 0) {
                r = berr_set(err, -EIO, "write %s", metap);
                goto fail;
        }
        if (o->name) {
                link = xasprintf("%s/%s", c->names_dir, o->name);
                if (symlink(id, link) < 0) {
                        if (errno == EEXIST) {
                                char other[128] = "";
                                ssize_t n = readlink(link, other, sizeof(other) - 1);
                                other[n > 0 ? n : 0] = '\0';
                                r = berr_set(
                                    err, -EEXIST,
                                    "the container name \"%s\" is already in use by container %.12s; "
                                    "remove that container or choose another name",
                                    o->name, other);
                        } else {
                                r = berr_set_errno(err, -errno, "create %s", link);
                        }
                        json_object_del(meta, "name"); /* not ours: teardown must leave it */
                        goto fail;
                }
        }
        if ((r = ensure_traversable(dir, err)) < 0)
                goto fail;
        if (o->disk_bytes) {
                if ((r = cell_disk_open(c->data_dir, c->disk_pool_bytes, &disk, err)) < 0 ||
                    (r = cell_disk_create(disk, id, o->disk_bytes, &upper_base, err)) < 0)
                        goto fail;
        }
        if ((r = store_rootfs_create(s, o->image, id, upper_base, &rootfs, err)) < 0)
                goto fail;
        if ((r = ensure_traversable(rootfs, err)) < 0)
                goto fail;
        rfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (rfd < 0) {
                r = berr_set_errno(err, -errno, "open %s", rootfs);
                goto fail;
        }
        if ((r = process_spec_build(json_object_get(image, "config"), &o->process, rfd, &p, err)) < 0)
                goto fail;
        if (o->network == CELL_NET_BRIDGE) {
                if ((r = cell_net_setup_host(c->data_dir, &c->net, err)) < 0 ||
                    (r = cell_net_create(c->data_dir, &c->net, id, o->ports, o->n_ports, &att, err)) < 0)
                        goto fail;
        } else if (o->n_ports) {
                r = berr_set(err, -EINVAL, "port mappings need a network (not --network none)");
                goto fail;
        }
        if (o->env_after_lease) {
                char **extra = o->env_after_lease(att.ip, o->env_after_lease_userdata);
                size_t n = 0, m = 0;
                while (p->env && p->env[n])
                        n++;
                while (extra && extra[m])
                        m++;
                if (m) {
                        p->env = xrealloc(p->env, (n + m + 1) * sizeof(char *));
                        for (size_t i = 0; i < m; i++)
                                p->env[n + i] = extra[i];
                        p->env[n + m] = NULL;
                }
                free(extra);
        }
        const char *arch =
            json_string_value(json_object_get(json_object_get(image, "config"), "architecture"));
        struct bundle_opts bo = {
                .rootfs = rootfs,
                .hostname = hostname,
                .netns_path = att.netns_path[0] ? att.netns_path : NULL,
                .userns_path = att.userns_path[0] ? att.userns_path : NULL,
                .cgroups_path = cgpath,
                .memory_bytes = o->memory_bytes,
                .pids = o->pids,
                .cpu_shares = o->memory_bytes ? bundle_cpu_shares_for_memory(o->memory_bytes) : 0,
                .i386_image = arch && strcmp(arch, "386") == 0,
        };
        if ((r = bundle_config_build(p, &bo, &doc, err)) < 0)
                goto fail;
        /* Fault injection for the tests of cell_sweep(): die with everything half made. */
        if (getenv("BERTH_FAULT") && !strcmp(getenv("BERTH_FAULT"), "crash-in-create"))
                raise(SIGKILL);
        if ((r = write_etc_files(c, dir, hostname, att.ip, err)) < 0)
                goto fail;
        static const char *const etc[] = { "hosts", "hostname", "resolv.conf" };
        for (size_t i = 0; i < ARRAY_SIZE(etc); i++) {
                _cleanup_free_ char *dest = xasprintf("/etc/%s", etc[i]);
                _cleanup_free_ char *src = xasprintf("%s/%s", dir, etc[i]);
                add_bind(doc, dest, src);
        }
        if (write_json_file(cfgp, doc) < 0) {
                r = berr_set(err, -EIO, "write %s", cfgp);
                goto fail;
        }
        json_t *procj = json_object_get(doc, "process");
        json_object_set_new(meta, "config",
                            json_pack("{s:O, s:O, s:O, s:s?, s:s?, s:O?, s:s}", "cmd",
                                      json_object_get(procj, "args"), "env", json_object_get(procj, "env"),
                                      "cwd", json_object_get(procj, "cwd"), "user", p->user, "stop_signal",
                                      stop_signal, "exposed_ports", json_object_get(icfg, "ExposedPorts"),
                                      "hostname", hostname));
        if (o->stop_uncaught_now)
                json_object_set_new(meta, "stop_uncaught_now", json_true());
        if (att.ip[0])
                json_object_set_new(meta, "network",
                                    json_pack("{s:s, s:s, s:i, s:s}", "ip", att.ip, "gateway", att.gateway,
                                              "prefix_len", att.prefix_len, "netns", att.netns_path));
        if (write_json_file(metap, meta) < 0) {
                r = berr_set(err, -EIO, "write %s", metap);
                goto fail;
        }
        unlink(creating);
        *ret_id = xstrdup(id);
        return 0;
fail:
        closep(&rfd);
        rfd = -1;
        teardown(c, s, id, meta);
fail_dir:
        fs_rm_rf_at(AT_FDCWD, dir);
        return r;
}

/* ---- sweep ---- */

int cell_sweep(struct cell *c, struct image_store *s)
{
        DIR *d = opendir(c->containers_dir);
        if (!d)
                return 0;
        int swept = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!is_hex_id(de->d_name))
                        continue;
                _cleanup_free_ char *dir = ctr_dir(c, de->d_name);
                _cleanup_free_ char *creating = xasprintf("%s/creating", dir);
                _cleanup_free_ char *lockp = xasprintf("%s/op.lock", dir);
                struct stat st;
                bool crashed = false;
                _cleanup_close_ int lock = open(lockp, O_RDWR | O_CLOEXEC);
                _cleanup_free_ char *metap = xasprintf("%s/container.json", dir);
                if (lock >= 0)
                        /* The creator holds the lock until it is done: free lock + marker = it died. */
                        crashed = access(creating, F_OK) == 0 && flock(lock, LOCK_EX | LOCK_NB) == 0 &&
                                  access(creating, F_OK) == 0;
                else
                        /* Died between mkdir and taking the lock (a window of microseconds). */
                        crashed =
                            stat(dir, &st) == 0 && time(NULL) - st.st_mtime > 60 && access(metap, F_OK) < 0;
                if (!crashed)
                        continue;
                _cleanup_json_ json_t *meta = NULL;
                read_json_file(metap, &meta);
                log_info("removing container %.12s, whose creation was interrupted", de->d_name);
                teardown(c, s, de->d_name, meta);
                fs_rm_rf_at(AT_FDCWD, dir);
                swept++;
        }
        closedir(d);
        return swept;
}

/* ---- start ---- */

static char *cgroup_oom_file(struct cell *c, const char *id)
{
        return c->cgroup_v1 ? cgroup_file(c, "memory", id, "memory.oom_control")
                            : cgroup_file(c, "memory", id, "memory.events");
}

int cell_container_start(struct cell *c, const char *id, struct cell_attach *attach, struct berr **err)
{
        _cleanup_free_ char *dir = ctr_dir(c, id);
        _cleanup_free_ char *metap = xasprintf("%s/container.json", dir);
        _cleanup_json_ json_t *meta = NULL;
        int r = read_json_file(metap, &meta);
        if (r < 0)
                return berr_set_errno(err, r, "no such container: %s", id);
        struct cstate st;
        read_state(c, id, &st);
        if (strcmp(st.status, "created") != 0)
                return berr_set(err, -EBUSY, "container %.12s was already started", id);
        const char *runtime = json_string_value(json_object_get(meta, "runtime")) ?: c->runtime;
        bool autoremove = json_is_true(json_object_get(json_object_get(meta, "host_config"), "autoremove"));
        /* A socket pair: the monitor reports on it, and an attached starter may answer (see monitor.c). */
        int syncp[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, syncp) < 0)
                return berr_set_errno(err, -errno, "socketpair");
        char syncfd[16], logmax[24], logfiles[16];
        snprintf(syncfd, sizeof(syncfd), "%d", 3); /* the child moves it there */
        snprintf(logmax, sizeof(logmax), "%" PRIu64, c->log_max_bytes);
        snprintf(logfiles, sizeof(logfiles), "%u", c->log_files);
        _cleanup_free_ char *oom = cgroup_oom_file(c, id);
        _cleanup_free_ char *cgpath = xasprintf("/berth/%s", id);
        struct strv argv = { 0 };
        const char *fixed[] = { c->monitor_path,
                                "--runtime",
                                runtime,
                                "--root",
                                c->runtime_root,
                                "--bundle",
                                dir,
                                "--id",
                                id,
                                "--dir",
                                dir,
                                "--sync-fd",
                                syncfd,
                                "--log-max",
                                logmax,
                                "--log-files",
                                logfiles,
                                "--oom-file",
                                oom,
                                "--cgroup-path",
                                cgpath };
        for (size_t i = 0; i < ARRAY_SIZE(fixed); i++)
                strv_push(&argv, xstrdup(fixed[i]));
        if (autoremove) {
                const char *tail[] = { "--autoremove", "--", c->self_path, "--data-dir", c->data_dir };
                for (size_t i = 0; i < ARRAY_SIZE(tail); i++)
                        strv_push(&argv, xstrdup(tail[i]));
                if (c->config_path) {
                        strv_push(&argv, xstrdup("--config"));
                        strv_push(&argv, xstrdup(c->config_path));
                }
                strv_push(&argv, xstrdup("rm"));
                strv_push(&argv, xstrdup(id));
        }
        _cleanup_(strv_freep) char **av = strv_take(&argv);
        bool detach = attach == NULL;
        pid_t pid = fork();
        if (pid < 0) {
                r = -errno;
                close(syncp[0]);
                close(syncp[1]);
                return berr_set_errno(err, r, "fork");
        }
        if (pid == 0) {
                /* Its own session: a terminal's Ctrl-C or hang-up never reaches the monitor. */
                setsid();
                if (detach) {
                        pid_t g = fork();
                        if (g != 0)
                                _exit(g < 0 ? 1 : 0);
                }
                /* Only stdio and the socket go to the monitor (and on to the runtime and the container). */
                int sfd = syncp[1] == 3 ? 3 : dup2(syncp[1], 3);
                if (sfd != 3)
                        _exit(127);
                fcntl(3, F_SETFD, 0);
                close_range(4, ~0U, 0);
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
                dup2(devnull, STDIN_FILENO);
                dup2(devnull, STDOUT_FILENO);
                execv(av[0], av);
                dprintf(3, "error cannot execute %s: %s", av[0], strerror(errno));
                _exit(127);
        }
        close(syncp[1]);
        if (detach)
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        char msg[4096];
        size_t len = 0;
        /*
         * Until "ok ...\n", or an error and EOF. One byte at a time: what follows the line (the "exit" of a
         * container that already ended) is for cell_container_wait_child() and the log follower.
         */
        for (;;) {
                ssize_t n = read(syncp[0], msg + len, 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += (size_t)n;
                msg[len] = '\0';
                if (!strncmp(msg, "ok ", 3) && strchr(msg, '\n'))
                        break;
                if (len == sizeof(msg) - 1)
                        break;
        }
        msg[len] = '\0';
        if (strncmp(msg, "ok ", 3) != 0) {
                close(syncp[0]);
                if (!detach)
                        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                                ;
                if (!strncmp(msg, "error ", 6))
                        return berr_set(err, -EIO, "start container %.12s: %s", id, msg + 6);
                return berr_set(err, -EIO, "start container %.12s: the monitor %s exited without a word", id,
                                c->monitor_path);
        }
        if (detach) {
                close(syncp[0]);
        } else {
                /* The caller waits for the exit record on the same pipe. */
                attach->monitor_pid = pid;
                attach->sync_fd = syncp[0];
        }
        return 0;
}

int cell_container_wait_child(struct cell *c, const char *id, struct cell_attach *a, bool remove_self,
                              int *ret_exit_code, struct berr **err)
{
        (void)c;
        char msg[256];
        size_t len = 0;
        /* Until "exit N\n" (or EOF: the monitor died). */
        for (;;) {
                ssize_t n = read(a->sync_fd, msg + len, sizeof(msg) - 1 - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                len += (size_t)n;
                msg[len] = '\0';
                if (strstr(msg, "exit ") && strchr(strstr(msg, "exit "), '\n'))
                        break;
                if (len == sizeof(msg) - 1)
                        break;
        }
        msg[len] = '\0';
        const char *e = strstr(msg, "exit ");
        /* Tell an autoremoving monitor that the caller removes the container (or, by closing, that it does).
         */
        if (e && remove_self)
                (void)!write(a->sync_fd, "rm\n", 3);
        close(a->sync_fd);
        a->sync_fd = -1;
        while (waitpid(a->monitor_pid, NULL, 0) < 0)
                if (errno != EINTR)
                        break;
        if (!e)
                return berr_set(err, -EIO, "container %.12s: its monitor ended without an exit status", id);
        *ret_exit_code = atoi(e + 5);
        return 0;
}

/* ---- inspect / list ---- */

static json_t *usage_json(struct cell *c, const char *id, const json_t *meta, bool running)
{
        json_t *u = json_object();
        uint64_t v;
        if (running) {
                _cleanup_free_ char *mem = c->cgroup_v1
                                               ? cgroup_file(c, "memory", id, "memory.usage_in_bytes")
                                               : cgroup_file(c, "memory", id, "memory.current");
                _cleanup_free_ char *stat = cgroup_file(c, "memory", id, "memory.stat");
                if (read_u64_file(mem, NULL, &v)) {
                        /* As docker stats: without the inactive page cache. */
                        uint64_t inactive = 0;
                        if (read_u64_file(stat, c->cgroup_v1 ? "total_inactive_file" : "inactive_file",
                                          &inactive) &&
                            inactive < v)
                                v -= inactive;
                        json_object_set_new(u, "memory_bytes", json_integer((json_int_t)v));
                }
                _cleanup_free_ char *pids = cgroup_file(c, "pids", id, "pids.current");
                if (read_u64_file(pids, NULL, &v))
                        json_object_set_new(u, "pids", json_integer((json_int_t)v));
                if (c->cgroup_v1) {
                        _cleanup_free_ char *cpu = cgroup_file(c, "cpuacct", id, "cpuacct.usage");
                        if (read_u64_file(cpu, NULL, &v))
                                json_object_set_new(u, "cpu_ns", json_integer((json_int_t)v));
                } else {
                        _cleanup_free_ char *cpu = cgroup_file(c, "cpu", id, "cpu.stat");
                        if (read_u64_file(cpu, "usage_usec", &v))
                                json_object_set_new(u, "cpu_ns", json_integer((json_int_t)(v * 1000)));
                }
        }
        if (running && json_object_get(meta, "network")) {
                /* From the container's side (net.c swaps the host veth's counters). */
                struct cell_net_stats ns;
                if (cell_net_stats(id, &ns, NULL) == 0)
                        json_object_set_new(
                            u, "network",
                            json_pack("{s:I, s:I, s:I, s:I}", "rx_bytes", (json_int_t)ns.rx_bytes, "tx_bytes",
                                      (json_int_t)ns.tx_bytes, "rx_packets", (json_int_t)ns.rx_packets,
                                      "tx_packets", (json_int_t)ns.tx_packets));
        }
        if (json_integer_value(json_object_get(json_object_get(meta, "host_config"), "disk")) > 0) {
                _cleanup_(cell_disk_closep) struct cell_disk *d = NULL;
                _cleanup_berr_ struct berr *e = NULL;
                uint64_t used = 0, limit = 0;
                if (cell_disk_open(c->data_dir, c->disk_pool_bytes, &d, &e) == 0 &&
                    cell_disk_usage(d, id, &used, &limit, &e) == 0)
                        json_object_set_new(u, "disk_bytes", json_integer((json_int_t)used));
        }
        return u;
}

static int inspect_doc(struct cell *c, const char *id, json_t **ret)
{
        _cleanup_free_ char *dir = ctr_dir(c, id);
        _cleanup_free_ char *metap = xasprintf("%s/container.json", dir);
        _cleanup_json_ json_t *meta = NULL;
        int r = read_json_file(metap, &meta);
        if (r < 0)
                return r;
        _cleanup_free_ char *creating = xasprintf("%s/creating", dir);
        if (access(creating, F_OK) == 0)
                return -ENOENT; /* not created yet (or a crashed create, swept by the next remove) */
        struct cstate st;
        read_state(c, id, &st);
        bool running = !strcmp(st.status, "running");
        const json_t *hc = json_object_get(meta, "host_config");
        const json_t *net = json_object_get(meta, "network");
        const json_t *cfg = json_object_get(meta, "config");
        json_t *state = json_pack("{s:s, s:b, s:i, s:i, s:b, s:s, s:s, s:b}", "Status", st.status, "Running",
                                  running, "Pid", running ? st.pid : 0, "ExitCode", st.exit_code, "OOMKilled",
                                  st.oom_killed, "StartedAt", st.started_at, "FinishedAt", st.finished_at,
                                  "Supervised", running ? st.monitor_alive : false);
        if (st.monitor_lost)
                json_object_set_new(state, "Error",
                                    json_string("its monitor died: the container runs unsupervised and its "
                                                "output is no longer logged"));
        else if (!strcmp(st.status, "exited") && st.exit_code == -1)
                json_object_set_new(state, "Error",
                                    json_string("its monitor died; the exit status is unknown"));
        if (st.signal)
                json_object_set_new(state, "Signal", json_integer(st.signal));
        if (running && st.monitor_alive && st.monitor_pid > 0)
                json_object_set_new(state, "MonitorPid", json_integer(st.monitor_pid));
        json_t *ports = json_object();
        size_t i;
        json_t *pm;
        json_array_foreach (json_object_get(hc, "ports"), i, pm) {
                _cleanup_free_ char *key =
                    xasprintf("%d/%s", (int)json_integer_value(json_object_get(pm, "container_port")),
                              json_string_value(json_object_get(pm, "protocol")));
                json_t *list = json_object_get(ports, key);
                if (!list) {
                        list = json_array();
                        json_object_set_new(ports, key, list);
                }
                _cleanup_free_ char *hp =
                    xasprintf("%d", (int)json_integer_value(json_object_get(pm, "host_port")));
                json_array_append_new(
                    list, json_pack("{s:O, s:s}", "HostIp", json_object_get(pm, "host_ip"), "HostPort", hp));
        }
        json_t *doc = json_pack(
            "{s:O, s:O?, s:O, s:O, s:O?, s:O, s:o, s:{s:O?, s:O?, s:O?, s:O?, s:O?, s:O?, s:O?}, "
            "s:{s:s, s:s, s:i, s:o}, s:{s:O, s:O, s:O, s:O, s:I, s:O, s:O}, s:o, s:s}",
            "Id", json_object_get(meta, "id"), "Name", json_object_get(meta, "name"), "Created",
            json_object_get(meta, "created"), "Image", json_object_get(meta, "image"), "ImageId",
            json_object_get(meta, "image_id"), "Runtime", json_object_get(meta, "runtime"), "State", state,
            "Config", "Cmd", json_object_get(cfg, "cmd"), "Env", json_object_get(cfg, "env"), "WorkingDir",
            json_object_get(cfg, "cwd"), "User", json_object_get(cfg, "user"), "StopSignal",
            json_object_get(cfg, "stop_signal"), "ExposedPorts", json_object_get(cfg, "exposed_ports"),
            "Hostname", json_object_get(cfg, "hostname"), "NetworkSettings", "IPAddress",
            json_string_value(json_object_get(net, "ip")) ?: "", "Gateway",
            json_string_value(json_object_get(net, "gateway")) ?: "", "IPPrefixLen",
            (int)json_integer_value(json_object_get(net, "prefix_len")), "Ports", ports, "HostConfig",
            "Memory", json_object_get(hc, "memory"), "PidsLimit", json_object_get(hc, "pids"), "DiskQuota",
            json_object_get(hc, "disk"), "NetworkMode", json_object_get(hc, "network"), "CpuShares",
            (json_int_t)(json_integer_value(json_object_get(hc, "memory"))
                             ? bundle_cpu_shares_for_memory(
                                   (uint64_t)json_integer_value(json_object_get(hc, "memory")))
                             : 0),
            "AutoRemove", json_object_get(hc, "autoremove"), "PortBindings", json_object_get(hc, "ports"),
            "Usage", usage_json(c, id, meta, running), "LogPath", "");
        if (!doc)
                return -ENOMEM;
        _cleanup_free_ char *logp = xasprintf("%s/container.log", dir);
        json_object_set_new(doc, "LogPath", json_string(logp));
        *ret = doc;
        return 0;
}

int cell_container_running(struct cell *c, const char *id, int *ret_monitor_pid, struct berr **err)
{
        _cleanup_free_ char *dir = ctr_dir(c, id);
        _cleanup_free_ char *metap = xasprintf("%s/container.json", dir);
        if (access(metap, F_OK) < 0)
                return berr_set_errno(err, -errno, "container %s", id);
        struct cstate st;
        read_state(c, id, &st);
        bool running = !strcmp(st.status, "running");
        if (ret_monitor_pid)
                *ret_monitor_pid = running && st.monitor_alive ? st.monitor_pid : 0;
        return running;
}

int cell_container_inspect(struct cell *c, const char *id, json_t **ret, struct berr **err)
{
        int r = inspect_doc(c, id, ret);
        if (r == -ENOENT)
                return berr_set(err, r, "no such container: %s", id);
        if (r < 0)
                return berr_set_errno(err, r, "inspect container %s", id);
        return 0;
}

static int by_created_desc(const void *a, const void *b)
{
        const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
        return strcmp(json_string_value(json_object_get(y, "Created")) ?: "",
                      json_string_value(json_object_get(x, "Created")) ?: "");
}

int cell_network_prune(struct cell *c, struct berr **err)
{
        _cleanup_json_ json_t *list = NULL;
        int r = cell_container_list(c, true, &list, err);
        if (r < 0)
                return r;
        if (json_array_size(list) > 0)
                return berr_set(err, -EBUSY,
                                "network: %zu container(s) exist; remove them first (berth rm -f)",
                                json_array_size(list));
        return cell_net_teardown_host(c->data_dir, &c->net, err);
}

int cell_container_list(struct cell *c, bool all, json_t **ret, struct berr **err)
{
        DIR *d = opendir(c->containers_dir);
        if (!d)
                return berr_set_errno(err, -errno, "open %s", c->containers_dir);
        json_t **items = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!is_hex_id(de->d_name))
                        continue;
                json_t *doc = NULL;
                if (inspect_doc(c, de->d_name, &doc) < 0)
                        continue;
                if (!all && !json_is_true(json_object_get(json_object_get(doc, "State"), "Running"))) {
                        json_decref(doc);
                        continue;
                }
                if (n == cap)
                        items = xrealloc(items, (cap = cap ? 2 * cap : 16) * sizeof(*items));
                items[n++] = doc;
        }
        closedir(d);
        qsort(items, n, sizeof(*items), by_created_desc);
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(a, items[i]);
        free(items);
        *ret = a;
        return 0;
}

/* ---- stop / kill ---- */

static int runtime_kill(struct cell *c, const json_t *meta, const char *id, int sig, struct berr **err)
{
        const char *runtime = json_string_value(json_object_get(meta, "runtime")) ?: c->runtime;
        char signame[16], ebuf[1024];
        snprintf(signame, sizeof(signame), "%d", sig);
        char *argv[] = { (char *)runtime, "--root", c->runtime_root, "kill", (char *)id, signame, NULL };
        int st = run_quiet(argv, ebuf, sizeof(ebuf));
        if (st < 0)
                return berr_set_errno(err, st, "run %s kill", runtime);
        if (st != 0)
                return berr_set(err, -ESRCH, "%s kill %.12s: %s", runtime, id, ebuf);
        return 0;
}

static int pidfd_open_(int pid)
{
        return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until the container is no longer running (or removed): 0, or -ETIMEDOUT. */
static int wait_not_running(struct cell *c, const char *id, int64_t timeout_ms)
{
        int64_t deadline = timeout_ms < 0 ? INT64_MAX : mono_ms() + timeout_ms;
        _cleanup_free_ char *dir = ctr_dir(c, id);
        for (;;) {
                if (access(dir, F_OK) < 0)
                        return 0;
                struct cstate st;
                read_state(c, id, &st);
                if (strcmp(st.status, "running") != 0)
                        return 0;
                int64_t left = deadline - mono_ms();
                if (left <= 0)
                        return -ETIMEDOUT;
                /* The monitor exits after recording the end; without one, the container's init itself. */
                int pid = st.monitor_alive ? st.monitor_pid : st.pid;
                _cleanup_close_ int pfd = pidfd_open_(pid);
                if (pfd < 0)
                        continue; /* gone between the two looks: look again */
                /* Re-check after opening: the pid must still be the one the state names. */
                read_state(c, id, &st);
                if (strcmp(st.status, "running") != 0)
                        return 0;
                struct pollfd p = { .fd = pfd, .events = POLLIN };
                int w = poll(&p, 1, (int)MIN(left, 60000));
                (void)w;
                if (!st.monitor_alive)
                        continue;
                /* The monitor may now be executing its autoremove ("berth rm"): wait for that too. */
        }
}

static int read_meta(struct cell *c, const char *id, json_t **ret, struct berr **err)
{
        _cleanup_free_ char *p = xasprintf("%s/%s/container.json", c->containers_dir, id);
        int r = read_json_file(p, ret);
        if (r < 0)
                return berr_set_errno(err, r == -ENOENT ? -ENOENT : r, "no such container: %s", id);
        return 0;
}

/* The container's record and state; with must_run, an error unless it is running. *ret_meta: caller's. */
static int read_meta_state(struct cell *c, const char *id, bool must_run, json_t **ret_meta,
                           struct cstate *st, struct berr **err)
{
        int r = read_meta(c, id, ret_meta, err);
        if (r < 0)
                return r;
        read_state(c, id, st);
        if (must_run && strcmp(st->status, "running") != 0)
                return berr_set(err, -ESRCH, "container %.12s is not running", id);
        return 0;
}

int cell_signal_parse(const char *s)
{
        static const struct {
                const char *name;
                int sig;
        } sigs[] = { { "HUP", SIGHUP },   { "INT", SIGINT },   { "QUIT", SIGQUIT }, { "KILL", SIGKILL },
                     { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "TERM", SIGTERM }, { "WINCH", SIGWINCH },
                     { "STOP", SIGSTOP }, { "CONT", SIGCONT }, { "PWR", SIGPWR },   { "ABRT", SIGABRT } };
        if (!s || !*s)
                return SIGTERM;
        if (!strncasecmp(s, "SIG", 3))
                s += 3;
        char *end;
        long v = strtol(s, &end, 10);
        if (*end == '\0' && v > 0 && v < 65)
                return (int)v;
        for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
                if (!strcasecmp(s, sigs[i].name))
                        return sigs[i].sig;
        if (!strncasecmp(s, "RTMIN+", 6)) {
                v = strtol(s + 6, &end, 10);
                if (*end == '\0' && v >= 0 && SIGRTMIN + v <= SIGRTMAX)
                        return SIGRTMIN + (int)v;
        }
        return -1;
}

int cell_container_kill(struct cell *c, const char *id, int sig, struct berr **err)
{
        _cleanup_json_ json_t *meta = NULL;
        struct cstate st;
        int r = read_meta_state(c, id, true, &meta, &st, err);
        return r < 0 ? r : runtime_kill(c, meta, id, sig, err);
}

/*
 * Does the container's init (host pid) catch sig? The kernel discards a signal sent to a PID namespace's init
 * from outside unless init handles it, so waiting for it to act on an uncaught stop signal (an app running
 * as PID 1 without a handler, e.g. busybox httpd) is pointless. Unknown (no /proc entry): true.
 */
static bool init_catches(int pid, int sig)
{
        if (pid <= 0)
                return true;
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/status", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return true;
        bool caught = true;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, "SigCgt:", 7) == 0) {
                        unsigned long long mask = strtoull(line + 7, NULL, 16);
                        caught = (mask >> (sig - 1)) & 1;
                        break;
                }
        fclose(f);
        return caught;
}

int cell_container_stop(struct cell *c, const char *id, int timeout_s, struct berr **err)
{
        _cleanup_json_ json_t *meta = NULL;
        struct cstate st;
        int r = read_meta_state(c, id, false, &meta, &st, err);
        if (r < 0)
                return r;
        if (strcmp(st.status, "running") != 0)
                return 0; /* as docker: stopping a stopped container succeeds */
        int sig = cell_signal_parse(
            json_string_value(json_object_get(json_object_get(meta, "config"), "stop_signal")));
        if (sig < 0)
                sig = SIGTERM;
        _cleanup_berr_ struct berr *e = NULL;
        if (timeout_s != 0 && json_is_true(json_object_get(meta, "stop_uncaught_now")) &&
            !init_catches(st.pid, sig)) {
                log_debug("stop %.12s: its init does not catch signal %d: SIGKILL now", id, sig);
                timeout_s = 0;
        }
        if (timeout_s != 0 && runtime_kill(c, meta, id, sig, &e) < 0)
                log_debug("stop %.12s: %s", id, berr_msg(e));
        if (timeout_s != 0 && wait_not_running(c, id, timeout_s < 0 ? -1 : (int64_t)timeout_s * 1000) == 0)
                return 0;
        berr_free(TAKE_PTR(e));
        if (runtime_kill(c, meta, id, SIGKILL, &e) < 0)
                log_debug("stop %.12s: %s", id, berr_msg(e));
        if (wait_not_running(c, id, 30000) < 0)
                return berr_set(err, -ETIMEDOUT, "container %.12s did not stop after SIGKILL", id);
        return 0;
}

/* ---- remove ---- */

int cell_container_remove(struct cell *c, struct image_store *s, const char *id, bool force,
                          struct berr **err)
{
        _cleanup_free_ char *dir = ctr_dir(c, id);
        _cleanup_free_ char *lockp = xasprintf("%s/op.lock", dir);
        _cleanup_close_ int lock = open(lockp, O_RDWR | O_CLOEXEC);
        if (lock < 0)
                return berr_set_errno(err, errno == ENOENT ? -ENOENT : -errno, "no such container: %s", id);
        if (flock(lock, LOCK_EX) < 0)
                return berr_set_errno(err, -errno, "lock %s", lockp);
        _cleanup_json_ json_t *meta = NULL;
        _cleanup_free_ char *metap = xasprintf("%s/container.json", dir);
        if (read_json_file(metap, &meta) < 0 && access(dir, F_OK) < 0)
                return berr_set(err, -ENOENT, "no such container: %s", id);
        struct cstate st;
        read_state(c, id, &st);
        if (!strcmp(st.status, "running")) {
                if (!force)
                        return berr_set(
                            err, -EBUSY,
                            "cannot remove container %.12s: it is running; stop it first or use -f", id);
                int r = cell_container_stop(c, id, 0, err);
                if (r < 0)
                        return r;
        }
        teardown(c, s, id, meta);
        int r = fs_rm_rf_at(AT_FDCWD, dir);
        if (r < 0)
                return berr_set_errno(err, r, "remove %s", dir);
        return 0;
}

/* ---- exec ---- */

int cell_container_exec_argv(struct cell *c, const char *id, char *const *cmd, bool tty, char ***ret_argv,
                             char **ret_process_file, struct berr **err)
{
        if (!cmd || !cmd[0])
                return berr_set(err, -EINVAL, "exec: no command given");
        _cleanup_json_ json_t *meta = NULL;
        struct cstate st;
        int r = read_meta_state(c, id, true, &meta, &st, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *dir = ctr_dir(c, id);
        _cleanup_free_ char *cfgp = xasprintf("%s/config.json", dir);
        _cleanup_json_ json_t *cfg = NULL;
        if ((r = read_json_file(cfgp, &cfg)) < 0)
                return berr_set_errno(err, r, "read %s", cfgp);
        json_t *proc = json_deep_copy(json_object_get(cfg, "process"));
        json_t *args = json_array();
        for (size_t i = 0; cmd[i]; i++)
                json_array_append_new(args, json_string(cmd[i]));
        json_object_set_new(proc, "args", args);
        json_object_set_new(proc, "terminal", json_boolean(tty));
        if (tty) {
                /* As docker exec -t: a terminal type unless the container's environment names one. */
                json_t *env = json_object_get(proc, "env");
                bool has_term = false;
                size_t i;
                json_t *v;
                json_array_foreach (env, i, v)
                        has_term |= !strncmp(json_string_value(v) ?: "", "TERM=", 5);
                if (!has_term && env)
                        json_array_append_new(env, json_string("TERM=xterm"));
        }
        char rnd[17];
        fs_random_hex(rnd, 8);
        _cleanup_free_ char *pp = xasprintf("%s/exec-%s.json", dir, rnd);
        r = write_json_file(pp, proc);
        json_decref(proc);
        if (r < 0)
                return berr_set_errno(err, r, "write %s", pp);
        struct strv a = { 0 };
        strv_push(&a, xstrdup(json_string_value(json_object_get(meta, "runtime")) ?: c->runtime));
        strv_push(&a, xstrdup("--root"));
        strv_push(&a, xstrdup(c->runtime_root));
        strv_push(&a, xstrdup("exec"));
        if (tty)
                strv_push(&a, xstrdup("--tty"));
        strv_push(&a, xstrdup("--process"));
        strv_push(&a, xstrdup(pp));
        strv_push(&a, xstrdup(id));
        *ret_argv = strv_take(&a);
        *ret_process_file = TAKE_PTR(pp);
        return 0;
}

/* ---- logs ---- */

char *cell_container_log_path(struct cell *c, const char *id)
{
        return xasprintf("%s/%s/container.log", c->containers_dir, id);
}

struct logline {
        int stream;
        char time[48];
        char *text;
        size_t len;
};

struct logreader {
        cell_log_fn fn;
        void *ud;
        long tail; /* < 0: emit at once */
        struct logline *ring;
        size_t ring_n, ring_head;
        /* A logical line being assembled from partial records, per stream (tail mode only). */
        char *pending[3];
        size_t pending_len[3];
        char pending_time[3][48];
};

static int ring_push(struct logreader *lr, int stream, const char *time, char *text, size_t len)
{
        if (lr->tail == 0) {
                free(text);
                return 0;
        }
        struct logline *slot;
        if (lr->ring_n < (size_t)lr->tail) {
                slot = &lr->ring[(lr->ring_head + lr->ring_n++) % (size_t)lr->tail];
        } else {
                slot = &lr->ring[lr->ring_head];
                free(slot->text);
                lr->ring_head = (lr->ring_head + 1) % (size_t)lr->tail;
        }
        slot->stream = stream;
        snprintf(slot->time, sizeof(slot->time), "%s", time);
        slot->text = text;
        slot->len = len;
        return 0;
}

/* One CRI record "TIME STREAM F|P TEXT\n". Malformed lines are skipped. */
static int log_record_feed(struct logreader *lr, char *line, size_t len)
{
        if (len && line[len - 1] == '\n')
                line[--len] = '\0';
        char *sp1 = memchr(line, ' ', len);
        if (!sp1)
                return 0;
        char *stream_s = sp1 + 1;
        char *sp2 = strchr(stream_s, ' ');
        if (!sp2 || sp2[1] == '\0' || (sp2[2] != ' ' && sp2[2] != '\0'))
                return 0;
        *sp1 = '\0';
        *sp2 = '\0';
        int stream = !strcmp(stream_s, "stdout") ? 1 : !strcmp(stream_s, "stderr") ? 2 : 0;
        if (!stream)
                return 0;
        bool partial = sp2[1] == 'P';
        char *text = sp2[2] ? sp2 + 3 : sp2 + 2;
        size_t tlen = len - (size_t)(text - line);
        if (lr->tail < 0) {
                if (!partial)
                        text[tlen++] = '\n'; /* the NUL terminator's place; the line buffer has room */
                return lr->fn(stream, line, text, tlen, lr->ud);
        }
        /* Tail mode: assemble logical lines. */
        size_t pl = lr->pending_len[stream];
        char *buf = xrealloc(lr->pending[stream], pl + tlen + 2);
        if (pl == 0)
                snprintf(lr->pending_time[stream], sizeof(lr->pending_time[stream]), "%s", line);
        memcpy(buf + pl, text, tlen);
        pl += tlen;
        if (partial) {
                lr->pending[stream] = buf;
                lr->pending_len[stream] = pl;
                return 0;
        }
        buf[pl++] = '\n';
        buf[pl] = '\0';
        lr->pending[stream] = NULL;
        lr->pending_len[stream] = 0;
        return ring_push(lr, stream, lr->pending_time[stream], buf, pl);
}

/* Read fp to EOF, feeding records. */
static int log_read_stream(struct logreader *lr, FILE *fp)
{
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, fp)) > 0) {
                if (line[n - 1] != '\n') {
                        /* A record still being written: read it again once complete. */
                        fseeko(fp, -n, SEEK_CUR);
                        break;
                }
                if ((size_t)n + 2 > cap) {
                        line = xrealloc(line, (size_t)n + 2);
                        cap = (size_t)n + 2;
                }
                int r = log_record_feed(lr, line, (size_t)n);
                if (r < 0)
                        return r;
        }
        clearerr(fp);
        return 0;
}

static int log_flush_ring(struct logreader *lr)
{
        int r = 0;
        for (size_t i = 0; i < lr->ring_n; i++) {
                struct logline *l = &lr->ring[(lr->ring_head + i) % (size_t)lr->tail];
                if (r >= 0)
                        r = lr->fn(l->stream, l->time, l->text, l->len, lr->ud);
                free(l->text);
                l->text = NULL;
        }
        lr->ring_n = 0;
        for (int s = 1; s <= 2; s++) {
                free(lr->pending[s]);
                lr->pending[s] = NULL;
                lr->pending_len[s] = 0;
        }
        lr->tail = -1; /* from here on, records go straight out */
        return r;
}

static int logs_run(struct cell *c, const char *id, const struct cell_log_opts *o, struct logreader *lrp,
                    struct berr **err)
{
        _cleanup_free_ char *dir = ctr_dir(c, id);
        _cleanup_free_ char *path = cell_container_log_path(c, id);
        int r = 0;
        /* Rotated files first, oldest first. */
        for (unsigned i = c->log_files; o->log_fd < 0 && i >= 1 && r >= 0; i--) {
                _cleanup_free_ char *p = xasprintf("%s.%u", path, i);
                _cleanup_fclose_ FILE *fp = fopen(p, "re");
                if (fp)
                        r = log_read_stream(lrp, fp);
        }
        int fd = o->log_fd >= 0 ? dup(o->log_fd) : open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 && errno != ENOENT)
                return berr_set_errno(err, -errno, "open %s", path);
        _cleanup_fclose_ FILE *fp = fd >= 0 ? fdopen(fd, "re") : NULL;
        if (fp && r >= 0)
                r = log_read_stream(lrp, fp);
        if (r >= 0 && lrp->tail >= 0)
                r = log_flush_ring(lrp);
        if (r < 0 || !o->follow)
                return r < 0 ? r : 0;

        /* Follow: until the monitor exits (it writes everything before it does). */
        _cleanup_close_ int pidfd = -1;
        _cleanup_close_ int ino = -1;
        if (o->end_fd >= 0) {
                pidfd = dup(o->end_fd);
        } else {
                struct cstate st;
                read_state(c, id, &st);
                if (strcmp(st.status, "running") != 0 || !st.monitor_alive)
                        return 0;
                pidfd = pidfd_open_(st.monitor_pid);
                if (pidfd < 0 || !monitor_alive(dir))
                        goto final;
        }
        ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (ino < 0 || inotify_add_watch(ino, dir, IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF) < 0)
                return berr_set_errno(err, -errno, "watch %s", dir);
        for (;;) {
                if (fp && (r = log_read_stream(lrp, fp)) < 0)
                        return r;
                /* Rotated (or created) under us: the current file is read to its end; go on with the new. */
                struct stat a, b;
                if (stat(path, &a) == 0 && (!fp || (fstat(fileno(fp), &b) == 0 && a.st_ino != b.st_ino))) {
                        if (fp)
                                fclose(fp);
                        fp = fopen(path, "re");
                        continue;
                }
                struct pollfd p[3] = { { .fd = ino, .events = POLLIN },
                                       { .fd = pidfd, .events = POLLIN },
                                       { .fd = o->proxy_signal_fd, .events = POLLIN } };
                int n = poll(p, 3, -1);
                if (n < 0 && errno != EINTR)
                        return berr_set_errno(err, -errno, "poll");
                if (p[0].revents & POLLIN) {
                        char buf[4096];
                        while (read(ino, buf, sizeof(buf)) > 0)
                                ;
                }
                if (p[2].revents & POLLIN) {
                        struct signalfd_siginfo_ {
                                uint32_t ssi_signo;
                                char rest[124];
                        } si;
                        while (read(o->proxy_signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                                _cleanup_berr_ struct berr *e = NULL;
                                if (cell_container_kill(c, id, (int)si.ssi_signo, &e) < 0)
                                        log_debug("forward signal %u: %s", si.ssi_signo, berr_msg(e));
                        }
                }
                if (p[1].revents & POLLIN)
                        break;
        }
final:
        if (fp && (r = log_read_stream(lrp, fp)) < 0)
                return r;
        return 0;
}

int cell_container_logs(struct cell *c, const char *id, const struct cell_log_opts *o, cell_log_fn fn,
                        void *userdata, struct berr **err)
{
        struct logreader lr = { .fn = fn, .ud = userdata, .tail = MIN(o->tail, 1L << 24) };
        if (lr.tail > 0)
                lr.ring = xcalloc((size_t)lr.tail, sizeof(*lr.ring));
        size_t ring_cap = lr.tail > 0 ? (size_t)lr.tail : 0;
        int r = logs_run(c, id, o, &lr, err);
        /* What an early return left in the ring. */
        for (size_t i = 0; i < ring_cap; i++)
                free(lr.ring[i].text);
        for (int st = 1; st <= 2; st++)
                free(lr.pending[st]);
        free(lr.ring);
        return r;
}
