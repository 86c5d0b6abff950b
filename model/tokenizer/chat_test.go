package tokenizer

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const (
	mixtralTemplate = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
	chatMLTemplate  = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
	// Meta-Llama-3-8B-Instruct's tokenizer.chat_template.
	llama3Template = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

// chatTokenizer is a vocab whose BOS/EOS texts are bos and eos.
func chatTokenizer(t *testing.T, tmpl, bos, eos string) *Tokenizer {
	b := newBPE("llama3")
	b.v.BOS = b.add(bos, TypeControl)
	b.v.EOS = b.add(eos, TypeControl)
	b.v.ChatTemplate = tmpl
	return b.build(t)
}

// SupportsSystemRole: templates that render a system message report one
// (and ApplyChatTemplate leaves their system messages alone); Mixtral's,
// which raises on it, and one that drops it do not.
func TestSupportsSystemRole(t *testing.T) {
	const drops = "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endif %}{% endfor %}"
	for _, tc := range []struct {
		name string
		tmpl string
		want bool
	}{
		{"chatml", chatMLTemplate, true},
		{"llama3", llama3Template, true},
		{"default", "", true},
		{"mixtral", mixtralTemplate, false},
		{"drops system messages", drops, false},
		{"broken", "{% for %}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tk := chatTokenizer(t, tc.tmpl, "<s>", "</s>")
			if got := tk.SupportsSystemRole(); got != tc.want {
				t.Errorf("SupportsSystemRole = %v, want %v", got, tc.want)
			}
		})
	}
	// A template that drops system messages gets them folded instead.
	got, err := chatTokenizer(t, drops, "<s>", "</s>").ApplyChatTemplate([]Message{{"system", "S"}, {"user", "U"}}, false)
	if want := "user: S\nU\n"; err != nil || got != want {
		t.Errorf("rendered %q, %v; want %q", got, err, want)
	}
}

func TestApplyChatTemplate(t *testing.T) {
	conv := []Message{
		{"user", "Hello"},
		{"assistant", "Hi there"},
		{"user", " What is 2+2?\n"},
	}
	tests := []struct {
		name      string
		tk        *Tokenizer
		msgs      []Message
		genPrompt bool
		want      string
		wantErr   error
	}{
		{"mixtral", chatTokenizer(t, mixtralTemplate, "<s>", "</s>"), conv, true,
			"<s>[INST] Hello [/INST]Hi there</s>[INST]  What is 2+2?\n [/INST]", nil},
		{"mixtral roles must alternate", chatTokenizer(t, mixtralTemplate, "<s>", "</s>"), conv[1:], true, "", ErrTemplateException},
		// Mixtral has no system role: system contents are folded into user
		// turns, as llama.cpp's server does.
		{"mixtral system folded", chatTokenizer(t, mixtralTemplate, "<s>", "</s>"), append([]Message{{"system", "Be brief."}}, conv...), true,
			"<s>[INST] Be brief.\nHello [/INST]Hi there</s>[INST]  What is 2+2?\n [/INST]", nil},
		{"mixtral systems joined", chatTokenizer(t, mixtralTemplate, "<s>", "</s>"), []Message{{"system", "A."}, {"system", ""}, {"system", "B."}, {"user", "Hi"}}, true,
			"<s>[INST] A.\n\nB.\nHi [/INST]", nil}, // llama.cpp's join: "\n" before every content once some text is held
		{"mixtral system alone", chatTokenizer(t, mixtralTemplate, "<s>", "</s>"), []Message{{"system", "x"}}, true, "<s>[INST] x [/INST]", nil},
		{"mixtral system before an empty user", chatTokenizer(t, mixtralTemplate, "<s>", "</s>"), []Message{{"system", "x"}, {"user", ""}}, true, "<s>[INST] x [/INST]", nil},
		{"mixtral empty system", chatTokenizer(t, mixtralTemplate, "<s>", "</s>"), []Message{{"system", ""}, {"user", "Hi"}}, true, "<s>[INST] Hi [/INST]", nil},
		{"mixtral system before an assistant", chatTokenizer(t, mixtralTemplate, "<s>", "</s>"), []Message{{"system", "x"}, {"assistant", "Hi"}, {"user", "Q"}}, true,
			"<s>[INST] x [/INST]Hi</s>[INST] Q [/INST]", nil},
		{"mixtral system mid-conversation", chatTokenizer(t, mixtralTemplate, "<s>", "</s>"), []Message{{"user", "a"}, {"assistant", "b"}, {"system", "s"}, {"user", "c"}}, true,
			"<s>[INST] a [/INST]b</s>[INST] s\nc [/INST]", nil},
		{"mixtral system last", chatTokenizer(t, mixtralTemplate, "<s>", "</s>"), []Message{{"user", "a"}, {"assistant", "b"}, {"system", "s"}}, true,
			"<s>[INST] a [/INST]b</s>[INST] s [/INST]", nil},
		{"chatml", chatTokenizer(t, chatMLTemplate, "<|endoftext|>", "<|im_end|>"),
			append([]Message{{"system", "Be brief."}}, conv...), true,
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\n What is 2+2?\n<|im_end|>\n<|im_start|>assistant\n", nil},
		{"chatml no generation prompt", chatTokenizer(t, chatMLTemplate, "<|endoftext|>", "<|im_end|>"), conv[:1], false,
			"<|im_start|>user\nHello<|im_end|>\n", nil},
		{"llama3", chatTokenizer(t, llama3Template, "<|begin_of_text|>", "<|eot_id|>"),
			append([]Message{{"system", "Be brief."}}, conv...), true,
			"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n", nil},
		{"default is chatml", chatTokenizer(t, "", "<s>", "</s>"), conv[:1], true,
			"<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", nil},
		{"broken template", chatTokenizer(t, "{% for %}", "<s>", "</s>"), conv, true, "", ErrChatTemplate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.tk.ApplyChatTemplate(tc.msgs, tc.genPrompt)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrChatTemplate) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestChatTemplateConcurrent(t *testing.T) {
	tk := chatTokenizer(t, llama3Template, "<|begin_of_text|>", "<|eot_id|>")
	done := make(chan string)
	for i := 0; i < 8; i++ {
		go func() {
			s, err := tk.ApplyChatTemplate([]Message{{"user", "hi"}}, true)
			if err != nil {
				s = err.Error()
			}
			done <- s
		}()
	}
	first := <-done
	for i := 1; i < 8; i++ {
		if s := <-done; s != first {
			t.Errorf("concurrent renders differ: %q vs %q", s, first)
		}
	}
}

// TestChatTemplateRange: range() works as Jinja's (start, stop, negative
// steps), and a template whose ranges would loop past the render's budget
// fails at once instead of holding the request (range(100000000) ran for
// minutes; nested ranges, forever).
func TestChatTemplateRange(t *testing.T) {
	msgs := []Message{{"user", "x"}}
	for _, tc := range []struct {
		tmpl, want string
		err        bool
	}{
		{"{% for i in range(3) %}{{ i }}{% endfor %}", "012", false},
		{"{% for i in range(2, 5) %}{{ i }}{% endfor %}", "234", false},
		{"{% for i in range(5, 0, -2) %}{{ i }}{% endfor %}", "531", false},
		{"{% for i in range(3, 3) %}{{ i }}{% endfor %}", "", false},
		{"{% for i in range(100000000) %}{% endfor %}x", "", true},
		{"{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}x", "", true},
		{"{% for i in range(1, 2, 0) %}{% endfor %}", "", true},
	} {
		got, err := chatTokenizer(t, tc.tmpl, "<s>", "</s>").ApplyChatTemplate(msgs, false)
		if (err != nil) != tc.err || (!tc.err && got != tc.want) || (tc.err && !errors.Is(err, ErrChatTemplate)) {
			t.Errorf("%s: %q, %v; want %q (error %v)", tc.tmpl, got, err, tc.want, tc.err)
		}
	}
}

// TestChatTemplateRendererPanics: the renderer panics on some filters given
// arguments they do not expect; from a model file's template that is an
// error wrapping ErrChatTemplate (the API answers it with a 400), not a
// panic out of ApplyChatTemplate.
func TestChatTemplateRendererPanics(t *testing.T) {
	for _, tmpl := range []string{
		"{{ messages[0]['content'] | indent(-3) }}",
		"{{ messages[0]['content'] * -1 }}",
		"{{ ['a', ''] | select | list }}",
	} {
		var err error
		func() {
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("panic: %v", p)
				}
			}()
			_, err = chatTokenizer(t, tmpl, "<s>", "</s>").ApplyChatTemplate([]Message{{"user", "hi"}}, true)
		}()
		if !errors.Is(err, ErrChatTemplate) {
			t.Errorf("%s: %v, want an error wrapping ErrChatTemplate", tmpl, err)
		}
	}
}

// TestCheckChatTemplate: a template that loops far past any real one's work
// for every conversation (here a million steps of string loops, ~0.6 s, which no
// range budget sees) fails the check instead of holding requests; a real
// template passes, even one that raises for some conversations.
func TestCheckChatTemplate(t *testing.T) {
	slow := chatTokenizer(t, "{% for a in 'x' * 1000 %}{% for b in 'x' * 1000 %}{% endfor %}{% endfor %}x", "<s>", "</s>")
	if err := slow.CheckChatTemplate(time.Millisecond); !errors.Is(err, ErrChatTemplate) || !strings.Contains(err.Error(), "without bound") {
		t.Errorf("a million-step template: %v, want ErrChatTemplate", err)
	}
	for _, tmpl := range []string{
		DefaultChatTemplate,
		"{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}",
	} {
		if err := chatTokenizer(t, tmpl, "<s>", "</s>").CheckChatTemplate(time.Minute); err != nil {
			t.Errorf("%s: %v", tmpl, err)
		}
	}
}
