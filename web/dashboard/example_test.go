package dashboard_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/anyscope/anyscope/collector/store"
	"github.com/anyscope/anyscope/web/dashboard"
)

// The dashboard over a collector's database, served read-only on loopback.
func ExampleNew() {
	ctx := context.Background()
	st, err := store.Open(ctx, "postgres://anyscope@localhost/anyscope")
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	d, err := dashboard.New(st, dashboard.Options{Timeout: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: "127.0.0.1:8741", Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
