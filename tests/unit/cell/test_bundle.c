/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.json from bundle_config_build(), checked field by field and then run for real by crun: the
 * process is root inside a user namespace that maps to berth's host range, another uid stays that uid,
 * /dev has no fuse, the limits land in the cgroup. Needs root, crun and busybox-static.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cell/bundle.h"
#include "cell/host.h"
#include "image/idmap.h"
#include "lib/fs.h"
#include "lib/json.h"

static char *args_sh[] = { "/bin/busybox", "sh", "-c", NULL, NULL };
static char *env_default[] = { "PATH=/bin", NULL };

static struct process_spec spec_for(const char *script, uid_t uid)
{
        args_sh[3] = (char *)script;
        return (
            struct process_spec){ .args = args_sh, .env = env_default, .cwd = "/", .uid = uid, .gid = uid };
}

static void test_config_fields(void **state)
{
        (void)state;
        struct process_spec p = spec_for("true", 0);
        struct bundle_opts o = { .rootfs = "/tmp/x", .hostname = "c1", .memory_bytes = 256 << 20 };
        json_t *doc = NULL;
        assert_int_equal(bundle_config_build(&p, &o, &doc, NULL), 0);
        json_t *lin = json_object_get(doc, "linux");
        json_t *ns = json_object_get(lin, "namespaces");
        bool user = false;
        size_t i;
        json_t *v;
        json_array_foreach (ns, i, v)
                user = user || strcmp(json_string_value(json_object_get(v, "type")), "user") == 0;
        assert_true(user);
        json_t *m = json_array_get(json_object_get(lin, "uidMappings"), 0);
        assert_int_equal(json_integer_value(json_object_get(m, "hostID")), IDMAP_HOST_BASE);
        json_t *bounding =
            json_object_get(json_object_get(json_object_get(doc, "process"), "capabilities"), "bounding");
        json_array_foreach (bounding, i, v)
                assert_string_not_equal(json_string_value(v), "CAP_SYS_ADMIN");
        assert_true(json_is_true(json_object_get(json_object_get(doc, "process"), "noNewPrivileges")));
        json_t *mem = json_object_get(json_object_get(lin, "resources"), "memory");
        assert_int_equal(json_integer_value(json_object_get(mem, "limit")), 256 << 20);
        assert_int_equal(json_integer_value(json_object_get(mem, "swap")), 256 << 20);
        assert_int_equal(json_integer_value(json_object_get(
                             json_object_get(json_object_get(lin, "resources"), "pids"), "limit")),
                         BUNDLE_DEFAULT_PIDS);
        json_decref(doc);
        struct bundle_opts rel = { .rootfs = "relative" };
        assert_int_equal(bundle_config_build(&p, &rel, &doc, NULL), -EINVAL);
        assert_int_equal(bundle_cpu_shares_for_memory(64 << 20), 16);
        assert_int_equal(bundle_cpu_shares_for_memory(1024ULL << 20), 128);
        assert_int_equal(bundle_cpu_shares_for_memory(16384ULL << 20), 1024);
}

/* The seccomp profile built for an image (a borrowed reference into *doc), its socketcall rule or NULL. */
static json_t *profile_for(bool i386_image, json_t **doc, json_t **ret_socketcall)
{
        struct process_spec p = spec_for("true", 0);
        struct bundle_opts o = { .rootfs = "/tmp/x", .i386_image = i386_image };
        assert_int_equal(bundle_config_build(&p, &o, doc, NULL), 0);
        json_t *prof = json_object_get(json_object_get(*doc, "linux"), "seccomp");
        json_t *rule, *name;
        size_t i, j;
        *ret_socketcall = NULL;
        json_array_foreach (json_object_get(prof, "syscalls"), i, rule)
                json_array_foreach (json_object_get(rule, "names"), j, name)
                        if (strcmp(json_string_value(name), "socketcall") == 0) {
                                assert_null(*ret_socketcall); /* one rule only */
                                *ret_socketcall = rule;
                        }
        return prof;
}

static bool has_arch(json_t *prof, const char *arch)
{
        json_t *v;
        size_t i;
        json_array_foreach (json_object_get(prof, "architectures"), i, v)
                if (strcmp(json_string_value(v), arch) == 0)
                        return true;
        return false;
}

/*
 * i386's socketcall(2) carries socket(2)'s family in memory, where the AF_VSOCK/AF_ALG filter cannot look
 * (and libseccomp makes each conditional socket rule an unconditional socketcall one): an amd64 image gets no
 * i386 system calls at all; a linux/386 image, whose C library makes every socket with socketcall, gets them.
 */
static void test_i386_abi_only_for_i386_images(void **state)
{
        (void)state;
        json_t *doc = NULL, *sc = NULL;
        json_t *prof = profile_for(false, &doc, &sc);
        assert_true(has_arch(prof, "SCMP_ARCH_X86_64"));
        assert_false(has_arch(prof, "SCMP_ARCH_X86"));
        assert_null(sc);
        json_decref(doc);
        prof = profile_for(true, &doc, &sc);
        assert_true(has_arch(prof, "SCMP_ARCH_X86_64"));
        assert_true(has_arch(prof, "SCMP_ARCH_X86"));
        assert_non_null(sc);
        assert_string_equal(json_string_value(json_object_get(sc, "action")), "SCMP_ACT_ALLOW");
        assert_null(json_object_get(sc, "args"));
        json_decref(doc);
}

/* Run `script` as uid in a fresh bundle; returns its stdout (caller frees) or NULL. */
static char *run_in_crun(const char *script, uid_t uid)
{
        char dir[] = "/tmp/berth-test-bundle-XXXXXX";
        assert_non_null(mkdtemp(dir));
        char cmd[2048];
        snprintf(
            cmd, sizeof(cmd),
            "set -e; cd %s; chmod 0711 .; mkdir -p rootfs/bin rootfs/proc rootfs/dev rootfs/sys rootfs/tmp; "
            "cp /bin/busybox rootfs/bin/; chown -R %u:%u rootfs",
            dir, idmap_to_host(0), idmap_to_host(0));
        assert_int_equal(system(cmd), 0);
        struct process_spec p = spec_for(script, uid);
        _cleanup_free_ char *rootfs = xasprintf("%s/rootfs", dir);
        _cleanup_free_ char *cg = xasprintf("/berth-test/%s", strrchr(dir, '/') + 1);
        struct bundle_opts o = { .rootfs = rootfs,
                                 .hostname = "berth-test",
                                 .memory_bytes = 64 << 20,
                                 .pids = 64,
                                 .cgroups_path = cg };
        json_t *doc = NULL;
        assert_int_equal(bundle_config_build(&p, &o, &doc, NULL), 0);
        _cleanup_free_ char *path = xasprintf("%s/config.json", dir);
        assert_int_equal(json_dump_file(doc, path, 0), 0);
        json_decref(doc);
        _cleanup_free_ char *out = xasprintf("%s/out", dir);
        snprintf(cmd, sizeof(cmd), "crun --root %s/state run -b %s bt-%s </dev/null >%s 2>&1", dir, dir,
                 strrchr(dir, '/') + 1 + strlen("berth-test-bundle-"), out);
        int st = system(cmd);
        char *text = NULL;
        size_t len = 0;
        fs_read_file_at(AT_FDCWD, out, 1 << 20, &text, &len);
        snprintf(cmd, sizeof(cmd), "crun --root %s/state delete -f bt-%s >/dev/null 2>&1; rm -rf %s", dir,
                 strrchr(dir, '/') + 1 + strlen("berth-test-bundle-"), dir);
        (void)!system(cmd);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_msg("crun failed: %s", text ? text : "");
        return text;
}

static void test_runs_as_root_in_user_namespace(void **state)
{
        (void)state;
        if (access("/usr/bin/crun", X_OK) < 0 || access("/bin/busybox", X_OK) < 0)
                skip();
        assert_true(cell_host_prepare_cgroups("/sys/fs/cgroup", NULL) >= 0);
        _cleanup_free_ char *out =
            run_in_crun("id -u; cat /proc/self/uid_map; hostname; ls /dev; "
                        "cat /proc/self/status | grep -E '^(CapEff|NoNewPrivs|Seccomp):'; "
                        "busybox unshare -U true && echo UNSHARED || echo NO-UNSHARE",
                        0);
        assert_non_null(strstr(out, "0\n"));
        assert_non_null(strstr(out, "1000000000"));
        assert_non_null(strstr(out, "berth-test"));
        assert_null(strstr(out, "fuse"));
        assert_non_null(strstr(out, "NoNewPrivs:\t1"));
        assert_non_null(strstr(out, "Seccomp:\t2")); /* a filter is active */
        assert_non_null(strstr(out, "NO-UNSHARE"));  /* unshare is blocked (a user ns needs no capability) */
        /* CAP_SYS_ADMIN is bit 21: 0x200000 must be clear in the effective set. */
        char *cap = strstr(out, "CapEff:");
        assert_non_null(cap);
        unsigned long long eff = strtoull(cap + 7, NULL, 16);
        assert_int_equal(eff & (1ULL << 21), 0);
        assert_true(eff != 0);
}

static void test_other_uid_and_blocked_mount(void **state)
{
        (void)state;
        if (access("/usr/bin/crun", X_OK) < 0 || access("/bin/busybox", X_OK) < 0)
                skip();
        _cleanup_free_ char *out =
            run_in_crun("id -u; mount -t tmpfs none /tmp && echo MOUNTED || echo DENIED", 1000);
        assert_non_null(strstr(out, "1000\n"));
        assert_non_null(strstr(out, "DENIED"));
        assert_null(strstr(out, "MOUNTED"));
}

int main(void)
{
        if (geteuid() != 0) {
                printf("1..0 # SKIP needs root\n");
                return 77;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_config_fields),
                cmocka_unit_test(test_i386_abi_only_for_i386_images),
                cmocka_unit_test(test_runs_as_root_in_user_namespace),
                cmocka_unit_test(test_other_uid_and_blocked_mount),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
