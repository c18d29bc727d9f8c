package fabric

// RemovePort detaches p and takes it off the switch, for ports added and
// removed at run time (a link to another network unplugged). Frames sent on
// p afterwards are dropped. It is a no-op for a port already removed.
func (s *Switch) RemovePort(p *SwitchPort) {
	p.Detach()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, q := range s.ports {
		if q == p {
			s.ports = append(s.ports[:i], s.ports[i+1:]...)
			break
		}
	}
	s.forgetLocked(p)
}
