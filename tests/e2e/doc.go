// Package e2e holds the end-to-end suites: real QEMU guests under TCG with
// devices served by myriemu over vfio-user. They are built only with the
// "e2e" tag (go test -tags e2e ./tests/e2e, run by make test), and fail,
// never skip, when root or the provisioned rootfs is missing.
package e2e
