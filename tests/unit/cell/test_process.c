/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cell/process.h"
#include "lib/fs.h"

BERTH_STATIC int process_parse_id(const char *p, size_t n, int64_t *ret);
BERTH_STATIC char *process_clean_path(const char *path);

static const char passwd_main[] = "# the image's users\n"
                                  "\n"
                                  "root:x:0:0:root:/root:/bin/sh\n"
                                  "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                                  "   \n"
                                  "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
                                  "bob:x:1001:1001::/home/bob:/bin/sh\n"
                                  "malformed line without colons\n"
                                  "evil:x:notanumber:0::/:/bin/sh\n"
                                  "big:x:99999999999:0::/:/bin/sh\n"
                                  "neg:x:-5:0::/:/bin/sh\n"
                                  "nohome:x:1002:1002\n"
                                  "alice:x:5555:5555:second alice:/second:/bin/sh\n";

/* A rootfs in a temp dir, removed by the teardown even when a test fails. */
struct fixture {
        char dir[64];
        int fd;
};

static void write_file(int dfd, const char *path, const char *data, size_t len)
{
        assert_int_equal(fs_write_file_atomic_at(dfd, path, data, len, 0644), 0);
}

static void write_str(int dfd, const char *path, const char *data)
{
        write_file(dfd, path, data, strlen(data));
}

/* The main group file: members, duplicates, malformed lines and a long (but legal) member list. */
static char *make_group_main(void)
{
        size_t cap = 200000, n = 0;
        char *g = xmalloc(cap);
        n += (size_t)snprintf(g + n, cap - n,
                              "# groups\n\nroot:x:0:\ndaemon:x:1:\nalice:x:1000:\nbob:x:1001:\n"
                              "wheel:x:10:alice,bob\naudio:x:29:carol,alice\nvideo:x:44:alice\n"
                              "dup:x:10:alice\nstaff:x:50:\nbroken line\nbadgid:x:abc:alice\n"
                              "hugeid:x:4294967296:alice\nprefix:x:60:alicex,xalice,ali\nbig:x:70:");
        for (int i = 0; i < 2000; i++)
                n += (size_t)snprintf(g + n, cap - n, "u%d,", i);
        n += (size_t)snprintf(g + n, cap - n, "alice\n");
        return g;
}

static int setup_root(void **state)
{
        struct fixture *f = xcalloc(1, sizeof(*f));
        strcpy(f->dir, "/tmp/berth-test-process-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        f->fd = open(f->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        assert_true(f->fd >= 0);
        assert_int_equal(fs_mkdir_p_at(f->fd, "etc", 0755), 0);
        *state = f;
        return 0;
}

static int setup_main(void **state)
{
        setup_root(state);
        struct fixture *f = *state;
        write_str(f->fd, "etc/passwd", passwd_main);
        _cleanup_free_ char *g = make_group_main();
        write_str(f->fd, "etc/group", g);
        return 0;
}

static int teardown_root(void **state)
{
        struct fixture *f = *state;
        close(f->fd);
        fs_rm_rf_at(AT_FDCWD, f->dir);
        free(f);
        return 0;
}

/* Build with config JSON text; on failure checks that *ret was left untouched. */
static int build(const struct fixture *f, const char *config_json, const struct process_overrides *o,
                 struct process_spec **ret, struct berr **err)
{
        json_error_t je;
        json_t *c = config_json ? json_loads(config_json, JSON_ALLOW_NUL, &je) : NULL;
        if (config_json)
                assert_non_null(c);
        struct process_spec *sentinel = (struct process_spec *)(uintptr_t)0x1;
        *ret = sentinel;
        int r = process_spec_build(c, o, f->fd, ret, err);
        json_decref(c);
        if (r < 0) {
                assert_ptr_equal(*ret, sentinel);
                *ret = NULL;
        } else {
                assert_ptr_not_equal(*ret, sentinel);
        }
        return r;
}

static void assert_argv(char **got, const char *const *want)
{
        size_t i = 0;
        for (; want[i]; i++) {
                assert_non_null(got[i]);
                assert_string_equal(got[i], want[i]);
        }
        assert_null(got[i]);
}

static void assert_err_contains(const struct berr *e, const char *s)
{
        assert_non_null(e);
        if (!strstr(e->msg, s))
                fail_msg("error \"%s\" does not contain \"%s\"", e->msg, s);
}

#define EP_EXEC  "[\"exec_entry\",\"p1_entry\"]"
#define EP_SHELL "[\"/bin/sh\",\"-c\",\"exec_entry p1_entry\"]"
#define CMD_EXEC "[\"exec_cmd\",\"p1_cmd\"]"
#define CMD_SH   "[\"/bin/sh\",\"-c\",\"exec_cmd p1_cmd\"]"

/* The 9 cells of the Dockerfile reference's ENTRYPOINT/CMD table (oci-registry-runtime.md §7). */
static void test_entrypoint_cmd_table(void **state)
{
        struct fixture *f = *state;
        const char *eps[] = { NULL, EP_SHELL, EP_EXEC };
        const char *cmds[] = { NULL, CMD_EXEC, CMD_SH };
        const char *want[3][3][9] = {
                /* no ENTRYPOINT */
                { { NULL }, { "exec_cmd", "p1_cmd" }, { "/bin/sh", "-c", "exec_cmd p1_cmd" } },
                /* ENTRYPOINT shell form: the shell ignores CMD's words ($0, $1) */
                { { "/bin/sh", "-c", "exec_entry p1_entry" },
                  { "/bin/sh", "-c", "exec_entry p1_entry", "exec_cmd", "p1_cmd" },
                  { "/bin/sh", "-c", "exec_entry p1_entry", "/bin/sh", "-c", "exec_cmd p1_cmd" } },
                /* ENTRYPOINT exec form */
                { { "exec_entry", "p1_entry" },
                  { "exec_entry", "p1_entry", "exec_cmd", "p1_cmd" },
                  { "exec_entry", "p1_entry", "/bin/sh", "-c", "exec_cmd p1_cmd" } },
        };
        for (int e = 0; e < 3; e++) {
                for (int c = 0; c < 3; c++) {
                        char cfg[512];
                        snprintf(cfg, sizeof(cfg), "{\"config\":{\"Entrypoint\":%s,\"Cmd\":%s}}",
                                 eps[e] ? eps[e] : "null", cmds[c] ? cmds[c] : "null");
                        _cleanup_(process_spec_freep) struct process_spec *p = NULL;
                        _cleanup_berr_ struct berr *err = NULL;
                        int r = build(f, cfg, NULL, &p, &err);
                        if (e == 0 && c == 0) {
                                assert_int_equal(r, -EINVAL);
                                assert_string_equal(err->msg, "no command specified");
                                continue;
                        }
                        assert_int_equal(r, 0);
                        assert_argv(p->args, want[e][c]);
                }
        }
}

static void test_cmd_entrypoint_overrides(void **state)
{
        struct fixture *f = *state;
        const char *cfg = "{\"config\":{\"Entrypoint\":" EP_EXEC ",\"Cmd\":" CMD_EXEC "}}";
        char *ucmd[] = { "run", "x", NULL };
        char *uep[] = { "/my/ep", NULL };
        char *empty[] = { NULL };
        char *empty_str[] = { "", NULL };
        struct process_spec *p = NULL;

        /* docker run IMAGE run x: CMD replaced, ENTRYPOINT kept. */
        struct process_overrides o = { .cmd = ucmd };
        assert_int_equal(build(f, cfg, &o, &p, NULL), 0);
        assert_argv(p->args, (const char *[]){ "exec_entry", "p1_entry", "run", "x", NULL });
        process_spec_free(p);

        /* An empty caller cmd means "use the image's". */
        o = (struct process_overrides){ .cmd = empty };
        assert_int_equal(build(f, cfg, &o, &p, NULL), 0);
        assert_argv(p->args, (const char *[]){ "exec_entry", "p1_entry", "exec_cmd", "p1_cmd", NULL });
        process_spec_free(p);

        /* --entrypoint /my/ep: the image's CMD is NOT inherited. */
        o = (struct process_overrides){ .entrypoint = uep, .entrypoint_set = true };
        assert_int_equal(build(f, cfg, &o, &p, NULL), 0);
        assert_argv(p->args, (const char *[]){ "/my/ep", NULL });
        process_spec_free(p);

        /* --entrypoint /my/ep run x */
        o = (struct process_overrides){ .entrypoint = uep, .entrypoint_set = true, .cmd = ucmd };
        assert_int_equal(build(f, cfg, &o, &p, NULL), 0);
        assert_argv(p->args, (const char *[]){ "/my/ep", "run", "x", NULL });
        process_spec_free(p);

        /* --entrypoint "" run x: clears the entrypoint. */
        o = (struct process_overrides){ .entrypoint = empty, .entrypoint_set = true, .cmd = ucmd };
        assert_int_equal(build(f, cfg, &o, &p, NULL), 0);
        assert_argv(p->args, (const char *[]){ "run", "x", NULL });
        process_spec_free(p);
        o = (struct process_overrides){ .entrypoint = empty_str, .entrypoint_set = true, .cmd = ucmd };
        assert_int_equal(build(f, cfg, &o, &p, NULL), 0);
        assert_argv(p->args, (const char *[]){ "run", "x", NULL });
        process_spec_free(p);

        /* --entrypoint "" alone: nothing left (image CMD not inherited) → error. */
        _cleanup_berr_ struct berr *err = NULL;
        o = (struct process_overrides){ .entrypoint = empty, .entrypoint_set = true };
        assert_int_equal(build(f, cfg, &o, &p, &err), -EINVAL);
        assert_string_equal(err->msg, "no command specified");
        berr_freep(&err);
        o = (struct process_overrides){ .entrypoint = NULL, .entrypoint_set = true };
        assert_int_equal(build(f, cfg, &o, &p, &err), -EINVAL);
        assert_string_equal(err->msg, "no command specified");
        berr_freep(&err);

        /* No image command at all, caller cmd given. */
        o = (struct process_overrides){ .cmd = ucmd };
        assert_int_equal(build(f, "{\"config\":{}}", &o, &p, NULL), 0);
        assert_argv(p->args, (const char *[]){ "run", "x", NULL });
        process_spec_free(p);
        /* No config document at all. */
        assert_int_equal(build(f, NULL, &o, &p, NULL), 0);
        assert_argv(p->args, (const char *[]){ "run", "x", NULL });
        assert_string_equal(p->cwd, "/");
        process_spec_free(p);
        assert_int_equal(build(f, "{}", NULL, &p, &err), -EINVAL);
        assert_string_equal(err->msg, "no command specified");
}

struct user_case {
        const char *spec;
        uid_t uid;
        gid_t gid;
        const char *home;
        gid_t gids[8];
        size_t n_gids;
};

static void check_user(const struct fixture *f, const struct user_case *c)
{
        struct process_overrides o = { .user = c->spec };
        _cleanup_(process_spec_freep) struct process_spec *p = NULL;
        _cleanup_berr_ struct berr *err = NULL;
        int r = build(f, "{\"config\":{\"Cmd\":[\"x\"]}}", &o, &p, &err);
        if (r < 0)
                fail_msg("user \"%s\": %s", c->spec, err ? err->msg : "?");
        assert_int_equal(p->uid, c->uid);
        assert_int_equal(p->gid, c->gid);
        assert_string_equal(p->home, c->home);
        if (p->n_additional_gids != c->n_gids)
                fail_msg("user \"%s\": %zu additional gids, want %zu", c->spec, p->n_additional_gids,
                         c->n_gids);
        for (size_t i = 0; i < c->n_gids; i++)
                assert_int_equal(p->additional_gids[i], c->gids[i]);
        assert_string_equal(p->user, c->spec[0] ? c->spec : "root");
}

static void test_user_forms(void **state)
{
        struct fixture *f = *state;
        const struct user_case cases[] = {
                { "", 0, 0, "/root", { 0 }, 1 },
                { "root", 0, 0, "/root", { 0 }, 1 },
                { "0", 0, 0, "/root", { 0 }, 1 },
                /* name: passwd gid, then supplementary groups by membership, deduplicated (wheel/dup). */
                { "alice", 1000, 1000, "/home/alice", { 1000, 10, 29, 44, 70 }, 5 },
                /* uid found in passwd: same as its name. */
                { "1000", 1000, 1000, "/home/alice", { 1000, 10, 29, 44, 70 }, 5 },
                { "bob", 1001, 1001, "/home/bob", { 1001, 10 }, 2 },
                { "daemon", 1, 1, "/usr/sbin", { 1 }, 1 },
                { "nohome", 1002, 1002, "/", { 1002 }, 1 },
                /* explicit group: only that group, no supplementary groups. */
                { "alice:staff", 1000, 50, "/home/alice", { 50 }, 1 },
                { "alice:77", 1000, 77, "/home/alice", { 77 }, 1 },
                { "1000:50", 1000, 50, "/home/alice", { 50 }, 1 },
                { "1000:video", 1000, 44, "/home/alice", { 44 }, 1 },
                { "root:wheel", 0, 10, "/root", { 10 }, 1 },
                /* numeric uid absent from passwd: gid 0, home "/", no supplementary groups. */
                { "4242", 4242, 0, "/", { 0 }, 1 },
                { "4242:4243", 4242, 4243, "/", { 4243 }, 1 },
                { "4242:audio", 4242, 29, "/", { 29 }, 1 },
                { "2147483647", 2147483647, 0, "/", { 0 }, 1 },
                { "+1001", 1001, 1001, "/home/bob", { 1001, 10 }, 2 },
                /* a trailing ':' is no group. */
                { "bob:", 1001, 1001, "/home/bob", { 1001, 10 }, 2 },
                /* ":group" is the default user (root) with that group. */
                { ":staff", 0, 50, "/root", { 50 }, 1 },
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
                check_user(f, &cases[i]);
}

static void expect_user_error(const struct fixture *f, const char *spec, int code, const char *msg)
{
        struct process_overrides o = { .user = spec };
        struct process_spec *p = NULL;
        _cleanup_berr_ struct berr *err = NULL;
        int r = build(f, "{\"config\":{\"Cmd\":[\"x\"]}}", &o, &p, &err);
        if (r != code)
                fail_msg("user \"%s\": got %d (%s), want %d", spec, r, err ? err->msg : "", code);
        assert_err_contains(err, msg);
}

static void test_user_errors(void **state)
{
        struct fixture *f = *state;
        expect_user_error(f, "nobody", -ENOENT,
                          "unable to find user nobody: no matching entries in passwd file");
        expect_user_error(f, "alice:nogroup", -ENOENT,
                          "unable to find group nogroup: no matching entries in group file");
        /* malformed passwd lines never match (moby would read a bad uid as 0 = root). */
        expect_user_error(f, "evil", -ENOENT, "unable to find user evil");
        expect_user_error(f, "big", -ENOENT, "unable to find user big");
        expect_user_error(f, "neg", -ENOENT, "unable to find user neg");
        expect_user_error(f, "broken line", -ENOENT, "unable to find user");
        /* a group line with a bad gid never matches either. */
        expect_user_error(f, "alice:badgid", -ENOENT, "unable to find group badgid");
        expect_user_error(f, "alice:hugeid", -ENOENT, "unable to find group hugeid");
        /* CVE-2024-40635: ids past int32 are refused, never wrapped. */
        expect_user_error(f, "2147483648", -ERANGE, "out of range");
        expect_user_error(f, "4294967296", -ERANGE, "out of range");
        expect_user_error(f, "99999999999999999999999", -ERANGE, "out of range");
        expect_user_error(f, "-1", -ERANGE, "out of range");
        expect_user_error(f, "1000:2147483648", -ERANGE, "out of range");
        expect_user_error(f, "alice:-5", -ERANGE, "out of range");
}

static void test_user_image_and_override(void **state)
{
        struct fixture *f = *state;
        const char *cfg = "{\"config\":{\"Cmd\":[\"x\"],\"User\":\"bob\"}}";
        struct process_spec *p = NULL;
        assert_int_equal(build(f, cfg, NULL, &p, NULL), 0);
        assert_int_equal(p->uid, 1001);
        assert_string_equal(p->user, "bob");
        process_spec_free(p);
        /* An empty override is "not given" (moby merge()). */
        struct process_overrides o = { .user = "" };
        assert_int_equal(build(f, cfg, &o, &p, NULL), 0);
        assert_int_equal(p->uid, 1001);
        process_spec_free(p);
        o.user = "alice:staff";
        assert_int_equal(build(f, cfg, &o, &p, NULL), 0);
        assert_int_equal(p->uid, 1000);
        assert_string_equal(p->user, "alice:staff");
        process_spec_free(p);
}

/* No /etc/passwd, no /etc/group: "" and "root" are 0:0 with home "/"; names are errors. */
static void test_missing_passwd(void **state)
{
        struct fixture *f = *state;
        const struct user_case ok[] = {
                { "", 0, 0, "/", { 0 }, 1 },
                { "root", 0, 0, "/", { 0 }, 1 },
                { "1234", 1234, 0, "/", { 0 }, 1 },
                { "1234:99", 1234, 99, "/", { 99 }, 1 },
        };
        for (size_t i = 0; i < ARRAY_SIZE(ok); i++)
                check_user(f, &ok[i]);
        expect_user_error(f, "alice", -ENOENT,
                          "unable to find user alice: no matching entries in passwd file");
        expect_user_error(f, "root:wheel", -ENOENT,
                          "unable to find group wheel: no matching entries in group file");
}

/*
 * /etc/passwd is a symlink to the absolute "/etc/passwd.real": it must resolve inside the rootfs
 * (RESOLVE_IN_ROOT), never to the host's file. /etc/group escapes with "../../..": clamped to the root.
 */
static void test_symlinks_resolve_in_root(void **state)
{
        struct fixture *f = *state;
        write_str(f->fd, "etc/passwd.real",
                  "root:x:0:0:root:/inside-root:/bin/sh\nzed:x:777:778::/zed:/bin/sh\n");
        write_str(f->fd, "etc/group.real", "zgroup:x:900:zed\n");
        assert_int_equal(symlinkat("/etc/passwd.real", f->fd, "etc/passwd"), 0);
        assert_int_equal(symlinkat("../../../../../../etc/group.real", f->fd, "etc/group"), 0);
        const struct user_case ok[] = {
                { "root", 0, 0, "/inside-root", { 0 }, 1 },
                { "zed", 777, 778, "/zed", { 778, 900 }, 2 },
        };
        for (size_t i = 0; i < ARRAY_SIZE(ok); i++)
                check_user(f, &ok[i]);
        /* The host's users are invisible. */
        expect_user_error(f, "daemon", -ENOENT, "unable to find user daemon");

        /* A /proc/self/root link never reaches the host's files. */
        assert_int_equal(unlinkat(f->fd, "etc/passwd", 0), 0);
        assert_int_equal(symlinkat("/proc/self/root/etc/passwd", f->fd, "etc/passwd"), 0);
        struct process_overrides o = { .user = "root" };
        struct process_spec *p = NULL;
        _cleanup_berr_ struct berr *err = NULL;
        /* Resolved inside the root, where there is no /proc: a missing file, so root is 0:0 with home "/". */
        assert_int_equal(build(f, "{\"config\":{\"Cmd\":[\"x\"]}}", &o, &p, &err), 0);
        assert_string_equal(p->home, "/");
        process_spec_free(p);
}

/* CVE-2026-47262: /etc/group parsing is bounded by line length and members per line. */
static void test_group_bounds(void **state)
{
        struct fixture *f = *state;
        write_str(f->fd, "etc/passwd", passwd_main);
        size_t n = 100 * 1024;
        _cleanup_free_ char *g = xmalloc(n + 64);
        size_t k = (size_t)snprintf(g, 64, "huge:x:5:");
        memset(g + k, 'a', n);
        k += n;
        k += (size_t)snprintf(g + k, 64, ",alice\nwheel:x:10:alice\n");
        write_file(f->fd, "etc/group", g, k);
        expect_user_error(f, "alice", -E2BIG, "longer than");
        expect_user_error(f, "alice:wheel", -E2BIG, "longer than");
        /* A numeric group never reads /etc/group. */
        check_user(f, &(struct user_case){ "alice:10", 1000, 10, "/home/alice", { 10 }, 1 });

        /* 20000 one-letter members in a line under the length limit. */
        k = (size_t)snprintf(g, 64, "many:x:6:");
        for (int i = 0; i < 20000; i++) {
                g[k++] = 'm';
                g[k++] = ',';
        }
        k += (size_t)snprintf(g + k, 64, "alice\n");
        write_file(f->fd, "etc/group", g, k);
        expect_user_error(f, "alice", -E2BIG, "members");
}

/* Oversized and non-regular /etc/passwd are refused (bounded read; a FIFO must not block). */
static void test_passwd_bounds(void **state)
{
        struct fixture *f = *state;
        _cleanup_close_ int fd = openat(f->fd, "etc/passwd", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(ftruncate(fd, 5 * 1024 * 1024), 0);
        expect_user_error(f, "root", -EFBIG, "larger than");
        assert_int_equal(unlinkat(f->fd, "etc/passwd", 0), 0);
        assert_int_equal(mkfifoat(f->fd, "etc/passwd", 0644), 0);
        expect_user_error(f, "root", -EINVAL, "not a regular file");
}

static void test_env(void **state)
{
        struct fixture *f = *state;
        struct process_spec *p = NULL;
        _cleanup_berr_ struct berr *err = NULL;

        /* image first, caller replaces in place, new keys appended; HOME from passwd. */
        char *uenv[] = { "A=3", "C=4", "B=", NULL };
        struct process_overrides o = { .env = uenv, .user = "alice" };
        assert_int_equal(
            build(f, "{\"config\":{\"Cmd\":[\"x\"],\"Env\":[\"PATH=/img\",\"A=1\",\"B=2\",\"A=1b\"]}}", &o,
                  &p, NULL),
            0);
        assert_argv(p->env, (const char *[]){ "PATH=/img", "A=3", "B=", "C=4", "HOME=/home/alice", NULL });
        process_spec_free(p);

        /* PATH default only when neither sets it; root's HOME. */
        assert_int_equal(build(f, "{\"config\":{\"Cmd\":[\"x\"],\"Env\":[\"X=1\"]}}", NULL, &p, NULL), 0);
        assert_argv(p->env, (const char *[]){ "X=1", "PATH=" PROCESS_DEFAULT_PATH, "HOME=/root", NULL });
        process_spec_free(p);

        /* Caller's PATH and HOME win; no defaults added; values may contain '='. */
        char *uenv2[] = { "PATH=/mine", "HOME=/h", "Q=a=b", NULL };
        o = (struct process_overrides){ .env = uenv2 };
        assert_int_equal(build(f, "{\"config\":{\"Cmd\":[\"x\"],\"Env\":null}}", &o, &p, NULL), 0);
        assert_argv(p->env, (const char *[]){ "PATH=/mine", "HOME=/h", "Q=a=b", NULL });
        process_spec_free(p);

        /* The image's HOME wins over passwd's. */
        assert_int_equal(build(f, "{\"config\":{\"Cmd\":[\"x\"],\"Env\":[\"HOME=/img\"]}}", NULL, &p, NULL),
                         0);
        assert_argv(p->env, (const char *[]){ "HOME=/img", "PATH=" PROCESS_DEFAULT_PATH, NULL });
        process_spec_free(p);

        /* Unknown numeric user: HOME=/. */
        o = (struct process_overrides){ .user = "4242" };
        assert_int_equal(build(f, "{\"config\":{\"Cmd\":[\"x\"]}}", &o, &p, NULL), 0);
        assert_argv(p->env, (const char *[]){ "PATH=" PROCESS_DEFAULT_PATH, "HOME=/", NULL });
        process_spec_free(p);

        /* Invalid entries. */
        assert_int_equal(build(f, "{\"config\":{\"Cmd\":[\"x\"],\"Env\":[\"NOEQ\"]}}", NULL, &p, &err),
                         -EINVAL);
        assert_err_contains(err, "invalid environment variable \"NOEQ\"");
        berr_freep(&err);
        char *bad[] = { "=v", NULL };
        o = (struct process_overrides){ .env = bad };
        assert_int_equal(build(f, "{\"config\":{\"Cmd\":[\"x\"]}}", &o, &p, &err), -EINVAL);
        assert_err_contains(err, "invalid environment variable");
        berr_freep(&err);
}

static void test_env_limits(void **state)
{
        struct fixture *f = *state;
        struct process_spec *p = NULL;
        _cleanup_berr_ struct berr *err = NULL;
        size_t n = 5000;
        char **env = xcalloc(n + 1, sizeof(char *));
        for (size_t i = 0; i < n; i++)
                env[i] = xasprintf("K%zu=v", i);
        struct process_overrides o = { .env = env };
        assert_int_equal(build(f, "{\"config\":{\"Cmd\":[\"x\"]}}", &o, &p, &err), -E2BIG);
        assert_err_contains(err, "more than 4096 entries");
        berr_freep(&err);
        /* 5000 entries of the same key collapse to one: fine. */
        for (size_t i = 0; i < n; i++) {
                free(env[i]);
                env[i] = xasprintf("K=%zu", i);
        }
        assert_int_equal(build(f, "{\"config\":{\"Cmd\":[\"x\"]}}", &o, &p, NULL), 0);
        assert_string_equal(p->env[0], "K=4999");
        process_spec_free(p);
        for (size_t i = 0; i < n; i++)
                free(env[i]);
        /* Over 1 MiB in total. */
        env[0] = xmalloc(600 * 1024);
        env[1] = xmalloc(600 * 1024);
        for (int i = 0; i < 2; i++) {
                memset(env[i], 'v', 600 * 1024 - 1);
                env[i][0] = (char)('A' + i);
                env[i][1] = '=';
                env[i][600 * 1024 - 1] = '\0';
        }
        env[2] = NULL;
        assert_int_equal(build(f, "{\"config\":{\"Cmd\":[\"x\"]}}", &o, &p, &err), -E2BIG);
        assert_err_contains(err, "environment larger than");
        free(env[0]);
        free(env[1]);
        free(env);
}

static void test_workdir(void **state)
{
        struct fixture *f = *state;
        struct {
                const char *image, *override, *want;
        } cases[] = {
                { NULL, NULL, "/" },
                { "\"\"", NULL, "/" },
                { "\"/app\"", NULL, "/app" },
                { "\"/app/\"", NULL, "/app" },
                { "\"//app//sub//\"", NULL, "/app/sub" },
                { "\"app\"", NULL, "/app" },
                { "\"app/./x/../y\"", NULL, "/app/y" },
                { "\"../../..\"", NULL, "/" },
                { "\"/app\"", "/srv", "/srv" },
                { "\"/app\"", "", "/app" },
                { NULL, "rel/dir/", "/rel/dir" },
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                char cfg[256];
                snprintf(cfg, sizeof(cfg), "{\"config\":{\"Cmd\":[\"x\"],\"WorkingDir\":%s}}",
                         cases[i].image ? cases[i].image : "null");
                struct process_overrides o = { .workdir = cases[i].override };
                _cleanup_(process_spec_freep) struct process_spec *p = NULL;
                assert_int_equal(build(f, cfg, &o, &p, NULL), 0);
                const char *want = cases[i].want;
                if (strcmp(p->cwd, want) != 0)
                        fail_msg("WorkingDir %s / %s: got %s, want %s", cfg,
                                 cases[i].override ? cases[i].override : "-", p->cwd, want);
        }
}

static void test_clean_path(void **state)
{
        (void)state;
        const char *c[][2] = { { "", "/" },
                               { "/", "/" },
                               { "//", "/" },
                               { "a", "/a" },
                               { "/a/b/", "/a/b" },
                               { "/a/../..", "/" },
                               { "./a/.", "/a" },
                               { "/a/b/../c", "/a/c" },
                               { "..a/b..", "/..a/b.." } };
        for (size_t i = 0; i < ARRAY_SIZE(c); i++) {
                _cleanup_free_ char *s = process_clean_path(c[i][0]);
                assert_string_equal(s, c[i][1]);
        }
}

static void test_parse_id(void **state)
{
        (void)state;
        int64_t v = -1;
        assert_int_equal(process_parse_id("0", 1, &v), 1);
        assert_int_equal(v, 0);
        assert_int_equal(process_parse_id("2147483647", 10, &v), 1);
        assert_int_equal(v, 2147483647);
        assert_int_equal(process_parse_id("2147483648", 10, &v), -ERANGE);
        assert_int_equal(process_parse_id("-1", 2, &v), -ERANGE);
        assert_int_equal(process_parse_id("-0", 2, &v), 1);
        assert_int_equal(process_parse_id("12a", 3, &v), 0);
        assert_int_equal(process_parse_id("", 0, &v), 0);
        assert_int_equal(process_parse_id("+", 1, &v), 0);
}

static void expect_config_error(const struct fixture *f, const char *cfg, const char *msg)
{
        struct process_spec *p = NULL;
        _cleanup_berr_ struct berr *err = NULL;
        assert_int_equal(build(f, cfg, NULL, &p, &err), -EINVAL);
        assert_err_contains(err, msg);
}

static void test_wrong_types(void **state)
{
        struct fixture *f = *state;
        expect_config_error(f, "[]", "image config must be a JSON object");
        expect_config_error(f, "{\"config\":[]}", "\"config\" must be an object");
        expect_config_error(f, "{\"config\":{\"Cmd\":\"echo hi\"}}", "Cmd must be an array of strings");
        expect_config_error(f, "{\"config\":{\"Cmd\":[\"a\",1]}}", "Cmd must be an array of strings");
        expect_config_error(f, "{\"config\":{\"Entrypoint\":{},\"Cmd\":[\"a\"]}}",
                            "Entrypoint must be an array of strings");
        expect_config_error(f, "{\"config\":{\"Cmd\":[\"a\"],\"Env\":\"A=1\"}}",
                            "Env must be an array of strings");
        expect_config_error(f, "{\"config\":{\"Cmd\":[\"a\"],\"User\":0}}", "User must be a string");
        expect_config_error(f, "{\"config\":{\"Cmd\":[\"a\"],\"WorkingDir\":[]}}",
                            "WorkingDir must be a string");
        expect_config_error(f, "{\"config\":{\"Cmd\":[\"a\\u0000b\"]}}", "NUL");
        expect_config_error(f, "{\"config\":{\"Cmd\":[\"a\"],\"User\":\"root\\u0000x\"}}", "NUL");
        /* nulls are "absent". */
        struct process_spec *p = NULL;
        assert_int_equal(build(f,
                               "{\"config\":{\"Cmd\":[\"a\"],\"Entrypoint\":null,\"Env\":null,\"User\":null,"
                               "\"WorkingDir\":null}}",
                               NULL, &p, NULL),
                         0);
        assert_argv(p->args, (const char *[]){ "a", NULL });
        assert_string_equal(p->user, "root");
        process_spec_free(p);
        assert_int_equal(build(f, "{\"config\":null}",
                               &(struct process_overrides){ .cmd = (char *[]){ "b", NULL } }, &p, NULL),
                         0);
        process_spec_free(p);
        process_spec_free(NULL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_entrypoint_cmd_table, setup_main, teardown_root),
                cmocka_unit_test_setup_teardown(test_cmd_entrypoint_overrides, setup_main, teardown_root),
                cmocka_unit_test_setup_teardown(test_user_forms, setup_main, teardown_root),
                cmocka_unit_test_setup_teardown(test_user_errors, setup_main, teardown_root),
                cmocka_unit_test_setup_teardown(test_user_image_and_override, setup_main, teardown_root),
                cmocka_unit_test_setup_teardown(test_missing_passwd, setup_root, teardown_root),
                cmocka_unit_test_setup_teardown(test_symlinks_resolve_in_root, setup_root, teardown_root),
                cmocka_unit_test_setup_teardown(test_group_bounds, setup_root, teardown_root),
                cmocka_unit_test_setup_teardown(test_passwd_bounds, setup_root, teardown_root),
                cmocka_unit_test_setup_teardown(test_env, setup_main, teardown_root),
                cmocka_unit_test_setup_teardown(test_env_limits, setup_main, teardown_root),
                cmocka_unit_test_setup_teardown(test_workdir, setup_main, teardown_root),
                cmocka_unit_test(test_clean_path),
                cmocka_unit_test(test_parse_id),
                cmocka_unit_test_setup_teardown(test_wrong_types, setup_main, teardown_root),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
