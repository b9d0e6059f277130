/* SPDX-License-Identifier: Apache-2.0 */
/* What store.c, pull.c, export.c and rootfs.c share. Not for other layers. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "image/store.h"
#include "lib/digest.h"
#include "lib/strv.h"

#define STORE_DIR         "image"
#define STORE_IMAGES_FILE "images.json"
#define STORE_IMAGES_MAX  (64 * 1024 * 1024)
#define STORE_LAYER_META  "layer.json"
#define STORE_LAYER_DIFF  "diff"

struct image_store {
        char *root; /* <data-dir>/image */
        int root_fd;
        int layers_fd, blobs_fd, tmp_fd, locks_fd, containers_fd, unsynced_fd;
        const struct berth_config *cfg;
};

/* flock helpers: an fd holding the lock, or a negative errno. `wait` false → -EWOULDBLOCK when held. */
int store_lock(struct image_store *s, const char *name, bool exclusive, bool wait);

/* images.json: read (an empty document when absent) and replace atomically; callers hold the "store" lock. */
int store_images_read(struct image_store *s, json_t **ret, struct berr **err);
int store_images_write(struct image_store *s, json_t *doc, struct berr **err);
/* Take the "store" lock (shared or exclusive) and read images.json; *ret_lock holds the lock until closed. */
int store_images_open(struct image_store *s, bool exclusive, int *ret_lock, json_t **ret, struct berr **err);

/* Find the image record a user's reference names: "name:tag", "name@digest", "sha256:<manifest|config>",
 * or a unique prefix of at least 12 hex digits of either. Returns a new reference to the record. */
int store_images_find(json_t *doc, const char *ref, json_t **ret_image, char **ret_key, struct berr **err);

/* Verified blobs (manifests, configs). */
int store_blob_write(struct image_store *s, const char *digest, const void *data, size_t len,
                     struct berr **err);
int store_blob_read(struct image_store *s, const char *digest, size_t max, char **ret, size_t *ret_len);
bool store_layer_exists(struct image_store *s, const char *chain_id);
/*
 * Deferred durability. A layer is committed without waiting for the disk: just before its rename, a marker
 * unsynced/<chain-hex> holding the kernel's boot id is created (the journal orders it before the rename).
 * store_open() drops layers whose marker is from an earlier boot (a power loss may have torn them; they are
 * pulled again) and, once markers of this boot are older than the kernel's writeback interval, makes them
 * durable with one syncfs and removes the markers.
 */
int store_layer_mark_unsynced(struct image_store *s, const char *chain_id, struct berr **err);

/* A staging directory in tmp/, locked (flock) by this process as long as *ret_fd is open. */
int store_staging_new(struct image_store *s, const char *prefix, char **ret_name, int *ret_fd,
                      struct berr **err);

/* Paths of an image's layer diff dirs, top (last) layer first; NULL-terminated, caller frees with strv_free.
 */
int store_image_lowers(struct image_store *s, json_t *image, char ***ret, size_t *ret_n, struct berr **err);
/* Look up `ref` (any form store_images_find accepts) and list its layer dirs, under the store lock. */
int store_image_resolve(struct image_store *s, const char *ref, json_t **ret_image, char ***ret_lowers,
                        size_t *ret_n, struct berr **err);

/*
 * Mount an overlay at `target`: lowers[0] is the TOP layer. With upper == NULL the mount is read-only
 * (a single lower gets an empty second lower, as overlayfs wants two without an upper). Uses the new
 * mount API with "lowerdir+" (no page-size limit on the layer list) and falls back to mount(2).
 */
int rootfs_mount_overlay(char *const *lowers, size_t n, const char *empty_dir, const char *upper,
                         const char *work, const char *target, struct berr **err);
