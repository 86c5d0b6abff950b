package expert

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/conclave-ai/conclave/internal/testmodel"
	"github.com/conclave-ai/conclave/kernels"
	"github.com/conclave-ai/conclave/router"
)

// slowStop is an actor that, told to stop, signals and then holds its
// stop until released, as an expert actor draining a queue does.
type slowStop struct{ stopping, release chan struct{} }

func (s *slowStop) Receive(c actor.Context) {
	if _, ok := c.Message().(*actor.Stopping); ok {
		close(s.stopping)
		<-s.release
	}
}

// TestStartWaitsWithoutTheLock: starting a version whose previous actor is
// still stopping waits for it without the host's lock, so LocalVersion,
// which every dispatch calls, answers meanwhile.
func TestStartWaitsWithoutTheLock(t *testing.T) {
	_, w := testmodel.Load(t, testmodel.Config(t, "tiny", nil))
	pool := kernels.NewPool(1)
	defer pool.Close()
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	h := NewHost(sys, w, pool, nil)
	other, id := router.ExpertID{Layer: 0, Index: 1}, router.ExpertID{Layer: 0, Index: 0}
	if err := h.Start(other); err != nil {
		t.Fatal(err)
	}
	old := &slowStop{stopping: make(chan struct{}), release: make(chan struct{})}
	if _, err := sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return old }), VersionName(id, router.BaseVersion)); err != nil {
		t.Fatal(err)
	}
	started := make(chan error, 1)
	go func() { started <- h.Start(id) }()
	<-old.stopping // Start found the name taken and is waiting for the old actor
	looked := make(chan bool, 1)
	go func() {
		_, ok := h.LocalVersion(other, router.BaseVersion)
		looked <- ok
	}()
	select {
	case ok := <-looked:
		if !ok {
			t.Error("LocalVersion does not find a running expert")
		}
	case <-time.After(10 * time.Second):
		t.Error("LocalVersion waited for another version's start")
	}
	close(old.release)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	if _, ok := h.LocalVersion(id, router.BaseVersion); !ok {
		t.Error("the version did not start after its old actor stopped")
	}
}
