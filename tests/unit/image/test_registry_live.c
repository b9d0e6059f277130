/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manual driver for the registry client against a live registry (not built by meson, not a unit test):
 *
 *   cc -O2 -DBERTH_TESTING -Ibuild -Isrc tests/unit/image/test_registry_live.c
 * build/src/image/libberth-image-t.a \ -lcurl -lcrypto -ljansson -lyaml -lpthread -o /tmp/registry-live
 *   BERTH_LOG_LEVEL=debug /tmp/registry-live [-u user] [-c config.yaml] [-j parallel] [-r repeat] \
 *      DOMAIN PATH OBJECT
 *
 * Fetches the manifest (following the first entry of an index), then the config with registry_get_blob
 * and every layer with the stream API (in `parallel` threads), printing sizes, digests and throughput.
 * The password comes from $BERTH_REGISTRY_PASSWORD. Exit status 0 only when everything verified.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "image/registry.h"
#include "lib/log.h"

struct job {
        struct registry_client *c;
        const char *digest;
        int64_t size;
        int rc;
        char *msg;
        double secs;
};

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *stream_one(void *p)
{
        struct job *j = p;
        struct berr *err = NULL;
        struct registry_blob *b = NULL;
        double t0 = now_s();
        int r = registry_blob_open(j->c, j->digest, j->size, &b, &err);
        uint64_t total = 0;
        while (r == 0) {
                const void *buf;
                ssize_t n = registry_blob_read(b, &buf, &err);
                if (n < 0)
                        r = (int)n;
                if (n <= 0)
                        break;
                total += (uint64_t)n;
        }
        if (r == 0 && total != (uint64_t)j->size)
                r = -EPROTO;
        j->secs = now_s() - t0;
        j->rc = r;
        j->msg = xstrdup(err ? berr_msg(err) : "ok");
        berr_free(err);
        registry_blob_close(b);
        return NULL;
}

int main(int argc, char **argv)
{
        const char *user = NULL, *cfgpath = NULL;
        int parallel = 1, repeat = 1, opt;
        while ((opt = getopt(argc, argv, "u:c:j:r:")) != -1) {
                if (opt == 'u')
                        user = optarg;
                else if (opt == 'c')
                        cfgpath = optarg;
                else if (opt == 'j')
                        parallel = atoi(optarg);
                else if (opt == 'r')
                        repeat = atoi(optarg);
                else
                        return 2;
        }
        if (argc - optind != 3) {
                fprintf(stderr, "usage: %s [-u user] [-c config] [-j n] [-r n] DOMAIN PATH OBJECT\n",
                        argv[0]);
                return 2;
        }
        log_init(LOG_LEVEL_WARN);
        struct berr *err = NULL;
        struct berth_config *cfg = NULL;
        if (cfgpath && config_load(cfgpath, true, &cfg, &err) < 0) {
                fprintf(stderr, "config: %s\n", berr_msg(err));
                berr_free(err);
                return 1;
        }
        struct image_ref ref = { .domain = argv[optind], .path = argv[optind + 1] };
        struct registry_opts o = { .config = cfg,
                                   .username = user,
                                   .password = getenv("BERTH_REGISTRY_PASSWORD") };
        struct registry_client *c = NULL;
        if (registry_client_new(&ref, &o, &c, &err) < 0) {
                fprintf(stderr, "client: %s\n", berr_msg(err));
                berr_free(err);
                config_free(cfg);
                return 1;
        }
        const char *object = argv[optind + 2];
        char *body = NULL, *ct = NULL;
        size_t len = 0;
        char digest[DIGEST_STR_MAX];
        json_t *m = NULL;
        for (int depth = 0; depth < 2; depth++) {
                int r = registry_get_manifest(c, object, NULL, -1, &body, &len, &ct, digest, &err);
                if (r < 0) {
                        fprintf(stderr, "manifest: %s (%d)\n", berr_msg(err), r);
                        goto fail;
                }
                printf("manifest %s: %zu bytes, %s, %s\n", object, len, ct ? ct : "(no content type)",
                       digest);
                m = json_loadb(body, len, 0, NULL);
                json_t *ms = json_object_get(m, "manifests");
                if (!json_is_array(ms))
                        break;
                static char child[DIGEST_STR_MAX];
                snprintf(child, sizeof(child), "%s",
                         json_string_value(json_object_get(json_array_get(ms, 0), "digest")));
                object = child;
                free(body);
                free(ct);
                body = ct = NULL;
                json_decref(m);
                m = NULL;
        }
        json_t *cd = json_object_get(m, "config");
        char *cbody = NULL;
        size_t clen = 0;
        if (registry_get_blob(c, json_string_value(json_object_get(cd, "digest")),
                              json_integer_value(json_object_get(cd, "size")), 4 << 20, &cbody, &clen,
                              &err) < 0) {
                fprintf(stderr, "config blob: %s\n", berr_msg(err));
                goto fail;
        }
        printf("config: %zu bytes\n", clen);
        free(cbody);

        json_t *layers = json_object_get(m, "layers");
        size_t n = json_array_size(layers);
        int failed = 0;
        for (int rep = 0; rep < repeat; rep++) {
                struct job *jobs = xcalloc(n, sizeof(*jobs));
                double t0 = now_s();
                uint64_t bytes = 0;
                for (size_t i = 0; i < n; i += (size_t)parallel) {
                        pthread_t th[64];
                        size_t k = 0;
                        for (; k < (size_t)parallel && i + k < n && k < 64; k++) {
                                json_t *l = json_array_get(layers, i + k);
                                jobs[i + k] =
                                    (struct job){ .c = c,
                                                  .digest = json_string_value(json_object_get(l, "digest")),
                                                  .size = json_integer_value(json_object_get(l, "size")) };
                                pthread_create(&th[k], NULL, stream_one, &jobs[i + k]);
                        }
                        for (size_t q = 0; q < k; q++)
                                pthread_join(th[q], NULL);
                }
                double dt = now_s() - t0;
                for (size_t i = 0; i < n; i++) {
                        printf("layer %s %lld bytes: %s (%.3f s, %.0f MB/s)\n", jobs[i].digest,
                               (long long)jobs[i].size, jobs[i].msg, jobs[i].secs,
                               jobs[i].size / 1e6 / (jobs[i].secs > 0 ? jobs[i].secs : 1e-9));
                        bytes += (uint64_t)jobs[i].size;
                        failed |= jobs[i].rc != 0;
                        free(jobs[i].msg);
                }
                printf("total %llu bytes in %.3f s: %.0f MB/s\n", (unsigned long long)bytes, dt,
                       bytes / 1e6 / dt);
                free(jobs);
        }
        json_decref(m);
        free(body);
        free(ct);
        registry_client_free(c);
        config_free(cfg);
        return failed;
fail:
        json_decref(m);
        free(body);
        free(ct);
        berr_free(err);
        registry_client_free(c);
        config_free(cfg);
        return 1;
}
