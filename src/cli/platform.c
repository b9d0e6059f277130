/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The platform commands (login, target, orgs, apps, push, ...) against the controller's public API
 * (docs/PLATFORM.md, CLI section). State: $BERTH_HOME/config.json (0600). Only this layer prints.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "cell/agent.h"
#include "cli/cli.h"
#include "cli/app_logs.h"
#include "cli/manifest.h"
#include "controller/controller.h"
#include "lib/http_client.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/macro.h"
#include "lib/strv.h"
#include "router/router.h"

struct pctx {
        json_t *cfg;              /* owned: config.json contents */
        char path[4096];          /* config.json */
        struct http_client *http; /* owned */
        bool json;                /* --json */
};

static void pctx_done(struct pctx *p)
{
        json_decref(p->cfg);
        http_client_free(p->http);
}

static const char *cfg_str(struct pctx *p, const char *k)
{
        return json_string_value(json_object_get(p->cfg, k));
}

static const char *cfg_sub(struct pctx *p, const char *k, const char *f)
{
        return json_string_value(json_object_get(json_object_get(p->cfg, k), f));
}

static int cfg_load(struct pctx *p, struct berr **err)
{
        const char *home = getenv("BERTH_HOME");
        int n;
        if (home && *home)
                n = snprintf(p->path, sizeof(p->path), "%s/config.json", home);
        else
                n = snprintf(p->path, sizeof(p->path), "%s/.berth/config.json", getenv("HOME") ?: "/root");
        if (n < 0 || (size_t)n >= sizeof(p->path))
                return berr_set(err, -ENAMETOOLONG, "config path too long");
        json_error_t je;
        p->cfg = json_load_file(p->path, 0, &je);
        if (!p->cfg || !json_is_object(p->cfg)) {
                json_decref(p->cfg);
                p->cfg = json_object();
        }
        return 0;
}

static int cfg_save(struct pctx *p, struct berr **err)
{
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", p->path);
        char *slash = strrchr(dir, '/');
        if (slash) {
                *slash = 0;
                if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                        return berr_set_errno(err, -errno, "mkdir %s", dir);
        }
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.tmp", p->path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return berr_set_errno(err, -errno, "open %s", tmp);
        _cleanup_free_ char *s = json_dumps(p->cfg, JSON_INDENT(2));
        size_t len = s ? strlen(s) : 0;
        if (!s || write(fd, s, len) != (ssize_t)len || fchmod(fd, 0600) < 0) {
                close(fd);
                return berr_set_errno(err, -EIO, "write %s", tmp);
        }
        close(fd);
        if (rename(tmp, p->path) < 0)
                return berr_set_errno(err, -errno, "rename %s", p->path);
        return 0;
}

/* A new HTTP client with the login's TLS settings and token. Caller owns *ret. */
static int client_open(struct pctx *p, struct http_client **ret, struct berr **err)
{
        /* The API's CA: login --ca-file (kept in config.json), else $SSL_CERT_FILE, else the system's. */
        const char *ca = cfg_str(p, "ca_file");
        if (!ca || !*ca)
                ca = getenv("SSL_CERT_FILE");
        struct http_client_opts o = { .insecure =
                                          json_is_true(json_object_get(p->cfg, "skip_ssl_validation")),
                                      .ca_file = ca && *ca ? ca : NULL };
        int r = http_client_new(&o, ret, err);
        if (r < 0)
                return r;
        http_client_set_bearer(*ret, cfg_str(p, "access_token"));
        return 0;
}

static int client(struct pctx *p, struct berr **err)
{
        if (p->http)
                return 0;
        return client_open(p, &p->http, err);
}

/* The API's error body → err. */
static int api_error(long status, json_t *resp, struct berr **err)
{
        json_t *e0 = json_array_get(json_object_get(resp, "errors"), 0);
        const char *d = json_string_value(json_object_get(e0, "detail"));
        if (!d)
                d = json_string_value(json_object_get(resp, "error_description"));
        int code = status == 404 ? -ENOENT : status == 401 || status == 403 ? -EACCES : -EIO;
        if (d)
                return berr_set(err, code, "%s", d);
        return berr_set(err, code, "the API answered %ld", status);
}

static int refresh(struct pctx *p, struct berr **err);

/* method path (relative to the API) body (borrowed, may be NULL) → *ret (owned; may be NULL on 204). */
static int api(struct pctx *p, const char *method, const char *path, json_t *body, json_t **ret,
               struct berr **err)
{
        const char *base = cfg_str(p, "api");
        if (!base)
                return berr_set(err, -ENOENT, "not logged in (use 'berth login -a URL -u USER')");
        int r = client(p, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *url = NULL;
        if (asprintf(&url, "%s%s", base, path) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        for (int attempt = 0;; attempt++) {
                long status = 0;
                json_t *resp = NULL;
                r = http_request_json(p->http, method, url, body, &status, &resp, err);
                if (r < 0)
                        return r;
                if (status == 401 && attempt == 0 && cfg_str(p, "refresh_token")) {
                        json_decref(resp);
                        struct berr *e2 = NULL;
                        if (refresh(p, &e2) == 0)
                                continue;
                        berr_free(e2);
                        return berr_set(err, -EACCES, "the login expired; log in again");
                }
                if (status >= 400) {
                        r = api_error(status, resp, err);
                        json_decref(resp);
                        return r;
                }
                if (ret)
                        *ret = resp;
                else
                        json_decref(resp);
                return 0;
        }
}

static void print_json(const json_t *j)
{
        _cleanup_free_ char *s = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
        printf("%s\n", s ?: "null");
}

static char *urlenc(const char *s)
{
        size_t n = strlen(s);
        char *o = malloc(3 * n + 1), *q = o;
        if (!o)
                return NULL;
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    strchr("-._~", c))
                        *q++ = (char)c;
                else
                        q += sprintf(q, "%%%02X", c);
        }
        *q = 0;
        return o;
}

static int token_request(struct pctx *p, const char *api_url, const char *form, struct berr **err)
{
        int r = client(p, err);
        if (r < 0)
                return r;
        http_client_set_bearer(p->http, NULL);
        _cleanup_free_ char *url = NULL;
        if (asprintf(&url, "%s/oauth/token", api_url) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        const char *hdrs[] = { "Authorization: Basic Y2Y6", "Accept: application/json", NULL };
        struct http_result res = { 0 };
        r = http_request(p->http, "POST", url, hdrs, "application/x-www-form-urlencoded", form, strlen(form),
                         &res, err);
        if (r < 0)
                return r;
        json_t *j = res.body ? json_loads(res.body, 0, NULL) : NULL;
        if (res.status != 200 || !json_string_value(json_object_get(j, "access_token"))) {
                r = res.status == 401 ? berr_set(err, -EACCES, "Credentials were rejected, please try again.")
                                      : api_error(res.status, j, err);
                json_decref(j);
                http_result_free(&res);
                return r;
        }
        http_result_free(&res);
        json_object_set(p->cfg, "access_token", json_object_get(j, "access_token"));
        json_object_set(p->cfg, "refresh_token", json_object_get(j, "refresh_token") ?: json_null());
        json_decref(j);
        http_client_set_bearer(p->http, cfg_str(p, "access_token"));
        return cfg_save(p, err);
}

static int refresh(struct pctx *p, struct berr **err)
{
        _cleanup_free_ char *rt = urlenc(cfg_str(p, "refresh_token"));
        _cleanup_free_ char *form = NULL;
        if (!rt || asprintf(&form, "grant_type=refresh_token&refresh_token=%s", rt) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        return token_request(p, cfg_str(p, "api"), form, err);
}

static char *read_secret(const char *prompt)
{
        if (!isatty(STDIN_FILENO))
                return NULL;
        fprintf(stderr, "%s", prompt);
        struct termios t, o;
        tcgetattr(STDIN_FILENO, &o);
        t = o;
        t.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
        char buf[1024];
        char *s = fgets(buf, sizeof(buf), stdin);
        tcsetattr(STDIN_FILENO, TCSANOW, &o);
        fprintf(stderr, "\n");
        if (!s)
                return NULL;
        buf[strcspn(buf, "\n")] = 0;
        return strdup(buf);
}

/* First resource of GET path (a list), or NULL (owned, incref'd). */
static int find_one(struct pctx *p, const char *path, json_t **ret, struct berr **err)
{
        _cleanup_json_ json_t *l = NULL;
        int r = api(p, "GET", path, NULL, &l, err);
        if (r < 0)
                return r;
        json_t *x = json_array_get(json_object_get(l, "resources"), 0);
        *ret = x ? json_incref(x) : NULL;
        return 0;
}

static int find_named(struct pctx *p, const char *coll, const char *name, const char *extra, const char *what,
                      json_t **ret, struct berr **err)
{
        _cleanup_free_ char *n = urlenc(name);
        _cleanup_free_ char *path = NULL;
        if (!n || asprintf(&path, "/v3/%s?names=%s%s", coll, n, extra ?: "") < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        int r = find_one(p, path, ret, err);
        if (r < 0)
                return r;
        if (!*ret && what)
                return berr_set(err, -ENOENT, "%s '%s' not found.", what, name);
        return 0;
}

static int set_target(struct pctx *p, const char *kind, json_t *res)
{
        json_t *o = json_pack("{s:O?,s:O?}", "guid", json_object_get(res, "guid"), "name",
                              json_object_get(res, "name"));
        return json_object_set_new(p->cfg, kind, o);
}

static int target_org(struct pctx *p, const char *org, struct berr **err)
{
        _cleanup_json_ json_t *o = NULL;
        int r = find_named(p, "organizations", org, NULL, "Organization", &o, err);
        if (r < 0)
                return r;
        set_target(p, "org", o);
        json_object_del(p->cfg, "space");
        return 0;
}

static int target_space(struct pctx *p, const char *space, struct berr **err)
{
        const char *og = cfg_sub(p, "org", "guid");
        if (!og)
                return berr_set(err, -ENOENT, "No org targeted, use 'berth target -o ORG' to target an org.");
        _cleanup_free_ char *extra = NULL;
        if (asprintf(&extra, "&organization_guids=%s", og) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        _cleanup_json_ json_t *s = NULL;
        int r = find_named(p, "spaces", space, extra, "Space", &s, err);
        if (r < 0)
                return r;
        set_target(p, "space", s);
        return 0;
}

static void print_target(struct pctx *p)
{
        printf("API endpoint:   %s\n", cfg_str(p, "api") ?: "");
        printf("user:           %s\n", cfg_str(p, "username") ?: "");
        printf("org:            %s\n", cfg_sub(p, "org", "name") ?: "");
        printf("space:          %s\n", cfg_sub(p, "space", "name") ?: "");
}

static int usage(const char *cmd, const char *u, struct berr **err)
{
        berr_set(err, -EINVAL, "usage: berth %s %s", cmd, u);
        return CLI_EXIT_USAGE;
}

static int cmd_login(struct pctx *p, int argc, char **argv, struct berr **err)
{
        const char *a = NULL, *u = NULL, *pw = NULL, *org = NULL, *space = NULL, *ca = NULL;
        bool skip = false;
        static const struct option lo[] = { { "skip-ssl-validation", no_argument, NULL, 'k' },
                                            { "ca-file", required_argument, NULL, 'C' },
                                            { 0 } };
        const char *use =
            "-a URL -u USER [-p PASSWORD] [-o ORG] [-s SPACE] [--skip-ssl-validation] [--ca-file PEM]";
        int c;
        while ((c = getopt_long(argc, argv, "+a:u:p:o:s:", lo, NULL)) != -1) {
                switch (c) {
                case 'C':
                        ca = optarg;
                        break;
                case 'a':
                        a = optarg;
                        break;
                case 'u':
                        u = optarg;
                        break;
                case 'p':
                        pw = optarg;
                        break;
                case 'o':
                        org = optarg;
                        break;
                case 's':
                        space = optarg;
                        break;
                case 'k':
                        skip = true;
                        break;
                default:
                        return usage("login", use, err);
                }
        }
        a = a ?: cfg_str(p, "api");
        if (!a || !u || optind != argc)
                return usage("login", use, err);
        _cleanup_free_ char *ca_abs = NULL;
        if (ca) {
                ca_abs = realpath(ca, NULL);
                if (!ca_abs)
                        return berr_set_errno(err, -errno, "--ca-file %s", ca), CLI_EXIT_FAILURE;
        }
        _cleanup_free_ char *prompted = NULL;
        if (!pw) {
                prompted = read_secret("Password: ");
                if (!prompted)
                        return usage("login", "-a URL -u USER -p PASSWORD (no terminal to prompt on)", err);
                pw = prompted;
        }
        _cleanup_free_ char *api_url = strdup(a);
        if (!api_url)
                return berr_set(err, -ENOMEM, "out of memory");
        size_t n = strlen(api_url);
        while (n > 0 && api_url[n - 1] == '/')
                api_url[--n] = 0;
        json_object_clear(p->cfg);
        json_object_set_new(p->cfg, "api", json_string(api_url));
        json_object_set_new(p->cfg, "skip_ssl_validation", json_boolean(skip));
        if (ca_abs)
                json_object_set_new(p->cfg, "ca_file", json_string(ca_abs));
        json_object_set_new(p->cfg, "username", json_string(u));
        printf("API endpoint: %s\n\nAuthenticating...\n", api_url);
        _cleanup_free_ char *ue = urlenc(u), *pe = urlenc(pw), *form = NULL;
        if (!ue || !pe || asprintf(&form, "grant_type=password&username=%s&password=%s", ue, pe) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        struct berr *te = NULL;
        int r = token_request(p, api_url, form, &te);
        if (r == -EPROTO && !skip) /* TLS: say what to do about it */
                berr_set(err, r, "%s (use --skip-ssl-validation, or --ca-file PEM with the API's CA)",
                         berr_msg(te));
        else if (r < 0 && err && !*err)
                *err = TAKE_PTR(te);
        berr_free(te);
        if (r < 0)
                return CLI_EXIT_FAILURE;
        printf("OK\n\n");
        if (org) {
                if (target_org(p, org, err) < 0)
                        return CLI_EXIT_FAILURE;
        } else {
                _cleanup_json_ json_t *l = NULL;
                if (api(p, "GET", "/v3/organizations", NULL, &l, err) < 0)
                        return CLI_EXIT_FAILURE;
                json_t *res = json_object_get(l, "resources");
                if (json_array_size(res) == 1)
                        set_target(p, "org", json_array_get(res, 0));
        }
        if (space) {
                if (target_space(p, space, err) < 0)
                        return CLI_EXIT_FAILURE;
        } else if (cfg_sub(p, "org", "guid")) {
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "/v3/spaces?organization_guids=%s", cfg_sub(p, "org", "guid")) < 0)
                        return CLI_EXIT_FAILURE;
                _cleanup_json_ json_t *l = NULL;
                if (api(p, "GET", path, NULL, &l, err) < 0)
                        return CLI_EXIT_FAILURE;
                json_t *res = json_object_get(l, "resources");
                if (json_array_size(res) == 1)
                        set_target(p, "space", json_array_get(res, 0));
        }
        if (cfg_save(p, err) < 0)
                return CLI_EXIT_FAILURE;
        print_target(p);
        return 0;
}

static int cmd_target(struct pctx *p, int argc, char **argv, struct berr **err)
{
        const char *org = NULL, *space = NULL;
        int c;
        while ((c = getopt(argc, argv, "+o:s:")) != -1) {
                if (c == 'o')
                        org = optarg;
                else if (c == 's')
                        space = optarg;
                else
                        return usage("target", "[-o ORG] [-s SPACE]", err);
        }
        if (optind != argc)
                return usage("target", "[-o ORG] [-s SPACE]", err);
        if (!cfg_str(p, "api"))
                return berr_set(err, -ENOENT, "not logged in (use 'berth login -a URL -u USER')"),
                       CLI_EXIT_FAILURE;
        if (org && target_org(p, org, err) < 0)
                return CLI_EXIT_FAILURE;
        if (space && target_space(p, space, err) < 0)
                return CLI_EXIT_FAILURE;
        if ((org || space) && cfg_save(p, err) < 0)
                return CLI_EXIT_FAILURE;
        if (p->json) {
                _cleanup_json_ json_t *t =
                    json_pack("{s:O?,s:O?,s:O?,s:O?}", "api", json_object_get(p->cfg, "api"), "user",
                              json_object_get(p->cfg, "username"), "org", json_object_get(p->cfg, "org"),
                              "space", json_object_get(p->cfg, "space"));
                print_json(t);
                return 0;
        }
        print_target(p);
        return 0;
}

/* GET path; --json prints it; else one line per resource with the given fields. */
static int list_cmd(struct pctx *p, const char *title, const char *path, const char *const *fields,
                    struct berr **err)
{
        _cleanup_json_ json_t *l = NULL;
        if (api(p, "GET", path, NULL, &l, err) < 0)
                return CLI_EXIT_FAILURE;
        if (p->json) {
                print_json(l);
                return 0;
        }
        printf("%s as %s...\n\n", title, cfg_str(p, "username") ?: "?");
        for (size_t i = 0; fields[i]; i++)
                printf("%-24s", fields[i]);
        printf("\n");
        size_t idx;
        json_t *x;
        json_array_foreach (json_object_get(l, "resources"), idx, x) {
                for (size_t i = 0; fields[i]; i++) {
                        json_t *v = json_object_get(x, fields[i]);
                        if (json_is_boolean(v))
                                printf("%-24s", json_is_true(v) ? "enabled" : "disabled");
                        else
                                printf("%-24s", json_string_value(v) ?: "");
                }
                printf("\n");
        }
        return 0;
}

static int need_space(struct pctx *p, struct berr **err)
{
        if (!cfg_str(p, "api"))
                return berr_set(err, -ENOENT, "not logged in (use 'berth login -a URL -u USER')");
        if (!cfg_sub(p, "space", "guid"))
                return berr_set(err, -ENOENT,
                                "No space targeted, use 'berth target -s SPACE' to target a space.");
        return 0;
}

static int find_app_opt(struct pctx *p, const char *name, bool must, json_t **ret, struct berr **err)
{
        _cleanup_free_ char *extra = NULL;
        if (need_space(p, err) < 0)
                return -ENOENT;
        if (asprintf(&extra, "&space_guids=%s", cfg_sub(p, "space", "guid")) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        return find_named(p, "apps", name, extra, must ? "App" : NULL, ret, err);
}

static int find_app(struct pctx *p, const char *name, json_t **ret, struct berr **err)
{
        return find_app_opt(p, name, true, ret, err);
}

static int app_action(struct pctx *p, const char *name, const char *action, json_t **ret, struct berr **err)
{
        _cleanup_json_ json_t *app = NULL;
        if (find_app(p, name, &app, err) < 0)
                return -ENOENT;
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "/v3/apps/%s/actions/%s", json_string_value(json_object_get(app, "guid")),
                     action) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        return api(p, "POST", path, NULL, ret, err);
}

/* Sizes: 256M, 1G, 512MB, 1024 (MB) → MB; -1 invalid (the manifest's rules). */
static long parse_size_mb(const char *s)
{
        return manifest_size_mb(s);
}

static const char *app_guid(json_t *app)
{
        return json_string_value(json_object_get(app, "guid"));
}

/* A health check type the platform knows (liveness and readiness alike)? */
static bool check_type_valid(const char *t)
{
        return t && (strcmp(t, "port") == 0 || strcmp(t, "http") == 0 || strcmp(t, "process") == 0);
}

/* An http health check endpoint as the API takes it: a path starting with '/', without whitespace. */
static bool check_endpoint_valid(const char *e)
{
        return e && e[0] == '/' && !strpbrk(e, " \t\r\n") && strlen(e) <= 1024;
}

/* A number of seconds from 1 to max (a command-line value); -1 if it is not one. */
static long parse_seconds(const char *s, long max)
{
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (!*s || *end || errno || v < 1 || v > max)
                return -1;
        return v;
}

/*
 * The "data" of a health_check or readiness_health_check PATCH: the fields given (endpoint NULL, numbers
 * <= 0: absent, so the platform keeps them). Caller owns.
 */
static json_t *check_data(const char *endpoint, long timeout, long ito, long interval)
{
        json_t *d = json_object();
        if (endpoint)
                json_object_set_new(d, "endpoint", json_string(endpoint));
        if (timeout > 0)
                json_object_set_new(d, "timeout", json_integer(timeout));
        if (ito > 0)
                json_object_set_new(d, "invocation_timeout", json_integer(ito));
        if (interval > 0)
                json_object_set_new(d, "interval", json_integer(interval));
        return d;
}

static int cmd_app(struct pctx *p, const char *name, struct berr **err);
static int app_document(struct pctx *p, const char *name, json_t **ret, struct berr **err);

/* What one app of a push needs, from the command line and/or the manifest. Strings are borrowed. */
struct push_app {
        const char *name, *image, *user, *command, *hc, *endpoint, *hostname;
        const char *rhc, *rendpoint; /* readiness check type and endpoint */
        long inst, mem, disk, timeout;
        long hc_ito, hc_interval, r_ito, r_interval; /* invocation timeouts and intervals, -1 unset */
        bool no_route, no_start, rolling;
        json_t *env;         /* manifest env (object of strings) or NULL; borrowed */
        char *const *routes; /* manifest routes or NULL; borrowed */
        json_t *resolved;    /* owned: [{"host","path","domain_guid"}] to map; empty with no_route */
};

/* Read a manifest file (at most MANIFEST_MAX_BYTES) and parse it. Caller owns *ret. */
static int manifest_load(const char *path, struct manifest **ret, struct berr **err)
{
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        if (!f)
                return berr_set_errno(err, -errno, "open manifest %s", path);
        _cleanup_free_ char *buf = xmalloc(MANIFEST_MAX_BYTES + 1);
        size_t n = fread(buf, 1, MANIFEST_MAX_BYTES + 1, f);
        if (ferror(f))
                return berr_set(err, -EIO, "read manifest %s", path);
        int r = manifest_parse(buf, n, ret, err);
        if (r < 0)
                return berr_prefix(err, r, "%s", path);
        return 0;
}

/*
 * The routes a push maps, resolved against the platform's domains (GET only, nothing changes): the
 * manifest's "host.domain[/path]" (the longest domain that is a suffix wins, as cf splits them), else
 * --hostname or the app's name on the first domain. Fills a->resolved.
 */
static int push_resolve_routes(struct push_app *a, json_t *domains, struct berr **err)
{
        a->resolved = json_array();
        if (a->no_route)
                return 0;
        json_t *d0 = json_array_get(domains, 0);
        if (!a->routes || a->hostname) {
                if (!d0)
                        return 0; /* no domain at all: nothing to route to (as before) */
                const char *host = a->hostname ?: a->name;
                _cleanup_berr_ struct berr *e = NULL;
                _cleanup_free_ char *lower = xstrdup(host);
                for (char *c = lower; *c; c++)
                        *c = (char)tolower((unsigned char)*c);
                if (!a->hostname) {
                        /* As cf derives a host from an app name: other characters become '-'. */
                        for (char *c = lower; *c; c++)
                                if (!isalnum((unsigned char)*c) && *c != '-')
                                        *c = '-';
                        size_t n = strlen(lower), b = strspn(lower, "-");
                        while (n > b && lower[n - 1] == '-')
                                n--;
                        memmove(lower, lower + b, n - b);
                        lower[MIN(n - b, (size_t)63)] = 0;
                }
                if (manifest_route_check(lower, &e) < 0 || strchr(lower, '.') || strchr(lower, '/'))
                        return berr_set(
                            err, -EINVAL,
                            "For application '%s': host name '%s' is not a DNS label (letters, digits "
                            "and '-')",
                            a->name, host);
                json_array_append_new(a->resolved, json_pack("{s:s,s:s,s:O}", "host", lower, "path", "",
                                                             "domain_guid", json_object_get(d0, "guid")));
                return 0;
        }
        for (size_t i = 0; a->routes[i]; i++) {
                const char *rt = a->routes[i];
                size_t hl = strcspn(rt, "/");
                json_t *best = NULL;
                size_t best_len = 0, k;
                json_t *d;
                json_array_foreach (domains, k, d) {
                        const char *dn = json_string_value(json_object_get(d, "name"));
                        size_t dl = dn ? strlen(dn) : 0;
                        if (!dl || dl > hl || dl <= best_len)
                                continue;
                        if (strncasecmp(rt + hl - dl, dn, dl) == 0 && (dl == hl || rt[hl - dl - 1] == '.')) {
                                best = d;
                                best_len = dl;
                        }
                }
                if (!best)
                        return berr_set(err, -ENOENT, "For application '%s': route %s: no such domain",
                                        a->name, rt);
                if (best_len == hl)
                        return berr_set(
                            err, -EINVAL,
                            "For application '%s': route %s: a route needs a host name before the "
                            "domain",
                            a->name, rt);
                _cleanup_free_ char *host = strndup(rt, hl - best_len - 1);
                if (!host)
                        return berr_set(err, -ENOMEM, "out of memory");
                if (strchr(host, '.'))
                        return berr_set(
                            err, -EINVAL,
                            "For application '%s': route %s: the host name '%s' must be one DNS label",
                            a->name, rt, host);
                json_array_append_new(a->resolved, json_pack("{s:s,s:s,s:O}", "host", host, "path", rt + hl,
                                                             "domain_guid", json_object_get(best, "guid")));
        }
        return 0;
}

/* Find the route host/path on domain_guid, creating it in the targeted space if missing. Caller owns *ret. */
static int route_find_or_create(struct pctx *p, const char *host, const char *path, const char *domain_guid,
                                bool create, json_t **ret, struct berr **err)
{
        _cleanup_free_ char *h = urlenc(host), *q = NULL;
        _cleanup_json_ json_t *l = NULL;
        if (!h || asprintf(&q, "/v3/routes?hosts=%s&domain_guids=%s&per_page=5000", h, domain_guid) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        int r = api(p, "GET", q, NULL, &l, err);
        if (r < 0)
                return r;
        size_t i;
        json_t *x;
        json_array_foreach (json_object_get(l, "resources"), i, x) {
                const char *xp = json_string_value(json_object_get(x, "path")) ?: "";
                if (strcmp(xp, path) == 0) {
                        *ret = json_incref(x);
                        return 0;
                }
        }
        if (!create) {
                *ret = NULL;
                return 0;
        }
        _cleanup_json_ json_t *b = json_pack(
            "{s:s, s:s, s:{s:{s:{s:s}}, s:{s:{s:s}}}}", "host", host, "path", path, "relationships", "space",
            "data", "guid", cfg_sub(p, "space", "guid"), "domain", "data", "guid", domain_guid);
        return api(p, "POST", "/v3/routes", b, ret, err);
}

/* Was this instance report already in `before` (a stats list), i.e. not news since the (re)start? */
static bool stats_stale(json_t *before, json_t *x)
{
        const char *g = json_string_value(json_object_get(x, "guid"));
        const char *since = json_string_value(json_object_get(x, "since"));
        size_t i;
        json_t *b;
        json_array_foreach (json_object_get(before, "resources"), i, b) {
                const char *bg = json_string_value(json_object_get(b, "guid"));
                const char *bs = json_string_value(json_object_get(b, "since"));
                if (g && bg && strcmp(g, bg) == 0 && since && bs && strcmp(since, bs) == 0)
                        return true;
        }
        return false;
}

/*
 * Wait until an instance of process pg runs (or all crashed / the start timeout passed → error). before:
 * the stats as they were before the start or restart (may be NULL): a crash reported there is the old
 * instances', not news (the controller may still list it right after the restart).
 */
static int wait_started(struct pctx *p, const char *pg, long inst, long timeout, json_t *before,
                        struct berr **err)
{
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "/v3/processes/%s/stats", pg) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        long limit_ms = ((timeout > 0 ? timeout : 60) + 10) * 1000;
        for (long waited = 0;; waited += 200) {
                _cleanup_json_ json_t *st = NULL;
                int r = api(p, "GET", path, NULL, &st, err);
                if (r < 0)
                        return r;
                size_t i, n = 0, crashed = 0;
                json_t *x;
                bool running = false;
                json_array_foreach (json_object_get(st, "resources"), i, x) {
                        const char *s = json_string_value(json_object_get(x, "state")) ?: "";
                        n++;
                        running |= strcmp(s, "RUNNING") == 0 && !stats_stale(before, x);
                        crashed += strcmp(s, "CRASHED") == 0 && !stats_stale(before, x);
                }
                if (running || inst == 0)
                        return 0;
                if ((n > 0 && crashed == n) || waited >= limit_ms) {
                        json_array_foreach (json_object_get(st, "resources"), i, x)
                                fprintf(stderr, "#%lld %s %s\n",
                                        (long long)json_integer_value(json_object_get(x, "index")),
                                        json_string_value(json_object_get(x, "state")) ?: "",
                                        json_string_value(json_object_get(x, "details")) ?: "");
                        return berr_set(err, -EIO, "Start unsuccessful");
                }
                usleep(200 * 1000);
        }
}

#define DEPLOY_POLL_MS 200

/*
 * A rolling deployment of app_guid (docs/PLATFORM.md, Cloud Foundry V3 deployments): POST
 * /v3/deployments (with droplet_guid, or NULL for the current droplet: a rolling restart), then GET it
 * every DEPLOY_POLL_MS until FINALIZED. Reason DEPLOYED is success; any other reason is an error. *ret (may
 * be NULL) gets the final deployment (caller owns).
 */
static int deploy_rolling(struct pctx *p, const char *app_guid_s, const char *droplet_guid, json_t **ret,
                          struct berr **err)
{
        _cleanup_json_ json_t *b = json_pack("{s:s,s:{s:{s:{s:s}}}}", "strategy", "rolling", "relationships",
                                             "app", "data", "guid", app_guid_s);
        if (droplet_guid)
                json_object_set_new(b, "droplet", json_pack("{s:s}", "guid", droplet_guid));
        _cleanup_json_ json_t *dep = NULL;
        _cleanup_berr_ struct berr *e = NULL;
        int r = api(p, "POST", "/v3/deployments", b, &dep, &e);
        if (r == -ENOENT && e && strstr(berr_msg(e), "Unknown request"))
                return berr_set(err, -ENOTSUP,
                                "this platform has no rolling deployments (POST /v3/deployments: %s)",
                                berr_msg(e));
        if (r < 0) {
                if (err && !*err)
                        *err = TAKE_PTR(e);
                return r;
        }
        const char *g = json_string_value(json_object_get(dep, "guid"));
        if (!g)
                return berr_set(err, -EPROTO, "POST /v3/deployments answered without a deployment guid");
        _cleanup_free_ char *dg = xstrdup(g); /* dep is replaced at each poll */
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "/v3/deployments/%s", dg) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        for (;;) {
                json_t *status = json_object_get(dep, "status");
                const char *value = json_string_value(json_object_get(status, "value")) ?: "";
                const char *reason = json_string_value(json_object_get(status, "reason")) ?: "";
                if (strcmp(value, "FINALIZED") == 0) {
                        if (strcmp(reason, "DEPLOYED") != 0)
                                return berr_set(err, -EIO, "Deployment %s: %s", dg,
                                                *reason ? reason : "failed");
                        if (ret)
                                *ret = TAKE_PTR(dep);
                        return 0;
                }
                usleep(DEPLOY_POLL_MS * 1000);
                json_decref(dep);
                dep = NULL;
                r = api(p, "GET", path, NULL, &dep, err);
                if (r < 0)
                        return r;
        }
}

/* Push one app (a->resolved already filled): every request of the push. */
/* Where a command's progress lines go: stdout, or stderr when --json keeps stdout for JSON. */
static FILE *progress_out(struct pctx *p)
{
        return p->json ? stderr : stdout;
}

static int push_one(struct pctx *p, struct push_app *a, const char *pw, struct berr **err)
{
        const char *name = a->name;
        fprintf(progress_out(p), "Pushing app %s to org %s / space %s as %s...\n", name,
                cfg_sub(p, "org", "name") ?: "", cfg_sub(p, "space", "name") ?: "",
                cfg_str(p, "username") ?: "");
        _cleanup_json_ json_t *app = NULL;
        int r = find_app_opt(p, name, false, &app, err);
        if (r < 0)
                return r;
        bool created = false;
        if (!app) {
                _cleanup_json_ json_t *b = json_pack(
                    "{s:s,s:{s:{s:{s:s}}},s:{s:s,s:{}}}", "name", name, "relationships", "space", "data",
                    "guid", cfg_sub(p, "space", "guid"), "lifecycle", "type", "docker", "data");
                if (a->env)
                        json_object_set(b, "environment_variables", a->env);
                struct berr *e = NULL;
                if (api(p, "POST", "/v3/apps", b, &app, &e) < 0) {
                        r = berr_set(err, -EIO, "For application '%s': %s", name, berr_msg(e));
                        berr_free(e);
                        return r;
                }
                created = true;
        }
        const char *ag = app_guid(app);
        _cleanup_free_ char *path = NULL;
        if (!created && a->env && json_object_size(a->env) > 0) {
                _cleanup_json_ json_t *eb = json_pack("{s:O}", "var", a->env);
                if (asprintf(&path, "/v3/apps/%s/environment_variables", ag) < 0)
                        return berr_set(err, -ENOMEM, "out of memory");
                r = api(p, "PATCH", path, eb, NULL, err);
                if (r < 0)
                        return r;
        }
        const char *state = json_string_value(json_object_get(app, "state"));
        bool was_started = state && strcmp(state, "STARTED") == 0;
        bool rolling = a->rolling && !created && was_started && !a->no_start;
        _cleanup_json_ json_t *pb = json_pack("{s:s,s:{s:s},s:{s:{s:{s:s}}}}", "type", "docker", "data",
                                              "image", a->image, "relationships", "app", "data", "guid", ag);
        if (a->user) {
                json_object_set_new(json_object_get(pb, "data"), "username", json_string(a->user));
                json_object_set_new(json_object_get(pb, "data"), "password", json_string(pw));
        }
        _cleanup_json_ json_t *pkg = NULL, *build = NULL;
        r = api(p, "POST", "/v3/packages", pb, &pkg, err);
        if (r == 0) {
                fprintf(progress_out(p), "Staging app and tracing logs...\n");
                _cleanup_json_ json_t *bb =
                    json_pack("{s:{s:O}}", "package", "guid", json_object_get(pkg, "guid"));
                r = api(p, "POST", "/v3/builds", bb, &build, err);
        }
        if (r < 0) {
                if (created) {
                        struct berr *e = NULL;
                        free(path), path = NULL;
                        if (asprintf(&path, "/v3/apps/%s", ag) >= 0)
                                api(p, "DELETE", path, NULL, NULL, &e);
                        berr_free(e);
                }
                return r;
        }
        const char *dg = json_string_value(json_object_get(json_object_get(build, "droplet"), "guid"));
        if (!rolling) {
                _cleanup_json_ json_t *db = json_pack("{s:{s:s?}}", "data", "guid", dg);
                free(path), path = NULL;
                if (asprintf(&path, "/v3/apps/%s/relationships/current_droplet", ag) < 0)
                        return berr_set(err, -ENOMEM, "out of memory");
                r = api(p, "PATCH", path, db, NULL, err);
                if (r < 0)
                        return r;
        }
        _cleanup_json_ json_t *proc = NULL;
        free(path), path = NULL;
        if (asprintf(&path, "/v3/apps/%s/processes/web", ag) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        r = api(p, "GET", path, NULL, &proc, err);
        if (r < 0)
                return r;
        const char *pg = json_string_value(json_object_get(proc, "guid"));
        bool live = a->hc || a->endpoint || a->timeout > 0 || a->hc_ito > 0 || a->hc_interval > 0;
        bool ready = a->rhc || a->rendpoint || a->r_ito > 0 || a->r_interval > 0;
        if (a->command || live || ready) {
                _cleanup_json_ json_t *pu = json_object();
                if (a->command)
                        json_object_set_new(pu, "command", json_string(a->command));
                /* An endpoint alone means http; without type or endpoint the type stays as it is. */
                if (live) {
                        json_t *hc = json_pack(
                            "{s:o}", "data", check_data(a->endpoint, a->timeout, a->hc_ito, a->hc_interval));
                        if (a->hc || a->endpoint)
                                json_object_set_new(hc, "type", json_string(a->hc ?: "http"));
                        json_object_set_new(pu, "health_check", hc);
                }
                if (ready) {
                        json_t *rc =
                            json_pack("{s:o}", "data", check_data(a->rendpoint, -1, a->r_ito, a->r_interval));
                        if (a->rhc || a->rendpoint)
                                json_object_set_new(rc, "type", json_string(a->rhc ?: "http"));
                        json_object_set_new(pu, "readiness_health_check", rc);
                }
                free(path), path = NULL;
                if (asprintf(&path, "/v3/processes/%s", pg) < 0)
                        return berr_set(err, -ENOMEM, "out of memory");
                r = api(p, "PATCH", path, pu, NULL, err);
                if (r < 0)
                        return r;
        }
        if (a->inst >= 0 || a->mem > 0 || a->disk > 0) {
                _cleanup_json_ json_t *sb = json_object();
                if (a->inst >= 0)
                        json_object_set_new(sb, "instances", json_integer(a->inst));
                if (a->mem > 0)
                        json_object_set_new(sb, "memory_in_mb", json_integer(a->mem));
                if (a->disk > 0)
                        json_object_set_new(sb, "disk_in_mb", json_integer(a->disk));
                free(path), path = NULL;
                if (asprintf(&path, "/v3/processes/%s/actions/scale", pg) < 0)
                        return berr_set(err, -ENOMEM, "out of memory");
                r = api(p, "POST", path, sb, NULL, err);
                if (r < 0)
                        return r;
        }
        size_t i;
        json_t *rt;
        json_array_foreach (a->resolved, i, rt) {
                _cleanup_json_ json_t *route = NULL;
                r = route_find_or_create(p, json_string_value(json_object_get(rt, "host")),
                                         json_string_value(json_object_get(rt, "path")),
                                         json_string_value(json_object_get(rt, "domain_guid")), true, &route,
                                         err);
                if (r < 0)
                        return r;
                _cleanup_json_ json_t *dd = json_pack("{s:[{s:{s:s}}]}", "destinations", "app", "guid", ag);
                free(path), path = NULL;
                if (asprintf(&path, "/v3/routes/%s/destinations", app_guid(route)) < 0)
                        return berr_set(err, -ENOMEM, "out of memory");
                r = api(p, "POST", path, dd, NULL, err);
                if (r < 0)
                        return r;
        }
        if (a->no_start)
                return 0;
        if (rolling) {
                fprintf(progress_out(p), "Deploying app %s with a rolling deployment...\n", name);
                fflush(progress_out(p));
                return deploy_rolling(p, ag, dg, NULL, err);
        }
        _cleanup_json_ json_t *before = NULL;
        _cleanup_berr_ struct berr *be = NULL;
        free(path), path = NULL;
        if (asprintf(&path, "/v3/processes/%s/stats", pg) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        api(p, "GET", path, NULL, &before, &be); /* without it, the wait trusts every report */
        free(path), path = NULL;
        if (asprintf(&path, "/v3/apps/%s/actions/%s", ag, was_started ? "restart" : "start") < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        r = api(p, "POST", path, NULL, NULL, err);
        if (r < 0)
                return r;
        fprintf(progress_out(p), "Waiting for app %s to start...\n", name);
        fflush(progress_out(p));
        return wait_started(p, pg, a->inst, a->timeout, before, err);
}

static int cmd_push(struct pctx *p, int argc, char **argv, struct berr **err)
{
        const char *image = NULL, *user = NULL, *command = NULL, *hc = NULL, *endpoint = NULL,
                   *hostname = NULL, *manifest_path = NULL, *rhc = NULL, *rendpoint = NULL;
        long inst = -1, mem = -1, disk = -1, timeout = -1;
        bool no_route = false, no_start = false, rolling = false;
        static const struct option lo[] = { { "docker-image", required_argument, NULL, 'o' },
                                            { "docker-username", required_argument, NULL, 'U' },
                                            { "endpoint", required_argument, NULL, 'e' },
                                            { "no-route", no_argument, NULL, 'R' },
                                            { "no-start", no_argument, NULL, 'S' },
                                            { "hostname", required_argument, NULL, 'n' },
                                            { "strategy", required_argument, NULL, 'Y' },
                                            { "readiness-health-check-type", required_argument, NULL, 'K' },
                                            { "readiness-endpoint", required_argument, NULL, 'P' },
                                            { 0 } };
        const char *u =
            "[APP] [-f manifest.yml] [--docker-image REF] [--docker-username U] [-c CMD] [-i N] "
            "[-m 256M] [-k 1G] [-u port|http|process] [--endpoint /path] [-t SECONDS] "
            "[--readiness-health-check-type process|port|http] [--readiness-endpoint /path] [--no-route] "
            "[--hostname H] [--no-start] [--strategy rolling]";
        int c, flags = 0;
        char *end;
        while ((c = getopt_long(argc, argv, "o:c:i:m:k:u:t:n:f:", lo, NULL)) != -1) {
                flags += c != 'f' && c != 'S' && c != 'Y';
                switch (c) {
                case 'f':
                        manifest_path = optarg;
                        break;
                case 'o':
                        image = optarg;
                        break;
                case 'U':
                        user = optarg;
                        break;
                case 'c':
                        command = optarg;
                        break;
                case 'e':
                        if (!check_endpoint_valid(optarg))
                                return usage("push", u, err);
                        endpoint = optarg;
                        break;
                case 'P':
                        if (!check_endpoint_valid(optarg))
                                return usage("push", u, err);
                        rendpoint = optarg;
                        break;
                case 'K':
                        if (!check_type_valid(optarg))
                                return usage("push", u, err);
                        rhc = optarg;
                        break;
                case 'R':
                        no_route = true;
                        break;
                case 'S':
                        no_start = true;
                        break;
                case 'n':
                        hostname = optarg;
                        break;
                case 'Y':
                        if (strcmp(optarg, "rolling") != 0)
                                return usage("push", u, err);
                        rolling = true;
                        break;
                case 'i':
                        inst = strtol(optarg, &end, 10);
                        if (!*optarg || *end || inst < 0 || inst > INT32_MAX)
                                return usage("push", u, err);
                        break;
                case 'm':
                        if ((mem = parse_size_mb(optarg)) < 0)
                                return usage("push", u, err);
                        break;
                case 'k':
                        if ((disk = parse_size_mb(optarg)) < 0)
                                return usage("push", u, err);
                        break;
                case 't':
                        timeout = strtol(optarg, &end, 10);
                        if (!*optarg || *end || timeout <= 0 || timeout > MANIFEST_TIMEOUT_MAX)
                                return usage("push", u, err);
                        break;
                case 'u':
                        if (!check_type_valid(optarg))
                                return usage("push", u, err);
                        hc = optarg;
                        break;
                default:
                        return usage("push", u, err);
                }
        }
        if (optind + 1 < argc || (!manifest_path && (optind + 1 != argc || !image)))
                return usage("push", u, err);
        if (rhc && rendpoint && strcmp(rhc, "http") != 0)
                return berr_set(err, -EINVAL,
                                "--readiness-endpoint needs --readiness-health-check-type http (not %s)",
                                rhc),
                       CLI_EXIT_USAGE;
        const char *only = optind < argc ? argv[optind] : NULL;
        _cleanup_(manifest_freep) struct manifest *m = NULL;
        if (manifest_path && manifest_load(manifest_path, &m, err) < 0)
                return CLI_EXIT_FAILURE;
        for (size_t i = 0; m && m->warnings[i]; i++)
                fprintf(stderr, "berth: warning: %s\n", m->warnings[i]);
        /* The apps of this push, in order: the command line's one, or the manifest's (APP selects one). */
        size_t napps = 1;
        const struct manifest_app *mapps[MANIFEST_MAX_APPS];
        mapps[0] = NULL;
        if (m) {
                napps = 0;
                for (size_t i = 0; i < m->n_apps; i++)
                        if (!only || strcmp(m->apps[i].name, only) == 0)
                                mapps[napps++] = &m->apps[i];
                if (napps == 0)
                        return berr_set(err, -ENOENT, "Could not find app named '%s' in manifest", only),
                               CLI_EXIT_FAILURE;
                if (napps > 1 && flags > 0)
                        return berr_set(err, -EINVAL,
                                        "Command line flags (except -f, --no-start and --strategy) cannot be "
                                        "applied when pushing multiple apps from a manifest file."),
                               CLI_EXIT_USAGE;
        }
        struct push_app apps[MANIFEST_MAX_APPS];
        for (size_t i = 0; i < napps; i++) {
                const struct manifest_app *ma = mapps[i];
                apps[i] = (struct push_app){
                        .name = ma ? ma->name : only,
                        .image = image
                                     ?: ma ? ma->image
                                           : NULL,
                        .user = user
                                    ?: ma ? ma->username
                                          : NULL,
                        .command = command
                                       ?: ma ? ma->command
                                             : NULL,
                        .hc = hc
                                  ?: ma ? ma->health_check_type
                                        : NULL,
                        .endpoint = endpoint
                                        ?: ma ? ma->health_check_endpoint
                                              : NULL,
                        .rhc = rhc
                                   ?: ma ? ma->readiness_type
                                         : NULL,
                        .rendpoint = rendpoint
                                         ?: ma ? ma->readiness_endpoint
                                               : NULL,
                        .hc_ito = ma ? ma->health_check_invocation_timeout : -1,
                        .hc_interval = ma ? ma->health_check_interval : -1,
                        .r_ito = ma ? ma->readiness_invocation_timeout : -1,
                        .r_interval = ma ? ma->readiness_interval : -1,
                        .hostname = hostname,
                        .inst = inst >= 0 ? inst
                                : ma      ? ma->instances
                                          : -1,
                        .mem = mem > 0 ? mem
                               : ma    ? ma->memory_mb
                                       : -1,
                        .disk = disk > 0 ? disk
                                : ma     ? ma->disk_mb
                                         : -1,
                        .timeout = timeout > 0 ? timeout
                                   : ma        ? ma->timeout
                                               : -1,
                        .no_route = no_route || (ma && ma->no_route),
                        .no_start = no_start,
                        .rolling = rolling,
                        .env = ma ? ma->env : NULL,
                        .routes = ma ? ma->routes : NULL,
                };
        }
        int rc = CLI_EXIT_FAILURE;
        _cleanup_free_ char *prompted = NULL;
        _cleanup_json_ json_t *domains = NULL, *dl = NULL, *views = json_array();
        const char *pw = getenv("BERTH_DOCKER_PASSWORD");
        if (!pw || !*pw)
                pw = getenv("CF_DOCKER_PASSWORD");
        /* Everything is checked before the first request that changes anything. */
        bool need_pw = false;
        for (size_t i = 0; i < napps; i++) {
                if (!apps[i].image) {
                        berr_set(
                            err, -EINVAL,
                            "For application '%s': no Docker image (--docker-image REF or docker.image in "
                            "the manifest)",
                            apps[i].name);
                        rc = m ? CLI_EXIT_FAILURE : CLI_EXIT_USAGE;
                        goto out;
                }
                need_pw |= apps[i].user != NULL;
                /* A flag's endpoint over a manifest's type (or the reverse) must still make sense. */
                if (apps[i].rendpoint && apps[i].rhc && strcmp(apps[i].rhc, "http") != 0) {
                        berr_set(err, -EINVAL,
                                 "For application '%s': a readiness endpoint needs readiness health check "
                                 "type http (not %s)",
                                 apps[i].name, apps[i].rhc);
                        rc = m ? CLI_EXIT_FAILURE : CLI_EXIT_USAGE;
                        goto out;
                }
        }
        if (need_pw && (!pw || !*pw)) {
                prompted = read_secret("Docker password: ");
                if (!prompted) {
                        berr_set(err, -EINVAL,
                                 "Environment variable CF_DOCKER_PASSWORD not set (needed with "
                                 "--docker-username or docker.username)");
                        rc = CLI_EXIT_USAGE;
                        goto out;
                }
                pw = prompted;
        }
        if (need_space(p, err) < 0)
                goto out;
        if (api(p, "GET", "/v3/domains?per_page=5000", NULL, &dl, err) < 0)
                goto out;
        json_t *dres = json_object_get(dl, "resources");
        domains = dres ? json_incref(dres) : json_array();
        for (size_t i = 0; i < napps; i++)
                if (push_resolve_routes(&apps[i], domains, err) < 0)
                        goto out;
        for (size_t i = 0; i < napps; i++) {
                if (push_one(p, &apps[i], pw, err) < 0)
                        goto out;
                if (p->json) {
                        /* --json: the app views, one document (a list for several apps) */
                        json_t *doc = NULL;
                        _cleanup_berr_ struct berr *ve = NULL;
                        if (app_document(p, apps[i].name, &doc, &ve) < 0)
                                doc = json_pack("{s:{s:s}}", "app", "name", apps[i].name);
                        json_array_append_new(views, doc);
                        continue;
                }
                printf("\n");
                fflush(stdout);
                /* The app view is a courtesy: the push itself succeeded whatever it says. */
                _cleanup_berr_ struct berr *ve = NULL;
                if (cmd_app(p, apps[i].name, &ve) != 0)
                        printf("name:              %s\nrequested state:   %s\n", apps[i].name,
                               no_start ? "stopped" : "started");
                if (i + 1 < napps)
                        printf("\n");
        }
        if (p->json)
                print_json(napps == 1 ? json_array_get(views, 0) : views);
        rc = 0;
out:
        for (size_t i = 0; i < napps; i++)
                json_decref(apps[i].resolved);
        return rc;
}

/* GET that may 404: *ret NULL then. */
static int api_get_opt(struct pctx *p, const char *path, json_t **ret, struct berr **err)
{
        _cleanup_berr_ struct berr *e = NULL;
        int r = api(p, "GET", path, NULL, ret, &e);
        if (r == -ENOENT) {
                *ret = NULL;
                return 0;
        }
        if (r < 0 && err && !*err)
                *err = TAKE_PTR(e);
        return r;
}

/* "12.5M", "1G", "512K" for the app view. */
static void human_bytes(double b, char *buf, size_t n)
{
        static const char *u[] = { "B", "K", "M", "G", "T" };
        size_t i = 0;
        while (b >= 1024 && i + 1 < ARRAY_SIZE(u)) {
                b /= 1024;
                i++;
        }
        if (b == (double)(long long)b)
                snprintf(buf, n, "%lld%s", (long long)b, u[i]);
        else
                snprintf(buf, n, "%.1f%s", b, u[i]);
}

/* The app, its web process, droplet, routes and instances: `berth app`'s document. Caller owns *ret. */
static int app_document(struct pctx *p, const char *name, json_t **ret, struct berr **err)
{
        _cleanup_json_ json_t *app = NULL, *proc = NULL, *droplet = NULL, *routes = NULL, *stats = NULL;
        _cleanup_free_ char *pp = NULL, *dp = NULL, *rp = NULL, *sp = NULL;
        if (find_app(p, name, &app, err) < 0 ||
            asprintf(&pp, "/v3/apps/%s/processes/web", app_guid(app)) < 0 ||
            api(p, "GET", pp, NULL, &proc, err) < 0 ||
            asprintf(&dp, "/v3/apps/%s/droplets/current", app_guid(app)) < 0 ||
            api_get_opt(p, dp, &droplet, err) < 0 || asprintf(&rp, "/v3/apps/%s/routes", app_guid(app)) < 0 ||
            api(p, "GET", rp, NULL, &routes, err) < 0 ||
            asprintf(&sp, "/v3/processes/%s/stats", app_guid(proc)) < 0 ||
            api(p, "GET", sp, NULL, &stats, err) < 0)
                return -EIO;
        json_t *rl = json_object_get(routes, "resources");
        json_t *il = json_object_get(stats, "resources");
        *ret = json_pack("{s:O, s:O, s:O, s:O, s:O}", "app", app, "process", proc, "droplet",
                         droplet ? droplet : json_null(), "routes", rl ? rl : json_array(), "instances",
                         il ? il : json_array());
        return 0;
}

#define APP_CRASH_EVENTS    50 /* the newest crash events searched for an instance's exit status */
#define APP_CRASH_LOG_LINES 10 /* log lines shown per crashed instance */
#define LOGS_RECENT_LINES   1000

/*
 * The details column of a CRASHED instance: the reason the stats give ("exited with status 3", "out of
 * memory", "health check failed", ...) with the exit status of its last crash (audit.app.process.crash)
 * when the reason does not say it, and how many times it crashed. NULL for other instances. Caller frees.
 */
static char *crash_details(json_t *inst, json_t *events)
{
        if (strcmp(json_string_value(json_object_get(inst, "state")) ?: "", "CRASHED") != 0)
                return NULL;
        const char *reason = json_string_value(json_object_get(inst, "details"));
        const char *guid = json_string_value(json_object_get(inst, "guid"));
        json_int_t idx = json_integer_value(json_object_get(inst, "index"));
        json_t *data = NULL, *e;
        size_t i;
        json_array_foreach (json_object_get(events, "resources"), i, e) {
                json_t *d = json_object_get(e, "data");
                const char *ig = json_string_value(json_object_get(d, "instance"));
                if ((guid && ig && strcmp(guid, ig) == 0) ||
                    (!ig && json_integer_value(json_object_get(d, "index")) == idx)) {
                        data = d;
                        break;
                }
        }
        if (!reason)
                reason = json_string_value(json_object_get(data, "reason")) ?: "crashed";
        json_t *es = json_object_get(data, "exit_status");
        char status[48] = "";
        if (json_is_integer(es) && !strstr(reason, "status"))
                snprintf(status, sizeof(status), ", exit status %lld", (long long)json_integer_value(es));
        json_t *cc = json_object_get(data, "crash_count");
        char count[48] = "";
        if (json_is_integer(cc) && json_integer_value(cc) > 0)
                snprintf(count, sizeof(count), " (crashed %lld time%s)", (long long)json_integer_value(cc),
                         json_integer_value(cc) == 1 ? "" : "s");
        return xasprintf("%s%s%s", reason, status, count);
}

/*
 * An instance's state as `berth app` shows it: the stats' state in lowercase, and "running (not ready)" for
 * a RUNNING instance whose readiness check fails ("routable": false), which the router leaves out.
 */
static void instance_state(json_t *inst, char *buf, size_t n)
{
        const char *s = json_string_value(json_object_get(inst, "state")) ?: "";
        bool not_ready = strcmp(s, "RUNNING") == 0 && json_is_false(json_object_get(inst, "routable"));
        snprintf(buf, n, "%s%s", s, not_ready ? " (not ready)" : "");
        for (char *c = buf; *c; c++)
                *c = (char)tolower((unsigned char)*c);
}

static int cmd_app(struct pctx *p, const char *name, struct berr **err)
{
        _cleanup_json_ json_t *doc = NULL;
        if (app_document(p, name, &doc, err) < 0)
                return CLI_EXIT_FAILURE;
        if (p->json) {
                print_json(doc);
                return 0;
        }
        json_t *app = json_object_get(doc, "app"), *proc = json_object_get(doc, "process"),
               *droplet = json_object_get(doc, "droplet"), *inst = json_object_get(doc, "instances");
        printf("Showing health and status for app %s in org %s / space %s as %s...\n\n", name,
               cfg_sub(p, "org", "name") ?: "?", cfg_sub(p, "space", "name") ?: "?",
               cfg_str(p, "username") ?: "?");
        printf("name:              %s\n", json_string_value(json_object_get(app, "name")) ?: "");
        printf("requested state:   %s\n", json_string_value(json_object_get(app, "state")) ?: "");
        printf("routes:            ");
        size_t i;
        json_t *x;
        json_array_foreach (json_object_get(doc, "routes"), i, x)
                printf("%s%s", i ? ", " : "", json_string_value(json_object_get(x, "url")) ?: "");
        printf("\n");
        if (json_is_object(droplet))
                printf("docker image:      %s (%s)\n",
                       json_string_value(json_object_get(droplet, "docker_image")) ?: "",
                       json_string_value(json_object_get(droplet, "image")) ?: "");
        size_t running = 0;
        json_array_foreach (inst, i, x)
                running += strcasecmp(json_string_value(json_object_get(x, "state")) ?: "", "RUNNING") == 0;
        char mem[32], disk[32];
        json_int_t mem_mb = json_integer_value(json_object_get(proc, "memory_in_mb"));
        json_int_t disk_mb = json_integer_value(json_object_get(proc, "disk_in_mb"));
        human_bytes((double)mem_mb * 1048576, mem, sizeof(mem));
        human_bytes((double)disk_mb * 1048576, disk, sizeof(disk));
        printf("\ntype:           web\ninstances:      %zu/%lld\nmemory usage:   %s\n", running,
               (long long)json_integer_value(json_object_get(proc, "instances")), mem);
        const char *command = json_string_value(json_object_get(proc, "command"));
        if (!command && json_is_object(droplet))
                command =
                    json_string_value(json_object_get(json_object_get(droplet, "process_types"), "web"));
        printf("start command:  %s\n", command ?: "");
        /* The state column is as wide as its longest state ("running (not ready)"). */
        int sw = 9;
        json_array_foreach (inst, i, x) {
                char st[48];
                instance_state(x, st, sizeof(st));
                sw = MAX(sw, (int)strlen(st));
        }
        printf("     %-*s %-22s %-6s %-16s %-16s %s\n", sw, "state", "since", "cpu", "memory", "disk",
               "details");
        /* Crashed instances: their last crash's exit status (audit events) and last log lines. */
        _cleanup_json_ json_t *crashes = NULL, *logs = NULL;
        bool any_crashed = false;
        json_array_foreach (inst, i, x)
                any_crashed |= strcmp(json_string_value(json_object_get(x, "state")) ?: "", "CRASHED") == 0;
        if (any_crashed) {
                _cleanup_free_ char *ep = NULL, *lp = NULL;
                _cleanup_berr_ struct berr *e1 = NULL, *e2 = NULL;
                /* courtesy data: the view stands without it */
                if (asprintf(
                        &ep,
                        "/v3/audit_events?target_guids=%s&types=audit.app.process.crash&order_by=-created_at"
                        "&per_page=%d",
                        app_guid(app), APP_CRASH_EVENTS) >= 0)
                        api(p, "GET", ep, NULL, &crashes, &e1);
                if (asprintf(&lp, "/v3/apps/%s/logs?lines=%d", app_guid(app), LOGS_RECENT_LINES) >= 0)
                        api(p, "GET", lp, NULL, &logs, &e2);
        }
        json_array_foreach (inst, i, x) {
                json_t *u = json_object_get(x, "usage");
                char m[32], mq[32], d[32], dq[32], st[48];
                _cleanup_free_ char *details = crash_details(x, crashes);
                human_bytes((double)json_integer_value(json_object_get(u, "mem")), m, sizeof(m));
                human_bytes((double)json_integer_value(json_object_get(x, "mem_quota")), mq, sizeof(mq));
                human_bytes((double)json_integer_value(json_object_get(u, "disk")), d, sizeof(d));
                human_bytes((double)json_integer_value(json_object_get(x, "disk_quota")), dq, sizeof(dq));
                instance_state(x, st, sizeof(st));
                char mcol[80], dcol[80];
                snprintf(mcol, sizeof(mcol), "%s of %s", m, mq);
                snprintf(dcol, sizeof(dcol), "%s of %s", d, dq);
                char cpu[32];
                snprintf(cpu, sizeof(cpu), "%.1f%%", json_number_value(json_object_get(u, "cpu")) * 100);
                printf("#%-3lld %-*s %-22s %-6s %-16s %-16s %s\n",
                       (long long)json_integer_value(json_object_get(x, "index")), sw, st,
                       json_string_value(json_object_get(x, "since")) ?: "", cpu, mcol, dcol,
                       details ?: json_string_value(json_object_get(x, "details")) ?: "");
        }
        (void)disk;
        json_array_foreach (inst, i, x) {
                if (strcmp(json_string_value(json_object_get(x, "state")) ?: "", "CRASHED") != 0)
                        continue;
                json_int_t idx = json_integer_value(json_object_get(x, "index"));
                json_t *lines = json_object_get(logs, "resources"), *l;
                size_t n = 0, k, shown = 0;
                json_array_foreach (lines, k, l)
                        n += json_integer_value(json_object_get(l, "instance_index")) == idx;
                printf("\nlast log lines of crashed instance #%lld:\n", (long long)idx);
                json_array_foreach (lines, k, l) {
                        if (json_integer_value(json_object_get(l, "instance_index")) != idx)
                                continue;
                        if (n - shown++ <= APP_CRASH_LOG_LINES)
                                app_logs_print(stdout, l);
                }
                if (n == 0)
                        printf("   (none)\n");
        }
        return 0;
}

static int cmd_map_route(struct pctx *p, int argc, char **argv, bool map, struct berr **err)
{
        const char *host = NULL, *rpath = "";
        const char *use = "APP DOMAIN [--hostname H] [--path P]";
        int c;
        static const struct option lo[] = { { "hostname", required_argument, NULL, 'n' },
                                            { "path", required_argument, NULL, 'p' },
                                            { 0 } };
        optind = 0;
        while ((c = getopt_long(argc, argv, "n:", lo, NULL)) != -1) {
                if (c == 'n')
                        host = optarg;
                else if (c == 'p')
                        rpath = optarg;
                else
                        return usage(argv[0], use, err);
        }
        if (optind + 2 != argc)
                return usage(argv[0], use, err);
        const char *appname = argv[optind], *domain = argv[optind + 1];
        _cleanup_json_ json_t *app = NULL, *dom = NULL, *route = NULL;
        if (find_app(p, appname, &app, err) < 0 ||
            find_named(p, "domains", domain, NULL, "Domain", &dom, err) < 0)
                return CLI_EXIT_FAILURE;
        if (!host)
                host = appname;
        _cleanup_free_ char *h = urlenc(host), *q = NULL;
        if (!h || asprintf(&q, "/v3/routes?hosts=%s&domain_guids=%s", h, app_guid(dom)) < 0 ||
            find_one(p, q, &route, err) < 0)
                return CLI_EXIT_FAILURE;
        if (map) {
                if (!route) {
                        _cleanup_json_ json_t *b =
                            json_pack("{s:s, s:s, s:{s:{s:{s:s}}, s:{s:{s:s}}}}", "host", host, "path", rpath,
                                      "relationships", "space", "data", "guid", cfg_sub(p, "space", "guid"),
                                      "domain", "data", "guid", app_guid(dom));
                        if (api(p, "POST", "/v3/routes", b, &route, err) < 0)
                                return CLI_EXIT_FAILURE;
                }
                _cleanup_free_ char *dp = NULL;
                _cleanup_json_ json_t *b =
                    json_pack("{s:[{s:{s:s}}]}", "destinations", "app", "guid", app_guid(app));
                _cleanup_json_ json_t *resp = NULL;
                if (asprintf(&dp, "/v3/routes/%s/destinations", app_guid(route)) < 0 ||
                    api(p, "POST", dp, b, &resp, err) < 0)
                        return CLI_EXIT_FAILURE;
                p->json ? print_json(resp) : (void)printf("OK\n");
                return 0;
        }
        if (!route)
                return berr_set(err, -ENOENT, "Route %s.%s not found.", host, domain), CLI_EXIT_FAILURE;
        _cleanup_free_ char *dp = NULL;
        _cleanup_json_ json_t *dl = NULL;
        if (asprintf(&dp, "/v3/routes/%s/destinations", app_guid(route)) < 0 ||
            api(p, "GET", dp, NULL, &dl, err) < 0)
                return CLI_EXIT_FAILURE;
        size_t i;
        json_t *d;
        json_array_foreach (json_object_get(dl, "destinations"), i, d) {
                const char *ag = json_string_value(json_object_get(json_object_get(d, "app"), "guid"));
                if (!ag || strcmp(ag, app_guid(app)) != 0)
                        continue;
                _cleanup_free_ char *one = NULL;
                if (asprintf(&one, "%s/%s", dp, json_string_value(json_object_get(d, "guid"))) < 0 ||
                    api(p, "DELETE", one, NULL, NULL, err) < 0)
                        return CLI_EXIT_FAILURE;
        }
        p->json ? print_json(route) : (void)printf("OK\n");
        return 0;
}

static int cmd_restage(struct pctx *p, const char *name, struct berr **err)
{
        _cleanup_json_ json_t *app = NULL, *pkgs = NULL, *build = NULL, *resp = NULL;
        _cleanup_free_ char *pp = NULL, *dp = NULL, *rp = NULL;
        if (find_app(p, name, &app, err) < 0 ||
            asprintf(&pp, "/v3/apps/%s/packages?order_by=-created_at", app_guid(app)) < 0 ||
            api(p, "GET", pp, NULL, &pkgs, err) < 0)
                return CLI_EXIT_FAILURE;
        json_t *list = json_object_get(pkgs, "resources");
        json_t *pkg = json_array_get(list, 0);
        /* newest package, whatever order the API used */
        size_t i;
        json_t *x;
        json_array_foreach (list, i, x) {
                const char *a = json_string_value(json_object_get(x, "created_at")),
                           *b = json_string_value(json_object_get(pkg, "created_at"));
                if (a && b && strcmp(a, b) > 0)
                        pkg = x;
        }
        if (!pkg)
                return berr_set(err, -ENOENT, "App '%s' has no package to restage.", name), CLI_EXIT_FAILURE;
        printf("Restaging app %s in org %s / space %s as %s...\n", name, cfg_sub(p, "org", "name") ?: "?",
               cfg_sub(p, "space", "name") ?: "?", cfg_str(p, "username") ?: "?");
        _cleanup_json_ json_t *bb = json_pack("{s:{s:O}}", "package", "guid", json_object_get(pkg, "guid"));
        if (api(p, "POST", "/v3/builds", bb, &build, err) < 0)
                return CLI_EXIT_FAILURE;
        const char *state = json_string_value(json_object_get(build, "state"));
        if (state && strcmp(state, "FAILED") == 0)
                return berr_set(err, -EIO, "%s",
                                json_string_value(json_object_get(build, "error")) ?: "staging failed"),
                       CLI_EXIT_FAILURE;
        json_t *dg = json_object_get(json_object_get(build, "droplet"), "guid");
        _cleanup_json_ json_t *db = json_pack("{s:{s:O}}", "data", "guid", dg ? dg : json_null());
        if (asprintf(&dp, "/v3/apps/%s/relationships/current_droplet", app_guid(app)) < 0 ||
            api(p, "PATCH", dp, db, NULL, err) < 0 ||
            asprintf(&rp, "/v3/apps/%s/actions/restart", app_guid(app)) < 0 ||
            api(p, "POST", rp, NULL, &resp, err) < 0)
                return CLI_EXIT_FAILURE;
        p->json ? print_json(resp) : (void)printf("OK\n");
        return 0;
}

static int cmd_events(struct pctx *p, const char *name, struct berr **err)
{
        _cleanup_json_ json_t *app = NULL, *ev = NULL;
        _cleanup_free_ char *path = NULL;
        if (find_app(p, name, &app, err) < 0 ||
            asprintf(&path, "/v3/audit_events?target_guids=%s&order_by=-created_at&per_page=50",
                     app_guid(app)) < 0 ||
            api(p, "GET", path, NULL, &ev, err) < 0)
                return CLI_EXIT_FAILURE;
        if (p->json) {
                print_json(ev);
                return 0;
        }
        printf("Getting events for app %s in org %s / space %s as %s...\n\n%-22s %-32s %-12s %s\n", name,
               cfg_sub(p, "org", "name") ?: "?", cfg_sub(p, "space", "name") ?: "?",
               cfg_str(p, "username") ?: "?", "time", "event", "actor", "description");
        size_t i;
        json_t *x;
        json_array_foreach (json_object_get(ev, "resources"), i, x) {
                _cleanup_free_ char *data = json_dumps(json_object_get(x, "data"), JSON_COMPACT);
                printf("%-22s %-32s %-12s %s\n", json_string_value(json_object_get(x, "created_at")) ?: "",
                       json_string_value(json_object_get(x, "type")) ?: "",
                       json_string_value(json_object_get(json_object_get(x, "actor"), "name")) ?: "",
                       data && strcmp(data, "{}") != 0 ? data : "");
        }
        return 0;
}

#define LOGS_RETRIES 30 /* reconnection attempts in a row (about 30 s) */

/* While following: is the app still there? Asked at the stream's keep-alives, on a client of its own. */
struct logs_idle {
        struct http_client *hc;
        char *url; /* GET /v3/apps/:guid */
};

static int logs_app_gone(void *userdata)
{
        struct logs_idle *li = userdata;
        long status = 0;
        if (http_request_json(li->hc, "GET", li->url, NULL, &status, NULL, NULL) == 0 && status == 404)
                return -ENOENT;
        return 0; /* anything else: keep following */
}

static void logs_exit_on_signal(int sig)
{
        (void)sig;
        _exit(0); /* every line printed was flushed */
}

static int cmd_logs_app(struct pctx *p, int argc, char **argv, struct berr **err)
{
        bool recent = false;
        static const struct option lo[] = { { "recent", no_argument, NULL, 'r' }, { 0 } };
        int c;
        while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
                if (c != 'r')
                        return usage(argv[0], "APP [--recent]", err);
                recent = true;
        }
        if (optind + 1 != argc)
                return usage(argv[0], "APP [--recent]", err);
        const char *name = argv[optind];
        _cleanup_json_ json_t *app = NULL;
        _cleanup_free_ char *path = NULL;
        if (find_app(p, name, &app, err) < 0)
                return CLI_EXIT_FAILURE;
        if (recent) {
                _cleanup_json_ json_t *resp = NULL;
                if (asprintf(&path, "/v3/apps/%s/logs?lines=%d", app_guid(app), LOGS_RECENT_LINES) < 0 ||
                    api(p, "GET", path, NULL, &resp, err) < 0)
                        return CLI_EXIT_FAILURE;
                if (p->json) {
                        print_json(resp);
                        return 0;
                }
                printf("Retrieving logs for app %s in org %s / space %s as %s...\n\n", name,
                       cfg_sub(p, "org", "name") ?: "?", cfg_sub(p, "space", "name") ?: "?",
                       cfg_str(p, "username") ?: "?");
                size_t i;
                json_t *x;
                json_array_foreach (json_object_get(resp, "resources"), i, x)
                        app_logs_print(stdout, x);
                return 0;
        }
        if (!p->json)
                printf("Retrieving logs for app %s in org %s / space %s as %s...\n\n", name,
                       cfg_sub(p, "org", "name") ?: "?", cfg_sub(p, "space", "name") ?: "?",
                       cfg_str(p, "username") ?: "?");
        fflush(stdout);
        struct sigaction sa = { .sa_handler = logs_exit_on_signal };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        struct logs_idle li = { 0 };
        struct app_logs_follow f = {
                .out = stdout, .json = p->json, .idle = logs_app_gone, .idle_userdata = &li
        };
        int rc = CLI_EXIT_FAILURE;
        if (client(p, err) < 0 || client_open(p, &li.hc, err) < 0)
                goto out;
        li.url = xasprintf("%s/v3/apps/%s", cfg_str(p, "api"), app_guid(app));
        /* The stream ends when the controller ends it (a restart of the controller, instances that
         * changed): follow on from the newest line printed. */
        for (int failures = 0, attempt = 0;; attempt++) {
                free(path), path = NULL;
                if (asprintf(&path, "%s/v3/apps/%s/logs?follow=true&lines=%d", cfg_str(p, "api"),
                             app_guid(app), attempt == 0 ? 100 : LOGS_RECENT_LINES) < 0)
                        goto out;
                long status = 0;
                app_logs_follow_begin(&f, attempt > 0);
                _cleanup_berr_ struct berr *e = NULL;
                long before = f.printed;
                int r = http_request_stream(p->http, "GET", path, &status, app_logs_follow_data, &f, &e);
                if (r == 0 && status == 401 && failures == 0 && cfg_str(p, "refresh_token")) {
                        if (refresh(p, err) < 0)
                                goto out;
                        failures++;
                        continue;
                }
                if ((r == 0 && status == 404) || r == -ENOENT) {
                        berr_set(err, -ENOENT, "App '%s' not found (deleted?)", name);
                        goto out;
                }
                if (r == 0 && status >= 400) {
                        berr_set(err, -EIO, "following the logs: the API answered %ld", status);
                        goto out;
                }
                failures = r < 0 && f.printed == before ? failures + 1 : 0;
                if (failures >= LOGS_RETRIES) {
                        if (err && !*err)
                                *err = TAKE_PTR(e);
                        goto out;
                }
                log_debug("logs: stream ended (%s); reconnecting", e ? berr_msg(e) : "closed by the server");
                usleep(failures ? 1000 * 1000 : 200 * 1000);
        }
out:
        app_logs_follow_done(&f);
        http_client_free(li.hc);
        free(li.url);
        return rc;
}

/* cf's role names on the command line ↔ the API's role types. */
static const char *const space_role_names[][2] = {
        { "SpaceManager", "space_manager" },
        { "SpaceDeveloper", "space_developer" },
        { "SpaceAuditor", "space_auditor" },
        { "SpaceSupporter", "space_supporter" },
};

static const char *space_role_type(const char *name)
{
        for (size_t i = 0; i < ARRAY_SIZE(space_role_names); i++)
                if (strcmp(name, space_role_names[i][0]) == 0)
                        return space_role_names[i][1];
        return NULL;
}

/* The org ORG and its space SPACE (caller owns both). */
static int find_org_space(struct pctx *p, const char *org_name, const char *space_name, json_t **ret_org,
                          json_t **ret_space, struct berr **err)
{
        _cleanup_json_ json_t *org = NULL, *space = NULL;
        _cleanup_free_ char *extra = NULL;
        int r = find_named(p, "organizations", org_name, NULL, "Organization", &org, err);
        if (r < 0)
                return r;
        if (asprintf(&extra, "&organization_guids=%s", app_guid(org)) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        r = find_named(p, "spaces", space_name, extra, "Space", &space, err);
        if (r < 0)
                return r;
        if (ret_org)
                *ret_org = TAKE_PTR(org);
        *ret_space = TAKE_PTR(space);
        return 0;
}

static int find_user(struct pctx *p, const char *username, json_t **ret, struct berr **err)
{
        _cleanup_free_ char *n = urlenc(username), *q = NULL;
        if (!n || asprintf(&q, "/v3/users?usernames=%s", n) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        int r = find_one(p, q, ret, err);
        if (r < 0)
                return r;
        if (!*ret)
                return berr_set(err, -ENOENT, "User '%s' not found.", username);
        return 0;
}

static int cmd_set_space_role(struct pctx *p, int argc, char **argv, bool set, struct berr **err)
{
        const char *use = "USER ORG SPACE SpaceManager|SpaceDeveloper|SpaceAuditor|SpaceSupporter";
        if (argc != 5)
                return usage(argv[0], use, err);
        const char *type = space_role_type(argv[4]);
        if (!type)
                return usage(argv[0], use, err);
        _cleanup_json_ json_t *space = NULL, *resp = NULL;
        if (find_org_space(p, argv[2], argv[3], NULL, &space, err) < 0)
                return CLI_EXIT_FAILURE;
        if (set) {
                _cleanup_json_ json_t *b =
                    json_pack("{s:s,s:{s:{s:{s:s}},s:{s:{s:s}}}}", "type", type, "relationships", "user",
                              "data", "username", argv[1], "space", "data", "guid", app_guid(space));
                if (!p->json)
                        printf("Assigning role %s to user %s in org %s / space %s as %s...\n", argv[4],
                               argv[1], argv[2], argv[3], cfg_str(p, "username") ?: "?");
                if (api(p, "POST", "/v3/roles", b, &resp, err) < 0)
                        return CLI_EXIT_FAILURE;
                p->json ? print_json(resp) : (void)printf("OK\n");
                return 0;
        }
        _cleanup_json_ json_t *user = NULL, *role = NULL;
        _cleanup_free_ char *q = NULL, *dp = NULL;
        if (find_user(p, argv[1], &user, err) < 0)
                return CLI_EXIT_FAILURE;
        if (!p->json)
                printf("Removing role %s from user %s in org %s / space %s as %s...\n", argv[4], argv[1],
                       argv[2], argv[3], cfg_str(p, "username") ?: "?");
        if (asprintf(&q, "/v3/roles?types=%s&space_guids=%s&user_guids=%s", type, app_guid(space),
                     app_guid(user)) < 0 ||
            find_one(p, q, &role, err) < 0)
                return CLI_EXIT_FAILURE;
        /* As cf: a role the user does not have is already unset. */
        if (role &&
            (asprintf(&dp, "/v3/roles/%s", app_guid(role)) < 0 || api(p, "DELETE", dp, NULL, NULL, err) < 0))
                return CLI_EXIT_FAILURE;
        if (p->json)
                print_json(role ? role : json_null());
        else
                printf("OK\n");
        return 0;
}

#define SPACE_USERS_MAX 5000 /* one page of roles; a space with more is beyond the CLI's table */

static int cmd_space_users(struct pctx *p, int argc, char **argv, struct berr **err)
{
        if (argc != 3)
                return usage(argv[0], "ORG SPACE", err);
        _cleanup_json_ json_t *space = NULL, *roles = NULL, *users = NULL;
        _cleanup_free_ char *q = NULL, *uq = NULL;
        if (find_org_space(p, argv[1], argv[2], NULL, &space, err) < 0 ||
            asprintf(&q, "/v3/roles?space_guids=%s&per_page=%d", app_guid(space), SPACE_USERS_MAX) < 0 ||
            api(p, "GET", q, NULL, &roles, err) < 0)
                return CLI_EXIT_FAILURE;
        json_t *rl = json_object_get(roles, "resources");
        /* the users of these roles, by guid, in one request */
        size_t i;
        json_t *x;
        size_t cap = 64 + json_array_size(rl) * 37, len = 0;
        _cleanup_free_ char *guids = xcalloc(1, cap);
        json_array_foreach (rl, i, x) {
                const char *ug = json_string_value(json_object_get(
                    json_object_get(json_object_get(json_object_get(x, "relationships"), "user"), "data"),
                    "guid"));
                if (!ug || strlen(ug) > 36 || strstr(guids, ug))
                        continue;
                len += (size_t)snprintf(guids + len, cap - len, "%s%s", len ? "," : "", ug);
        }
        json_t *ul = NULL;
        if (len) {
                if (asprintf(&uq, "/v3/users?guids=%s&per_page=%d", guids, SPACE_USERS_MAX) < 0 ||
                    api(p, "GET", uq, NULL, &users, err) < 0)
                        return CLI_EXIT_FAILURE;
                ul = json_object_get(users, "resources");
        }
        if (p->json) {
                _cleanup_json_ json_t *doc =
                    json_pack("{s:o,s:o}", "roles", rl ? json_incref(rl) : json_array(), "users",
                              ul ? json_incref(ul) : json_array());
                print_json(doc);
                return 0;
        }
        printf("Getting users in org %s / space %s as %s...\n", argv[1], argv[2],
               cfg_str(p, "username") ?: "?");
        static const char *const titles[][2] = {
                { "space_manager", "SPACE MANAGER" },
                { "space_developer", "SPACE DEVELOPER" },
                { "space_auditor", "SPACE AUDITOR" },
                { "space_supporter", "SPACE SUPPORTER" },
        };
        for (size_t t = 0; t < ARRAY_SIZE(titles); t++) {
                printf("\n%s\n", titles[t][1]);
                bool any = false;
                json_array_foreach (rl, i, x) {
                        if (strcmp(json_string_value(json_object_get(x, "type")) ?: "", titles[t][0]) != 0)
                                continue;
                        const char *ug = json_string_value(json_object_get(
                            json_object_get(json_object_get(json_object_get(x, "relationships"), "user"),
                                            "data"),
                            "guid"));
                        size_t k;
                        json_t *u, *found = NULL;
                        json_array_foreach (ul, k, u)
                                if (ug &&
                                    strcmp(json_string_value(json_object_get(u, "guid")) ?: "", ug) == 0)
                                        found = u;
                        const char *uname = json_string_value(json_object_get(found, "username"));
                        printf("  %s (%s)\n", uname ?: ug ?: "?",
                               json_string_value(json_object_get(found, "origin")) ?: "uaa");
                        any = true;
                }
                if (!any) {
                        char lower[32];
                        snprintf(lower, sizeof(lower), "%s", titles[t][1]);
                        for (char *c = lower; *c; c++)
                                *c = (char)tolower((unsigned char)*c);
                        printf("  No %s found\n", lower);
                }
        }
        return 0;
}

/* "host.domain/path" as cf shows a route. Caller frees. */
static char *route_url(const char *host, const char *domain, const char *path)
{
        return xasprintf("%s%s%s%s", host, *host ? "." : "", domain, path);
}

static int cmd_route(struct pctx *p, int argc, char **argv, bool create, struct berr **err)
{
        const char *host = NULL, *rpath = "";
        bool force = false;
        const char *use = create ? "DOMAIN --hostname H [--path /P]" : "DOMAIN --hostname H [--path /P] [-f]";
        static const struct option lo[] = { { "hostname", required_argument, NULL, 'n' },
                                            { "path", required_argument, NULL, 'p' },
                                            { 0 } };
        int c;
        while ((c = getopt_long(argc, argv, create ? "n:" : "n:f", lo, NULL)) != -1) {
                if (c == 'n')
                        host = optarg;
                else if (c == 'p')
                        rpath = optarg;
                else if (c == 'f')
                        force = true;
                else
                        return usage(argv[0], use, err);
        }
        if (optind + 1 != argc || !host)
                return usage(argv[0], use, err);
        const char *domain = argv[optind];
        if (need_space(p, err) < 0)
                return CLI_EXIT_FAILURE;
        _cleanup_json_ json_t *dom = NULL, *route = NULL;
        if (find_named(p, "domains", domain, NULL, "Domain", &dom, err) < 0)
                return CLI_EXIT_FAILURE;
        _cleanup_free_ char *url = route_url(host, domain, rpath);
        if (create) {
                if (!p->json)
                        printf("Creating route %s for org %s / space %s as %s...\n", url,
                               cfg_sub(p, "org", "name") ?: "?", cfg_sub(p, "space", "name") ?: "?",
                               cfg_str(p, "username") ?: "?");
                _cleanup_json_ json_t *b =
                    json_pack("{s:s, s:s, s:{s:{s:{s:s}}, s:{s:{s:s}}}}", "host", host, "path", rpath,
                              "relationships", "space", "data", "guid", cfg_sub(p, "space", "guid"), "domain",
                              "data", "guid", app_guid(dom));
                if (api(p, "POST", "/v3/routes", b, &route, err) < 0)
                        return CLI_EXIT_FAILURE;
                if (p->json)
                        print_json(route);
                else
                        printf("Route %s has been created.\nOK\n", url);
                return 0;
        }
        if (route_find_or_create(p, host, rpath, app_guid(dom), false, &route, err) < 0)
                return CLI_EXIT_FAILURE;
        if (!route) {
                /* As cf: deleting what does not exist succeeds, saying so. */
                if (p->json)
                        print_json(json_null());
                else
                        printf("Unable to delete. Route %s not found.\nOK\n", url);
                return 0;
        }
        if (!force && isatty(STDIN_FILENO)) {
                fprintf(stderr, "Really delete the route %s? [yN]: ", url);
                char ans[16];
                if (!fgets(ans, sizeof(ans), stdin) || (ans[0] != 'y' && ans[0] != 'Y')) {
                        printf("Delete cancelled\n");
                        return 0;
                }
        }
        if (!p->json)
                printf("Deleting route %s...\n", url);
        _cleanup_free_ char *dp = NULL;
        if (asprintf(&dp, "/v3/routes/%s", app_guid(route)) < 0 || api(p, "DELETE", dp, NULL, NULL, err) < 0)
                return CLI_EXIT_FAILURE;
        p->json ? print_json(route) : (void)printf("OK\n");
        return 0;
}

/* delete APP [-f] [-r]: -r also deletes the routes mapped to the app (even if mapped to others too, as cf).
 */
static int cmd_delete_app(struct pctx *p, int argc, char **argv, struct berr **err)
{
        bool routes = false;
        int c;
        while ((c = getopt(argc, argv, "fr")) != -1) {
                if (c == 'r')
                        routes = true;
                else if (c != 'f')
                        return usage(argv[0], "APP [-f] [-r]", err);
        }
        if (optind + 1 != argc)
                return usage(argv[0], "APP [-f] [-r]", err);
        const char *name = argv[optind];
        _cleanup_json_ json_t *app = NULL, *rl = NULL;
        _cleanup_free_ char *path = NULL, *rp = NULL;
        if (find_app(p, name, &app, err) < 0)
                return CLI_EXIT_FAILURE;
        if (routes && (asprintf(&rp, "/v3/apps/%s/routes?per_page=5000", app_guid(app)) < 0 ||
                       api(p, "GET", rp, NULL, &rl, err) < 0))
                return CLI_EXIT_FAILURE;
        if (!p->json)
                printf("Deleting app %s in org %s / space %s as %s...\n", name,
                       cfg_sub(p, "org", "name") ?: "?", cfg_sub(p, "space", "name") ?: "?",
                       cfg_str(p, "username") ?: "?");
        if (asprintf(&path, "/v3/apps/%s", app_guid(app)) < 0 || api(p, "DELETE", path, NULL, NULL, err) < 0)
                return CLI_EXIT_FAILURE;
        size_t i;
        json_t *x;
        json_array_foreach (json_object_get(rl, "resources"), i, x) {
                _cleanup_free_ char *dp = NULL;
                _cleanup_berr_ struct berr *e = NULL;
                if (!p->json)
                        printf("Deleting route %s...\n", json_string_value(json_object_get(x, "url")) ?: "?");
                /* a route that went away meanwhile is deleted already */
                if (asprintf(&dp, "/v3/routes/%s", app_guid(x)) < 0)
                        return CLI_EXIT_FAILURE;
                int r = api(p, "DELETE", dp, NULL, NULL, &e);
                if (r < 0 && r != -ENOENT) {
                        if (err && !*err)
                                *err = TAKE_PTR(e);
                        return CLI_EXIT_FAILURE;
                }
        }
        if (p->json) {
                json_t *rr = json_object_get(rl, "resources");
                _cleanup_json_ json_t *doc =
                    json_pack("{s:O,s:o}", "app", app, "routes", rr ? json_incref(rr) : json_array());
                print_json(doc);
        } else {
                printf("OK\n");
        }
        return 0;
}

/* create-space NAME [-o ORG], -o before or after NAME. */
static int cmd_create_space(struct pctx *p, int argc, char **argv, struct berr **err)
{
        const char *org = NULL;
        int c;
        while ((c = getopt(argc, argv, "o:")) != -1) {
                if (c == 'o')
                        org = optarg;
                else
                        return usage(argv[0], "NAME [-o ORG]", err);
        }
        if (optind + 1 != argc)
                return usage(argv[0], "NAME [-o ORG]", err);
        const char *name = argv[optind];
        _cleanup_json_ json_t *o = NULL, *resp = NULL;
        const char *og = cfg_sub(p, "org", "guid");
        if (org) {
                if (find_named(p, "organizations", org, NULL, "Organization", &o, err) < 0)
                        return CLI_EXIT_FAILURE;
                og = app_guid(o);
        }
        if (!cfg_str(p, "api"))
                return berr_set(err, -ENOENT, "not logged in (use 'berth login -a URL -u USER')"),
                       CLI_EXIT_FAILURE;
        if (!og)
                return berr_set(err, -ENOENT, "No org targeted, use 'berth target -o ORG' or -o ORG."),
                       CLI_EXIT_FAILURE;
        if (!p->json)
                printf("Creating space %s in org %s as %s...\n", name, org ?: cfg_sub(p, "org", "name") ?: "?",
                       cfg_str(p, "username") ?: "?");
        _cleanup_json_ json_t *b = json_pack("{s:s,s:{s:{s:{s:s}}}}", "name", name, "relationships",
                                             "organization", "data", "guid", og);
        if (api(p, "POST", "/v3/spaces", b, &resp, err) < 0)
                return CLI_EXIT_FAILURE;
        p->json ? print_json(resp) : (void)printf("OK\n");
        return 0;
}

/*
 * start or restart APP through the API, then wait as push does until an instance started by it runs (all
 * crashed or the start timeout passed: exit 1 with the instances' details). Prints OK, or with --json the
 * app the API answered.
 */
static int app_start_wait(struct pctx *p, const char *name, const char *action, struct berr **err)
{
        _cleanup_json_ json_t *app = NULL, *proc = NULL, *before = NULL, *resp = NULL;
        _cleanup_free_ char *pp = NULL, *sp = NULL, *ap = NULL;
        _cleanup_berr_ struct berr *be = NULL;
        if (find_app(p, name, &app, err) < 0 ||
            asprintf(&pp, "/v3/apps/%s/processes/web", app_guid(app)) < 0 ||
            api(p, "GET", pp, NULL, &proc, err) < 0 ||
            asprintf(&sp, "/v3/processes/%s/stats", app_guid(proc)) < 0)
                return CLI_EXIT_FAILURE;
        api(p, "GET", sp, NULL, &before, &be); /* without it, the wait trusts every report */
        if (asprintf(&ap, "/v3/apps/%s/actions/%s", app_guid(app), action) < 0 ||
            api(p, "POST", ap, NULL, &resp, err) < 0)
                return CLI_EXIT_FAILURE;
        json_t *hcd = json_object_get(json_object_get(proc, "health_check"), "data");
        json_t *to = json_object_get(hcd, "timeout");
        if (wait_started(p, app_guid(proc), (long)json_integer_value(json_object_get(proc, "instances")),
                         json_is_integer(to) ? (long)json_integer_value(to) : -1, before, err) < 0)
                return CLI_EXIT_FAILURE;
        p->json ? print_json(resp) : (void)printf("OK\n");
        return 0;
}

/* The app's web process, for the health check commands. Caller owns *ret_app and *ret_proc. */
static int app_web_process(struct pctx *p, const char *name, json_t **ret_app, json_t **ret_proc,
                           struct berr **err)
{
        _cleanup_json_ json_t *app = NULL, *proc = NULL;
        _cleanup_free_ char *pp = NULL;
        int r = find_app(p, name, &app, err);
        if (r < 0)
                return r;
        if (asprintf(&pp, "/v3/apps/%s/processes/web", app_guid(app)) < 0)
                return berr_set(err, -ENOMEM, "out of memory");
        r = api(p, "GET", pp, NULL, &proc, err);
        if (r < 0)
                return r;
        *ret_app = TAKE_PTR(app);
        *ret_proc = TAKE_PTR(proc);
        return 0;
}

/*
 * set-health-check APP (process|port|http) [--endpoint PATH] [--invocation-timeout N] and
 * set-readiness-health-check APP (process|port|http) [--endpoint PATH] [--invocation-timeout N]
 * [--interval N] (cf CLI v8): PATCH the web process's health_check or readiness_health_check. http without
 * --endpoint checks "/", as cf's default; --endpoint with another type is a usage error. Everything is
 * checked before the first request. New values apply to instances started afterwards: cf's restart tip.
 */
static int cmd_set_health_check(struct pctx *p, int argc, char **argv, bool readiness, struct berr **err)
{
        const char *endpoint = NULL;
        long ito = -1, interval = -1;
        static const struct option lo[] = { { "endpoint", required_argument, NULL, 'e' },
                                            { "invocation-timeout", required_argument, NULL, 'T' },
                                            { "interval", required_argument, NULL, 'I' },
                                            { 0 } };
        const char *use = readiness
                              ? "APP (process|port|http) [--endpoint PATH] [--invocation-timeout "
                                "SECONDS] [--interval SECONDS]"
                              : "APP (process|port|http) [--endpoint PATH] [--invocation-timeout SECONDS]";
        int c;
        while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
                switch (c) {
                case 'e':
                        if (!check_endpoint_valid(optarg))
                                return berr_set(err, -EINVAL,
                                                "--endpoint must be a path starting with '/' (got \"%s\")",
                                                optarg),
                                       CLI_EXIT_USAGE;
                        endpoint = optarg;
                        break;
                case 'T':
                        if ((ito = parse_seconds(optarg, MANIFEST_TIMEOUT_MAX)) < 0)
                                return berr_set(err, -EINVAL,
                                                "--invocation-timeout must be an integer from 1 to %d (got "
                                                "\"%s\")",
                                                MANIFEST_TIMEOUT_MAX, optarg),
                                       CLI_EXIT_USAGE;
                        break;
                case 'I':
                        if (!readiness)
                                return usage(argv[0], use, err);
                        if ((interval = parse_seconds(optarg, MANIFEST_INTERVAL_MAX)) < 0)
                                return berr_set(err, -EINVAL,
                                                "--interval must be an integer from 1 to %d (got \"%s\")",
                                                MANIFEST_INTERVAL_MAX, optarg),
                                       CLI_EXIT_USAGE;
                        break;
                default:
                        return usage(argv[0], use, err);
                }
        }
        if (optind + 2 != argc)
                return usage(argv[0], use, err);
        const char *name = argv[optind], *type = argv[optind + 1];
        if (!check_type_valid(type))
                return berr_set(err, -EINVAL,
                                "HEALTH_CHECK_TYPE must be \"process\", \"port\" or \"http\" (got "
                                "\"%s\")",
                                type),
                       CLI_EXIT_USAGE;
        if (endpoint && strcmp(type, "http") != 0)
                return berr_set(err, -EINVAL, "--endpoint is only for the http health check type (not %s)",
                                type),
                       CLI_EXIT_USAGE;
        if (!endpoint && strcmp(type, "http") == 0)
                endpoint = "/";
        _cleanup_json_ json_t *app = NULL, *proc = NULL, *resp = NULL;
        if (need_space(p, err) < 0)
                return CLI_EXIT_FAILURE;
        if (!p->json)
                printf(
                    "Updating %shealth check type for app %s process web in org %s / space %s as %s...\n\n",
                    readiness ? "readiness " : "", name, cfg_sub(p, "org", "name") ?: "?",
                    cfg_sub(p, "space", "name") ?: "?", cfg_str(p, "username") ?: "?");
        if (app_web_process(p, name, &app, &proc, err) < 0)
                return CLI_EXIT_FAILURE;
        _cleanup_free_ char *path = NULL;
        _cleanup_json_ json_t *b =
            json_pack("{s:{s:s,s:o}}", readiness ? "readiness_health_check" : "health_check", "type", type,
                      "data", check_data(endpoint, -1, ito, interval));
        if (asprintf(&path, "/v3/processes/%s", app_guid(proc)) < 0 ||
            api(p, "PATCH", path, b, &resp, err) < 0)
                return CLI_EXIT_FAILURE;
        if (p->json) {
                print_json(resp);
                return 0;
        }
        printf("OK\n");
        if (strcmp(json_string_value(json_object_get(app, "state")) ?: "", "STARTED") == 0)
                printf("\nTIP: An app restart is required for the change to take effect.\n");
        return 0;
}

/* A check's number for get-health-check: the value, or dflt when the API has none (0: blank). */
static void check_num(json_t *data, const char *key, long dflt, char *buf, size_t n)
{
        json_t *v = json_object_get(data, key);
        if (json_is_integer(v))
                snprintf(buf, n, "%lld", (long long)json_integer_value(v));
        else if (dflt > 0)
                snprintf(buf, n, "%ld", dflt);
        else
                snprintf(buf, n, "%s", "");
}

/*
 * get-health-check APP: the web process's liveness and readiness checks as two small tables (cf CLI v8's
 * columns, with the timeout and the intervals too). Unset values show the platform's defaults where it has
 * fixed ones (timeout 60 s, invocation timeout 1 s, as cf shows it); an unset interval is blank (the cell's
 * default). --json: {"health_check","readiness_health_check"} as the API has them.
 */
static int cmd_get_health_check(struct pctx *p, int argc, char **argv, struct berr **err)
{
        static const struct option lo[] = { { 0 } };
        if (getopt_long(argc, argv, "", lo, NULL) != -1 || optind + 1 != argc)
                return usage(argv[0], "APP", err);
        const char *name = argv[optind];
        _cleanup_json_ json_t *app = NULL, *proc = NULL;
        if (need_space(p, err) < 0)
                return CLI_EXIT_FAILURE;
        if (!p->json)
                printf("Getting health check type for app %s in org %s / space %s as %s...\n\n", name,
                       cfg_sub(p, "org", "name") ?: "?", cfg_sub(p, "space", "name") ?: "?",
                       cfg_str(p, "username") ?: "?");
        if (app_web_process(p, name, &app, &proc, err) < 0)
                return CLI_EXIT_FAILURE;
        json_t *hc = json_object_get(proc, "health_check"),
               *rc = json_object_get(proc, "readiness_health_check");
        if (p->json) {
                _cleanup_json_ json_t *doc =
                    json_pack("{s:O?,s:O?}", "health_check", hc, "readiness_health_check", rc);
                print_json(doc);
                return 0;
        }
        json_t *hd = json_object_get(hc, "data"), *rd = json_object_get(rc, "data");
        char to[24], ito[24], iv[24];
        check_num(hd, "timeout", 60, to, sizeof(to));
        check_num(hd, "invocation_timeout", 1, ito, sizeof(ito));
        check_num(hd, "interval", 0, iv, sizeof(iv));
        printf("%-9s %-14s %-21s %-9s %-20s %s\n", "process", "health check", "endpoint (for http)",
               "timeout", "invocation timeout", "interval");
        printf("%-9s %-14s %-21s %-9s %-20s %s\n\n", "web",
               json_string_value(json_object_get(hc, "type")) ?: "",
               json_string_value(json_object_get(hd, "endpoint")) ?: "", to, ito, iv);
        check_num(rd, "invocation_timeout", 1, ito, sizeof(ito));
        check_num(rd, "interval", 0, iv, sizeof(iv));
        printf("%-9s %-24s %-21s %-20s %s\n", "process", "readiness health check", "endpoint (for http)",
               "invocation timeout", "interval");
        printf("%-9s %-24s %-21s %-20s %s\n", "web",
               json_string_value(json_object_get(rc, "type")) ?: "process",
               json_string_value(json_object_get(rd, "endpoint")) ?: "", ito, iv);
        return 0;
}

/*
 * restart APP [--strategy rolling]: without a strategy, the API's restart (every instance at once). Rolling:
 * a deployment of the current droplet replacing instances one at a time; on a stopped app, a plain start.
 */
static int cmd_restart(struct pctx *p, int argc, char **argv, struct berr **err)
{
        bool rolling = false;
        static const struct option lo[] = { { "strategy", required_argument, NULL, 'Y' }, { 0 } };
        int c;
        while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
                if (c != 'Y' || strcmp(optarg, "rolling") != 0)
                        return usage(argv[0], "APP [--strategy rolling]", err);
                rolling = true;
        }
        if (optind + 1 != argc)
                return usage(argv[0], "APP [--strategy rolling]", err);
        const char *name = argv[optind];
        _cleanup_json_ json_t *app = NULL;
        if (!rolling)
                return app_start_wait(p, name, "restart", err);
        if (find_app(p, name, &app, err) < 0)
                return CLI_EXIT_FAILURE;
        const char *state = json_string_value(json_object_get(app, "state"));
        if (!p->json)
                printf("Restarting app %s in org %s / space %s as %s...\n", name,
                       cfg_sub(p, "org", "name") ?: "?", cfg_sub(p, "space", "name") ?: "?",
                       cfg_str(p, "username") ?: "?");
        if (state && strcmp(state, "STARTED") == 0) {
                if (!p->json) {
                        printf("Creating deployment for app %s...\nWaiting for app to deploy...\n", name);
                        fflush(stdout);
                }
                if (deploy_rolling(p, app_guid(app), NULL, NULL, err) < 0)
                        return CLI_EXIT_FAILURE;
        } else {
                /* nothing runs: a plain start, waited for as push waits */
                _cleanup_free_ char *path = NULL, *pp = NULL;
                _cleanup_json_ json_t *proc = NULL;
                if (asprintf(&pp, "/v3/apps/%s/processes/web", app_guid(app)) < 0 ||
                    api(p, "GET", pp, NULL, &proc, err) < 0 ||
                    asprintf(&path, "/v3/apps/%s/actions/start", app_guid(app)) < 0 ||
                    api(p, "POST", path, NULL, NULL, err) < 0)
                        return CLI_EXIT_FAILURE;
                if (wait_started(p, app_guid(proc),
                                 (long)json_integer_value(json_object_get(proc, "instances")), -1, NULL,
                                 err) < 0)
                        return CLI_EXIT_FAILURE;
        }
        if (!p->json) {
                printf("\n");
                fflush(stdout);
        }
        /* The app view is a courtesy: the deployment succeeded whatever it says. */
        _cleanup_berr_ struct berr *ve = NULL;
        if (cmd_app(p, name, &ve) != 0 && !p->json)
                printf("OK\n");
        return 0;
}

static int cmd_platform_run(struct pctx *p, int argc, char **argv, struct berr **err)
{
        const char *cmd = argv[0];
        optind = 0;
        if (strcmp(cmd, "login") == 0)
                return cmd_login(p, argc, argv, err);
        if (strcmp(cmd, "logout") == 0) {
                json_object_clear(p->cfg);
                printf("Logging out...\nOK\n");
                return cfg_save(p, err) < 0 ? CLI_EXIT_FAILURE : 0;
        }
        if (strcmp(cmd, "target") == 0)
                return cmd_target(p, argc, argv, err);
        if (strcmp(cmd, "push") == 0)
                return cmd_push(p, argc, argv, err);
        if (strcmp(cmd, "orgs") == 0 && argc == 1)
                return list_cmd(p, "Getting orgs", "/v3/organizations", (const char *[]){ "name", NULL },
                                err);
        if (strcmp(cmd, "domains") == 0 && argc == 1)
                return list_cmd(p, "Getting domains", "/v3/domains", (const char *[]){ "name", NULL }, err);
        if (strcmp(cmd, "feature-flags") == 0 && argc == 1)
                return list_cmd(p, "Getting feature flags", "/v3/feature_flags",
                                (const char *[]){ "name", "enabled", NULL }, err);
        if (strcmp(cmd, "spaces") == 0 && argc == 1) {
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "/v3/spaces?organization_guids=%s", cfg_sub(p, "org", "guid") ?: "") < 0)
                        return CLI_EXIT_FAILURE;
                return list_cmd(p, "Getting spaces", path, (const char *[]){ "name", NULL }, err);
        }
        if (strcmp(cmd, "apps") == 0 && argc == 1) {
                if (need_space(p, err) < 0)
                        return CLI_EXIT_FAILURE;
                _cleanup_free_ char *path = NULL;
                if (asprintf(&path, "/v3/apps?space_guids=%s", cfg_sub(p, "space", "guid")) < 0)
                        return CLI_EXIT_FAILURE;
                return list_cmd(p, "Getting apps", path, (const char *[]){ "name", "state", NULL }, err);
        }
        if ((strcmp(cmd, "enable-feature-flag") == 0 || strcmp(cmd, "disable-feature-flag") == 0) &&
            argc == 2) {
                _cleanup_free_ char *path = NULL;
                _cleanup_json_ json_t *b = json_pack("{s:b}", "enabled", cmd[0] == 'e'), *resp = NULL;
                if (asprintf(&path, "/v3/feature_flags/%s", argv[1]) < 0 ||
                    api(p, "PATCH", path, b, &resp, err) < 0)
                        return CLI_EXIT_FAILURE;
                if (p->json)
                        print_json(resp);
                else
                        printf("Feature %s %s.\nOK\n", argv[1], cmd[0] == 'e' ? "enabled" : "disabled");
                return 0;
        }
        if (strcmp(cmd, "restart") == 0)
                return cmd_restart(p, argc, argv, err);
        if (strcmp(cmd, "start") == 0 && argc == 2)
                return app_start_wait(p, argv[1], "start", err);
        if ((strcmp(cmd, "stop") == 0 || strcmp(cmd, "app-stop") == 0) && argc == 2) {
                const char *action = strcmp(cmd, "app-stop") == 0 ? "stop" : cmd;
                _cleanup_json_ json_t *resp = NULL;
                if (app_action(p, argv[1], action, &resp, err) < 0)
                        return CLI_EXIT_FAILURE;
                if (p->json)
                        print_json(resp);
                else
                        printf("OK\n");
                return 0;
        }
        if (strcmp(cmd, "create-org") == 0 && argc == 2) {
                _cleanup_json_ json_t *b = json_pack("{s:s}", "name", argv[1]), *resp = NULL;
                if (api(p, "POST", "/v3/organizations", b, &resp, err) < 0)
                        return CLI_EXIT_FAILURE;
                p->json ? print_json(resp) : (void)printf("OK\n");
                return 0;
        }
        if (strcmp(cmd, "create-user") == 0 && argc == 3) {
                _cleanup_json_ json_t *b = json_pack("{s:s,s:s}", "username", argv[1], "password", argv[2]),
                                      *resp = NULL;
                if (api(p, "POST", "/v3/users", b, &resp, err) < 0)
                        return CLI_EXIT_FAILURE;
                p->json ? print_json(resp) : (void)printf("OK\n");
                return 0;
        }
        if (strcmp(cmd, "env") == 0 && argc == 2) {
                _cleanup_json_ json_t *app = NULL, *resp = NULL;
                _cleanup_free_ char *path = NULL;
                if (find_app(p, argv[1], &app, err) < 0 ||
                    asprintf(&path, "/v3/apps/%s/env", app_guid(app)) < 0 ||
                    api(p, "GET", path, NULL, &resp, err) < 0)
                        return CLI_EXIT_FAILURE;
                print_json(resp);
                return 0;
        }
        if ((strcmp(cmd, "set-env") == 0 && argc == 4) || (strcmp(cmd, "unset-env") == 0 && argc == 3)) {
                _cleanup_json_ json_t *app = NULL;
                _cleanup_free_ char *path = NULL;
                if (find_app(p, argv[1], &app, err) < 0 ||
                    asprintf(&path, "/v3/apps/%s/environment_variables", app_guid(app)) < 0)
                        return CLI_EXIT_FAILURE;
                _cleanup_json_ json_t *b =
                    json_pack("{s:{s:o}}", "var", argv[2], argc == 4 ? json_string(argv[3]) : json_null());
                _cleanup_json_ json_t *resp = NULL;
                if (api(p, "PATCH", path, b, &resp, err) < 0)
                        return CLI_EXIT_FAILURE;
                p->json ? print_json(resp) : (void)printf("OK\n");
                return 0;
        }
        if (strcmp(cmd, "logs") == 0 || strcmp(cmd, "app-logs") == 0)
                return cmd_logs_app(p, argc, argv, err);
        if (strcmp(cmd, "routes") == 0 && argc == 1)
                return list_cmd(p, "Getting routes", "/v3/routes", (const char *[]){ "host", "url", NULL },
                                err);
        if (strcmp(cmd, "scale") == 0 && argc >= 2) {
                long inst = -1, mem = -1, disk = -1;
                int c;
                char *end;
                while ((c = getopt(argc, argv, "i:m:k:")) != -1) {
                        if (c == 'i') {
                                inst = strtol(optarg, &end, 10);
                                if (*end || inst < 0)
                                        return usage(cmd, "APP [-i N] [-m M] [-k K]", err);
                        } else if (c == 'm' && (mem = parse_size_mb(optarg)) > 0) {
                        } else if (c == 'k' && (disk = parse_size_mb(optarg)) > 0) {
                        } else
                                return usage(cmd, "APP [-i N] [-m M] [-k K]", err);
                }
                if (optind + 1 != argc)
                        return usage(cmd, "APP [-i N] [-m M] [-k K]", err);
                _cleanup_json_ json_t *app = NULL, *proc = NULL, *sb = json_object();
                _cleanup_free_ char *path = NULL;
                if (find_app(p, argv[optind], &app, err) < 0 ||
                    asprintf(&path, "/v3/apps/%s/processes/web", app_guid(app)) < 0 ||
                    api(p, "GET", path, NULL, &proc, err) < 0)
                        return CLI_EXIT_FAILURE;
                if (inst >= 0)
                        json_object_set_new(sb, "instances", json_integer(inst));
                if (mem > 0)
                        json_object_set_new(sb, "memory_in_mb", json_integer(mem));
                if (disk > 0)
                        json_object_set_new(sb, "disk_in_mb", json_integer(disk));
                if (json_object_size(sb) == 0) {
                        if (p->json)
                                print_json(proc);
                        else
                                printf("instances: %lld\nmemory: %lldM\ndisk: %lldM\n",
                                       (long long)json_integer_value(json_object_get(proc, "instances")),
                                       (long long)json_integer_value(json_object_get(proc, "memory_in_mb")),
                                       (long long)json_integer_value(json_object_get(proc, "disk_in_mb")));
                        return 0;
                }
                _cleanup_json_ json_t *resp = NULL;
                free(path), path = NULL;
                if (asprintf(&path, "/v3/processes/%s/actions/scale", app_guid(proc)) < 0 ||
                    api(p, "POST", path, sb, &resp, err) < 0)
                        return CLI_EXIT_FAILURE;
                p->json ? print_json(resp) : (void)printf("OK\n");
                return 0;
        }
        if (strcmp(cmd, "app") == 0 && argc == 2)
                return cmd_app(p, argv[1], err);
        if (strcmp(cmd, "set-health-check") == 0 || strcmp(cmd, "set-readiness-health-check") == 0)
                return cmd_set_health_check(p, argc, argv, strcmp(cmd, "set-readiness-health-check") == 0,
                                            err);
        if (strcmp(cmd, "get-health-check") == 0)
                return cmd_get_health_check(p, argc, argv, err);
        if (strcmp(cmd, "feature-flag") == 0 && argc == 2) {
                _cleanup_free_ char *n = urlenc(argv[1]), *path = NULL;
                _cleanup_json_ json_t *resp = NULL;
                if (!n || asprintf(&path, "/v3/feature_flags/%s", n) < 0 ||
                    api(p, "GET", path, NULL, &resp, err) < 0)
                        return CLI_EXIT_FAILURE;
                if (p->json)
                        print_json(resp);
                else
                        printf("Getting info for feature flag %s as %s...\n\nfeatures                "
                               "state\n%-24s%s\n",
                               argv[1], cfg_str(p, "username") ?: "?", argv[1],
                               json_is_true(json_object_get(resp, "enabled")) ? "enabled" : "disabled");
                return 0;
        }
        if (strcmp(cmd, "create-space") == 0)
                return cmd_create_space(p, argc, argv, err);
        if (strcmp(cmd, "delete") == 0)
                return cmd_delete_app(p, argc, argv, err);
        if (strcmp(cmd, "set-space-role") == 0 || strcmp(cmd, "unset-space-role") == 0)
                return cmd_set_space_role(p, argc, argv, cmd[0] == 's', err);
        if (strcmp(cmd, "space-users") == 0)
                return cmd_space_users(p, argc, argv, err);
        if (strcmp(cmd, "create-route") == 0 || strcmp(cmd, "delete-route") == 0)
                return cmd_route(p, argc, argv, cmd[0] == 'c', err);
        if ((strcmp(cmd, "map-route") == 0 || strcmp(cmd, "unmap-route") == 0) && argc >= 3)
                return cmd_map_route(p, argc, argv, strcmp(cmd, "map-route") == 0, err);
        if (strcmp(cmd, "restage") == 0 && argc == 2)
                return cmd_restage(p, argv[1], err);
        if (strcmp(cmd, "events") == 0 && argc == 2)
                return cmd_events(p, argv[1], err);
        if ((strcmp(cmd, "delete-org") == 0 || strcmp(cmd, "delete-space") == 0 ||
             strcmp(cmd, "delete-user") == 0) &&
            (argc == 2 || (argc == 3 && strcmp(argv[2], "-f") == 0))) {
                const char *coll = cmd[7] == 'o' ? "organizations" : cmd[7] == 's' ? "spaces" : "users";
                const char *what = cmd[7] == 'o' ? "Organization" : cmd[7] == 's' ? "Space" : "User";
                _cleanup_json_ json_t *x = NULL;
                _cleanup_free_ char *extra = NULL, *path = NULL;
                if (cmd[7] == 's' && cfg_sub(p, "org", "guid") &&
                    asprintf(&extra, "&organization_guids=%s", cfg_sub(p, "org", "guid")) < 0)
                        return CLI_EXIT_FAILURE;
                if (cmd[7] == 'u') {
                        _cleanup_free_ char *n = urlenc(argv[1]);
                        _cleanup_free_ char *q = NULL;
                        if (!n || asprintf(&q, "/v3/users?usernames=%s", n) < 0 ||
                            find_one(p, q, &x, err) < 0)
                                return CLI_EXIT_FAILURE;
                        if (!x)
                                return berr_set(err, -ENOENT, "User '%s' not found.", argv[1]),
                                       CLI_EXIT_FAILURE;
                } else if (find_named(p, coll, argv[1], extra, what, &x, err) < 0)
                        return CLI_EXIT_FAILURE;
                if (asprintf(&path, "/v3/%s/%s", coll, app_guid(x)) < 0 ||
                    api(p, "DELETE", path, NULL, NULL, err) < 0)
                        return CLI_EXIT_FAILURE;
                p->json ? print_json(x) : (void)printf("OK\n"); /* --json: what was deleted */
                return 0;
        }
        berr_set(err, -ENOSYS, "%s: not implemented yet (or wrong arguments)", cmd);
        return CLI_EXIT_USAGE;
}

int cmd_platform(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        (void)g;
        struct pctx p = { 0 };
        /* --json anywhere: drop it from argv. */
        int n = 0;
        for (int i = 0; i < argc; i++) {
                if (i > 0 && strcmp(argv[i], "--json") == 0)
                        p.json = true;
                else
                        argv[n++] = argv[i];
        }
        argv[n] = NULL;
        if (cfg_load(&p, err) < 0)
                return CLI_EXIT_FAILURE;
        int r = cmd_platform_run(&p, n, argv, err);
        pctx_done(&p);
        return r;
}

int cmd_daemon(struct cli_globals *g, int argc, char **argv, struct berr **err)
{
        if (strcmp(argv[0], "controller") == 0)
                return controller_main(g->data_dir, g->config, argc, argv, err);
        if (strcmp(argv[0], "router") == 0)
                return router_main(g->config, argc, argv, err);
        return cell_agent_main(g->data_dir, g->config_explicit ? g->config_path : NULL, g->config, argc, argv,
                               err);
}
