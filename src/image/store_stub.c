/* SPDX-License-Identifier: Apache-2.0 */
/* Temporary stubs while the store is written. */
#include "image/store.h"

int store_open(const char *data_dir, const struct berth_config *cfg, struct image_store **ret,
               struct berr **err)
{
        (void)data_dir, (void)cfg, (void)ret;
        return berr_set(err, -ENOSYS, "image store not implemented yet");
}
void store_close(struct image_store *s)
{
        (void)s;
}
int store_pull(struct image_store *s, const char *ref, const struct pull_opts *o, json_t **ret_image,
               struct berr **err)
{
        (void)s, (void)ref, (void)o, (void)ret_image;
        return berr_set(err, -ENOSYS, "not implemented");
}
int store_list(struct image_store *s, json_t **ret, struct berr **err)
{
        (void)s, (void)ret;
        return berr_set(err, -ENOSYS, "not implemented");
}
int store_inspect(struct image_store *s, const char *ref, json_t **ret, struct berr **err)
{
        (void)s, (void)ref, (void)ret;
        return berr_set(err, -ENOSYS, "not implemented");
}
int store_remove(struct image_store *s, const char *ref, struct berr **err)
{
        (void)s, (void)ref;
        return berr_set(err, -ENOSYS, "not implemented");
}
int store_prune(struct image_store *s, uint64_t *a, uint64_t *b, struct berr **err)
{
        (void)s, (void)a, (void)b;
        return berr_set(err, -ENOSYS, "not implemented");
}
int store_export(struct image_store *s, const char *ref, const char *dest, struct berr **err)
{
        (void)s, (void)ref, (void)dest;
        return berr_set(err, -ENOSYS, "not implemented");
}
