package integration

import (
	"os"
	"testing"

	"github.com/mwi-project/mwi/internal/loadgen"
)

// TestMain lets this test binary serve the load generator's floor when
// TestLoadgen starts it as that server (loadgen.Config.Self).
func TestMain(m *testing.M) {
	loadgen.ServeFloorIfAsked()
	os.Exit(m.Run())
}
