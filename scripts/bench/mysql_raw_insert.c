// The raw Connector/C baseline for scripts/bench/mysql_ingest.py: inserts N rows into
// rtd_samples (series_id, ts, value) as fast as Connector/C allows, with no server in between.
//
//   cc -O2 mysql_raw_insert.c $(pkg-config --cflags --libs libmariadb) -o mysql_raw_insert
//   ./mysql_raw_insert HOST PORT USER PASS DB ROWS MODE ROWS_PER_EXECUTE ROWS_PER_COMMIT SERIES [FIRST_ROW]
//
// MODE: "array" (prepared INSERT with STMT_ATTR_ARRAY_SIZE array binding) or "multirow"
// (prepared INSERT ... VALUES (?,?,?),(?,?,?)... with ROWS_PER_EXECUTE rows).
// Rows FIRST_ROW .. FIRST_ROW+ROWS-1 (default 0): parallel processes pass disjoint ranges, since
// rtd_samples' primary key stores an identical (series_id, ts, value) once.
// Prints one line: rows, seconds, rows/s.
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void die(MYSQL *m, MYSQL_STMT *s, const char *what) {
    fprintf(stderr, "%s: %s\n", what, s ? mysql_stmt_error(s) : mysql_error(m));
    exit(1);
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 11 && argc != 12) {
        fprintf(stderr, "usage: %s HOST PORT USER PASS DB ROWS MODE ROWS_PER_EXECUTE ROWS_PER_COMMIT SERIES [FIRST_ROW]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *user = argv[3], *pass = argv[4], *db = argv[5], *mode = argv[7];
    unsigned port = (unsigned)atoi(argv[2]);
    long rows = atol(argv[6]), per_exec = atol(argv[8]), per_commit = atol(argv[9]), series = atol(argv[10]);
    long first = argc == 12 ? atol(argv[11]) : 0;
    int array = strcmp(mode, "array") == 0;

    MYSQL *m = mysql_init(NULL);
    if (!mysql_real_connect(m, host, user, pass, db, port, NULL, 0)) die(m, NULL, "connect");
    if (mysql_query(m, "SET autocommit = 0")) die(m, NULL, "autocommit");

    unsigned long long *ids = malloc(sizeof(*ids) * per_exec);
    long long *ts = malloc(sizeof(*ts) * per_exec);
    double *vals = malloc(sizeof(*vals) * per_exec);

    MYSQL_STMT *st = mysql_stmt_init(m);
    char *sql;
    if (array) {
        sql = strdup("INSERT INTO rtd_samples (series_id, ts, value) VALUES (?, ?, ?)");
    } else {
        sql = malloc(64 + per_exec * 10);
        strcpy(sql, "INSERT INTO rtd_samples (series_id, ts, value) VALUES ");
        char *p = sql + strlen(sql);
        for (long i = 0; i < per_exec; i++) p += sprintf(p, i ? ",(?,?,?)" : "(?,?,?)");
    }
    if (mysql_stmt_prepare(st, sql, strlen(sql))) die(m, st, "prepare");
    long nbind = array ? 3 : 3 * per_exec;
    MYSQL_BIND *b = calloc(nbind, sizeof(MYSQL_BIND));

    long long base = (long long)time(NULL) * 1000;
    long done = 0, since_commit = 0;
    double t0 = now_s();
    while (done < rows) {
        long n = rows - done < per_exec ? rows - done : per_exec;
        for (long i = 0; i < n; i++) {
            long k = first + done + i;
            ids[i] = 1 + (unsigned long long)(k % series);
            ts[i] = base + k / series;
            vals[i] = (double)(k * 7919 % 10000) / 100;
        }
        if (array) {
            memset(b, 0, sizeof(MYSQL_BIND) * 3);
            b[0].buffer_type = MYSQL_TYPE_LONGLONG; b[0].buffer = ids; b[0].is_unsigned = 1;
            b[1].buffer_type = MYSQL_TYPE_LONGLONG; b[1].buffer = ts;
            b[2].buffer_type = MYSQL_TYPE_DOUBLE; b[2].buffer = vals;
            unsigned int size = (unsigned int)n;
            if (mysql_stmt_attr_set(st, STMT_ATTR_ARRAY_SIZE, &size)) die(m, st, "array size");
            if (mysql_stmt_bind_param(st, b)) die(m, st, "bind");
        } else {
            if (n != per_exec) break;  // keep one statement shape; ROWS should be a multiple
            for (long i = 0; i < n; i++) {
                memset(&b[3 * i], 0, sizeof(MYSQL_BIND) * 3);
                b[3 * i].buffer_type = MYSQL_TYPE_LONGLONG; b[3 * i].buffer = &ids[i]; b[3 * i].is_unsigned = 1;
                b[3 * i + 1].buffer_type = MYSQL_TYPE_LONGLONG; b[3 * i + 1].buffer = &ts[i];
                b[3 * i + 2].buffer_type = MYSQL_TYPE_DOUBLE; b[3 * i + 2].buffer = &vals[i];
            }
            if (mysql_stmt_bind_param(st, b)) die(m, st, "bind");
        }
        if (mysql_stmt_execute(st)) die(m, st, "execute");
        done += n;
        since_commit += n;
        if (since_commit >= per_commit || done >= rows) {
            if (mysql_commit(m)) die(m, NULL, "commit");
            since_commit = 0;
        }
    }
    double secs = now_s() - t0;
    printf("rows=%ld seconds=%.3f rows_per_s=%.0f\n", done, secs, done / secs);
    mysql_stmt_close(st);
    mysql_close(m);
    return 0;
}
