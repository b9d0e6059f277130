/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Manifests, indexes and image configs from registries. Everything here is untrusted: sizes are capped
 * before parsing, every field's type is checked, and a document must be exactly one kind of thing
 * (CVE-2021-41190). See oci-registry-runtime.md §1.3-1.4 and §2.
 */
#include <ctype.h>
#include <string.h>

#include "image/manifest.h"
#include "lib/json.h"

#define SCHEMA1_MSG                                                                                          \
        "schema 1 manifests are deprecated and not supported; push the image with a current client (Docker " \
        "20.10+, buildah, crane, skopeo)"

/* Longest Content-Type we look at (RFC 6838 caps type and subtype at 127 characters each). */
#define CONTENT_TYPE_MAX 256
/* At most this many platforms are listed when an index has none for the requested one. */
#define SELECT_LIST_MAX 32
/* Rank of index entries without a platform: acceptable, but after every real platform match. */
#define RANK_NO_PLATFORM (1 << 20)

#define MEDIA_DOCKER_LAYER_TAR      "application/vnd.docker.image.rootfs.diff.tar"
#define MEDIA_DOCKER_LAYER_ZSTD     "application/vnd.docker.image.rootfs.diff.tar.zstd"
#define MEDIA_DOCKER_FOREIGN_TAR    "application/vnd.docker.image.rootfs.foreign.diff.tar"
#define MEDIA_OCI_LAYER_ND          "application/vnd.oci.image.layer.nondistributable.v1.tar"
#define MEDIA_OCI_LAYER_ND_GZIP     "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
#define MEDIA_OCI_LAYER_ND_ZSTD     "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
#define ATTESTATION_ANNOTATION      "vnd.docker.reference.type"
#define ATTESTATION_ANNOTATION_TYPE "attestation-manifest"

int layer_media_compression(const char *media_type, enum layer_compression *ret)
{
        static const struct {
                const char *type;
                enum layer_compression c;
        } table[] = {
                { MEDIA_DOCKER_LAYER, COMPRESSION_GZIP },
                { MEDIA_DOCKER_FOREIGN, COMPRESSION_GZIP },
                /* Uncompressed and zstd Docker types: BuildKit and containers/image write them. */
                { MEDIA_DOCKER_LAYER_TAR, COMPRESSION_NONE },
                { MEDIA_DOCKER_LAYER_ZSTD, COMPRESSION_ZSTD },
                { MEDIA_DOCKER_FOREIGN_TAR, COMPRESSION_NONE },
                { MEDIA_OCI_LAYER, COMPRESSION_NONE },
                { MEDIA_OCI_LAYER_GZIP, COMPRESSION_GZIP },
                { MEDIA_OCI_LAYER_ZSTD, COMPRESSION_ZSTD },
                /* Deprecated by image-spec 1.1 but still MUST be supported by implementations. */
                { MEDIA_OCI_LAYER_ND, COMPRESSION_NONE },
                { MEDIA_OCI_LAYER_ND_GZIP, COMPRESSION_GZIP },
                { MEDIA_OCI_LAYER_ND_ZSTD, COMPRESSION_ZSTD },
        };
        if (!media_type)
                return -EPROTONOSUPPORT;
        for (size_t i = 0; i < ARRAY_SIZE(table); i++)
                if (strcmp(media_type, table[i].type) == 0) {
                        if (ret)
                                *ret = table[i].c;
                        return 0;
                }
        return -EPROTONOSUPPORT;
}

static bool media_is_manifest(const char *t)
{
        return t && (strcmp(t, MEDIA_OCI_MANIFEST) == 0 || strcmp(t, MEDIA_DOCKER_MANIFEST) == 0);
}

static bool media_is_index(const char *t)
{
        return t && (strcmp(t, MEDIA_OCI_INDEX) == 0 || strcmp(t, MEDIA_DOCKER_LIST) == 0);
}

static bool media_is_schema1(const char *t)
{
        return t && (strcmp(t, MEDIA_DOCKER_SCHEMA1) == 0 || strcmp(t, MEDIA_DOCKER_SCHEMA1S) == 0);
}

static bool media_is_config(const char *t)
{
        return t && (strcmp(t, MEDIA_OCI_CONFIG) == 0 || strcmp(t, MEDIA_DOCKER_CONFIG) == 0);
}

BERTH_STATIC const char *content_type_normalize(const char *ct, char buf[static CONTENT_TYPE_MAX],
                                                bool *too_long);
BERTH_STATIC int descriptor_parse(const json_t *j, struct descriptor *ret, struct berr **err);

/*
 * Reduce an HTTP Content-Type to its lowercase media type in buf (parameters and blanks dropped).
 * Returns buf, or NULL when the header tells nothing about the document: absent, empty, or one of the
 * generic types registries send for manifests they do not know (application/json, text/plain,
 * application/octet-stream). Returns NULL and sets *too_long for values no media type can have.
 */
BERTH_STATIC const char *content_type_normalize(const char *ct, char buf[static CONTENT_TYPE_MAX],
                                                bool *too_long)
{
        *too_long = false;
        if (!ct)
                return NULL;
        while (*ct == ' ' || *ct == '\t')
                ct++;
        size_t n = strcspn(ct, ";");
        while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
                n--;
        if (n == 0)
                return NULL;
        if (n >= CONTENT_TYPE_MAX) {
                *too_long = true;
                return NULL;
        }
        for (size_t i = 0; i < n; i++)
                buf[i] = (char)tolower((unsigned char)ct[i]);
        buf[n] = '\0';
        if (strcmp(buf, "application/json") == 0 || strcmp(buf, "text/plain") == 0 ||
            strcmp(buf, "application/octet-stream") == 0)
                return NULL;
        return buf;
}

static void descriptor_clear(struct descriptor *d)
{
        free(d->media_type);
        d->media_type = NULL;
}

void image_doc_free(struct image_doc *d)
{
        if (!d)
                return;
        free(d->media_type);
        descriptor_clear(&d->config);
        for (size_t i = 0; i < d->n_layers; i++)
                descriptor_clear(&d->layers[i]);
        free(d->layers);
        for (size_t i = 0; i < d->n_manifests; i++)
                descriptor_clear(&d->manifests[i]);
        free(d->manifests);
        free(d);
}

/* Copy a platform field of at most 31 characters; longer values are an error (no silent truncation). */
static int platform_field(const json_t *obj, const char *key, bool required, char dst[static 32],
                          struct berr **err)
{
        const char *v = NULL;
        int r = json_get_string(obj, key, required, &v, err);
        if (r < 0)
                return r;
        dst[0] = '\0';
        if (!v)
                return 0;
        size_t n = strlen(v);
        if (n >= 32)
                return berr_set(err, -EINVAL, "field \"%s\" is %zu characters, more than 31", key, n);
        memcpy(dst, v, n + 1);
        return 0;
}

/*
 * Parse a descriptor object into *ret (zeroed first; on failure nothing is left allocated). mediaType,
 * digest and size are required; platform and annotations are optional. The platform is kept as written.
 */
BERTH_STATIC int descriptor_parse(const json_t *j, struct descriptor *ret, struct berr **err)
{
        *ret = (struct descriptor){ 0 };
        if (!json_is_object(j))
                return berr_set(err, -EINVAL, "descriptor is not a JSON object");
        const char *mt = NULL, *digest = NULL;
        int64_t size = -1;
        int r = json_get_string(j, "mediaType", true, &mt, err);
        if (r < 0)
                return r;
        r = json_get_string(j, "digest", true, &digest, err);
        if (r < 0)
                return r;
        if (strlen(digest) >= DIGEST_STR_MAX)
                return berr_set(err, -EINVAL, "invalid digest \"%.80s...\": too long", digest);
        r = digest_validate(digest, err);
        if (r < 0)
                return r;
        r = json_get_int(j, "size", true, &size, err);
        if (r < 0)
                return r;
        if (size < 0)
                return berr_set(err, -EINVAL, "size %lld is negative", (long long)size);

        json_t *plat = json_object_get(j, "platform");
        if (plat && !json_is_null(plat)) {
                if (!json_is_object(plat))
                        return berr_set(err, -EINVAL, "field \"platform\" must be an object");
                r = platform_field(plat, "os", true, ret->platform.os, err);
                if (r >= 0)
                        r = platform_field(plat, "architecture", true, ret->platform.arch, err);
                if (r >= 0)
                        r = platform_field(plat, "variant", false, ret->platform.variant, err);
                if (r < 0)
                        return berr_prefix(err, r, "platform");
                ret->has_platform = true;
        }
        json_t *ann = json_object_get(j, "annotations");
        if (ann && !json_is_null(ann)) {
                if (!json_is_object(ann))
                        return berr_set(err, -EINVAL, "field \"annotations\" must be an object");
                json_t *t = json_object_get(ann, ATTESTATION_ANNOTATION);
                if (json_is_string(t) && strcmp(json_string_value(t), ATTESTATION_ANNOTATION_TYPE) == 0)
                        ret->attestation = true;
        }
        memcpy(ret->digest, digest, strlen(digest) + 1);
        ret->size = size;
        ret->media_type = xstrdup(mt);
        return 0;
}

static int manifest_parse_body(const json_t *root, struct image_doc *d, struct berr **err)
{
        json_t *cfg = json_object_get(root, "config");
        if (!cfg || json_is_null(cfg))
                return berr_set(err, -EINVAL, "manifest has no \"config\"");
        int r = descriptor_parse(cfg, &d->config, err);
        if (r < 0)
                return berr_prefix(err, r, "config");
        if (!media_is_config(d->config.media_type))
                return berr_set(err, -EPROTONOSUPPORT,
                                "config media type \"%.200s\" is not a container image config (is this an "
                                "artifact rather than an image?)",
                                d->config.media_type);

        json_t *layers = json_object_get(root, "layers");
        if (!layers || json_is_null(layers))
                return berr_set(err, -EINVAL, "manifest has no \"layers\"");
        if (!json_is_array(layers))
                return berr_set(err, -EINVAL, "field \"layers\" must be an array");
        size_t n = json_array_size(layers);
        if (n > MANIFEST_MAX_LAYERS)
                return berr_set(err, -E2BIG, "manifest has %zu layers, more than the limit of %d", n,
                                MANIFEST_MAX_LAYERS);
        d->layers = xcalloc(n, sizeof(*d->layers));
        for (size_t i = 0; i < n; i++) {
                r = descriptor_parse(json_array_get(layers, i), &d->layers[i], err);
                if (r < 0)
                        return berr_prefix(err, r, "layers[%zu]", i);
                d->n_layers = i + 1;
                if (layer_media_compression(d->layers[i].media_type, NULL) < 0)
                        return berr_set(err, -EPROTONOSUPPORT,
                                        "layers[%zu]: unsupported layer media type \"%.200s\"", i,
                                        d->layers[i].media_type);
        }
        return 0;
}

static int index_parse_body(const json_t *root, struct image_doc *d, struct berr **err)
{
        json_t *m = json_object_get(root, "manifests");
        if (!m || json_is_null(m))
                return berr_set(err, -EINVAL, "index has no \"manifests\"");
        if (!json_is_array(m))
                return berr_set(err, -EINVAL, "field \"manifests\" must be an array");
        size_t n = json_array_size(m);
        if (n > INDEX_MAX_ENTRIES)
                return berr_set(err, -E2BIG, "index has %zu entries, more than the limit of %d", n,
                                INDEX_MAX_ENTRIES);
        d->manifests = xcalloc(n, sizeof(*d->manifests));
        for (size_t i = 0; i < n; i++) {
                /* Entries of unknown media types are kept (image-index.md: MUST NOT error); select skips
                 * them. */
                int r = descriptor_parse(json_array_get(m, i), &d->manifests[i], err);
                if (r < 0)
                        return berr_prefix(err, r, "manifests[%zu]", i);
                d->n_manifests = i + 1;
        }
        return 0;
}

/*
 * Parse a manifest or index of at most MANIFEST_MAX_BYTES (checked before any parsing). The kind is
 * decided by the body's mediaType, else by a specific Content-Type, else by the shape ("manifests" ->
 * OCI index, "config"/"layers" -> OCI manifest). Errors: -EFBIG too big, -ENOTSUP schema 1, -EINVAL
 * malformed/ambiguous/mismatched, -EPROTONOSUPPORT unknown document/config/layer media type, -E2BIG too
 * many layers or entries. On success the caller owns *ret (image_doc_free); on failure *ret is untouched.
 */
int image_doc_parse(const char *buf, size_t len, const char *content_type, struct image_doc **ret,
                    struct berr **err)
{
        if (len > MANIFEST_MAX_BYTES)
                return berr_set(err, -EFBIG, "manifest is %zu bytes, more than the limit of %d", len,
                                MANIFEST_MAX_BYTES);
        char ctbuf[CONTENT_TYPE_MAX];
        bool ct_too_long;
        const char *ct = content_type_normalize(content_type, ctbuf, &ct_too_long);
        if (ct_too_long)
                return berr_set(err, -EPROTONOSUPPORT, "unsupported Content-Type (longer than %d characters)",
                                CONTENT_TYPE_MAX - 1);
        if (media_is_schema1(ct))
                return berr_set(err, -ENOTSUP, SCHEMA1_MSG);

        _cleanup_json_ json_t *root = NULL;
        int r = json_parse_buf(buf, len, &root, err);
        if (r < 0)
                return berr_prefix(err, r, "manifest");
        if (!json_is_object(root))
                return berr_set(err, -EINVAL, "manifest is not a JSON object");

        json_t *sv = json_object_get(root, "schemaVersion");
        if (!sv || json_is_null(sv))
                return berr_set(err, -EINVAL, "manifest has no \"schemaVersion\"");
        if (!json_is_integer(sv))
                return berr_set(err, -EINVAL, "manifest field \"schemaVersion\" must be an integer");
        if (json_integer_value(sv) == 1)
                return berr_set(err, -ENOTSUP, SCHEMA1_MSG);
        if (json_integer_value(sv) != 2)
                return berr_set(err, -EPROTONOSUPPORT, "unsupported manifest schemaVersion %lld (want 2)",
                                (long long)json_integer_value(sv));

        const char *mt = NULL;
        r = json_get_string(root, "mediaType", false, &mt, err);
        if (r < 0)
                return berr_prefix(err, r, "manifest");
        if (media_is_schema1(mt))
                return berr_set(err, -ENOTSUP, SCHEMA1_MSG);

        /* CVE-2021-41190: one document must not be readable both as a manifest and as an index. */
        bool has_manifests = json_object_get(root, "manifests") != NULL;
        bool has_layers = json_object_get(root, "layers") != NULL;
        bool has_config = json_object_get(root, "config") != NULL;
        if (has_manifests && (has_layers || has_config))
                return berr_set(
                    err, -EINVAL,
                    "ambiguous document: it has \"manifests\" together with \"%s\" and could be read "
                    "as both an index and a manifest (CVE-2021-41190)",
                    has_layers ? "layers" : "config");

        /* distribution-spec: reject when mediaType disagrees with the Content-Type. */
        if (mt && ct && strcmp(mt, ct) != 0)
                return berr_set(err, -EINVAL,
                                "manifest mediaType \"%.200s\" does not match Content-Type \"%s\"", mt, ct);

        const char *eff = mt ? mt : ct;
        if (!eff) {
                if (has_manifests)
                        eff = MEDIA_OCI_INDEX;
                else if (has_config || has_layers)
                        eff = MEDIA_OCI_MANIFEST;
                else
                        return berr_set(err, -EINVAL,
                                        "cannot tell what the document is: no mediaType, no specific "
                                        "Content-Type, and neither \"manifests\" nor \"config\"");
        }

        _cleanup_(image_doc_freep) struct image_doc *d = xcalloc(1, sizeof(*d));
        if (media_is_manifest(eff)) {
                if (has_manifests)
                        return berr_set(err, -EINVAL, "manifest of type \"%s\" must not have \"manifests\"",
                                        eff);
                d->kind = DOC_MANIFEST;
                r = manifest_parse_body(root, d, err);
        } else if (media_is_index(eff)) {
                if (has_layers || has_config)
                        return berr_set(err, -EINVAL, "index of type \"%s\" must not have \"%s\"", eff,
                                        has_layers ? "layers" : "config");
                d->kind = DOC_INDEX;
                r = index_parse_body(root, d, err);
        } else {
                return berr_set(err, -EPROTONOSUPPORT, "unsupported manifest media type \"%.200s\"", eff);
        }
        if (r < 0)
                return r;
        d->media_type = xstrdup(eff);
        *ret = TAKE_PTR(d);
        return 0;
}

/*
 * Pick the entry of an index that best runs on `want` (see the header). An entry of index type may be
 * returned: the caller fetches it and calls image_index_select again on the nested index (image-index.md
 * allows nesting). Entries without a platform are candidates of last resort, as in containerd. *ret
 * points into idx and lives as long as idx.
 */
int image_index_select(const struct image_doc *idx, const struct image_platform *want,
                       const struct descriptor **ret, struct berr **err)
{
        char wbuf[128];
        if (!idx || idx->kind != DOC_INDEX)
                return berr_set(err, -EINVAL, "not an index");
        const struct descriptor *best = NULL;
        int best_rank = -1;
        for (size_t i = 0; i < idx->n_manifests; i++) {
                const struct descriptor *e = &idx->manifests[i];
                if (e->attestation)
                        continue;
                if (!media_is_manifest(e->media_type) && !media_is_index(e->media_type))
                        continue;
                int rank = e->has_platform ? platform_match_rank(want, &e->platform) : RANK_NO_PLATFORM;
                if (rank < 0)
                        continue;
                if (!best || rank < best_rank) {
                        best = e;
                        best_rank = rank;
                }
        }
        if (best) {
                *ret = best;
                return 0;
        }

        /* Say what the index does offer, each platform once, at most SELECT_LIST_MAX of them. */
        char seen[SELECT_LIST_MAX][128];
        size_t n_seen = 0;
        bool more = false;
        for (size_t i = 0; i < idx->n_manifests; i++) {
                const struct descriptor *e = &idx->manifests[i];
                if (e->attestation || !e->has_platform || strcmp(e->platform.os, "unknown") == 0 ||
                    strcmp(e->platform.arch, "unknown") == 0 ||
                    (!media_is_manifest(e->media_type) && !media_is_index(e->media_type)))
                        continue;
                char pbuf[128];
                platform_format(&e->platform, pbuf, sizeof(pbuf));
                bool dup = false;
                for (size_t k = 0; k < n_seen && !dup; k++)
                        dup = strcmp(seen[k], pbuf) == 0;
                if (dup)
                        continue;
                if (n_seen == SELECT_LIST_MAX) {
                        more = true;
                        break;
                }
                memcpy(seen[n_seen++], pbuf, sizeof(pbuf));
        }
        size_t cap = n_seen * 130 + 8, len = 0;
        _cleanup_free_ char *list = xmalloc(cap);
        list[0] = '\0';
        for (size_t k = 0; k < n_seen; k++)
                len += (size_t)snprintf(list + len, cap - len, "%s%s", k ? ", " : "", seen[k]);
        if (more)
                snprintf(list + len, cap - len, ", ...");
        platform_format(want, wbuf, sizeof(wbuf));
        if (n_seen == 0)
                return berr_set(err, -ENOENT, "no image for %s in the index; it lists no runnable platforms",
                                wbuf);
        return berr_set(err, -ENOENT, "no image for %s in the index; it has %s", wbuf, list);
}

void image_config_free(struct image_config *c)
{
        if (!c)
                return;
        json_decref(c->json);
        for (size_t i = 0; i < c->n_diff_ids; i++)
                free(c->diff_ids[i]);
        free(c->diff_ids);
        free(c);
}

/*
 * Parse an image config of at most MANIFEST_MAX_BYTES. os/architecture/variant are copied as written
 * (not normalized; empty when absent); "config" may be absent or null. The caller owns *ret, which keeps
 * the whole parsed document in ->json for the runtime-spec conversion.
 */
int image_config_parse(const char *buf, size_t len, struct image_config **ret, struct berr **err)
{
        if (len > MANIFEST_MAX_BYTES)
                return berr_set(err, -EFBIG, "image config is %zu bytes, more than the limit of %d", len,
                                MANIFEST_MAX_BYTES);
        _cleanup_json_ json_t *root = NULL;
        int r = json_parse_buf(buf, len, &root, err);
        if (r < 0)
                return berr_prefix(err, r, "image config");
        if (!json_is_object(root))
                return berr_set(err, -EINVAL, "image config is not a JSON object");

        json_t *rootfs = json_object_get(root, "rootfs");
        if (!rootfs || json_is_null(rootfs))
                return berr_set(err, -EINVAL, "image config has no \"rootfs\"");
        if (!json_is_object(rootfs))
                return berr_set(err, -EINVAL, "image config field \"rootfs\" must be an object");
        const char *type = NULL;
        r = json_get_string(rootfs, "type", true, &type, err);
        if (r < 0)
                return berr_prefix(err, r, "image config rootfs");
        /* config.md: implementations MUST error on an unknown rootfs type. */
        if (strcmp(type, "layers") != 0)
                return berr_set(err, -EPROTONOSUPPORT,
                                "image config rootfs.type is \"%.64s\", want \"layers\"", type);
        json_t *ids = json_object_get(rootfs, "diff_ids");
        if (!ids || json_is_null(ids))
                return berr_set(err, -EINVAL, "image config has no rootfs.diff_ids");
        if (!json_is_array(ids))
                return berr_set(err, -EINVAL, "image config rootfs.diff_ids must be an array");
        size_t n = json_array_size(ids);
        if (n > MANIFEST_MAX_LAYERS)
                return berr_set(err, -E2BIG, "image config has %zu diff_ids, more than the limit of %d", n,
                                MANIFEST_MAX_LAYERS);

        json_t *cfg = json_object_get(root, "config");
        if (cfg && !json_is_null(cfg) && !json_is_object(cfg))
                return berr_set(err, -EINVAL, "image config field \"config\" must be an object");

        _cleanup_(image_config_freep) struct image_config *c = xcalloc(1, sizeof(*c));
        r = platform_field(root, "os", false, c->platform.os, err);
        if (r >= 0)
                r = platform_field(root, "architecture", false, c->platform.arch, err);
        if (r >= 0)
                r = platform_field(root, "variant", false, c->platform.variant, err);
        if (r < 0)
                return berr_prefix(err, r, "image config");

        c->diff_ids = xcalloc(n, sizeof(*c->diff_ids));
        for (size_t i = 0; i < n; i++) {
                json_t *v = json_array_get(ids, i);
                if (!json_is_string(v))
                        return berr_set(err, -EINVAL, "image config rootfs.diff_ids[%zu] is not a string", i);
                r = digest_validate(json_string_value(v), err);
                if (r < 0)
                        return berr_prefix(err, r, "image config rootfs.diff_ids[%zu]", i);
                c->diff_ids[i] = xstrdup(json_string_value(v));
                c->n_diff_ids = i + 1;
        }
        c->json = TAKE_PTR(root);
        *ret = TAKE_PTR(c);
        return 0;
}
