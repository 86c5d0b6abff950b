module github.com/conclave-ai/conclave

go 1.26
