/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Staging for the controller: resolve a reference to the manifest digest for a platform and read the
 * image's config, without pulling any layer (Cloud Foundry's docker staging).
 */
#pragma once

#include <jansson.h>

#include "lib/config.h"
#include "lib/err.h"

struct image_resolved {
        char *pinned;   /* "registry/repo@sha256:…" (the platform's manifest), what instances run */
        char *digest;   /* "sha256:…" of that manifest */
        json_t *config; /* the image config's "config" object (Entrypoint, Cmd, User, WorkingDir, Env,
                           ExposedPorts, StopSignal, ...); {} if absent */
};

/*
 * Errors (the message names the reference and says what went wrong):
 *   -EINVAL   invalid reference
 *   -ENOENT   no such repository, tag or digest ("image not found: …"), or no manifest for the platform
 *   -EACCES   authentication failed (wrong or missing credentials)
 *   -EHOSTUNREACH / -ECONNREFUSED / -ETIMEDOUT   the registry cannot be reached
 *   -ENOTSUP  unsupported manifest or config format
 */
int image_resolve(const struct berth_config *cfg, const char *ref, const char *username, const char *password,
                  const char *platform, struct image_resolved *ret, struct berr **err);
void image_resolved_free(struct image_resolved *r);
