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
		wantErr bool
	}{
		{nil, Config{Endpoints: DefaultEndpoints, Audit: dma.AuditObserve}, false},
		{map[string]string{"endpoints": "16", "audit": "enforce", "nic_id": "0x0060dd000001"},
			Config{Endpoints: 16, Audit: dma.AuditEnforce, NICID: 0x0060dd000001}, false},
		{map[string]string{"audit": "off"}, Config{Endpoints: DefaultEndpoints, Audit: dma.AuditOff}, false},
		{map[string]string{"endpoints": "17"}, Config{}, true},
		{map[string]string{"endpoints": "0"}, Config{}, true},
		{map[string]string{"audit": "strict"}, Config{}, true},
		{map[string]string{"nic_id": "0x1000000000000"}, Config{}, true},
		{map[string]string{"speed": "10g"}, Config{}, true},
	} {
		got, err := ParseOptions(c.opts)
		if (err != nil) != c.wantErr || (!c.wantErr && got != c.want) {
			t.Errorf("ParseOptions(%v) = %+v, %v; want %+v, error %v", c.opts, got, err, c.want, c.wantErr)
		}
	}
	for _, k := range Keys {
		if _, err := ParseOptions(map[string]string{k.Name: "x"}); err == nil || strings.HasPrefix(err.Error(), "unknown key") {
			t.Errorf("key %s is documented but not parsed", k.Name)
		}
	}
}
