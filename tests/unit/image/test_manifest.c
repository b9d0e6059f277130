/* SPDX-License-Identifier: Apache-2.0 */
/* Manifest, index and image config parsing; rejection classes; platform selection from an index. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "image/manifest.h"

#define HEX16(c) c c c c c c c c c c c c c c c c
#define HEX(c)   HEX16(c) HEX16(c) HEX16(c) HEX16(c)
#define D1       "sha256:" HEX("1")
#define D2       "sha256:" HEX("2")
#define D3       "sha256:" HEX("3")
#define D4       "sha256:" HEX("4")
#define D5       "sha256:" HEX("5")
#define D6       "sha256:" HEX("6")
#define D7       "sha256:" HEX("7")

const char *content_type_normalize(const char *ct, char buf[static 256], bool *too_long);

/* ---- documents ---- */

static const char docker_manifest[] =
    "{\"schemaVersion\":2,"
    "\"mediaType\":\"" MEDIA_DOCKER_MANIFEST "\","
    "\"config\":{\"mediaType\":\"" MEDIA_DOCKER_CONFIG "\",\"size\":1469,"
    "\"digest\":\"" D1 "\"},"
    "\"layers\":["
    "{\"mediaType\":\"" MEDIA_DOCKER_LAYER "\",\"size\":2,\"digest\":\"" D2 "\"},"
    "{\"mediaType\":\"" MEDIA_DOCKER_FOREIGN "\",\"size\":3,\"digest\":\"" D3
    "\",\"urls\":[\"https://example.com/x\"]},"
    "{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar\",\"size\":0,"
    "\"digest\":\"" D4 "\"}]}";

static const char oci_manifest[] =
    "{\"schemaVersion\":2,"
    "\"mediaType\":\"" MEDIA_OCI_MANIFEST "\","
    "\"config\":{\"mediaType\":\"" MEDIA_OCI_CONFIG "\",\"size\":7023,\"digest\":\"" D1 "\"},"
    "\"layers\":["
    "{\"mediaType\":\"" MEDIA_OCI_LAYER_GZIP "\",\"size\":32654,\"digest\":\"" D2 "\"},"
    "{\"mediaType\":\"" MEDIA_OCI_LAYER_ZSTD "\",\"size\":16724,\"digest\":\"" D3 "\"},"
    "{\"mediaType\":\"" MEDIA_OCI_LAYER "\",\"size\":73109,\"digest\":\"" D4 "\"},"
    "{\"mediaType\":\"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip\",\"size\":1,"
    "\"digest\":\"" D5 "\"}],"
    "\"annotations\":{\"com.example.key1\":\"value1\"}}";

/* OCI manifest without mediaType: the kind comes from Content-Type or the shape. */
static const char oci_manifest_bare[] =
    "{\"schemaVersion\":2,"
    "\"config\":{\"mediaType\":\"" MEDIA_OCI_CONFIG "\",\"size\":7,\"digest\":\"" D1 "\"},"
    "\"layers\":[{\"mediaType\":\"" MEDIA_OCI_LAYER_GZIP "\",\"size\":3,"
    "\"digest\":\"" D2 "\"}]}";

static const char oci_manifest_nolayers[] = "{\"schemaVersion\":2,\"mediaType\":\"" MEDIA_OCI_MANIFEST "\","
                                            "\"config\":{\"mediaType\":\"" MEDIA_OCI_CONFIG "\",\"size\":7,"
                                            "\"digest\":\"" D1 "\"},\"layers\":[]}";

static const char docker_list[] =
    "{\"schemaVersion\":2,\"mediaType\":\"" MEDIA_DOCKER_LIST "\",\"manifests\":["
    "{\"mediaType\":\"" MEDIA_DOCKER_MANIFEST "\",\"size\":7143,\"digest\":\"" D1 "\","
    "\"platform\":{\"architecture\":\"ppc64le\",\"os\":\"linux\"}},"
    "{\"mediaType\":\"" MEDIA_DOCKER_MANIFEST "\",\"size\":7682,\"digest\":\"" D2 "\","
    "\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\",\"features\":[\"sse4\"]}}]}";

/* The index used for selection: amd64, arm64/v8, arm/v7, arm/v6, an attestation and odd entries. */
static const char oci_index[] =
    "{\"schemaVersion\":2,\"mediaType\":\"" MEDIA_OCI_INDEX "\",\"manifests\":["
    "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":1,\"digest\":\"" D1 "\","
    "\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
    "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":2,\"digest\":\"" D2 "\","
    "\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}},"
    "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":3,\"digest\":\"" D3 "\","
    "\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v7\"}},"
    "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":4,\"digest\":\"" D4 "\","
    "\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v6\"}},"
    "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":5,\"digest\":\"" D5 "\","
    "\"platform\":{\"architecture\":\"unknown\",\"os\":\"unknown\"},"
    "\"annotations\":{\"vnd.docker.reference.digest\":\"" D1 "\","
    "\"vnd.docker.reference.type\":\"attestation-manifest\"}},"
    "{\"mediaType\":\"application/vnd.example.thing\",\"size\":6,\"digest\":\"" D6 "\","
    "\"platform\":{\"architecture\":\"s390x\",\"os\":\"linux\"}},"
    "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":7,\"digest\":\"" D7 "\","
    "\"platform\":{\"architecture\":\"unknown\",\"os\":\"unknown\"}}]}";

static struct image_doc *parse_ok(const char *doc, const char *ct)
{
        struct image_doc *d = NULL;
        struct berr *e = NULL;
        if (image_doc_parse(doc, strlen(doc), ct, &d, &e) < 0)
                fail_msg("rejected (ct %s): %s", ct ? ct : "NULL", berr_msg(e));
        assert_non_null(d);
        return d;
}

static void parse_bad(const char *doc, const char *ct, int code, const char *msg)
{
        struct image_doc *d = NULL;
        struct berr *e = NULL;
        int r = image_doc_parse(doc, strlen(doc), ct, &d, &e);
        if (r >= 0)
                fail_msg("accepted (want \"%s\"): %s", msg, doc);
        assert_null(d);
        assert_non_null(e);
        if (r != code)
                fail_msg("code %d, want %d (%s)", r, code, berr_msg(e));
        if (!strstr(berr_msg(e), msg))
                fail_msg("error \"%s\" lacks \"%s\"", berr_msg(e), msg);
        berr_free(e);
}

/* ---- good documents ---- */

static void test_docker_manifest(void **state)
{
        (void)state;
        struct image_doc *d = parse_ok(docker_manifest, MEDIA_DOCKER_MANIFEST);
        assert_int_equal(d->kind, DOC_MANIFEST);
        assert_string_equal(d->media_type, MEDIA_DOCKER_MANIFEST);
        assert_string_equal(d->config.media_type, MEDIA_DOCKER_CONFIG);
        assert_string_equal(d->config.digest, D1);
        assert_int_equal(d->config.size, 1469);
        assert_int_equal(d->n_layers, 3);
        assert_string_equal(d->layers[0].digest, D2);
        assert_string_equal(d->layers[1].media_type, MEDIA_DOCKER_FOREIGN);
        assert_int_equal(d->layers[2].size, 0);
        assert_null(d->manifests);
        image_doc_free(d);
}

static void test_oci_manifest(void **state)
{
        (void)state;
        struct image_doc *d = parse_ok(oci_manifest, MEDIA_OCI_MANIFEST "; charset=utf-8");
        assert_int_equal(d->kind, DOC_MANIFEST);
        assert_string_equal(d->media_type, MEDIA_OCI_MANIFEST);
        assert_int_equal(d->n_layers, 4);
        assert_string_equal(d->layers[1].media_type, MEDIA_OCI_LAYER_ZSTD);
        assert_int_equal(d->layers[3].size, 1);
        image_doc_free(d);

        /* Content-Type is case-insensitive and may carry blanks; generic types mean "use the body". */
        d = parse_ok(oci_manifest, " Application/VND.OCI.Image.Manifest.v1+JSON ;charset=utf-8");
        image_doc_free(d);
        d = parse_ok(oci_manifest, "application/json");
        image_doc_free(d);
        d = parse_ok(oci_manifest, "text/plain; charset=utf-8");
        image_doc_free(d);
        d = parse_ok(oci_manifest, NULL);
        image_doc_free(d);
        d = parse_ok(oci_manifest, "");
        image_doc_free(d);
}

static void test_oci_manifest_without_media_type(void **state)
{
        (void)state;
        struct image_doc *d = parse_ok(oci_manifest_bare, NULL);
        assert_int_equal(d->kind, DOC_MANIFEST);
        assert_string_equal(d->media_type, MEDIA_OCI_MANIFEST); /* by shape */
        image_doc_free(d);
        d = parse_ok(oci_manifest_bare, MEDIA_DOCKER_MANIFEST); /* by Content-Type */
        assert_string_equal(d->media_type, MEDIA_DOCKER_MANIFEST);
        image_doc_free(d);
        d = parse_ok(oci_manifest_nolayers, NULL); /* zero layers: valid, if useless */
        assert_int_equal(d->n_layers, 0);
        image_doc_free(d);
}

static void test_docker_list(void **state)
{
        (void)state;
        struct image_doc *d = parse_ok(docker_list, MEDIA_DOCKER_LIST);
        assert_int_equal(d->kind, DOC_INDEX);
        assert_string_equal(d->media_type, MEDIA_DOCKER_LIST);
        assert_int_equal(d->n_manifests, 2);
        assert_true(d->manifests[0].has_platform);
        assert_string_equal(d->manifests[0].platform.arch, "ppc64le");
        assert_string_equal(d->manifests[1].platform.os, "linux");
        assert_int_equal(d->manifests[1].size, 7682);
        assert_null(d->layers);
        image_doc_free(d);
}

static void test_oci_index(void **state)
{
        (void)state;
        struct image_doc *d = parse_ok(oci_index, MEDIA_OCI_INDEX);
        assert_int_equal(d->kind, DOC_INDEX);
        assert_int_equal(d->n_manifests, 7);
        assert_string_equal(d->manifests[1].platform.variant, "v8"); /* kept as written */
        assert_false(d->manifests[0].attestation);
        assert_true(d->manifests[4].attestation);
        assert_false(d->manifests[6].attestation);
        /* An entry of unknown media type is kept (image-index.md: MUST NOT error). */
        assert_string_equal(d->manifests[5].media_type, "application/vnd.example.thing");
        image_doc_free(d);

        /* Without mediaType: from the shape. */
        static const char bare[] = "{\"schemaVersion\":2,\"manifests\":[]}";
        d = parse_ok(bare, NULL);
        assert_int_equal(d->kind, DOC_INDEX);
        assert_string_equal(d->media_type, MEDIA_OCI_INDEX);
        assert_int_equal(d->n_manifests, 0);
        image_doc_free(d);
        d = parse_ok(bare, MEDIA_DOCKER_LIST);
        assert_string_equal(d->media_type, MEDIA_DOCKER_LIST);
        image_doc_free(d);
}

/* ---- rejections ---- */

static void test_reject_schema1(void **state)
{
        (void)state;
        static const char s1[] = "{\"schemaVersion\":1,\"name\":\"a/b\",\"tag\":\"latest\",\"architecture\":"
                                 "\"amd64\",\"fsLayers\":[],\"history\":[]}";
        parse_bad(s1, NULL, -ENOTSUP, "schema 1 manifests are deprecated");
        parse_bad(s1, "application/json", -ENOTSUP, "schema 1");
        /* By Content-Type alone, whatever the body. */
        parse_bad(oci_manifest, MEDIA_DOCKER_SCHEMA1S, -ENOTSUP, "schema 1");
        parse_bad("garbage", MEDIA_DOCKER_SCHEMA1, -ENOTSUP, "schema 1");
        parse_bad("{\"schemaVersion\":2,\"mediaType\":\"" MEDIA_DOCKER_SCHEMA1 "\"}", NULL, -ENOTSUP,
                  "schema 1");
}

static void test_reject_schema_version(void **state)
{
        (void)state;
        parse_bad("{\"mediaType\":\"" MEDIA_OCI_INDEX "\",\"manifests\":[]}", NULL, -EINVAL, "schemaVersion");
        parse_bad("{\"schemaVersion\":3,\"manifests\":[]}", NULL, -EPROTONOSUPPORT, "schemaVersion 3");
        parse_bad("{\"schemaVersion\":\"2\",\"manifests\":[]}", NULL, -EINVAL, "must be an integer");
        parse_bad("{\"schemaVersion\":2.0,\"manifests\":[]}", NULL, -EINVAL, "must be an integer");
}

static void test_reject_ambiguous(void **state)
{
        (void)state;
        /* CVE-2021-41190: whatever the declared type. */
        static const char both_layers[] =
            "{\"schemaVersion\":2,\"mediaType\":\"" MEDIA_OCI_INDEX "\",\"manifests\":[],\"layers\":[]}";
        static const char both_config[] =
            "{\"schemaVersion\":2,\"manifests\":[],\"config\":{\"mediaType\":\"" MEDIA_OCI_CONFIG
            "\",\"size\":1,\"digest\":\"" D1 "\"}}";
        parse_bad(both_layers, NULL, -EINVAL, "CVE-2021-41190");
        parse_bad(both_layers, MEDIA_OCI_MANIFEST, -EINVAL, "ambiguous");
        parse_bad(both_config, MEDIA_OCI_INDEX, -EINVAL, "ambiguous");
        /* Declared an index but shaped like a manifest, and the reverse. */
        parse_bad(oci_manifest_bare, MEDIA_OCI_INDEX, -EINVAL, "index of type");
        parse_bad("{\"schemaVersion\":2,\"manifests\":[]}", MEDIA_OCI_MANIFEST, -EINVAL, "must not have");
}

static void test_reject_media_type_mismatch(void **state)
{
        (void)state;
        parse_bad(oci_manifest, MEDIA_DOCKER_MANIFEST, -EINVAL, "does not match Content-Type");
        parse_bad(docker_list, MEDIA_OCI_INDEX, -EINVAL, "does not match Content-Type");
        parse_bad(oci_manifest, MEDIA_OCI_INDEX, -EINVAL, "does not match");
        /* Unknown document types. */
        parse_bad(oci_manifest_bare, "application/vnd.example+json", -EPROTONOSUPPORT,
                  "unsupported manifest media type");
        parse_bad("{\"schemaVersion\":2,\"mediaType\":\"application/x\",\"config\":{}}", NULL,
                  -EPROTONOSUPPORT, "\"application/x\"");
        parse_bad("{\"schemaVersion\":2,\"mediaType\":7}", NULL, -EINVAL, "\"mediaType\" must be a string");
        parse_bad("{\"schemaVersion\":2}", NULL, -EINVAL, "cannot tell");
}

static void test_reject_bad_json(void **state)
{
        (void)state;
        parse_bad("", NULL, -EINVAL, "invalid JSON");
        parse_bad("[1,2]", NULL, -EINVAL, "not a JSON object");
        parse_bad("{\"schemaVersion\":2,\"schemaVersion\":2,\"manifests\":[]}", NULL, -EINVAL,
                  "invalid JSON");
        parse_bad("{\"schemaVersion\":2,\"manifests\":[]} trailing", NULL, -EINVAL, "invalid JSON");
}

static void test_reject_descriptors(void **state)
{
        (void)state;
#define M_CFG(cfg) \
        "{\"schemaVersion\":2,\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"config\":" cfg ",\"layers\":[]}"
#define M_LAYER(l)                                                                          \
        "{\"schemaVersion\":2,\"mediaType\":\"" MEDIA_OCI_MANIFEST                          \
        "\",\"config\":{\"mediaType\":\"" MEDIA_OCI_CONFIG "\",\"size\":1,\"digest\":\"" D1 \
        "\"},\"layers\":[" l "]}"
        parse_bad(M_CFG("{\"mediaType\":\"" MEDIA_OCI_CONFIG "\",\"size\":1,\"digest\":\"sha256:abc\"}"),
                  NULL, -EINVAL, "config: invalid digest");
        parse_bad(M_CFG("{\"mediaType\":\"" MEDIA_OCI_CONFIG "\",\"size\":1}"), NULL, -EINVAL,
                  "missing field \"digest\"");
        parse_bad(M_CFG("{\"mediaType\":\"" MEDIA_OCI_CONFIG "\",\"digest\":\"" D1 "\"}"), NULL, -EINVAL,
                  "missing field \"size\"");
        parse_bad(M_CFG("{\"mediaType\":\"" MEDIA_OCI_CONFIG "\",\"size\":-1,\"digest\":\"" D1 "\"}"), NULL,
                  -EINVAL, "negative");
        parse_bad(M_CFG("{\"mediaType\":\"" MEDIA_OCI_CONFIG "\",\"size\":\"1\",\"digest\":\"" D1 "\"}"),
                  NULL, -EINVAL, "must be an integer");
        parse_bad(M_CFG("{\"size\":1,\"digest\":\"" D1 "\"}"), NULL, -EINVAL, "missing field \"mediaType\"");
        parse_bad(M_CFG("{\"mediaType\":1,\"size\":1,\"digest\":\"" D1 "\"}"), NULL, -EINVAL,
                  "\"mediaType\" must be a string");
        parse_bad(M_CFG("[]"), NULL, -EINVAL, "not a JSON object");
        parse_bad(M_CFG("null"), NULL, -EINVAL, "no \"config\"");
        parse_bad(M_CFG("{\"mediaType\":\"application/vnd.cncf.helm.config.v1+json\",\"size\":1,\"digest\":"
                        "\"" D1 "\"}"),
                  NULL, -EPROTONOSUPPORT, "application/vnd.cncf.helm.config.v1+json");
        parse_bad("{\"schemaVersion\":2,\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"layers\":[]}", NULL,
                  -EINVAL, "no \"config\"");
        parse_bad("{\"schemaVersion\":2,\"mediaType\":\"" MEDIA_OCI_MANIFEST
                  "\",\"config\":{\"mediaType\":\"" MEDIA_OCI_CONFIG "\",\"size\":1,\"digest\":\"" D1 "\"}}",
                  NULL, -EINVAL, "no \"layers\"");
        parse_bad(M_LAYER("{\"mediaType\":\"" MEDIA_OCI_LAYER "\",\"size\":1,\"digest\":\"" D2 "\"},"
                          "{\"mediaType\":\"" MEDIA_OCI_LAYER
                          "\",\"size\":1,\"digest\":\"sha256:" HEX("A") "\"}"),
                  NULL, -EINVAL, "layers[1]: invalid digest");
        parse_bad(
            M_LAYER("{\"mediaType\":\"application/vnd.in-toto+json\",\"size\":1,\"digest\":\"" D2 "\"}"),
            NULL, -EPROTONOSUPPORT, "unsupported layer media type \"application/vnd.in-toto+json\"");
        parse_bad(M_LAYER("{\"mediaType\":\"" MEDIA_OCI_LAYER "\",\"size\":1,\"digest\":\"md5:abc\"}"), NULL,
                  -ENOTSUP, "unsupported digest algorithm");
        parse_bad("{\"schemaVersion\":2,\"mediaType\":\"" MEDIA_OCI_MANIFEST
                  "\",\"config\":{\"mediaType\":\"" MEDIA_OCI_CONFIG "\",\"size\":1,\"digest\":\"" D1
                  "\"},\"layers\":{}}",
                  NULL, -EINVAL, "must be an array");
        /* Index entries are descriptors too. */
        parse_bad("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" MEDIA_OCI_MANIFEST
                  "\",\"size\":1,\"digest\":\"sha256:1\"}]}",
                  NULL, -EINVAL, "manifests[0]: invalid digest");
        parse_bad("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" MEDIA_OCI_MANIFEST
                  "\",\"size\":1,\"digest\":\"" D1 "\",\"platform\":{\"os\":\"linux\"}}]}",
                  NULL, -EINVAL, "manifests[0]: platform: missing field \"architecture\"");
        parse_bad("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" MEDIA_OCI_MANIFEST
                  "\",\"size\":1,\"digest\":\"" D1 "\",\"platform\":\"linux/amd64\"}]}",
                  NULL, -EINVAL, "\"platform\" must be an object");
        parse_bad("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" MEDIA_OCI_MANIFEST
                  "\",\"size\":1,\"digest\":\"" D1 "\",\"platform\":{\"os\":\"linux\",\"architecture\":"
                  "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}]}",
                  NULL, -EINVAL, "more than 31");
        parse_bad("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" MEDIA_OCI_MANIFEST
                  "\",\"size\":1,\"digest\":\"" D1 "\",\"annotations\":[]}]}",
                  NULL, -EINVAL, "\"annotations\" must be an object");
        parse_bad("{\"schemaVersion\":2,\"manifests\":{}}", NULL, -EINVAL, "must be an array");
        parse_bad("{\"schemaVersion\":2,\"manifests\":[1]}", NULL, -EINVAL,
                  "manifests[0]: descriptor is not");
#undef M_CFG
#undef M_LAYER
}

/* Build a manifest with n layers, or an index with n entries. */
static char *build_many(bool index, size_t n)
{
        static const char layer[] =
            "{\"mediaType\":\"" MEDIA_OCI_LAYER "\",\"size\":1,\"digest\":\"" D2 "\"}";
        static const char entry[] = "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":1,\"digest\":\"" D2
                                    "\",\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}";
        const char *item = index ? entry : layer;
        size_t cap = 512 + n * (strlen(item) + 1);
        char *b = malloc(cap);
        size_t len =
            (size_t)snprintf(b, cap, "%s",
                             index ? "{\"schemaVersion\":2,\"manifests\":["
                                   : "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" MEDIA_OCI_CONFIG
                                     "\",\"size\":1,\"digest\":\"" D1 "\"},\"layers\":[");
        for (size_t i = 0; i < n; i++)
                len += (size_t)snprintf(b + len, cap - len, "%s%s", i ? "," : "", item);
        snprintf(b + len, cap - len, "]}");
        return b;
}

static void test_limits(void **state)
{
        (void)state;
        char *b = build_many(false, MANIFEST_MAX_LAYERS);
        struct image_doc *d = parse_ok(b, NULL);
        assert_int_equal(d->n_layers, MANIFEST_MAX_LAYERS);
        image_doc_free(d);
        free(b);
        b = build_many(false, MANIFEST_MAX_LAYERS + 1);
        parse_bad(b, NULL, -E2BIG, "more than the limit of 500");
        free(b);

        b = build_many(true, INDEX_MAX_ENTRIES);
        d = parse_ok(b, NULL);
        assert_int_equal(d->n_manifests, INDEX_MAX_ENTRIES);
        image_doc_free(d);
        free(b);
        b = build_many(true, INDEX_MAX_ENTRIES + 1);
        parse_bad(b, NULL, -E2BIG, "more than the limit of 4096");
        free(b);

        /* Oversized input is refused before parsing: this buffer is not even JSON. */
        size_t big = MANIFEST_MAX_BYTES + 1;
        char *x = malloc(big);
        memset(x, 'x', big);
        struct berr *e = NULL;
        assert_int_equal(image_doc_parse(x, big, NULL, &d, &e), -EFBIG);
        assert_non_null(strstr(berr_msg(e), "more than the limit"));
        berr_free(e);
        e = NULL;
        struct image_config *c = NULL;
        assert_int_equal(image_config_parse(x, big, &c, &e), -EFBIG);
        berr_free(e);
        free(x);
}

static void test_content_type_normalize(void **state)
{
        (void)state;
        char buf[256];
        bool tl;
        assert_null(content_type_normalize(NULL, buf, &tl));
        assert_null(content_type_normalize("", buf, &tl));
        assert_null(content_type_normalize("  ; charset=x", buf, &tl));
        assert_null(content_type_normalize("application/json; charset=utf-8", buf, &tl));
        assert_null(content_type_normalize("Text/Plain", buf, &tl));
        assert_null(content_type_normalize("application/octet-stream", buf, &tl));
        assert_false(tl);
        assert_string_equal(content_type_normalize("A/B ; x=y", buf, &tl), "a/b");
        char longct[400];
        memset(longct, 'a', sizeof(longct) - 1);
        longct[sizeof(longct) - 1] = '\0';
        assert_null(content_type_normalize(longct, buf, &tl));
        assert_true(tl);
        struct image_doc *d = NULL;
        assert_int_equal(image_doc_parse(oci_manifest, strlen(oci_manifest), longct, &d, NULL),
                         -EPROTONOSUPPORT);
}

static void test_layer_media_compression(void **state)
{
        (void)state;
        static const struct {
                const char *t;
                enum layer_compression c;
        } ok[] = {
                { MEDIA_DOCKER_LAYER, COMPRESSION_GZIP },
                { MEDIA_DOCKER_FOREIGN, COMPRESSION_GZIP },
                { "application/vnd.docker.image.rootfs.diff.tar", COMPRESSION_NONE },
                { "application/vnd.docker.image.rootfs.diff.tar.zstd", COMPRESSION_ZSTD },
                { MEDIA_OCI_LAYER, COMPRESSION_NONE },
                { MEDIA_OCI_LAYER_GZIP, COMPRESSION_GZIP },
                { MEDIA_OCI_LAYER_ZSTD, COMPRESSION_ZSTD },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar", COMPRESSION_NONE },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", COMPRESSION_GZIP },
                { "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", COMPRESSION_ZSTD },
        };
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
                enum layer_compression c = 99;
                assert_int_equal(layer_media_compression(ok[i].t, &c), 0);
                assert_int_equal(c, ok[i].c);
        }
        enum layer_compression c = COMPRESSION_ZSTD;
        assert_int_equal(layer_media_compression("application/vnd.in-toto+json", &c), -EPROTONOSUPPORT);
        assert_int_equal(c, COMPRESSION_ZSTD); /* untouched */
        assert_int_equal(layer_media_compression(MEDIA_OCI_CONFIG, &c), -EPROTONOSUPPORT);
        assert_int_equal(layer_media_compression("application/vnd.oci.image.layer.v1.tar+bzip2", &c),
                         -EPROTONOSUPPORT);
        assert_int_equal(layer_media_compression(NULL, &c), -EPROTONOSUPPORT);
}

/* ---- selection ---- */

static const char *select_digest(const struct image_doc *d, const char *want, struct berr **e)
{
        struct image_platform w;
        assert_int_equal(platform_parse(want, &w, NULL), 0);
        const struct descriptor *sel = NULL;
        if (image_index_select(d, &w, &sel, e) < 0)
                return NULL;
        assert_non_null(sel);
        return sel->digest;
}

static void test_select(void **state)
{
        (void)state;
        struct image_doc *d = parse_ok(oci_index, NULL);
        assert_string_equal(select_digest(d, "linux/amd64", NULL), D1);
        assert_string_equal(select_digest(d, "linux/x86_64", NULL), D1);
        assert_string_equal(select_digest(d, "linux/amd64/v3", NULL), D1);
        assert_string_equal(select_digest(d, "linux/arm64", NULL), D2); /* arm64/v8 == arm64 */
        assert_string_equal(select_digest(d, "linux/arm64/v8", NULL), D2);
        assert_string_equal(select_digest(d, "linux/arm/v7", NULL), D3);
        assert_string_equal(select_digest(d, "linux/armhf", NULL), D3);
        assert_string_equal(select_digest(d, "linux/arm/v6", NULL), D4);
        assert_string_equal(select_digest(d, "linux/arm/v8", NULL), D3); /* fallback: no arm/v8 -> v7 */
        assert_string_equal(select_digest(d, "LINUX/ARM/V7", NULL), D3);

        /* Nothing for s390x (the s390x entry has an unknown media type and is never selected). */
        struct berr *e = NULL;
        assert_null(select_digest(d, "linux/s390x", &e));
        assert_non_null(e);
        assert_int_equal(e->code, -ENOENT);
        assert_string_equal(berr_msg(e), "no image for linux/s390x in the index; it has linux/amd64, "
                                         "linux/arm64/v8, linux/arm/v7, linux/arm/v6");
        berr_free(e);
        e = NULL;
        /* arm/v5 cannot run v6 or v7 images. */
        assert_null(select_digest(d, "linux/arm/v5", &e));
        assert_int_equal(e->code, -ENOENT);
        berr_free(e);
        e = NULL;
        /* Attestations (unknown/unknown) are never chosen, not even when asked for. */
        struct image_platform unk = { .os = "unknown", .arch = "unknown" };
        const struct descriptor *sel = NULL;
        assert_int_equal(image_index_select(d, &unk, &sel, NULL), -ENOENT);
        image_doc_free(d);

        /* First among equals wins; a better rank later in the list wins over an earlier fallback. */
        static const char order[] =
            "{\"schemaVersion\":2,\"manifests\":["
            "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":1,\"digest\":\"" D1 "\","
            "\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v6\"}},"
            "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":1,\"digest\":\"" D2 "\","
            "\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v7\"}},"
            "{\"mediaType\":\"" MEDIA_DOCKER_MANIFEST "\",\"size\":1,\"digest\":\"" D3 "\","
            "\"platform\":{\"architecture\":\"arm\",\"os\":\"linux\",\"variant\":\"v7\"}},"
            "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":1,\"digest\":\"" D4 "\","
            "\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"},"
            "\"annotations\":{\"vnd.docker.reference.type\":\"attestation-manifest\"}},"
            "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":1,\"digest\":\"" D5 "\","
            "\"platform\":{\"architecture\":\"386\",\"os\":\"linux\"}}]}";
        d = parse_ok(order, NULL);
        assert_string_equal(select_digest(d, "linux/arm/v7", NULL), D2);
        assert_string_equal(select_digest(d, "linux/arm64", NULL), D2);
        assert_string_equal(select_digest(d, "linux/arm/v6", NULL), D1);
        /* The amd64 entry is flagged as an attestation: amd64 falls back to 386. */
        assert_string_equal(select_digest(d, "linux/amd64", NULL), D5);
        image_doc_free(d);
}

static void test_select_nested_and_unplatformed(void **state)
{
        (void)state;
        /* A nested index may be selected; the caller fetches it and selects again. */
        static const char nested[] =
            "{\"schemaVersion\":2,\"manifests\":["
            "{\"mediaType\":\"" MEDIA_OCI_INDEX "\",\"size\":1,\"digest\":\"" D1 "\","
            "\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}},"
            "{\"mediaType\":\"" MEDIA_OCI_MANIFEST "\",\"size\":1,\"digest\":\"" D2 "\"}]}";
        struct image_doc *d = parse_ok(nested, NULL);
        const struct descriptor *sel = NULL;
        struct image_platform w = { .os = "linux", .arch = "amd64" };
        assert_int_equal(image_index_select(d, &w, &sel, NULL), 0);
        assert_string_equal(sel->digest, D1);
        assert_string_equal(sel->media_type, MEDIA_OCI_INDEX);
        /* No platform entry: the last resort. */
        struct image_platform a = { .os = "linux", .arch = "arm64" };
        assert_int_equal(image_index_select(d, &a, &sel, NULL), 0);
        assert_string_equal(sel->digest, D2);
        image_doc_free(d);

        /* An empty index and a manifest are not selectable. */
        d = parse_ok("{\"schemaVersion\":2,\"manifests\":[]}", NULL);
        struct berr *e = NULL;
        assert_int_equal(image_index_select(d, &w, &sel, &e), -ENOENT);
        assert_non_null(strstr(berr_msg(e), "no image for linux/amd64 in the index; it lists no"));
        berr_free(e);
        image_doc_free(d);
        d = parse_ok(oci_manifest, NULL);
        assert_int_equal(image_index_select(d, &w, &sel, NULL), -EINVAL);
        image_doc_free(d);
        image_doc_free(NULL);
}

/* ---- image config ---- */

static const char config_ok[] =
    "{\"created\":\"2023-11-14T22:13:20Z\",\"architecture\":\"arm\",\"variant\":\"v7\",\"os\":\"linux\","
    "\"config\":{\"Env\":[\"PATH=/usr/bin\"],\"Cmd\":[\"/bin/sh\"]},"
    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D1 "\",\"" D2 "\"]},"
    "\"history\":[{\"created_by\":\"x\"}]}";

static void config_bad(const char *doc, int code, const char *msg)
{
        struct image_config *c = NULL;
        struct berr *e = NULL;
        int r = image_config_parse(doc, strlen(doc), &c, &e);
        if (r >= 0)
                fail_msg("accepted (want \"%s\"): %s", msg, doc);
        assert_null(c);
        if (r != code)
                fail_msg("code %d, want %d (%s)", r, code, berr_msg(e));
        if (!strstr(berr_msg(e), msg))
                fail_msg("error \"%s\" lacks \"%s\"", berr_msg(e), msg);
        berr_free(e);
}

static void test_config(void **state)
{
        (void)state;
        struct image_config *c = NULL;
        struct berr *e = NULL;
        assert_int_equal(image_config_parse(config_ok, strlen(config_ok), &c, &e), 0);
        assert_int_equal(c->n_diff_ids, 2);
        assert_string_equal(c->diff_ids[0], D1);
        assert_string_equal(c->diff_ids[1], D2);
        assert_string_equal(c->platform.os, "linux");
        assert_string_equal(c->platform.arch, "arm");
        assert_string_equal(c->platform.variant, "v7");
        /* The whole document is kept. */
        assert_non_null(c->json);
        json_t *cmd = json_object_get(json_object_get(c->json, "config"), "Cmd");
        assert_string_equal(json_string_value(json_array_get(cmd, 0)), "/bin/sh");
        assert_non_null(json_object_get(c->json, "history"));
        image_config_free(c);
        c = NULL;

        /* Minimal: no os/arch (left empty), no config, zero layers. */
        static const char minimal[] = "{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
        assert_int_equal(image_config_parse(minimal, strlen(minimal), &c, NULL), 0);
        assert_int_equal(c->n_diff_ids, 0);
        assert_string_equal(c->platform.os, "");
        assert_string_equal(c->platform.arch, "");
        image_config_free(c);
        c = NULL;
        static const char nullcfg[] =
            "{\"config\":null,\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D3 "\"]}}";
        assert_int_equal(image_config_parse(nullcfg, strlen(nullcfg), &c, NULL), 0);
        image_config_free(c);
        image_config_free(NULL);

        config_bad("[]", -EINVAL, "not a JSON object");
        config_bad("{", -EINVAL, "invalid JSON");
        config_bad("{\"architecture\":\"amd64\"}", -EINVAL, "no \"rootfs\"");
        config_bad("{\"rootfs\":[]}", -EINVAL, "\"rootfs\" must be an object");
        config_bad("{\"rootfs\":{\"diff_ids\":[]}}", -EINVAL, "missing field \"type\"");
        config_bad("{\"rootfs\":{\"type\":\"tarballs\",\"diff_ids\":[]}}", -EPROTONOSUPPORT,
                   "rootfs.type is \"tarballs\"");
        config_bad("{\"rootfs\":{\"type\":\"layers\"}}", -EINVAL, "no rootfs.diff_ids");
        config_bad("{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":\"" D1 "\"}}", -EINVAL, "must be an array");
        config_bad("{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D1 "\",\"sha256:zz\"]}}", -EINVAL,
                   "diff_ids[1]: invalid digest");
        config_bad("{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[1]}}", -EINVAL,
                   "diff_ids[0] is not a string");
        config_bad("{\"architecture\":5,\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}", -EINVAL,
                   "\"architecture\" must be a string");
        config_bad("{\"config\":[],\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}", -EINVAL,
                   "\"config\" must be an object");
        config_bad("{\"a\":1,\"a\":2,\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}", -EINVAL,
                   "invalid JSON");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_docker_manifest),
                cmocka_unit_test(test_oci_manifest),
                cmocka_unit_test(test_oci_manifest_without_media_type),
                cmocka_unit_test(test_docker_list),
                cmocka_unit_test(test_oci_index),
                cmocka_unit_test(test_reject_schema1),
                cmocka_unit_test(test_reject_schema_version),
                cmocka_unit_test(test_reject_ambiguous),
                cmocka_unit_test(test_reject_media_type_mismatch),
                cmocka_unit_test(test_reject_bad_json),
                cmocka_unit_test(test_reject_descriptors),
                cmocka_unit_test(test_limits),
                cmocka_unit_test(test_content_type_normalize),
                cmocka_unit_test(test_layer_media_compression),
                cmocka_unit_test(test_select),
                cmocka_unit_test(test_select_nested_and_unplatformed),
                cmocka_unit_test(test_config),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
