package pgcluster_test

import (
	"context"
	"fmt"
	"log"

	"github.com/anyscope/anyscope/collector/pgcluster"
)

// The CLI's embedded default: start (or reuse) the private cluster and
// connect to its anyscope database.
func ExampleStart() {
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: pgcluster.DefaultDir(), Fsync: true})
	if err != nil {
		log.Fatal(err)
	}
	if c.Started() {
		fmt.Println("started PostgreSQL in", c.Dir())
	}
	fmt.Println(c.ConnString(pgcluster.Database))
}
