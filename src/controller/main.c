/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `berth controller`: configuration, the first start (admin, org/space default, the shared domain, feature
 * flags), the API server and the scheduler, until SIGINT/SIGTERM (docs/PLATFORM.md "Processes").
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "controller/controller.h"
#include "controller/ctl.h"
#include "lib/fs.h"
#include "lib/json.h"
#include "lib/log.h"

#define CTL_DEFAULT_LISTEN  "127.0.0.1:9022"
#define CTL_DEFAULT_DOMAIN  "apps.localhost"
#define CTL_DEFAULT_TTL_S   43200
#define CTL_DEFAULT_SYNC_MS 1000
/* Secret files are tiny; anything larger is not ours. */
#define CTL_SECRET_FILE_MAX 4096
#define CTL_EXIT_USAGE      2

struct ctl_opts {
        char *listen, *external_url, *domain, *database, *key_file, *tls_cert, *tls_key, *token_file;
        unsigned token_ttl_s, sync_interval_ms;
};

static void ctl_opts_free(struct ctl_opts *o)
{
        free(o->listen), free(o->external_url), free(o->domain), free(o->database), free(o->key_file);
        free(o->tls_cert), free(o->tls_key), free(o->token_file);
}

static const char usage_text[] =
    "usage: berth [--data-dir D] [--config F] controller [--listen HOST:PORT] [--external-url URL]\n"
    "             [--domain DOMAIN] [--internal-token-file FILE]";

/* The controller section of the config file: known keys only, right types. */
static int apply_config(const json_t *sec, struct ctl_opts *o, struct berr **err)
{
        if (!sec)
                return 0;
        if (!json_is_object(sec))
                return berr_set(err, -EINVAL, "config: controller must be a mapping");
        static const char *const str_keys[] = { "listen",   "external_url",        "domain",
                                                "database", "encryption_key_file", "tls_cert",
                                                "tls_key" };
        char **str_dst[] = { &o->listen,   &o->external_url, &o->domain, &o->database,
                             &o->key_file, &o->tls_cert,     &o->tls_key };
        const char *key;
        json_t *v;
        json_object_foreach ((json_t *)sec, key, v) {
                bool known = false;
                for (size_t i = 0; i < ARRAY_SIZE(str_keys); i++) {
                        if (strcmp(key, str_keys[i]) != 0)
                                continue;
                        if (!json_is_string(v) || !*json_string_value(v))
                                return berr_set(err, -EINVAL,
                                                "config: controller.%s must be a non-empty string", key);
                        free(*str_dst[i]);
                        *str_dst[i] = xstrdup(json_string_value(v));
                        known = true;
                }
                if (strcmp(key, "token_ttl_seconds") == 0 || strcmp(key, "sync_interval_ms") == 0) {
                        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
                            json_integer_value(v) > 100000000)
                                return berr_set(err, -EINVAL,
                                                "config: controller.%s must be a positive integer", key);
                        if (key[0] == 't')
                                o->token_ttl_s = (unsigned)json_integer_value(v);
                        else
                                o->sync_interval_ms = (unsigned)json_integer_value(v);
                        known = true;
                }
                if (!known)
                        return berr_set(err, -EINVAL, "config: unknown key controller.%s", key);
        }
        if (!o->tls_cert != !o->tls_key)
                return berr_set(err, -EINVAL, "config: controller.tls_cert and tls_key go together");
        return 0;
}

/* Read a small secret file; -ENOENT when missing. Whitespace at the end is dropped. Caller frees. */
static int read_secret(const char *path, char **ret, size_t *ret_len, struct berr **err)
{
        char *data = NULL;
        size_t len = 0;
        int r = fs_read_file_at(AT_FDCWD, path, CTL_SECRET_FILE_MAX, &data, &len);
        if (r == -ENOENT)
                return r;
        if (r < 0)
                return berr_set_errno(err, r, "read %s", path);
        *ret = data;
        *ret_len = len;
        return 0;
}

static int load_internal_token(struct ctl *c, const char *path, struct berr **err)
{
        char *t = NULL;
        size_t n = 0;
        int r = read_secret(path, &t, &n, err);
        if (r == -ENOENT) {
                char hex[65];
                fs_random_hex(hex, 32);
                if ((r = fs_write_file_atomic_at(AT_FDCWD, path, hex, 64, 0600)) < 0)
                        return berr_set_errno(err, r, "create internal token %s", path);
                log_info("created the internal token in %s", path);
                c->internal_token = xstrdup(hex);
                return 0;
        }
        if (r < 0)
                return r;
        while (n > 0 && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' ' || t[n - 1] == '\t'))
                t[--n] = '\0';
        if (n == 0) {
                free(t);
                return berr_set(err, -EINVAL, "internal token file %s is empty", path);
        }
        c->internal_token = t;
        return 0;
}

static int load_key(struct ctl *c, const char *path, struct berr **err)
{
        _cleanup_free_ char *k = NULL;
        size_t n = 0;
        int r = fs_read_file_at(AT_FDCWD, path, CTL_SECRET_FILE_MAX, &k, &n);
        if (r == -ENOENT) {
                randombytes_buf(c->enc_key, sizeof(c->enc_key));
                if ((r = fs_write_file_atomic_at(AT_FDCWD, path, c->enc_key, sizeof(c->enc_key), 0600)) < 0)
                        return berr_set_errno(err, r, "create encryption key %s", path);
                return 0;
        }
        if (r < 0)
                return berr_set_errno(err, r, "read encryption key %s", path);
        if (n != sizeof(c->enc_key))
                return berr_set(err, -EINVAL, "encryption key %s must be exactly 32 bytes (has %zu)", path,
                                n);
        memcpy(c->enc_key, k, sizeof(c->enc_key));
        sodium_memzero(k, n);
        return 0;
}

static bool meta_has(struct ctl *c, const char *key)
{
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, "SELECT 1 FROM meta WHERE key = ?", NULL);
        if (!s)
                return false;
        sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
        return sqlite3_step(s) == SQLITE_ROW;
}

/* First start: admin with a random password (in <data-dir>/admin-password), org and space "default". */
static int bootstrap_first(struct ctl *c, struct berr **err)
{
        int r;
        unsigned char rnd[18];
        char pw[sodium_base64_ENCODED_LEN(18, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
        char guid[37], org[37], space[37];
        randombytes_buf(rnd, sizeof(rnd));
        sodium_bin2base64(pw, sizeof(pw), rnd, sizeof(rnd), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        if ((r = auth_user_create(c, "admin", pw, true, guid, err)) < 0 ||
            (r = tenancy_org_create(c, "default", org, err)) < 0 ||
            (r = tenancy_space_create(c, org, "default", space, err)) < 0)
                return r;
        _cleanup_free_ char *path = xasprintf("%s/admin-password", c->data_dir);
        _cleanup_free_ char *text = xasprintf("%s\n", pw);
        sodium_memzero(pw, sizeof(pw));
        if ((r = fs_write_file_atomic_at(AT_FDCWD, path, text, strlen(text), 0600)) < 0)
                return berr_set_errno(err, r, "write %s", path);
        sodium_memzero(text, strlen(text));
        if ((r = db_exec(c, "INSERT INTO meta (key, value) VALUES ('bootstrapped', '1')", err)) < 0)
                return r;
        log_info("first start: user admin created; admin password in %s", path);
        return 0;
}

static int bootstrap(struct ctl *c, struct berr **err)
{
        int r;
        db_lock(c);
        if ((r = db_begin(c, err)) < 0)
                goto out;
        if (!meta_has(c, "bootstrapped") && (r = bootstrap_first(c, err)) < 0)
                goto fail;
        /* The configured domain exists from the first start, and after a change of the configuration. */
        char dguid[37];
        r = domain_create(c, c->domain, false, dguid, err);
        if (r == -EEXIST) {
                berr_freep(err);
                r = 0;
        }
        if (r < 0 || (r = flags_bootstrap(c, err)) < 0)
                goto fail;
        r = db_commit(c, err);
        goto out;
fail:
        db_rollback(c);
out:
        db_unlock(c);
        return r;
}

static struct http_server *ctl_server;

static void *signal_thread(void *arg)
{
        struct ctl *c = arg;
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        int sig = 0;
        while (sigwait(&set, &sig) != 0)
                ;
        log_info("controller: %s, stopping", strsignal(sig));
        c->stopping = 1;
        /* Long polls (route watches, log follows) wait on rt_cond or check stopping: let them end now. */
        pthread_mutex_lock(&c->rt_lock);
        pthread_cond_broadcast(&c->rt_cond);
        pthread_mutex_unlock(&c->rt_lock);
        http_server_stop(ctl_server);
        return NULL;
}

/* Derive the external URL from the listen address when not configured. Caller frees. */
static char *default_external_url(const char *listen, bool tls)
{
        const char *host_end = strrchr(listen, ':');
        const char *port = host_end ? host_end + 1 : "9022";
        _cleanup_free_ char *host =
            host_end ? xstrndup(listen, (size_t)(host_end - listen)) : xstrdup(listen);
        if (!*host || strcmp(host, "0.0.0.0") == 0)
                free(host), host = xstrdup("127.0.0.1");
        else if (strcmp(host, "[::]") == 0)
                free(host), host = xstrdup("[::1]");
        return xasprintf("%s://%s:%s", tls ? "https" : "http", host, port);
}

static int parse_args(int argc, char **argv, struct ctl_opts *o, struct berr **err)
{
        static const struct option opts[] = {
                { "listen", required_argument, NULL, 'l' },
                { "external-url", required_argument, NULL, 'u' },
                { "domain", required_argument, NULL, 'd' },
                { "internal-token-file", required_argument, NULL, 't' },
                { "help", no_argument, NULL, 'h' },
                { NULL, 0, NULL, 0 },
        };
        int ch;
        optind = 0; /* glibc: re-initialise for this argv */
        opterr = 0;
        while ((ch = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
                char **dst = NULL;
                switch (ch) {
                case 'l':
                        dst = &o->listen;
                        break;
                case 'u':
                        dst = &o->external_url;
                        break;
                case 'd':
                        dst = &o->domain;
                        break;
                case 't':
                        dst = &o->token_file;
                        break;
                case 'h':
                        return berr_set(err, -EINVAL, "%s", usage_text);
                default:
                        return berr_set(err, -EINVAL, "controller: unknown option or missing value %s\n%s",
                                        argv[optind - 1], usage_text);
                }
                if (!*optarg)
                        return berr_set(err, -EINVAL, "controller: empty value for %s", argv[optind - 1]);
                free(*dst);
                *dst = xstrdup(optarg);
        }
        if (optind < argc)
                return berr_set(err, -EINVAL, "controller: unexpected argument %s\n%s", argv[optind],
                                usage_text);
        return 0;
}

int controller_main(const char *data_dir, const struct berth_config *cfg, int argc, char **argv,
                    struct berr **err)
{
        struct ctl_opts o = { .token_ttl_s = CTL_DEFAULT_TTL_S, .sync_interval_ms = CTL_DEFAULT_SYNC_MS };
        struct ctl c = { 0 };
        int ret = 1, r;
        bool db_open_ok = false, sched_ok = false;
        pthread_t sig_thread;
        bool sig_thread_ok = false;
        _cleanup_free_ char *ctl_dir = NULL, *key_file = NULL, *db_path = NULL, *token_file = NULL;

        if (apply_config(cfg ? cfg->controller : NULL, &o, err) < 0)
                goto out;
        if (cfg && cfg->internal_token_file)
                o.token_file = xstrdup(cfg->internal_token_file);
        if (parse_args(argc, argv, &o, err) < 0) {
                ret = CTL_EXIT_USAGE;
                goto out;
        }
        if (!data_dir || !*data_dir) {
                berr_set(err, -EINVAL, "controller: no data directory");
                goto out;
        }
        if (o.domain && !domain_name_valid(o.domain)) {
                berr_set(err, -EINVAL, "controller: domain \"%s\" is not a valid DNS name", o.domain);
                ret = CTL_EXIT_USAGE;
                goto out;
        }
        if (o.external_url && strncmp(o.external_url, "http://", 7) != 0 &&
            strncmp(o.external_url, "https://", 8) != 0) {
                berr_set(err, -EINVAL, "controller: the external URL must start with http:// or https://");
                ret = CTL_EXIT_USAGE;
                goto out;
        }
        if (sodium_init() < 0) {
                berr_set(err, -EIO, "libsodium failed to initialise");
                goto out;
        }
        /* A daemon logs at info unless told otherwise ($BERTH_LOG_LEVEL). */
        if (!getenv("BERTH_LOG_LEVEL") && log_get_level() < LOG_LEVEL_INFO)
                log_set_level(LOG_LEVEL_INFO);

        c.data_dir = xstrdup(data_dir);
        c.cfg = cfg;
        c.domain = xstrdup(o.domain ? o.domain : CTL_DEFAULT_DOMAIN);
        for (char *p = c.domain; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                        *p = (char)(*p - 'A' + 'a');
        c.token_ttl_s = o.token_ttl_s;
        c.sync_interval_ms = o.sync_interval_ms;
        if (!o.listen)
                o.listen = xstrdup(CTL_DEFAULT_LISTEN);
        c.external_url =
            o.external_url ? xstrdup(o.external_url) : default_external_url(o.listen, o.tls_cert);
        size_t ul = strlen(c.external_url);
        while (ul > 0 && c.external_url[ul - 1] == '/')
                c.external_url[--ul] = '\0';
        pthread_mutex_init(&c.rt_lock, NULL);
        pthread_cond_init(&c.rt_cond, NULL);

        ctl_dir = xasprintf("%s/controller", data_dir);
        if ((r = fs_mkdir_p_at(AT_FDCWD, ctl_dir, 0700)) < 0) {
                berr_set_errno(err, r, "create %s", ctl_dir);
                goto out;
        }
        chmod(ctl_dir, 0700);
        key_file = o.key_file ? xstrdup(o.key_file) : xasprintf("%s/encryption.key", ctl_dir);
        db_path = o.database ? xstrdup(o.database) : xasprintf("%s/berth.db", ctl_dir);
        token_file = o.token_file ? xstrdup(o.token_file) : xasprintf("%s/internal-token", data_dir);
        if (load_key(&c, key_file, err) < 0 || load_internal_token(&c, token_file, err) < 0)
                goto out;
        if (db_open(&c, db_path, err) < 0)
                goto out;
        db_open_ok = true;
        if (bootstrap(&c, err) < 0) {
                berr_prefix(err, -EIO, "first start");
                goto out;
        }

        signal(SIGPIPE, SIG_IGN);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);

        struct http_server_opts ho = {
                .listen = o.listen,
                .handler = api_handle,
                .userdata = &c,
                .tls_cert_file = o.tls_cert,
                .tls_key_file = o.tls_key,
        };
        if (http_server_new(&ho, &ctl_server, err) < 0) {
                berr_prefix(err, -EIO, "controller: listen on %s", o.listen);
                goto out;
        }
        if (sched_start(&c, err) < 0) {
                berr_prefix(err, -EIO, "controller: scheduler");
                goto out;
        }
        sched_ok = true;
        if (pthread_create(&sig_thread, NULL, signal_thread, &c) != 0) {
                berr_set(err, -EAGAIN, "controller: cannot start the signal thread");
                goto out;
        }
        sig_thread_ok = true;
        log_info("controller listening on %s (port %d), API %s, domain %s", o.listen,
                 http_server_port(ctl_server), c.external_url, c.domain);
        if (http_server_run(ctl_server, err) < 0)
                goto out;
        ret = 0;
out:
        c.stopping = 1;
        if (sig_thread_ok) {
                /* The server failed by itself: wake the signal thread so that it can be joined. */
                if (ret != 0)
                        pthread_kill(sig_thread, SIGTERM);
                pthread_join(sig_thread, NULL);
        }
        if (sched_ok)
                sched_stop(&c);
        pthread_mutex_lock(&c.rt_lock);
        pthread_cond_broadcast(&c.rt_cond);
        pthread_mutex_unlock(&c.rt_lock);
        http_server_free(ctl_server);
        ctl_server = NULL;
        if (db_open_ok)
                db_close(&c);
        if (c.internal_token)
                sodium_memzero(c.internal_token, strlen(c.internal_token));
        sodium_memzero(c.enc_key, sizeof(c.enc_key));
        free(c.data_dir), free(c.domain), free(c.external_url), free(c.internal_token);
        ctl_opts_free(&o);
        if (ret == 0)
                log_info("controller stopped");
        return ret;
}
