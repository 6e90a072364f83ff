package agent_test

import (
	"fmt"

	"github.com/anyscope/anyscope/agent"
)

func ExampleLoadConfig() {
	cfg, err := agent.LoadConfig("testdata/valid-minimal.yml")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Name, cfg.Allow, cfg.Timeout, cfg.ScheduleRefresh, cfg.DNSPort)
	// Output: vp-ams-1 [192.0.2.0/24] 2s 1m0s 53
}
