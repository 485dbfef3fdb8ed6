package mysql

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

// TestClassify covers every kind and the shapes that hide tables and
// calls. Checked on MariaDB 10.11.19: a non-recursive CTE's own name in
// its body is the base table ("WITH user AS (SELECT * FROM user) ..."
// wants a database selected), a CTE sees the ones after it only in a WITH
// RECURSIVE, CTE names compare case-insensitively, `LOAD_FILE`(...) and
// {fn LOAD_FILE(...)} read the file, mysql.USER is not mysql.user
// (lower_case_table_names=0: reporting names lower-cased over-matches,
// never under-matches), and LOAD_FİLE or ſLEEP are no functions (no
// Unicode folding of names).
func TestClassify(t *testing.T) {
	const (
		admin   = FlagUserAdmin
		dyn     = FlagDynamicSQL
		sysvar  = FlagSystemVariableWrite
		lex     = FlagLexingChange
		danger  = FlagDangerousFunction
		loadf   = FlagLoadFile
		srvAdm  = FlagServerAdmin
		replace = FlagReplace
	)
	type S = ruleset.Statement
	tests := []struct {
		name string
		sql  string
		want S
	}{
		{"select where", "SELECT id FROM users WHERE id = 1", S{Kind: "select", Tables: []string{"users"}, HasWhere: true}},
		{"names lower-cased, schema kept", "select * from App.Users limit 10", S{Kind: "select", Tables: []string{"app.users"}, HasLimit: true}},
		{"backquoted names", "SELECT * FROM `db`.`My Table`", S{Kind: "select", Tables: []string{"db.my table"}}},
		{"join and subquery", "SELECT u.id FROM users u JOIN orders o ON o.uid = u.id WHERE u.id IN (SELECT uid FROM audit.bans)",
			S{Kind: "select", Tables: []string{"audit.bans", "orders", "users"}, HasWhere: true}},
		{"derived table", "SELECT * FROM (SELECT * FROM secrets) AS s", S{Kind: "select", Tables: []string{"secrets"}}},
		{"cte name is not a table", "WITH recent AS (SELECT * FROM events) SELECT * FROM recent", S{Kind: "select", Tables: []string{"events"}}},
		{"cte shadowing its own table", "WITH users AS (SELECT * FROM users) SELECT * FROM users", S{Kind: "select", Tables: []string{"users"}}},
		{"cte chain", "WITH a AS (SELECT * FROM t1), b AS (SELECT * FROM a) SELECT * FROM b", S{Kind: "select", Tables: []string{"t1"}}},
		{"cte sees only earlier ctes", "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", S{Kind: "select", Tables: []string{"b"}}},
		{"recursive cte", "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", S{Kind: "select"}},
		{"recursive sees later ctes", "WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT * FROM s) SELECT * FROM a", S{Kind: "select", Tables: []string{"s"}}},
		{"cte names ignore case", "WITH Recent AS (SELECT * FROM events) SELECT * FROM RECENT", S{Kind: "select", Tables: []string{"events"}}},
		{"qualified name is a table", "WITH t AS (SELECT 1) SELECT * FROM db.t", S{Kind: "select", Tables: []string{"db.t"}}},
		{"cte in a subquery", "SELECT * FROM x WHERE a IN (WITH c AS (SELECT * FROM y) SELECT * FROM c)", S{Kind: "select", Tables: []string{"x", "y"}, HasWhere: true}},
		{"union", "SELECT a FROM t1 UNION SELECT b FROM t2 LIMIT 3", S{Kind: "select", Tables: []string{"t1", "t2"}, HasLimit: true}},
		{"table statement", "TABLE users", S{Kind: "select", Tables: []string{"users"}}},
		{"into outfile", "SELECT * FROM users INTO OUTFILE '/tmp/x'", S{Kind: "copy_out", Tables: []string{"users"}, Flags: []string{FlagIntoOutfile}}},
		{"union into outfile", "SELECT a FROM t UNION SELECT b FROM u INTO OUTFILE '/tmp/x'", S{Kind: "copy_out", Tables: []string{"t", "u"}, Flags: []string{FlagIntoOutfile}}},
		{"create table select", "CREATE TABLE c SELECT LOAD_FILE('/etc/passwd') AS f", S{Kind: "create", Tables: []string{"c"}, Functions: []string{"load_file"}, Flags: []string{danger, loadf}}},
		{"set from a subquery", "SET @x := (SELECT LOAD_FILE('/x'))", S{Kind: "set", Functions: []string{"load_file"}, Flags: []string{danger, loadf}}},
		{"insert select", "INSERT INTO archive SELECT * FROM live WHERE old", S{Kind: "insert", Tables: []string{"archive", "live"}}},
		{"insert on duplicate key", "INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = a + 1", S{Kind: "insert", Tables: []string{"t"}}},
		{"replace", "REPLACE INTO t VALUES (1)", S{Kind: "delete", Tables: []string{"t"}, Flags: []string{replace}}},
		{"replace select", "REPLACE INTO t SELECT * FROM u", S{Kind: "delete", Tables: []string{"t", "u"}, Flags: []string{replace}}},
		{"update without where", "UPDATE users SET admin = 1", S{Kind: "update", Tables: []string{"users"}}},
		{"update limit", "UPDATE users SET admin = 1 WHERE id > 3 ORDER BY id LIMIT 1", S{Kind: "update", Tables: []string{"users"}, HasWhere: true, HasLimit: true}},
		{"multi-table update", "UPDATE a JOIN b ON a.id = b.id SET a.x = b.y WHERE b.z = 1", S{Kind: "update", Tables: []string{"a", "b"}, HasWhere: true}},
		{"multi-table update, comma", "UPDATE a, s.b SET a.x = 1", S{Kind: "update", Tables: []string{"a", "s.b"}}},
		{"delete", "DELETE FROM users", S{Kind: "delete", Tables: []string{"users"}}},
		{"delete limit", "DELETE FROM users WHERE a = 1 LIMIT 5", S{Kind: "delete", Tables: []string{"users"}, HasWhere: true, HasLimit: true}},
		{"multi-table delete, aliases", "DELETE a FROM t1 AS a JOIN t2 AS b ON a.id = b.id WHERE b.x = 1", S{Kind: "delete", Tables: []string{"t1", "t2"}, HasWhere: true}},
		{"multi-table delete", "DELETE t1, t2 FROM t1 INNER JOIN t2 INNER JOIN t3 WHERE t1.id = t2.id AND t2.id = t3.id",
			S{Kind: "delete", Tables: []string{"t1", "t2", "t3"}, HasWhere: true}},
		{"delete using", "DELETE FROM t1 USING t1 JOIN t2 ON t1.id = t2.id", S{Kind: "delete", Tables: []string{"t1", "t2"}}},
		{"drop table", "DROP TABLE IF EXISTS app.users, logs", S{Kind: "drop", Tables: []string{"app.users", "logs"}}},
		{"drop database", "DROP DATABASE prod", S{Kind: "drop"}},
		{"drop index", "DROP INDEX i ON users", S{Kind: "drop", Tables: []string{"users"}}},
		{"truncate", "TRUNCATE TABLE a", S{Kind: "truncate", Tables: []string{"a"}}},
		{"alter", "ALTER TABLE users ADD COLUMN x int", S{Kind: "alter", Tables: []string{"users"}}},
		{"rename table", "RENAME TABLE a TO b", S{Kind: "alter", Tables: []string{"a", "b"}}},
		{"create index", "CREATE INDEX i ON users (email)", S{Kind: "create", Tables: []string{"users"}}},
		{"create table as", "CREATE TABLE dump AS SELECT * FROM users", S{Kind: "create", Tables: []string{"dump", "users"}}},
		{"create table like", "CREATE TABLE c LIKE users", S{Kind: "create", Tables: []string{"c", "users"}}},
		{"create view", "CREATE VIEW v AS SELECT * FROM users", S{Kind: "create", Tables: []string{"users", "v"}}},
		{"create database", "CREATE DATABASE d", S{Kind: "create"}},
		{"grant on table", "GRANT SELECT ON db.users TO 'bob'@'%'", S{Kind: "grant", Tables: []string{"db.users"}, Flags: []string{admin}}},
		{"grant everything", "GRANT ALL ON *.* TO 'bob'@'%' WITH GRANT OPTION", S{Kind: "grant", Flags: []string{admin}}},
		{"revoke", "REVOKE ALL ON *.* FROM 'bob'@'%'", S{Kind: "revoke", Flags: []string{admin}}},
		{"grant role", "GRANT r1 TO 'bob'@'%'", S{Kind: "grant", Flags: []string{admin}}},
		{"revoke role", "REVOKE r1 FROM 'bob'@'%'", S{Kind: "revoke", Flags: []string{admin}}},
		{"create user", "CREATE USER 'eve'@'%' IDENTIFIED BY 'x'", S{Kind: "create", Flags: []string{admin}}},
		{"alter user", "ALTER USER 'eve'@'%' IDENTIFIED BY 'y'", S{Kind: "alter", Flags: []string{admin}}},
		{"drop user", "DROP USER 'eve'@'%'", S{Kind: "drop", Flags: []string{admin}}},
		{"rename user", "RENAME USER 'a'@'%' TO 'b'@'%'", S{Kind: "alter", Flags: []string{admin}}},
		{"set password", "SET PASSWORD FOR 'eve'@'%' = 'x'", S{Kind: "alter", Flags: []string{admin}}},
		{"create role", "CREATE ROLE r1", S{Kind: "create", Flags: []string{admin}}},
		{"drop role", "DROP ROLE r1", S{Kind: "drop", Flags: []string{admin}}},
		{"set default role", "SET DEFAULT ROLE r1 TO 'eve'@'%'", S{Kind: "alter", Flags: []string{admin}}},
		{"set role", "SET ROLE r1", S{Kind: "set"}},
		{"set user variable", "SET @a = 1", S{Kind: "set"}},
		{"set autocommit", "SET autocommit = 0", S{Kind: "set"}},
		{"set transaction", "SET TRANSACTION ISOLATION LEVEL READ COMMITTED", S{Kind: "set"}},
		{"set session transaction", "SET SESSION TRANSACTION READ ONLY", S{Kind: "set"}},
		{"set sql_mode", "SET sql_mode = ''", S{Kind: "set", Flags: []string{lex, sysvar}}},
		{"set session sql_mode", "SET SESSION sql_mode = 'ANSI_QUOTES'", S{Kind: "set", Flags: []string{lex, sysvar}}},
		{"set @@sql_mode", "SET @@sql_mode = 'NO_BACKSLASH_ESCAPES'", S{Kind: "set", Flags: []string{lex, sysvar}}},
		{"set @@session.sql_mode", "SET @@SESSION.SQL_MODE = CONCAT(@@sql_mode, ',ANSI_QUOTES')", S{Kind: "set", Functions: []string{"concat"}, Flags: []string{lex, sysvar}}},
		{"set global", "SET GLOBAL general_log = 1", S{Kind: "set", Flags: []string{sysvar}}},
		{"set global housekeeping", "SET GLOBAL autocommit = 0", S{Kind: "set", Flags: []string{sysvar}}},
		{"set @@global", "SET @@global.max_connections = 1", S{Kind: "set", Flags: []string{sysvar}}},
		{"set session", "SET SESSION sql_log_bin = 0", S{Kind: "set", Flags: []string{sysvar}}},
		{"set plain session", "SET foreign_key_checks = 0", S{Kind: "set", Flags: []string{sysvar}}},
		{"set names", "SET NAMES utf8mb4", S{Kind: "set", Flags: []string{lex}}},
		{"set character set", "SET CHARACTER SET gbk", S{Kind: "set", Flags: []string{lex}}},
		{"set character_set_client", "SET character_set_client = gbk", S{Kind: "set", Flags: []string{lex}}},
		{"use", "USE prod", S{Kind: "set"}},
		{"show", "SHOW TABLES", S{Kind: "show"}},
		{"show grants", "SHOW GRANTS FOR 'bob'@'%'", S{Kind: "show"}},
		{"describe", "DESCRIBE users", S{Kind: "show", Tables: []string{"users"}}},
		{"explain", "EXPLAIN DELETE FROM users", S{Kind: "explain", Tables: []string{"users"}}},
		{"explain analyze runs it", "EXPLAIN ANALYZE DELETE FROM users", S{Kind: "delete", Tables: []string{"users"}}},
		{"begin", "BEGIN", S{Kind: "transaction"}},
		{"start transaction", "START TRANSACTION READ ONLY", S{Kind: "transaction"}},
		{"commit", "COMMIT", S{Kind: "transaction"}},
		{"rollback", "ROLLBACK", S{Kind: "transaction"}},
		{"savepoint", "SAVEPOINT s1", S{Kind: "transaction"}},
		{"release savepoint", "RELEASE SAVEPOINT s1", S{Kind: "transaction"}},
		{"call", "CALL app.refresh(1)", S{Kind: "call", Functions: []string{"app.refresh"}}},
		{"prepare from text", "PREPARE s FROM 'DELETE FROM users'", S{Kind: "delete", Tables: []string{"users"}, Flags: []string{dyn}}},
		{"prepare from variable", "PREPARE s FROM @q", S{Kind: "other", Flags: []string{dyn}}},
		{"prepared text's comments run", "PREPARE s FROM 'SELECT 1 /*M! , LOAD_FILE(0x2f) */'",
			S{Kind: "select", Functions: []string{"load_file"}, Flags: []string{danger, dyn, loadf}}},
		{"execute", "EXECUTE s", S{Kind: "execute", Flags: []string{dyn}}},
		{"execute using", "EXECUTE s USING @a, @b", S{Kind: "execute", Flags: []string{dyn}}},
		{"deallocate", "DEALLOCATE PREPARE s", S{Kind: "other"}},
		{"lock tables", "LOCK TABLES t READ, u WRITE", S{Kind: "lock", Tables: []string{"t", "u"}}},
		{"unlock tables", "UNLOCK TABLES", S{Kind: "lock"}},
		{"analyze table", "ANALYZE TABLE t", S{Kind: "vacuum", Tables: []string{"t"}}},
		{"optimize table", "OPTIMIZE TABLE t", S{Kind: "vacuum", Tables: []string{"t"}}},
		{"do", "DO SLEEP(1)", S{Kind: "select", Functions: []string{"sleep"}}},
		{"kill", "KILL 42", S{Kind: "other", Flags: []string{srvAdm}}},
		{"kill query", "KILL QUERY 42", S{Kind: "other", Flags: []string{srvAdm}}},
		{"flush", "FLUSH PRIVILEGES", S{Kind: "other", Flags: []string{srvAdm}}},
		{"shutdown", "SHUTDOWN", S{Kind: "other", Flags: []string{srvAdm}}},
		{"load data", "LOAD DATA INFILE '/etc/passwd' INTO TABLE t", S{Kind: "copy_in", Tables: []string{"t"}, Flags: []string{FlagLoadData}}},
		{"load data local", "LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE db.t", S{Kind: "copy_in", Tables: []string{"db.t"}, Flags: []string{FlagLoadDataLocal}}},
		{"functions", "SELECT COUNT(*), Load_File('/etc/passwd'), sys_exec('id'), BENCHMARK(1, 1), db.f(1)",
			S{Kind: "select", Functions: []string{"benchmark", "count", "db.f", "load_file", "sys_exec"}, Flags: []string{danger, loadf}}},
		{"backquoted function", "SELECT `LOAD_FILE`('/etc/passwd')", S{Kind: "select", Functions: []string{"load_file"}, Flags: []string{danger, loadf}}},
		{"function in where", "SELECT 1 FROM t WHERE a = SLEEP(5)", S{Kind: "select", Tables: []string{"t"}, Functions: []string{"sleep"}, HasWhere: true}},
		{"window function", "SELECT ROW_NUMBER() OVER () FROM t", S{Kind: "select", Tables: []string{"t"}, Functions: []string{"row_number"}}},
		{"sys_eval", "SELECT sys_eval('id')", S{Kind: "select", Functions: []string{"sys_eval"}, Flags: []string{danger}}},
		{"odbc escape", "SELECT {fn LOAD_FILE('/x')}", S{Kind: "select", Functions: []string{"load_file"}, Flags: []string{danger, loadf}}},
		{"load data set clause", "LOAD DATA INFILE '/x' INTO TABLE t (a, @b) SET c = LOAD_FILE(@b)",
			S{Kind: "copy_in", Tables: []string{"t"}, Functions: []string{"load_file"}, Flags: []string{danger, FlagLoadData, loadf}}},
		{"procedure body", "CREATE PROCEDURE p() BEGIN SELECT LOAD_FILE('/x') FROM secrets; SET GLOBAL general_log = 1; END",
			S{Kind: "create", Tables: []string{"secrets"}, Functions: []string{"load_file", "p"}, Flags: []string{danger, loadf, sysvar}}},
		{"drop procedure", "DROP PROCEDURE db.p", S{Kind: "drop", Functions: []string{"db.p"}}},
		{"create table with a foreign key", "CREATE TABLE c (id INT, FOREIGN KEY (id) REFERENCES users (id))", S{Kind: "create", Tables: []string{"c", "users"}}},
		{"insert set", "INSERT INTO t SET a = (SELECT b FROM u)", S{Kind: "insert", Tables: []string{"t", "u"}}},
		{"update with subquery", "UPDATE t SET a = (SELECT MAX(b) FROM u) WHERE id IN (SELECT id FROM v)",
			S{Kind: "update", Tables: []string{"t", "u", "v"}, Functions: []string{"max"}, HasWhere: true}},
		{"delete with cte", "WITH old AS (SELECT id FROM logs) DELETE FROM logs WHERE id IN (SELECT id FROM old)",
			S{Kind: "delete", Tables: []string{"logs"}, HasWhere: true}},
		{"multi: most dangerous wins", "SELECT 1; DELETE FROM a WHERE id = 1; DELETE FROM b", S{Kind: "delete", Tables: []string{"a", "b"}}},
		{"multi: flags of every part", "SELECT LOAD_FILE('/x'); SELECT * FROM t", S{Kind: "select", Tables: []string{"t"}, Functions: []string{"load_file"}, Flags: []string{danger, loadf}}},
		{"multi: lexing change last", "SELECT 1; SET NAMES utf8mb4", S{Kind: "select", Flags: []string{lex}}},
		{"empty", ";", S{Kind: "empty"}},
		{"nothing", "", S{Kind: "empty"}},
		{"only a comment", "/* nothing */ -- at all", S{Kind: "empty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Classify(tt.sql)
			if err != nil {
				t.Fatalf("Classify(%q): %v", tt.sql, err)
			}
			tt.want.Text = tt.sql
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Classify(%q)\n got %+v\nwant %+v", tt.sql, got, tt.want)
			}
		})
	}
}

// TestClassifyErrors: what does not parse, or parses only as TiDB's own
// syntax, is an error, which the caller denies. MariaDB's own syntax that
// TiDB's parser lacks is among it.
func TestClassifyErrors(t *testing.T) {
	for _, sql := range []string{
		"SELEC 1",
		"SELECT * FROM",
		"DELETE FROM t WHERE id = 1 RETURNING id",           // MariaDB 10.0+
		"INSERT INTO t VALUES (1) RETURNING id",             // MariaDB 10.5+
		"SELECT * FROM t FOR SYSTEM_TIME ALL",               // MariaDB system-versioned tables
		"EXECUTE IMMEDIATE 'DROP TABLE t'",                  // MariaDB 10.2+
		"HANDLER t OPEN",                                    // MySQL and MariaDB
		"INSTALL PLUGIN x SONAME 'x.so'",                    // MySQL and MariaDB
		"INSTALL SONAME 'x.so'",                             // MariaDB
		"SET STATEMENT max_statement_time = 1 FOR SELECT 1", // MariaDB
		"SELECT 1 INTO DUMPFILE '/tmp/x'",                   // TiDB's parser lacks it
		"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1",
		"CREATE FUNCTION sys_exec RETURNS INTEGER SONAME 'lib_mysqludf_sys.so'",
		"ADMIN SHOW DDL",                        // TiDB only
		"BACKUP DATABASE * TO 'local:///tmp/b'", // TiDB only
		"SPLIT TABLE t BETWEEN (0) AND (100) REGIONS 10",
		"FLASHBACK TABLE t",
		"SET sql_mode = 'NO_BACKSLASH_ESCAPES'; SELECT 'a\\'", // the second is lexed under a mode we cannot know
		"SET NAMES gbk; SELECT 1",
		"PREPARE s FROM 'SELEC 1'",
		"SELECT 0000000000000000000000000000000000000000000000000000000000000018700000000000000000", // TiDB's parser panics
		"PREPARE s FROM 'SELECT 0000000000000000000000000000000000000000000000000000000000000018700000000000000000'",
	} {
		if st, err := Classify(sql); err == nil {
			t.Errorf("Classify(%q) = %+v, want an error", sql, st)
		}
	}
}

// mariaDB and mySQL are the dialects the comment tests use.
var (
	mariaDB = Dialect{MariaDB: true, Version: 101100} // MariaDB 10.11.0
	mySQL   = Dialect{Version: 80036}                 // MySQL 8.0.36
)

// TestExecutableComments: executable comments are applied as the server
// of the dialect would, and a text whose lexing is uncertain is an error.
// Cases marked "verified" were run against MariaDB 10.11 (see
// TestVerifiedAgainstMariaDB's comment for how).
func TestExecutableComments(t *testing.T) {
	const hidden = "load_file"
	nobs := Dialect{MariaDB: true, Version: 101100, NoBackslashEscapes: true}
	ansi := Dialect{MariaDB: true, Version: 101100, ANSIQuotes: true}
	tests := []struct {
		name string
		d    Dialect
		sql  string
		want bool // load_file is seen
		err  bool
	}{
		{"mariadb comment on mariadb", mariaDB, "SELECT 1 /*M! , LOAD_FILE('/etc/passwd') */", true, false},
		{"mariadb comment on mysql", mySQL, "SELECT 1 /*M! , LOAD_FILE('/etc/passwd') */", false, false},
		{"lower-case m is a comment", mariaDB, "SELECT 1 /*m! , LOAD_FILE('/etc/passwd') */", false, false},
		{"bang comment on mariadb", mariaDB, "SELECT 1 /*! , LOAD_FILE('/etc/passwd') */", true, false},
		{"bang comment on mysql", mySQL, "SELECT 1 /*! , LOAD_FILE('/etc/passwd') */", true, false},
		{"empty bang comment", mariaDB, "SELECT /*!*/ LOAD_FILE('/x')", true, false},
		{"tidb comment is a comment", mariaDB, "SELECT 1 /*T![auto_rand] , LOAD_FILE('/x') */", false, false},
		{"ordinary comment", mariaDB, "SELECT 1 /* , LOAD_FILE('/x') */", false, false},
		{"comment without space", mariaDB, "SELECT 1/*!,LOAD_FILE('/x')*/", true, false},
		// Version gating.
		{"mariadb version reached", mariaDB, "SELECT 1 /*!100000 , LOAD_FILE('/x') */", true, false},
		{"mariadb version not reached", mariaDB, "SELECT 1 /*!110000 , LOAD_FILE('/x') */", false, false},
		{"mariadb version equal", mariaDB, "SELECT 1 /*M!101100 , LOAD_FILE('/x') */", true, false},
		{"mariadb version above", mariaDB, "SELECT 1 /*M!101101 , LOAD_FILE('/x') */", false, false},
		{"mariadb newer server", Dialect{MariaDB: true, Version: 101119}, "SELECT 1 /*M!101101 , LOAD_FILE('/x') */", true, false},
		{"mariadb skips mysql 5.7 comments", mariaDB, "SELECT 1 /*!50700 , LOAD_FILE('/x') */", false, false},
		{"mariadb skips mysql 8.0 comments", mariaDB, "SELECT 1 /*!80000 , LOAD_FILE('/x') */", false, false},
		{"mariadb runs older mysql comments", mariaDB, "SELECT 1 /*!50699 , LOAD_FILE('/x') */", true, false},
		{"mariadb runs M! in the mysql range", mariaDB, "SELECT 1 /*M!50700 , LOAD_FILE('/x') */", true, false},
		{"mysql runs 5.7 comments", mySQL, "SELECT 1 /*!50700 , LOAD_FILE('/x') */", true, false},
		{"mysql runs its own version", mySQL, "SELECT 1 /*!80036 , LOAD_FILE('/x') */", true, false},
		{"mysql skips a newer version", mySQL, "SELECT 1 /*!80037 , LOAD_FILE('/x') */", false, false},
		{"old mysql skips 8.0", Dialect{Version: 50744}, "SELECT 1 /*!80000 , LOAD_FILE('/x') */", false, false},
		{"mysql six digits", mySQL, "SELECT 1 /*!100000 , LOAD_FILE('/x') */", false, true},
		{"four digits are code", mariaDB, "SELECT /*!1234 + 1, LOAD_FILE('/x') */", true, false},
		{"seventh digit is code", mariaDB, "SELECT /*!1000001, LOAD_FILE('/x') */", true, false},
		{"no version known", Dialect{MariaDB: true}, "SELECT 1 /*!50000 , LOAD_FILE('/x') */", false, true},
		{"no version needed", Dialect{MariaDB: true}, "SELECT 1 /*! , LOAD_FILE('/x') */", true, false},
		{"skipped comment ignores quotes", mariaDB, "SELECT 1 /*!99999 '*/ , LOAD_FILE('/x') -- '", true, false},
		{"skipped comment with a comment inside", mariaDB, "SELECT 1 /*!110000 /* x */ , LOAD_FILE('/x') */", false, true},
		// Strings and names.
		{"string holding a comment", mariaDB, "SELECT '/*! , LOAD_FILE(1) */'", false, false},
		{"double-quoted string holding a comment", mariaDB, `SELECT "/*M! , LOAD_FILE(1) */"`, false, false},
		{"string in a comment that runs", mariaDB, "SELECT 1 /*! , '*/' , LOAD_FILE('/x') */", true, false},
		{"doubled quote", mariaDB, "SELECT 'it''s /*M! , LOAD_FILE(1) */'", false, false},
		{"escaped quote", mariaDB, `SELECT 'it\'s /*M! , LOAD_FILE(1) */'`, false, false},
		{"backslash ends the string without escapes", nobs, `SELECT 'a\' /*M! , LOAD_FILE(0x2f) */ -- '`, true, false},
		{"backslash escapes the quote", mariaDB, `SELECT 'a\' /*M! , LOAD_FILE(0x2f) */ -- '`, false, false},
		{"escaped quote then a comment that runs", mariaDB, `SELECT 'a\'' /*M! , LOAD_FILE(0x2f) */ -- '`, true, false},
		{"same text without escapes", nobs, `SELECT 'a\'' /*M! , LOAD_FILE(0x2f) */ -- '`, false, false},
		{"backquoted name has no escapes", mariaDB, "SELECT `a\\` /*M! , LOAD_FILE(0x2f) */", true, false},
		{"doubled backquote", mariaDB, "SELECT `a``/*M! , LOAD_FILE(1) */` FROM t", false, false},
		{`\" in a double-quoted token`, mariaDB, `SELECT "a\" /*M! , LOAD_FILE(0x2f) */ -- "`, false, true},
		{`\" with ANSI_QUOTES`, ansi, `SELECT "a\" /*M! , LOAD_FILE(0x2f) */ -- "`, false, true}, // TiDB's lexer would escape
		{"double-quoted name with ANSI_QUOTES", ansi, `SELECT "a" /*M! , LOAD_FILE(0x2f) */ FROM t`, true, false},
		{"doubled double quote with ANSI_QUOTES", ansi, `SELECT "a""/*M! , LOAD_FILE(0x2f) */" FROM t`, false, false},
		{`\" without backslash escapes`, nobs, `SELECT "a\" /*M! , LOAD_FILE(0x2f) */ -- "`, true, false},
		{`\\ in a double-quoted string`, mariaDB, `SELECT "a\\" /*M! , LOAD_FILE(0x2f) */`, true, false},
		{"unterminated string", mariaDB, "SELECT 'abc", false, true},
		{"unterminated name", mariaDB, "SELECT `abc", false, true},
		{"unterminated escape", mariaDB, `SELECT 'abc\'`, false, true},
		// Line comments.
		{"dash comment", mariaDB, "SELECT 1 -- /*M! , LOAD_FILE(1) */", false, false},
		{"dash comment, tab", mariaDB, "SELECT 1 --\t/*M! , LOAD_FILE(1) */", false, false},
		{"dash comment, control character", mariaDB, "SELECT 1 --\x01/*M! , LOAD_FILE(1) */", false, false},
		{"dash comment ends at the newline", mariaDB, "SELECT 1 -- x\n, LOAD_FILE(1)", true, false},
		{"dashes at the end", mariaDB, "SELECT 1 --", false, false},
		{"two minus signs", mariaDB, "SELECT 1 --2, LOAD_FILE(1)", true, false},
		{"three minus signs", mariaDB, "SELECT 1 ---2, LOAD_FILE(1)", true, false},
		{"a minus and a comment", mariaDB, "SELECT 2 --- , LOAD_FILE(1)\n- 3", false, false},
		{"dashes before a comment", mariaDB, "SELECT 1 --/**/1, LOAD_FILE(1)", false, true},
		{"dashes before a non-ASCII byte", mariaDB, "SELECT 1 --\xa0, LOAD_FILE(1)", false, true},
		{"hash comment", mariaDB, "SELECT 1 # /*M! , LOAD_FILE(1) */", false, false},
		{"hash comment ends at the newline", mariaDB, "SELECT 1 # x\n, LOAD_FILE(1)", true, false},
		{"hash comment in a comment that runs", mariaDB, "SELECT 1 /*! # */ , LOAD_FILE(1) */", false, true},
		{"dash comment in a comment that runs", mariaDB, "SELECT 1 /*! -- */ , LOAD_FILE(1) */", false, true},
		// Comments that cannot be placed.
		{"comment in a comment that runs", mariaDB, "SELECT 1 /*! /* x */ , LOAD_FILE(1) */", false, true},
		{"semicolon in a comment that runs", mariaDB, "SELECT 1 /*! ; SELECT LOAD_FILE(1) */", false, true},
		{"unterminated comment that runs", mariaDB, "SELECT 1 /*! , LOAD_FILE(1)", false, true},
		{"unterminated comment", mariaDB, "SELECT 1 /* , LOAD_FILE(1)", false, true},
		{"unterminated skipped comment", mariaDB, "SELECT 1 /*!110000 , LOAD_FILE(1)", false, true},
		{"NUL byte", mariaDB, "SELECT 1 # \x00\n, LOAD_FILE(1)", false, true},
		// Optimizer hints.
		{"hint on mariadb", mariaDB, "SELECT /*+ MAX_EXECUTION_TIME(1) */ LOAD_FILE(1)", true, false},
		{"hint on mysql", mySQL, "SELECT /*+ MAX_EXECUTION_TIME(1) */ LOAD_FILE(1)", true, false},
		{"quote in a hint", mySQL, "SELECT /*+ SET_VAR(sql_mode='') */ 1", false, true},
		// Character sets.
		{"gbk: backslash after a high byte", Dialect{MariaDB: true, Version: 101100, Charset: "gbk"}, "SELECT '\xbf\\' , 1", false, true},
		{"utf8: backslash after a high byte", mariaDB, "SELECT '\xc3\xa9\\'' /*M! , LOAD_FILE(1) */", true, false},
		// LOAD DATA LOCAL (ProxySQL's GHSA-crwq-rcqp-v8jr).
		{"load data local hidden", mariaDB, "LOAD DATA /*!*/ LOCAL INFILE '/etc/passwd' INTO TABLE t", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ClassifyIn(tt.d, tt.sql)
			if tt.err {
				if err == nil {
					t.Fatalf("ClassifyIn(%+v, %q) = %+v, want an error", tt.d, tt.sql, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ClassifyIn(%+v, %q): %v", tt.d, tt.sql, err)
			}
			seen := slices.Contains(got.Functions, hidden) && slices.Contains(got.Flags, FlagLoadFile)
			if seen != tt.want {
				t.Errorf("ClassifyIn(%+v, %q) = %+v: load_file seen %t, want %t", tt.d, tt.sql, got, seen, tt.want)
			}
		})
	}
}

// TestLoadDataLocalComments: LOAD DATA LOCAL is seen however comments
// split it.
func TestLoadDataLocalComments(t *testing.T) {
	for _, tt := range []struct {
		d    Dialect
		sql  string
		want string
	}{
		{mariaDB, "LOAD DATA /*!*/ LOCAL INFILE '/etc/passwd' INTO TABLE t", FlagLoadDataLocal},
		{mariaDB, "LOAD DATA /**/ LOCAL INFILE '/etc/passwd' INTO TABLE t", FlagLoadDataLocal},
		{mariaDB, "LOAD DATA /*!LOCAL*/ INFILE '/etc/passwd' INTO TABLE t", FlagLoadDataLocal},
		{mariaDB, "LOAD DATA /*M!LOCAL*/ INFILE '/etc/passwd' INTO TABLE t", FlagLoadDataLocal},
		{mySQL, "LOAD DATA /*M!LOCAL*/ INFILE '/etc/passwd' INTO TABLE t", FlagLoadData},
		{mariaDB, "LOAD DATA /*!110000 LOCAL*/ INFILE '/etc/passwd' INTO TABLE t", FlagLoadData},
		{mariaDB, "LOAD DATA -- x\nLOCAL INFILE '/etc/passwd' INTO TABLE t", FlagLoadDataLocal},
		{mariaDB, "LOAD DATA # x\nLOCAL INFILE '/etc/passwd' INTO TABLE t", FlagLoadDataLocal},
	} {
		st, err := ClassifyIn(tt.d, tt.sql)
		if err != nil {
			t.Errorf("ClassifyIn(%q): %v", tt.sql, err)
			continue
		}
		if st.Kind != "copy_in" || !reflect.DeepEqual(st.Flags, []string{tt.want}) {
			t.Errorf("ClassifyIn(%+v, %q) = %+v, want copy_in with %s", tt.d, tt.sql, st, tt.want)
		}
	}
}

// TestErrorsAreTyped: callers can tell a lexing refusal and an
// unsupported statement from a parse error.
func TestErrorsAreTyped(t *testing.T) {
	if _, err := Classify("SELECT 1 /*! /* */ */"); !errors.Is(err, ErrUncertainLexing) {
		t.Errorf("nested comment: %v, want ErrUncertainLexing", err)
	}
	if _, err := Classify("ADMIN SHOW DDL"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("ADMIN: %v, want ErrUnsupported", err)
	}
	deep := "SELECT " + strings.Repeat("(", maxParens+1) + "1" + strings.Repeat(")", maxParens+1)
	if _, err := Classify(deep); !errors.Is(err, ErrUnsupported) {
		t.Errorf("%d parentheses deep: %v, want ErrUnsupported", maxParens+1, err)
	}
	ok := "SELECT " + strings.Repeat("(", maxParens) + "1" + strings.Repeat(")", maxParens)
	if _, err := Classify(ok); err != nil {
		t.Errorf("%d parentheses deep: %v", maxParens, err)
	}
}

// TestClassifyForCacheLiteralFree checks which classifications depend on
// a value and so must not be shared under the normalized text.
func TestClassifyForCacheLiteralFree(t *testing.T) {
	tests := []struct {
		d           Dialect
		sql         string
		literalFree bool
	}{
		{mariaDB, "SELECT a FROM t WHERE id = 48213", true},
		{mariaDB, "SELECT LOAD_FILE('/etc/passwd')", true},
		{mariaDB, "LOAD DATA LOCAL INFILE '/x' INTO TABLE t", true},
		{mariaDB, "SET sql_mode = 'ANSI'", true},
		{mariaDB, "SELECT * FROM t LIMIT 10", true},
		{mariaDB, "PREPARE s FROM 'SELECT 1'", false}, // the text is a value
		{mariaDB, "SELECT 1; PREPARE s FROM 'DROP TABLE t'", false},
		{mariaDB, "PREPARE s FROM @q", true},
		{mariaDB, "SELECT /*+ MAX_EXECUTION_TIME(1) */ 1", true}, // a comment on MariaDB
		{mySQL, "SELECT /*+ MAX_EXECUTION_TIME(1) */ 1", false},  // a hint, which Normalize drops
		{mariaDB, ";", true},
	}
	for _, tt := range tests {
		st, lf, err := ClassifyForCache(tt.d, tt.sql)
		if err != nil {
			t.Errorf("ClassifyForCache(%q): %v", tt.sql, err)
			continue
		}
		if lf != tt.literalFree {
			t.Errorf("ClassifyForCache(%q) literalFree = %t, want %t", tt.sql, lf, tt.literalFree)
		}
		if c, _ := ClassifyIn(tt.d, tt.sql); !reflect.DeepEqual(c, st) {
			t.Errorf("ClassifyIn(%q) = %+v, ClassifyForCache = %+v", tt.sql, c, st)
		}
	}
	if _, lf, err := ClassifyForCache(mariaDB, "SELEC 1"); err == nil || lf {
		t.Errorf("ClassifyForCache of bad SQL = literalFree %t, err %v; want false and an error", lf, err)
	}
}

// TestClassifyConcurrent: the parser pool is safe for concurrent use (run
// with -race).
func TestClassifyConcurrent(t *testing.T) {
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := 0; i < 50; i++ {
				st, err := Classify("SELECT * FROM users u JOIN orders o ON o.uid = u.id WHERE u.id = 1")
				if err != nil || st.Kind != "select" || len(st.Tables) != 2 {
					t.Errorf("Classify = %+v, %v", st, err)
					return
				}
			}
		}()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
}
