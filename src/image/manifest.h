/* SPDX-License-Identifier: Apache-2.0 */
/* Manifests, indexes and image configs: parsing and validation of untrusted registry documents. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "image/platform.h"
#include "lib/digest.h"
#include "lib/err.h"

#define MEDIA_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MEDIA_DOCKER_LIST     "application/vnd.docker.distribution.manifest.list.v2+json"
#define MEDIA_DOCKER_CONFIG   "application/vnd.docker.container.image.v1+json"
#define MEDIA_DOCKER_LAYER    "application/vnd.docker.image.rootfs.diff.tar.gzip"
#define MEDIA_DOCKER_FOREIGN  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
#define MEDIA_DOCKER_SCHEMA1  "application/vnd.docker.distribution.manifest.v1+json"
#define MEDIA_DOCKER_SCHEMA1S "application/vnd.docker.distribution.manifest.v1+prettyjws"
#define MEDIA_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define MEDIA_OCI_INDEX       "application/vnd.oci.image.index.v1+json"
#define MEDIA_OCI_CONFIG      "application/vnd.oci.image.config.v1+json"
#define MEDIA_OCI_LAYER       "application/vnd.oci.image.layer.v1.tar"
#define MEDIA_OCI_LAYER_GZIP  "application/vnd.oci.image.layer.v1.tar+gzip"
#define MEDIA_OCI_LAYER_ZSTD  "application/vnd.oci.image.layer.v1.tar+zstd"

/* The Accept header berth sends for manifests (no schema1). */
#define MANIFEST_ACCEPT \
        MEDIA_OCI_INDEX ", " MEDIA_DOCKER_LIST ", " MEDIA_OCI_MANIFEST ", " MEDIA_DOCKER_MANIFEST

/* Manifests and configs are capped at 4 MiB, as containers/image does (CVE-2020-1702). */
#define MANIFEST_MAX_BYTES (4 * 1024 * 1024)
/* overlayfs' practical limit on lower layers. */
#define MANIFEST_MAX_LAYERS 500
#define INDEX_MAX_ENTRIES   4096

enum doc_kind {
        DOC_UNKNOWN = 0,
        DOC_MANIFEST, /* Docker schema2 or OCI manifest */
        DOC_INDEX,    /* Docker manifest list or OCI index */
};

enum layer_compression {
        COMPRESSION_NONE = 0,
        COMPRESSION_GZIP,
        COMPRESSION_ZSTD,
};

struct descriptor {
        char *media_type;
        char digest[DIGEST_STR_MAX];
        int64_t size;
        bool has_platform;
        struct image_platform platform; /* as written (not normalized) */
        bool attestation;               /* vnd.docker.reference.type = attestation-manifest */
};

struct image_doc {
        enum doc_kind kind;
        char *media_type;         /* effective media type */
        struct descriptor config; /* DOC_MANIFEST */
        struct descriptor *layers;
        size_t n_layers;
        struct descriptor *manifests; /* DOC_INDEX */
        size_t n_manifests;
};

/*
 * Parse a manifest or index. `content_type` is the HTTP Content-Type (parameters ignored) or NULL.
 * Rejects: schema1 ("schema 1 manifests are deprecated and not supported; push the image with a current
 * client"), ambiguous documents (CVE-2021-41190: manifests together with layers/config), mediaType that
 * disagrees with content_type, schemaVersion != 2, bad digests, negative sizes, too many entries, and
 * unknown/unsupported layer media types (a non-layer media type is an error naming it).
 */
int image_doc_parse(const char *buf, size_t len, const char *content_type, struct image_doc **ret,
                    struct berr **err);
void image_doc_free(struct image_doc *d);
static inline void image_doc_freep(struct image_doc **d)
{
        image_doc_free(*d);
}
/* Compression declared by a layer media type; -EPROTONOSUPPORT for an unknown/unsupported type. */
int layer_media_compression(const char *media_type, enum layer_compression *ret);

/*
 * Choose the manifest for `want` from an index: the best rank, first entry among equals; skips attestation
 * and unknown/unknown entries and entries that are not manifests. -ENOENT with a message listing the
 * platforms the index offers when nothing matches.
 */
int image_index_select(const struct image_doc *idx, const struct image_platform *want,
                       const struct descriptor **ret, struct berr **err);

struct image_config {
        json_t *json; /* the whole config document (owned) */
        char **diff_ids;
        size_t n_diff_ids;
        struct image_platform platform;
};

/* Parse and validate an image config: rootfs.type == "layers", diff_ids valid digests. */
int image_config_parse(const char *buf, size_t len, struct image_config **ret, struct berr **err);
void image_config_free(struct image_config *c);
static inline void image_config_freep(struct image_config **c)
{
        image_config_free(*c);
}
