package vfiouser

// DropClient disconnects the current client, if any, as if the server had
// crashed for this device only: its socket is shut down, the connection
// is torn down as on any client loss (the device detached, its memory
// unmapped, its fds closed), and the server accepts the next client. It
// reports whether a client was connected.
func (s *Server) DropClient() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return false
	}
	s.conn.shutdown()
	s.log.Warn("client dropped on request (device-disconnect)")
	return true
}
