package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/miekg/dns"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	op := func(err error) error {
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", err)}
	}
	tests := []struct {
		name string
		err  error
		want api.Failure
	}{
		{"nil", nil, api.FailureNone},
		{"context deadline", context.DeadlineExceeded, api.FailureTimeout},
		{"wrapped context deadline", fmt.Errorf("exchange: %w", context.DeadlineExceeded), api.FailureTimeout},
		{"i/o deadline", &net.OpError{Op: "read", Net: "udp", Err: os.ErrDeadlineExceeded}, api.FailureTimeout},
		{"kernel timeout", op(syscall.ETIMEDOUT), api.FailureTimeout},
		{"refused", op(syscall.ECONNREFUSED), api.FailureConnectionRefused},
		{"reset", op(syscall.ECONNRESET), api.FailureConnectionReset},
		{"broken pipe", op(syscall.EPIPE), api.FailureConnectionReset},
		{"aborted", op(syscall.ECONNABORTED), api.FailureConnectionReset},
		{"eof", io.EOF, api.FailureConnectionClosed},
		{"unexpected eof", fmt.Errorf("reading: %w", io.ErrUnexpectedEOF), api.FailureConnectionClosed},
		{"host unreachable", op(syscall.EHOSTUNREACH), api.FailureHostUnreachable},
		{"network unreachable", op(syscall.ENETUNREACH), api.FailureNetworkUnreachable},
		{"access", op(syscall.EACCES), api.FailurePermissionDenied},
		{"not permitted", op(syscall.EPERM), api.FailurePermissionDenied},
		{"bogus", fmt.Errorf("%w: wrong question", ErrBogus), api.FailureDNSBogus},
		{"miekg short read", dns.ErrShortRead, api.FailureDNSBogus},
		{"miekg id mismatch", dns.ErrId, api.FailureDNSBogus},
		{"miekg unpack", fmt.Errorf("unpack: %w", dns.ErrRdata), api.FailureDNSBogus},
		{"canceled", context.Canceled, api.FailureUnknown},
		{"other", errors.New("something else"), api.FailureUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestClean(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"ns1.ams", 100, "ns1.ams"},
		{"a\x00b\x1fc\x7f\xff", 100, `a\000b\031c\127\255`},
		{"abcdef", 3, "abc"},
		{"ab\x01", 5, "ab"}, // an escape is never cut in half
	}
	for _, tt := range tests {
		if got := clean(tt.in, tt.max); got != tt.want {
			t.Errorf("clean(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func TestNSID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, hex, text string
	}{
		{"printable", "61736369695f706f7041", "61736369695f706f7041", "ascii_popA"},
		{"upper-case hex is canonicalised", "4142", "4142", "AB"},
		{"binary", "00ff41", "00ff41", ""},
		{"invalid utf-8", "c328", "c328", ""},
		{"empty", "", "", ""},
		{"not hex", "zz", "", ""},
	}
	for _, tt := range tests {
		h, txt := nsid(tt.in)
		if h != tt.hex || txt != tt.text {
			t.Errorf("%s: nsid(%q) = %q, %q; want %q, %q", tt.name, tt.in, h, txt, tt.hex, tt.text)
		}
	}
}

func TestNSIDQName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"", ".", true},
		{".", ".", true},
		{"example.org", "example.org.", true},
		{"example.org.", "example.org.", true},
		{"bad..name", "", false},
	}
	for _, tt := range tests {
		got, err := NSIDQName(api.ScheduleTarget{NSIDQName: tt.in})
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("NSIDQName(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestNewDNS(t *testing.T) {
	t.Parallel()
	if _, err := NewDNS(DNSOptions{UDPSize: 512}); err == nil {
		t.Error("NewDNS accepted a 512-byte EDNS buffer")
	}
	if _, err := NewDNS(DNSOptions{Timeout: -1}); err == nil {
		t.Error("NewDNS accepted a negative timeout")
	}
	p, err := NewDNS(DNSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.opts.Timeout != DefaultTimeout || p.opts.UDPSize != DefaultUDPSize || p.opts.Port != DefaultPort {
		t.Errorf("defaults not applied: %+v", p.opts)
	}
}
