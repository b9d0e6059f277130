/* SPDX-License-Identifier: Apache-2.0 */
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cell/bundle.h"
#include "cell/host.h"
#include "cell/runtime.h"
#include "lib/fs.h"
#include "lib/json.h"
#include "lib/log.h"

/* Run argv, waiting for it; stdio inherited. Returns the wait status or a negative errno. */
static int spawn_wait(char *const argv[], pid_t *ret_pid)
{
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                /* The runtime becomes the foreground of this terminal session's signals, like docker run. */
                signal(SIGINT, SIG_DFL);
                signal(SIGTERM, SIG_DFL);
                execvp(argv[0], argv);
                _exit(127);
        }
        if (ret_pid)
                *ret_pid = pid;
        int status = 0;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        return status;
}

static void runtime_delete(const char *runtime, const char *root, const char *id)
{
        char *argv[] = { (char *)runtime, "--root", (char *)root, "delete", "-f", (char *)id, NULL };
        pid_t pid = fork();
        if (pid == 0) {
                int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
                if (devnull >= 0) {
                        dup2(devnull, STDOUT_FILENO);
                        dup2(devnull, STDERR_FILENO);
                }
                execvp(argv[0], argv);
                _exit(127);
        }
        if (pid > 0)
                while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                        ;
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
                if (S_ISDIR(st.st_mode) && !(st.st_mode & S_IXOTH)) {
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

static bool valid_name(const char *n)
{
        size_t l = strlen(n);
        return l > 0 && l <= 64 && n[0] != '.' && n[0] != '-' &&
               strspn(n, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == l;
}

int cell_run_foreground(struct image_store *s, const struct run_opts *o, int *ret_exit_code,
                        struct berr **err)
{
        const char *runtime = o->runtime ? o->runtime : "crun";
        char rnd[13];
        fs_random_hex(rnd, 6);
        const char *id = o->name ? o->name : rnd;
        if (!valid_name(id))
                return berr_set(err, -EINVAL, "invalid container name \"%.64s\"", id);
        int r = cell_host_prepare_cgroups("/sys/fs/cgroup", err);
        if (r < 0)
                return r;
        _cleanup_json_ json_t *image = NULL;
        if ((r = store_inspect(s, o->image, &image, err)) < 0)
                return r;
        _cleanup_free_ char *cell_dir = xasprintf("%s/cell", o->data_dir);
        _cleanup_free_ char *bundle = xasprintf("%s/containers/%s", cell_dir, id);
        _cleanup_free_ char *state_root = xasprintf("%s/runtime", cell_dir);
        if ((r = fs_mkdir_p_at(AT_FDCWD, state_root, 0700)) < 0)
                return berr_set_errno(err, r, "create %s", state_root);
        if ((r = fs_mkdir_p_at(AT_FDCWD, cell_dir, 0711)) < 0 ||
            (r = fs_mkdir_p_at(AT_FDCWD, bundle, 0711)) < 0)
                return berr_set_errno(err, r, "create %s", bundle);
        char *rootfs = NULL;
        if ((r = ensure_traversable(bundle, err)) < 0)
                return r;
        if ((r = store_rootfs_create(s, o->image, id, NULL, &rootfs, err)) < 0) {
                fs_rm_rf_at(AT_FDCWD, bundle);
                return r;
        }
        if (r == 0)
                r = ensure_traversable(rootfs, err);
        _cleanup_close_ int rfd = open(rootfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_(process_spec_freep) struct process_spec *p = NULL;
        json_t *doc = NULL;
        if (r == 0 && rfd < 0)
                r = berr_set_errno(err, -errno, "open %s", rootfs);
        else if (r == 0 &&
                 (r = process_spec_build(json_object_get(image, "config"), &o->process, rfd, &p, err)) == 0) {
                struct bundle_opts bo = { .rootfs = rootfs,
                                          .hostname = id,
                                          .memory_bytes = o->memory_bytes,
                                          .pids = o->pids,
                                          .cpu_shares = o->memory_bytes
                                                            ? bundle_cpu_shares_for_memory(o->memory_bytes)
                                                            : 0 };
                r = bundle_config_build(p, &bo, &doc, err);
        }
        if (r == 0) {
                _cleanup_free_ char *cfg = xasprintf("%s/config.json", bundle);
                if (json_dump_file(doc, cfg, JSON_INDENT(2)) < 0)
                        r = berr_set(err, -EIO, "write %s", cfg);
        }
        json_decref(doc);
        if (r == 0) {
                char *argv[] = {
                        (char *)runtime, "--root", state_root, "run", "-b", bundle, (char *)id, NULL
                };
                int st = spawn_wait(argv, NULL);
                if (st < 0)
                        r = berr_set_errno(err, st, "run %s", runtime);
                else if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
                        r = berr_set(err, -ENOENT, "cannot execute the OCI runtime \"%s\"", runtime);
                else
                        *ret_exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        runtime_delete(runtime, state_root, id);
        closep(&rfd);
        _cleanup_berr_ struct berr *cerr = NULL;
        if (store_rootfs_remove(s, id, &cerr) < 0)
                log_warn("remove rootfs of %s: %s", id, berr_msg(cerr));
        fs_rm_rf_at(AT_FDCWD, bundle);
        free(rootfs);
        return r;
}
