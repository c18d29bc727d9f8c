package main

import (
	"io"
	"strings"
	"testing"
)

func TestParsePorts(t *testing.T) {
	kinds := deviceKinds()
	cfg, err := parseServe(strings.Fields("--device testdev,socket=/a --port stream=127.0.0.1:7000,server --port tap=t0,mtu=1500,name=lan"), kinds, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Ports) != 2 || cfg.Ports[1] != "tap=t0,mtu=1500,name=lan" {
		t.Errorf("ports %q", cfg.Ports)
	}
	for _, bad := range []struct{ args, want string }{
		{"--port stream=127.0.0.1:7000", "server or stream=ADDR,client"},
		{"--port vde=x", `unknown kind "vde"`},
		{"--port tap=a,name=x --port tap=b,name=x", `name "x" used twice`},
	} {
		_, err := parseServe(strings.Fields("--device testdev,socket=/a "+bad.args), kinds, io.Discard)
		if _, ok := err.(*usageError); !ok || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: error %v, want a usage error with %q", bad.args, err, bad.want)
		}
	}
}
