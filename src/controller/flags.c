/* SPDX-License-Identifier: Apache-2.0 */
/* Feature flags (CF's set and defaults, cloud_controller_ng FeatureFlag::DEFAULT_FLAGS); berth enforces
 * diego_docker. */
#include <errno.h>
#include <string.h>

#include "controller/ctl.h"
#include "lib/json.h"
#include "lib/strv.h"

/* A custom error message longer than this is refused (it is shown in every refused request). */
#define FLAG_MESSAGE_MAX 1024

static const struct {
        const char *name;
        bool enabled;
} flag_defaults[] = {
        { "user_org_creation", false },
        { "private_domain_creation", true },
        { "app_bits_upload", true },
        { "app_scaling", true },
        { "route_creation", true },
        { "service_instance_creation", true },
        { "diego_docker", false },
        { "set_roles_by_username", true },
        { "unset_roles_by_username", true },
        { "task_creation", true },
        { "env_var_visibility", true },
        { "space_scoped_private_broker_creation", true },
        { "space_developer_env_var_visibility", true },
        { "service_instance_sharing", false },
        { "hide_marketplace_from_unauthenticated_users", false },
        { "resource_matching", true },
        { "route_sharing", false },
        { "diego_cnb", false },
};

int flags_bootstrap(struct ctl *c, struct berr **err)
{
        _cleanup_stmt_ sqlite3_stmt *s =
            db_prepare(c, "INSERT OR IGNORE INTO feature_flags (name, enabled) VALUES (?, ?)", err);
        if (!s)
                return -EIO;
        for (size_t i = 0; i < ARRAY_SIZE(flag_defaults); i++) {
                sqlite3_reset(s);
                sqlite3_bind_text(s, 1, flag_defaults[i].name, -1, SQLITE_STATIC);
                sqlite3_bind_int(s, 2, flag_defaults[i].enabled);
                if (sqlite3_step(s) != SQLITE_DONE)
                        return berr_set(err, -EIO, "feature flags: %s", sqlite3_errmsg(c->db));
        }
        return 0;
}

bool flag_enabled(struct ctl *c, const char *name)
{
        bool on = false;
        db_lock(c);
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    db_prepare(c, "SELECT enabled FROM feature_flags WHERE name = ?", NULL);
                if (s) {
                        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
                        on = sqlite3_step(s) == SQLITE_ROW && sqlite3_column_int(s, 0) != 0;
                }
        }
        db_unlock(c);
        return on;
}

/* The resource of the current row (name, enabled, updated_at, custom_error_message). */
static json_t *flag_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *name = db_col_text(s, 0);
        const char *upd = db_col_text(s, 2), *msg = db_col_text(s, 3);
        return json_pack("{s:s,s:b,s:o,s:o,s:{s:o}}", "name", name, "enabled", sqlite3_column_int(s, 1) != 0,
                         "updated_at", upd ? json_string(upd) : json_null(), "custom_error_message",
                         msg ? json_string(msg) : json_null(), "links", "self",
                         api_link(c, "/v3/feature_flags/%s", name));
}

#define FLAG_COLUMNS "SELECT name, enabled, updated_at, custom_error_message FROM feature_flags"

static void flags_list(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        json_t *items = json_array();
        db_lock(r->ctl);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, FLAG_COLUMNS " ORDER BY name", &e);
        while (s && sqlite3_step(s) == SQLITE_ROW)
                json_array_append_new(items, flag_json(r->ctl, s));
        db_unlock(r->ctl);
        if (!s) {
                json_decref(items);
                api_server_error(resp, e);
                return;
        }
        api_respond_list(r, resp, "/v3/feature_flags", items);
}

/* The flag's resource (lock held) or NULL if unknown. */
static json_t *flag_get(struct ctl *c, const char *name, struct berr **err)
{
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, FLAG_COLUMNS " WHERE name = ?", err);
        if (!s)
                return NULL;
        sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
        return sqlite3_step(s) == SQLITE_ROW ? flag_json(c, s) : NULL;
}

static void flags_show(struct api_req *r, struct http_response *resp)
{
        db_lock(r->ctl);
        json_t *j = flag_get(r->ctl, r->params[0], NULL);
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Feature flag");
                return;
        }
        api_respond(resp, 200, j);
}

static void flags_update(struct api_req *r, struct http_response *resp)
{
        struct ctl *c = r->ctl;
        _cleanup_berr_ struct berr *e = NULL;
        const char *name = r->params[0];
        json_t *en = json_object_get(r->body, "enabled");
        json_t *msg = json_object_get(r->body, "custom_error_message");

        if (!r->user.admin) {
                /* Unknown flags stay 404 for everyone; known ones are visible, so 403. */
                db_lock(c);
                json_t *j = flag_get(c, name, NULL);
                db_unlock(c);
                if (!j) {
                        api_not_found(resp, "Feature flag");
                        return;
                }
                json_decref(j);
                api_forbidden(resp);
                return;
        }
        if (en && !json_is_boolean(en)) {
                api_unprocessable(resp, "Enabled must be a boolean");
                return;
        }
        if (msg && !json_is_null(msg) && !json_is_string(msg)) {
                api_unprocessable(resp, "Custom error message must be a string");
                return;
        }
        if (msg && json_is_string(msg) && strlen(json_string_value(msg)) > FLAG_MESSAGE_MAX) {
                api_unprocessable(resp, "Custom error message is too long (maximum is %d characters)",
                                  FLAG_MESSAGE_MAX);
                return;
        }
        if (!api_tx_begin(r, resp))
                return;
        bool was = false;
        {
                _cleanup_stmt_ sqlite3_stmt *s =
                    db_prepare(c, "SELECT enabled FROM feature_flags WHERE name = ?", &e);
                if (!s)
                        goto fail;
                sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
                if (sqlite3_step(s) != SQLITE_ROW) {
                        api_tx_rollback(r);
                        api_not_found(resp, "Feature flag");
                        return;
                }
                was = sqlite3_column_int(s, 0) != 0;
        }
        bool now_on = en ? json_is_true(en) : was;
        char now[21];
        ctl_now(now);
        {
                _cleanup_stmt_ sqlite3_stmt *s = db_prepare(
                    c,
                    "UPDATE feature_flags SET enabled = ?, updated_at = ?,"
                    " custom_error_message = CASE WHEN ? THEN ? ELSE custom_error_message END WHERE name = ?",
                    &e);
                if (!s)
                        goto fail;
                sqlite3_bind_int(s, 1, now_on);
                sqlite3_bind_text(s, 2, now, -1, SQLITE_STATIC);
                sqlite3_bind_int(s, 3, msg != NULL);
                if (msg && json_is_string(msg) && *json_string_value(msg))
                        sqlite3_bind_text(s, 4, json_string_value(msg), -1, SQLITE_STATIC);
                else
                        sqlite3_bind_null(s, 4);
                sqlite3_bind_text(s, 5, name, -1, SQLITE_STATIC);
                if (sqlite3_step(s) != SQLITE_DONE) {
                        berr_set(&e, -EIO, "update flag: %s", sqlite3_errmsg(c->db));
                        goto fail;
                }
        }
        audit_event(c, "audit.feature_flag.update", &r->user, "feature_flag", name, name, NULL,
                    json_pack("{s:b,s:b}", "enabled", now_on, "previous_enabled", was));
        if (strcmp(name, "diego_docker") == 0 && was != now_on) {
                /* Every started Docker app stops or comes back: its own events say so (berth extension:
                 * GET /v3/audit_events?target_guids=APP shows the flag change that stopped it). */
                struct strv apps = { 0 };
                {
                        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(
                            c,
                            "SELECT guid, name, space_guid FROM apps WHERE state = 'STARTED' ORDER BY rowid",
                            &e);
                        if (!s)
                                goto fail;
                        while (sqlite3_step(s) == SQLITE_ROW) {
                                strv_push(&apps, xstrdup(db_col_text(s, 0)));
                                strv_push(&apps, xstrdup(db_col_text(s, 1)));
                                strv_push(&apps, xstrdup(db_col_text(s, 2)));
                        }
                }
                for (size_t i = 0; i + 2 < apps.n; i += 3)
                        audit_event(c, "audit.feature_flag.update", &r->user, "app", apps.v[i], apps.v[i + 1],
                                    apps.v[i + 2],
                                    json_pack("{s:s,s:b,s:b}", "name", name, "enabled", now_on,
                                              "previous_enabled", was));
                strv_clear(&apps);
        }
        json_t *j = flag_get(c, name, &e);
        if (!j)
                goto fail;
        if (!api_tx_commit(r, resp)) {
                json_decref(j);
                return;
        }
        if (strcmp(name, "diego_docker") == 0 && was != now_on) {
                /* The route table leaves Docker apps out while the flag is off; the scheduler stops (or
                 * brings back) their instances now rather than at its next sweep. */
                routes_changed(c);
                sched_kick(c);
        }
        api_respond(resp, 200, j);
        return;
fail:
        api_tx_rollback(r);
        api_server_error(resp, e);
}

const struct api_route api_routes_flags[] = {
        { "GET", "/v3/feature_flags", flags_list, API_USER },
        { "GET", "/v3/feature_flags/:name", flags_show, API_USER },
        { "PATCH", "/v3/feature_flags/:name", flags_update, API_USER },
        { "PUT", "/v3/feature_flags/:name", flags_update, API_USER }, /* CF's older verb */
        { NULL },
};
