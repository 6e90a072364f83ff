package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anyscope/anyscope/analysis"
	"github.com/anyscope/anyscope/analysis/report"
)

// ReportCmd writes a catchment report, once or every --every.
type ReportCmd struct {
	DBFlags
	Format    string        `help:"Output format: md (Markdown), html (one self-contained page with the catchment map, no script), json, or csv (the catchment table: target, vantage_point, address, site, observations, confidence, method)." default:"md" enum:"json,md,html,csv"`
	Since     string        `help:"Start of the window: RFC 3339 time, or a duration back from now (e.g. 6h). Default: 24h." default:""`
	Until     string        `help:"End of the window: RFC 3339 time, or a duration back from now; empty: now." default:""`
	Target    string        `help:"Only this target (default: all)."`
	CompareTo string        `name:"compare-to" help:"Also report what changed since an earlier window of the same length: a duration back (24h: the window that far back) or its RFC 3339 start. With --every, the previous window unless set." placeholder:"WINDOW"`
	Output    string        `short:"o" help:"Write to this file (atomically) instead of standard output." placeholder:"FILE"`
	OutDir    string        `name:"out-dir" help:"Write report-<UTC end of window>.<format> and a copy named latest.<format> into this directory (atomically)." placeholder:"DIR"`
	Every     time.Duration `help:"Keep running: every this often, report the window that just ended (as long as the interval) into --out-dir, compared with the window before. Zero: once." default:"0s"`
}

// errReportFlags is wrapped when the report flags contradict each other.
var errReportFlags = errors.New("invalid report flags")

// Run builds the report from the database and writes it, once or, with
// --every, until the context ends.
func (c *ReportCmd) Run(ctx context.Context, log *slog.Logger) error {
	if err := c.validate(); err != nil {
		return err
	}
	// Check the windows before starting a database.
	since, until, err := c.window(time.Now())
	if err != nil {
		return err
	}
	if back := c.back(); back != "" {
		if _, _, err := earlierWindow(back, since, until); err != nil {
			return fmt.Errorf("--compare-to: %w", err)
		}
	}
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if c.Every > 0 {
		ticker := time.NewTicker(c.Every)
		defer ticker.Stop()
		return c.repeat(ctx, log, st, time.Now, ticker.C)
	}
	path, err := c.once(ctx, st, time.Now())
	if err == nil && path != "" {
		log.Info("report written", "path", path)
	}
	return err
}

func (c *ReportCmd) validate() error {
	switch {
	case c.Every < 0:
		return fmt.Errorf("%w: --every %s is negative", errReportFlags, c.Every)
	case c.Every > 0 && c.Every < time.Second:
		return fmt.Errorf("%w: --every %s is shorter than a second", errReportFlags, c.Every)
	case c.Every > 0 && c.OutDir == "":
		return fmt.Errorf("%w: --every needs --out-dir", errReportFlags)
	case c.Every > 0 && (c.Since != "" || c.Until != ""):
		return fmt.Errorf("%w: --every reports the interval that just ended: drop --since and --until", errReportFlags)
	case c.Output != "" && c.OutDir != "":
		return fmt.Errorf("%w: -o and --out-dir exclude each other", errReportFlags)
	}
	return nil
}

// window is the report's window at now.
func (c *ReportCmd) window(now time.Time) (since, until time.Time, err error) {
	if c.Every > 0 {
		until = now.UTC().Truncate(time.Second)
		return until.Add(-c.Every), until, nil
	}
	spec := c.Since
	if spec == "" {
		spec = "24h"
	}
	if since, err = parseWhen(spec, now); err != nil {
		return since, until, fmt.Errorf("--since: %w", err)
	}
	until = now
	if c.Until != "" {
		if until, err = parseWhen(c.Until, now); err != nil {
			return since, until, fmt.Errorf("--until: %w", err)
		}
	}
	if !since.Before(until) {
		return since, until, fmt.Errorf("--since %s is not before --until %s", since.Format(time.RFC3339), until.Format(time.RFC3339))
	}
	return since, until, nil
}

// back is the earlier window to compare with: --compare-to, or with
// --every the previous interval; "" for none.
func (c *ReportCmd) back() string {
	if c.CompareTo == "" && c.Every > 0 {
		return c.Every.String()
	}
	return c.CompareTo
}

// repeat writes a report at once, then at every tick, until ctx ends. A
// failed report is logged and the next tick tries again.
func (c *ReportCmd) repeat(ctx context.Context, log *slog.Logger, src analysis.Source, now func() time.Time, tick <-chan time.Time) error {
	log = log.With("out_dir", c.OutDir, "every", c.Every.String())
	for {
		path, err := c.once(ctx, src, now())
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Error("report failed; trying again at the next interval", "err", err)
		default:
			log.Info("report written", "path", path)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
}

// once builds the report of the window at now and writes it to standard
// output, --output or --out-dir, returning the file written ("" for
// standard output).
func (c *ReportCmd) once(ctx context.Context, src analysis.Source, now time.Time) (string, error) {
	since, until, err := c.window(now)
	if err != nil {
		return "", err
	}
	r, err := report.Build(ctx, src, report.Options{Since: since, Until: until, Target: c.Target, Now: func() time.Time { return now }})
	if err != nil {
		return "", err
	}
	if back := c.back(); back != "" {
		esince, euntil, err := earlierWindow(back, since, until)
		if err != nil {
			return "", fmt.Errorf("--compare-to: %w", err)
		}
		earlier, err := report.Build(ctx, src, report.Options{Since: esince, Until: euntil, Target: c.Target, Now: func() time.Time { return now }})
		if err != nil {
			return "", fmt.Errorf("earlier window: %w", err)
		}
		report.Compare(r, earlier)
	}
	var buf bytes.Buffer
	if err := writeReport(&buf, c.Format, r); err != nil {
		return "", err
	}
	switch {
	case c.OutDir != "":
		if err := os.MkdirAll(c.OutDir, 0o755); err != nil {
			return "", err
		}
		name := filepath.Join(c.OutDir, "report-"+until.UTC().Format("20060102T150405Z")+"."+c.Format)
		if err := writeReportFile(name, buf.Bytes()); err != nil {
			return "", err
		}
		if err := writeReportFile(filepath.Join(c.OutDir, "latest."+c.Format), buf.Bytes()); err != nil {
			return "", err
		}
		return name, nil
	case c.Output != "":
		return c.Output, writeReportFile(c.Output, buf.Bytes())
	default:
		_, err := os.Stdout.Write(buf.Bytes())
		return "", err
	}
}

// writeReport renders r in format.
func writeReport(w io.Writer, format string, r *report.Report) error {
	switch format {
	case "json":
		return report.WriteJSON(w, r)
	case "html":
		return report.WriteHTML(w, r)
	case "csv":
		return report.WriteCSV(w, r)
	case "md", "":
		return report.WriteMarkdown(w, r)
	}
	return fmt.Errorf("%w: unknown format %q", errReportFlags, format)
}

// earlierWindow is the window to compare [since, until) with: as long, and
// either spec (a duration) earlier or starting at spec (RFC 3339).
func earlierWindow(spec string, since, until time.Time) (time.Time, time.Time, error) {
	spec = strings.TrimSpace(spec)
	span := until.Sub(since)
	if t, err := time.Parse(time.RFC3339, spec); err == nil {
		if !t.Before(since) {
			return t, t, fmt.Errorf("%s does not start before the report's window (%s)", t.Format(time.RFC3339), since.Format(time.RFC3339))
		}
		return t, t.Add(span), nil
	}
	d, err := time.ParseDuration(spec)
	if err != nil {
		return since, until, fmt.Errorf("%q is neither a duration back (24h) nor an RFC 3339 start (2026-01-02T15:04:05Z)", spec)
	}
	if d <= 0 {
		return since, until, fmt.Errorf("%q: the duration back must be positive", spec)
	}
	return since.Add(-d), until.Add(-d), nil
}

// writeReportFile writes data to path through a temporary file in the same
// directory and a rename, so readers (a web server, a mailer) never see a
// partial report; the file is world-readable like any published report.
func writeReportFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".report-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing left to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
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
