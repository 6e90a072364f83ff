package store_test

import (
	"context"
	"fmt"
	"log"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
	"github.com/anyscope/anyscope/collector/store"
)

// What the collector does with an upload: find the agent behind the bearer
// token, then store the batch; re-sending it is answered the same way.
func ExampleStore_Ingest() {
	ctx := context.Background()
	st, err := store.Open(ctx, "host=/var/lib/anyscope/postgres user=anyscope dbname=anyscope")
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
	agent, err := st.Authenticate(ctx, "ast_1_…")
	if err != nil {
		log.Fatal(err) // ErrUnauthorized: answer 401; ErrUnavailable: 503
	}
	batch := []api.Result{{
		Seq: 1, MeasuredAt: time.Now().UTC(), Target: "k-root", Address: "192.0.2.53",
		Kind: api.KindDNS, Transport: api.TransportUDP, Query: api.QueryHostnameBind,
		RTTMicros: 1234, DNS: &api.DNSValues{Rcode: "NOERROR", Identity: "ns1.fi-hel.k.example.net"},
	}}
	accepted, duplicates, err := st.Ingest(ctx, agent, batch)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(api.Ack{Accepted: accepted, Duplicates: duplicates})
}
