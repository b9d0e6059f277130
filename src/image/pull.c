/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pulling an image into the store.
 *
 * resolve (manifest, index → platform manifest, config) → one worker thread per layer, up to
 * max_parallel_layers: blob stream → sha256 → inflate → DiffID → tar → staging dir → wait for the layer
 * below to be committed → fix implicit parents from the lowers → unsynced marker → rename to layers/<chain>.
 * A per-ChainID flock makes concurrent pulls of the same layer (any process) wait for one another instead
 * of unpacking twice; a shared "gc" lock keeps prune away until the image record names the layers.
 */
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image/decompress.h"
#include "image/manifest.h"
#include "image/reference.h"
#include "image/registry.h"
#include "image/resolve.h"
#include "image/store_internal.h"
#include "image/unpack.h"
#include "lib/fs.h"
#include "lib/json.h"
#include "lib/log.h"

#define MAX_INDEX_DEPTH 3

enum job_state { JOB_PENDING, JOB_COMMITTED, JOB_FAILED };

struct layer_job {
        size_t index;
        const struct descriptor *desc;
        enum layer_compression compression;
        char diff_id[DIGEST_STR_MAX];
        char chain_id[DIGEST_STR_MAX];
        char parent[DIGEST_STR_MAX]; /* "" for the base layer */
        enum job_state state;
        bool cached;
        uint64_t unpacked_size;
};

struct pull_ctx {
        struct image_store *s;
        struct registry_client *client;
        const struct pull_opts *o;
        struct layer_job *jobs;
        size_t n_jobs;
        pthread_mutex_t mu;
        pthread_cond_t cond;
        size_t next;
        bool failed;
        struct berr *err; /* the first failure */
        pthread_mutex_t progress_mu;
};

static void emit(struct pull_ctx *c, enum pull_event ev, size_t layer, const char *digest, uint64_t done,
                 uint64_t total)
{
        if (!c->o || !c->o->progress)
                return;
        struct pull_progress p = { .event = ev,
                                   .layer = layer,
                                   .n_layers = c->n_jobs,
                                   .digest = digest,
                                   .done = done,
                                   .total = total };
        pthread_mutex_lock(&c->progress_mu);
        c->o->progress(c->o->progress_userdata, &p);
        pthread_mutex_unlock(&c->progress_mu);
}

static void job_finish(struct pull_ctx *c, struct layer_job *j, int r, struct berr **err)
{
        pthread_mutex_lock(&c->mu);
        j->state = r < 0 ? JOB_FAILED : JOB_COMMITTED;
        if (r < 0 && !c->failed) {
                c->failed = true;
                c->err = err ? TAKE_PTR(*err) : NULL;
                if (!c->err)
                        berr_set_errno(&c->err, r, "layer %s", j->desc->digest);
        }
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->mu);
}

/* Block until the layer below j is committed; -ECANCELED when the pull failed meanwhile. */
static int wait_for_lower(struct pull_ctx *c, struct layer_job *j)
{
        if (j->index == 0)
                return 0;
        struct layer_job *lower = &c->jobs[j->index - 1];
        pthread_mutex_lock(&c->mu);
        while (lower->state == JOB_PENDING && !c->failed)
                pthread_cond_wait(&c->cond, &c->mu);
        int r = lower->state == JOB_COMMITTED ? 0 : -ECANCELED;
        pthread_mutex_unlock(&c->mu);
        return r;
}

struct blob_source {
        struct pull_ctx *c;
        struct registry_blob *blob;
        struct layer_job *j;
        uint64_t last_report;
};

static ssize_t blob_source_read(void *userdata, const void **ret_buf, struct berr **err)
{
        struct blob_source *b = userdata;
        if (__atomic_load_n(&b->c->failed, __ATOMIC_RELAXED))
                return berr_set(err, -ECANCELED, "cancelled");
        ssize_t n = registry_blob_read(b->blob, ret_buf, err);
        uint64_t off = registry_blob_offset(b->blob);
        if (n >= 0 && (off - b->last_report >= (1u << 20) || n == 0)) {
                b->last_report = off;
                emit(b->c, PULL_LAYER_PROGRESS, b->j->index, b->j->desc->digest, off,
                     (uint64_t)b->j->desc->size);
        }
        return n;
}

static ssize_t decompressor_source_read(void *userdata, const void **ret_buf, struct berr **err)
{
        return decompressor_read(userdata, ret_buf, err);
}

static int open_lowers(struct pull_ctx *c, struct layer_job *j, int **ret_fds, size_t *ret_n,
                       struct berr **err)
{
        size_t n = j->index;
        int *fds = xcalloc(n ? n : 1, sizeof(int));
        for (size_t i = 0; i < n; i++) {
                /* lower_dfds[0] is the layer just below. */
                _cleanup_free_ char *p =
                    xasprintf("%s/%s", digest_hex(c->jobs[j->index - 1 - i].chain_id), STORE_LAYER_DIFF);
                fds[i] = openat(c->s->layers_fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fds[i] < 0) {
                        int r = -errno;
                        for (size_t k = 0; k < i; k++)
                                close(fds[k]);
                        free(fds);
                        return berr_set_errno(err, r, "open lower layer %s",
                                              c->jobs[j->index - 1 - i].chain_id);
                }
        }
        *ret_fds = fds;
        *ret_n = n;
        return 0;
}

static void close_fds(int *fds, size_t n)
{
        for (size_t i = 0; i < n; i++)
                close(fds[i]);
        free(fds);
}

/* Download, verify, unpack and commit one layer that is not in the store yet. Holds the layer's lock. */
static int layer_fetch_commit(struct pull_ctx *c, struct layer_job *j, struct berr **err)
{
        struct image_store *s = c->s;
        _cleanup_free_ char *staging = NULL, *text = NULL;
        _cleanup_close_ int sfd = -1, dfd = -1;
        _cleanup_(registry_blob_closep) struct registry_blob *blob = NULL;
        _cleanup_(decompressor_freep) struct decompressor *dc = NULL;
        _cleanup_json_ json_t *meta = NULL;
        struct blob_source bs = { .c = c, .j = j };
        int r = store_staging_new(s, "layer", &staging, &sfd, err);
        if (r < 0)
                return r;
        if (mkdirat(sfd, STORE_LAYER_DIFF, 0755) < 0 ||
            (dfd = openat(sfd, STORE_LAYER_DIFF, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
                r = berr_set_errno(err, -errno, "create layer directory");
                goto out;
        }
        emit(c, PULL_LAYER_START, j->index, j->desc->digest, 0, (uint64_t)j->desc->size);
        if ((r = registry_blob_open(c->client, j->desc->digest, j->desc->size, &blob, err)) < 0)
                goto out;
        bs.blob = blob;
        if ((r = decompressor_new(j->compression, blob_source_read, &bs, &dc, err)) < 0)
                goto out;
        struct unpack_opts uo = { .max_bytes = s->cfg ? s->cfg->max_layer_bytes : 0,
                                  .max_entries = s->cfg ? s->cfg->max_layer_entries : 0,
                                  .shift_ids = true };
        struct unpack_result res = { 0 };
        r = unpack_layer(dfd, decompressor_source_read, dc, &uo, &res, err);
        if (r < 0) {
                unpack_result_done(&res);
                /* Corrupt data usually means the blob is not what the manifest promised: read the rest
                 * (bounded by its size) so the error names the real cause, a digest mismatch. */
                const void *buf;
                ssize_t n;
                _cleanup_berr_ struct berr *derr = NULL;
                if (r != -ECANCELED)
                        while ((n = registry_blob_read(blob, &buf, &derr)) > 0)
                                ;
                else
                        n = 0;
                if (n == -EBADMSG && err) {
                        berr_free(*err);
                        *err = TAKE_PTR(derr);
                        r = -EBADMSG;
                }
                goto out;
        }
        if (strcmp(res.diff_id, j->diff_id) != 0) {
                r = berr_set(err, -EBADMSG,
                             "DiffID mismatch: the image config says %s, the layer's content is %s",
                             j->diff_id, res.diff_id);
                unpack_result_done(&res);
                goto out;
        }
        j->unpacked_size = res.content_bytes;
        /* Implicit parents copy their metadata from the lowers, which must be committed first. */
        if ((r = wait_for_lower(c, j)) < 0) {
                unpack_result_done(&res);
                berr_set(err, r, "cancelled");
                goto out;
        }
        if (res.n_implicit_dirs > 0) {
                int *lfds = NULL;
                size_t nl = 0;
                if ((r = open_lowers(c, j, &lfds, &nl, err)) == 0) {
                        r = unpack_fixup_implicit_dirs(dfd, res.implicit_dirs, res.n_implicit_dirs, lfds, nl,
                                                       err);
                        close_fds(lfds, nl);
                }
        }
        unpack_result_done(&res);
        if (r < 0)
                goto out;
        meta =
            json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "chain_id", j->chain_id, "diff_id", j->diff_id,
                      "digest", j->desc->digest, "media_type", j->desc->media_type ? j->desc->media_type : "",
                      "size", (json_int_t)j->desc->size, "unpacked_size", (json_int_t)j->unpacked_size);
        if (j->parent[0])
                json_object_set_new(meta, "parent", json_string(j->parent));
        text = json_dump_str(meta, true);
        if ((r = fs_write_file_atomic_at(sfd, STORE_LAYER_META, text, strlen(text), 0600)) < 0) {
                berr_set_errno(err, r, "write layer metadata");
                goto out;
        }
        /* No wait for the disk here: the marker lets a later open settle durability (store_internal.h). */
        if ((r = store_layer_mark_unsynced(s, j->chain_id, err)) < 0)
                goto out;
        if (renameat(s->tmp_fd, staging, s->layers_fd, digest_hex(j->chain_id)) < 0) {
                r = berr_set_errno(err, -errno, "commit layer %s", j->chain_id);
                goto out;
        }
        emit(c, PULL_LAYER_DONE, j->index, j->desc->digest, (uint64_t)j->desc->size, (uint64_t)j->desc->size);
        return 0;
out:
        fs_rm_rf_at(s->tmp_fd, staging);
        return r;
}

static int layer_process(struct pull_ctx *c, struct layer_job *j, struct berr **err)
{
        struct image_store *s = c->s;
        if (store_layer_exists(s, j->chain_id)) {
                j->cached = true;
                emit(c, PULL_LAYER_CACHED, j->index, j->desc->digest, (uint64_t)j->desc->size,
                     (uint64_t)j->desc->size);
                return 0;
        }
        _cleanup_free_ char *lockname = xasprintf("layer-%s", digest_hex(j->chain_id));
        _cleanup_close_ int lk = store_lock(s, lockname, true, false);
        if (lk == -EWOULDBLOCK) {
                emit(c, PULL_LAYER_WAITING, j->index, j->desc->digest, 0, (uint64_t)j->desc->size);
                lk = store_lock(s, lockname, true, true);
        }
        if (lk < 0)
                return berr_set_errno(err, lk, "lock layer %s", j->chain_id);
        if (store_layer_exists(s, j->chain_id)) { /* another pull committed it while we waited */
                j->cached = true;
                emit(c, PULL_LAYER_CACHED, j->index, j->desc->digest, (uint64_t)j->desc->size,
                     (uint64_t)j->desc->size);
                return 0;
        }
        int r = layer_fetch_commit(c, j, err);
        if (r < 0)
                return berr_prefix(err, r, "layer %s", j->desc->digest);
        return 0;
}

static void *layer_worker(void *arg)
{
        struct pull_ctx *c = arg;
        for (;;) {
                pthread_mutex_lock(&c->mu);
                if (c->failed || c->next >= c->n_jobs) {
                        pthread_mutex_unlock(&c->mu);
                        return NULL;
                }
                struct layer_job *j = &c->jobs[c->next++];
                pthread_mutex_unlock(&c->mu);
                struct berr *err = NULL;
                int r = layer_process(c, j, &err);
                job_finish(c, j, r, &err);
                berr_free(err);
        }
}

static int fetch_layers(struct pull_ctx *c, struct berr **err)
{
        int workers = c->s->cfg && c->s->cfg->max_parallel_layers > 0 ? c->s->cfg->max_parallel_layers : 4;
        workers = (int)MIN((size_t)workers, c->n_jobs);
        pthread_t th[64];
        int started = 0;
        for (int i = 0; i < workers && i < 64; i++) {
                if (pthread_create(&th[i], NULL, layer_worker, c) != 0)
                        break;
                started++;
        }
        if (started == 0 && c->n_jobs > 0)
                layer_worker(c);
        for (int i = 0; i < started; i++)
                pthread_join(th[i], NULL);
        if (c->failed) {
                if (err && !*err)
                        *err = TAKE_PTR(c->err);
                return err && *err ? (*err)->code : -EIO;
        }
        return 0;
}

static char *now_rfc3339(void)
{
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        char buf[32];
        strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
        return xstrdup(buf);
}

/*
 * Fetch the manifest for `ref`, descending into indexes for `want`; returns the chosen manifest. Indexes
 * passed on the way are kept in the store when s is not NULL.
 */
static int resolve_manifest(struct registry_client *client, const struct image_ref *ref,
                            const struct image_platform *want, bool platform_explicit,
                            struct image_doc **ret_doc, char ret_digest[static DIGEST_STR_MAX],
                            char ret_index[static DIGEST_STR_MAX], char **ret_body, size_t *ret_len,
                            struct image_store *s, struct berr **err)
{
        _cleanup_free_ char *body = NULL, *ctype = NULL;
        size_t len = 0;
        char digest[DIGEST_STR_MAX];
        int r = registry_get_manifest(client, image_ref_object(ref), ref->digest, -1, &body, &len, &ctype,
                                      digest, err);
        if (r < 0)
                return r;
        ret_index[0] = '\0';
        for (int depth = 0;; depth++) {
                _cleanup_(image_doc_freep) struct image_doc *doc = NULL;
                if ((r = image_doc_parse(body, len, ctype, &doc, err)) < 0)
                        return berr_prefix(err, r, "manifest %s", digest);
                if (doc->kind == DOC_MANIFEST) {
                        *ret_doc = TAKE_PTR(doc);
                        memcpy(ret_digest, digest, DIGEST_STR_MAX);
                        *ret_body = TAKE_PTR(body);
                        *ret_len = len;
                        return 0;
                }
                if (depth >= MAX_INDEX_DEPTH)
                        return berr_set(err, -ELOOP, "image indexes nested more than %d deep",
                                        MAX_INDEX_DEPTH);
                if (s && (r = store_blob_write(s, digest, body, len, err)) < 0)
                        return r;
                if (depth == 0)
                        memcpy(ret_index, digest, DIGEST_STR_MAX);
                const struct descriptor *d = NULL;
                if ((r = image_index_select(doc, want, &d, err)) < 0)
                        return r;
                (void)platform_explicit;
                _cleanup_free_ char *child = NULL, *cctype = NULL;
                char cdigest[DIGEST_STR_MAX];
                if ((r = registry_get_manifest(client, d->digest, d->digest, d->size, &child, &len, &cctype,
                                               cdigest, err)) < 0)
                        return r;
                free(body);
                free(ctype);
                body = TAKE_PTR(child);
                ctype = TAKE_PTR(cctype);
                memcpy(digest, cdigest, DIGEST_STR_MAX);
        }
}

/* If a digest-pinned image is complete in the store, no registry round trip is needed. */
static int pull_cached_by_digest(struct image_store *s, const struct image_ref *ref, json_t **ret)
{
        if (!ref->digest)
                return -ENOENT;
        _cleanup_close_ int lk = -1;
        _cleanup_json_ json_t *doc = NULL;
        if (store_images_open(s, false, &lk, &doc, NULL) < 0)
                return -ENOENT;
        json_t *img = json_object_get(json_object_get(doc, "images"), ref->digest);
        if (!img)
                return -ENOENT;
        size_t i;
        json_t *l;
        json_array_foreach (json_object_get(img, "layers"), i, l) {
                if (!store_layer_exists(s, json_string_value(json_object_get(l, "chain_id"))))
                        return -ENOENT;
        }
        *ret = json_incref(img);
        return 0;
}

static int record_image(struct image_store *s, const struct image_ref *ref, json_t *record, struct berr **err)
{
        _cleanup_close_ int lk = -1;
        _cleanup_json_ json_t *doc = NULL;
        int r = store_images_open(s, true, &lk, &doc, err);
        if (r < 0)
                return r;
        const char *digest = json_string_value(json_object_get(record, "digest"));
        json_t *images = json_object_get(doc, "images");
        bool changed = false;
        /* A re-pull of an unchanged image keeps its record (and its first "pulled" time): no write, no fsync.
         */
        json_t *old = json_object_get(images, digest);
        if (old) {
                _cleanup_json_ json_t *a = json_deep_copy(old), *b = json_deep_copy(record);
                json_object_del(a, "pulled");
                json_object_del(b, "pulled");
                if (!json_equal(a, b)) {
                        json_object_set(images, digest, record);
                        changed = true;
                }
        } else {
                json_object_set(images, digest, record);
                changed = true;
        }
        _cleanup_free_ char *name = image_ref_name(ref);
        json_t *refs = json_object_get(doc, "refs");
        _cleanup_free_ char *tk = ref->tag ? xasprintf("%s:%s", name, ref->tag) : NULL;
        _cleanup_free_ char *dk = xasprintf("%s@%s", name, digest);
        const char *keys[] = { tk, dk };
        for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
                const char *cur = keys[i] ? json_string_value(json_object_get(refs, keys[i])) : NULL;
                if (!keys[i] || (cur && strcmp(cur, digest) == 0))
                        continue;
                json_object_set_new(refs, keys[i], json_string(digest));
                changed = true;
        }
        return changed ? store_images_write(s, doc, err) : 0;
}

int store_pull(struct image_store *s, const char *refstr, const struct pull_opts *o, json_t **ret_image,
               struct berr **err)
{
        _cleanup_(image_ref_freep) struct image_ref *ref = NULL;
        int r = image_ref_parse(refstr, &ref, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *full = image_ref_string(ref);
        struct image_platform want;
        if (o && o->platform) {
                if ((r = platform_parse(o->platform, &want, err)) < 0)
                        return r;
        } else
                platform_host(&want);

        /* Shared gc lock: prune must not remove layers between their commit and the image record. */
        _cleanup_close_ int gc = store_lock(s, "gc", false, true);
        if (gc < 0)
                return berr_set_errno(err, gc, "lock image store");

        json_t *cached = NULL;
        if (pull_cached_by_digest(s, ref, &cached) == 0) {
                struct pull_progress p = { .event = PULL_RESOLVED, .digest = ref->digest };
                if (o && o->progress)
                        o->progress(o->progress_userdata, &p);
                r = record_image(s, ref, cached, err);
                if (r == 0 && ret_image) {
                        *ret_image = json_deep_copy(cached);
                        json_object_set_new(*ret_image, "reference", json_string(full));
                }
                json_decref(cached);
                return r;
        }

        struct registry_opts ro = { .config = s->cfg,
                                    .username = o ? o->username : NULL,
                                    .password = o ? o->password : NULL };
        _cleanup_(registry_client_freep) struct registry_client *client = NULL;
        if ((r = registry_client_new(ref, &ro, &client, err)) < 0)
                return berr_prefix(err, r, "pull %s", full);

        _cleanup_(image_doc_freep) struct image_doc *m = NULL;
        _cleanup_free_ char *mbody = NULL;
        size_t mlen = 0;
        char mdigest[DIGEST_STR_MAX], idigest[DIGEST_STR_MAX];
        r = resolve_manifest(client, ref, &want, o && o->platform, &m, mdigest, idigest, &mbody, &mlen, s,
                             err);
        if (r < 0)
                return berr_prefix(err, r, "pull %s", full);
        if ((r = store_blob_write(s, mdigest, mbody, mlen, err)) < 0)
                return berr_prefix(err, r, "pull %s", full);

        /* The config: from the store when we have it, else from the registry (verified either way). */
        _cleanup_free_ char *cbody = NULL;
        size_t clen = 0;
        if (m->config.size > MANIFEST_MAX_BYTES)
                return berr_set(err, -EFBIG, "pull %s: image config is %lld bytes, more than the 4 MiB limit",
                                full, (long long)m->config.size);
        if (store_blob_read(s, m->config.digest, MANIFEST_MAX_BYTES, &cbody, &clen) < 0 ||
            (int64_t)clen != m->config.size) {
                free(TAKE_PTR(cbody));
                if ((r = registry_get_blob(client, m->config.digest, m->config.size, MANIFEST_MAX_BYTES,
                                           &cbody, &clen, err)) < 0)
                        return berr_prefix(err, r, "pull %s: config %s", full, m->config.digest);
                if ((r = store_blob_write(s, m->config.digest, cbody, clen, err)) < 0)
                        return berr_prefix(err, r, "pull %s", full);
        }
        _cleanup_(image_config_freep) struct image_config *cfg = NULL;
        if ((r = image_config_parse(cbody, clen, &cfg, err)) < 0)
                return berr_prefix(err, r, "pull %s: config %s", full, m->config.digest);
        if (cfg->n_diff_ids != m->n_layers)
                return berr_set(err, -EBADMSG,
                                "pull %s: the manifest lists %zu layers but the config has %zu diff_ids",
                                full, m->n_layers, cfg->n_diff_ids);
        if (o && o->platform && cfg->platform.arch[0]) {
                struct image_platform have = cfg->platform;
                platform_normalize(&have);
                if (platform_match_rank(&want, &have) < 0) {
                        char a[100], b[100];
                        return berr_set(err, -ENOENT, "pull %s: the image is for %s, not %s", full,
                                        platform_format(&have, a, sizeof(a)),
                                        platform_format(&want, b, sizeof(b)));
                }
        }

        _cleanup_free_ char *name = NULL, *pulled = NULL;
        struct pull_ctx c = { .s = s, .client = client, .o = o, .n_jobs = m->n_layers };
        c.jobs = xcalloc(m->n_layers ? m->n_layers : 1, sizeof(*c.jobs));
        pthread_mutex_init(&c.mu, NULL);
        pthread_cond_init(&c.cond, NULL);
        pthread_mutex_init(&c.progress_mu, NULL);
        for (size_t i = 0; i < m->n_layers; i++) {
                struct layer_job *j = &c.jobs[i];
                j->index = i;
                j->desc = &m->layers[i];
                if ((r = layer_media_compression(j->desc->media_type, &j->compression)) < 0) {
                        r = berr_set(err, r, "pull %s: layer %s has unsupported media type %s", full,
                                     j->desc->digest, j->desc->media_type);
                        goto out;
                }
                snprintf(j->diff_id, sizeof(j->diff_id), "%s", cfg->diff_ids[i]);
                if (i > 0)
                        memcpy(j->parent, c.jobs[i - 1].chain_id, DIGEST_STR_MAX);
                digest_chain_id(i > 0 ? j->parent : NULL, j->diff_id, j->chain_id);
        }
        emit(&c, PULL_RESOLVED, 0, mdigest, 0, 0);
        if ((r = fetch_layers(&c, err)) < 0) {
                berr_prefix(err, r, "pull %s", full);
                goto out;
        }

        json_t *layers = json_array();
        int64_t size = 0, unpacked = 0;
        for (size_t i = 0; i < m->n_layers; i++) {
                struct layer_job *j = &c.jobs[i];
                uint64_t us = j->unpacked_size;
                if (j->cached) {
                        _cleanup_free_ char *p =
                            xasprintf("%s/%s", digest_hex(j->chain_id), STORE_LAYER_META);
                        _cleanup_free_ char *buf = NULL;
                        size_t blen = 0;
                        _cleanup_json_ json_t *meta = NULL;
                        if (fs_read_file_at(s->layers_fd, p, 1 << 20, &buf, &blen) == 0 &&
                            json_parse_buf(buf, blen, &meta, NULL) == 0)
                                us = (uint64_t)json_integer_value(json_object_get(meta, "unpacked_size"));
                }
                json_array_append_new(layers,
                                      json_pack("{s:s, s:s, s:I, s:s, s:s, s:I}", "digest", j->desc->digest,
                                                "media_type", j->desc->media_type ? j->desc->media_type : "",
                                                "size", (json_int_t)j->desc->size, "diff_id", j->diff_id,
                                                "chain_id", j->chain_id, "unpacked_size", (json_int_t)us));
                size += j->desc->size;
                unpacked += (int64_t)us;
        }
        if (s->cfg && (uint64_t)unpacked > s->cfg->max_image_bytes) {
                json_decref(layers);
                r = berr_set(err, -EFBIG,
                             "pull %s: the image unpacks to %lld bytes, over the %llu-byte limit", full,
                             (long long)unpacked, (unsigned long long)s->cfg->max_image_bytes);
                goto out;
        }
        char plat[100];
        struct image_platform have = cfg->platform;
        platform_normalize(&have);
        name = image_ref_name(ref);
        pulled = now_rfc3339();
        const char *created = json_string_value(json_object_get(cfg->json, "created"));
        json_t *record = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:s, s:s?}", "digest", mdigest, "repository", name,
            "media_type", m->media_type ? m->media_type : "", "config_digest", m->config.digest, "platform",
            platform_format(&have, plat, sizeof(plat)), "layers", layers, "size", (json_int_t)size,
            "unpacked_size", (json_int_t)unpacked, "pulled", pulled, "created", created);
        if (idigest[0])
                json_object_set_new(record, "index_digest", json_string(idigest));
        r = record_image(s, ref, record, err);
        if (r == 0) {
                emit(&c, PULL_DONE, 0, mdigest, 0, 0);
                if (ret_image) {
                        json_object_set_new(record, "reference", json_string(full));
                        *ret_image = json_incref(record);
                }
        }
        json_decref(record);
out:
        pthread_mutex_destroy(&c.mu);
        pthread_cond_destroy(&c.cond);
        pthread_mutex_destroy(&c.progress_mu);
        berr_free(c.err);
        free(c.jobs);
        return r;
}

int image_resolve(const struct berth_config *bcfg, const char *refstr, const char *username,
                  const char *password, const char *platform, struct image_resolved *ret, struct berr **err)
{
        *ret = (struct image_resolved){ 0 };
        _cleanup_(image_ref_freep) struct image_ref *ref = NULL;
        int r = image_ref_parse(refstr, &ref, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *full = image_ref_string(ref);
        struct image_platform want;
        if (platform) {
                if ((r = platform_parse(platform, &want, err)) < 0)
                        return r;
        } else
                platform_host(&want);
        struct registry_opts ro = { .config = bcfg, .username = username, .password = password };
        _cleanup_(registry_client_freep) struct registry_client *client = NULL;
        if ((r = registry_client_new(ref, &ro, &client, err)) < 0)
                return berr_prefix(err, r, "%s", full);
        _cleanup_(image_doc_freep) struct image_doc *m = NULL;
        _cleanup_free_ char *mbody = NULL;
        size_t mlen = 0;
        char mdigest[DIGEST_STR_MAX], idigest[DIGEST_STR_MAX];
        if ((r = resolve_manifest(client, ref, &want, platform != NULL, &m, mdigest, idigest, &mbody, &mlen,
                                  NULL, err)) < 0)
                return r;
        if (m->config.size > MANIFEST_MAX_BYTES)
                return berr_set(err, -ENOTSUP, "%s: image config is %lld bytes, more than the 4 MiB limit",
                                full, (long long)m->config.size);
        _cleanup_free_ char *cbody = NULL;
        size_t clen = 0;
        if ((r = registry_get_blob(client, m->config.digest, m->config.size, MANIFEST_MAX_BYTES, &cbody,
                                   &clen, err)) < 0)
                return berr_prefix(err, r, "%s: config %s", full, m->config.digest);
        _cleanup_(image_config_freep) struct image_config *cfg = NULL;
        if ((r = image_config_parse(cbody, clen, &cfg, err)) < 0)
                return berr_prefix(err, r == -EINVAL || r == -EBADMSG ? -ENOTSUP : r, "%s: config %s", full,
                                   m->config.digest);
        if (cfg->n_diff_ids != m->n_layers)
                return berr_set(err, -ENOTSUP,
                                "%s: the manifest lists %zu layers but the config has %zu diff_ids", full,
                                m->n_layers, cfg->n_diff_ids);
        for (size_t i = 0; i < m->n_layers; i++) {
                enum layer_compression comp;
                if (layer_media_compression(m->layers[i].media_type, &comp) < 0)
                        return berr_set(err, -ENOTSUP, "%s: layer %s has unsupported media type %s", full,
                                        m->layers[i].digest, m->layers[i].media_type);
        }
        _cleanup_free_ char *name = image_ref_name(ref);
        json_t *c = json_object_get(cfg->json, "config");
        ret->pinned = xasprintf("%s@%s", name, mdigest);
        ret->digest = xstrdup(mdigest);
        ret->config = json_is_object(c) ? json_deep_copy(c) : json_object();
        return 0;
}

void image_resolved_free(struct image_resolved *r)
{
        if (!r)
                return;
        free(r->pinned);
        free(r->digest);
        json_decref(r->config);
        *r = (struct image_resolved){ 0 };
}
