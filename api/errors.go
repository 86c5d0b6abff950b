package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/conclave-ai/conclave/model"
	"net/http"

	"github.com/conclave-ai/conclave/engine"
)

// Error types, as OpenAI names them in the "type" field of an error body.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typeRateLimit      = "rate_limit_error"
	typeUnavailable    = "service_unavailable_error"
	typeServer         = "server_error"
)

// Error is an HTTP error the API answers with an OpenAI-style body:
//
//	{"error":{"message":"…","type":"invalid_request_error","param":"temperature","code":null}}
//
// Param and Code are null in the body when empty.
type Error struct {
	Status  int    // HTTP status
	Type    string // invalid_request_error, authentication_error, rate_limit_error, …
	Message string
	Param   string // the request field at fault, "" if none
	Code    string // a machine-readable code such as context_length_exceeded, "" if none
}

func (e *Error) Error() string {
	if e.Param != "" {
		return fmt.Sprintf("%d %s: %s (param %s)", e.Status, e.Type, e.Message, e.Param)
	}
	return fmt.Sprintf("%d %s: %s", e.Status, e.Type, e.Message)
}

// MarshalJSON writes the error body.
func (e *Error) MarshalJSON() ([]byte, error) {
	type inner struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}
	in := inner{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		in.Param = &e.Param
	}
	if e.Code != "" {
		in.Code = &e.Code
	}
	return json.Marshal(struct {
		Error inner `json:"error"`
	}{in})
}

func badRequest(param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: typeInvalidRequest, Param: param, Message: fmt.Sprintf(format, args...)}
}

func badRequestCode(param, code, format string, args ...any) *Error {
	e := badRequest(param, format, args...)
	e.Code = code
	return e
}

// engineError maps an engine error to its HTTP error.
func engineError(err error) *Error {
	var ae *Error
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.Is(err, engine.ErrOverloaded):
		return &Error{Status: http.StatusTooManyRequests, Type: typeRateLimit, Code: "engine_overloaded",
			Message: "the engine is at capacity; retry later"}
	case errors.Is(err, engine.ErrContextLength):
		return badRequestCode("messages", "context_length_exceeded", "%v", err)
	case errors.Is(err, engine.ErrInvalidRequest):
		return badRequest("", "%v", err)
	case errors.Is(err, model.ErrExpertUnavailable):
		return &Error{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Code: "expert_unavailable",
			Message: "an expert this request needs is not available yet (still loading, or its nodes are gone); retry later: " + err.Error()}
	case errors.Is(err, engine.ErrClosed):
		return &Error{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Code: "shutting_down",
			Message: "the server is shutting down"}
	}
	return &Error{Status: http.StatusInternalServerError, Type: typeServer, Message: "internal error: " + err.Error()}
}

// writeError writes e as the response, with Retry-After on 429 and 503 (1
// second unless the caller has set a better estimate).
func writeError(w http.ResponseWriter, e *Error) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if (e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable) && h.Get("Retry-After") == "" {
		h.Set("Retry-After", "1")
	}
	b, _ := json.Marshal(e)
	w.WriteHeader(e.Status)
	w.Write(append(b, '\n'))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, &Error{Status: http.StatusInternalServerError, Type: typeServer, Message: "encoding the response: " + err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
