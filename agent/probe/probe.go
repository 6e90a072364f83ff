// Package probe runs one measurement transaction against one anycast address
// and returns what happened as data: every outcome, including a timeout or a
// garbage answer, becomes an api.Result carrying a classified failure.
package probe

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/miekg/dns"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// ErrBogus is wrapped by every error that means "an answer arrived but it is
// not a valid reply to the query": unparsable bytes, a wrong message ID, a
// wrong question, a message that is not a response.
var ErrBogus = errors.New("probe: bogus answer")

// Classify maps an error from a probe transaction to the closed set of
// failures stored with results. A nil error is FailureNone. Analysis keys on
// the returned value, never on the error text.
func Classify(err error) api.Failure {
	if err == nil {
		return api.FailureNone
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, syscall.ETIMEDOUT) {
		return api.FailureTimeout
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return api.FailureConnectionRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ECONNABORTED):
		return api.FailureConnectionReset
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN):
		return api.FailureHostUnreachable
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ENETDOWN):
		return api.FailureNetworkUnreachable
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return api.FailurePermissionDenied
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return api.FailureConnectionClosed
	case errors.Is(err, ErrBogus):
		return api.FailureDNSBogus
	}
	var derr *dns.Error
	if errors.As(err, &derr) {
		// miekg/dns reports unpack failures, short reads and ID mismatches
		// with its own error type.
		return api.FailureDNSBogus
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return api.FailureTimeout
	}
	return api.FailureUnknown
}

// begin waits for the limiter's slot and opens the result of one probe of
// t at addr, measured from the returned start time. ok is false when ctx
// ended (or the limiter refused) before anything was sent: that is not a
// measurement, and the prober returns no result.
func begin(ctx context.Context, lim Limiter, t api.ScheduleTarget, addr netip.Addr, kind api.Kind, transport api.Transport, query string) (res api.Result, start time.Time, ok bool) {
	if lim != nil {
		if err := lim.Wait(ctx); err != nil {
			return res, start, false
		}
	}
	if ctx.Err() != nil {
		return res, start, false
	}
	start = time.Now()
	return api.Result{
		MeasuredAt: start.UTC(),
		Target:     t.Name,
		Address:    addr.String(),
		Kind:       kind,
		Transport:  transport,
		Query:      query,
	}, start, true
}

// sleepCtx waits for d or until ctx ends; it returns nil at once when d
// is not positive.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
