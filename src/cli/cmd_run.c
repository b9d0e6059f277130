/* SPDX-License-Identifier: Apache-2.0 */
/* `berth run`: run an image as a container in the foreground (issue 3; detached mode comes with the monitor).
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cell/runtime.h"
#include "cli/cli.h"
#include "lib/fs.h"
#include "lib/json.h"
#include "lib/strv.h"

static void run_usage(FILE *f)
{
        fprintf(f,
                "Usage: berth run [--rm] [--name N] [-e K=V]... [--env-file F] [-m 256M] [--pids N] [--user "
                "U] [--workdir D]\n"
                "                 [--entrypoint E] [--runtime crun|runc] IMAGE [CMD...]\n\n"
                "Pulls IMAGE if needed, runs it in the foreground in its own user, pid, mount, network, uts\n"
                "and ipc namespaces, streams its output and exits with its exit code.\n");
}

/* As docker: "K=V" as given; "K" alone takes the caller's value, and is skipped when the caller has none. */
static void env_add(struct strv *env, const char *item)
{
        if (strchr(item, '=')) {
                strv_push(env, xstrdup(item));
                return;
        }
        const char *v = getenv(item);
        if (v)
                strv_push(env, xasprintf("%s=%s", item, v));
}

/*
 * Docker's --env-file: one env_add() item per line; blank lines and lines starting with '#' are ignored.
 * At most 1 MiB.
 */
static int read_env_file(const char *path, struct strv *env, struct berr **err)
{
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        int r = fs_read_file_at(AT_FDCWD, path, 1 << 20, &buf, &len);
        if (r < 0)
                return berr_set_errno(err, r, "--env-file %s", path);
        if (strlen(buf) != len)
                return berr_set(err, -EINVAL, "--env-file %s: contains a NUL byte", path);
        size_t lineno = 0;
        char *save = NULL;
        for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                lineno++;
                line += strspn(line, " \t");
                size_t l = strlen(line);
                while (l > 0 && (line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t'))
                        line[--l] = '\0';
                if (l == 0 || line[0] == '#')
                        continue;
                if (line[0] == '=')
                        return berr_set(err, -EINVAL, "--env-file %s line %zu: variable name is empty", path,
                                        lineno);
                env_add(env, line);
        }
        return 0;
}

/* "256M", "1G", "512k", "1048576" → bytes; 0 on error. */
static uint64_t parse_size(const char *s)
{
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || v == 0)
                return 0;
        uint64_t mult = 1;
        switch (*end) {
        case 'k':
        case 'K':
                mult = 1ULL << 10;
                end++;
                break;
        case 'm':
        case 'M':
                mult = 1ULL << 20;
                end++;
                break;
        case 'g':
        case 'G':
                mult = 1ULL << 30;
                end++;
                break;
        case '\0':
                break;
        default:
                return 0;
        }
        if (*end == 'b' || *end == 'B')
                end++;
        if (*end != '\0' || v > UINT64_MAX / mult)
                return 0;
        return v * mult;
}

int cmd_run(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const struct option opts[] = {
                { "rm", no_argument, NULL, 'R' },
                { "name", required_argument, NULL, 'n' },
                { "env", required_argument, NULL, 'e' },
                { "memory", required_argument, NULL, 'm' },
                { "pids", required_argument, NULL, 'P' },
                { "user", required_argument, NULL, 'u' },
                { "workdir", required_argument, NULL, 'w' },
                { "entrypoint", required_argument, NULL, 'E' },
                { "runtime", required_argument, NULL, 'r' },
                { "detach", no_argument, NULL, 'd' },
                { "env-file", required_argument, NULL, 'F' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        struct run_opts o = { .data_dir = g->data_dir };
        /* Declared before any goto: the cleanup attributes run at every exit. */
        _cleanup_(store_closep) struct image_store *s = NULL;
        _cleanup_json_ json_t *img = NULL;
        struct strv env = { 0 };
        char *entry[2] = { NULL, NULL };
        int c, rc = CLI_EXIT_USAGE;
        optind = 0;
        /* '+': options end at the image name; the command after it is the container's. */
        while ((c = getopt_long(argc, argv, "+e:m:u:w:dh", opts, NULL)) != -1) {
                switch (c) {
                case 'R':
                        break; /* foreground containers are always removed when they exit */
                case 'n':
                        o.name = optarg;
                        break;
                case 'e':
                        env_add(&env, optarg);
                        break;
                case 'm':
                        if (!(o.memory_bytes = parse_size(optarg))) {
                                berr_set(err, -EINVAL, "invalid memory size \"%s\" (use e.g. 256M or 1G)",
                                         optarg);
                                goto out;
                        }
                        break;
                case 'P':
                        if (!(o.pids = parse_size(optarg))) {
                                berr_set(err, -EINVAL, "invalid --pids \"%s\"", optarg);
                                goto out;
                        }
                        break;
                case 'u':
                        o.process.user = optarg;
                        break;
                case 'w':
                        if (optarg[0] != '/') {
                                berr_set(err, -EINVAL, "--workdir must be an absolute path");
                                goto out;
                        }
                        o.process.workdir = optarg;
                        break;
                case 'E':
                        entry[0] = *optarg ? optarg : NULL;
                        o.process.entrypoint = entry;
                        o.process.entrypoint_set = true;
                        break;
                case 'r':
                        o.runtime = optarg;
                        break;
                case 'F':
                        if (read_env_file(optarg, &env, err) < 0)
                                goto out;
                        break;
                case 'd':
                        berr_set(err, -ENOTSUP,
                                 "berth run -d is not available yet: containers run in the foreground");
                        goto out;
                case 'h':
                        run_usage(stdout);
                        rc = 0;
                        goto out;
                default:
                        goto out;
                }
        }
        if (optind >= argc) {
                run_usage(stderr);
                goto out;
        }
        o.image = argv[optind];
        o.process.cmd = optind + 1 < argc ? argv + optind + 1 : NULL;
        o.process.env = env.v;
        rc = CLI_EXIT_FAILURE;
        if (store_open(g->data_dir, g->config, &s, err) < 0)
                goto out;
        if (store_inspect(s, o.image, &img, NULL) < 0) {
                struct progress_ui *ui = progress_ui_new_on(stderr, false);
                struct pull_opts po = { .progress = progress_ui_event, .progress_userdata = ui };
                int r = store_pull(s, o.image, &po, NULL, err);
                progress_ui_free(ui);
                if (r < 0)
                        goto out;
        }
        int exit_code = 0;
        if (cell_run_foreground(s, &o, &exit_code, err) < 0)
                goto out;
        rc = exit_code;
out:
        strv_clear(&env);
        return rc;
}
