/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Cloud Foundry application manifests (`berth push -f manifest.yml`): the subset of cf's format that Docker
 * apps use, parsed and validated completely before push sends its first request.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "lib/err.h"

#define MANIFEST_MAX_BYTES    (1024 * 1024) /* a manifest file; cf's are a few KiB */
#define MANIFEST_MAX_APPS     1000
#define MANIFEST_MAX_ROUTES   1000
#define MANIFEST_MAX_ENV      1000
#define MANIFEST_TIMEOUT_MAX  180                  /* seconds, the platform's ceiling for the start timeout */
#define MANIFEST_INTERVAL_MAX 600                  /* seconds between health checks, the platform's ceiling */
#define MANIFEST_SIZE_MAX_MB  (16LL * 1024 * 1024) /* 16 TiB in MB: far above any cell, below INT_MAX */

/* One application of a manifest. Unset numbers are -1, unset strings NULL. */
struct manifest_app {
        char *name;
        char *image;    /* docker.image */
        char *username; /* docker.username */
        long instances;
        long memory_mb;
        long disk_mb;
        long timeout; /* health check / start timeout, seconds */
        char *command;
        char *health_check_type; /* "port", "http" or "process" ("none" is taken as "process", as cf does) */
        char *health_check_endpoint;
        long health_check_invocation_timeout; /* seconds, 1..MANIFEST_TIMEOUT_MAX */
        long health_check_interval;           /* seconds, 1..MANIFEST_INTERVAL_MAX */
        char *readiness_type;                 /* "process", "port" or "http" */
        char *readiness_endpoint;             /* readiness-health-check-http-endpoint */
        long readiness_invocation_timeout;
        long readiness_interval;
        json_t *env;   /* object of strings, or NULL (owned) */
        char **routes; /* "host.domain[/path]", lowercase host part; NULL-terminated or NULL (owned) */
        bool no_route;
        bool random_route; /* accepted, not implemented (a warning says so) */
};

struct manifest {
        struct manifest_app *apps;
        size_t n_apps;
        char *
            *warnings; /* NULL-terminated (never NULL after a successful parse): unknown keys, ignored keys */
};

/*
 * Parse and validate a manifest (len bytes of YAML). Every error names the application and the key
 * ("applications[0] (web): memory: invalid size \"lots\" (use 256M, 1G, ...)"). Unknown keys are not errors
 * (cf ignores them) but each adds a warning. Caller owns *ret (manifest_free).
 */
int manifest_parse(const char *buf, size_t len, struct manifest **ret, struct berr **err);
void manifest_free(struct manifest *m);
static inline void manifest_freep(struct manifest **m)
{
        manifest_free(*m);
}

/* Sizes as cf takes them: "256M", "1G", "512MB", "1024" (MB), case-insensitive → MB; -1 if invalid. */
long manifest_size_mb(const char *s);

/*
 * A route as the manifest writes it, "host.domain[/path]": 0 if it is well-formed (DNS-ish host part, a
 * path without whitespace, '?', '#' or a trailing '/'), else -EINVAL with a message.
 */
int manifest_route_check(const char *route, struct berr **err);

/* An environment variable name the platform refuses (PORT, VCAP_*, CF_INSTANCE_*, empty)? */
bool manifest_env_name_reserved(const char *name);
