package analysis

import (
	"context"
	"time"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Gap is a run of results a vantage point measured and lost before they
// reached the collector (its spool was full or damaged). Lost results are
// missing data: like an agent that is offline, they are never a failure of
// the measured service, and analysis builds nothing from them; reports list
// them so that readers know what was not seen.
type Gap struct {
	VantagePoint string
	// FirstSeq and LastSeq bound the run of the agent's sequence numbers;
	// Count results in it were lost.
	FirstSeq, LastSeq uint64
	Count             uint64
	// LostFrom and LostTo bound when the lost results were measured; zero
	// when unknown.
	LostFrom, LostTo time.Time
	Reason           api.GapReason
	// ReceivedAt is when the collector learnt of the gap.
	ReceivedAt time.Time
}

// GapSource is implemented by sources that know which results their vantage
// points lost.
type GapSource interface {
	// Gaps returns the gaps whose lost results were measured during
	// [since, until) (an unknown end counts as the time the gap was
	// received, an unknown start as its end), in time order; a zero bound
	// is open.
	Gaps(ctx context.Context, since, until time.Time) ([]Gap, error)
}
