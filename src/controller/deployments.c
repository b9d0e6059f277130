/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rolling deployments in Cloud Foundry's V3 shape (docs/PLATFORM.md "Deployments"): POST /v3/deployments
 * gives the app's web process a new version (and the app the deployment's droplet); the scheduler
 * (sched.c) then replaces the instances of older versions one at a time, each old one leaving the route
 * table only once its replacement is RUNNING and routed, and finalizes the deployment (DEPLOYED). Cancel
 * rolls back the same way to the previous droplet and version (CANCELED); a newer deployment, a plain
 * restart or a change of the process' limits supersedes it (SUPERSEDED); stopping the app cancels it.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "controller/ctl.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strv.h"

const char db_schema_deployments[] =
    "CREATE TABLE IF NOT EXISTS deployments ("
    " guid TEXT PRIMARY KEY, app_guid TEXT NOT NULL REFERENCES apps(guid) ON DELETE CASCADE,"
    " process_guid TEXT NOT NULL,"
    " state TEXT NOT NULL,"         /* DEPLOYING, CANCELING, DEPLOYED, CANCELED */
    " status_value TEXT NOT NULL,"  /* ACTIVE, FINALIZED */
    " status_reason TEXT NOT NULL," /* DEPLOYING, CANCELING, DEPLOYED, CANCELED, SUPERSEDED */
    " droplet_guid TEXT, previous_droplet_guid TEXT,"
    " version TEXT NOT NULL," /* the process version being rolled to */
    " previous_version TEXT,"
    " created_at TEXT NOT NULL, updated_at TEXT NOT NULL, last_status_change TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS deployments_app ON deployments(app_guid, status_value);"
    "CREATE INDEX IF NOT EXISTS deployments_active ON deployments(status_value);";

#define DEP_COLUMNS                                                                                  \
        "SELECT d.guid, d.app_guid, d.process_guid, d.state, d.status_value, d.status_reason, "      \
        "d.droplet_guid,"                                                                            \
        " d.previous_droplet_guid, d.version, d.created_at, d.updated_at, d.last_status_change FROM" \
        " deployments d"

static json_t *guid_or_null(const char *g)
{
        return g ? json_pack("{s:s}", "guid", g) : json_null();
}

/* The deployment resource from a DEP_COLUMNS row (lock held). */
static json_t *dep_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *g = db_col_text(s, 0), *app = db_col_text(s, 1), *proc = db_col_text(s, 2);
        _cleanup_free_ char *healthy = NULL;
        _cleanup_free_ char *cancel = api_href(c, "/v3/deployments/%s/actions/cancel", g);
        {
                /* The last time one of its new instances passed its health check. */
                _cleanup_stmt_ sqlite3_stmt *h = xdb_query(
                    c, NULL,
                    "SELECT max(since) FROM instances WHERE process_guid = ? AND process_version = ?"
                    " AND state = 'RUNNING'",
                    "ss", proc, db_col_text(s, 8));
                if (h && sqlite3_step(h) == SQLITE_ROW && db_col_text(h, 0))
                        healthy = xstrdup(db_col_text(h, 0));
        }
        return json_pack("{s:s,s:s,s:{s:s,s:s,s:{s:s,s:s}},s:s,s:{s:i},s:o,s:o,s:[{s:s,s:s}],s:n,s:s,s:s,s:o,"
                         "s:{s:{s:{s:s}}},s:{s:o,s:o,s:{s:s,s:s}}}",
                         "guid", g, "state", db_col_text(s, 3), "status", "value", db_col_text(s, 4),
                         "reason", db_col_text(s, 5), "details", "last_successful_healthcheck",
                         healthy ? healthy : db_col_text(s, 9), "last_status_change", db_col_text(s, 11),
                         "strategy", "rolling", "options", "max_in_flight", 1, "droplet",
                         guid_or_null(db_col_text(s, 6)), "previous_droplet", guid_or_null(db_col_text(s, 7)),
                         "new_processes", "guid", proc, "type", "web", "revision", "created_at",
                         db_col_text(s, 9), "updated_at", db_col_text(s, 10), "metadata", api_metadata(),
                         "relationships", "app", "data", "guid", app, "links", "self",
                         api_link(c, "/v3/deployments/%s", g), "app", api_link(c, "/v3/apps/%s", app),
                         "cancel", "href", cancel, "method", "POST");
}

static json_t *dep_get(struct ctl *c, const char *guid)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL, DEP_COLUMNS " WHERE d.guid = ?", "s", guid);
        return s && sqlite3_step(s) == SQLITE_ROW ? dep_json(c, s) : NULL;
}

void deployments_finalize_app(struct ctl *c, const char *app_guid, const char *reason)
{
        char now[21];
        ctl_now(now);
        xdb_exec(
            c, NULL,
            "UPDATE deployments SET state = CASE WHEN ?1 = 'CANCELED' THEN 'CANCELED' ELSE 'DEPLOYED' END,"
            " status_value = 'FINALIZED', status_reason = ?1, updated_at = ?2, last_status_change = ?2"
            " WHERE app_guid = ?3 AND status_value = 'ACTIVE'",
            "sss", reason, now, app_guid);
}

static const char *app_name_of(struct ctl *c, const char *app, char *buf, size_t n)
{
        _cleanup_stmt_ sqlite3_stmt *s = xdb_query(c, NULL, "SELECT name FROM apps WHERE guid = ?", "s", app);
        snprintf(buf, n, "%s", s && sqlite3_step(s) == SQLITE_ROW ? db_col_text(s, 0) : "");
        return buf;
}

/* POST /v3/deployments */
static void deployments_create(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        json_t *strategy = json_object_get(r->body, "strategy");
        json_t *app = json_object_get(
            json_object_get(json_object_get(json_object_get(r->body, "relationships"), "app"), "data"),
            "guid");
        json_t *droplet = json_object_get(r->body, "droplet");
        json_t *dguid = json_object_get(droplet, "guid");
        if (strategy && !json_is_null(strategy) &&
            (!json_is_string(strategy) || strcmp(json_string_value(strategy), "rolling") != 0)) {
                api_unprocessable(resp, "Strategy must be 'rolling'");
                return;
        }
        if (!json_is_string(app)) {
                api_unprocessable(resp, "Relationships must include app");
                return;
        }
        if (droplet && !json_is_null(droplet) && !json_is_string(dguid)) {
                api_unprocessable(resp, "Droplet guid must be a string");
                return;
        }
        if (json_object_get(r->body, "revision")) {
                api_unprocessable(resp, "Deployments to a revision are not supported");
                return;
        }
        const char *ag = json_string_value(app);
        char space[37];
        if (!apps_authz(r, resp, ag, AUTHZ_WRITE, space))
                return;
        db_lock(c);
        bool docker = flag_enabled(c, "diego_docker");
        db_unlock(c);
        if (!docker) {
                api_feature_disabled(c, resp, "diego_docker");
                return;
        }
        if (!api_tx_begin(r, resp))
                return;
        _cleanup_free_ char *state = NULL, *current = NULL, *proc = NULL, *prev_version = NULL;
        {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
                    c, NULL,
                    "SELECT a.state, a.droplet_guid, p.guid, p.version FROM apps a LEFT JOIN processes p"
                    " ON p.app_guid = a.guid AND p.type = 'web' WHERE a.guid = ?",
                    "s", ag);
                if (s && sqlite3_step(s) == SQLITE_ROW) {
                        state = xstrdup(db_col_text(s, 0));
                        current = db_col_text(s, 1) ? xstrdup(db_col_text(s, 1)) : NULL;
                        proc = db_col_text(s, 2) ? xstrdup(db_col_text(s, 2)) : NULL;
                        prev_version = db_col_text(s, 3) ? xstrdup(db_col_text(s, 3)) : NULL;
                }
        }
        if (!state || !proc) {
                api_tx_rollback(r);
                api_not_found(resp, "App");
                return;
        }
        if (strcmp(state, "STOPPED") == 0) {
                api_tx_rollback(r);
                api_unprocessable(resp, "Cannot create deployment for a STOPPED app.");
                return;
        }
        const char *target = json_is_string(dguid) ? json_string_value(dguid) : current;
        if (!target) {
                api_tx_rollback(r);
                api_unprocessable(resp,
                                  "Invalid droplet. Please specify a droplet in the request or set a current "
                                  "droplet for the app.");
                return;
        }
        {
                _cleanup_stmt_ sqlite3_stmt *s = xdb_query(
                    c, NULL, "SELECT 1 FROM droplets WHERE guid = ? AND app_guid = ?", "ss", target, ag);
                if (!s || sqlite3_step(s) != SQLITE_ROW) {
                        api_tx_rollback(r);
                        api_unprocessable(resp,
                                          "Unable to assign current droplet. Ensure the droplet exists and "
                                          "belongs to this app.");
                        return;
                }
        }
        {
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
        char guid[37], version[37], now[21], name[256];
        ctl_uuid(guid);
        ctl_uuid(version);
        ctl_now(now);
        app_name_of(c, ag, name, sizeof(name));
        deployments_finalize_app(c, ag, "SUPERSEDED");
        int k = xdb_exec(c, &e, "UPDATE apps SET droplet_guid = ?, updated_at = ? WHERE guid = ?", "sss",
                         target, now, ag);
        if (k == 0)
                k = xdb_exec(c, &e, "UPDATE processes SET version = ?, updated_at = ? WHERE guid = ?", "sss",
                             version, now, proc);
        if (k == 0)
                k = xdb_exec(
                    c, &e,
                    "INSERT INTO deployments (guid, app_guid, process_guid, state, status_value,"
                    " status_reason, droplet_guid, previous_droplet_guid, version, previous_version,"
                    " created_at, updated_at, last_status_change) VALUES (?,?,?,'DEPLOYING','ACTIVE',"
                    "'DEPLOYING',?,?,?,?,?,?,?)",
                    "ssssssssss", guid, ag, proc, target, current, version, prev_version, now, now, now);
        json_t *j = k == 0 ? dep_get(c, guid) : NULL;
        if (!j) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        if (!current || strcmp(current, target) != 0)
                audit_event(c, "audit.app.droplet.mapped", &r->user, "app", ag, name, space,
                            json_pack("{s:s,s:o}", "droplet_guid", target, "previous_droplet_guid",
                                      current ? json_string(current) : json_null()));
        audit_event(c, "audit.app.deployment.create", &r->user, "app", ag, name, space,
                    json_pack("{s:s,s:s,s:s}", "deployment_guid", guid, "droplet_guid", target, "strategy",
                              "rolling"));
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        log_info("deployment %s of app %s: rolling to droplet %s", guid, name, target);
        sched_kick(c);
        api_respond(resp, 201, j);
}

/* The deployment's app, authorized for perm; false with 404/403 sent. */
static bool dep_authz(struct api_req *r, struct http_response *resp, const char *guid, enum authz_perm perm,
                      char ret_app[static 37], char ret_space[static 37])
{
        struct ctl *c = r->ctl;
        db_lock(c);
        int k = -ENOENT;
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL, "SELECT app_guid FROM deployments WHERE guid = ?", "s", guid);
                if (s && sqlite3_step(s) == SQLITE_ROW) {
                        snprintf(ret_app, 37, "%s", db_col_text(s, 0));
                        k = apps_space_of(c, ret_app, ret_space);
                }
        }
        if (k == 0)
                k = authz_space(r, ret_space, perm, true);
        db_unlock(c);
        return apps_authz_answer(k, resp, "Deployment");
}

static void deployments_show(struct api_req *r, struct http_response *resp)
{
        char app[37], space[37];
        if (!dep_authz(r, resp, r->params[0], AUTHZ_READ, app, space))
                return;
        db_lock(r->ctl);
        json_t *j = dep_get(r->ctl, r->params[0]);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Deployment");
                return;
        }
        api_respond(resp, 200, j);
}

static void deployments_list(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_(strv_freep) char **apps = api_query_list(r, "app_guids");
        _cleanup_(strv_freep) char **guids = api_query_list(r, "guids");
        _cleanup_(strv_freep) char **values = api_query_list(r, "status_values");
        _cleanup_(strv_freep) char **reasons = api_query_list(r, "status_reasons");
        _cleanup_(strv_freep) char **states = api_query_list(r, "states");
        _cleanup_free_ char *vis = authz_space_filter_sql(r, "a.space_guid");
        const char *field;
        bool desc;
        if (!api_order_by(r, resp, &field, &desc))
                return;
        if (strcmp(field, "name") == 0) {
                api_error(resp, 400, 10005, "CF-BadQueryParameter",
                          "Order by can only be: 'created_at', "
                          "'updated_at'");
                return;
        }
        _cleanup_free_ char *sql =
            xasprintf(DEP_COLUMNS " JOIN apps a ON a.guid = d.app_guid WHERE 1%s ORDER BY"
                                  " d.%s %s, d.rowid %s",
                      vis, field, desc ? "DESC" : "ASC", desc ? "DESC" : "ASC");
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, sql, &e);
        while (s && sqlite3_step(s) == SQLITE_ROW)
                if (api_in_list(apps, db_col_text(s, 1)) && api_in_list(guids, db_col_text(s, 0)) &&
                    api_in_list(values, db_col_text(s, 4)) && api_in_list(reasons, db_col_text(s, 5)) &&
                    api_in_list(states, db_col_text(s, 3)))
                        json_array_append_new(items, dep_json(r->ctl, s));
        db_unlock(r->ctl);
        if (!s) {
                json_decref(items);
                api_server_error(resp, e);
                return;
        }
        api_respond_list(r, resp, "/v3/deployments", items);
}

/* POST /v3/deployments/:guid/actions/cancel: roll back to the previous droplet and version. */
static void deployments_cancel(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        char app[37], space[37], now[21], name[256];
        if (!dep_authz(r, resp, r->params[0], AUTHZ_WRITE, app, space))
                return;
        if (!api_tx_begin(r, resp))
                return;
        _cleanup_free_ char *state = NULL, *prev_droplet = NULL, *prev_version = NULL, *proc = NULL;
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    xdb_query(c, NULL,
                              "SELECT state, previous_droplet_guid, previous_version, process_guid FROM "
                              "deployments WHERE"
                              " guid = ?",
                              "s", r->params[0]);
                if (s && sqlite3_step(s) == SQLITE_ROW) {
                        state = xstrdup(db_col_text(s, 0));
                        prev_droplet = db_col_text(s, 1) ? xstrdup(db_col_text(s, 1)) : NULL;
                        prev_version = db_col_text(s, 2) ? xstrdup(db_col_text(s, 2)) : NULL;
                        proc = xstrdup(db_col_text(s, 3));
                }
        }
        if (!state) {
                api_tx_rollback(r);
                api_not_found(resp, "Deployment");
                return;
        }
        if (strcmp(state, "DEPLOYING") != 0) {
                api_tx_rollback(r);
                api_unprocessable(resp, "Cannot cancel a %s deployment", state);
                return;
        }
        ctl_now(now);
        char fresh[37];
        ctl_uuid(fresh);
        const char *version = prev_version ? prev_version : fresh;
        int k = 0;
        if (prev_droplet)
                k = xdb_exec(c, &e, "UPDATE apps SET droplet_guid = ?, updated_at = ? WHERE guid = ?", "sss",
                             prev_droplet, now, app);
        if (k == 0)
                k = xdb_exec(c, &e, "UPDATE processes SET version = ?, updated_at = ? WHERE guid = ?", "sss",
                             version, now, proc);
        if (k == 0)
                k = xdb_exec(
                    c, &e,
                    "UPDATE deployments SET state = 'CANCELING', status_reason = 'CANCELING', version = ?,"
                    " updated_at = ?, last_status_change = ? WHERE guid = ?",
                    "ssss", version, now, now, r->params[0]);
        json_t *j = k == 0 ? dep_get(c, r->params[0]) : NULL;
        if (!j) {
                api_tx_rollback(r);
                api_server_error(resp, e);
                return;
        }
        audit_event(c, "audit.app.deployment.cancel", &r->user, "app", app,
                    app_name_of(c, app, name, sizeof(name)), space,
                    json_pack("{s:s,s:o}", "deployment_guid", r->params[0], "droplet_guid",
                              prev_droplet ? json_string(prev_droplet) : json_null()));
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        log_info("deployment %s canceled: rolling back", r->params[0]);
        sched_kick(c);
        api_respond(resp, 200, j);
}

const struct api_route api_routes_deployments[] = {
        { "GET", "/v3/deployments", deployments_list, API_USER },
        { "POST", "/v3/deployments", deployments_create, API_USER },
        { "GET", "/v3/deployments/:guid", deployments_show, API_USER },
        { "POST", "/v3/deployments/:guid/actions/cancel", deployments_cancel, API_USER },
        { NULL },
};
