package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/anyscope/anyscope/collector/targets"
)

// TargetsCmd groups target management.
type TargetsCmd struct {
	Apply TargetsApplyCmd `cmd:"" help:"Apply a targets file: create and update the targets it declares, retire the others."`
	Check TargetsCheckCmd `cmd:"" help:"Validate a targets file without touching the database."`
	List  TargetsListCmd  `cmd:"" help:"List active targets."`
}

// TargetsApplyCmd applies a YAML file.
type TargetsApplyCmd struct {
	DBFlags
	File string `arg:"" help:"YAML file declaring the targets." type:"existingfile"`
}

// Run validates the whole file first, then applies it in one transaction.
func (c *TargetsApplyCmd) Run(ctx context.Context, log *slog.Logger) error {
	ts, err := targets.LoadFile(c.File)
	if err != nil {
		return err
	}
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	res, err := st.ApplyTargets(ctx, ts)
	if err != nil {
		return err
	}
	fmt.Printf("targets applied: %d created, %d updated, %d unchanged, %d retired\n",
		len(res.Created), len(res.Updated), len(res.Unchanged), len(res.Retired))
	for _, n := range res.Retired {
		fmt.Printf("retired: %s (kept with its results; no longer scheduled)\n", n)
	}
	return nil
}

// TargetsCheckCmd validates a file.
type TargetsCheckCmd struct {
	File string `arg:"" help:"YAML file declaring the targets." type:"existingfile"`
}

// Run reports whether the file is valid.
func (c *TargetsCheckCmd) Run() error {
	ts, err := targets.LoadFile(c.File)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %d targets, valid\n", c.File, len(ts))
	return nil
}

// TargetsListCmd lists active targets.
type TargetsListCmd struct {
	DBFlags
}

// Run prints the active targets.
func (c *TargetsListCmd) Run(ctx context.Context, log *slog.Logger) error {
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	ts, err := st.ActiveTargets(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESSES\tPROBES\tINTERVAL\tSITES\tRULES")
	for _, t := range ts {
		addrs := make([]string, len(t.Addresses))
		for i, a := range t.Addresses {
			addrs[i] = a.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", t.Name, strings.Join(addrs, ","),
			strings.Join(t.Probes, ","), t.Interval, len(t.Sites), len(t.Rules))
	}
	return tw.Flush()
}
