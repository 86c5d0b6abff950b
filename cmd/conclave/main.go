// Command conclave is the Conclave binary: it runs cluster nodes, generates
// text from GGUF MoE models, inspects and synthesizes model files, and
// benchmarks the engine.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `conclave — a distributed inference cluster for mixture-of-experts models

Usage:
  conclave serve    [--bind HOST --port-base N] [--model F] [--data-dir D]   one-node cluster
  conclave node     --id ID --data-dir D [--bind HOST --port-base N] [--join HOST:PORT,…] [--model F]
  conclave cluster  status|nodes|experts|drain NODE|rebalance|init-tls [--addr http://HOST:PORT] [--json]
  conclave expert   update --layer L --expert E --from F.gguf | rollback --layer L --expert E [--addr URL]
  conclave generate --model F (--prompt TEXT | --tokens 1,2,3) [flags]
  conclave logits   --model F --tokens 1,2,3 [--top K] [--json]
  conclave model synth   [--preset tiny|demo|bench] [shape flags] --out F
  conclave model inspect F [--json]
  conclave model load    F [--addr http://HOST:PORT] [--timeout 5m] [--json]
  conclave bench model   --model F [--prompt 256,512] [--gen 128] [--reps R] [--threads N] [--json]
  conclave bench membw   [--threads N] [--mib 512] [--json]
  conclave bench compare --ours OURS.json[,…] --llamacpp LLAMA_BENCH.json[,…] [--json]
  conclave bench serve   --url http://HOST:PORT [--concurrency 1,4,16 | --rate R | --sessions S --turns T] [--json]

Run "conclave COMMAND -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors caused by the command line, which exit with code 2.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "generate":
		err = cmdGenerate(args[1:], stdout, stderr)
	case "logits":
		err = cmdLogits(args[1:], stdout, stderr)
	case "serve":
		err = cmdServe(args[1:], stdout, stderr)
	case "node":
		err = cmdNode(args[1:], stdout, stderr)
	case "cluster":
		err = cmdCluster(args[1:], stdout, stderr)
	case "expert":
		err = cmdExpert(args[1:], stdout, stderr)
	case "bench":
		err = cmdBench(args[1:], stdout, stderr)
	case "model":
		if len(args) < 2 {
			fmt.Fprint(stderr, modelUsage)
			return 2
		}
		if isHelp(args[1]) {
			fmt.Fprint(stdout, modelUsage)
			return 0
		}
		switch args[1] {
		case "synth":
			err = cmdSynth(args[2:], stdout, stderr)
		case "inspect":
			err = cmdInspect(args[2:], stdout, stderr)
		case "load":
			err = cmdLoad(args[2:], stdout, stderr)
		default:
			err = fmt.Errorf("%w: unknown model command %q", errUsage, args[1])
		}
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "conclave:", err)
		return 2
	case errors.Is(err, errUnhealthy):
		fmt.Fprintln(stderr, "conclave:", err)
		return 3
	default:
		fmt.Fprintln(stderr, "conclave:", err)
		return 1
	}
}

const modelUsage = `Usage:
  conclave model synth   [--preset tiny|demo|bench] [shape flags] --out F
  conclave model inspect F [--json]
  conclave model load    F [--addr http://HOST:PORT] [--timeout 5m] [--json]

Run "conclave model COMMAND -h" for a command's flags.
`

// isHelp reports whether arg, given where a command group expects its
// command, asks for the group's usage.
func isHelp(arg string) bool {
	switch arg {
	case "help", "-h", "-help", "--help":
		return true
	}
	return false
}

// newFlags makes a flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}
