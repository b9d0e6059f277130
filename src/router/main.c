/* SPDX-License-Identifier: Apache-2.0 */
/* `berth router`: options and config, the route watcher and the proxy workers, signals and draining. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <string.h>

#include "berth-config.h"
#include "lib/fs.h"
#include "lib/json.h"
#include "lib/log.h"
#include "router/router.h"
#include "router/router_internal.h"

#define ROUTER_DEFAULT_LISTEN     "127.0.0.1:9080"
#define ROUTER_DEFAULT_CONTROLLER "http://127.0.0.1:9022"
#define ROUTER_DEFAULT_WORKERS    2
#define ROUTER_MAX_WORKERS        256
#define ROUTER_TOKEN_MAX          4096
/* Gorouter's defaults: endpoint_dial_timeout 5 s, request_timeout_in_seconds 900, frontend idle 900 s. */
#define ROUTER_DIAL_TIMEOUT_MS    5000
#define ROUTER_REQUEST_TIMEOUT_MS 900000
#define ROUTER_IDLE_TIMEOUT_MS    900000
#define ROUTER_HEAD_TIMEOUT_MS    10000 /* a request head must arrive whole within this (slowloris) */
#define ROUTER_DRAIN_TIMEOUT_MS   10000
#define ROUTER_MAX_TIMEOUT_MS     86400000

#define ROUTER_BACKEND_MAX_CONNS  500 /* Gorouter's router.backends.max_conns */
#define ROUTER_MAX_CONNS_CEILING  1000000
#define ROUTER_BUSY_POLL_US       1000 /* router.busy_poll_us (docs/PLATFORM.md) */
#define ROUTER_BUSY_POLL_MAX_US   10000
#define ROUTER_ANSWER_POLL_US     60 /* router.answer_poll_us (docs/PLATFORM.md) */
#define ROUTER_ANSWER_POLL_MAX_US 1000
#define ROUTER_LOG_FLUSH_MS       AL_FLUSH_MS /* router.access_log_flush_ms */
#define ROUTER_LOG_FLUSH_MIN_MS   10
#define ROUTER_LOG_FLUSH_MAX_MS   60000

#define EXIT_USAGE 2

/*
 * The store outlives router_main: the watcher thread is detached at exit and may still be in its long
 * poll (it stops touching the store once it sees the stop flag, but it may be just swapping a table in).
 */
static struct route_store router_store;

static void usage(FILE *f)
{
        fprintf(f,
                "Usage: berth router [OPTIONS]\n\n"
                "Route HTTP requests by Host to app instances (the table comes from the controller).\n\n"
                "Options:\n"
                "  --listen HOST:PORT          address to serve (default " ROUTER_DEFAULT_LISTEN ")\n"
                "  --controller URL            the controller (default " ROUTER_DEFAULT_CONTROLLER ")\n"
                "  --workers N                 event-loop threads (default 2)\n"
                "  --balancing ALGORITHM       round-robin (default) or least-connection\n"
                "  --metrics-listen HOST:PORT  serve Prometheus metrics at GET /metrics there\n"
                "  --tls-listen HOST:PORT      also serve HTTPS there (certificates: --tls-cert/--tls-key\n"
                "                              pairs or the config's tls_certificates; SNI picks one)\n"
                "  --tls-cert FILE --tls-key FILE  a PEM certificate chain and its key (repeatable)\n"
                "  --internal-token-file F     the internal API token (default DATA_DIR/internal-token)\n"
                "  --data-dir D                where the default token file is (default "
                "$BERTH_DATA_DIR or " BERTH_DEFAULT_DATA_DIR ")\n"
                "  -h, --help                  this help\n");
}

static void router_opts_free(struct router_opts *o)
{
        free(o->listen);
        free(o->controller);
        free(o->metrics_listen);
        free(o->tls_listen);
        for (size_t i = 0; i < o->n_tls_certs; i++)
                free(o->tls_certs[i].cert), free(o->tls_certs[i].key);
        free(o->tls_certs);
        if (o->token) {
                explicit_bzero(o->token, strlen(o->token));
                free(o->token);
        }
        *o = (struct router_opts){ 0 };
}

/*
 * An integer setting of the router: section, if present, into *ret; it must lie in [lo, hi] (lo_note says
 * what lo means, e.g. " (no limit)", or ""). Absent: *ret is left as it is.
 */
static int get_bounded(const json_t *sec, const char *key, int64_t lo, const char *lo_note, int64_t hi,
                       unsigned *ret, struct berr **err)
{
        int64_t v = 0;
        if (!json_object_get(sec, key))
                return 0;
        int r = json_get_int(sec, key, true, &v, err);
        if (r < 0)
                return berr_prefix(err, r, "router");
        if (v < lo || v > hi)
                return berr_set(err, -EINVAL, "router.%s must be between %lld%s and %lld", key, (long long)lo,
                                lo_note, (long long)hi);
        *ret = (unsigned)v;
        return 0;
}

static void add_cert(struct router_opts *o, const char *cert, const char *key)
{
        o->tls_certs = xrealloc(o->tls_certs, (o->n_tls_certs + 1) * sizeof(*o->tls_certs));
        o->tls_certs[o->n_tls_certs++] =
            (struct router_tls_cert){ .cert = xstrdup(cert), .key = key ? xstrdup(key) : NULL };
}

static int parse_balance(const char *s, enum rt_balance *ret, struct berr **err)
{
        if (strcmp(s, "round-robin") == 0)
                *ret = RT_ROUND_ROBIN;
        else if (strcmp(s, "least-connection") == 0)
                *ret = RT_LEAST_CONN;
        else
                return berr_set(err, -EINVAL,
                                "router: the balancing algorithm must be round-robin or "
                                "least-connection, got \"%.64s\"",
                                s);
        return 0;
}

/* The config file's router: section (unknown keys are errors, docs/PLATFORM.md). */
static int apply_config(const json_t *sec, struct router_opts *o, struct berr **err)
{
        static const char *const keys[] = { "listen",
                                            "controller",
                                            "workers",
                                            "dial_timeout_ms",
                                            "request_timeout_ms",
                                            "idle_timeout_ms",
                                            "balancing_algorithm",
                                            "backend_max_conns",
                                            "busy_poll_us",
                                            "answer_poll_us",
                                            "access_log_flush_ms",
                                            "metrics_listen",
                                            "tls_listen",
                                            "tls_certificates",
                                            NULL };
        if (!sec || json_is_null(sec))
                return 0;
        if (!json_is_object(sec))
                return berr_set(err, -EINVAL, "router: must be a mapping");
        const char *k;
        json_t *v;
        json_object_foreach ((json_t *)sec, k, v) {
                bool ok = false;
                for (size_t i = 0; keys[i]; i++)
                        ok = ok || strcmp(k, keys[i]) == 0;
                if (!ok)
                        return berr_set(err, -EINVAL, "router: unknown key \"%.64s\"", k);
        }
        const char *s = NULL;
        int r = json_get_string(sec, "listen", false, &s, err);
        if (r < 0)
                return berr_prefix(err, r, "router");
        if (s) {
                free(o->listen);
                o->listen = xstrdup(s);
        }
        if ((r = json_get_string(sec, "controller", false, &s, err)) < 0)
                return berr_prefix(err, r, "router");
        if (s) {
                free(o->controller);
                o->controller = xstrdup(s);
        }
        if ((r = json_get_string(sec, "balancing_algorithm", false, &s, err)) < 0)
                return berr_prefix(err, r, "router");
        if (s && parse_balance(s, &o->balance, err) < 0)
                return -EINVAL;
        if ((r = json_get_string(sec, "metrics_listen", false, &s, err)) < 0)
                return berr_prefix(err, r, "router");
        if (s) {
                free(o->metrics_listen);
                o->metrics_listen = xstrdup(s);
        }
        if ((r = json_get_string(sec, "tls_listen", false, &s, err)) < 0)
                return berr_prefix(err, r, "router");
        if (s) {
                free(o->tls_listen);
                o->tls_listen = xstrdup(s);
        }
        json_t *certs = json_object_get(sec, "tls_certificates");
        if (certs && !json_is_array(certs))
                return berr_set(err, -EINVAL,
                                "router.tls_certificates must be a list of {cert_file, key_file}");
        for (size_t i = 0; certs && i < json_array_size(certs); i++) {
                json_t *c = json_array_get(certs, i);
                const char *cf = NULL, *kf = NULL;
                const char *ck;
                json_t *cv;
                if (!json_is_object(c))
                        return berr_set(err, -EINVAL,
                                        "router.tls_certificates[%zu] must be {cert_file, key_file}", i);
                json_object_foreach (c, ck, cv)
                        if (strcmp(ck, "cert_file") != 0 && strcmp(ck, "key_file") != 0)
                                return berr_set(err, -EINVAL,
                                                "router.tls_certificates[%zu]: unknown key \"%.64s\"", i, ck);
                if ((r = json_get_string(c, "cert_file", true, &cf, err)) < 0 ||
                    (r = json_get_string(c, "key_file", true, &kf, err)) < 0)
                        return berr_prefix(err, r, "router.tls_certificates[%zu]", i);
                add_cert(o, cf, kf);
        }
        if ((r = get_bounded(sec, "workers", 1, "", ROUTER_MAX_WORKERS, &o->workers, err)) < 0 ||
            (r = get_bounded(sec, "backend_max_conns", 0, " (no limit)", ROUTER_MAX_CONNS_CEILING,
                             &o->backend_max_conns, err)) < 0 ||
            (r = get_bounded(sec, "busy_poll_us", 0, " (off)", ROUTER_BUSY_POLL_MAX_US, &o->busy_poll_us,
                             err)) < 0 ||
            (r = get_bounded(sec, "answer_poll_us", 0, " (off)", ROUTER_ANSWER_POLL_MAX_US,
                             &o->answer_poll_us, err)) < 0 ||
            (r = get_bounded(sec, "access_log_flush_ms", ROUTER_LOG_FLUSH_MIN_MS, "", ROUTER_LOG_FLUSH_MAX_MS,
                             &o->access_log_flush_ms, err)) < 0 ||
            (r = get_bounded(sec, "dial_timeout_ms", 1, "", ROUTER_MAX_TIMEOUT_MS, &o->dial_timeout_ms,
                             err)) < 0 ||
            (r = get_bounded(sec, "request_timeout_ms", 1, "", ROUTER_MAX_TIMEOUT_MS, &o->request_timeout_ms,
                             err)) < 0 ||
            (r = get_bounded(sec, "idle_timeout_ms", 1, "", ROUTER_MAX_TIMEOUT_MS, &o->idle_timeout_ms,
                             err)) < 0)
                return r;
        return 0;
}

static int read_token(const char *path, char **ret, struct berr **err)
{
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        int r = fs_read_file_at(AT_FDCWD, path, ROUTER_TOKEN_MAX, &data, &len);
        if (r < 0)
                return berr_set_errno(err, r, "read the internal token %s", path);
        while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r' || data[len - 1] == ' '))
                data[--len] = '\0';
        if (len == 0 || strlen(data) != len || strpbrk(data, "\r\n"))
                return berr_set(err, -EINVAL, "the internal token %s is empty or not one line", path);
        *ret = TAKE_PTR(data);
        return 0;
}

static bool controller_url_ok(const char *u)
{
        return strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0;
}

int router_main(const struct berth_config *cfg, int argc, char **argv, struct berr **err)
{
        static const struct option opts[] = {
                { "listen", required_argument, NULL, 'l' },
                { "controller", required_argument, NULL, 'c' },
                { "workers", required_argument, NULL, 'w' },
                { "balancing", required_argument, NULL, 'b' },
                { "metrics-listen", required_argument, NULL, 'm' },
                { "tls-listen", required_argument, NULL, 'T' },
                { "tls-cert", required_argument, NULL, 'C' },
                { "tls-key", required_argument, NULL, 'K' },
                { "internal-token-file", required_argument, NULL, 't' },
                { "data-dir", required_argument, NULL, 'd' },
                { "help", no_argument, NULL, 'h' },
                { 0 },
        };
        _cleanup_(router_opts_free) struct router_opts o = {
                .listen = xstrdup(ROUTER_DEFAULT_LISTEN),
                .controller = xstrdup(ROUTER_DEFAULT_CONTROLLER),
                .workers = ROUTER_DEFAULT_WORKERS,
                .dial_timeout_ms = ROUTER_DIAL_TIMEOUT_MS,
                .request_timeout_ms = ROUTER_REQUEST_TIMEOUT_MS,
                .idle_timeout_ms = ROUTER_IDLE_TIMEOUT_MS,
                .head_timeout_ms = ROUTER_HEAD_TIMEOUT_MS,
                .drain_timeout_ms = ROUTER_DRAIN_TIMEOUT_MS,
                .balance = RT_ROUND_ROBIN,
                .backend_max_conns = ROUTER_BACKEND_MAX_CONNS,
                .busy_poll_us = ROUTER_BUSY_POLL_US,
                .answer_poll_us = ROUTER_ANSWER_POLL_US,
                .access_log_flush_ms = ROUTER_LOG_FLUSH_MS,
        };
        int r = apply_config(cfg ? cfg->router : NULL, &o, err);
        if (r < 0)
                return 1;
        const char *token_file = cfg ? cfg->internal_token_file : NULL;
        const char *data_dir = getenv("BERTH_DATA_DIR");
        int c;
        optind = 0; /* glibc: re-initialise for this argv */
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
                switch (c) {
                case 'l':
                        free(o.listen);
                        o.listen = xstrdup(optarg);
                        break;
                case 'c':
                        free(o.controller);
                        o.controller = xstrdup(optarg);
                        break;
                case 'w': {
                        char *end = NULL;
                        errno = 0;
                        unsigned long n = strtoul(optarg, &end, 10);
                        if (!*optarg || *end || errno || n < 1 || n > ROUTER_MAX_WORKERS) {
                                berr_set(err, -EINVAL, "--workers must be between 1 and %d",
                                         ROUTER_MAX_WORKERS);
                                return EXIT_USAGE;
                        }
                        o.workers = (unsigned)n;
                        break;
                }
                case 't':
                        token_file = optarg;
                        break;
                case 'b':
                        if (parse_balance(optarg, &o.balance, err) < 0)
                                return EXIT_USAGE;
                        break;
                case 'm':
                        free(o.metrics_listen);
                        o.metrics_listen = xstrdup(optarg);
                        break;
                case 'T':
                        free(o.tls_listen);
                        o.tls_listen = xstrdup(optarg);
                        break;
                case 'C':
                        add_cert(&o, optarg, NULL);
                        break;
                case 'K':
                        if (o.n_tls_certs == 0 || o.tls_certs[o.n_tls_certs - 1].key) {
                                berr_set(err, -EINVAL, "router: --tls-key must follow its --tls-cert");
                                return EXIT_USAGE;
                        }
                        o.tls_certs[o.n_tls_certs - 1].key = xstrdup(optarg);
                        break;
                case 'd':
                        data_dir = optarg;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return EXIT_USAGE;
                }
        }
        if (o.n_tls_certs > 0 && !o.tls_certs[o.n_tls_certs - 1].key) {
                berr_set(err, -EINVAL, "router: --tls-cert %s has no --tls-key",
                         o.tls_certs[o.n_tls_certs - 1].cert);
                return EXIT_USAGE;
        }
        if (optind < argc) {
                berr_set(err, -EINVAL, "router: unexpected argument \"%s\"", argv[optind]);
                return EXIT_USAGE;
        }
        if (!controller_url_ok(o.controller)) {
                berr_set(err, -EINVAL, "router: the controller URL must be http:// or https://, got \"%s\"",
                         o.controller);
                return EXIT_USAGE;
        }
        _cleanup_free_ char *default_token = NULL;
        if (!token_file) {
                default_token =
                    xasprintf("%s/internal-token", data_dir && *data_dir ? data_dir : BERTH_DEFAULT_DATA_DIR);
                token_file = default_token;
        }
        if (read_token(token_file, &o.token, err) < 0)
                return 1;

        /* A daemon logs at info unless told otherwise ($BERTH_LOG_LEVEL or --debug). */
        if (!getenv("BERTH_LOG_LEVEL") && log_get_level() < LOG_LEVEL_INFO)
                log_set_level(LOG_LEVEL_INFO);
        signal(SIGPIPE, SIG_IGN);
        /* Block the stop signals in every thread; this one waits for them. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);

        route_store_init(&router_store);
        struct proxy *p = NULL;
        if (proxy_start(&o, &router_store, &p, err) < 0)
                return 1;
        struct route_watch *watch = NULL;
        if (route_watch_start(&o, &router_store, &watch, err) < 0) {
                proxy_stop(p);
                proxy_free(p);
                return 1;
        }
        size_t nq = 0;
        struct access_queue *const *queues = proxy_access_queues(p, &nq);
        struct access_shipper *ship = NULL;
        if (access_shipper_start(&o, queues, nq, &ship, err) < 0) {
                route_watch_stop(watch);
                proxy_stop(p);
                proxy_free(p);
                return 1;
        }
        struct metrics_server *ms = NULL;
        if (o.metrics_listen && metrics_start(o.metrics_listen, p, &ms, err) < 0) {
                access_shipper_stop(ship);
                route_watch_stop(watch);
                proxy_stop(p);
                proxy_free(p);
                return 1;
        }
        /* Busy and answer polling are off with more workers than CPUs (proxy_start): a polling worker would
         * take the CPU from the others. */
        char polling[96], answer[40] = "";
        if (proxy_answer_poll_us(p) > 0)
                snprintf(answer, sizeof(answer), ", answer polling %u us", proxy_answer_poll_us(p));
        if (proxy_busy_poll_us(p) > 0)
                snprintf(polling, sizeof(polling), "busy polling %u us%s", proxy_busy_poll_us(p), answer);
        else if ((o.busy_poll_us > 0 || o.answer_poll_us > 0) && proxy_answer_poll_us(p) == 0)
                snprintf(polling, sizeof(polling), "busy polling off: %u workers on %u CPU%s", o.workers,
                         proxy_cpus(p), proxy_cpus(p) == 1 ? "" : "s");
        else
                snprintf(polling, sizeof(polling), "busy polling off%s", answer);
        log_info("router listening on %s%s%s (%u worker%s, %s, %s), routes from %s%s%s", proxy_address(p),
                 proxy_tls_address(p) ? ", TLS on " : "", proxy_tls_address(p) ?: "", o.workers,
                 o.workers == 1 ? "" : "s", o.balance == RT_LEAST_CONN ? "least-connection" : "round-robin",
                 polling, o.controller, ms ? ", metrics on " : "", ms ? o.metrics_listen : "");
        int sig = 0;
        while (sigwait(&set, &sig) != 0)
                ;
        log_info("router: %s, draining (up to %u ms)", strsignal(sig), o.drain_timeout_ms);
        route_watch_stop(watch);
        proxy_stop(p);
        access_shipper_stop(ship); /* after the drain: the last requests' lines go too */
        metrics_stop(ms);
        proxy_free(p);
        log_info("router stopped");
        return 0;
}
