package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"syscall"
)

// An agent's work comes in hundreds of short bursts a second (a packet out,
// a reply in, a timer), each a few microseconds between idle stretches. Two
// defaults of the Go runtime make such a process pay for every burst in
// thread wake-ups, which were most of its CPU (measured with `anyscope bench
// agent` in the lab; the README's bench section has the numbers):
//
//   - sysmon, the runtime's monitor thread, sleeps deeply whenever every P
//     is idle and is woken by the next system call, to poll every 20 µs
//     again. With a burst every few milliseconds it is woken and re-armed
//     over and over. While GODEBUG's schedtrace is set it never sleeps
//     deeply and polls at most every 10 ms instead. The trace it asks for
//     is printed to stderr once per period: agentSchedtrace is the longest
//     the runtime accepts (2³¹−1 ms, about 24.8 days).
//   - with more than one P, every goroutine woken wakes a second thread to
//     look for work; it finds none and goes back to sleep.
//
// GODEBUG is read once when the runtime starts, so the agent re-executes
// itself with it set. An operator who sets schedtrace (schedtrace=0 turns
// the trace and this tuning off) or GOMAXPROCS keeps their own setting.
const agentSchedtrace = "schedtrace=2147483647"

// agentRuntime applies the settings above. It returns only when the
// process is already running with them (or cannot re-execute: then it logs
// why and carries on untuned).
func agentRuntime(log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if godebug := os.Getenv("GODEBUG"); !hasGODEBUG(godebug, "schedtrace") {
		exe, err := os.Executable()
		if err == nil {
			env := []string{"GODEBUG=" + strings.Trim(godebug+","+agentSchedtrace, ",")}
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GODEBUG=") {
					env = append(env, kv)
				}
			}
			err = syscall.Exec(exe, os.Args, env)
		}
		log.Warn("agent: cannot re-execute with the runtime tuned for probing; running untuned (more CPU per probe)",
			"err", fmt.Errorf("re-executing %s: %w", exe, err))
	}
	log.Info("agent: runtime", "gomaxprocs", runtime.GOMAXPROCS(0), "godebug", os.Getenv("GODEBUG"))
}

// hasGODEBUG reports whether the GODEBUG value sets key.
func hasGODEBUG(godebug, key string) bool {
	for _, kv := range strings.Split(godebug, ",") {
		if k, _, ok := strings.Cut(kv, "="); ok && strings.TrimSpace(k) == key {
			return true
		}
	}
	return false
}
