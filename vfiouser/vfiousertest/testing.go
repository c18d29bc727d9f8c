package vfiousertest

import (
	"context"
	"errors"
	"testing"

	"github.com/myriemu/myriemu/vfiouser"
)

// Serve runs srv until the test ends. Then it closes srv and waits for
// Serve to return: an error from Close, or a Serve that ends other than
// with vfiouser.ErrServerClosed, fails the test.
func Serve(tb testing.TB, srv *vfiouser.Server) {
	tb.Helper()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	tb.Cleanup(func() {
		if err := srv.Close(); err != nil {
			tb.Errorf("vfio-user server %s: Close: %v", srv.Path(), err)
		}
		if err := <-served; !errors.Is(err, vfiouser.ErrServerClosed) {
			tb.Errorf("vfio-user server %s: Serve returned %v, want ErrServerClosed", srv.Path(), err)
		}
	})
}
