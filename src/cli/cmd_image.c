/* SPDX-License-Identifier: Apache-2.0 */
/* `berth image ...`: the image store's command line. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "image/resolve.h"
#include "image/store.h"
#include "lib/json.h"

static void image_usage(FILE *f)
{
        fprintf(
            f,
            "Usage: berth image COMMAND\n\n"
            "Commands:\n"
            "  pull REF [--platform OS/ARCH[/VARIANT]] [--username U] [-q]\n"
            "                        fetch, verify and unpack an image (password: $BERTH_REGISTRY_PASSWORD)\n"
            "  ls [--json]           list images\n"
            "  inspect REF           show an image as JSON (digest, config, layers, sizes)\n"
            "  resolve REF [--platform P] [--username U]\n"
            "                        ask the registry for the image's digest and config (no layers)\n"
            "  rm REF...             remove image references\n"
            "  prune                 remove layers no image or container uses\n"
            "  export REF DEST       write the image's filesystem to directory DEST, or a tar if DEST ends "
            "in .tar\n");
}

static void human_size(uint64_t b, char *buf, size_t n)
{
        static const char *units[] = { "B", "kB", "MB", "GB", "TB" };
        double v = (double)b;
        size_t u = 0;
        while (v >= 1000 && u + 1 < ARRAY_SIZE(units)) {
                v /= 1000;
                u++;
        }
        if (u == 0)
                snprintf(buf, n, "%" PRIu64 " B", b);
        else
                snprintf(buf, n, "%.*f %s", v < 10 ? 2 : v < 100 ? 1 : 0, v, units[u]);
}

static int open_store(struct cli_globals *g, struct image_store **ret, struct berr **err)
{
        return store_open(g->data_dir, g->config, ret, err);
}

static int image_pull(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const struct option opts[] = { { "platform", required_argument, NULL, 'p' },
                                              { "username", required_argument, NULL, 'u' },
                                              { "quiet", no_argument, NULL, 'q' },
                                              { "help", no_argument, NULL, 'h' },
                                              { 0 } };
        struct pull_opts po = { 0 };
        bool quiet = false;
        int c;
        optind = 0; /* re-initialise getopt: main() parsed in '+' mode */
        while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
                switch (c) {
                case 'p':
                        po.platform = optarg;
                        break;
                case 'u':
                        po.username = optarg;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case 'h':
                        image_usage(stdout);
                        return 0;
                default:
                        return CLI_EXIT_USAGE;
                }
        }
        if (optind + 1 != argc) {
                berr_set(err, -EINVAL,
                         "usage: berth image pull REF [--platform OS/ARCH[/VARIANT]] [--username U]");
                return CLI_EXIT_USAGE;
        }
        po.password = getenv("BERTH_REGISTRY_PASSWORD");
        if (po.username && !po.password) {
                berr_set(err, -EINVAL, "--username needs the password in $BERTH_REGISTRY_PASSWORD");
                return CLI_EXIT_USAGE;
        }
        if (!po.username && po.password) {
                berr_set(err, -EINVAL, "$BERTH_REGISTRY_PASSWORD is set but --username is missing");
                return CLI_EXIT_USAGE;
        }
        _cleanup_(store_closep) struct image_store *s = NULL;
        if (open_store(g, &s, err) < 0)
                return CLI_EXIT_FAILURE;
        struct progress_ui *ui = progress_ui_new(quiet);
        po.progress = progress_ui_event;
        po.progress_userdata = ui;
        _cleanup_json_ json_t *img = NULL;
        int r = store_pull(s, argv[optind], &po, &img, err);
        progress_ui_free(ui);
        if (r < 0)
                return CLI_EXIT_FAILURE;
        const char *ref = json_string_value(json_object_get(img, "reference"));
        const char *digest = json_string_value(json_object_get(img, "digest"));
        printf("Digest: %s\n", digest ? digest : "?");
        printf("Pulled %s\n", ref ? ref : argv[optind]);
        return 0;
}

static int image_ls(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        bool as_json = false;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--json") == 0)
                        as_json = true;
                else {
                        berr_set(err, -EINVAL, "usage: berth image ls [--json]");
                        return CLI_EXIT_USAGE;
                }
        }
        _cleanup_(store_closep) struct image_store *s = NULL;
        if (open_store(g, &s, err) < 0)
                return CLI_EXIT_FAILURE;
        _cleanup_json_ json_t *list = NULL;
        if (store_list(s, &list, err) < 0)
                return CLI_EXIT_FAILURE;
        if (as_json) {
                _cleanup_free_ char *out = json_dump_str(list, true);
                puts(out);
                return 0;
        }
        printf("%-50s %-20s %-19s %-12s %s\n", "REPOSITORY", "TAG", "DIGEST", "SIZE", "CREATED");
        size_t i;
        json_t *e;
        json_array_foreach (list, i, e) {
                const char *repo = json_string_value(json_object_get(e, "repository"));
                const char *tag = json_string_value(json_object_get(e, "tag"));
                const char *digest = json_string_value(json_object_get(e, "digest"));
                const char *created = json_string_value(json_object_get(e, "created"));
                char size[32];
                human_size((uint64_t)json_integer_value(json_object_get(e, "unpacked_size")), size,
                           sizeof(size));
                printf("%-50s %-20s %-19.19s %-12s %s\n", repo ? repo : "", tag ? tag : "<none>",
                       digest ? digest : "", size, created ? created : "");
        }
        return 0;
}

static int image_inspect(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        if (argc != 2) {
                berr_set(err, -EINVAL, "usage: berth image inspect REF");
                return CLI_EXIT_USAGE;
        }
        _cleanup_(store_closep) struct image_store *s = NULL;
        if (open_store(g, &s, err) < 0)
                return CLI_EXIT_FAILURE;
        _cleanup_json_ json_t *doc = NULL;
        if (store_inspect(s, argv[1], &doc, err) < 0)
                return CLI_EXIT_FAILURE;
        _cleanup_free_ char *out = json_dump_str(doc, true);
        puts(out);
        return 0;
}

/* What staging does: the pinned reference and the config, without pulling a layer. */
static int image_resolve_cmd(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const struct option opts[] = { { "platform", required_argument, NULL, 'p' },
                                              { "username", required_argument, NULL, 'u' },
                                              { 0 } };
        const char *platform = NULL, *username = NULL;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                if (c == 'p')
                        platform = optarg;
                else if (c == 'u')
                        username = optarg;
                else
                        return CLI_EXIT_USAGE;
        }
        if (optind + 1 != argc) {
                berr_set(err, -EINVAL, "usage: berth image resolve REF [--platform P] [--username U]");
                return CLI_EXIT_USAGE;
        }
        const char *password = getenv("BERTH_REGISTRY_PASSWORD");
        if (username && !password) {
                berr_set(err, -EINVAL, "--username needs the password in $BERTH_REGISTRY_PASSWORD");
                return CLI_EXIT_USAGE;
        }
        _cleanup_(image_resolved_free) struct image_resolved res = { 0 };
        if (image_resolve(g->config, argv[optind], username, username ? password : NULL, platform, &res,
                          err) < 0)
                return CLI_EXIT_FAILURE;
        _cleanup_json_ json_t *doc =
            json_pack("{s:s, s:s, s:O}", "pinned", res.pinned, "digest", res.digest, "config", res.config);
        _cleanup_free_ char *out = json_dump_str(doc, true);
        puts(out);
        return 0;
}

static int image_rm(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        if (argc < 2) {
                berr_set(err, -EINVAL, "usage: berth image rm REF...");
                return CLI_EXIT_USAGE;
        }
        _cleanup_(store_closep) struct image_store *s = NULL;
        if (open_store(g, &s, err) < 0)
                return CLI_EXIT_FAILURE;
        int rc = 0;
        for (int i = 1; i < argc; i++) {
                _cleanup_berr_ struct berr *e = NULL;
                if (store_remove(s, argv[i], &e) < 0) {
                        cli_print_error(e);
                        rc = CLI_EXIT_FAILURE;
                } else
                        printf("Untagged: %s\n", argv[i]);
        }
        return rc;
}

static int image_prune(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        (void)argv;
        if (argc != 1) {
                berr_set(err, -EINVAL, "usage: berth image prune");
                return CLI_EXIT_USAGE;
        }
        _cleanup_(store_closep) struct image_store *s = NULL;
        if (open_store(g, &s, err) < 0)
                return CLI_EXIT_FAILURE;
        uint64_t layers = 0, bytes = 0;
        if (store_prune(s, &layers, &bytes, err) < 0)
                return CLI_EXIT_FAILURE;
        char size[32];
        human_size(bytes, size, sizeof(size));
        printf("Removed %" PRIu64 " layer%s, reclaimed %s\n", layers, layers == 1 ? "" : "s", size);
        return 0;
}

static int image_export(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        if (argc != 3) {
                berr_set(err, -EINVAL, "usage: berth image export REF DIR|FILE.tar");
                return CLI_EXIT_USAGE;
        }
        _cleanup_(store_closep) struct image_store *s = NULL;
        if (open_store(g, &s, err) < 0)
                return CLI_EXIT_FAILURE;
        if (store_export(s, argv[1], argv[2], err) < 0)
                return CLI_EXIT_FAILURE;
        printf("Exported %s to %s\n", argv[1], argv[2]);
        return 0;
}

int cmd_image(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        static const struct {
                const char *name;
                cli_command_fn fn;
        } sub[] = {
                { "pull", image_pull },       { "ls", image_ls },         { "list", image_ls },
                { "inspect", image_inspect }, { "rm", image_rm },         { "remove", image_rm },
                { "prune", image_prune },     { "export", image_export }, { "resolve", image_resolve_cmd },
        };
        if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                image_usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? CLI_EXIT_USAGE : 0;
        }
        for (size_t i = 0; i < ARRAY_SIZE(sub); i++)
                if (strcmp(argv[1], sub[i].name) == 0)
                        return sub[i].fn(g, argc - 1, argv + 1, err);
        berr_set(err, -EINVAL, "unknown image command \"%s\" (see 'berth image --help')", argv[1]);
        return CLI_EXIT_USAGE;
}
