package main

import "testing"

// The collector's pool default goes into either form of connection string,
// and never overrides one the operator set.
func TestWithPoolDefault(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		pool     int
	}{
		{"postgres://u@db/anyscope?sslmode=disable", "postgres://u@db/anyscope?pool_max_conns=16&sslmode=disable", 16},
		{"postgresql://u@db/anyscope", "postgresql://u@db/anyscope?pool_max_conns=16", 16},
		{"host=db user=u dbname=anyscope", "host=db user=u dbname=anyscope pool_max_conns=16", 16},
		{"host=/tmp/pg dbname=anyscope pool_max_conns=3", "host=/tmp/pg dbname=anyscope pool_max_conns=3", 3},
		{"postgres://u@db/anyscope?pool_max_conns=5", "postgres://u@db/anyscope?pool_max_conns=5", 5},
	} {
		got, err := withPoolDefault(tt.in, collectorPool)
		if err != nil || got != tt.want {
			t.Errorf("withPoolDefault(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			continue
		}
		if n, err := poolSize(got); err != nil || n != tt.pool {
			t.Errorf("%q: pool %d, %v; want %d", got, n, err, tt.pool)
		}
	}
}
