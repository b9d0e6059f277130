/* SPDX-License-Identifier: Apache-2.0 */
/* Audit events: recorded inside the changing request's transaction, listed by GET /v3/audit_events. */
#include <errno.h>
#include <string.h>

#include "controller/ctl.h"
#include "lib/json.h"
#include "lib/log.h"
#include "lib/strv.h"

void audit_event(struct ctl *c, const char *type, const struct api_user *actor, const char *target_type,
                 const char *target_guid, const char *target_name, const char *space_guid, json_t *data)
{
        _cleanup_json_ json_t *d = data ? data : json_object();
        _cleanup_free_ char *dtext = json_dump_str(d, false);
        _cleanup_free_ char *org = NULL;
        char guid[37], now[21];
        ctl_uuid(guid);
        ctl_now(now);
        if (space_guid)
                tenancy_space_info(c, space_guid, NULL, &org, NULL);
        _cleanup_stmt_ sqlite3_stmt *s =
            db_prepare(c,
                       "INSERT INTO events (guid, created_at, type, actor_guid, actor_name, target_type,"
                       " target_guid, target_name, space_guid, org_guid, data)"
                       " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       NULL);
        if (!s) {
                log_warn("audit event %s: %s", type, sqlite3_errmsg(c->db));
                return;
        }
        sqlite3_bind_text(s, 1, guid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, now, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, type, -1, SQLITE_STATIC);
        if (actor && actor->guid[0])
                sqlite3_bind_text(s, 4, actor->guid, -1, SQLITE_STATIC);
        if (actor && actor->username[0])
                sqlite3_bind_text(s, 5, actor->username, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 6, target_type, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 7, target_guid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 8, target_name, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 9, space_guid, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 10, org, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 11, dtext, -1, SQLITE_STATIC);
        if (sqlite3_step(s) != SQLITE_DONE)
                log_warn("audit event %s: %s", type, sqlite3_errmsg(c->db));
}

static json_t *opt_str(const char *s)
{
        return s ? json_string(s) : json_null();
}

static json_t *event_json(struct ctl *c, sqlite3_stmt *s)
{
        const char *guid = db_col_text(s, 0);
        json_t *data = NULL;
        const char *dtext = db_col_text(s, 10);
        if (!dtext || json_parse_buf(dtext, strlen(dtext), &data, NULL) < 0)
                data = json_object();
        const char *space = db_col_text(s, 8), *org = db_col_text(s, 9);
        return json_pack("{s:s,s:s,s:s,s:s,s:{s:o,s:s,s:o},s:{s:o,s:o,s:o},s:o,s:o,s:o,s:{s:o}}", "guid",
                         guid, "created_at", db_col_text(s, 1), "updated_at", db_col_text(s, 1), "type",
                         db_col_text(s, 2), "actor", "guid", opt_str(db_col_text(s, 3)), "type", "user",
                         "name", opt_str(db_col_text(s, 4)), "target", "guid", opt_str(db_col_text(s, 6)),
                         "type", opt_str(db_col_text(s, 5)), "name", opt_str(db_col_text(s, 7)), "data", data,
                         "space", space ? json_pack("{s:s}", "guid", space) : json_null(), "organization",
                         org ? json_pack("{s:s}", "guid", org) : json_null(), "links", "self",
                         api_link(c, "/v3/audit_events/%s", guid));
}

/* Append " AND col IN (?,?,...)" for a filter list; binds are added in order to *binds. */
static void filter_in(struct strv *sql, const char *col, char **vals, struct strv *binds)
{
        if (!vals)
                return;
        strv_push(sql, xasprintf(" AND %s IN (", col));
        if (!vals[0])
                strv_push(sql, xstrdup("NULL"));
        for (size_t i = 0; vals[i]; i++) {
                strv_push(sql, xstrdup(i ? ",?" : "?"));
                strv_push(binds, xstrdup(vals[i]));
        }
        strv_push(sql, xstrdup(")"));
}

static char *strv_join(char **v)
{
        size_t n = 1;
        for (size_t i = 0; v && v[i]; i++)
                n += strlen(v[i]);
        char *out = xmalloc(n);
        size_t o = 0;
        for (size_t i = 0; v && v[i]; i++) {
                size_t l = strlen(v[i]);
                memcpy(out + o, v[i], l);
                o += l;
        }
        out[o] = '\0';
        return out;
}

#define EVENT_COLUMNS                                                                                   \
        "SELECT guid, created_at, type, actor_guid, actor_name, target_type, target_guid, target_name," \
        " space_guid, org_guid, data FROM events WHERE 1"

static void events_list(struct api_req *r, struct http_response *resp)
{
        _cleanup_berr_ struct berr *e = NULL;
        _cleanup_(strv_freep) char **targets = api_query_list(r, "target_guids");
        _cleanup_(strv_freep) char **types = api_query_list(r, "types");
        _cleanup_(strv_freep) char **spaces = api_query_list(r, "space_guids");
        _cleanup_(strv_freep) char **orgs = api_query_list(r, "organization_guids");
        _cleanup_free_ char *vis = NULL;
        const char *field;
        bool desc;
        if (!api_order_by(r, resp, &field, &desc))
                return;
        if (strcmp(field, "name") == 0) {
                api_error(resp, 400, 10005, "CF-BadQueryParameter",
                          "The query parameter is invalid: Order by can only be: 'created_at', 'updated_at'");
                return;
        }
        struct strv sql = { 0 }, binds = { 0 };
        strv_push(&sql, xstrdup(EVENT_COLUMNS));
        filter_in(&sql, "target_guid", targets, &binds);
        filter_in(&sql, "type", types, &binds);
        filter_in(&sql, "space_guid", spaces, &binds);
        filter_in(&sql, "org_guid", orgs, &binds);
        if (!r->user.admin) {
                /* Events of spaces the user may read; space-less events (flags) only for admins. */
                vis = authz_space_filter_sql(r, "space_guid");
                strv_push(&sql, xasprintf(" AND space_guid IS NOT NULL%s", vis));
        }
        strv_push(&sql,
                  xstrdup(desc ? " ORDER BY created_at DESC, rowid DESC" : " ORDER BY created_at, rowid"));
        _cleanup_(strv_freep) char **sqlv = strv_take(&sql);
        _cleanup_(strv_freep) char **bindv = strv_take(&binds);
        _cleanup_free_ char *text = strv_join(sqlv);

        json_t *items = json_array();
        db_lock(r->ctl);
        {
                _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, text, &e);
                for (int i = 0; s && bindv[i]; i++)
                        sqlite3_bind_text(s, i + 1, bindv[i], -1, SQLITE_STATIC);
                while (s && sqlite3_step(s) == SQLITE_ROW)
                        json_array_append_new(items, event_json(r->ctl, s));
                if (!s) {
                        db_unlock(r->ctl);
                        json_decref(items);
                        api_server_error(resp, e);
                        return;
                }
        }
        db_unlock(r->ctl);
        api_respond_list(r, resp, "/v3/audit_events", items);
}

static void events_show(struct api_req *r, struct http_response *resp)
{
        _cleanup_free_ char *vis = NULL;
        if (!r->user.admin)
                vis = authz_space_filter_sql(r, "space_guid");
        _cleanup_free_ char *text = xasprintf(EVENT_COLUMNS " AND guid = ?%s%s",
                                              vis ? " AND space_guid IS NOT NULL" : "", vis ? vis : "");
        json_t *j = NULL;
        db_lock(r->ctl);
        {
                _cleanup_stmt_ sqlite3_stmt *s = db_prepare(r->ctl, text, NULL);
                if (s) {
                        sqlite3_bind_text(s, 1, r->params[0], -1, SQLITE_STATIC);
                        if (sqlite3_step(s) == SQLITE_ROW)
                                j = event_json(r->ctl, s);
                }
        }
        db_unlock(r->ctl);
        if (!j) {
                api_not_found(resp, "Event");
                return;
        }
        api_respond(resp, 200, j);
}

const struct api_route api_routes_events[] = {
        { "GET", "/v3/audit_events", events_list, API_USER },
        { "GET", "/v3/audit_events/:guid", events_show, API_USER },
        { NULL },
};
