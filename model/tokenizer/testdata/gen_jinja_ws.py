#!/usr/bin/env python3
"""Writes jinja_ws.json: random chat-template-like templates dense in
whitespace control ("-" and "+" markers, trim_blocks, lstrip_blocks, text of
spaces and newlines around tags) with what Jinja2 renders for them under the
settings Hugging Face uses (trim_blocks, lstrip_blocks). TestJinjaWhitespace
holds the renderer to them. Needs jinja2 (pip install jinja2); run from this
directory: python3 gen_jinja_ws.py"""
import json, random
from jinja2.sandbox import ImmutableSandboxedEnvironment

random.seed(20261129)
TEXTS = ["", " ", "  ", "\n", "\n\n", " \n", "\n  ", "\t", "a", "a ", " a", "a\n", "\na", "x\n  ", "  y  ", "\n \n", "b{"]
MESSAGES = [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]

def tag(kind, body):
    left = random.choice(["", "-", "+"]) if kind != "{" else random.choice(["", "-"])
    right = random.choice(["", "-", "+"]) if kind != "{" else random.choice(["", "-"])
    if kind == "{":
        return "{{" + left + " " + body + " " + right + "}}"
    if kind == "#":
        return "{#" + left + " c " + right + "#}"
    return "{%" + left + " " + body + " " + right + "%}"

def block(depth):
    out = []
    for _ in range(random.randint(1, 4)):
        out.append(random.choice(TEXTS))
        c = random.random()
        if c < 0.35:
            out.append(tag("{", random.choice(["m.role", "m.content", "'q'", "n"])))
        elif c < 0.45:
            out.append(tag("#", ""))
        elif c < 0.6:
            out.append(tag("%", "set z = 1"))
        elif depth < 2 and random.random() < 0.5:
            out += [tag("%", "if m.role == 'user'"), block(depth + 1), tag("%", "endif")]
        elif depth < 2:
            out += [tag("%", "for m in messages"), block(depth + 1), tag("%", "endfor")]
    out.append(random.choice(TEXTS))
    return "".join(out)

env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
cases = []
while len(cases) < 150:
    t = tag("%", "set n = 2") + tag("%", "for m in messages") + block(0) + tag("%", "endfor") + random.choice(TEXTS)
    try:
        want = env.from_string(t).render(messages=MESSAGES, add_generation_prompt=True)
    except Exception:
        continue
    cases.append({"template": t, "want": want})
json.dump(cases, open("jinja_ws.json", "w"), indent=0, ensure_ascii=False)
