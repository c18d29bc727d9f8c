package main

import "github.com/myriemu/myriemu/device/myrimx"

// myrimxKind is the zero-copy MX personality. Its NICs share one hub per
// command run: a SEND reaches any endpoint of any myrimx of the process.
func myrimxKind() deviceKind {
	hub := myrimx.NewHub()
	return deviceKind{
		help: "MX-like zero-copy NIC 14c1:00a0 (not a Myricom product): registration table, fenced invalidation, DMA audit (device/myrimx/README.md)",
		keys: keysOf(myrimx.Keys, func(k myrimx.Key) deviceKey { return deviceKey(k) }),
		check: func(opts map[string]string) error {
			_, err := myrimx.ParseOptions(opts)
			return err
		},
		new: func(env deviceEnv) (device, error) {
			cfg, err := myrimx.ParseOptions(env.Opts)
			if err != nil {
				return nil, err
			}
			cfg.Name, cfg.Hub, cfg.Log = env.Name, hub, env.Log
			return myrimx.New(cfg)
		},
	}
}
