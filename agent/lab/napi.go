package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// OffloadForwarding moves the lab's packet processing out of the processes
// running in node. A veth pair hands a sent packet to its peer's receive
// path in the sender's own context: a packet an agent sends is routed by
// every lab router on its way, and delivered to the site's server, before
// the agent's send returns, and the kernel charges all of it to the agent.
// On a real vantage point that work is done by other machines. With GRO on
// and threaded NAPI at the far end of each of node's links, the sender's
// part ends at its own interface and the rest runs in that interface's NAPI
// kernel thread (napi/to-<node>-…), as it would behind a NIC. Benchmarks
// that measure a process's CPU use it; routing and delivery are unchanged.
func (l *Lab) OffloadForwarding(ctx context.Context, node string) error {
	if err := requireRoot(); err != nil {
		return err
	}
	_, p, err := l.loadState()
	if err != nil {
		return err
	}
	n := 0
	for _, k := range p.links {
		var ns, dev, own string
		switch node {
		case k.A:
			ns, dev, own = p.ns(k.B), k.IfB, k.IfA
		case k.B:
			ns, dev, own = p.ns(k.A), k.IfA, k.IfB
		default:
			continue
		}
		// veth passes a packet to the peer's NAPI only when the sending
		// device does not do TSO (its segments could be large); the
		// agent's messages are small, so software segmentation costs
		// nothing here.
		if err := ethtool(p.ns(node), own, ethtoolSTSO, ethtoolGTSO, 0); err != nil {
			return fmt.Errorf("lab: offload forwarding of %s: TSO off: %w", node, err)
		}
		if err := ethtool(ns, dev, ethtoolSGRO, ethtoolGGRO, 1); err != nil {
			return fmt.Errorf("lab: offload forwarding of %s: GRO on: %w", node, err)
		}
		// sysfs shows a namespace's devices only when mounted in it: ip
		// netns exec does that.
		if _, err := run(ctx, "", "ip", "netns", "exec", ns, "sh", "-c", "echo 1 > /sys/class/net/"+dev+"/threaded"); err != nil {
			return fmt.Errorf("lab: threaded NAPI on %s in %s: %w", dev, ns, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("lab: offload forwarding: no link of %q", node)
	}
	return nil
}

// ethtool ioctl commands (linux/ethtool.h).
const (
	ethtoolGTSO = 0x1e
	ethtoolSTSO = 0x1f
	ethtoolGGRO = 0x2b
	ethtoolSGRO = 0x2c
)

// ethtoolValue is struct ethtool_value.
type ethtoolValue struct{ cmd, data uint32 }

// ifreqData is struct ifreq with ifr_data.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [16]byte
}

// ethtool sets one of dev's offload features (the legacy ethtool_value
// commands set and get) in the namespace ns, as `ethtool -K` does, and
// checks that it took. GRO on a veth gives the device a NAPI context. It
// runs on an OS thread of its own that enters ns and is thrown away after.
func ethtool(ns, dev string, set, get, value uint32) error {
	if len(dev) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q too long", dev)
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread leaves the namespace by exiting.
		runtime.LockOSThread()
		errc <- func() error {
			f, err := os.Open(filepath.Join("/run/netns", ns))
			if err != nil {
				return err
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("entering %s: %w", ns, err)
			}
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			ioctl := func(v *ethtoolValue) error {
				var ifr ifreqData
				copy(ifr.name[:], dev)
				ifr.data = unsafe.Pointer(v)
				_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
				runtime.KeepAlive(v)
				if e != 0 {
					return e
				}
				return nil
			}
			if err := ioctl(&ethtoolValue{cmd: set, data: value}); err != nil {
				return fmt.Errorf("%s in %s: %w", dev, ns, err)
			}
			v := ethtoolValue{cmd: get}
			if err := ioctl(&v); err != nil || v.data != value {
				return fmt.Errorf("%s in %s: the feature is %d, not %d (%v)", dev, ns, v.data, value, err)
			}
			return nil
		}()
	}()
	return <-errc
}
