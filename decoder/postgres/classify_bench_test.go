package postgres

import (
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

var benchQueries = map[string]string{
	"pgbench-S": "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
	"join3": "SELECT u.id, o.total, p.name FROM users u JOIN orders o ON o.user_id = u.id " +
		"JOIN products p ON p.id = o.product_id WHERE u.created_at > now() - interval '1 day' ORDER BY o.total DESC LIMIT 50",
}

func BenchmarkClassify(b *testing.B) {
	for name, q := range benchQueries {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Classify(q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParser compares the two pg_query entry points Classify could
// build on: it uses ParseToJSON plus a JSON walk, because Parse's protobuf
// decoding alone costs more than both.
func BenchmarkParser(b *testing.B) {
	for name, q := range benchQueries {
		b.Run("ParseToJSON/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pg_query.ParseToJSON(q); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("Parse/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := pg_query.Parse(q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
