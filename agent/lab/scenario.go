package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Event is one logged lab step. Tests and analysis line up what they detect
// with these, so every step is written when it has taken effect, with its
// time (RFC 3339, UTC).
type Event struct {
	Time   time.Time `json:"time"`
	Event  string    `json:"event"` // up, down, withdraw, restore, blackhole, break-vp, fix-vp, flap, sleep
	Site   string    `json:"site,omitempty"`
	VP     string    `json:"vp,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// event appends e to the event log (and to the Events writer).
func (l *Lab) event(e Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if l.events != nil {
		l.events.Write(b)
	}
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(l.dir, eventsFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	return nil
}

// EventLog is the path of the event log (JSON lines).
func (l *Lab) EventLog() string { return filepath.Join(l.dir, eventsFile) }

// blackholeTable is the nftables table (family inet) of a black-holed site.
const blackholeTable = "anyscope_blackhole"

// Step is one scenario step: an action on a site or vantage point, or a
// pause (Sleep).
type Step struct {
	Do     string        `yaml:"do"`     // withdraw, restore, blackhole, flap, break-vp, fix-vp
	Target string        `yaml:"target"` // a site, or a vantage point for break-vp and fix-vp
	Count  int           `yaml:"count"`  // flap: cycles (default 3)
	Period time.Duration `yaml:"period"` // flap: one withdraw + restore cycle (default 4s)
	Sleep  time.Duration `yaml:"sleep"`
}

// actions are the scenario steps by name; each takes its target.
var actions = map[string]struct {
	vp   bool // target is a vantage point (else a site)
	help string
}{
	"withdraw":  {false, "stop announcing the site's anycast prefixes (BGP session stays up)"},
	"restore":   {false, "announce the site again and lift a black hole"},
	"blackhole": {false, "keep announcing, but drop DNS, HTTP and all TCP/UDP to the anycast addresses"},
	"flap":      {false, "withdraw and restore the site COUNT times, one cycle per PERIOD"},
	"break-vp":  {true, "take the vantage point's uplink down"},
	"fix-vp":    {true, "bring the vantage point's uplink back"},
}

// Actions lists the scenario actions and what they do.
func Actions() map[string]string {
	out := map[string]string{}
	for k, v := range actions {
		out[k] = v.help
	}
	return out
}

// ParseScenario reads a scenario file: {steps: [{do: withdraw, target: ams},
// {sleep: 5s}, {do: restore, target: ams}]}, strictly.
func ParseScenario(name string, b []byte) ([]Step, error) {
	var f struct {
		Steps []Step `yaml:"steps"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("scenario %s", yamlMessage(name, err))
	}
	if len(f.Steps) == 0 {
		return nil, fmt.Errorf("scenario %s: no steps", name)
	}
	for i, s := range f.Steps {
		switch {
		case s.Do == "" && s.Sleep > 0:
		case s.Do == "":
			return nil, fmt.Errorf("scenario %s: steps[%d]: want do: ACTION or sleep: DURATION", name, i)
		default:
			if _, ok := actions[s.Do]; !ok {
				return nil, fmt.Errorf("scenario %s: steps[%d]: unknown action %q (%s)", name, i, s.Do, actionNames())
			}
			if s.Target == "" {
				return nil, fmt.Errorf("scenario %s: steps[%d]: %s needs a target", name, i, s.Do)
			}
		}
	}
	return f.Steps, nil
}

func actionNames() string {
	var names []string
	for k := range actions {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Run carries out scenario steps in order, logging each.
func (l *Lab) Run(ctx context.Context, steps ...Step) error {
	if err := requireRoot(); err != nil {
		return err
	}
	_, p, err := l.loadState()
	if err != nil {
		return err
	}
	for _, s := range steps {
		if err := l.step(ctx, p, s); err != nil {
			return err
		}
	}
	return nil
}

func (l *Lab) step(ctx context.Context, p *plan, s Step) error {
	if s.Do == "" {
		if err := l.event(Event{Event: "sleep", Detail: s.Sleep.String()}); err != nil {
			return err
		}
		return sleep(ctx, s.Sleep)
	}
	a, ok := actions[s.Do]
	if !ok {
		return fmt.Errorf("unknown scenario %q (%s)", s.Do, actionNames())
	}
	var site Site
	if a.vp {
		if _, ok := p.vp(s.Target); !ok {
			return fmt.Errorf("%s: no vantage point %q", s.Do, s.Target)
		}
	} else if site, ok = p.site(s.Target); !ok {
		return fmt.Errorf("%s: no site %q", s.Do, s.Target)
	}
	ev := Event{Event: s.Do}
	if a.vp {
		ev.VP = s.Target
	} else {
		ev.Site = s.Target
	}
	switch s.Do {
	case "withdraw":
		if err := l.announce(ctx, p, site, false); err != nil {
			return err
		}
	case "restore":
		if err := l.announce(ctx, p, site, true); err != nil {
			return err
		}
		if err := l.blackhole(ctx, p, site, false); err != nil {
			return err
		}
	case "blackhole":
		if err := l.blackhole(ctx, p, site, true); err != nil {
			return err
		}
	case "flap":
		count, period := s.Count, s.Period
		if count <= 0 {
			count = 3
		}
		if period <= 0 {
			period = 4 * time.Second
		}
		for i := range count {
			for _, sub := range []string{"withdraw", "restore"} {
				if err := l.step(ctx, p, Step{Do: sub, Target: s.Target}); err != nil {
					return err
				}
				if i < count-1 || sub == "withdraw" {
					if err := sleep(ctx, period/2); err != nil {
						return err
					}
				}
			}
		}
		ev.Detail = fmt.Sprintf("%d cycles of %s done", count, period)
	case "break-vp", "fix-vp":
		up, err := p.uplink(s.Target)
		if err != nil {
			return err
		}
		if s.Do == "break-vp" {
			err = ipBatch(ctx, p.ns(s.Target), []string{"link set " + up.IfB + " down"})
		} else {
			err = ipBatch(ctx, p.ns(s.Target), nodeConfig(p, s.Target))
		}
		if err != nil {
			return err
		}
	}
	return l.event(ev)
}

// announce enables or disables a site's static anycast routes.
func (l *Lab) announce(ctx context.Context, p *plan, s Site, on bool) error {
	verb := "disable"
	if on {
		verb = "enable"
	}
	for _, proto := range siteProtos(p) {
		out, err := birdc(ctx, l.birdSock(s.Name), verb, proto)
		if err != nil {
			return err
		}
		// "anycast4: already disabled" is fine: scenarios are idempotent.
		if !strings.Contains(out, proto+": ") {
			return fmt.Errorf("birdc %s %s at %s: unexpected reply %q", verb, proto, s.Name, strings.TrimSpace(out))
		}
	}
	return nil
}

// blackhole adds or removes the nftables table dropping TCP and UDP to the
// site's anycast addresses (BGP, between link addresses, is untouched).
func (l *Lab) blackhole(ctx context.Context, p *plan, s Site, on bool) error {
	ns := p.ns(s.Name)
	out, err := run(ctx, "", "ip", "netns", "exec", ns, "nft", "list", "tables")
	if err != nil {
		return err
	}
	present := strings.Contains(out, "inet "+blackholeTable)
	if present {
		if _, err := run(ctx, "", "ip", "netns", "exec", ns, "nft", "delete", "table", "inet", blackholeTable); err != nil {
			return err
		}
	}
	if !on {
		return nil
	}
	var rules strings.Builder
	fmt.Fprintf(&rules, "table inet %s {\n\tchain input {\n\t\ttype filter hook input priority -10; policy accept;\n", blackholeTable)
	for _, a := range p.topo.Anycast {
		fam := "ip"
		if a.Address.Is6() {
			fam = "ip6"
		}
		fmt.Fprintf(&rules, "\t\t%s daddr %s meta l4proto { tcp, udp } drop\n", fam, a.Address)
	}
	rules.WriteString("\t}\n}\n")
	_, err = run(ctx, rules.String(), "ip", "netns", "exec", ns, "nft", "-f", "-")
	return err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
