package control

import "encoding/json"

// The log of retired registrations (query-registrations with retired:
// true): which registrations left a zero-copy device's table and why, so
// a test sees the DEREG reasons from the device's side.

// RetiredLister is an Auditor that also logs the registrations it
// retired. A Target need not be one.
type RetiredLister interface {
	// RetiredRegistrations returns the last registrations retired, oldest
	// first, each with its reason, as a JSON-encodable list.
	RetiredRegistrations() (any, error)
}

// retiredRegistrations answers query-registrations {retired: true}.
func retiredRegistrations(t Target) (any, error) {
	r, ok := t.(RetiredLister)
	if !ok {
		return nil, targetErr(t, ErrNotSupported)
	}
	list, err := r.RetiredRegistrations()
	if err != nil {
		return nil, targetErr(t, err)
	}
	return list, nil
}

func boolArg(args map[string]json.RawMessage, k string) bool {
	var b bool
	json.Unmarshal(args[k], &b)
	return b
}
