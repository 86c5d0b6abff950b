//go:build !amd64 || purego

package kernels

var (
	hwAMX  = false
	useAMX = false
)

func amxGranted() bool { return false }

const amxRingBytes = 0

func amxTile(int, int, []byte, []byte, int, []byte, int, []float32, int, []byte, *byte) {
	panic("kernels: no AMX kernels in this build")
}

func signTile(sq, wq []byte) { panic("kernels: no AMX kernels in this build") }
