package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"text/tabwriter"
	"time"

	"github.com/anyscope/anyscope/collector/store"
)

// AgentsCmd groups agent management.
type AgentsCmd struct {
	Add    AgentsAddCmd    `cmd:"" help:"Register a vantage point and print its bearer token (shown once)."`
	List   AgentsListCmd   `cmd:"" help:"List vantage points with their location and when they last delivered results."`
	Token  AgentsTokenCmd  `cmd:"" help:"Issue an additional token for an agent (rotation: old and new both work until the old one is revoked)."`
	Revoke AgentsRevokeCmd `cmd:"" help:"Revoke every token of an agent."`
}

// AgentsAddCmd registers an agent.
type AgentsAddCmd struct {
	DBFlags
	Name     string   `arg:"" help:"Agent name: 1-63 characters of [A-Za-z0-9._-], e.g. ams-vp1."`
	Lat      *float64 `help:"Latitude of the vantage point, in degrees."`
	Lon      *float64 `help:"Longitude of the vantage point, in degrees."`
	Provider string   `help:"Hosting provider or network, e.g. aws, AS64500."`
	Region   string   `help:"Provider region or city, e.g. eu-west-1."`
	// TokenFile writes the token to a file (mode 0600) instead of standard output.
	TokenFile string `help:"Write the token to this file (mode 0600) instead of printing it." placeholder:"FILE"`
}

// Run registers the agent and prints its token once.
func (c *AgentsAddCmd) Run(ctx context.Context, log *slog.Logger) error {
	if (c.Lat == nil) != (c.Lon == nil) {
		return fmt.Errorf("give both --lat and --lon, or neither")
	}
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	a, token, err := st.AddAgent(ctx, store.AgentSpec{
		Name: c.Name, Latitude: c.Lat, Longitude: c.Lon, Provider: c.Provider, Region: c.Region,
	})
	if err != nil {
		return err
	}
	if c.TokenFile != "" {
		if err := os.WriteFile(c.TokenFile, []byte(token+"\n"), 0o600); err != nil {
			return fmt.Errorf("agent %s registered but its token could not be written (issue a new one with `anyscope agents token %s`): %w", a.Name, a.Name, err)
		}
		log.Info("agent registered; token written", "agent", a.Name, "file", c.TokenFile)
		return nil
	}
	fmt.Fprintf(os.Stderr, "agent %s registered; its token follows (it is not stored and will not be shown again):\n", a.Name)
	fmt.Println(token)
	return nil
}

// AgentsListCmd lists agents.
type AgentsListCmd struct {
	DBFlags
}

// Run prints a table of agents.
func (c *AgentsListCmd) Run(ctx context.Context, log *slog.Logger) error {
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	as, err := st.Agents(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tLAT\tLON\tPROVIDER\tREGION\tLAST SEEN\tLAST SEQ")
	for _, a := range as {
		seen := "never"
		if a.LastSeen != nil {
			seen = a.LastSeen.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", a.Name, coord(a.Latitude), coord(a.Longitude),
			dash(a.Provider), dash(a.Region), seen, a.LastSeq)
	}
	return tw.Flush()
}

func coord(f *float64) string {
	if f == nil {
		return "-"
	}
	return fmt.Sprintf("%.4f", *f)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// AgentsTokenCmd issues another token.
type AgentsTokenCmd struct {
	DBFlags
	Name    string        `arg:"" help:"Agent name."`
	Expires time.Duration `help:"Let the new token expire after this long (0: never)."`
}

// Run prints the new token once.
func (c *AgentsTokenCmd) Run(ctx context.Context, log *slog.Logger) error {
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	var exp *time.Time
	if c.Expires > 0 {
		t := time.Now().Add(c.Expires)
		exp = &t
	}
	token, err := st.AddToken(ctx, c.Name, exp)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "new token for %s (not stored, shown once):\n", c.Name)
	fmt.Println(token)
	return nil
}

// AgentsRevokeCmd revokes an agent's tokens.
type AgentsRevokeCmd struct {
	DBFlags
	Name string `arg:"" help:"Agent name."`
}

// Run revokes every token of the agent.
func (c *AgentsRevokeCmd) Run(ctx context.Context, log *slog.Logger) error {
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.RevokeTokens(ctx, c.Name); err != nil {
		return err
	}
	log.Info("tokens revoked; the agent is refused from now on (collectors may accept a cached token for up to 30 s)", "agent", c.Name)
	return nil
}
