package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anyscope/anyscope/agent/deploy"
	"github.com/anyscope/anyscope/collector/store"
)

// AgentsCmd groups agent management.
type AgentsCmd struct {
	Add    AgentsAddCmd    `cmd:"" help:"Register a vantage point and print its bearer token (shown once), or write it into cloud-init user data for the agent's VM."`
	List   AgentsListCmd   `cmd:"" help:"List vantage points with their location and when they last delivered results."`
	Token  AgentsTokenCmd  `cmd:"" help:"Issue an additional token for an agent (rotation: old and new both work until the old one is revoked)."`
	Tokens AgentsTokensCmd `cmd:"" help:"List an agent's tokens: id, created, expires, revoked."`
	Revoke AgentsRevokeCmd `cmd:"" help:"Revoke one token of an agent (--token ID), or all of them."`
}

// CloudInitFlags render cloud-init user data for the agent's VM around the
// token just issued, instead of printing the token.
type CloudInitFlags struct {
	CloudInit    string   `name:"cloud-init" help:"Write cloud-init user data for the agent's VM to this file (mode 0600; it holds the token, which is then not printed): it creates the user anyscope, installs the binary and anyscope-agent.service, writes agent.yaml and the token file, and starts the agent." placeholder:"FILE" group:"Cloud-init user data (--cloud-init FILE and what it needs)"`
	Collector    string   `help:"The collector's base URL as the agent reaches it, e.g. https://collector.example.org:8740." placeholder:"URL" group:"Cloud-init user data (--cloud-init FILE and what it needs)"`
	BinaryURL    string   `name:"binary-url" help:"Where the VM downloads the anyscope binary (Linux, the VM's architecture)." placeholder:"URL" group:"Cloud-init user data (--cloud-init FILE and what it needs)"`
	BinarySHA256 string   `name:"binary-sha256" help:"The binary's SHA-256 (sha256sum); the VM installs nothing else." placeholder:"HEX" env:"ANYSCOPE_BINARY_SHA256" group:"Cloud-init user data (--cloud-init FILE and what it needs)"`
	Allow        []string `help:"A prefix the agent may probe (repeat or comma-separate; at least one)." placeholder:"PREFIX" group:"Cloud-init user data (--cloud-init FILE and what it needs)"`
	CAFile       string   `name:"ca-file" help:"PEM CA certificate(s) the agent trusts for the collector instead of the system's (tls.ca_file)." placeholder:"FILE" group:"Cloud-init user data (--cloud-init FILE and what it needs)"`
	CertFile     string   `name:"cert-file" help:"PEM client certificate naming the agent (anyscope://agent/NAME or DNS NAME), for a collector run with --client-ca (tls.cert_file)." placeholder:"FILE" group:"Cloud-init user data (--cloud-init FILE and what it needs)"`
	KeyFile      string   `name:"key-file" help:"The client certificate's PEM private key (tls.key_file)." placeholder:"FILE" group:"Cloud-init user data (--cloud-init FILE and what it needs)"`
	PingGroup    bool     `name:"ping-group" help:"Let the agent's group send ICMP echo without a raw socket (net.ipv4.ping_group_range)." group:"Cloud-init user data (--cloud-init FILE and what it needs)"`
}

// userData returns the user data's settings for agent name at loc, with
// every file read and every setting checked, but no token yet; nil when
// --cloud-init is not given.
func (f *CloudInitFlags) userData(name string, loc *deploy.Location) (*deploy.CloudInit, error) {
	if f.CloudInit == "" {
		if f.Collector != "" || f.BinaryURL != "" || f.BinarySHA256 != "" || len(f.Allow) > 0 || f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" || f.PingGroup {
			return nil, errors.New("--collector, --binary-url, --binary-sha256, --allow, --ca-file, --cert-file, --key-file and --ping-group go with --cloud-init FILE")
		}
		return nil, nil
	}
	for _, need := range []struct{ flag, v string }{
		{"--collector", f.Collector}, {"--binary-url", f.BinaryURL}, {"--binary-sha256", f.BinarySHA256},
	} {
		if need.v == "" {
			return nil, fmt.Errorf("--cloud-init needs %s", need.flag)
		}
	}
	ci := &deploy.CloudInit{
		Name: name, Collector: f.Collector, Location: loc, PingGroup: f.PingGroup,
		BinaryURL: f.BinaryURL, BinarySHA256: f.BinarySHA256,
	}
	for _, s := range f.Allow {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("--allow %q: %w", s, err)
		}
		ci.Allow = append(ci.Allow, p)
	}
	for _, file := range []struct {
		flag, path string
		dst        *[]byte
	}{{"--ca-file", f.CAFile, &ci.CA}, {"--cert-file", f.CertFile, &ci.ClientCert}, {"--key-file", f.KeyFile, &ci.ClientKey}} {
		if file.path == "" {
			continue
		}
		b, err := os.ReadFile(file.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file.flag, err)
		}
		*file.dst = b
	}
	if err := ci.Check(); err != nil {
		return nil, err
	}
	// Fail now, not after the token is issued, if the file cannot be written.
	probe, err := os.CreateTemp(filepath.Dir(f.CloudInit), ".anyscope-probe-*")
	if err != nil {
		return nil, fmt.Errorf("--cloud-init %s: %w", f.CloudInit, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	return ci, nil
}

// write renders ci with token into the --cloud-init file (mode 0600).
func (f *CloudInitFlags) write(ci *deploy.CloudInit, token string) error {
	ci.Token = token
	b, err := ci.Render()
	if err != nil {
		return err
	}
	return writeFileAtomic(f.CloudInit, b)
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
	CloudInitFlags
}

// Run registers the agent and prints its token once (or writes it to a
// file, or into the VM's user data).
func (c *AgentsAddCmd) Run(ctx context.Context, log *slog.Logger) error {
	if (c.Lat == nil) != (c.Lon == nil) {
		return fmt.Errorf("give both --lat and --lon, or neither")
	}
	if c.TokenFile != "" && c.CloudInit != "" {
		return errors.New("--token-file and --cloud-init: choose one (the user data holds the token)")
	}
	var loc *deploy.Location
	if c.Lat != nil {
		loc = &deploy.Location{Lat: *c.Lat, Lon: *c.Lon, Provider: c.Provider, Region: c.Region}
	}
	ci, err := c.userData(c.Name, loc)
	if err != nil {
		return err
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
	if ci != nil {
		if err := c.write(ci, token); err != nil {
			return fmt.Errorf("agent %s registered but its user data could not be written (issue a new token with `anyscope agents token %s --cloud-init …`, then revoke this one): %w", a.Name, a.Name, err)
		}
		log.Info("agent registered; cloud-init user data written (it holds the token: keep it secret)", "agent", a.Name, "file", c.CloudInit)
		return nil
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
	CloudInitFlags
}

// Run prints the new token once, or writes it into the VM's user data.
func (c *AgentsTokenCmd) Run(ctx context.Context, log *slog.Logger) error {
	if c.Expires < 0 {
		return fmt.Errorf("--expires %s: want a positive duration, or 0 for never", c.Expires)
	}
	if c.CloudInit == "" {
		if _, err := c.userData(c.Name, nil); err != nil { // deployment flags without --cloud-init
			return err
		}
	}
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	var ci *deploy.CloudInit
	if c.CloudInit != "" {
		a, err := st.AgentByName(ctx, c.Name)
		if err != nil {
			return err
		}
		var loc *deploy.Location
		if a.Latitude != nil && a.Longitude != nil {
			loc = &deploy.Location{Lat: *a.Latitude, Lon: *a.Longitude, Provider: a.Provider, Region: a.Region}
		}
		if ci, err = c.userData(a.Name, loc); err != nil {
			return err
		}
	}
	var exp *time.Time
	if c.Expires > 0 {
		t := time.Now().Add(c.Expires)
		exp = &t
	}
	token, err := st.AddToken(ctx, c.Name, exp)
	if err != nil {
		return err
	}
	if ci != nil {
		if err := c.write(ci, token); err != nil {
			return fmt.Errorf("a token was issued for %s but the user data could not be written (revoke it with `anyscope agents revoke %s --token ID`, ID from `anyscope agents tokens %s`): %w", c.Name, c.Name, c.Name, err)
		}
		log.Info("new token issued; cloud-init user data written (it holds the token: keep it secret)", "agent", c.Name, "file", c.CloudInit)
		return nil
	}
	fmt.Fprintf(os.Stderr, "new token for %s (not stored, shown once):\n", c.Name)
	fmt.Println(token)
	return nil
}

// AgentsTokensCmd lists an agent's tokens.
type AgentsTokensCmd struct {
	DBFlags
	Name string `arg:"" help:"Agent name."`
}

// Run prints a table of the agent's tokens, oldest first. Secrets are never
// stored, so only ids are shown (the number in ast_<id>_…); when a token was
// last used is not recorded.
func (c *AgentsTokensCmd) Run(ctx context.Context, log *slog.Logger) error {
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	ts, err := st.Tokens(ctx, c.Name)
	if err != nil {
		return err
	}
	return writeTokens(os.Stdout, ts, time.Now())
}

// writeTokens writes tokens as a table; STATE is valid, expired or revoked.
func writeTokens(w io.Writer, ts []store.Token, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCREATED\tEXPIRES\tREVOKED\tSTATE")
	stamp := func(t *time.Time, none string) string {
		if t == nil {
			return none
		}
		return t.UTC().Format(time.RFC3339)
	}
	for _, t := range ts {
		state := "valid"
		switch {
		case t.RevokedAt != nil:
			state = "revoked"
		case t.ExpiresAt != nil && !now.Before(*t.ExpiresAt):
			state = "expired"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", t.ID, t.CreatedAt.UTC().Format(time.RFC3339),
			stamp(t.ExpiresAt, "never"), stamp(t.RevokedAt, "-"), state)
	}
	return tw.Flush()
}

// AgentsRevokeCmd revokes an agent's tokens.
type AgentsRevokeCmd struct {
	DBFlags
	Name string `arg:"" help:"Agent name."`
	// Token has no environment variable: ANYSCOPE_TOKEN may well hold a secret.
	Token int64 `help:"Revoke only this token: its id, the number in ast_<id>_… (anyscope agents tokens NAME lists them). Without it, every token of the agent." placeholder:"ID" env:"-"`
}

// Run revokes one token of the agent, or all.
func (c *AgentsRevokeCmd) Run(ctx context.Context, log *slog.Logger) error {
	if c.Token < 0 {
		return fmt.Errorf("--token %d: want a token id (a positive number)", c.Token)
	}
	st, err := c.open(ctx, log)
	if err != nil {
		return err
	}
	defer st.Close()
	cached := fmt.Sprintf("collectors may accept a cached token for up to %s", store.TokenCacheTTL)
	if c.Token > 0 {
		if err := st.RevokeToken(ctx, c.Name, c.Token); err != nil {
			return err
		}
		log.Info("token revoked ("+cached+"); the agent's other tokens still work", "agent", c.Name, "token", c.Token)
		return nil
	}
	if err := st.RevokeTokens(ctx, c.Name); err != nil {
		return err
	}
	log.Info("every token revoked; the agent is refused from now on ("+cached+")", "agent", c.Name)
	return nil
}
