/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The image store: a content-addressed cache shared by every image and container on a host.
 *
 * Layout under <data-dir>/image/ (0711: containers/<id>/merged must be reachable by container root; all
 * else 0700):
 *   blobs/sha256/<hex>      verified manifests, indexes and configs
 *   layers/<chain-hex>/     one unpacked layer: diff/ (overlay lower, host-shifted ids) + layer.json
 *   images.json             references -> image records (manifest digest, config digest, layers)
 *   containers/<id>/        rootfs of a container: upper/, work/, merged/, rootfs.json (its layers)
 *   tmp/                    staging; emptied on open (a crash leaves nothing half-committed elsewhere)
 *   unsynced/<chain-hex>    boot id of a layer committed before its data reached the disk (store_internal.h)
 *   locks/                  flock files: one per ChainID being unpacked, plus "store" for images.json
 * Every commit is a rename of a complete, verified staging directory or file.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "image/platform.h"
#include "lib/config.h"
#include "lib/err.h"

struct image_store;

/* Open (creating) the store under data_dir and recover from any crash. Caller owns *ret. */
int store_open(const char *data_dir, const struct berth_config *cfg, struct image_store **ret,
               struct berr **err);
void store_close(struct image_store *s);
static inline void store_closep(struct image_store **s)
{
        store_close(*s);
}

enum pull_event {
        PULL_RESOLVED,       /* digest, n_layers known */
        PULL_LAYER_CACHED,   /* layer already unpacked */
        PULL_LAYER_WAITING,  /* another process is unpacking it */
        PULL_LAYER_START,    /* download starting, total = compressed size */
        PULL_LAYER_PROGRESS, /* done = compressed bytes so far */
        PULL_LAYER_DONE,     /* verified and committed */
        PULL_DONE,
};

struct pull_progress {
        enum pull_event event;
        size_t layer; /* index into the manifest's layers */
        size_t n_layers;
        const char *digest; /* layer digest, or manifest digest for RESOLVED/DONE */
        uint64_t done;
        uint64_t total;
};

/* Called from pull worker threads, serialized by the store (never concurrently). */
typedef void (*pull_progress_fn)(void *userdata, const struct pull_progress *p);

struct pull_opts {
        const char *platform; /* "os/arch[/variant]" or NULL for the host's */
        const char *username; /* registry credentials or NULL */
        const char *password;
        pull_progress_fn progress;
        void *progress_userdata;
};

/* Pull ref into the store; *ret_image (may be NULL) receives the inspect document. */
int store_pull(struct image_store *s, const char *ref, const struct pull_opts *o, json_t **ret_image,
               struct berr **err);
/* Array of {repository, tag, digest, id, size, created, ...}, one per reference. */
int store_list(struct image_store *s, json_t **ret, struct berr **err);
/* Inspect document: reference, digest, media_type, platform, config_digest, config, layers[], sizes. */
int store_inspect(struct image_store *s, const char *ref, json_t **ret, struct berr **err);
/* Remove a reference (and the image record once no reference remains); layers stay until prune. */
int store_remove(struct image_store *s, const char *ref, struct berr **err);
/* Remove layers and blobs no image or container references. */
int store_prune(struct image_store *s, uint64_t *ret_layers, uint64_t *ret_bytes, struct berr **err);
/* Write the merged filesystem with the image's own ownership into a directory, or a tar if dest ends in .tar.
 */
int store_export(struct image_store *s, const char *ref, const char *dest, struct berr **err);

/*
 * Container root filesystems (the cell's API). Mounts an overlay of the image's layers (read-only lowers)
 * with a fresh upper dir at <store>/containers/<id>/merged, or with upper/work under `upper_base` when not
 * NULL (e.g. a quota-limited btrfs subvolume). The layers stay referenced until store_rootfs_remove().
 */
int store_rootfs_create(struct image_store *s, const char *ref, const char *container_id,
                        const char *upper_base, char **ret_rootfs, struct berr **err);
int store_rootfs_remove(struct image_store *s, const char *container_id, struct berr **err);
