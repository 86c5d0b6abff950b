package tokenizer

import (
	"strings"
	"unicode"
)

// Whitespace control, done before the renderer sees the template.
//
// Chat templates are written for Jinja2 as Hugging Face runs them:
// trim_blocks and lstrip_blocks on, keep_trailing_newline off. The renderer
// (github.com/ardanlabs/jinja) applies those rules and the "-" markers to
// the nearest text on either side of a tag even when an expression lies
// between, so "{% for %}{{ role }}\n" lost its newline and
// "{%- set n = 1 -%}{{ n }} {{ n }}" its space. resolveWhitespace applies
// Jinja2's rules to the template's text itself and writes the template
// back without markers, with every text's leading newline and trailing
// spaces moved into string expressions, where the renderer's own trimming
// (which touches text only) cannot reach them.

// jinjaChunk is a piece of a template: text, or a tag with its delimiters.
type jinjaChunk struct {
	text   string // the text, or the tag's content between its delimiters and markers
	kind   byte   // 0 text, '{' expression, '%' statement, '#' comment
	minusL bool   // {%- {{- {#-
	plusL  bool   // {%+ (and {{+, which changes nothing)
	minusR bool   // -%} -}} -#}
	plusR  bool   // +%} +#}
}

// scanJinja splits source as the renderer's scanner does: a tag opens at
// "{{", "{%" or "{#" and closes at the matching "}}", "%}" or "#}" outside
// quotes (comments have no quotes). ok is false for an unterminated tag.
func scanJinja(source string) (chunks []jinjaChunk, ok bool) {
	i, textStart := 0, 0
	for i < len(source) {
		if source[i] != '{' || i+1 >= len(source) {
			i++
			continue
		}
		kind := source[i+1]
		var closer string
		switch kind {
		case '{':
			closer = "}}"
		case '%':
			closer = "%}"
		case '#':
			closer = "#}"
		default:
			i++
			continue
		}
		if i > textStart {
			chunks = append(chunks, jinjaChunk{text: source[textStart:i]})
		}
		c := jinjaChunk{kind: kind}
		i += 2
		if i < len(source) && source[i] == '-' {
			c.minusL, i = true, i+1
		} else if i < len(source) && source[i] == '+' {
			c.plusL, i = true, i+1
		}
		start, found := i, false
		for i < len(source) {
			ch := source[i]
			if kind != '#' && (ch == '\'' || ch == '"') {
				for i++; i < len(source) && source[i] != ch; i++ {
					if source[i] == '\\' && i+1 < len(source) {
						i++
					}
				}
				i++
				continue
			}
			if (ch == '-' || ch == '+' && kind != '{') && i+2 < len(source) && source[i+1:i+3] == closer {
				c.text, c.minusR, c.plusR = source[start:i], ch == '-', ch == '+'
				i, found = i+3, true
				break
			}
			if i+1 < len(source) && source[i:i+2] == closer {
				c.text = source[start:i]
				i, found = i+2, true
				break
			}
			i++
		}
		if !found {
			return nil, false
		}
		chunks = append(chunks, c)
		textStart = i
	}
	if textStart < len(source) {
		chunks = append(chunks, jinjaChunk{text: source[textStart:]})
	}
	return chunks, true
}

// resolveWhitespace returns source with Jinja2's whitespace control (the
// "-" and "+" markers, trim_blocks, lstrip_blocks, keep_trailing_newline
// off, newlines normalised to "\n") applied to its text, and the text
// written so that the renderer's own trimming leaves it alone. A source it
// cannot scan, or one with a raw block (whose text holds tags), is
// returned unchanged for the renderer to handle (or report).
func resolveWhitespace(source string) string {
	// Jinja2 reads every newline as "\n", in tags (string literals) too.
	source = strings.ReplaceAll(strings.ReplaceAll(source, "\r\n", "\n"), "\r", "\n")
	chunks, ok := scanJinja(source)
	if !ok {
		return source
	}
	for _, c := range chunks {
		if c.kind == '%' && strings.HasPrefix(strings.TrimSpace(c.text), "raw") {
			return source
		}
	}
	// The template's single trailing newline dropped
	// (keep_trailing_newline=False).
	if n := len(chunks); n > 0 && chunks[n-1].kind == 0 {
		chunks[n-1].text = strings.TrimSuffix(chunks[n-1].text, "\n")
	}
	// Jinja2's lexer, tag by tag in source order: what a tag takes from
	// the text right before it (its "-", or lstrip_blocks), and from the
	// text right after it (its "-", or trim_blocks' one newline).
	// lineStart: the previous tag's end took whitespace ending in a
	// newline (the template's start counts), so a block tag after text
	// without a newline is still the first thing on its line.
	lineStart := true
	for i := range chunks {
		c := &chunks[i]
		if c.kind == 0 {
			continue
		}
		if i > 0 && chunks[i-1].kind == 0 {
			prev := &chunks[i-1]
			switch {
			case c.minusL:
				prev.text = strings.TrimRightFunc(prev.text, pySpace)
			case !c.plusL && c.kind != '{':
				// lstrip_blocks: the spaces and tabs between the line's
				// start and a block or comment tag.
				l := strings.LastIndexByte(prev.text, '\n') + 1
				if (l > 0 || lineStart) && strings.TrimFunc(prev.text[l:], pySpace) == "" {
					prev.text = prev.text[:l]
				}
			}
		}
		lineStart = false
		if i+1 < len(chunks) && chunks[i+1].kind == 0 {
			next := &chunks[i+1]
			switch {
			case c.minusR:
				t := strings.TrimLeftFunc(next.text, pySpace)
				lineStart = strings.HasSuffix(next.text[:len(next.text)-len(t)], "\n")
				next.text = t
			case !c.plusR && c.kind != '{' && strings.HasPrefix(next.text, "\n"):
				next.text = next.text[1:] // trim_blocks
				lineStart = true
			}
		}
	}
	var b strings.Builder
	b.Grow(len(source) + 64)
	for _, c := range chunks {
		if c.kind != 0 {
			b.WriteByte('{')
			b.WriteByte(c.kind)
			b.WriteString(c.text)
			b.WriteString(map[byte]string{'{': "}}", '%': "%}", '#': "#}"}[c.kind])
			continue
		}
		t := c.text
		// The renderer would take a leading newline (trim_blocks) and
		// trailing spaces or tabs (lstrip_blocks) from text next to a
		// block tag, and "{" before a tag would open another: those go
		// out as string expressions, which it leaves alone.
		lead := 0
		for lead < len(t) && t[lead] == '\n' {
			lead++
		}
		trail := len(t)
		for trail > lead && (t[trail-1] == ' ' || t[trail-1] == '\t' || t[trail-1] == '{') {
			trail--
		}
		literal(&b, t[:lead])
		b.WriteString(t[lead:trail])
		literal(&b, t[trail:])
	}
	return b.String()
}

// literal writes s (newlines, spaces, tabs and "{" only) as a string
// expression, or nothing for "".
func literal(b *strings.Builder, s string) {
	if s == "" {
		return
	}
	b.WriteString("{{ '")
	b.WriteString(s)
	b.WriteString("' }}")
}

// pySpace is Python's str.isspace (what Jinja2's rstrip and \s match):
// Unicode white space and the separators U+001C to U+001F.
func pySpace(r rune) bool { return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f }
