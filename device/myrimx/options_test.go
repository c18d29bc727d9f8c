package myrimx

import (
	"strings"
	"testing"

	"github.com/myriemu/myriemu/dma"
)

func TestParseOptions(t *testing.T) {
	for _, c := range []struct {
		opts    map[string]string
		want    Config
		wantErr string // the whole error text; "" for none
	}{
		{nil, Config{Endpoints: DefaultEndpoints, Audit: dma.AuditObserve}, ""},
		{map[string]string{"endpoints": "16", "audit": "enforce", "nic_id": "0x0060dd000001"},
			Config{Endpoints: 16, Audit: dma.AuditEnforce, NICID: 0x0060dd000001}, ""},
		{map[string]string{"audit": "off"}, Config{Endpoints: DefaultEndpoints, Audit: dma.AuditOff}, ""},
		{map[string]string{"endpoints": "17"}, Config{}, "endpoints=17: want 1..16"},
		{map[string]string{"endpoints": "0"}, Config{}, "endpoints=0: want 1..16"},
		{map[string]string{"endpoints": "two"}, Config{}, "endpoints=two: want 1..16"},
		{map[string]string{"audit": "strict"}, Config{}, "audit=strict: want off, observe or enforce"},
		{map[string]string{"nic_id": "0x1000000000000"}, Config{}, "nic_id=0x1000000000000: want a nonzero 48-bit number"},
		{map[string]string{"nic_id": "0"}, Config{}, "nic_id=0: want a nonzero 48-bit number"},
		{map[string]string{"speed": "10g"}, Config{}, `unknown key "speed" (known: endpoints, audit, nic_id)`},
		// In key order, so the first bad key reported is always the same one.
		{map[string]string{"speed": "10g", "audit": "strict", "endpoints": "0"}, Config{}, "audit=strict: want off, observe or enforce"},
	} {
		got, err := ParseOptions(c.opts)
		gotErr := ""
		if err != nil {
			gotErr = err.Error()
		}
		if gotErr != c.wantErr || (c.wantErr == "" && got != c.want) {
			t.Errorf("ParseOptions(%v) = %+v, %q; want %+v, %q", c.opts, got, gotErr, c.want, c.wantErr)
		}
	}
	for _, k := range Keys {
		if _, err := ParseOptions(map[string]string{k.Name: "x"}); err == nil || strings.HasPrefix(err.Error(), "unknown key") {
			t.Errorf("key %s is documented but not parsed", k.Name)
		}
	}
}
