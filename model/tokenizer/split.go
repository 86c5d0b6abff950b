package tokenizer

import "unicode"

// Hand-written equivalents of the single-regex pre-tokenizers (reGPT2,
// reLlama3, reQwen2), as llama.cpp has for the same reason: regexp2 is a
// backtracking engine that allocates per match and spends most of BPE
// encoding time. Each function appends the rune spans that the regex's
// successive leftmost-first matches produce; TestFastSplitMatchesRegex and
// FuzzFastSplit check them against regexp2.

// isSpace is \s as regexp2 (and .NET, and llama.cpp) define it: \t \n \v \f
// \r, U+0085 and the Unicode separators \p{Z}.
func isSpace(r rune) bool {
	if r < 0x80 {
		return r == ' ' || r >= '\t' && r <= '\r'
	}
	return r == 0x85 || unicode.In(r, unicode.Z)
}

func isLetter(r rune) bool {
	if r < 0x80 {
		return r|0x20 >= 'a' && r|0x20 <= 'z'
	}
	return unicode.IsLetter(r)
}

func isNumber(r rune) bool {
	if r < 0x80 {
		return r >= '0' && r <= '9'
	}
	return unicode.IsNumber(r)
}

// isOther is [^\s\p{L}\p{N}].
func isOther(r rune) bool { return !isSpace(r) && !isLetter(r) && !isNumber(r) }

// runWhile returns the end of the run of runes from i satisfying f.
func runWhile(rs []rune, i int, f func(rune) bool) int {
	for i < len(rs) && f(rs[i]) {
		i++
	}
	return i
}

// matchSpaces handles the shared tail \s+(?!\S)|\s+ at i, where rs[i] is
// whitespace: a whitespace run ending the text is taken whole; a longer run
// followed by non-space leaves its last character to lead the next word.
func matchSpaces(rs []rune, i int) int {
	k := runWhile(rs, i, isSpace)
	if k < len(rs) && k-i >= 2 {
		return k - 1
	}
	return k
}

// contraction returns the end of a contraction at i ('s 't 're 've 'm 'll
// 'd), or i if none; fold makes the letters case-insensitive (llama3).
func contraction(rs []rune, i int, fold bool) int {
	if rs[i] != '\'' || i+1 >= len(rs) {
		return i
	}
	lower := func(r rune) rune {
		if fold && r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}
	switch lower(rs[i+1]) {
	case 's', 't', 'm', 'd':
		return i + 2
	case 'r', 'v':
		if i+2 < len(rs) && lower(rs[i+2]) == 'e' {
			return i + 3
		}
	case 'l':
		if i+2 < len(rs) && lower(rs[i+2]) == 'l' {
			return i + 3
		}
	}
	return i
}

func splitGPT2(rs []rune, out []span) []span {
	for i := 0; i < len(rs); {
		end := contraction(rs, i, false)
		if end == i {
			j := i
			if rs[j] == ' ' && j+1 < len(rs) {
				j++
			}
			switch r := rs[j]; {
			case isLetter(r):
				end = runWhile(rs, j, isLetter)
			case isNumber(r):
				end = runWhile(rs, j, isNumber)
			case isOther(r):
				end = runWhile(rs, j, isOther)
			default: // whitespace (j == i, or rs[i] == ' ' before whitespace)
				end = matchSpaces(rs, i)
			}
		}
		out = append(out, span{int32(i), int32(end)})
		i = end
	}
	return out
}

// splitLlama3 is reLlama3 with maxDigits 3 and reQwen2 with maxDigits 1.
func splitLlama3(rs []rune, maxDigits int, out []span) []span {
	for i := 0; i < len(rs); {
		end := contraction(rs, i, true)
		r := rs[i]
		switch {
		case end > i:
		// [^\r\n\p{L}\p{N}]?\p{L}+
		case isLetter(r):
			end = runWhile(rs, i, isLetter)
		case r != '\r' && r != '\n' && !isNumber(r) && i+1 < len(rs) && isLetter(rs[i+1]):
			end = runWhile(rs, i+1, isLetter)
		// \p{N}{1,maxDigits}
		case isNumber(r):
			end = i + 1
			for end < len(rs) && end-i < maxDigits && isNumber(rs[end]) {
				end++
			}
		// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
		case isOther(r) || r == ' ' && i+1 < len(rs) && isOther(rs[i+1]):
			end = runWhile(rs, i+1, isOther)
			end = runWhile(rs, end, func(r rune) bool { return r == '\r' || r == '\n' })
		default: // whitespace
			k := runWhile(rs, i, isSpace)
			// \s*[\r\n]+: up to the last line break of the run.
			for p := k - 1; p >= i; p-- {
				if rs[p] == '\r' || rs[p] == '\n' {
					end = p + 1
					break
				}
			}
			if end == i {
				end = matchSpaces(rs, i)
			}
		}
		out = append(out, span{int32(i), int32(end)})
		i = end
	}
	return out
}
