/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The container's process from an image config plus overrides, with Docker's rules (moby daemon/commit.go
 * merge(), moby/sys/user GetExecUser, runc prepareEnv). See oci-registry-runtime.md §2 and §7.
 */
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cell/process.h"
#include "lib/strv.h"
#include "lib/fs.h"

/* moby/sys/user maxID: larger ids once overflowed to root (CVE-2024-40635). */
#define PROCESS_MAX_ID 2147483647LL
/* Ceilings for the image's /etc/passwd and /etc/group (CVE-2026-47262: unbounded group parsing). */
#define PROCESS_MAX_ETC_FILE     (4u * 1024 * 1024)
#define PROCESS_MAX_ETC_LINE     (64u * 1024)
#define PROCESS_MAX_LINE_MEMBERS 16384
#define PROCESS_MAX_ENV          4096
#define PROCESS_MAX_ENV_BYTES    (1024u * 1024)

/* Exported to unit tests in BERTH_TESTING builds. */
BERTH_STATIC int process_parse_id(const char *p, size_t n, int64_t *ret);
BERTH_STATIC int process_read_etc(int rootfs_fd, const char *path, char **ret, size_t *ret_len,
                                  struct berr **err);
BERTH_STATIC int process_resolve_user(int rootfs_fd, const char *spec, struct process_spec *p,
                                      struct berr **err);
BERTH_STATIC char *process_clean_path(const char *path);

static size_t argv_len(char *const *v)
{
        size_t n = 0;
        while (v && v[n])
                n++;
        return n;
}

/* A JSON string without embedded NULs (a C string would silently truncate it). */
static int config_cstr(const json_t *v, const char *what, const char **ret, struct berr **err)
{
        if (!json_is_string(v))
                return berr_set(err, -EINVAL, "image config: %s must be a string", what);
        const char *s = json_string_value(v);
        if (strlen(s) != json_string_length(v))
                return berr_set(err, -EINVAL, "image config: %s contains a NUL byte", what);
        *ret = s;
        return 0;
}

/*
 * config.<key> as an array of strings. Absent or null gives *ret NULL and *ret_n 0. The
 * strings stay owned by the JSON document; *ret holds borrowed pointers (its array is ours).
 */
static int config_get_strarray(const json_t *cfg, const char *key, const char ***ret, size_t *ret_n,
                               struct berr **err)
{
        json_t *a = cfg ? json_object_get(cfg, key) : NULL;
        *ret = NULL;
        *ret_n = 0;
        if (!a || json_is_null(a))
                return 0;
        if (!json_is_array(a))
                return berr_set(err, -EINVAL, "image config: %s must be an array of strings", key);
        size_t n = json_array_size(a);
        const char **v = xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++) {
                json_t *e = json_array_get(a, i);
                int r = json_is_string(e)
                            ? config_cstr(e, key, &v[i], err)
                            : berr_set(err, -EINVAL, "image config: %s must be an array of strings", key);
                if (r < 0) {
                        free(v);
                        return r;
                }
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

/* ---- /etc/passwd and /etc/group ---- */

struct span {
        const char *p;
        size_t n;
};

static bool span_eq(struct span s, const char *str)
{
        return s.n == strlen(str) && memcmp(s.p, str, s.n) == 0;
}

/*
 * Parse an id as moby/sys/user does with strconv.Atoi: optional sign, then decimal digits. Returns 1 and
 * *ret when the text is numeric and in 0..2147483647, 0 when it is not numeric (a name), -ERANGE when it
 * is numeric but out of range (CVE-2024-40635).
 */
BERTH_STATIC int process_parse_id(const char *p, size_t n, int64_t *ret)
{
        size_t i = 0;
        bool neg = false;
        if (n > 0 && (p[0] == '+' || p[0] == '-')) {
                neg = p[0] == '-';
                i = 1;
        }
        if (i == n)
                return 0;
        int64_t v = 0;
        bool big = false;
        for (; i < n; i++) {
                if (p[i] < '0' || p[i] > '9')
                        return 0;
                if (!big) {
                        v = v * 10 + (p[i] - '0');
                        if (v > PROCESS_MAX_ID)
                                big = true;
                }
        }
        if (big || (neg && v != 0))
                return -ERANGE;
        *ret = v;
        return 1;
}

/* An id field of a passwd/group line: plain digits in range, else the line is malformed. */
static bool etc_parse_id(struct span s, int64_t *ret)
{
        if (s.n == 0 || s.p[0] < '0' || s.p[0] > '9')
                return false;
        return process_parse_id(s.p, s.n, ret) == 1;
}

/*
 * Read rootfs/<path> (an /etc file of the image) resolving every symlink inside the rootfs
 * (RESOLVE_IN_ROOT: an absolute target such as "/etc/passwd.real" stays in the image). *ret is NULL when
 * the file does not exist, else a NUL-terminated buffer of *ret_len bytes (at most 4 MiB) owned by the
 * caller. Non-regular files are refused so a FIFO cannot block us.
 */
BERTH_STATIC int process_read_etc(int rootfs_fd, const char *path, char **ret, size_t *ret_len,
                                  struct berr **err)
{
        *ret = NULL;
        *ret_len = 0;
        _cleanup_close_ int fd = fs_openat2(rootfs_fd, path, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0,
                                            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS);
        if (fd == -ENOENT || fd == -ENOTDIR)
                return 0;
        if (fd < 0)
                return berr_set_errno(err, fd, "open /%s in image", path);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return berr_set_errno(err, -errno, "stat /%s in image", path);
        if (!S_ISREG(st.st_mode))
                return berr_set(err, -EINVAL, "/%s in image is not a regular file", path);
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = fs_read_fd(fd, PROCESS_MAX_ETC_FILE, &buf, &len);
        if (r == -EFBIG)
                return berr_set(err, -EFBIG, "/%s in image is larger than %u bytes", path,
                                PROCESS_MAX_ETC_FILE);
        if (r < 0)
                return berr_set_errno(err, r, "read /%s in image", path);
        *ret_len = len;
        *ret = TAKE_PTR(buf);
        return 0;
}

/*
 * Iterate the lines of buf[0..len): fills up to max_fields ':'-separated fields of the next non-blank,
 * non-comment line (whitespace-trimmed, as moby does) and returns the field count; 0 at the end; -E2BIG
 * for a line longer than PROCESS_MAX_ETC_LINE. *pos is the cursor.
 */
static int etc_next_line(const char *buf, size_t len, size_t *pos, struct span *f, int max_fields,
                         size_t *ret_lineno)
{
        while (*pos < len) {
                const char *s = buf + *pos;
                const char *nl = memchr(s, '\n', len - *pos);
                size_t n = nl ? (size_t)(nl - s) : len - *pos;
                *pos += n + (nl ? 1 : 0);
                (*ret_lineno)++;
                if (n > PROCESS_MAX_ETC_LINE)
                        return -E2BIG;
                while (n > 0 && (s[0] == ' ' || s[0] == '\t' || s[0] == '\r'))
                        s++, n--;
                while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
                        n--;
                if (n == 0 || s[0] == '#')
                        continue;
                int k = 0;
                const char *e = s + n;
                while (k < max_fields) {
                        const char *c = memchr(s, ':', (size_t)(e - s));
                        /* The last field takes the rest of the line. */
                        if (!c || k == max_fields - 1)
                                c = e;
                        f[k++] = (struct span){ s, (size_t)(c - s) };
                        if (c == e)
                                break;
                        s = c + 1;
                }
                return k;
        }
        return 0;
}

struct pw_entry {
        bool found;
        struct span name;
        int64_t uid, gid;
        struct span home;
};

/*
 * First passwd line matching the name (by_uid false) or the uid. Malformed lines (fewer than 4 fields,
 * empty name, non-numeric or out-of-range ids) are skipped: moby reads a bad id as 0, i.e. root.
 */
static int passwd_find(const char *buf, size_t len, bool by_uid, const char *name, int64_t uid,
                       struct pw_entry *ret, struct berr **err)
{
        size_t pos = 0, lineno = 0;
        struct span f[7];
        int k;
        *ret = (struct pw_entry){ 0 };
        while ((k = etc_next_line(buf, len, &pos, f, 7, &lineno)) != 0) {
                if (k < 0)
                        return berr_set(err, -E2BIG, "/etc/passwd in image: line %zu longer than %u bytes",
                                        lineno, PROCESS_MAX_ETC_LINE);
                int64_t u, g;
                if (k < 4 || f[0].n == 0 || !etc_parse_id(f[2], &u) || !etc_parse_id(f[3], &g))
                        continue;
                if (by_uid ? u != uid : !span_eq(f[0], name))
                        continue;
                *ret = (struct pw_entry){ .found = true, .name = f[0], .uid = u, .gid = g };
                if (k >= 6)
                        ret->home = f[5];
                return 0;
        }
        return 0;
}

/* Does the comma-separated member list contain name? -E2BIG past PROCESS_MAX_LINE_MEMBERS entries. */
static int group_has_member(struct span list, struct span name)
{
        const char *s = list.p, *e = list.p + list.n;
        size_t count = 0;
        while (s < e) {
                const char *c = memchr(s, ',', (size_t)(e - s));
                if (!c)
                        c = e;
                if (++count > PROCESS_MAX_LINE_MEMBERS)
                        return -E2BIG;
                if ((size_t)(c - s) == name.n && memcmp(s, name.p, name.n) == 0)
                        return 1;
                s = c + 1;
        }
        return 0;
}

static bool gids_contains(const gid_t *g, size_t n, gid_t v)
{
        for (size_t i = 0; i < n; i++)
                if (g[i] == v)
                        return true;
        return false;
}

/*
 * Scan /etc/group once. With group_name set: *ret_gid = gid of the first group of that name (1 found,
 * 0 not). Otherwise append the gids of groups listing member (deduplicated) to (*gids, *n_gids), bounded
 * by PROCESS_MAX_GROUPS.
 */
static int group_scan(const char *buf, size_t len, const char *group_name, struct span member,
                      int64_t *ret_gid, gid_t **gids, size_t *n_gids, struct berr **err)
{
        size_t pos = 0, lineno = 0;
        struct span f[4];
        int k;
        while ((k = etc_next_line(buf, len, &pos, f, 4, &lineno)) != 0) {
                if (k < 0)
                        return berr_set(err, -E2BIG, "/etc/group in image: line %zu longer than %u bytes",
                                        lineno, PROCESS_MAX_ETC_LINE);
                int64_t g;
                if (k < 3 || f[0].n == 0 || !etc_parse_id(f[2], &g))
                        continue;
                if (group_name) {
                        if (span_eq(f[0], group_name)) {
                                *ret_gid = g;
                                return 1;
                        }
                        continue;
                }
                if (k < 4)
                        continue;
                int r = group_has_member(f[3], member);
                if (r < 0)
                        return berr_set(err, r, "/etc/group in image: line %zu has more than %d members",
                                        lineno, PROCESS_MAX_LINE_MEMBERS);
                if (r == 0 || gids_contains(*gids, *n_gids, (gid_t)g))
                        continue;
                if (*n_gids >= PROCESS_MAX_GROUPS)
                        return berr_set(err, -E2BIG, "user is in more than %d groups", PROCESS_MAX_GROUPS);
                *gids = xrealloc(*gids, (*n_gids + 1) * sizeof(gid_t));
                (*gids)[(*n_gids)++] = (gid_t)g;
        }
        return 0;
}

/*
 * Resolve a Docker user spec ("", name, uid, name:group, uid:gid, name:gid, uid:group) in the rootfs's
 * /etc/passwd and /etc/group, filling p->uid, gid, additional_gids (gid first; supplementary groups only
 * without an explicit group) and home. Only p's user fields are written.
 */
BERTH_STATIC int process_resolve_user(int rootfs_fd, const char *spec, struct process_spec *p,
                                      struct berr **err)
{
        const char *colon = strchr(spec, ':');
        _cleanup_free_ char *user = colon ? xstrndup(spec, (size_t)(colon - spec)) : xstrdup(spec);
        const char *group = colon && colon[1] ? colon + 1 : NULL;
        if (!user[0]) {
                free(user);
                user = xstrdup("0"); /* the default user is uid 0, looked up as such */
        }

        int64_t uid = 0, gid = 0;
        int uid_num = process_parse_id(user, strlen(user), &uid);
        if (uid_num < 0)
                return berr_set(err, -ERANGE, "uid %s out of range (0-%lld)", user, PROCESS_MAX_ID);
        int gid_num = 0;
        if (group) {
                gid_num = process_parse_id(group, strlen(group), &gid);
                if (gid_num < 0)
                        return berr_set(err, -ERANGE, "gid %s out of range (0-%lld)", group, PROCESS_MAX_ID);
        }

        _cleanup_free_ char *pw = NULL;
        size_t pw_len = 0;
        int r = process_read_etc(rootfs_fd, "etc/passwd", &pw, &pw_len, err);
        if (r < 0)
                return r;
        struct pw_entry e = { 0 };
        if (pw) {
                r = passwd_find(pw, pw_len, uid_num == 1, user, uid, &e, err);
                if (r < 0)
                        return r;
        }
        const char *home = "/";
        _cleanup_free_ char *home_buf = NULL;
        if (e.found) {
                uid = e.uid;
                if (!group)
                        gid = e.gid;
                if (e.home.n > 0)
                        home = home_buf = xstrndup(e.home.p, e.home.n);
        } else if (uid_num == 1) {
                /* "the user does not have to exist in the container": gid 0, home "/". */
                if (!group)
                        gid = 0;
        } else if (!pw && strcmp(user, "root") == 0) {
                uid = 0; /* guardian: no /etc/passwd and "root" means 0:0 */
                if (!group)
                        gid = 0;
        } else {
                return berr_set(err, -ENOENT, "unable to find user %s: no matching entries in passwd file",
                                user);
        }

        _cleanup_free_ char *gr = NULL;
        size_t gr_len = 0;
        bool need_group_file = (group && gid_num == 0) || (!group && e.found);
        if (need_group_file) {
                r = process_read_etc(rootfs_fd, "etc/group", &gr, &gr_len, err);
                if (r < 0)
                        return r;
        }
        if (group && gid_num == 0) {
                r = gr ? group_scan(gr, gr_len, group, (struct span){ 0 }, &gid, NULL, NULL, err) : 0;
                if (r < 0)
                        return r;
                if (r == 0)
                        return berr_set(err, -ENOENT,
                                        "unable to find group %s: no matching entries in group file", group);
        }

        _cleanup_free_ gid_t *gids = xmalloc(sizeof(gid_t));
        size_t n_gids = 1;
        gids[0] = (gid_t)gid;
        if (!group && e.found && gr) {
                r = group_scan(gr, gr_len, NULL, e.name, NULL, &gids, &n_gids, err);
                if (r < 0)
                        return r;
        }

        p->uid = (uid_t)uid;
        p->gid = (gid_t)gid;
        free(p->additional_gids);
        p->additional_gids = TAKE_PTR(gids);
        p->n_additional_gids = n_gids;
        free(p->home);
        p->home = xstrdup(home);
        return 0;
}

/* ---- working directory ---- */

/*
 * Lexically clean a path against "/" (Go's filepath.Join("/", p)): relative paths start at "/", "//"
 * and "." vanish, ".." pops (never above "/"), no trailing "/". Returns a new string.
 */
BERTH_STATIC char *process_clean_path(const char *path)
{
        size_t n = strlen(path);
        char *out = xmalloc(n + 2);
        size_t o = 0;
        const char *s = path;
        while (*s) {
                while (*s == '/')
                        s++;
                const char *e = s;
                while (*e && *e != '/')
                        e++;
                size_t len = (size_t)(e - s);
                if (len == 0 || (len == 1 && s[0] == '.')) {
                        /* skip */
                } else if (len == 2 && s[0] == '.' && s[1] == '.') {
                        while (o > 0 && out[o - 1] != '/')
                                o--;
                        if (o > 0)
                                o--; /* drop the '/' too */
                } else {
                        out[o++] = '/';
                        memcpy(out + o, s, len);
                        o += len;
                }
                s = e;
        }
        if (o == 0)
                out[o++] = '/';
        out[o] = '\0';
        return out;
}

/* ---- environment ---- */

static size_t env_key_len(const char *kv)
{
        return (size_t)(strchr(kv, '=') - kv);
}

/* Index of the entry with kv's key (kv may also be a bare key of length klen), or -1. */
static ssize_t env_find(const struct strv *env, const char *key, size_t klen)
{
        for (size_t i = 0; i < env->n; i++)
                if (env_key_len(env->v[i]) == klen && memcmp(env->v[i], key, klen) == 0)
                        return (ssize_t)i;
        return -1;
}

/* Add "K=V" to env; an existing K is replaced in place, keeping its first-seen position. */
static int env_set(struct strv *env, const char *kv, struct berr **err)
{
        const char *eq = strchr(kv, '=');
        if (!eq || eq == kv)
                return berr_set(err, -EINVAL, "invalid environment variable \"%s\": expected KEY=VALUE", kv);
        ssize_t i = env_find(env, kv, (size_t)(eq - kv));
        if (i >= 0) {
                free(env->v[i]);
                env->v[i] = xstrdup(kv);
                return 0;
        }
        if (env->n >= PROCESS_MAX_ENV)
                return berr_set(err, -E2BIG, "environment has more than %d entries", PROCESS_MAX_ENV);
        strv_push(env, xstrdup(kv));
        return 0;
}

/* ---- the whole spec ---- */

void process_spec_free(struct process_spec *p)
{
        if (!p)
                return;
        strv_free(p->args);
        strv_free(p->env);
        free(p->cwd);
        free(p->additional_gids);
        free(p->home);
        free(p->user);
        free(p);
}

/* The string field config.<key> (absent/null → NULL). */
static int config_get_str(const json_t *cfg, const char *key, const char **ret, struct berr **err)
{
        json_t *v = cfg ? json_object_get(cfg, key) : NULL;
        *ret = NULL;
        if (!v || json_is_null(v))
                return 0;
        return config_cstr(v, key, ret, err);
}

int process_spec_build(const json_t *config, const struct process_overrides *o, int rootfs_fd,
                       struct process_spec **ret, struct berr **err)
{
        static const struct process_overrides none = { 0 };
        if (!o)
                o = &none;
        const json_t *cfg = NULL;
        if (config && !json_is_null(config)) {
                if (!json_is_object(config))
                        return berr_set(err, -EINVAL, "image config must be a JSON object");
                cfg = json_object_get(config, "config");
                if (cfg && json_is_null(cfg))
                        cfg = NULL;
                if (cfg && !json_is_object(cfg))
                        return berr_set(err, -EINVAL, "image config: \"config\" must be an object");
        }

        _cleanup_free_ const char **img_ep = NULL, **img_cmd = NULL, **img_env = NULL;
        size_t n_ep = 0, n_cmd = 0, n_env = 0;
        const char *img_user = NULL, *img_wd = NULL;
        int r;
        if ((r = config_get_strarray(cfg, "Entrypoint", &img_ep, &n_ep, err)) < 0 ||
            (r = config_get_strarray(cfg, "Cmd", &img_cmd, &n_cmd, err)) < 0 ||
            (r = config_get_strarray(cfg, "Env", &img_env, &n_env, err)) < 0 ||
            (r = config_get_str(cfg, "User", &img_user, err)) < 0 ||
            (r = config_get_str(cfg, "WorkingDir", &img_wd, err)) < 0)
                return r;

        _cleanup_(process_spec_freep) struct process_spec *p = xcalloc(1, sizeof(*p));

        /* ENTRYPOINT/CMD (moby merge()): a caller's entrypoint drops the image's Cmd; [""] clears. */
        char *const *ep, *const *cmd;
        size_t ep_n, cmd_n;
        bool ep_set = o->entrypoint_set || o->entrypoint;
        if (!ep_set) {
                ep = (char *const *)img_ep;
                ep_n = n_ep;
                if (argv_len(o->cmd) > 0) {
                        cmd = o->cmd;
                        cmd_n = argv_len(o->cmd);
                } else {
                        cmd = (char *const *)img_cmd;
                        cmd_n = n_cmd;
                }
        } else {
                ep = o->entrypoint;
                ep_n = argv_len(o->entrypoint);
                if (ep_n == 1 && ep[0][0] == '\0')
                        ep_n = 0; /* `--entrypoint ""` arrives as [""] from Docker's CLI */
                cmd = o->cmd;
                cmd_n = argv_len(o->cmd);
        }
        if (ep_n + cmd_n == 0)
                return berr_set(err, -EINVAL, "no command specified");
        struct strv args = { 0 };
        for (size_t i = 0; i < ep_n; i++)
                strv_push(&args, xstrdup(ep[i]));
        for (size_t i = 0; i < cmd_n; i++)
                strv_push(&args, xstrdup(cmd[i]));
        p->args = strv_take(&args);

        /* USER: an empty override means "not given" (moby merge()); empty everywhere means root. */
        const char *user = o->user && o->user[0] ? o->user : img_user ? img_user : "";
        r = process_resolve_user(rootfs_fd, user, p, err);
        if (r < 0)
                return r;
        p->user = xstrdup(user[0] ? user : "root");

        /* WORKDIR: override, image, "/"; relative paths resolve against "/". */
        const char *wd = o->workdir && o->workdir[0] ? o->workdir : img_wd && img_wd[0] ? img_wd : "/";
        p->cwd = process_clean_path(wd);

        /* ENV: image then caller, later key wins in place; then PATH and HOME defaults. */
        struct strv env = { 0 };
        for (size_t i = 0; i < n_env && r >= 0; i++)
                r = env_set(&env, img_env[i], err);
        for (size_t i = 0; o->env && o->env[i] && r >= 0; i++)
                r = env_set(&env, o->env[i], err);
        if (r >= 0 && env_find(&env, "PATH", 4) < 0)
                r = env_set(&env, "PATH=" PROCESS_DEFAULT_PATH, err);
        if (r >= 0 && env_find(&env, "HOME", 4) < 0) {
                _cleanup_free_ char *h = xasprintf("HOME=%s", p->home);
                r = env_set(&env, h, err);
        }
        size_t bytes = 0;
        for (size_t i = 0; r >= 0 && i < env.n; i++)
                bytes += strlen(env.v[i]) + 1;
        if (r >= 0 && bytes > PROCESS_MAX_ENV_BYTES)
                r = berr_set(err, -E2BIG, "environment larger than %u bytes", PROCESS_MAX_ENV_BYTES);
        if (r < 0) {
                strv_clear(&env);
                return r;
        }
        p->env = strv_take(&env);

        *ret = TAKE_PTR(p);
        return 0;
}
