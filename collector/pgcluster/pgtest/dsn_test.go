package pgtest

import "testing"

func TestWithDatabase(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u:p@db.example.org:5433/postgres?sslmode=disable", "postgres://u:p@db.example.org:5433/anyscope_test_1?sslmode=disable"},
		{"postgresql://u@db.example.org", "postgresql://u@db.example.org/anyscope_test_1"},
		{"host=/tmp port=5432 user=u dbname=postgres", "host=/tmp port=5432 user=u dbname=postgres dbname='anyscope_test_1'"},
	} {
		if got := withDatabase(tc.dsn, "anyscope_test_1"); got != tc.want {
			t.Errorf("withDatabase(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
}
