/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manifests, indexes and image configs. The first byte picks the Content-Type the document is served
 * with; the rest is the body. A parsed index is also run through platform selection.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/manifest.h"

static const char *const content_types[] = {
        NULL,
        "",
        MEDIA_OCI_MANIFEST,
        MEDIA_OCI_INDEX,
        MEDIA_DOCKER_MANIFEST,
        MEDIA_DOCKER_LIST,
        "application/json",
        "text/plain; charset=utf-8",
        MEDIA_DOCKER_SCHEMA1,
        MEDIA_DOCKER_SCHEMA1S,
        MEDIA_OCI_MANIFEST "; charset=utf-8",
        " APPLICATION/VND.OCI.IMAGE.INDEX.V1+JSON ",
        "application/octet-stream",
        MEDIA_OCI_CONFIG,
};

static const char *const platforms[] = { "linux/amd64",  "linux/amd64/v3", "linux/arm64", "linux/arm/v7",
                                         "linux/arm/v8", "linux/386",      "linux/s390x" };

static void check_doc(const struct image_doc *d)
{
        if (!d->media_type)
                abort();
        if (d->kind == DOC_MANIFEST) {
                if (d->n_layers > MANIFEST_MAX_LAYERS || d->n_manifests || !d->config.media_type)
                        abort();
                for (size_t i = 0; i < d->n_layers; i++) {
                        enum layer_compression c;
                        /* Every accepted layer has a known compression and a valid digest. */
                        if (layer_media_compression(d->layers[i].media_type, &c) < 0 ||
                            d->layers[i].size < 0 || digest_validate(d->layers[i].digest, NULL) < 0)
                                abort();
                }
                return;
        }
        if (d->kind != DOC_INDEX || d->n_manifests > INDEX_MAX_ENTRIES || d->n_layers)
                abort();
        for (size_t p = 0; p < sizeof(platforms) / sizeof(platforms[0]); p++) {
                struct image_platform want;
                if (platform_parse(platforms[p], &want, NULL) < 0)
                        abort();
                const struct descriptor *sel = NULL;
                struct berr *err = NULL;
                int r = image_index_select(d, &want, &sel, &err);
                if (r == 0) {
                        if (sel < d->manifests || sel >= d->manifests + d->n_manifests || sel->attestation ||
                            err)
                                abort();
                } else if (r != -ENOENT || !err) {
                        abort();
                }
                berr_free(err);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1)
                return 0;
        const char *ct = content_types[data[0] % (sizeof(content_types) / sizeof(content_types[0]))];
        const char *body = (const char *)data + 1;
        size_t len = size - 1;

        struct image_doc *d = NULL;
        struct berr *err = NULL;
        if (image_doc_parse(body, len, ct, &d, &err) == 0) {
                if (err)
                        abort();
                check_doc(d);
                image_doc_free(d);
        } else {
                if (d || !err)
                        abort();
                berr_free(err);
        }

        struct image_config *c = NULL;
        err = NULL;
        if (image_config_parse(body, len, &c, &err) == 0) {
                if (!c->json || (c->n_diff_ids && !c->diff_ids))
                        abort();
                for (size_t i = 0; i < c->n_diff_ids; i++)
                        if (digest_validate(c->diff_ids[i], NULL) < 0)
                                abort();
                image_config_free(c);
        } else {
                if (c || !err)
                        abort();
                berr_free(err);
        }
        return 0;
}
