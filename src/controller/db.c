/* SPDX-License-Identifier: Apache-2.0 */
/* The controller's store: one SQLite connection (WAL), the core schema, transactions, ids and times. */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "controller/ctl.h"
#include "lib/log.h"

/* A writer waits this long for another process' lock (only `berth` tools touch the file besides us). */
#define DB_BUSY_TIMEOUT_MS 5000

/*
 * Users, tokens, tenancy, flags, domains and events. Times are RFC 3339 text (sortable), token expiry is
 * unix seconds. Lists order by (created_at, rowid) so that rows created in one second keep their order.
 */
const char db_schema_core[] =
    "CREATE TABLE IF NOT EXISTS users ("
    "  guid TEXT PRIMARY KEY,"
    "  username TEXT NOT NULL UNIQUE,"
    "  password_hash TEXT NOT NULL,"
    "  admin INTEGER NOT NULL DEFAULT 0,"
    "  created_at TEXT NOT NULL,"
    "  updated_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tokens ("
    "  hash TEXT PRIMARY KEY,"
    "  user_guid TEXT NOT NULL REFERENCES users(guid) ON DELETE CASCADE,"
    "  kind TEXT NOT NULL CHECK (kind IN ('access','refresh')),"
    "  expires_at INTEGER NOT NULL,"
    "  pair TEXT);" /* the access token's refresh token hash (logout revokes both) */
    "CREATE INDEX IF NOT EXISTS tokens_user ON tokens(user_guid);"
    "CREATE TABLE IF NOT EXISTS organizations ("
    "  guid TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  created_at TEXT NOT NULL,"
    "  updated_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS spaces ("
    "  guid TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  org_guid TEXT NOT NULL REFERENCES organizations(guid) ON DELETE CASCADE,"
    "  created_at TEXT NOT NULL,"
    "  updated_at TEXT NOT NULL,"
    "  UNIQUE (org_guid, name));"
    "CREATE TABLE IF NOT EXISTS roles ("
    "  guid TEXT PRIMARY KEY,"
    "  type TEXT NOT NULL,"
    "  user_guid TEXT NOT NULL REFERENCES users(guid) ON DELETE CASCADE,"
    "  org_guid TEXT REFERENCES organizations(guid) ON DELETE CASCADE,"
    "  space_guid TEXT REFERENCES spaces(guid) ON DELETE CASCADE,"
    "  created_at TEXT NOT NULL,"
    "  updated_at TEXT NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS roles_unique ON roles(type, user_guid, IFNULL(org_guid, ''),"
    "  IFNULL(space_guid, ''));"
    "CREATE INDEX IF NOT EXISTS roles_user ON roles(user_guid);"
    "CREATE TABLE IF NOT EXISTS feature_flags ("
    "  name TEXT PRIMARY KEY,"
    "  enabled INTEGER NOT NULL,"
    "  custom_error_message TEXT,"
    "  updated_at TEXT);"
    "CREATE TABLE IF NOT EXISTS domains ("
    "  guid TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  internal INTEGER NOT NULL DEFAULT 0,"
    "  created_at TEXT NOT NULL,"
    "  updated_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS events ("
    "  guid TEXT PRIMARY KEY,"
    "  created_at TEXT NOT NULL,"
    "  type TEXT NOT NULL,"
    "  actor_guid TEXT,"
    "  actor_name TEXT,"
    "  target_type TEXT,"
    "  target_guid TEXT,"
    "  target_name TEXT,"
    "  space_guid TEXT,"
    "  org_guid TEXT,"
    "  data TEXT);"
    "CREATE INDEX IF NOT EXISTS events_target ON events(target_guid);"
    "CREATE TABLE IF NOT EXISTS meta ("
    "  key TEXT PRIMARY KEY,"
    "  value TEXT);";

int db_exec(struct ctl *c, const char *sql, struct berr **err)
{
        char *msg = NULL;
        int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
                int r = berr_set(err, -EIO, "sqlite: %s", msg ? msg : sqlite3_errstr(rc));
                sqlite3_free(msg);
                return r;
        }
        return 0;
}

sqlite3_stmt *db_prepare(struct ctl *c, const char *sql, struct berr **err)
{
        sqlite3_stmt *s = NULL;
        int rc = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL);
        if (rc != SQLITE_OK) {
                berr_set(err, -EIO, "sqlite: prepare: %s", sqlite3_errmsg(c->db));
                if (s)
                        sqlite3_finalize(s);
                return NULL;
        }
        return s;
}

int db_open(struct ctl *c, const char *path, struct berr **err)
{
        int r;
        int rc = sqlite3_open_v2(path, &c->db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK) {
                r = berr_set(err, -EIO, "open database %s: %s", path,
                             c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
                sqlite3_close(c->db);
                c->db = NULL;
                return r;
        }
        sqlite3_busy_timeout(c->db, DB_BUSY_TIMEOUT_MS);
        sqlite3_extended_result_codes(c->db, 1);
        /* Recursive: helpers that take the lock themselves (api_feature_disabled, authz_* with locked=false)
         * may be called by a handler that already holds it. */
        pthread_mutexattr_t ma;
        pthread_mutexattr_init(&ma);
        pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
        pthread_mutex_init(&c->db_lock, &ma);
        pthread_mutexattr_destroy(&ma);

        /* A 64 MiB page cache: the instance table of 100,000 instances and its indexes stay in memory
         * (SQLite's default 2 MiB made a sweep read pages back from the file; bench/converge.sh). */
        if ((r = db_exec(c,
                         "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
                         " PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;",
                         err)) < 0 ||
            (r = db_exec(c, "BEGIN IMMEDIATE", err)) < 0)
                goto fail;
        if ((r = db_exec(c, db_schema_core, err)) < 0 || (r = db_exec(c, db_schema_apps, err)) < 0 ||
            (r = db_add_column(c, "instances", "routed_version", "INTEGER NOT NULL DEFAULT 0", err)) < 0 ||
            (r = db_add_column(c, "instances", "routable", "INTEGER NOT NULL DEFAULT 1", err)) < 0 ||
            (r = db_add_column(c, "instances", "routed_ms", "INTEGER NOT NULL DEFAULT 0", err)) < 0 ||
            (r = db_add_column(c, "processes", "health_check_interval", "INTEGER", err)) < 0 ||
            (r = db_add_column(c, "processes", "readiness_type", "TEXT NOT NULL DEFAULT 'process'", err)) <
                0 ||
            (r = db_add_column(c, "processes", "readiness_endpoint", "TEXT", err)) < 0 ||
            (r = db_add_column(c, "processes", "readiness_invocation_timeout", "INTEGER", err)) < 0 ||
            (r = db_add_column(c, "processes", "readiness_interval", "INTEGER", err)) < 0 ||
            (r = db_exec(c, db_schema_deployments, err)) < 0) {
                db_exec(c, "ROLLBACK", NULL);
                goto fail;
        }
        if ((r = db_exec(c, "COMMIT", err)) < 0)
                goto fail;
        return 0;
fail:
        berr_prefix(err, r, "database %s", path);
        db_close(c);
        return r;
}

struct db_cached_stmt {
        const char *sql;
        sqlite3_stmt *stmt;
};

#define DB_CACHED_MAX 128 /* call sites; a program error beyond */

sqlite3_stmt *db_cached(struct ctl *c, const char *sql, struct berr **err)
{
        for (size_t i = 0; i < c->n_stmts; i++)
                if (c->stmts[i].sql == sql) {
                        sqlite3_reset(c->stmts[i].stmt);
                        sqlite3_clear_bindings(c->stmts[i].stmt);
                        return c->stmts[i].stmt;
                }
        sqlite3_stmt *s = NULL;
        int rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, NULL);
        if (rc != SQLITE_OK) {
                berr_set(err, -EIO, "sqlite: prepare: %s", sqlite3_errmsg(c->db));
                if (s)
                        sqlite3_finalize(s);
                return NULL;
        }
        if (c->n_stmts == DB_CACHED_MAX) {
                sqlite3_finalize(s);
                berr_set(err, -ENOSPC, "db_cached: more than %d statements", DB_CACHED_MAX);
                return NULL;
        }
        c->stmts = xrealloc(c->stmts, (c->n_stmts + 1) * sizeof(*c->stmts));
        c->stmts[c->n_stmts++] = (struct db_cached_stmt){ .sql = sql, .stmt = s };
        return s;
}

int db_add_column(struct ctl *c, const char *table, const char *column, const char *decl, struct berr **err)
{
        _cleanup_free_ char *q =
            xasprintf("SELECT 1 FROM pragma_table_info('%s') WHERE name = '%s'", table, column);
        _cleanup_stmt_ sqlite3_stmt *s = db_prepare(c, q, err);
        if (!s)
                return -EIO;
        if (sqlite3_step(s) == SQLITE_ROW)
                return 0;
        _cleanup_free_ char *a = xasprintf("ALTER TABLE %s ADD COLUMN %s %s", table, column, decl);
        return db_exec(c, a, err);
}

void db_close(struct ctl *c)
{
        if (!c->db)
                return;
        for (size_t i = 0; i < c->n_stmts; i++)
                sqlite3_finalize(c->stmts[i].stmt);
        free(c->stmts);
        c->stmts = NULL;
        c->n_stmts = 0;
        sqlite3_close_v2(c->db);
        c->db = NULL;
        pthread_mutex_destroy(&c->db_lock);
}

void db_lock(struct ctl *c)
{
        pthread_mutex_lock(&c->db_lock);
}

void db_unlock(struct ctl *c)
{
        pthread_mutex_unlock(&c->db_lock);
}

int db_begin(struct ctl *c, struct berr **err)
{
        return db_exec(c, "BEGIN IMMEDIATE", err);
}

int db_commit(struct ctl *c, struct berr **err)
{
        int r = db_exec(c, "COMMIT", err);
        if (r < 0)
                db_rollback(c);
        return r;
}

void db_rollback(struct ctl *c)
{
        if (!sqlite3_get_autocommit(c->db))
                sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

void ctl_uuid(char out[static 37])
{
        unsigned char b[16];
        randombytes_buf(b, sizeof(b));
        b[6] = (b[6] & 0x0f) | 0x40; /* version 4 */
        b[8] = (b[8] & 0x3f) | 0x80; /* RFC 4122 variant */
        snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

void ctl_now(char out[static 21])
{
        time_t t = time(NULL);
        struct tm tm;
        gmtime_r(&t, &tm);
        if (strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
                snprintf(out, 21, "1970-01-01T00:00:00Z");
}
