// The C boundary to MariaDB Connector/C (Debian libmariadb-dev 3.3). Only MySQLStore imports it,
// and only its Connection.swift / Statement.swift files call into it.
#ifndef RTD_CMARIADB_SHIM_H
#define RTD_CMARIADB_SHIM_H
#include <mariadb/mysql.h>
#include <mariadb/errmsg.h>
#include <mariadb/mysqld_error.h>
#endif
