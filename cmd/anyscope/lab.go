package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anyscope/anyscope/agent/lab"
)

// LabCmd groups the anycast lab: a BGP network of namespaces on this machine.
type LabCmd struct {
	Up       LabUpCmd       `cmd:"" help:"Build the lab (default topology unless --topology) and wait for BGP to converge."`
	Down     LabDownCmd     `cmd:"" help:"Remove every namespace, process and interface of the lab (also after a crash)."`
	Status   LabStatusCmd   `cmd:"" help:"Show the lab's nodes, daemons, BGP sessions and site states."`
	Exec     LabExecCmd     `cmd:"" help:"Run a command inside a node's namespace: anyscope lab exec vp1 -- dig @192.0.2.53 CH TXT hostname.bind"`
	Scenario LabScenarioCmd `cmd:"" help:"Change the network on purpose (withdraw, restore, blackhole, flap, break-vp, fix-vp) or run a scenario file; each step is logged as a JSON line."`
	Truth    LabTruthCmd    `cmd:"" help:"Print, as JSON, the site routing leads each vantage point to, read from the routers' forwarding tables."`
	HTTPD    LabHTTPDCmd    `cmd:"" name:"httpd" hidden:"" help:"The HTTP identity responder the lab runs in each site."`
}

// LabFlags locate the lab.
type LabFlags struct {
	StateDir string `name:"state-dir" help:"Where the lab keeps configurations, sockets, logs and its event log." default:"/run/anyscope-lab" placeholder:"DIR"`
	Prefix   string `name:"prefix" help:"Prefix of the lab's namespace names (and of the host's management interface)." default:"as-"`
}

func (f *LabFlags) open(log *slog.Logger) (*lab.Lab, error) {
	return lab.New(lab.Options{StateDir: f.StateDir, Prefix: f.Prefix, Logger: log, Events: os.Stdout})
}

// LabUpCmd builds the lab.
type LabUpCmd struct {
	LabFlags
	Topology string        `help:"Topology YAML file (default: the built-in one: 6 routers, 4 sites, 8 vantage points)." type:"existingfile" placeholder:"FILE"`
	Timeout  time.Duration `help:"How long to wait for BGP to converge." default:"25s"`
}

// Run builds the lab.
func (c *LabUpCmd) Run(ctx context.Context, log *slog.Logger) error {
	name, src := "default", lab.DefaultTopologyYAML()
	if c.Topology != "" {
		b, err := os.ReadFile(c.Topology)
		if err != nil {
			return err
		}
		name, src = c.Topology, b
	}
	l, err := lab.New(lab.Options{StateDir: c.StateDir, Prefix: c.Prefix, Logger: log, Events: os.Stdout, ConvergeTimeout: c.Timeout})
	if err != nil {
		return err
	}
	start := time.Now()
	if err := l.Up(ctx, name, src); err != nil {
		if errors.Is(err, lab.ErrAlreadyUp) {
			fmt.Fprintf(os.Stderr, "anyscope: %v\n", err)
			return nil
		}
		return err
	}
	fmt.Fprintf(os.Stderr, "lab up in %s (state in %s); try: anyscope lab truth\n", time.Since(start).Round(100*time.Millisecond), l.StateDir())
	return nil
}

// LabDownCmd removes the lab.
type LabDownCmd struct {
	LabFlags
}

// Run removes the lab.
func (c *LabDownCmd) Run(ctx context.Context, log *slog.Logger) error {
	l, err := c.open(log)
	if err != nil {
		return err
	}
	rep, err := l.Down(ctx)
	if err != nil {
		return err
	}
	if len(rep.Namespaces) == 0 && rep.Processes == 0 && !rep.HostLink {
		fmt.Fprintln(os.Stderr, "lab is not up: nothing to remove")
		return nil
	}
	fmt.Fprintf(os.Stderr, "lab down: %d namespaces, %d processes removed\n", len(rep.Namespaces), rep.Processes)
	return nil
}

// LabStatusCmd shows the lab.
type LabStatusCmd struct {
	LabFlags
	JSON bool `name:"json" help:"Print JSON."`
}

// Run prints the status.
func (c *LabStatusCmd) Run(ctx context.Context, log *slog.Logger) error {
	l, err := c.open(log)
	if err != nil {
		return err
	}
	s, err := l.Status(ctx)
	if err != nil {
		return err
	}
	if c.JSON {
		return printJSON(s)
	}
	fmt.Printf("topology %s, up since %s, state in %s\n\n", s.Topology, s.Started.Format(time.RFC3339), s.StateDir)
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tKIND\tNAMESPACE\tPROCESSES\tBGP")
	for _, n := range s.Nodes {
		ns := n.Namespace
		if !n.Present {
			ns += " (missing)"
		}
		var sess []string
		for k, v := range n.Sessions {
			sess = append(sess, k+"="+v)
		}
		sort.Strings(sess)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Node, n.Kind, ns, strings.Join(n.Processes, " "), strings.Join(sess, " "))
	}
	tw.Flush()
	fmt.Println()
	tw = tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SITE\tANNOUNCED\tBLACKHOLED")
	for _, st := range s.Sites {
		fmt.Fprintf(tw, "%s\t%v\t%v\n", st.Site, st.Announced, st.Blackholed)
	}
	return tw.Flush()
}

// LabExecCmd runs a command in a node's namespace.
type LabExecCmd struct {
	LabFlags
	Node    string   `arg:"" help:"Router, site, vantage point or mgmt."`
	Command []string `arg:"" passthrough:"" help:"Command and arguments (after --)."`
}

// Run runs the command; its exit status becomes ours.
func (c *LabExecCmd) Run(ctx context.Context, log *slog.Logger) error {
	l, err := c.open(log)
	if err != nil {
		return err
	}
	argv := c.Command
	if len(argv) > 0 && argv[0] == "--" {
		argv = argv[1:]
	}
	err = l.Exec(ctx, c.Node, argv, os.Stdin, os.Stdout, os.Stderr)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return exitStatus(ee.ExitCode())
	}
	return err
}

// exitStatus makes main exit with a command's status, without a message.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// LabScenarioCmd changes the network.
type LabScenarioCmd struct {
	LabFlags
	Name   string        `arg:"" help:"withdraw, restore, blackhole, flap, break-vp, fix-vp, or a scenario YAML file."`
	Target string        `arg:"" optional:"" help:"Site (or vantage point for break-vp and fix-vp)."`
	Count  int           `help:"flap: withdraw/restore cycles." default:"3"`
	Period time.Duration `help:"flap: length of one cycle." default:"4s"`
}

// Run carries out the scenario.
func (c *LabScenarioCmd) Run(ctx context.Context, log *slog.Logger) error {
	l, err := c.open(log)
	if err != nil {
		return err
	}
	var steps []lab.Step
	if _, known := lab.Actions()[c.Name]; !known {
		b, err := os.ReadFile(c.Name)
		if err != nil {
			var names []string
			for k := range lab.Actions() {
				names = append(names, k)
			}
			sort.Strings(names)
			return fmt.Errorf("%q is neither a scenario (%s) nor a readable scenario file: %w", c.Name, strings.Join(names, ", "), err)
		}
		if steps, err = lab.ParseScenario(c.Name, b); err != nil {
			return err
		}
	} else {
		if c.Target == "" {
			return fmt.Errorf("scenario %s needs a target (a site, or a vantage point for break-vp and fix-vp)", c.Name)
		}
		steps = []lab.Step{{Do: c.Name, Target: c.Target, Count: c.Count, Period: c.Period}}
	}
	return l.Run(ctx, steps...)
}

// LabTruthCmd prints the ground truth.
type LabTruthCmd struct {
	LabFlags
}

// Run prints the truth as JSON.
func (c *LabTruthCmd) Run(ctx context.Context, log *slog.Logger) error {
	l, err := c.open(log)
	if err != nil {
		return err
	}
	t, err := l.Truth(ctx)
	if err != nil {
		return err
	}
	return printJSON(t)
}

// LabHTTPDCmd is the HTTP identity responder of one site.
type LabHTTPDCmd struct {
	Site   string   `required:"" help:"Site name sent in X-Served-By."`
	Listen []string `required:"" help:"Address to listen on (host:port); repeatable."`
}

// Run serves until interrupted.
func (c *LabHTTPDCmd) Run(ctx context.Context) error {
	return lab.ServeHTTP(ctx, c.Site, c.Listen)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
