/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The controller's shared state and the framework its API modules are written against (docs/PLATFORM.md).
 *
 * Files:
 *   main.c      controller_main: config, first start (admin, org/space default, domain, flags), threads
 *   db.c     SQLite (WAL) open, schema (every module's CREATE TABLE), transactions, small helpers
 *   api.c       dispatch (api_routes of every module), auth middleware, errors, pagination, JSON bodies
 *   auth.c      /oauth/token, tokens, argon2id passwords (libsodium), users
 *   tenancy.c   organizations, spaces, roles, authz_* checks
 *   flags.c     feature flags
 *   domains.c   domains
 *   events.c    audit events
 *   crypt.c     secretbox encryption of registry passwords
 *   apps.c      apps, env, processes, scale, start/stop/restart
 *   staging.c   packages, builds, droplets (image_resolve)
 *   routes.c    routes and destinations; the route table the routers watch
 *   sched.c     cells (registration, heartbeats, events), placement, convergence, desire/stop calls
 *   logs.c      app logs (gathered from the cells), stats
 *
 * Concurrency: the HTTP server runs each connection on its own thread. The database is one SQLite
 * connection guarded by ctl->db_lock: take it with db_lock()/db_unlock() around every use (a handler
 * does its reads and writes in one locked transaction, then releases the lock before any network call).
 * The lock is recursive (a helper that locks may be called with it held); transactions do not nest.
 */
#pragma once

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/config.h"
#include "lib/err.h"
#include "lib/http_server.h"

struct sched;

struct ctl {
        char *data_dir;                 /* <data-dir> */
        const struct berth_config *cfg; /* whole configuration */
        char *external_url;             /* "http://127.0.0.1:9022", no trailing slash */
        char *domain;                   /* the shared domain created on first start */
        char *internal_token;           /* the internal API's bearer token */
        unsigned char enc_key[32];      /* registry passwords at rest */
        unsigned token_ttl_s;
        unsigned sync_interval_ms; /* the periodic convergence sweep (config sync_interval_ms, 1000) */

        sqlite3 *db;
        pthread_mutex_t db_lock;
        struct db_cached_stmt *stmts; /* db_cached(): statements kept prepared (under db_lock) */
        size_t n_stmts;

        /* Route table version: bumped (under db_lock) by any change of routes, destinations or endpoints. */
        pthread_mutex_t rt_lock;
        pthread_cond_t rt_cond;
        uint64_t rt_version;
        /* The routers watching the table (routes.c): what each one last said it holds, under rt_lock. */
        struct rt_router *routers;
        size_t n_routers;
        uint64_t rt_want; /* the scheduler waits for the routers to hold this version (0: nothing) */

        struct sched *sched;
        volatile int stopping;
};

/* ---- db.c ---- */
int db_open(struct ctl *c, const char *path, struct berr **err);
void db_close(struct ctl *c);
void db_lock(struct ctl *c);
void db_unlock(struct ctl *c);
/* BEGIN IMMEDIATE / COMMIT / ROLLBACK (with the lock held). */
int db_begin(struct ctl *c, struct berr **err);
int db_commit(struct ctl *c, struct berr **err);
void db_rollback(struct ctl *c);
/* Execute SQL with no result; fails with the SQLite message. */
int db_exec(struct ctl *c, const char *sql, struct berr **err);
/* Prepare (sqlite3_prepare_v2); on failure returns NULL and sets *err. Caller finalizes. */
sqlite3_stmt *db_prepare(struct ctl *c, const char *sql, struct berr **err);
#define _cleanup_stmt_ _cleanup_(db_finalizep)
static inline void db_finalizep(sqlite3_stmt **s)
{
        if (*s)
                sqlite3_finalize(*s);
}
/*
 * A statement prepared once for the connection's life, for hot paths (lock held): keyed by the address of
 * `sql` (a string literal), returned reset with no bindings. Do not finalize it; _cleanup_reset_ resets it.
 * Not re-entrant: one use of a given literal at a time.
 */
sqlite3_stmt *db_cached(struct ctl *c, const char *sql, struct berr **err);
#define _cleanup_reset_ _cleanup_(db_resetp)
static inline void db_resetp(sqlite3_stmt **s)
{
        if (*s) {
                sqlite3_reset(*s);
                sqlite3_clear_bindings(*s);
        }
}
/* Column text as a (possibly NULL) const char * valid until the next step. */
static inline const char *db_col_text(sqlite3_stmt *s, int i)
{
        return (const char *)sqlite3_column_text(s, i);
}
/* The schema of each module, executed in order by db_open (CREATE TABLE IF NOT EXISTS ...). */
extern const char db_schema_core[]; /* users, tokens, orgs, spaces, roles, flags, domains, events */
extern const char db_schema_apps[]; /* apps, processes, packages, builds, droplets, routes, destinations,
                                          cells, instances */
extern const char db_schema_deployments[]; /* deployments (deployments.c) */
/* Add a column to an existing table unless it has it (stores created by an earlier version). */
int db_add_column(struct ctl *c, const char *table, const char *column, const char *decl, struct berr **err);

/* ---- helpers (db.c) ---- */
/* A new UUID v4 string (37 bytes incl. NUL). */
void ctl_uuid(char out[static 37]);
/* Now as "2026-11-28T18:00:00Z" (21 bytes incl. NUL). */
void ctl_now(char out[static 21]);

/* ---- api.c ---- */
struct api_user {
        char guid[37];
        char username[256];
        bool admin;
        bool internal; /* the internal token (cells, routers) */
};

struct api_req {
        struct ctl *ctl;
        const struct http_request *http;
        /* Parsed JSON object for POST/PATCH/PUT; an empty body gives an empty object (actions); NULL for
         * other methods and for /oauth/... (form bodies). Borrowed: api_handle frees it. */
        json_t *body;
        const char *params[4]; /* ":name" path segments in pattern order */
        struct api_user user;  /* the authenticated caller (zeroed for public routes) */
};

typedef void (*api_handler_fn)(struct api_req *r, struct http_response *resp);

enum api_access {
        API_USER = 0,     /* a user's bearer token */
        API_PUBLIC = 1,   /* no token */
        API_INTERNAL = 2, /* the internal token only */
};

struct api_route {
        const char *method;  /* "GET", "POST", ... */
        const char *pattern; /* "/v3/apps/:guid/actions/start" — ":x" matches one path segment */
        api_handler_fn fn;
        enum api_access access;
};

/* Each module's table, terminated by { NULL }. api.c dispatches over all of them. */
extern const struct api_route api_routes_auth[];
extern const struct api_route api_routes_tenancy[];
extern const struct api_route api_routes_flags[];
extern const struct api_route api_routes_domains[];
extern const struct api_route api_routes_events[];
extern const struct api_route api_routes_apps[];
extern const struct api_route api_routes_staging[];
extern const struct api_route api_routes_routes[];
extern const struct api_route api_routes_sched[];
extern const struct api_route api_routes_logs[];
extern const struct api_route api_routes_deployments[];

/* The HTTP handler (http_server_opts.handler, userdata = struct ctl *). */
void api_handle(void *userdata, const struct http_request *req, struct http_response *resp);

/* CF error body {"errors":[{code,title,detail}]}; title is "CF-Name" (the "CF-" is added if missing). */
void api_error(struct http_response *resp, int status, int code, const char *title, const char *fmt, ...)
    _printf_(5, 6);
/* 404 CF-ResourceNotFound "<what> not found" (what: "App", "Space", ...). */
void api_not_found(struct http_response *resp, const char *what);
/* 403 CF-NotAuthorized. */
void api_forbidden(struct http_response *resp);
/* 422 CF-UnprocessableEntity with detail. */
void api_unprocessable(struct http_response *resp, const char *fmt, ...) _printf_(2, 3);
/* 403 CF-FeatureDisabled for flag (uses the flag's custom message if set). */
void api_feature_disabled(struct ctl *c, struct http_response *resp, const char *flag);
/* 500 CF-ServerError from an internal error (logged, detail generic). */
void api_server_error(struct http_response *resp, const struct berr *e);
/* Absolute link: external_url + path (printf-style). Caller frees. */
char *api_href(struct ctl *c, const char *fmt, ...) _printf_(2, 3);
/* {"href": ...} object for links. */
json_t *api_link(struct ctl *c, const char *fmt, ...) _printf_(2, 3);
/*
 * Paginate `items` (stolen; already filtered and ordered) per the request's page/per_page and respond
 * 200 with {"pagination":{...},"resources":[...]}; `path` is the list's path for the links ("/v3/apps").
 * Bad page/per_page → 400 CF-BadQueryParameter.
 */
void api_respond_list(struct api_req *r, struct http_response *resp, const char *path, json_t *items);
/* Comma-separated query filter (e.g. "names") as a NULL-terminated strv (NULL if absent); caller frees. */
char **api_query_list(struct api_req *r, const char *name);
/* Whether v passes a filter from api_query_list: no filter (NULL) passes everything, else v is listed. */
bool api_in_list(char **list, const char *v);
/* order_by: fills *field ("created_at", "updated_at", "name") and *desc; false + 400 sent if invalid. */
bool api_order_by(struct api_req *r, struct http_response *resp, const char **field, bool *desc);

/* Respond with a JSON body (takes the reference) and remember the status for the request log line. Prefer
 * it to http_response_json in handlers. */
void api_respond(struct http_response *resp, int status, json_t *body);
/* A 202/204 without a body (deletes). */
void api_respond_empty(struct http_response *resp, int status);
/* {"labels":{},"annotations":{}} (new reference). */
json_t *api_metadata(void);
/* The errors body {"errors":[{code,title,detail}]} (new reference); title gets "CF-" if missing. */
json_t *api_error_body(int code, const char *title, const char *detail);
/*
 * The pagination object of a list: total_results, total_pages (at least 1), first/last/next/previous links
 * to `path` keeping the query's other parameters. New reference.
 */
json_t *api_pagination(struct ctl *c, const char *path, const char *query, size_t total, unsigned page,
                       unsigned per_page);
/*
 * Does `path` match `pattern` (":x" = one non-empty segment)? On a match the segments for ":x" are copied
 * NUL-terminated into buf (bufsz bytes) and params[i] points at them, in pattern order (at most 4).
 */
bool api_pattern_match(const char *pattern, const char *path, char *buf, size_t bufsz, const char *params[4]);
/* Start of the one transaction of a request: lock + BEGIN IMMEDIATE; false with 500 sent on failure. */
bool api_tx_begin(struct api_req *r, struct http_response *resp);
/* COMMIT + unlock; false with 500 sent on failure (rolled back). */
bool api_tx_commit(struct api_req *r, struct http_response *resp);
/* ROLLBACK + unlock. */
void api_tx_rollback(struct api_req *r);

/* ---- auth.c ---- */
/* argon2id (libsodium crypto_pwhash_str, interactive limits). out: crypto_pwhash_STRBYTES (128) bytes. */
int auth_password_hash(const char *password, char out[static 128], struct berr **err);
bool auth_password_verify(const char *hash, const char *password);
/* Create a user (lock held, inside a transaction); -EEXIST if the name is taken, -EINVAL for bad names. */
int auth_user_create(struct ctl *c, const char *username, const char *password, bool admin,
                     char ret_guid[static 37], struct berr **err);
/* Issue an access (ttl token_ttl_s) and a refresh token for a user (lock held). Caller frees both. */
int auth_token_issue(struct ctl *c, const char *user_guid, char **ret_access, char **ret_refresh,
                     struct berr **err);
/* Look a valid access token up (lock held): 0 and *ret filled, -ENOENT unknown or expired. */
int auth_token_lookup(struct ctl *c, const char *token, struct api_user *ret);
/* Is username acceptable (1-255 bytes, no whitespace or control characters)? */
bool auth_username_valid(const char *username);

/* ---- tenancy.c: authorization ---- */
enum authz_perm {
        AUTHZ_READ = 0,   /* see it: any role in the space (or org role for org-level reads) */
        AUTHZ_SECRET = 1, /* env vars: developer (or admin) */
        AUTHZ_WRITE = 2,  /* change it: developer (or admin) */
        AUTHZ_MANAGE = 3, /* manage roles: space/org manager (or admin) */
};
/*
 * May r's user do `perm` in this space? 0 yes; -ENOENT the user cannot see the space (answer 404);
 * -EPERM visible but not allowed (answer 403). Takes the store lock itself only if `locked` is false.
 */
int authz_space(struct api_req *r, const char *space_guid, enum authz_perm perm, bool locked);
int authz_org(struct api_req *r, const char *org_guid, enum authz_perm perm, bool locked);
/* SQL fragment restricting space_guid visibility for list queries: " AND <col> IN (...)" or "" (admin). */
char *authz_space_filter_sql(struct api_req *r, const char *column);
/* Space and org names for VCAP_APPLICATION and the CLI (lock held). */
int tenancy_space_info(struct ctl *c, const char *space_guid, char **space_name, char **org_guid,
                       char **org_name);
/* Create an org / a space (lock held, in a transaction); -EEXIST when the name is taken in its scope. */
int tenancy_org_create(struct ctl *c, const char *name, char ret_guid[static 37], struct berr **err);
int tenancy_space_create(struct ctl *c, const char *org_guid, const char *name, char ret_guid[static 37],
                         struct berr **err);
/* Is a name of an org/space/domain acceptable (1-255 bytes, no control characters)? */
bool tenancy_name_valid(const char *name);

/* ---- flags.c ---- */
/* Is the flag on (lock held)? Unknown flags are off. */
bool flag_enabled(struct ctl *c, const char *name);
/* Insert the flags missing from the table with CF's defaults (lock held). */
int flags_bootstrap(struct ctl *c, struct berr **err);

/* ---- domains.c ---- */
/* Create a shared domain (lock held); -EEXIST when it exists, -EINVAL when the name is not a DNS name. */
int domain_create(struct ctl *c, const char *name, bool internal, char ret_guid[static 37],
                  struct berr **err);
bool domain_name_valid(const char *name);

/* ---- events.c ---- */
/* Record an audit event (lock held; part of the caller's transaction). data may be NULL (stolen). */
void audit_event(struct ctl *c, const char *type, const struct api_user *actor, const char *target_type,
                 const char *target_guid, const char *target_name, const char *space_guid, json_t *data);

/* ---- crypt.c ---- */
/* Encrypt to "v1:" + base64(nonce||box); decrypt back. Caller frees. */
char *crypt_seal(struct ctl *c, const char *plain);
int crypt_open(struct ctl *c, const char *sealed, char **ret_plain, struct berr **err);

/* ---- apps.c ---- */
/*
 * A space is being deleted (lock held, inside the deleting transaction, before the space's rows go): delete
 * the apps, processes, packages, builds, droplets and routes of the space. Only database work: after the
 * commit tenancy.c calls sched_kick() and routes_changed(), and the scheduler stops the instances that are
 * no longer desired.
 */
void apps_space_deleted(struct ctl *c, const char *space_guid);

/* ---- routes.c ---- */
/* Bump the route table version and wake watchers (any thread; lock not required). Returns the new version. */
uint64_t routes_changed(struct ctl *c);
/* The route table's current version (any thread). */
uint64_t routes_version(struct ctl *c);
/*
 * Do all live routers hold a table of at least `version`? A router says which version it holds with each
 * GET /internal/v1/routes?index=N (it asks for the next one once it installed N). A router is live while
 * one of its polls is open or ended less than ROUTES_ROUTER_LIVE_MS ago. True when no router is live.
 */
bool routes_synced(struct ctl *c, uint64_t version);
/* Wait until routes_synced(version) or timeout_ms passed; returns routes_synced(version). No db lock held. */
bool routes_wait_synced(struct ctl *c, uint64_t version, unsigned timeout_ms);
/* Forget the routers (controller stop, tests). */
void routes_routers_clear(struct ctl *c);

/* ---- sched.c ---- */
int sched_start(struct ctl *c, struct berr **err);
/* The scheduler's state (its per-cell HTTP clients) without its thread: tests and the convergence benchmark
 * drive sched_plan/sched_execute themselves. sched_stop frees it. */
void sched_attach(struct ctl *c);
void sched_stop(struct ctl *c);
/* Something desired changed (app started/stopped/scaled, flag flipped): converge now. */
void sched_kick(struct ctl *c);

/*
 * One convergence pass, in three steps that tests and the convergence benchmark drive one by one:
 * sched_plan decides (one transaction: marks instances STOPPING, inserts the rows of new instances,
 * finishes deployments) and returns what to tell the cells; sched_execute sends it (DELETEs after the
 * routers dropped the instances, PUTs in parallel over one keep-alive connection per cell). The plan is
 * freed by sched_plan_free.
 */
struct sched_plan;
struct sched_plan_stats {
        size_t instances; /* rows looked at */
        size_t kept, placed, stopped, unplaced;
        bool routes;                                /* the route table changed */
        double load_s, decide_s, place_s, commit_s; /* where the time went */
};
int sched_plan(struct ctl *c, struct sched_plan **ret, struct sched_plan_stats *ret_stats, struct berr **err);
/* Send the plan's PUTs and DELETEs (no lock held); returns the number of PUTs that failed. */
size_t sched_execute(struct ctl *c, struct sched_plan *p);
void sched_plan_free(struct sched_plan *p);
static inline void sched_plan_freep(struct sched_plan **p)
{
        sched_plan_free(*p);
}
/* A plan's actions for tests: n and, for each, put (else a stop), instance guid, cell url, index. */
size_t sched_plan_count(const struct sched_plan *p);
void sched_plan_action(const struct sched_plan *p, size_t i, bool *put, const char **guid,
                       const char **cell_url, int *index);
/* Wait for the stops in flight (tests, benchmarks); true if none is left within timeout_ms. */
bool sched_stops_wait(unsigned timeout_ms);
/* Diego's states of an instance row. */
#define INST_STARTING "STARTING"
#define INST_RUNNING  "RUNNING"
#define INST_CRASHED  "CRASHED"
#define INST_STOPPING "STOPPING"

/* ---- deployments.c ---- */
/* The app's active deployment is finalized with `reason` (SUPERSEDED, CANCELED) (lock held, in a tx). */
void deployments_finalize_app(struct ctl *c, const char *app_guid, const char *reason);

/* ---- apps half: helpers shared by apps.c, staging.c, routes.c, sched.c, logs.c (apps.c) ---- */
/*
 * Run one statement with arguments bound from `types` ('s' const char * (NULL binds NULL), 'i' int,
 * 'I' int64_t); lock held. xdb_exec steps it to completion (SQLITE_CONSTRAINT → -EEXIST); xdb_query
 * returns the prepared statement to step (NULL + *err on failure).
 */
int xdb_exec(struct ctl *c, struct berr **err, const char *sql, const char *types, ...);
sqlite3_stmt *xdb_query(struct ctl *c, struct berr **err, const char *sql, const char *types, ...);
/* The same on a db_cached() statement: xdb_cexec runs it (and resets it); xdb_cquery returns it bound (the
 * caller resets it with _cleanup_reset_). For hot paths (heartbeats, convergence). */
int xdb_cexec(struct ctl *c, struct berr **err, const char *sql, const char *types, ...);
sqlite3_stmt *xdb_cquery(struct ctl *c, struct berr **err, const char *sql, const char *types, ...);
/* Answer an authz result: 0 → true; -ENOENT → 404 "<what> not found"; -EPERM → 403. */
bool apps_authz_answer(int k, struct http_response *resp, const char *what);
/* The space of an app (lock held): 0, -ENOENT. */
int apps_space_of(struct ctl *c, const char *app_guid, char ret_space[static 37]);
/* Look the app up and authorize perm in its space; false with 404/403 sent. */
bool apps_authz(struct api_req *r, struct http_response *resp, const char *app_guid, enum authz_perm perm,
                char ret_space[static 37]);
/* The app / process resource (lock held); NULL if absent. */
json_t *apps_app_json(struct ctl *c, const char *guid);
json_t *apps_process_json(struct ctl *c, const char *guid);
/* "host.domain[/path]" URLs of the routes mapped to an app (lock held). New reference (array). */
json_t *apps_uris(struct ctl *c, const char *app_guid);
/* VCAP_APPLICATION without the per-instance fields (lock held); NULL if the app or process is absent. */
json_t *apps_vcap_application(struct ctl *c, const char *app_guid, const char *process_guid);

/* ---- env.c: pure helpers (unit-tested) ---- */
/* {entrypoint,cmd,user,workdir,env,ports:[{Port,Protocol}]} from an image config (ports ascending, tcp
 * first on ties). New reference. */
json_t *env_execution_metadata(const json_t *config);
/* The app port: the lowest TCP port of execution_metadata (JSON text or NULL), else 8080. */
int env_app_port(const char *execution_metadata);
/* The start command shown for an image config (ENTRYPOINT + CMD joined with spaces, "" if none). */
char *env_start_command(const json_t *config);
/* Diego's restart policy: ms to wait after the crash_count-th crash before restarting (0: at once),
 * -1 never again. */
int64_t env_restart_delay_ms(int crash_count);
/* The instance's env pairs [[k,v],...]: PORT, VCAP_APPLICATION (vcap + host/instance_id/port/index),
 * VCAP_SERVICES, MEMORY_LIMIT, then user_env's keys in order. New reference. */
json_t *env_instance_env(const json_t *vcap, const char *instance_guid, int index, int port, int memory_mb,
                         const json_t *user_env);
/* Is a user env var name refused (PORT, VCAP_*, CF_INSTANCE_*)? NULL if allowed, else the 422 detail. */
const char *env_name_refused(const char *name);
