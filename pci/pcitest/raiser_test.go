package pcitest_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/myriemu/myriemu/msi"
	"github.com/myriemu/myriemu/pci/pcitest"
)

func TestRaiser(t *testing.T) {
	r := pcitest.NewRaiser(msi.ModeMSI)
	if m := r.Mode(); m != msi.ModeMSI {
		t.Errorf("Mode = %v, want MSI", m)
	}
	r.Raise(2)
	r.Raise(0)
	r.Lower()
	if raised, lowers := r.Take(); !cmp.Equal(raised, []int{2, 0}) || lowers != 1 {
		t.Errorf("Take = %v, %d; want [2 0], 1", raised, lowers)
	}
	if raised, lowers := r.Take(); raised != nil || lowers != 0 {
		t.Errorf("second Take = %v, %d; want nothing", raised, lowers)
	}
	r.SetMode(msi.ModeINTx)
	if m := r.Mode(); m != msi.ModeINTx {
		t.Errorf("Mode after SetMode = %v, want INTx", m)
	}
}
