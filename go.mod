module github.com/conclave-ai/conclave

go 1.26.0

require (
	github.com/ardanlabs/jinja v1.8.0
	github.com/dlclark/regexp2 v1.12.0
	golang.org/x/sys v0.50.0
)
