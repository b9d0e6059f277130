/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Apps, their environment, processes (scale, health checks), start/stop/restart and the current droplet
 * (docs/PLATFORM.md "Apps", "Processes"); the schema of the whole apps half; helpers the other files of
 * the half share (ctl.h "apps half").
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "controller/ctl.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strv.h"

#define APP_NAME_MAX           255
#define PROC_DEFAULT_MEMORY_MB 256
#define PROC_DEFAULT_DISK_MB   1024
#define PROC_TIMEOUT_DEFAULT   60
#define PROC_TIMEOUT_MAX       180
#define PROC_INSTANCES_MAX     1000
#define PROC_MEMORY_MAX_MB     (1024 * 1024)
#define ENV_VALUE_MAX          (128 * 1024)

const char db_schema_apps[] =
    "CREATE TABLE IF NOT EXISTS apps ("
    " guid TEXT PRIMARY KEY, name TEXT NOT NULL,"
    " space_guid TEXT NOT NULL REFERENCES spaces(guid) ON DELETE CASCADE,"
    " state TEXT NOT NULL DEFAULT 'STOPPED', env TEXT NOT NULL DEFAULT '{}', droplet_guid TEXT,"
    " created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE(space_guid, name));"
    "CREATE TABLE IF NOT EXISTS processes ("
    " guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,"
    " type TEXT NOT NULL, command TEXT, instances INTEGER NOT NULL, memory_mb INTEGER NOT NULL,"
    " disk_mb INTEGER NOT NULL, health_check_type TEXT NOT NULL, health_check_endpoint TEXT,"
    " health_check_timeout INTEGER, invocation_timeout INTEGER, version TEXT NOT NULL,"
    " created_at TEXT NOT NULL, updated_at TEXT NOT NULL, health_check_interval INTEGER,"
    " readiness_type TEXT NOT NULL DEFAULT 'process', readiness_endpoint TEXT,"
    " readiness_invocation_timeout INTEGER, readiness_interval INTEGER, UNIQUE(app_guid, type));"
    "CREATE TABLE IF NOT EXISTS packages ("
    " guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,"
    " image TEXT NOT NULL, username TEXT, password_sealed TEXT, state TEXT NOT NULL,"
    " created_at TEXT NOT NULL, updated_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS builds ("
    " guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,"
    " package_guid TEXT NOT NULL, state TEXT NOT NULL, error TEXT, droplet_guid TEXT,"
    " created_by TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS droplets ("
    " guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,"
    " package_guid TEXT, image_pinned TEXT NOT NULL, docker_image TEXT NOT NULL,"
    " execution_metadata TEXT NOT NULL, process_types TEXT NOT NULL,"
    " created_at TEXT NOT NULL, updated_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS routes ("
    " guid TEXT PRIMARY KEY, host TEXT NOT NULL, path TEXT NOT NULL DEFAULT '',"
    " domain_guid TEXT NOT NULL REFERENCES domains(guid),"
    " space_guid TEXT NOT NULL REFERENCES spaces(guid) ON DELETE CASCADE,"
    " created_at TEXT NOT NULL, updated_at TEXT NOT NULL, UNIQUE(host, domain_guid, path));"
    "CREATE TABLE IF NOT EXISTS destinations ("
    " guid TEXT PRIMARY KEY, route_guid TEXT NOT NULL REFERENCES routes(guid) ON DELETE CASCADE,"
    " app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,"
    " process_type TEXT NOT NULL DEFAULT 'web', port INTEGER, created_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS cells ("
    " id TEXT PRIMARY KEY, url TEXT NOT NULL, memory_mb INTEGER NOT NULL DEFAULT 0,"
    " disk_mb INTEGER NOT NULL DEFAULT 0, last_seen INTEGER NOT NULL DEFAULT 0);"
    /* No foreign keys: the scheduler stops the instances of deleted apps from these rows. */
    "CREATE TABLE IF NOT EXISTS instances ("
    " guid TEXT PRIMARY KEY, process_guid TEXT NOT NULL, app_guid TEXT NOT NULL, idx INTEGER NOT NULL,"
    " cell_id TEXT NOT NULL, state TEXT NOT NULL, since TEXT NOT NULL, since_ms INTEGER NOT NULL DEFAULT 0,"
    " host TEXT, port INTEGER, external_ip TEXT, external_port INTEGER, exit_code INTEGER, reason TEXT,"
    " crash_count INTEGER NOT NULL DEFAULT 0, last_crash_at INTEGER NOT NULL DEFAULT 0, usage TEXT,"
    " process_version TEXT NOT NULL, memory_mb INTEGER NOT NULL DEFAULT 0,"
    /* the route-table version that first held it RUNNING (sched.c: a rolling deployment waits for it) */
    " routed_version INTEGER NOT NULL DEFAULT 0,"
    /* the cell's readiness verdict (1 without a readiness check) and when it last turned routable */
    " routable INTEGER NOT NULL DEFAULT 1, routed_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX IF NOT EXISTS instances_process ON instances(process_guid, idx);"
    "CREATE INDEX IF NOT EXISTS instances_cell ON instances(cell_id);"
    "CREATE INDEX IF NOT EXISTS instances_app ON instances(app_guid);";

/* ---- shared helpers ---- */

static void xdb_bind(sqlite3_stmt *s, const char *types, va_list ap)
{
        for (int i = 0; types && types[i]; i++) {
                switch (types[i]) {
                case 's': {
                        const char *v = va_arg(ap, const char *);
                        if (v)
                                sqlite3_bind_text(s, i + 1, v, -1, SQLITE_TRANSIENT);
                        else
                                sqlite3_bind_null(s, i + 1);
                        break;
                }
                case 'i':
                        sqlite3_bind_int(s, i + 1, va_arg(ap, int));
                        break;
                case 'I':
                        sqlite3_bind_int64(s, i + 1, va_arg(ap, int64_t));
                        break;
                default:
                        abort();
                }
        }
}

static sqlite3_stmt *xdb_vquery(struct ctl *c, struct berr **err, const char *sql, const char *types,
                                va_list ap)
{
        sqlite3_stmt *s = db_prepare(c, sql, err);
        if (s)
                xdb_bind(s, types, ap);
        return s;
}

sqlite3_stmt *xdb_query(struct ctl *c, struct berr **err, const char *sql, const char *types, ...)
{
        va_list ap;
        va_start(ap, types);
        sqlite3_stmt *s = xdb_vquery(c, err, sql, types, ap);
        va_end(ap);
        return s;
}

sqlite3_stmt *xdb_cquery(struct ctl *c, struct berr **err, const char *sql, const char *types, ...)
{
        sqlite3_stmt *s = db_cached(c, sql, err);
        if (!s)
                return NULL;
        va_list ap;
        va_start(ap, types);
        xdb_bind(s, types, ap);
        va_end(ap);
        return s;
}

int xdb_cexec(struct ctl *c, struct berr **err, const char *sql, const char *types, ...)
{
        _cleanup_reset_ sqlite3_stmt *s = db_cached(c, sql, err);
        if (!s)
                return -EIO;
        va_list ap;
        va_start(ap, types);
        xdb_bind(s, types, ap);
        va_end(ap);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_DONE || rc == SQLITE_ROW)
                return 0;
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
                return berr_set(err, -EEXIST, "sqlite: %s", sqlite3_errmsg(c->db));
        return berr_set(err, -EIO, "sqlite: %s", sqlite3_errmsg(c->db));
}

int xdb_exec(struct ctl *c, struct berr **err, const char *sql, const char *types, ...)
{
        va_list ap;
        va_start(ap, types);
        _cleanup_stmt_ sqlite3_stmt *s = xdb_vquery(c, err, sql, types, ap);
        va_end(ap);
        if (!s)
                return -EIO;
        int rc = sqlite3_step(s);
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
                return berr_set(err, -EEXIST, "%s", sqlite3_errmsg(c->db));
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
                return berr_set(err, -EIO, "%s", sqlite3_errmsg(c->db));
        return 0;
}

bool apps_authz_answer(int k, struct http_response *resp, const char *what)
{
        if (k == 0)
                return true;
        if (k == -EPERM)
                api_forbidden(resp);
        else
                api_not_found(resp, what);
        return false;
}

int apps_space_of(struct ctl *c, const char *app_guid, char ret_space[static 37])
{
        _cleanup_stmt_ sqlite3_stmt *s =
            xdb_query(c, NULL, "SELECT space_guid FROM apps WHERE guid = ?", "s", app_guid);
        if (!s)
                return -EIO;
        if (sqlite3_step(s) != SQLITE_ROW)
                return -ENOENT;
        snprintf(ret_space, 37, "%s", db_col_text(s, 0));
        return 0;
}

bool apps_authz(struct api_req *r, struct http_response *resp, const char *app_guid, enum authz_perm perm,
                char ret_space[static 37])
{
        db_lock(r->ctl);
        int k = apps_space_of(r->ctl, app_guid, ret_space);
        if (k == 0)
                k = authz_space(r, ret_space, perm, true);
        db_unlock(r->ctl);
        return apps_authz_answer(k, resp, "App");
}

#define APP_COLUMNS "SELECT guid, name, space_guid, state, created_at, updated_at FROM apps"

static json_t *app_row_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *g = db_col_text(s, 0);
        return json_pack(
            "{s:s,s:s,s:s,s:s,s:s,s:{s:s,s:{}},s:{s:{s:{s:s}}},s:o,s:{s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:"
            "o}}",
            "guid", g, "name", db_col_text(s, 1), "state", db_col_text(s, 3), "created_at", db_col_text(s, 4),
            "updated_at", db_col_text(s, 5), "lifecycle", "type", "docker", "data", "relationships", "space",
            "data", "guid", db_col_text(s, 2), "metadata", api_metadata(), "links", "self",
            api_link(c, "/v3/apps/%s", g), "space", api_link(c, "/v3/spaces/%s", db_col_text(s, 2)),
            "processes", api_link(c, "/v3/apps/%s/processes", g), "packages",
            api_link(c, "/v3/apps/%s/packages", g), "environment_variables",
            api_link(c, "/v3/apps/%s/environment_variables", g), "current_droplet",
            api_link(c, "/v3/apps/%s/droplets/current", g), "droplets",
            api_link(c, "/v3/apps/%s/droplets", g), "routes", api_link(c, "/v3/apps/%s/routes", g), "start",
            api_link(c, "/v3/apps/%s/actions/start", g), "stop", api_link(c, "/v3/apps/%s/actions/stop", g));
}

json_t *apps_app_json(struct ctl *c, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL, APP_COLUMNS " WHERE guid = ?", "s", guid);
        return s && sqlite3_step(s) == SQLITE_ROW ? app_row_json(c, s) : NULL;
}

#define PROC_COLUMNS                                                                                         \
        "SELECT guid, app_guid, type, command, instances, memory_mb, disk_mb, health_check_type,"            \
        " health_check_endpoint, health_check_timeout, invocation_timeout, version, created_at, updated_at," \
        " health_check_interval, readiness_type, readiness_endpoint, readiness_invocation_timeout,"          \
        " readiness_interval FROM processes"

static json_t *int_or_null(sqlite3_stmt *s, int i)
{
        return sqlite3_column_type(s, i) == SQLITE_NULL ? json_null()
                                                        : json_integer(sqlite3_column_int(s, i));
}

static json_t *proc_row_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *g = db_col_text(s, 0), *app = db_col_text(s, 1), *hct = db_col_text(s, 7);
        json_t *hcdata = json_pack("{s:o,s:o,s:o}", "timeout", int_or_null(s, 9), "invocation_timeout",
                                   int_or_null(s, 10), "interval", int_or_null(s, 14));
        if (strcmp(hct, "http") == 0)
                json_object_set_new(hcdata, "endpoint",
                                    db_col_text(s, 8) ? json_string(db_col_text(s, 8)) : json_string("/"));
        const char *rct = db_col_text(s, 15) ? db_col_text(s, 15) : "process";
        json_t *rcdata =
            json_pack("{s:o,s:o}", "invocation_timeout", int_or_null(s, 17), "interval", int_or_null(s, 18));
        if (strcmp(rct, "http") == 0)
                json_object_set_new(rcdata, "endpoint",
                                    db_col_text(s, 16) ? json_string(db_col_text(s, 16)) : json_string("/"));
        const char *cmd = db_col_text(s, 3);
        return json_pack(
            "{s:s,s:s,s:o,s:i,s:i,s:i,s:i,s:{s:s,s:o},s:{s:s,s:o},s:{s:{s:{s:s}},s:n},s:o,"
            "s:s,s:s,s:s,s:{s:o,s:o,s:o,s:o}}",
            "guid", g, "type", db_col_text(s, 2), "command", cmd ? json_string(cmd) : json_null(),
            "instances", sqlite3_column_int(s, 4), "memory_in_mb", sqlite3_column_int(s, 5), "disk_in_mb",
            sqlite3_column_int(s, 6), "log_rate_limit_in_bytes_per_second", -1, "health_check", "type", hct,
            "data", hcdata, "readiness_health_check", "type", rct, "data", rcdata, "relationships", "app",
            "data", "guid", app, "revision", "metadata", api_metadata(), "version", db_col_text(s, 11),
            "created_at", db_col_text(s, 12), "updated_at", db_col_text(s, 13), "links", "self",
            api_link(c, "/v3/processes/%s", g), "scale", api_link(c, "/v3/processes/%s/actions/scale", g),
            "app", api_link(c, "/v3/apps/%s", app), "stats", api_link(c, "/v3/processes/%s/stats", g));
}

json_t *apps_process_json(struct ctl *c, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL, PROC_COLUMNS " WHERE guid = ?", "s", guid);
        return s && sqlite3_step(s) == SQLITE_ROW ? proc_row_json(c, s) : NULL;
}

json_t *apps_uris(struct ctl *c, const char *app_guid)
{
        json_t *out = json_array();
        _cleanup_stmt_ sqlite3_stmt *s =
            xdb_query(c, NULL,
                      "SELECT DISTINCT r.host, d.name, r.path FROM destinations ds JOIN routes r ON r.guid ="
                      " ds.route_guid JOIN domains d ON d.guid = r.domain_guid WHERE ds.app_guid = ?"
                      " ORDER BY r.created_at, r.rowid",
                      "s", app_guid);
        while (s && sqlite3_step(s) == SQLITE_ROW) {
                const char *h = db_col_text(s, 0), *p = db_col_text(s, 2);
                _cleanup_free_ char *u =
                    xasprintf("%s%s%s%s", h, *h ? "." : "", db_col_text(s, 1), p ? p : "");
                json_array_append_new(out, json_string(u));
        }
        return out;
}

json_t *apps_vcap_application(struct ctl *c, const char *app_guid, const char *process_guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
            c, NULL,
            "SELECT a.name, a.space_guid, p.guid, p.memory_mb, p.disk_mb, p.version, p.type FROM apps a JOIN"
            " processes p ON p.app_guid = a.guid WHERE a.guid = ?1 AND (?2 IS NULL AND p.type = 'web' OR"
            " p.guid = ?2)",
            "ss", app_guid, process_guid);
        if (!s || sqlite3_step(s) != SQLITE_ROW)
                return NULL;
        _cleanup_free_ char *space_name = NULL, *org_guid = NULL, *org_name = NULL;
        if (tenancy_space_info(c, db_col_text(s, 1), &space_name, &org_guid, &org_name) < 0)
                return NULL;
        json_t *uris = apps_uris(c, app_guid);
        json_t *j = json_pack(
            "{s:s,s:{s:i,s:i,s:i},s:s,s:O,s:s,s:s,s:s,s:s,s:s,s:O,s:s,s:s,s:s,s:s,s:s}", "cf_api",
            c->external_url ? c->external_url : "", "limits", "fds", 16384, "mem", sqlite3_column_int(s, 3),
            "disk", sqlite3_column_int(s, 4), "application_name", db_col_text(s, 0), "application_uris", uris,
            "name", db_col_text(s, 0), "space_name", space_name, "space_id", db_col_text(s, 1),
            "organization_id", org_guid, "organization_name", org_name, "uris", uris, "process_id",
            db_col_text(s, 2), "process_type", db_col_text(s, 6), "application_id", app_guid, "version",
            db_col_text(s, 5), "application_version", db_col_text(s, 5));
        json_decref(uris);
        return j;
}

/* ---- apps ---- */

static void apps_list(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_(strv_freep) char **names = api_query_list(r, "names");
        _cleanup_(strv_freep) char **guids = api_query_list(r, "guids");
        _cleanup_(strv_freep) char **spaces = api_query_list(r, "space_guids");
        _cleanup_(strv_freep) char **orgs = api_query_list(r, "organization_guids");
        _cleanup_free_ char *vis = authz_space_filter_sql(r, "a.space_guid");
        const char *field;
        bool desc;
        if (!api_order_by(r, resp, &field, &desc))
                return;
        _cleanup_free_ char *sql = xasprintf(
            "SELECT a.guid, a.name, a.space_guid, a.state, a.created_at, a.updated_at, s.org_guid FROM apps a"
            " JOIN spaces s ON s.guid = a.space_guid WHERE 1%s ORDER BY a.%s %s, a.rowid %s",
            vis, field, desc ? "DESC" : "ASC", desc ? "DESC" : "ASC");
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, sql, &e);
        while (s && sqlite3_step(s) == SQLITE_ROW)
                if (api_in_list(names, db_col_text(s, 1)) && api_in_list(guids, db_col_text(s, 0)) &&
                    api_in_list(spaces, db_col_text(s, 2)) && api_in_list(orgs, db_col_text(s, 6)))
                        json_array_append_new(items, app_row_json(r->ctl, s));
        db_unlock(r->ctl);
        if (!s) {
                json_decref(items);
                api_server_error(resp, e);
                return;
        }
        api_respond_list(r, resp, "/v3/apps", items);
}

/* Validate an environment_variables object; false with 422 sent. allow_null: PATCH's deletions. */
static bool env_vars_valid(json_t *vars, bool allow_null, struct http_response *resp)
{
        if (!json_is_object(vars)) {
                api_unprocessable(resp, "environment_variables must be an object");
                return false;
        }
        const char *k;
        json_t *v;
        json_object_foreach (vars, k, v) {
                const char *why = env_name_refused(k);
                if (why) {
                        api_unprocessable(resp, "%s", why);
                        return false;
                }
                if (json_is_null(v) && allow_null)
                        continue;
                if (json_is_object(v) || json_is_array(v) || json_is_null(v)) {
                        api_unprocessable(
                            resp, "environment_variables values must be strings, numbers or booleans");
                        return false;
                }
                if (json_is_string(v) && strlen(json_string_value(v)) > ENV_VALUE_MAX) {
                        api_unprocessable(resp, "environment_variables value of %s is too long", k);
                        return false;
                }
        }
        return true;
}

/* Env values are stored as strings (CF stringifies numbers and booleans). */
static json_t *env_stringify(json_t *vars)
{
        json_t *out = json_object();
        const char *k;
        json_t *v;
        json_object_foreach (vars, k, v) {
                if (json_is_string(v))
                        json_object_set_new(out, k, json_string(json_string_value(v)));
                else if (!json_is_null(v)) {
                        _cleanup_free_ char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
                        json_object_set_new(out, k, json_string(s ? s : ""));
                }
        }
        return out;
}

static bool app_name_valid(struct http_response *resp, json_t *n)
{
        if (!json_is_string(n) || !*json_string_value(n)) {
                api_unprocessable(resp,
                                  n && !json_is_string(n) ? "Name must be a string" : "Name can't be blank");
                return false;
        }
        if (!tenancy_name_valid(json_string_value(n))) {
                api_unprocessable(resp,
                                  "Name is too long (maximum is 255 characters) or has control characters");
                return false;
        }
        return true;
}

static bool lifecycle_valid(struct http_response *resp, json_t *lc)
{
        if (!lc || json_is_null(lc))
                return true;
        json_t *t = json_object_get(lc, "type");
        if (!json_is_object(lc) || !json_is_string(t) || strcmp(json_string_value(t), "docker") != 0) {
                api_unprocessable(resp, "Lifecycle type must be docker (berth runs Docker images only)");
                return false;
        }
        return true;
}

static void space_name_of(struct ctl *c, const char *space, char *buf, size_t n)
{
        _cleanup_free_ char *sn = NULL;
        tenancy_space_info(c, space, &sn, NULL, NULL);
        snprintf(buf, n, "%s", sn ? sn : space);
}

static int process_create(struct ctl *c, const char *app_guid, const char *type, struct berr **err)
{
        char guid[37], ver[37], now[21];
        /*
         * The web process has its app's guid, as Cloud Controller gives it: so X-CF-Process-Instance
         * "PROCESS_GUID:INDEX" through the router names the same instances as X-CF-App-Instance.
         */
        if (strcmp(type, "web") == 0)
                snprintf(guid, sizeof(guid), "%s", app_guid);
        else
                ctl_uuid(guid);
        ctl_uuid(ver);
        ctl_now(now);
        return xdb_exec(
            c, err,
            "INSERT INTO processes (guid, app_guid, type, command, instances, memory_mb, disk_mb,"
            " health_check_type, health_check_endpoint, health_check_timeout, invocation_timeout,"
            " version, created_at, updated_at) VALUES (?,?,?,NULL,?,?,?,'port',NULL,?,NULL,?,?,?)",
            "sssiiiisss", guid, app_guid, type, strcmp(type, "web") == 0 ? 1 : 0, PROC_DEFAULT_MEMORY_MB,
            PROC_DEFAULT_DISK_MB, PROC_TIMEOUT_DEFAULT, ver, now, now);
}

static void apps_create(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        json_t *name = json_object_get(r->body, "name");
        json_t *space = json_object_get(
            json_object_get(json_object_get(json_object_get(r->body, "relationships"), "space"), "data"),
            "guid");
        json_t *envv = json_object_get(r->body, "environment_variables");
        if (!app_name_valid(resp, name) || !lifecycle_valid(resp, json_object_get(r->body, "lifecycle")))
                return;
        if (!json_is_string(space)) {
                api_unprocessable(resp, "Space can't be blank");
                return;
        }
        if (envv && !json_is_null(envv) && !env_vars_valid(envv, false, resp))
                return;
        int k = authz_space(r, json_string_value(space), AUTHZ_WRITE, false);
        if (k == -ENOENT) {
                api_unprocessable(resp,
                                  "Invalid space. Ensure that the space exists and you have access to it.");
                return;
        }
        if (!apps_authz_answer(k, resp, "Space"))
                return;
        db_lock(c);
        bool docker_ok = flag_enabled(c, "diego_docker");
        db_unlock(c);
        if (!docker_ok) {
                api_feature_disabled(c, resp, "diego_docker");
                return;
        }
        _cleanup_json_ json_t *env = envv && json_is_object(envv) ? env_stringify(envv) : json_object();
        _cleanup_free_ char *envs = json_dumps(env, JSON_COMPACT);
        char guid[37], now[21], sname[256];
        ctl_uuid(guid);
        ctl_now(now);
        if (!api_tx_begin(r, resp))
                return;
        k = xdb_exec(
            c, &e,
            "INSERT INTO apps (guid, name, space_guid, state, env, droplet_guid, created_at, updated_at)"
            " VALUES (?,?,?,'STOPPED',?,NULL,?,?)",
            "ssssss", guid, json_string_value(name), json_string_value(space), envs, now, now);
        if (k == -EEXIST) {
                space_name_of(c, json_string_value(space), sname, sizeof(sname));
                api_tx_rollback(r);
                api_error(resp, 422, 10016, "CF-UniquenessError",
                          "App with name '%s' already exists in space '%s'", json_string_value(name), sname);
                return;
        }
        if (k == 0)
                k = process_create(c, guid, "web", &e);
        json_t *j = k == 0 ? apps_app_json(c, guid) : NULL;
        if (!j) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        audit_event(c, "audit.app.create", &r->user, "app", guid, json_string_value(name),
                    json_string_value(space), json_pack("{s:s}", "name", json_string_value(name)));
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 201, j);
}

static void apps_show(struct api_req *r, struct http_response *resp)
{
        char space[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        db_lock(r->ctl);
        json_t *j = apps_app_json(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "App");
                return;
        }
        api_respond(resp, 200, j);
}

static char *app_name(struct ctl *c, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s =
            xdb_query(c, NULL, "SELECT name FROM apps WHERE guid = ?", "s", guid);
        return s && sqlite3_step(s) == SQLITE_ROW ? xstrdup(db_col_text(s, 0)) : xstrdup("");
}

static void apps_update(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char space[37], now[21], sname[256];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_WRITE, space))
                return;
        json_t *name = json_object_get(r->body, "name");
        if (name && !app_name_valid(resp, name))
                return;
        if (!lifecycle_valid(resp, json_object_get(r->body, "lifecycle")))
                return;
        ctl_now(now);
        if (!api_tx_begin(r, resp))
                return;
        int k = 0;
        if (name) {
                k = xdb_exec(c, &e, "UPDATE apps SET name = ?, updated_at = ? WHERE guid = ?", "sss",
                             json_string_value(name), now, r->params[0]);
                if (k == -EEXIST) {
                        space_name_of(c, space, sname, sizeof(sname));
                        api_tx_rollback(r);
                        api_error(resp, 422, 10016, "CF-UniquenessError",
                                  "App with name '%s' already exists in space '%s'", json_string_value(name),
                                  sname);
                        return;
                }
        }
        json_t *j = k == 0 ? apps_app_json(c, r->params[0]) : NULL;
        if (!j) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        _cleanup_free_ char *n = app_name(c, r->params[0]);
        audit_event(c, "audit.app.update", &r->user, "app", r->params[0], n, space, json_deep_copy(r->body));
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        routes_changed(c);
        api_respond(resp, 200, j);
}

static void apps_delete(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char space[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_WRITE, space))
                return;
        if (!api_tx_begin(r, resp))
                return;
        _cleanup_free_ char *n = app_name(c, r->params[0]);
        audit_event(c, "audit.app.delete-request", &r->user, "app", r->params[0], n, space, NULL);
        if (xdb_exec(c, &e, "DELETE FROM apps WHERE guid = ?", "s", r->params[0]) < 0) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (!api_tx_commit(r, resp))
                return;
        sched_kick(c);
        routes_changed(c);
        api_respond_empty(resp, 202);
}

void apps_space_deleted(struct ctl *c, const char *space_guid)
{
        /* apps cascade to processes, packages, builds, droplets and destinations; routes cascade with the
         * space but are deleted first here so that the domain keys go too. */
        xdb_exec(c, NULL, "DELETE FROM routes WHERE space_guid = ?", "s", space_guid);
        xdb_exec(c, NULL, "DELETE FROM apps WHERE space_guid = ?", "s", space_guid);
}

/* ---- start / stop / restart ---- */

enum app_action { ACT_START, ACT_STOP, ACT_RESTART };

static void app_action(struct api_req *r, struct http_response *resp, enum app_action act)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char space[37], now[21];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_WRITE, space))
                return;
        if (act != ACT_STOP) {
                db_lock(c);
                bool ok = flag_enabled(c, "diego_docker");
                db_unlock(c);
                if (!ok) {
                        api_feature_disabled(c, resp, "diego_docker");
                        return;
                }
        }
        ctl_now(now);
        if (!api_tx_begin(r, resp))
                return;
        if (act != ACT_STOP) {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL, "SELECT droplet_guid FROM apps WHERE guid = ?", "s", r->params[0]);
                if (!s || sqlite3_step(s) != SQLITE_ROW || sqlite3_column_type(s, 0) == SQLITE_NULL) {
                        api_tx_rollback(r);
                        api_unprocessable(resp, "Assign a droplet before starting this app.");
                        return;
                }
        }
        if (act != ACT_STOP) {
                /* CF: Diego unreachable → RunnerUnavailable; here, no cell heartbeat within 10 s. */
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL,
                              "SELECT 1 FROM cells WHERE last_seen > CAST(strftime('%s', 'now') AS INTEGER) "
                              "* 1000 - 10000",
                              NULL);
                if (!s || sqlite3_step(s) != SQLITE_ROW) {
                        api_tx_rollback(r);
                        api_error(resp, 502, 170015, "CF-RunnerUnavailable",
                                  "Runner is unavailable: no cell reachable");
                        return;
                }
        }
        int k = xdb_exec(c, &e, "UPDATE apps SET state = ?, updated_at = ? WHERE guid = ?", "sss",
                         act == ACT_STOP ? "STOPPED" : "STARTED", now, r->params[0]);
        if (k == 0 && act == ACT_RESTART) {
                /* A new version: the scheduler replaces every instance of the old one. */
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, &e, "SELECT guid FROM processes WHERE app_guid = ?", "s", r->params[0]);
                struct strv procs = { 0 };
                while (s && sqlite3_step(s) == SQLITE_ROW)
                        strv_push(&procs, xstrdup(db_col_text(s, 0)));
                for (size_t i = 0; k == 0 && i < procs.n; i++) {
                        char ver[37];
                        ctl_uuid(ver);
                        k = xdb_exec(c, &e, "UPDATE processes SET version = ? WHERE guid = ?", "ss", ver,
                                     procs.v[i]);
                }
                strv_clear(&procs);
        }
        json_t *j = k == 0 ? apps_app_json(c, r->params[0]) : NULL;
        if (!j) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        /* A stop cancels an active rolling deployment; a plain restart supersedes it (all at once). */
        if (act == ACT_STOP)
                deployments_finalize_app(c, r->params[0], "CANCELED");
        else if (act == ACT_RESTART)
                deployments_finalize_app(c, r->params[0], "SUPERSEDED");
        _cleanup_free_ char *n = app_name(c, r->params[0]);
        audit_event(c,
                    act == ACT_START  ? "audit.app.start"
                    : act == ACT_STOP ? "audit.app.stop"
                                      : "audit.app.restart",
                    &r->user, "app", r->params[0], n, space, NULL);
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        sched_kick(c);
        routes_changed(c);
        api_respond(resp, 200, j);
}

static void apps_start(struct api_req *r, struct http_response *resp)
{
        app_action(r, resp, ACT_START);
}

static void apps_stop(struct api_req *r, struct http_response *resp)
{
        app_action(r, resp, ACT_STOP);
}

static void apps_restart(struct api_req *r, struct http_response *resp)
{
        app_action(r, resp, ACT_RESTART);
}

/* ---- environment ---- */

static json_t *app_env_vars(struct ctl *c, const char *app_guid)
{
        _cleanup_stmt_ sqlite3_stmt *s =
            xdb_query(c, NULL, "SELECT env FROM apps WHERE guid = ?", "s", app_guid);
        json_t *j = s && sqlite3_step(s) == SQLITE_ROW ? json_loads(db_col_text(s, 0), 0, NULL) : NULL;
        return j ? j : json_object();
}

static void apps_env(struct api_req *r, struct http_response *resp)
{
        char space[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_SECRET, space))
                return;
        db_lock(r->ctl);
        json_t *vars = app_env_vars(r->ctl, r->params[0]);
        json_t *vcap = apps_vcap_application(r->ctl, r->params[0], NULL);
        db_unlock(r->ctl);
        api_respond(resp, 200,
                    json_pack("{s:o,s:{},s:{},s:{s:{}},s:{s:o}}", "environment_variables", vars,
                              "staging_env_json", "running_env_json", "system_env_json", "VCAP_SERVICES",
                              "application_env_json", "VCAP_APPLICATION", vcap ? vcap : json_object()));
}

static json_t *env_vars_body(struct ctl *c, const char *app, json_t *vars)
{
        return json_pack("{s:o,s:{s:o,s:o}}", "var", vars, "links", "self",
                         api_link(c, "/v3/apps/%s/environment_variables", app), "app",
                         api_link(c, "/v3/apps/%s", app));
}

static void apps_env_vars_get(struct api_req *r, struct http_response *resp)
{
        char space[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_SECRET, space))
                return;
        db_lock(r->ctl);
        json_t *vars = app_env_vars(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        api_respond(resp, 200, env_vars_body(r->ctl, r->params[0], vars));
}

static void apps_env_vars_patch(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char space[37], now[21];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_WRITE, space))
                return;
        json_t *var = json_object_get(r->body, "var");
        if (!var)
                var = r->body;
        if (!env_vars_valid(var, true, resp))
                return;
        ctl_now(now);
        if (!api_tx_begin(r, resp))
                return;
        json_t *vars = app_env_vars(c, r->params[0]);
        const char *k;
        json_t *v;
        json_object_foreach (var, k, v) {
                if (json_is_null(v))
                        json_object_del(vars, k);
        }
        _cleanup_json_ json_t *add = env_stringify(var);
        json_object_update(vars, add);
        _cleanup_free_ char *s = json_dumps(vars, JSON_COMPACT);
        if (xdb_exec(c, &e, "UPDATE apps SET env = ?, updated_at = ? WHERE guid = ?", "sss", s, now,
                     r->params[0]) < 0) {
                json_decref(vars);
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        _cleanup_free_ char *n = app_name(c, r->params[0]);
        audit_event(c, "audit.app.update", &r->user, "app", r->params[0], n, space,
                    json_pack("{s:[s]}", "request", "environment_variables"));
        if (!api_tx_commit(r, resp)) {
                json_decref(vars);
                return;
        }
        api_respond(resp, 200, env_vars_body(c, r->params[0], vars));
}

/* ---- processes ---- */

static void app_processes(struct api_req *r, struct http_response *resp)
{
        char space[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
            r->ctl, NULL, PROC_COLUMNS " WHERE app_guid = ? ORDER BY created_at, rowid", "s", r->params[0]);
        while (s && sqlite3_step(s) == SQLITE_ROW)
                json_array_append_new(items, proc_row_json(r->ctl, s));
        db_unlock(r->ctl);
        _cleanup_free_ char *path = xasprintf("/v3/apps/%s/processes", r->params[0]);
        api_respond_list(r, resp, path, items);
}

/* The process guid of (app, type) (lock held): 0, -ENOENT. */
static int process_of(struct ctl *c, const char *app, const char *type, char ret[static 37])
{
        _cleanup_stmt_ sqlite3_stmt *s =
            xdb_query(c, NULL, "SELECT guid FROM processes WHERE app_guid = ? AND type = ?", "ss", app, type);
        if (!s || sqlite3_step(s) != SQLITE_ROW)
                return -ENOENT;
        snprintf(ret, 37, "%s", db_col_text(s, 0));
        return 0;
}

static void app_process_show(struct api_req *r, struct http_response *resp)
{
        char space[37], pg[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        db_lock(r->ctl);
        json_t *j =
            process_of(r->ctl, r->params[0], r->params[1], pg) == 0 ? apps_process_json(r->ctl, pg) : NULL;
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Process");
                return;
        }
        api_respond(resp, 200, j);
}

static void app_process_web(struct api_req *r, struct http_response *resp)
{
        const char *saved = r->params[1];
        r->params[1] = "web";
        app_process_show(r, resp);
        r->params[1] = saved;
}

/* The app and space of a process, authorized; false with 404/403 sent. */
static bool process_authz(struct api_req *r, struct http_response *resp, const char *pguid,
                          enum authz_perm perm, char ret_app[static 37], char ret_space[static 37])
{
        db_lock(r->ctl);
        int k = -ENOENT;
        {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
                    r->ctl, NULL,
                    "SELECT a.guid, a.space_guid FROM processes p JOIN apps a ON a.guid = p.app_guid"
                    " WHERE p.guid = ?",
                    "s", pguid);
                if (s && sqlite3_step(s) == SQLITE_ROW) {
                        snprintf(ret_app, 37, "%s", db_col_text(s, 0));
                        snprintf(ret_space, 37, "%s", db_col_text(s, 1));
                        k = 0;
                }
        }
        if (k == 0)
                k = authz_space(r, ret_space, perm, true);
        db_unlock(r->ctl);
        return apps_authz_answer(k, resp, "Process");
}

static void process_show(struct api_req *r, struct http_response *resp)
{
        char app[37], space[37];
        if (!process_authz(r, resp, r->params[0], AUTHZ_READ, app, space))
                return;
        db_lock(r->ctl);
        json_t *j = apps_process_json(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Process");
                return;
        }
        api_respond(resp, 200, j);
}

/* An optional positive integer field in [min, max]; false with 422 sent. *ret untouched if absent. */
static bool body_int(struct http_response *resp, json_t *obj, const char *key, const char *label,
                     json_int_t min, json_int_t max, bool *present, json_int_t *ret)
{
        json_t *v = json_object_get(obj, key);
        *present = false;
        if (!v || json_is_null(v))
                return true;
        if (!json_is_integer(v)) {
                api_unprocessable(resp, "%s must be an integer", label);
                return false;
        }
        json_int_t n = json_integer_value(v);
        if (n < min) {
                if (min == 1)
                        api_unprocessable(resp, "%s must be greater than 0", label);
                else
                        api_unprocessable(resp, "%s must be greater than or equal to %lld", label,
                                          (long long)min);
                return false;
        }
        if (n > max) {
                api_unprocessable(resp, "%s must be less than or equal to %lld", label, (long long)max);
                return false;
        }
        *present = true;
        *ret = n;
        return true;
}

/* A PATCH of a health_check or readiness_health_check object (CF V3 shapes); fields absent stay as they are.
 */
struct check_patch {
        const char *type, *endpoint;
        bool has_to, has_ito, has_iv, has_ep;
        json_int_t to, ito, iv;
};

/* Parse hc (borrowed) into *p; false after answering 422. */
static bool check_patch_parse(struct http_response *resp, json_t *hc, bool readiness, struct check_patch *p)
{
        const char *what = readiness ? "Readiness health check" : "Health check";
        *p = (struct check_patch){ 0 };
        if (!hc || json_is_null(hc))
                return true;
        if (!json_is_object(hc)) {
                api_unprocessable(resp, "%s must be an object", what);
                return false;
        }
        json_t *t = json_object_get(hc, "type");
        if (t) {
                if (!json_is_string(t) ||
                    (strcmp(json_string_value(t), "port") != 0 && strcmp(json_string_value(t), "http") != 0 &&
                     strcmp(json_string_value(t), "process") != 0)) {
                        api_unprocessable(resp, "%s type must be \"port\", \"process\", or \"http\"", what);
                        return false;
                }
                p->type = json_string_value(t);
        }
        json_t *d = json_object_get(hc, "data");
        if (d && !json_is_null(d) && !json_is_object(d)) {
                api_unprocessable(resp, "%s data must be an object", what);
                return false;
        }
        if (readiness && json_object_get(d, "timeout") && !json_is_null(json_object_get(d, "timeout"))) {
                api_unprocessable(resp, "Readiness health check data has no timeout (only liveness does)");
                return false;
        }
        if (!body_int(resp, d, "timeout", "Timeout", 1, PROC_TIMEOUT_MAX, &p->has_to, &p->to) ||
            !body_int(resp, d, "invocation_timeout", "Invocation timeout", 1, PROC_TIMEOUT_MAX, &p->has_ito,
                      &p->ito) ||
            !body_int(resp, d, "interval", "Interval", 1, 600, &p->has_iv, &p->iv))
                return false;
        json_t *ep = json_object_get(d, "endpoint");
        if (ep && !json_is_null(ep)) {
                if (!json_is_string(ep) || json_string_value(ep)[0] != '/' ||
                    strpbrk(json_string_value(ep), " \r\n") || strlen(json_string_value(ep)) > 1024) {
                        api_unprocessable(resp, "%s endpoint must be a valid URI path", what);
                        return false;
                }
                p->endpoint = json_string_value(ep);
                p->has_ep = true;
        } else if (ep) {
                p->has_ep = true;
        }
        return true;
}

static void process_update(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char app[37], space[37], now[21];
        if (!process_authz(r, resp, r->params[0], AUTHZ_WRITE, app, space))
                return;
        json_t *cmd = json_object_get(r->body, "command");
        if (cmd && !json_is_null(cmd) && (!json_is_string(cmd) || strlen(json_string_value(cmd)) > 4096)) {
                api_unprocessable(resp, "Command must be a string of at most 4096 characters");
                return;
        }
        struct check_patch hc, rc;
        if (!check_patch_parse(resp, json_object_get(r->body, "health_check"), false, &hc) ||
            !check_patch_parse(resp, json_object_get(r->body, "readiness_health_check"), true, &rc))
                return;
        ctl_now(now);
        if (!api_tx_begin(r, resp))
                return;
        int k = 0;
        if (cmd)
                k = xdb_exec(c, &e, "UPDATE processes SET command = ? WHERE guid = ?", "ss",
                             json_is_string(cmd) && *json_string_value(cmd) ? json_string_value(cmd) : NULL,
                             r->params[0]);
        if (k == 0 && hc.type)
                k = xdb_exec(c, &e, "UPDATE processes SET health_check_type = ? WHERE guid = ?", "ss",
                             hc.type, r->params[0]);
        if (k == 0 && hc.has_to)
                k = xdb_exec(c, &e, "UPDATE processes SET health_check_timeout = ? WHERE guid = ?", "is",
                             (int)hc.to, r->params[0]);
        if (k == 0 && hc.has_ito)
                k = xdb_exec(c, &e, "UPDATE processes SET invocation_timeout = ? WHERE guid = ?", "is",
                             (int)hc.ito, r->params[0]);
        if (k == 0 && hc.has_iv)
                k = xdb_exec(c, &e, "UPDATE processes SET health_check_interval = ? WHERE guid = ?", "is",
                             (int)hc.iv, r->params[0]);
        if (k == 0 && hc.has_ep)
                k = xdb_exec(c, &e, "UPDATE processes SET health_check_endpoint = ? WHERE guid = ?", "ss",
                             hc.endpoint, r->params[0]);
        if (k == 0 && rc.type)
                k = xdb_exec(c, &e, "UPDATE processes SET readiness_type = ? WHERE guid = ?", "ss", rc.type,
                             r->params[0]);
        if (k == 0 && rc.has_ito)
                k = xdb_exec(c, &e, "UPDATE processes SET readiness_invocation_timeout = ? WHERE guid = ?",
                             "is", (int)rc.ito, r->params[0]);
        if (k == 0 && rc.has_iv)
                k = xdb_exec(c, &e, "UPDATE processes SET readiness_interval = ? WHERE guid = ?", "is",
                             (int)rc.iv, r->params[0]);
        if (k == 0 && rc.has_ep)
                k = xdb_exec(c, &e, "UPDATE processes SET readiness_endpoint = ? WHERE guid = ?", "ss",
                             rc.endpoint, r->params[0]);
        if (k == 0)
                k = xdb_exec(c, &e, "UPDATE processes SET updated_at = ? WHERE guid = ?", "ss", now,
                             r->params[0]);
        json_t *j = k == 0 ? apps_process_json(c, r->params[0]) : NULL;
        if (!j) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        _cleanup_free_ char *n = app_name(c, app);
        audit_event(c, "audit.app.process.update", &r->user, "app", app, n, space, json_deep_copy(r->body));
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 200, j);
}

static void process_scale(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char app[37], space[37], now[21];
        if (!process_authz(r, resp, r->params[0], AUTHZ_WRITE, app, space))
                return;
        db_lock(c);
        bool scaling = flag_enabled(c, "app_scaling");
        db_unlock(c);
        if (!scaling && !r->user.admin) {
                api_feature_disabled(c, resp, "app_scaling");
                return;
        }
        bool hi, hm, hd;
        json_int_t inst = 0, mem = 0, disk = 0;
        if (!body_int(resp, r->body, "instances", "Instances", 0, PROC_INSTANCES_MAX, &hi, &inst) ||
            !body_int(resp, r->body, "memory_in_mb", "Memory in mb", 1, PROC_MEMORY_MAX_MB, &hm, &mem) ||
            !body_int(resp, r->body, "disk_in_mb", "Disk in mb", 1, PROC_MEMORY_MAX_MB, &hd, &disk))
                return;
        ctl_now(now);
        if (!api_tx_begin(r, resp))
                return;
        int k = 0;
        if (hi)
                k = xdb_exec(c, &e, "UPDATE processes SET instances = ? WHERE guid = ?", "is", (int)inst,
                             r->params[0]);
        if (k == 0 && hm)
                k = xdb_exec(c, &e, "UPDATE processes SET memory_mb = ? WHERE guid = ?", "is", (int)mem,
                             r->params[0]);
        if (k == 0 && hd)
                k = xdb_exec(c, &e, "UPDATE processes SET disk_mb = ? WHERE guid = ?", "is", (int)disk,
                             r->params[0]);
        if (k == 0 && (hm || hd)) {
                /* New limits need new containers (CF restarts the instances). */
                char ver[37];
                ctl_uuid(ver);
                k = xdb_exec(c, &e, "UPDATE processes SET version = ? WHERE guid = ?", "ss", ver,
                             r->params[0]);
        }
        if (k == 0)
                k = xdb_exec(c, &e, "UPDATE processes SET updated_at = ? WHERE guid = ?", "ss", now,
                             r->params[0]);
        json_t *j = k == 0 ? apps_process_json(c, r->params[0]) : NULL;
        if (!j) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        _cleanup_free_ char *n = app_name(c, app);
        audit_event(c, "audit.app.process.scale", &r->user, "app", app, n, space,
                    json_pack("{s:O}", "request", r->body));
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        sched_kick(c);
        api_respond(resp, 202, j);
}

static void app_process_scale(struct api_req *r, struct http_response *resp)
{
        char space[37], pg[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        db_lock(r->ctl);
        int k = process_of(r->ctl, r->params[0], r->params[1], pg);
        db_unlock(r->ctl);
        if (k < 0) {
                api_not_found(resp, "Process");
                return;
        }
        r->params[0] = pg;
        process_scale(r, resp);
}

/* ---- current droplet ---- */

static json_t *current_droplet_body(struct ctl *c, const char *app, const char *droplet)
{
        return json_pack("{s:o,s:{s:o,s:o}}", "data",
                         droplet ? json_pack("{s:s}", "guid", droplet) : json_null(), "links", "self",
                         api_link(c, "/v3/apps/%s/relationships/current_droplet", app), "related",
                         api_link(c, "/v3/apps/%s/droplets/current", app));
}

static void app_current_droplet_get(struct api_req *r, struct http_response *resp)
{
        char space[37];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_READ, space))
                return;
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s =
            xdb_query(r->ctl, NULL, "SELECT droplet_guid FROM apps WHERE guid = ?", "s", r->params[0]);
        json_t *j = s && sqlite3_step(s) == SQLITE_ROW
                        ? current_droplet_body(r->ctl, r->params[0], db_col_text(s, 0))
                        : NULL;
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "App");
                return;
        }
        api_respond(resp, 200, j);
}

static void app_current_droplet_set(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char space[37], now[21];
        if (!apps_authz(r, resp, r->params[0], AUTHZ_WRITE, space))
                return;
        json_t *g = json_object_get(json_object_get(r->body, "data"), "guid");
        if (!json_is_string(g)) {
                api_unprocessable(resp, "Data must have a droplet guid");
                return;
        }
        ctl_now(now);
        if (!api_tx_begin(r, resp))
                return;
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL, "SELECT 1 FROM droplets WHERE guid = ? AND app_guid = ?", "ss",
                              json_string_value(g), r->params[0]);
                if (!s || sqlite3_step(s) != SQLITE_ROW) {
                        api_tx_rollback(r);
                        api_unprocessable(resp, "Unable to assign current droplet. Ensure the droplet exists "
                                                "and belongs to this app.");
                        return;
                }
        }
        if (xdb_exec(c, &e, "UPDATE apps SET droplet_guid = ?, updated_at = ? WHERE guid = ?", "sss",
                     json_string_value(g), now, r->params[0]) < 0) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        _cleanup_free_ char *n = app_name(c, r->params[0]);
        audit_event(c, "audit.app.droplet.mapped", &r->user, "app", r->params[0], n, space,
                    json_pack("{s:s}", "droplet_guid", json_string_value(g)));
        json_t *j = current_droplet_body(c, r->params[0], json_string_value(g));
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        api_respond(resp, 200, j);
}

const struct api_route api_routes_apps[] = {
        { "GET", "/v3/apps", apps_list, API_USER },
        { "POST", "/v3/apps", apps_create, API_USER },
        { "GET", "/v3/apps/:guid", apps_show, API_USER },
        { "PATCH", "/v3/apps/:guid", apps_update, API_USER },
        { "DELETE", "/v3/apps/:guid", apps_delete, API_USER },
        { "POST", "/v3/apps/:guid/actions/start", apps_start, API_USER },
        { "POST", "/v3/apps/:guid/actions/stop", apps_stop, API_USER },
        { "POST", "/v3/apps/:guid/actions/restart", apps_restart, API_USER },
        { "GET", "/v3/apps/:guid/env", apps_env, API_USER },
        { "GET", "/v3/apps/:guid/environment_variables", apps_env_vars_get, API_USER },
        { "PATCH", "/v3/apps/:guid/environment_variables", apps_env_vars_patch, API_USER },
        { "GET", "/v3/apps/:guid/processes", app_processes, API_USER },
        { "GET", "/v3/apps/:guid/processes/web", app_process_web, API_USER },
        { "GET", "/v3/apps/:guid/processes/:type", app_process_show, API_USER },
        { "POST", "/v3/apps/:guid/processes/:type/actions/scale", app_process_scale, API_USER },
        { "GET", "/v3/processes/:guid", process_show, API_USER },
        { "PATCH", "/v3/processes/:guid", process_update, API_USER },
        { "POST", "/v3/processes/:guid/actions/scale", process_scale, API_USER },
        { "GET", "/v3/apps/:guid/relationships/current_droplet", app_current_droplet_get, API_USER },
        { "PATCH", "/v3/apps/:guid/relationships/current_droplet", app_current_droplet_set, API_USER },
        { NULL },
};
