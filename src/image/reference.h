/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image references with Docker's normalization:
 *   nginx                     -> docker.io/library/nginx:latest
 *   user/app:1                -> docker.io/user/app:1
 *   localhost:5000/app        -> localhost:5000/app:latest
 *   quay.io/a/b@sha256:<hex>  -> digest only (no implied tag)
 *   a/b:tag@sha256:<hex>      -> tag kept for display, digest wins for pulling
 * The first component is a registry domain when it contains '.' or ':' or is "localhost", or when it has
 * uppercase letters (Docker's rule); "index.docker.io" and "registry-1.docker.io" become "docker.io".
 */
#pragma once

#include <stdbool.h>

#include "lib/digest.h"
#include "lib/err.h"

#define IMAGE_REF_MAX       4096 /* whole reference string */
#define IMAGE_NAME_MAX      255  /* domain + "/" + path, as Docker */
#define IMAGE_TAG_MAX       128
#define IMAGE_DOCKER_DOMAIN "docker.io"

struct image_ref {
        char *domain; /* "docker.io", "localhost:5000", "[::1]:5000" */
        char *path;   /* "library/nginx" */
        char *tag;    /* NULL when only a digest was given; "latest" when neither */
        char *digest; /* "sha256:<hex>" or NULL */
};

/* Parse and normalize. Errors are precise ("invalid reference \"X\": tag must match ..."). */
int image_ref_parse(const char *s, struct image_ref **ret, struct berr **err);
void image_ref_free(struct image_ref *r);
static inline void image_ref_freep(struct image_ref **r)
{
        image_ref_free(*r);
}
/* "docker.io/library/nginx" (caller frees). */
char *image_ref_name(const struct image_ref *r);
/* Fully normalized string: name[:tag][@digest] (caller frees). */
char *image_ref_string(const struct image_ref *r);
/* Host to talk to for the registry API: "registry-1.docker.io" for docker.io, else the domain. */
const char *image_ref_api_host(const struct image_ref *r);
/* The tag or digest to ask the registry for (digest wins). */
const char *image_ref_object(const struct image_ref *r);
/* True when the domain names a loopback address (localhost, 127.0.0.0/8, ::1), with or without port. */
bool image_ref_domain_is_loopback(const char *domain);
