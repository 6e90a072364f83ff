package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/anyscope/anyscope/analysis/report"
)

// ReportCmd writes a catchment report.
type ReportCmd struct {
	DBFlags
	Format string `help:"Output format: json or md (Markdown)." default:"md" enum:"json,md"`
	Since  string `help:"Start of the window: RFC 3339 time, or a duration back from now (e.g. 6h)." default:"24h"`
	Until  string `help:"End of the window: RFC 3339 time, or a duration back from now; empty: now." default:""`
	Target string `help:"Only this target (default: all)."`
	Output string `short:"o" help:"Write to this file instead of standard output." placeholder:"FILE"`
}

// Run builds the report from the database and writes it.
func (c *ReportCmd) Run(ctx context.Context, log *slog.Logger) error {
	now := time.Now()
	since, err := parseWhen(c.Since, now)
	if err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	until := now
	if c.Until != "" {
		if until, err = parseWhen(c.Until, now); err != nil {
			return fmt.Errorf("--until: %w", err)
		}
	}
	if !since.Before(until) {
		return fmt.Errorf("--since %s is not before --until %s", since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	r, err := report.Build(ctx, st, report.Options{Since: since, Until: until, Target: c.Target})
	if err != nil {
		return err
	}
	var w io.Writer = os.Stdout
	var f *os.File
	if c.Output != "" {
		if f, err = os.Create(c.Output); err != nil {
			return err
		}
		w = f
	}
	switch c.Format {
	case "json":
		err = report.WriteJSON(w, r)
	default:
		err = report.WriteMarkdown(w, r)
	}
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// parseWhen reads an RFC 3339 time or a duration back from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-01-02T15:04:05Z) nor a duration (6h)", s)
	}
	if d < 0 {
		return time.Time{}, fmt.Errorf("%q: a duration back from now must be positive", s)
	}
	return now.Add(-d), nil
}
