package tokenizer

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"
)

// Message is one turn of a conversation. Role is what the model's template
// expects, usually "system", "user" or "assistant".
type Message struct {
	Role    string
	Content string
}

// DefaultChatTemplate is the ChatML template used when a vocab has no
// tokenizer.chat_template (llama.cpp's "chatml" format): each message becomes
// "<|im_start|>ROLE\nCONTENT<|im_end|>\n", and the generation prompt is
// "<|im_start|>assistant\n".
const DefaultChatTemplate = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// ChatTemplate returns the template ApplyChatTemplate renders: the vocab's,
// or DefaultChatTemplate.
func (t *Tokenizer) ChatTemplate() string {
	if t.v.ChatTemplate == "" {
		return DefaultChatTemplate
	}
	return t.v.ChatTemplate
}

// ApplyChatTemplate renders the chat template (Jinja) with the variables
// messages (a list of {role, content} dicts), add_generation_prompt,
// bos_token and eos_token (the token texts, "" when absent) and the function
// raise_exception(msg). The result is text to Encode with parseSpecial set
// and, because templates normally emit bos_token themselves, addSpecial
// unset.
//
// A template that has no system role (SupportsSystemRole false: Mixtral's
// raises on one) gets the system messages folded into user turns first, as
// llama.cpp's server does: consecutive system contents joined by "\n" go
// before the next user message's content, separated by "\n"; met by any
// other role, or by the end, they become a user message of their own.
//
// The template is compiled on first use. Errors wrap ErrChatTemplate; a
// raise_exception call also wraps ErrTemplateException and carries the
// template's message.
func (t *Tokenizer) ApplyChatTemplate(msgs []Message, addGenerationPrompt bool) (string, error) {
	return t.renderChat(t.FoldSystem(msgs), addGenerationPrompt)
}

// FoldSystem returns msgs as ApplyChatTemplate hands them to the template:
// with the system messages folded into user turns when the template has no
// system role (see ApplyChatTemplate), else msgs itself. A caller that
// replaces contents before rendering (with placeholders, say) folds first,
// so that the fold sees the real contents: an empty one adds no separator.
func (t *Tokenizer) FoldSystem(msgs []Message) []Message {
	if slices.ContainsFunc(msgs, func(m Message) bool { return m.Role == "system" }) && !t.SupportsSystemRole() {
		return foldSystem(msgs)
	}
	return msgs
}

// SupportsSystemRole reports whether the chat template renders a system
// message: a system and a user message render without error and the
// output holds the system content (llama.cpp probes templates the same
// way). Probed once, on first use.
func (t *Tokenizer) SupportsSystemRole() bool {
	t.sysOnce.Do(func() {
		const needle = "Conclave-system-role-probe-7f3a"
		out, err := t.renderChat([]Message{{Role: "system", Content: needle}, {Role: "user", Content: "Hello."}}, false)
		t.sysRole = err == nil && strings.Contains(out, needle)
	})
	return t.sysRole
}

// foldSystem moves system messages' contents into user messages (see
// ApplyChatTemplate). As in llama.cpp, "\n" goes before each system
// content once some text is held, so only empty contents before any text
// add nothing.
func foldSystem(msgs []Message) []Message {
	out := make([]Message, 0, len(msgs))
	var pending strings.Builder
	for _, m := range msgs {
		switch {
		case m.Role == "system":
			if pending.Len() > 0 {
				pending.WriteByte('\n')
			}
			pending.WriteString(m.Content)
			continue
		case pending.Len() > 0 && m.Role == "user":
			if m.Content != "" {
				pending.WriteByte('\n')
				pending.WriteString(m.Content)
			}
			m.Content = pending.String()
		case pending.Len() > 0:
			out = append(out, Message{Role: "user", Content: pending.String()})
		}
		pending.Reset()
		out = append(out, m)
	}
	if pending.Len() > 0 {
		out = append(out, Message{Role: "user", Content: pending.String()})
	}
	return out
}

// renderChat is ApplyChatTemplate without the system fold.
func (t *Tokenizer) renderChat(msgs []Message, addGenerationPrompt bool) (string, error) {
	t.tmplOnce.Do(func() {
		defer func() {
			if p := recover(); p != nil {
				t.tmpl, t.tmplErr = nil, fmt.Errorf("%w: compile: the renderer failed: %v", ErrChatTemplate, p)
			}
		}()
		t.tmpl, t.tmplErr = jinja.Compile(resolveWhitespace(t.ChatTemplate()))
		if t.tmplErr != nil {
			t.tmplErr = fmt.Errorf("%w: compile: %w", ErrChatTemplate, t.tmplErr)
		}
	})
	if t.tmplErr != nil {
		return "", t.tmplErr
	}

	list := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		d := jinja.NewDict()
		d.AsDict().Set("role", jinja.NewString(m.Role))
		d.AsDict().Set("content", jinja.NewString(m.Content))
		list[i] = d
	}
	var raised error
	raise := func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		msg := "raise_exception called"
		if len(args) > 0 {
			msg = args[0].String()
		}
		raised = fmt.Errorf("%w: %w: %s", ErrChatTemplate, ErrTemplateException, msg)
		return jinja.Undefined(), raised
	}
	out, err := render(t.tmpl, map[string]jinja.Value{
		"messages":              jinja.NewList(list),
		"add_generation_prompt": jinja.NewBool(addGenerationPrompt),
		"bos_token":             jinja.NewString(t.Piece(t.v.BOS)),
		"eos_token":             jinja.NewString(t.Piece(t.v.EOS)),
		"raise_exception":       jinja.NewCallable("raise_exception", raise),
		"range":                 jinja.NewCallable("range", boundedRange(maxTemplateRange)),
	})
	if raised != nil {
		return "", raised
	}
	if err != nil {
		return "", fmt.Errorf("%w: render: %w", ErrChatTemplate, err)
	}
	return out, nil
}

// CheckChatTemplate renders a short conversation (system, user, assistant,
// user, and the generation prompt) and fails if that takes longer than
// timeout. The renderer has no step limit and the template comes from the
// model file: a template that loops without bound for any conversation
// ("{% for a in 'x' * 100000 %}{% for b in 'x' * 100000 %}…") held every chat
// request's goroutine for good. Checked at load, such a file is refused
// instead of being served. Other render errors are not reported: templates
// may refuse conversations (raise_exception) that requests never send.
func (t *Tokenizer) CheckChatTemplate(timeout time.Duration) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = t.ApplyChatTemplate([]Message{
			{Role: "system", Content: "You are helpful."},
			{Role: "user", Content: "Hello."},
			{Role: "assistant", Content: "Hi."},
			{Role: "user", Content: "What is 2 + 2?"},
		}, true)
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-timer.C:
		// The render goes on in the background; the caller refuses the file.
		return fmt.Errorf("%w: rendering a four-message conversation took longer than %v: the template loops without bound", ErrChatTemplate, timeout)
	}
}

// render is tmpl.RenderValues with the renderer's panics (some filters
// given arguments they do not expect: indent(-3), select without a test)
// returned as errors: the template comes from the model file.
func render(tmpl *jinja.Template, vars map[string]jinja.Value) (out string, err error) {
	defer func() {
		if p := recover(); p != nil {
			out, err = "", fmt.Errorf("the renderer failed: %v", p)
		}
	}()
	return tmpl.RenderValues(vars)
}

// maxTemplateRange bounds the numbers one render's range() calls may yield
// together. The template comes from the model file, and the renderer has
// no step limit: "{% for i in range(100000000) %}" held a request's
// goroutine for minutes (nested loops, forever). Chat templates loop over
// messages, not counts; this leaves them a million.
const maxTemplateRange = 1 << 20

// boundedRange is Jinja's range(stop) / range(start, stop[, step]) over
// integers, failing once the render's ranges would exceed budget numbers.
func boundedRange(budget int64) func([]jinja.Value, map[string]jinja.Value) (jinja.Value, error) {
	return func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		n := make([]int64, len(args))
		for i, a := range args {
			switch {
			case a.IsInt():
				n[i] = a.AsInt()
			case a.IsFloat():
				n[i] = int64(a.AsFloat())
			case a.IsBool():
				if a.AsBool() {
					n[i] = 1
				}
			default:
				return jinja.Undefined(), fmt.Errorf("range: argument %d is not a number", i+1)
			}
		}
		var start, stop, step int64 = 0, 0, 1
		switch len(n) {
		case 1:
			stop = n[0]
		case 2:
			start, stop = n[0], n[1]
		case 3:
			start, stop, step = n[0], n[1], n[2]
		default:
			return jinja.Undefined(), fmt.Errorf("range: expected 1-3 arguments, got %d", len(args))
		}
		if step == 0 {
			return jinja.Undefined(), fmt.Errorf("range: step must not be zero")
		}
		var count int64
		switch {
		case step > 0 && stop > start:
			count = (stop - start + step - 1) / step
		case step < 0 && stop < start:
			count = (start - stop - step - 1) / -step
		}
		if count < 0 || count > budget {
			return jinja.Undefined(), fmt.Errorf("range: %d numbers exceed what a chat template may loop over (%d in a render)", count, maxTemplateRange)
		}
		budget -= count
		items := make([]jinja.Value, 0, count)
		for i, v := int64(0), start; i < count; i, v = i+1, v+step {
			items = append(items, jinja.NewInt(v))
		}
		return jinja.NewList(items), nil
	}
}
