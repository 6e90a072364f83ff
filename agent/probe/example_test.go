package probe_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/anyscope/anyscope/agent/probe"
)

func ExampleClassify() {
	refused := &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvfrom", syscall.ECONNREFUSED)}
	fmt.Println(probe.Classify(refused))
	fmt.Println(probe.Classify(context.DeadlineExceeded))
	fmt.Printf("%q\n", probe.Classify(nil))
	// Output:
	// connection_refused
	// generic_timeout_error
	// ""
}
