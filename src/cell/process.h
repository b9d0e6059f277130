/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The process a container runs, from an image config plus the caller's overrides, with Docker's rules:
 * ENTRYPOINT/CMD merge, USER resolved in the image's own /etc/passwd and /etc/group, WORKDIR, and the
 * environment (image ENV, then the caller's; later wins; PATH and HOME defaults).
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/err.h"

#define PROCESS_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define PROCESS_MAX_GROUPS   65536

struct process_overrides {
        char **entrypoint; /* NULL: not given; {NULL} (empty vector): `--entrypoint ""` clears it */
        bool entrypoint_set;
        char **cmd;          /* NULL-terminated; NULL or empty: use the image's (unless entrypoint_set) */
        const char *user;    /* NULL: the image's User */
        const char *workdir; /* NULL: the image's WorkingDir */
        char **env;          /* "K=V" entries, NULL-terminated; applied after the image's */
};

struct process_spec {
        char **args; /* NULL-terminated, at least one */
        char **env;  /* NULL-terminated "K=V" */
        char *cwd;   /* absolute */
        uid_t uid;
        gid_t gid;
        gid_t *additional_gids; /* Docker: gid first, then supplementary groups */
        size_t n_additional_gids;
        char *home;
        char *user; /* the user string as given (for USER=) */
};

/*
 * Build the process for image config `config` (the image's whole config document, as stored) with
 * overrides `o` (may be NULL), resolving users in the rootfs directory `rootfs_fd` (fd-relative, never
 * following a symlink out of it). Errors: "no command specified", "unable to find user X: no matching
 * entries in passwd file", "unable to find group G: no matching entries in group file", ids out of range.
 */
int process_spec_build(const json_t *config, const struct process_overrides *o, int rootfs_fd,
                       struct process_spec **ret, struct berr **err);
void process_spec_free(struct process_spec *p);
static inline void process_spec_freep(struct process_spec **p)
{
        process_spec_free(*p);
}
