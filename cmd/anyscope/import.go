package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/anyscope/anyscope/analysis/atlas"
	"github.com/anyscope/anyscope/collector/store"
)

// ImportCmd imports measurements made by other platforms.
type ImportCmd struct {
	Atlas ImportAtlasCmd `cmd:"" help:"Import RIPE Atlas results (DNS CHAOS/NSID, Paris traceroute, ping): each probe becomes vantage point atlas-<prb_id>."`
}

// ImportAtlasCmd imports RIPE Atlas result files.
type ImportAtlasCmd struct {
	DBFlags
	Probes    string   `help:"RIPE Atlas probe archive or API listing (JSON, may be gzip or bzip2) giving the probes' location, AS and country." placeholder:"FILE" type:"existingfile"`
	Target    string   `help:"Store every result under this target (default: the measurement's dst_name when it is a valid target name, else atlas-<msm_id>)." placeholder:"NAME"`
	Query     string   `help:"DNS query assumed for results that do not show theirs (errors without abuf, in a measurement none of whose earlier results showed it): hostname.bind, id.server or nsid. Default: skip them." enum:",hostname.bind,id.server,nsid" default:""`
	BatchSize int      `name:"batch-size" help:"Results per vantage point per database transaction." default:"5000"`
	Files     []string `arg:"" name:"FILE" help:"Result files: a JSON array or JSON lines, plain, gzip or bzip2; - reads standard input."`
}

// Run imports every file, then prints a summary. A file that cannot be
// opened or read is reported and the others go on; the command fails when
// no record at all could be read (none, or all malformed) or the database
// failed.
func (c *ImportAtlasCmd) Run(ctx context.Context, log *slog.Logger) error {
	var probes map[int64]atlas.Probe
	if c.Probes != "" {
		set, err := readProbes(c.Probes)
		if err != nil {
			return err
		}
		log.Info("probe archive read", "file", c.Probes, "probes", len(set.Probes), "skipped", set.Skipped)
		probes = set.Probes
	}
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	pp := &progressPrinter{w: os.Stderr, every: 2 * time.Second}
	im, err := atlas.NewImporter[store.Agent](st, atlas.ImportOptions{
		Parse:     atlas.Options{Query: c.Query},
		Target:    c.Target,
		Probes:    probes,
		BatchSize: c.BatchSize,
		Progress:  pp.update,
		Logger:    log,
	})
	if err != nil {
		return err
	}
	var unopened []string
	for _, name := range c.Files {
		r, closeInput, err := openInput(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "anyscope: %v\n", err)
			unopened = append(unopened, name)
			continue
		}
		err = im.Import(ctx, r, name)
		closeInput()
		if err != nil {
			writeImportSummary(os.Stdout, im.Summary(), unopened)
			return err
		}
	}
	sum := im.Summary()
	writeImportSummary(os.Stdout, sum, unopened)
	switch {
	case sum.Records == 0:
		return fmt.Errorf("import atlas: nothing could be read")
	case sum.Records == sum.Malformed:
		return fmt.Errorf("import atlas: nothing could be read: all %d records are malformed", sum.Records)
	}
	return nil
}

func readProbes(name string) (atlas.ProbeSet, error) {
	f, err := os.Open(name)
	if err != nil {
		return atlas.ProbeSet{}, err
	}
	defer f.Close()
	set, err := atlas.ParseProbes(f)
	if err != nil {
		return set, fmt.Errorf("%s: %w", name, err)
	}
	return set, nil
}

// openInput opens a named file, or standard input for "-".
func openInput(name string) (io.Reader, func(), error) {
	if name == "-" {
		return os.Stdin, func() {}, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// progressPrinter shows the progress of long imports on a terminal: at
// most one line per interval, and nothing for inputs read within the first
// interval.
type progressPrinter struct {
	w     io.Writer
	every time.Duration

	input       string
	start, last time.Time
	printed     bool
}

func (p *progressPrinter) update(pr atlas.Progress) {
	now := time.Now()
	if pr.Input != p.input || p.start.IsZero() {
		p.input, p.start, p.last, p.printed = pr.Input, now, now, false
	}
	if now.Sub(p.last) < p.every && !(pr.Done && p.printed) {
		return
	}
	p.last, p.printed = now, true
	rate := float64(pr.Records) / max(now.Sub(p.start).Seconds(), 1e-3)
	state := ""
	if pr.Done {
		state = " (done)"
	}
	fmt.Fprintf(p.w, "atlas: %s: %d records, %s read, %.0f records/s%s\n", pr.Input, pr.Records, byteSize(pr.Bytes), rate, state)
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// writeImportSummary says what an import did.
func writeImportSummary(w io.Writer, s atlas.Summary, unopened []string) {
	fmt.Fprintf(w, "RIPE Atlas import: %d records read from %d inputs (%s)\n", s.Records, s.Inputs, byteSize(s.Bytes))
	fmt.Fprintf(w, "results: %d produced, %d stored, %d already stored\n", s.Results, s.Stored, s.Duplicates)
	targets := s.Targets
	more := ""
	if len(targets) > 10 {
		more = fmt.Sprintf(" and %d more", len(targets)-10)
		targets = targets[:10]
	}
	if len(targets) > 0 {
		more = " (" + strings.Join(targets, ", ") + more + ")"
	}
	fmt.Fprintf(w, "vantage points: %d; targets: %d%s\n", s.VantagePoints, len(s.Targets), more)
	fmt.Fprintf(w, "malformed records: %d\n", s.Malformed)
	for _, m := range s.FirstMalformed {
		fmt.Fprintf(w, "  %s: %s: %s\n", m.Input, m.Position, m.Reason)
	}
	if s.Malformed > int64(len(s.FirstMalformed)) {
		fmt.Fprintf(w, "  … and %d more (--log-level debug lists each)\n", s.Malformed-int64(len(s.FirstMalformed)))
	}
	if len(s.Skipped) > 0 {
		reasons := make([]string, 0, len(s.Skipped))
		for r := range s.Skipped {
			reasons = append(reasons, r)
		}
		slices.Sort(reasons)
		fmt.Fprintln(w, "skipped:")
		for _, r := range reasons {
			fmt.Fprintf(w, "  %d × %s\n", s.Skipped[r], r)
		}
	}
	for _, err := range s.ReadErrors {
		fmt.Fprintf(w, "read error: %v\n", err)
	}
	for _, name := range unopened {
		fmt.Fprintf(w, "not opened: %s\n", name)
	}
}
