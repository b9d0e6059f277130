/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "cell/bundle.h"
#include "cell/seccomp.h"
#include "image/idmap.h"

/* Garden's unprivileged set (Docker's default): no SYS_ADMIN, no SYS_PTRACE, no SYS_MODULE... */
static const char *const caps[] = {
        "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
        "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
        "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
        "CAP_KILL",    "CAP_AUDIT_WRITE",
};

static const char *const masked[] = {
        "/proc/acpi",
        "/proc/asound",
        "/proc/interrupts",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/sys/devices/virtual/powercap",
        "/sys/firmware",
};

static const char *const readonly[] = { "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                        "/proc/sysrq-trigger" };

static json_t *strv_json(char *const *v)
{
        json_t *a = json_array();
        for (size_t i = 0; v && v[i]; i++)
                json_array_append_new(a, json_string(v[i]));
        return a;
}

static json_t *const_list(const char *const *v, size_t n)
{
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(a, json_string(v[i]));
        return a;
}

static json_t *mount_entry(const char *dest, const char *type, const char *source, const char *const *opts)
{
        json_t *o = json_array();
        for (size_t i = 0; opts[i]; i++)
                json_array_append_new(o, json_string(opts[i]));
        return json_pack("{s:s, s:s, s:s, s:o}", "destination", dest, "type", type, "source", source,
                         "options", o);
}

uint64_t bundle_cpu_shares_for_memory(uint64_t memory_bytes)
{
        uint64_t mb = memory_bytes >> 20;
        mb = mb < 128 ? 128 : mb > 8192 ? 8192 : mb;
        uint64_t shares = 1024 * mb / 8192;
        return shares < 2 ? 2 : shares;
}

int bundle_config_build(const struct process_spec *p, const struct bundle_opts *o, json_t **ret,
                        struct berr **err)
{
        if (!o->rootfs || o->rootfs[0] != '/')
                return berr_set(err, -EINVAL, "bundle: the rootfs must be an absolute path");
        if (!p->args || !p->args[0])
                return berr_set(err, -EINVAL, "bundle: no command specified");
        json_t *gids = json_array();
        for (size_t i = 0; i < p->n_additional_gids; i++)
                json_array_append_new(gids, json_integer(p->additional_gids[i]));
        json_t *process = json_pack(
            "{s:b, s:{s:I, s:I, s:o}, s:o, s:o, s:s, s:{s:o, s:o, s:o, s:[], s:[]}, s:[{s:s, s:I, s:I}], "
            "s:b}",
            "terminal", 0, "user", "uid", (json_int_t)p->uid, "gid", (json_int_t)p->gid, "additionalGids",
            gids, "args", strv_json(p->args), "env", strv_json(p->env), "cwd", p->cwd ? p->cwd : "/",
            "capabilities", "bounding", const_list(caps, ARRAY_SIZE(caps)), "effective",
            const_list(caps, ARRAY_SIZE(caps)), "permitted", const_list(caps, ARRAY_SIZE(caps)),
            "inheritable", "ambient", "rlimits", "type", "RLIMIT_NOFILE", "hard", (json_int_t)BUNDLE_NOFILE,
            "soft", (json_int_t)BUNDLE_NOFILE, "noNewPrivileges", 1);
        /* Non-root processes get no effective capabilities (as Docker: caps only via file caps / setuid). */
        if (p->uid != 0) {
                json_object_set_new(json_object_get(process, "capabilities"), "effective", json_array());
                json_object_set_new(json_object_get(process, "capabilities"), "permitted", json_array());
        }
        static const char *const proc_o[] = { "nosuid", "noexec", "nodev", NULL };
        static const char *const dev_o[] = { "nosuid", "strictatime", "mode=755", "size=65536k", NULL };
        static const char *const pts_o[] = { "nosuid",        "noexec",    "newinstance",
                                             "ptmxmode=0666", "mode=0620", NULL };
        static const char *const shm_o[] = { "nosuid", "noexec", "nodev", "mode=1777", "size=65536k", NULL };
        static const char *const mq_o[] = { "nosuid", "noexec", "nodev", NULL };
        static const char *const sys_o[] = { "nosuid", "noexec", "nodev", "ro", NULL };
        json_t *mounts = json_array();
        json_array_append_new(mounts, mount_entry("/proc", "proc", "proc", proc_o));
        json_array_append_new(mounts, mount_entry("/dev", "tmpfs", "tmpfs", dev_o));
        json_array_append_new(mounts, mount_entry("/dev/pts", "devpts", "devpts", pts_o));
        json_array_append_new(mounts, mount_entry("/dev/shm", "tmpfs", "shm", shm_o));
        json_array_append_new(mounts, mount_entry("/dev/mqueue", "mqueue", "mqueue", mq_o));
        json_array_append_new(mounts, mount_entry("/sys", "sysfs", "sysfs", sys_o));
        /* A cgroup namespace too: the container sees its own cgroup as "/", not the host's path. */
        json_t *ns =
            json_pack("[{s:s}, {s:s}, {s:s}, {s:s}, {s:s}, {s:s}, {s:s}]", "type", "user", "type", "pid",
                      "type", "mount", "type", "ipc", "type", "uts", "type", "network", "type", "cgroup");
        if (o->netns_path)
                json_object_set_new(json_array_get(ns, 5), "path", json_string(o->netns_path));
        if (o->userns_path)
                json_object_set_new(json_array_get(ns, 0), "path", json_string(o->userns_path));
        json_t *idmap = json_pack("[{s:I, s:I, s:I}]", "containerID", (json_int_t)0, "hostID",
                                  (json_int_t)IDMAP_HOST_BASE, "size", (json_int_t)IDMAP_SIZE);
        json_t *resources = json_pack("{s:[{s:b, s:s}], s:{s:I}}", "devices", "allow", 0, "access", "rwm",
                                      "pids", "limit", (json_int_t)(o->pids ? o->pids : BUNDLE_DEFAULT_PIDS));
        if (o->memory_bytes)
                json_object_set_new(resources, "memory",
                                    json_pack("{s:I, s:I}", "limit", (json_int_t)o->memory_bytes, "swap",
                                              (json_int_t)o->memory_bytes));
        if (o->cpu_shares)
                json_object_set_new(resources, "cpu",
                                    json_pack("{s:I}", "shares", (json_int_t)o->cpu_shares));
        json_t *lin = json_pack("{s:o, s:o, s:O, s:o, s:o, s:o, s:s}", "namespaces", ns, "uidMappings", idmap,
                                "gidMappings", idmap, "resources", resources, "maskedPaths",
                                const_list(masked, ARRAY_SIZE(masked)), "readonlyPaths",
                                const_list(readonly, ARRAY_SIZE(readonly)), "rootfsPropagation", "private");
        /* A joined user namespace already has this mapping; runc requires it stated all the same. */
        if (o->cgroups_path)
                json_object_set_new(lin, "cgroupsPath", json_string(o->cgroups_path));
        json_object_set_new(lin, "seccomp", seccomp_profile_json(o->i386_image));
        json_t *doc =
            json_pack("{s:s, s:o, s:{s:s, s:b}, s:o, s:o}", "ociVersion", "1.0.2", "process", process, "root",
                      "path", o->rootfs, "readonly", 0, "mounts", mounts, "linux", lin);
        if (!doc)
                return berr_set(err, -ENOMEM, "bundle: cannot build config.json");
        if (o->hostname)
                json_object_set_new(doc, "hostname", json_string(o->hostname));
        *ret = doc;
        return 0;
}
