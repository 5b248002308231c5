// Command ferretdb runs FerretDB v1 (MongoDB wire protocol over SQLite) for the local stack.
//
// It embeds FerretDB's public `ferretdb` package: `go install .../cmd/ferretdb` builds a binary
// that panics at start-up because that command's version file is generated at release time.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	_ "modernc.org/sqlite" // the driver FerretDB itself uses, registered as "sqlite"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	sqliteURL := flag.String("sqlite-url", "file:data/", "SQLite URI (a directory, ending with /)")
	flag.Parse()

	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: *sqliteURL,
	})
	if err != nil {
		logger.Error("start failed", "error", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir := strings.TrimPrefix(strings.SplitN(*sqliteURL, "?", 2)[0], "file:")
	go indexIDLookups(ctx, dir, logger)

	logger.Warn("ferretdb listening", "addr", *listen, "sqlite", *sqliteURL)
	if err := f.Run(ctx); err != nil {
		logger.Error("run failed", "error", err)
		os.Exit(1)
	}
}

// idLookup is the exact expression FerretDB v1.24 puts in the SQL it runs for a filter of `_id`
// alone (find, update, delete). FerretDB's own `_id_` index is on `_ferretdb_sjson->"_id"`,
// which SQLite's planner does not match with it, so every `_id` lookup scans the table
// (docs/adr/0005). An index on this expression turns those lookups into B-tree searches.
const idLookup = `_ferretdb_sjson->'$._id'`

// indexSuffix names our index after its table; FerretDB's own index names are `<table>_<name>`.
const indexSuffix = "__id_lookup"

// indexIDLookups gives every collection table in dir an index on idLookup, soon after FerretDB
// creates it. The index is SQLite's alone: FerretDB's metadata never lists it, and dropping the
// collection drops its table with the index. Only database files written since the last look
// are opened, each time anew, so a database dropped and created again is seen as the new file.
func indexIDLookups(ctx context.Context, dir string, logger *slog.Logger) {
	seen := map[string]time.Time{}
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"))
		for _, file := range files {
			written := lastWrite(file)
			if written.Equal(seen[file]) {
				continue
			}
			if err := indexTables(ctx, file); err != nil {
				if ctx.Err() == nil {
					logger.Warn("id index: failed", "file", file, "error", err)
				}
				continue // looked at again on the next tick
			}
			seen[file] = written
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// lastWrite is when the database file or its write-ahead log last changed.
func lastWrite(file string) time.Time {
	var latest time.Time
	for _, name := range []string{file, file + "-wal"} {
		if info, err := os.Stat(name); err == nil && info.ModTime().After(latest) {
			latest = info.ModTime()
		}
	}
	return latest
}

// indexTables indexes the tables that lack the index. It asks SQLite every time rather than
// remembering: a collection dropped and created again gets a new table of the same name.
func indexTables(ctx context.Context, file string) error {
	// mode=rw: a database dropped since the glob must not be created again, empty, by us.
	db, err := sql.Open("sqlite", "file:"+file+"?mode=rw&_pragma=busy_timeout(10000)")
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT c.table_name FROM _ferretdb_collections c
		WHERE NOT EXISTS (SELECT 1 FROM sqlite_master m WHERE m.type = 'index' AND m.name = c.table_name || ?)`,
		indexSuffix)
	if err != nil {
		if _, statErr := os.Stat(file); statErr != nil || strings.Contains(err.Error(), "no such table") {
			return nil // dropped meanwhile, or FerretDB is still creating it
		}
		return err
	}
	var tables []string
	for rows.Next() {
		var table string
		if err := rows.Scan(&table); err != nil {
			_ = rows.Close()
			return err
		}
		tables = append(tables, table)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	for _, table := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (%s)`, table+indexSuffix, table, idLookup)
		if _, err := db.ExecContext(ctx, q); err != nil && !strings.Contains(err.Error(), "no such table") {
			return err // a table dropped meanwhile needs no index
		}
	}
	return nil
}
