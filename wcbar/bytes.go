package wcbar

// Bytes returns the window's own shared mapping, for a device model that
// keeps its registers in it and serialises its own accesses (one lock for
// trapped accesses and its poller). Guest stores to mmapped areas land in
// it at any time: read such words atomically or snapshot them. The slice
// is valid until Close; nil after Close.
func (w *Window) Bytes() []byte {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return nil
	}
	return w.mem
}
