package link

import (
	"fmt"
	"sync"

	"github.com/myriemu/myriemu/fabric"
	"github.com/myriemu/myriemu/internal/unixsock"
	"github.com/sirupsen/logrus"
)

// Set is the links of one switch, by name: what serve's --port flags and
// the control socket's port-add, port-del and query-ports act on.
type Set struct {
	sw  *fabric.Switch
	log *logrus.Entry
	// Perm is given to every link's UNIX socket files (set before Add).
	Perm unixsock.Perm

	mu     sync.Mutex // guards links, order and closed
	links  map[string]*Link
	order  []string
	closed bool
	next   map[Kind]int // default names: stream0, stream1, ...
}

// NewSet returns an empty set of links on sw.
func NewSet(sw *fabric.Switch, log *logrus.Entry) *Set {
	return &Set{sw: sw, log: log, links: map[string]*Link{}, next: map[Kind]int{}}
}

// PortInfo is one link as query-ports reports it.
type PortInfo struct {
	Name   string           `json:"name"`
	Spec   string           `json:"spec"`
	Addr   string           `json:"addr"`
	Stats  Stats            `json:"stats"`
	Switch fabric.PortStats `json:"switch"`
}

// Add opens and starts the link that spec describes (a --port value). A
// link without name= is named after its kind: stream0, tap0, ...
func (s *Set) Add(spec string) (*Link, error) {
	cfg, err := ParseSpec(spec)
	if err != nil {
		return nil, err
	}
	return s.AddConfig(cfg)
}

// AddConfig is Add for a parsed configuration.
func (s *Set) AddConfig(cfg Config) (*Link, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("link: set closed")
	}
	if cfg.Name == "" {
		for cfg.Name == "" || s.links[cfg.Name] != nil {
			cfg.Name = fmt.Sprintf("%s%d", cfg.Kind, s.next[cfg.Kind])
			s.next[cfg.Kind]++
		}
	}
	if s.links[cfg.Name] != nil {
		return nil, fmt.Errorf("link: port name %q in use", cfg.Name)
	}
	cfg.Perm = s.Perm
	l, err := Open(s.sw, cfg, s.log)
	if err != nil {
		return nil, err
	}
	l.Start()
	s.links[cfg.Name] = l
	s.order = append(s.order, cfg.Name)
	return l, nil
}

// Remove closes the link named name and takes its port off the switch.
func (s *Set) Remove(name string) error {
	s.mu.Lock()
	l := s.links[name]
	if l != nil {
		delete(s.links, name)
		for i, n := range s.order {
			if n == name {
				s.order = append(s.order[:i], s.order[i+1:]...)
				break
			}
		}
	}
	s.mu.Unlock()
	if l == nil {
		return fmt.Errorf("link: no port named %q", name)
	}
	l.Close()
	s.sw.RemovePort(l.Port())
	return nil
}

// Query reports every link, in the order they were added.
func (s *Set) Query() []PortInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PortInfo, 0, len(s.order))
	for _, n := range s.order {
		l := s.links[n]
		out = append(out, PortInfo{Name: n, Spec: l.cfg.Spec(), Addr: l.Addr(), Stats: l.Stats(), Switch: l.Port().Stats()})
	}
	return out
}

// Close closes every link; later Adds fail. It is idempotent.
func (s *Set) Close() {
	s.mu.Lock()
	s.closed = true
	all := make([]*Link, 0, len(s.links))
	for _, n := range s.order {
		all = append(all, s.links[n])
	}
	s.links, s.order = map[string]*Link{}, nil
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range all {
		wg.Go(l.Close)
	}
	wg.Wait()
}
